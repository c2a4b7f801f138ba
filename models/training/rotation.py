"""The background training of the photo models: one process that takes them in turns, a chunk each.

    nice -n 19 python -m models.training.rotation --data-dir ../shared/datasets --chunk-minutes 20 \\
        [--until 17:05] [--threads 1] [--device cpu|cuda] photo-denoise-gray photo-denoise-color photo-sr-x2

Each chunk resumes one model from `<state-dir>/<name>/` (or from its served checkpoint) and trains it for
`--chunk-minutes` of training time, logging validation points, without touching the served checkpoint
(`--publish never`); then the next model. SIGTERM or SIGINT ends the current chunk after its step with
the state saved, and the process exits 0; SIGSTOP/SIGCONT pauses are not counted as training time.
Publishing the served checkpoints is a separate, deliberate step:
`python -m models.train NAME --data-dir ... --steps 0 --publish if-better`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from models.training.photo import super_resolution
from models.training.photo.denoise import PHOTO_DENOISE_RECIPES, STOP, install_stop_handlers, run
from models.training.photo.super_resolution import PHOTO_SR_RECIPES

ROTATING = sorted([*PHOTO_DENOISE_RECIPES, *PHOTO_SR_RECIPES])


def seconds_until(until: str) -> float:
    """Seconds from now to the next UTC time of day `until` (HH:MM); 0 if it is this very minute."""
    hours, minutes = (int(part) for part in until.split(":"))
    now = dt.datetime.now(dt.UTC)
    then = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    if then < now - dt.timedelta(minutes=1):
        then += dt.timedelta(days=1)
    return max(0.0, (then - now).total_seconds())


def request_stop() -> None:
    STOP.requested = True


def train_chunk(name: str, arguments: argparse.Namespace, command: str) -> None:
    """One chunk of one model, resumed from its state and saved again; the served checkpoint untouched."""
    if name in PHOTO_SR_RECIPES:
        super_resolution.run(
            PHOTO_SR_RECIPES[name],
            arguments.data_dir,
            arguments.out,
            arguments.chunk_minutes,
            None,
            arguments.threads,
            command,
            state_root=arguments.state_dir,
            device=arguments.device,
            publish="never",
        )
        return
    run(
        PHOTO_DENOISE_RECIPES[name],
        arguments.data_dir,
        arguments.out,
        arguments.chunk_minutes,
        None,
        arguments.precision,
        arguments.threads,
        command,
        state_root=arguments.state_dir,
        device=arguments.device,
        publish="never",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.training.rotation", description=__doc__.split("\n")[0])
    parser.add_argument("recipes", nargs="+", choices=ROTATING)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("checkpoints"))
    parser.add_argument("--state-dir", type=Path, default=Path("training-state"))
    parser.add_argument("--chunk-minutes", type=float, default=20.0)
    parser.add_argument("--until", help="stop at this UTC time of day, HH:MM (default: only on a signal)")
    parser.add_argument("--rounds", type=int, help="stop after this many rounds of every recipe")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("bfloat16", "float32"), default="bfloat16")
    arguments = parser.parse_args(argv)
    if arguments.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda was asked for, but torch sees no CUDA device")
    install_stop_handlers()
    if arguments.until is not None:  # the chunk in progress stops at that time too, its state saved
        timer = threading.Timer(seconds_until(arguments.until), request_stop)
        timer.daemon = True
        timer.start()
    rounds = 0
    while not STOP.requested:
        for name in arguments.recipes:
            if STOP.requested:
                break
            command = shlex.join(
                ["python", "-m", "models.training.rotation", *(sys.argv[1:] if argv is None else argv)]
            )
            train_chunk(name, arguments, command)
        rounds += 1
        if arguments.rounds is not None and rounds >= arguments.rounds:
            break
    print("rotation: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
