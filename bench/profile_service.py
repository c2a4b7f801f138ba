"""Where the service's event loop spends its time under load: cProfile, grouped by package.

    python -m bench.profile_service --data-dir /work/shared/datasets/mnist --clients 32

Starts the service under cProfile pinned to core 0 (like `bench.run`), loads it with single-image
`/v1/denoise` requests from `bench.loadgen` on core 1, then prints the profiled thread's own time
(cProfile "tottime") per package, as a share of the busy time and in microseconds per request.
cProfile profiles the thread that runs the event loop only (not the model's executor thread or
other worker threads) and slows Python code down, so read the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import GENERATOR_CORE, MODEL, SERVER_CORE, free_port, write_pngs
from bench.loadgen import BOUNDARY, multipart_body

IDLE = "<method 'poll' of 'select.epoll' objects>"  # the event loop waiting for sockets


def serve(port: int, profile_path: Path) -> None:
    """Run the service in this process; profile from SIGUSR1 until SIGUSR2, which writes the profile."""
    import uvicorn

    from app.main import app  # imported before profiling: start-up is not what we measure

    profiler = cProfile.Profile()

    def stop(*_: object) -> None:
        profiler.disable()
        profiler.dump_stats(profile_path)

    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())  # handlers run on the event-loop thread
    signal.signal(signal.SIGUSR2, stop)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    uvicorn.Server(config).run()


def package_of(filename: str, function: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/")[1].split("/")[0]
    if "/app/" in filename:
        return "app/" + filename.split("/app/")[1]
    if "/lib/python3" in filename:
        return "stdlib: " + filename.split("/lib/python3")[1].split("/")[1].removesuffix(".py")
    return "built-ins (C functions called from any of the above)" if filename == "~" else filename


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="MNIST IDX files (required)")
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--functions", action="store_true", help="also list the functions with most cumulative time")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: the profiled server process
    parser.add_argument("--profile", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.profile)
        return
    if args.data_dir is None:
        parser.error("--data-dir is required")

    with tempfile.TemporaryDirectory(prefix="ae-profile-") as scratch:
        images = Path(scratch) / "pngs"
        images.mkdir()
        png = write_pngs(args.data_dir, images)[0].read_bytes()
        port = free_port()
        profile_path = Path(scratch) / "service.prof"
        env = os.environ | {
            "AE_CHECKPOINTS_DIR": str(args.checkpoints.resolve()),
            "AE_TORCH_THREADS": "1",
            "AE_DEVICE": "cpu",
            "AE_LOG_LEVEL": "warning",
        }
        command = ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "bench.profile_service"]
        command += ["--serve", str(port), "--profile", str(profile_path)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            body = multipart_body([png])
            headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
            url = f"http://127.0.0.1:{port}/v1/denoise?model={MODEL}"
            for _ in range(240):
                try:
                    if httpx.post(url, content=body, headers=headers, timeout=10).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            load = ["taskset", "-c", GENERATOR_CORE, sys.executable, "-m", "bench.loadgen", "--port", str(port)]
            load += ["--path", f"/v1/denoise?model={MODEL}", "--images-dir", str(images)]
            load += ["--concurrency", str(args.clients), "--duration", str(args.seconds), "--warmup", "0"]
            process.send_signal(signal.SIGUSR1)
            result = json.loads(subprocess.run(load, capture_output=True, text=True, check=True).stdout)
            process.send_signal(signal.SIGUSR2)
            for _ in range(100):  # the profile is written by the signal handler
                if profile_path.exists() and profile_path.stat().st_size > 0:
                    break
                time.sleep(0.1)
            time.sleep(0.5)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        stats = pstats.Stats(str(profile_path)).stats  # type: ignore[attr-defined]

    requests = sum(result["statuses"].values())
    own_time: collections.Counter[str] = collections.Counter()
    for (filename, _line, function), (_calls, _primitive, tottime, _cumtime, _callers) in stats.items():
        if function != IDLE:
            own_time[package_of(filename, function)] += tottime
    busy = sum(own_time.values())
    print(f"{requests} requests at {args.clients} clients ({result['requests_per_s']:.0f}/s under the profiler)")
    print(f"event-loop thread busy {busy:.2f} s of {args.seconds:g} s; own time by package:")
    print("| package | share | µs / request |\n|---|---:|---:|")
    for package, seconds in own_time.most_common(args.top):
        print(f"| {package} | {seconds / busy:.1%} | {seconds / requests * 1e6:.0f} |")
    if args.functions:
        print("\nfunctions by own time:")
        print("| function | share | µs / request |\n|---|---:|---:|")
        by_own = sorted((item for item in stats.items() if item[0][2] != IDLE), key=lambda item: -item[1][2])
        for (filename, line, function), (_c, _p, tottime, _cumtime, _callers) in by_own[: args.top]:
            where = f"{package_of(filename, function)}:{line} {function}"
            print(f"| {where} | {tottime / busy:.1%} | {tottime / requests * 1e6:.0f} |")
        print("\nfunctions by cumulative time (own time plus what they call):")
        print("| function | cumulative share | µs / request |\n|---|---:|---:|")
        by_cumulative = sorted(stats.items(), key=lambda item: -item[1][3])
        for (filename, line, function), (_c, _p, _tottime, cumtime, _callers) in by_cumulative[: args.top]:
            where = f"{package_of(filename, function)}:{line} {function}"
            print(f"| {where} | {cumtime / busy:.1%} | {cumtime / requests * 1e6:.0f} |")


if __name__ == "__main__":
    main()
