"""One lever at a time: the same three workloads against `ae-serve` as built from any tree, with any settings.

    python -m bench.levers --data-dir /work/shared/datasets/mnist \
        --variant "base=/path/to/worktree-at-the-base-commit" \
        --variant "direct path off=.:AE_DIRECT_PATH=false" --variant "main=."

Each variant is `label=TREE[:NAME=VALUE...]`: `ae-serve` is started from TREE (its own `app` package, through
PYTHONPATH; a `git worktree add` of an older commit measures that commit) with the settings given, pinned to
the server core, and `bench.loadgen` on the other core sends 1 image with 1 client, 1 image with 32 clients
and 64 images with 1 client, closed loop. Besides requests/s and latency, each row has the server's CPU time
per request (user + system, from /proc/PID/stat, the run's delta over its answers): what a lever saves
whatever the machine's speed. Pause background work first; compare rows of one run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import MODEL, load, server, write_pngs

WORKLOADS = ((1, 1), (1, 32), (64, 1))  # (images per request, clients)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Variant:
    label: str
    tree: Path
    env: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Variant:
        label, _, rest = text.partition("=")
        tree, *settings = rest.split(":")
        return cls(label, Path(tree).resolve(), dict(setting.split("=", 1) for setting in settings))


def server_cpu_seconds(port: int) -> float:
    """CPU seconds so far of the process listening on `port` (its /proc stat: utime + stime)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit() and f"--port {port}" in _command_line(pid):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    raise RuntimeError(f"no process serves port {port}")


def _command_line(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def measure(variant: Variant, args: argparse.Namespace, images_dir: Path, work: Path) -> list[str]:
    env = {
        "PYTHONPATH": str(variant.tree),
        "AE_CHECKPOINTS_DIR": str(variant.tree / "checkpoints"),
        "AE_TORCH_THREADS": "1",
        "AE_LOG_LEVEL": "warning",
        **variant.env,
    }
    probe = next(images_dir.iterdir()).read_bytes()
    home = Path.cwd()
    os.chdir(variant.tree)  # `python -m` puts the working directory first on sys.path: the tree's packages
    try:
        rows = _measure_in_tree(env, args, images_dir, work, probe, variant.label)
    finally:
        os.chdir(home)
    return rows


def _measure_in_tree(
    env: dict[str, str], args: argparse.Namespace, images_dir: Path, work: Path, probe: bytes, label: str
) -> list[str]:
    rows = []
    with server("", env, work / "server.log", probe, "/v1/denoise", module=["app.process.cli"]) as port:
        for images, clients in WORKLOADS:
            load(port, args, images_dir, "/v1/denoise", images_per_request=images, concurrency=clients)  # warm-up
            before = server_cpu_seconds(port)  # no warm-up in the measured run: all its CPU is its answers'
            unwarmed = argparse.Namespace(**{**vars(args), "warmup": 0.0})
            report = load(port, unwarmed, images_dir, "/v1/denoise", images_per_request=images, concurrency=clients)
            cpu = server_cpu_seconds(port) - before
            answered = report["requests_per_s"] * args.duration
            latency = report["latency_ok_s"]
            rate, p50_ms, p99_ms = report["requests_per_s"], latency["p50"] * 1000, latency["p99"] * 1000
            rows.append(
                f"| {label} | {images} image(s), {clients} client(s) | {rate:,.0f} | {rate * images:,.0f} | "
                f"{p50_ms:.1f} | {p99_ms:.1f} | {cpu / answered * 1000:.3f} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="MNIST IDX files (noisy test digits are sent)")
    parser.add_argument("--variant", action="append", required=True, help="label=TREE[:NAME=VALUE...]")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ae-levers-") as folder:
        work = Path(folder)
        images_dir = work / "pngs"
        images_dir.mkdir()
        write_pngs(args.data_dir, images_dir)
        print(f"`POST /v1/denoise` ({MODEL}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        print("| variant | workload | requests/s | images/s | p50 ms | p99 ms | server CPU ms / request |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for text in args.variant:
            for row in measure(Variant.parse(text), args, images_dir, work):
                print(row, flush=True)


if __name__ == "__main__":
    main()
