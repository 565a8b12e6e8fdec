"""The pipeline's Data Docs render with no network: opened from file:// in headless Chromium with
every host name unresolvable, the index and a validation page fill their tables (bootstrap-table
runs) and load nothing from a CDN (ingest/offline_docs.py copies the assets into the site)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from offerflow.ingest.offline_docs import external_assets

pytestmark = pytest.mark.flow


def _dump_dom(page: Path, profile: Path) -> str:
    binary = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if binary is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium) - Data Docs not opened in a browser")
    # every host name fails to resolve: a page that needs a CDN leaves its tables empty
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=15000",
         "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180, check=True).stdout


@pytest.fixture(scope="module")
def data_docs(pipeline_run) -> Path:
    _, summary = pipeline_run
    index = Path(summary["validation"]["data_docs"])
    assert index.name == "index.html" and index.is_file()
    return index


def test_index_lists_every_validation_offline(data_docs, tmp_path):
    dom = _dump_dom(data_docs, tmp_path / "profile")
    links = set(re.findall(r'<tr class="clickable-row" data-href="([^"]+)" data-index="\d+"', dom))
    results = {p.relative_to(data_docs.parent).as_posix() for p in (data_docs.parent / "validations").rglob("*.html")}
    shown = {link for link in links if link.startswith("validations/")}
    # bootstrap-table built rows from the site's results: at least one per suite, each a page that exists
    # (a session's shared project holds several runs; GX's index need not list every older catalog result)
    assert shown and shown <= results
    assert {r.split("/")[1] for r in results} == {s.split("/")[1] for s in shown}
    assert {f"expectations/{s}.html" for s in ("events", "event_totals", "offer_conversion")} <= links
    assert external_assets(dom) == []
    assert 'class="fas fa-check-circle' in dom or 'class="fas fa-times' in dom


def test_validation_page_renders_its_results_offline(data_docs, tmp_path):
    # one page per validation run: the session's, and those of tests that validated its project again
    page = min((data_docs.parent / "validations" / "events").rglob("*.html"), key=lambda p: p.stat().st_mtime)
    dom = _dump_dom(page, tmp_path / "profile")
    rows = re.findall(r"<tr\b[^>]*data-index=", dom)
    assert len(rows) >= 10, len(rows)  # one per expectation of the events suite
    assert "values must not be null" in dom and "fa-check-circle" in dom  # GX renders the expectation; the icon font loads
    assert external_assets(dom) == []


def test_flow_run_records_the_path_not_a_file_link(data_docs):
    """A browser does not follow a file:// link from the Prefect UI: the artifact gives the path."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["data-docs"])))
    ours = [a for a in artifacts if str(data_docs.resolve()) in str(a.data)]
    assert ours and {a.type for a in ours} == {"markdown"}
    assert "file://" not in str(ours[0].data) and "http.server" in str(ours[0].data)
