"""The decision service's API page (``GET /docs``), served with Swagger UI from the
`swagger-ui-bundle-v2` package instead of a CDN: it renders with no network. (FastAPI's ReDoc
page, CDN-only, is off.)"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

#: Where the Swagger UI files are served from.
DOCS_ASSETS = "/docs-assets"


def add_offline_docs(app: FastAPI) -> None:
    """``GET /docs`` (Swagger UI over the app's OpenAPI schema) and its files under `DOCS_ASSETS`;
    the app must be built with ``docs_url=None, redoc_url=None``."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")
