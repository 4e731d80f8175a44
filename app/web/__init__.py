"""The web page at `GET /`: drop, pick or paste photos and see each one's answer.

Plain HTML, CSS and JavaScript in app/web/static/, served by the app itself (no build step, no CDN:
it works offline). The page calls `POST /predict` once per photo, like any other client, and shows
the API's own error messages.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS_URL = "/web"

router = APIRouter()

# The page loads only its own script, stylesheet and API; thumbnails are blob: URLs of the picked files.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY},
    )


def assets() -> StaticFiles:
    """Mount at ASSETS_URL: app.mount(ASSETS_URL, assets(), name="web")."""
    return StaticFiles(directory=STATIC_DIR)
