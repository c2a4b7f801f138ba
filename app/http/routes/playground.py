"""The playground: a page at / that shows every operation of the API, from the files in app/static/.

The files are read once, when the app is built, and served from memory: no request can name a path on
disk. The page itself (`/`) is revalidated on every visit (`Cache-Control: no-cache` with an ETag), and
it loads its scripts, styles and images from `/playground/<version>/...`, where the version is a digest
of every file: those URLs never change content, so browsers may keep them for a year (`immutable`), and
a new release is picked up at once because the page then names a new version. The page calls the API
under /v1 from the same origin; with API keys on it asks for one (app/static/api.js), while these static
files need none. `AE_PLAYGROUND=false` leaves the router out, and / is a 404.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response

from app.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
ASSET_PREFIX = "/playground"
VERSION_PLACEHOLDER = "{{ASSET_ROOT}}"  # in index.html: where the versioned asset URLs start
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
}
# The page runs only its own scripts and styles and talks only to its own origin: an injected script or
# style could not run, and nothing can be sent elsewhere. data: and blob: images are the API's answers.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PAGE_CACHE = "no-cache"  # may be stored, but asked for again (a cheap 304) each time
ASSET_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


class Playground:
    """The page and its assets, in memory, with the version that names them."""

    def __init__(self, directory: Path = STATIC_DIR) -> None:
        files = sorted(path for path in directory.rglob("*") if path.is_file() and path.suffix in CONTENT_TYPES)
        digest = hashlib.sha256()
        self.assets: dict[str, Asset] = {}
        for path in files:
            relative = path.relative_to(directory).as_posix()
            body = path.read_bytes()
            digest.update(relative.encode() + b"\0" + body + b"\0")
            self.assets[relative] = Asset(body, CONTENT_TYPES[path.suffix])
        index = self.assets.pop("index.html", None)
        if index is None:
            raise FileNotFoundError(f"{directory / 'index.html'}: the playground page is missing")
        self.version = digest.hexdigest()[:16]
        self.asset_root = f"{ASSET_PREFIX}/{self.version}"
        self.page = index.body.replace(VERSION_PLACEHOLDER.encode(), self.asset_root.encode())
        self.etag = f'"{self.version}"'

    def page_response(self, request: Request) -> Response:
        headers = {**SECURITY_HEADERS, "Cache-Control": PAGE_CACHE, "ETag": self.etag}
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(self.page, media_type=CONTENT_TYPES[".html"], headers=headers)

    def asset_response(self, version: str, path: str) -> Response:
        asset = self.assets.get(path)
        if version != self.version or asset is None:
            raise NotFound(f"no playground file {path!r} in version {version!r}; reload the page", param="path")
        headers = {**SECURITY_HEADERS, "Cache-Control": ASSET_CACHE}
        return Response(asset.body, media_type=asset.content_type, headers=headers)


def playground_router(directory: Path = STATIC_DIR) -> APIRouter:
    playground = Playground(directory)
    router = APIRouter(include_in_schema=False)

    @router.api_route("/", methods=["GET", "HEAD"])
    async def page(request: Request) -> Response:
        return playground.page_response(request)

    @router.api_route(ASSET_PREFIX + "/{version}/{path:path}", methods=["GET", "HEAD"])
    async def asset(version: str, path: str) -> Response:
        return playground.asset_response(version, path)

    return router
