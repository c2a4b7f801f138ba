"""Access control: API keys for /v1, an admin key for the management routes, and CORS.

Everything here is off by default so the service is simple to run locally, and switched on by
settings alone:

- `AE_API_KEYS` (JSON list or comma list): every /v1 route then needs `Authorization: Bearer <key>`;
  /healthz and /readyz never do (probes carry no secrets), /metrics does when `AE_METRICS_REQUIRE_KEY`.
- `AE_ADMIN_API_KEY`: mounts the management routes (app.http.routes.admin) and is the only key they take.
  Without it those routes do not exist at all (404), so there is nothing to guess at.
- `AE_CORS_ORIGINS`: the browser origins allowed to call the API; no CORS headers when empty.

Keys are compared with `hmac.compare_digest` against every configured key, so the time taken says
nothing about how much of a key was right.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware

from app.errors import Unauthorized
from app.http.dependencies import app_settings
from app.settings import Settings

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_matches(token: str, keys: Sequence[str]) -> bool:
    """Constant time in the token's content: every key is compared, none is skipped on a match."""
    presented = token.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key.encode())
    return matched


def check_key(request: Request, keys: Sequence[str], what: str) -> None:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized(f"this route needs {what}: send Authorization: Bearer <key>", headers=BEARER_CHALLENGE)
    if not key_matches(token, keys):
        raise Unauthorized(f"the {what} is not valid", headers=BEARER_CHALLENGE)


async def require_api_key(request: Request) -> None:
    """Dependency of every /v1 router: a no-op unless API keys are configured."""
    settings = app_settings(request)
    if settings.api_keys:
        check_key(request, settings.api_keys, "an API key")


async def require_metrics_key(request: Request) -> None:
    settings = app_settings(request)
    if settings.api_keys and settings.metrics_require_key:
        check_key(request, settings.api_keys, "an API key")


async def require_admin_key(request: Request) -> None:
    """Dependency of the management routes, which exist only when an admin key is set."""
    admin_key = app_settings(request).admin_api_key
    if not admin_key:  # not reachable: the router is not mounted without a key; refuse anyway
        raise Unauthorized("the management routes are disabled", headers=BEARER_CHALLENGE)
    check_key(request, [admin_key], "the admin key")


def install_cors(app: FastAPI, settings: Settings) -> None:
    if not settings.cors_origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Retry-After"],
    )
