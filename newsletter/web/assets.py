"""Static files of `newsletter/web/static/` (the admin's stylesheet and scripts, the vendored htmx,
Chart.js, Swagger UI and Redoc) under URLs that carry a hash of their content, cached for a year.

`Assets.url("admin.css")` is `/static/<hash>/admin.css`; when the file changes its URL changes, so a
browser never uses a stale copy and never asks twice for a current one. A URL with another hash is a 404.
"""

from __future__ import annotations

import hashlib
import mimetypes
from functools import cached_property
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

STATIC_DIR = Path(__file__).resolve().parent / "static"
PREFIX = "/static/"
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml"}


class Assets:
    """The files under `root`, read once; `url(path)` names one with its content hash."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self.root = root

    @cached_property
    def files(self) -> dict[str, tuple[str, bytes]]:
        found = {}
        for path in sorted(self.root.rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                found[path.relative_to(self.root).as_posix()] = (hashlib.sha256(data).hexdigest()[:12], data)
        return found

    def url(self, path: str) -> str:
        """The URL of `path` (relative to the static folder); a KeyError names a file that is not there."""
        version, _ = self.files[path]
        return f"{PREFIX}{version}/{path}"

    def response(self, version: str, path: str) -> Response:
        found = self.files.get(path)
        if found is None or found[0] != version:
            return PlainTextResponse("not found", status_code=404, headers={"Cache-Control": "no-store"})
        suffix = Path(path).suffix
        media_type = _TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"
        return Response(found[1], media_type=media_type, headers=IMMUTABLE)


def assets(request: Request) -> Assets:
    found: Assets = request.app.state.assets
    return found


router = APIRouter(include_in_schema=False)


@router.get(PREFIX + "{version}/{path:path}")
def static_file(request: Request, version: str, path: str) -> Response:
    return assets(request).response(version, path)
