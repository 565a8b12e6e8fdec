"""The decision service's /docs page renders with no network: Swagger UI's files come from the
swagger-ui-bundle-v2 package, served by the service itself (decisioning/http_docs.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import warnings

import pytest

with warnings.catch_warnings():
    # Starlette wants `httpx2` for its TestClient and warns when it falls back to `httpx` (see test_service.py).
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

from offerflow.ops.servers import free_port

pytestmark = pytest.mark.flow


@pytest.fixture(scope="module")
def app(service_app):
    return service_app


def test_docs_page_links_only_files_the_service_serves(app):
    with TestClient(app) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        links = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
        assert links and not [u for u in links if u.startswith(("http:", "https:", "//"))], links
        for url in links:
            assert client.get(url).status_code == 200, url
        assert client.get("/redoc").status_code == 404  # CDN-only: off


def test_docs_page_renders_in_headless_chromium_with_no_network(app, tmp_path):
    binary = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if binary is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium) - /docs not opened in a browser")
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.1)
        # every host name but 127.0.0.1 fails to resolve: a page that needs a CDN renders nothing
        dom = subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=15000",
             "--dump-dom", f"http://127.0.0.1:{port}/docs"],
            capture_output=True, text=True, timeout=180, check=True).stdout
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert "offerflow decision service" in dom
    for path in ("/decisions", "/health", "/metrics"):
        assert f'data-path="{path}"' in dom, f"{path} not rendered"
