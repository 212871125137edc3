"""The web page at ``/`` and its static files under ``/static``."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parents[1] / "web" / "static"

# The page loads nothing from elsewhere: the browser refuses any other origin, inline script and inline
# style, so neither a stray CDN reference nor text injected by a document can run or fetch.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

# The page names its scripts by fixed paths: a cached copy must be revalidated (a cheap 304 by ETag), or an
# upgrade would pair new HTML with old scripts.
_REVALIDATE = "no-cache"


class RevalidatedStaticFiles(StaticFiles):
    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = _REVALIDATE
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


router = APIRouter(include_in_schema=False)
router.mount("/static", RevalidatedStaticFiles(directory=STATIC_DIR), name="static")


@router.get("/")
def index() -> FileResponse:
    """The web page."""
    return FileResponse(
        STATIC_DIR / "index.html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": _REVALIDATE,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
