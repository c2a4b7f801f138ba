"""The server's verbs of the `ae` command: serve, train, evaluate and bench.

`ae` itself is the client's command (`aeclient.cli`, which needs no torch); it hands these verbs over to
`run_verb` here, importing this module only then. This module imports nothing heavy itself: each verb
loads what it needs when it runs, and when the server's packages (torch, FastAPI, ...) are not installed
the user is told so, in one line, instead of a traceback.
"""

from __future__ import annotations

import runpy
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerVerb:
    module: str  # `ae VERB ARGS` is `python -m MODULE ARGS`; its own --help describes ARGS
    summary: str


SERVER_VERBS: dict[str, ServerVerb] = {
    "serve": ServerVerb("app.process.cli", "run the service with uvicorn (AE_* settings; --host, --port, --workers)"),
    "train": ServerVerb("models.train", "train a recipe, or a task on your own images, into checkpoints/<name>"),
    "evaluate": ServerVerb("models.evaluate", "measure checkpoints on MNIST and write the model report"),
    "bench": ServerVerb("bench.run", "benchmark the service"),
}
# What the server install adds to the client's; a verb that misses one of them says so.
SERVER_PACKAGES = frozenset(
    {"torch", "numpy", "fastapi", "starlette", "uvicorn", "safetensors", "pydantic_settings", "prometheus_client"}
)
INSTALL_HINT = 'install the server: pip install torch==2.13.0 && pip install -e ".[dev]" (see README.md)'


def run_verb(verb: str, argv: list[str]) -> int:
    """Run `ae VERB ARGV` in this process, as `python -m MODULE ARGV` (the module's exits are its own)."""
    module = SERVER_VERBS[verb].module
    sys.argv = [f"ae {verb}", *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in SERVER_PACKAGES:
            raise
        print(f"ae {verb}: needs {missing}, which is not installed; the client verbs work without it. {INSTALL_HINT}",
              file=sys.stderr)  # fmt: skip
        return 2
    return 0
