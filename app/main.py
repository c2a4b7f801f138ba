"""The application `uvicorn app.main:app` serves (and `ae-serve`, through app.process.server), built from
the AE_* environment at import. Tests and other hosts (the Ray gateway) call `app.application.create_app`.
"""

from __future__ import annotations

from app.application import create_app

__all__ = ["app", "create_app"]

app = create_app()
