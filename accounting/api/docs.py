"""`/docs`: the API's Swagger UI, served by the app itself (plants often have no internet at all).

FastAPI's default page loads Swagger UI from a CDN and starts it with an inline script; the
content security policy (`default-src 'self'`, no inline scripts) blocks both, and a plant
without internet could not reach the CDN anyway. Here the page, the Swagger UI bundle and
stylesheet (npm `swagger-ui-dist`, vendored with their licence, see
`dashboard/vendor/manifest.json`) and the start-up script are all files of this package.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tanji API</title>
<link rel="stylesheet" href="/dashboard/vendor/swagger-ui/swagger-ui.css">
<link rel="stylesheet" href="/dashboard/docs.css">
</head><body>
<div id="swagger-ui"></div>
<script src="/dashboard/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/dashboard/docs.js"></script>
</body></html>"""


@router.get("/docs")
def docs() -> HTMLResponse:
    return HTMLResponse(PAGE)
