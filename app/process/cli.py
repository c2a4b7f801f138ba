"""`ae-serve`: run the service with uvicorn, configured by the same AE_* settings (see app.process.server:
deadlines for slow clients, a cap on connections, a drain on SIGTERM, metrics across workers).

AE_HOST=0.0.0.0 AE_PORT=8000 AE_WORKERS=2 ae-serve
ae-serve --port 9000   # flags override the environment
"""

from __future__ import annotations

import argparse

from app.process.server import serve as run_server
from app.settings import settings_from_environment


def serve(argv: list[str] | None = None) -> None:
    settings = settings_from_environment()
    parser = argparse.ArgumentParser(prog="ae-serve", description="Serve the autoencoder API with uvicorn.")
    parser.add_argument("--host", default=settings.host, help="AE_HOST (default %(default)s)")
    parser.add_argument("--port", type=int, default=settings.port, help="AE_PORT (default %(default)s)")
    parser.add_argument("--workers", type=int, default=settings.workers, help="AE_WORKERS (default %(default)s)")
    args = parser.parse_args(argv)
    run_server(settings, host=args.host, port=args.port, workers=args.workers)


if __name__ == "__main__":
    serve()
