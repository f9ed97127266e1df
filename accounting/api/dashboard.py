"""The control-room dashboard: static files served at `/`, nothing fetched from elsewhere.

Plants sit behind firewalls without internet access, so the page is self-contained plain JS,
CSS and SVG from this package; the content security policy (see `app.py`) makes any attempt to
load from a CDN fail loudly in the browser test instead of silently in a plant.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "dashboard"

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


def static_files() -> StaticFiles:
    """Serves app.js and app.css under /dashboard/."""
    return StaticFiles(directory=STATIC_DIR)
