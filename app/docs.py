"""Swagger UI served from this service itself.

FastAPI's default /docs page loads Swagger UI from a public CDN, so it is blank wherever the browser
cannot reach the internet (air-gapped clusters, this project's CI). The assets come from the
swagger-ui-bundle-v2 package instead and are served under /static/swagger-ui.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS_URL = "/static/swagger-ui"


def install_docs(app: FastAPI, title: str) -> None:
    """Mount the assets and serve /docs; create the app with docs_url=None and redoc_url=None."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url="data:,",  # no request leaves the service
        )
