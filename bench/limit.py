"""The limit: how many images per second a model runs in-process, with no HTTP and no codecs.

Each MNIST model is measured twice: eager (NCHW, float32, as loaded) and with the execution plan the
service chooses for it on this machine (models.runtime.execution: memory format, precision under the card's
quality guard, batch norms folded, compiled where that is the setting). With `--photos` it also measures
the photo denoiser bsd-denoise-sigma25 through its tiled path: megapixels/s of a 512x512 grayscale image
and the seconds one 1-megapixel colour photo takes, eager and planned.

Also measures what the per-image PNG work costs in-process (decode one 28x28 PNG to a tensor and
encode one back), the other half of a request's cost that no batching can remove.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from app.engine.scheduling.batching import Batcher, BatchingConfig
from app.imaging.codecs import decode_pixels, encode_png, tensor_to_pixels
from app.imaging.model_input import pixels_to_tensor
from models.checkpoint import load_checkpoint, read_card
from models.runtime.execution import PlannedModel, Probe, plan_execution

BATCH_SIZES = (1, 8, 64, 256)


@dataclass
class LimitResult:
    model: str
    tasks: list[str]
    input_shape: tuple[int, int, int]  # (C, H, W)
    images_per_s: dict[int, float]  # batch size -> images/s, eager float32 NCHW
    planned_images_per_s: dict[int, float] = dataclasses.field(default_factory=dict)  # with the service's plan
    plan: str = ""  # the plan's one-line summary


# Models whose forward pass takes more than images (the conditional VAE's labels) or that answer no image
# (the classifier that judges samples): not what the serving limit is about.
NOT_MEASURED_TASKS = frozenset({"conditional-vae", "classify"})


def mnist_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Checkpoint folders whose model card says they read MNIST digits (autoencoders: see NOT_MEASURED_TASKS)."""
    found = []
    for directory in sorted(Path(checkpoints_dir).iterdir()):
        if not (directory / "config.json").is_file():
            continue
        card = read_card(directory)
        if card.input.domain == "mnist" and not NOT_MEASURED_TASKS & set(card.tasks):
            found.append(directory)
    return found


def input_shape(directory: Path) -> tuple[int, int, int]:
    card = read_card(directory)
    size = 28 // card.scale if "super-resolve" in card.tasks and card.scale else 28
    return card.input.channels, card.input.height or size, card.input.width or size


def throughput(
    model: Callable[[torch.Tensor], object], shape: tuple[int, int, int], batch_size: int, device: str, seconds: float
) -> float:
    """Images/s of model(images) for (batch_size, *shape) inputs, timed for about `seconds`."""
    images = torch.rand(batch_size, *shape, device=device)
    with torch.inference_mode():
        for _ in range(3):  # warm-up: allocator, kernels, caches
            model(images)
        synchronize(device)
        runs = 0
        started = time.perf_counter()
        while True:
            model(images)
            runs += 1
            if runs % 5 == 0:
                synchronize(device)
                elapsed = time.perf_counter() - started
                if elapsed >= seconds:
                    return runs * batch_size / elapsed


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def planned_model(directory: Path, device: str, precision: str = "auto", compile: str = "auto") -> PlannedModel:
    """The model with the plan the service would choose for it (see app.engine.models.registry)."""
    checkpoint = load_checkpoint(directory, device="cpu")
    shape = input_shape(directory) if checkpoint.card.input.domain != "natural" else (1, 128, 128)
    batch = 32 if checkpoint.card.input.domain != "natural" else 1
    method = "forward" if checkpoint.card.input.domain != "natural" else "denoise"
    probe = Probe.of_method(method, torch.rand(batch, *shape))
    return plan_execution(
        checkpoint.model,
        device=torch.device(device),
        precision=precision,  # type: ignore[arg-type]
        compile=compile,  # type: ignore[arg-type]
        serving=checkpoint.card.serving,
        probe=probe,
        warm_up=[Probe.of_method(method, torch.rand(size, *shape)) for size in (1, 2, 64)] if batch > 1 else [],
    )


def measure_limits(
    checkpoints_dir: Path, device: str = "cpu", seconds: float = 0.4, precision: str = "auto", compile: str = "auto"
) -> list[LimitResult]:
    results = []
    for directory in mnist_checkpoints(checkpoints_dir):
        checkpoint = load_checkpoint(directory, device=device)
        shape = input_shape(directory)
        rates = {size: throughput(checkpoint.model, shape, size, device, seconds) for size in BATCH_SIZES}
        planned = planned_model(directory, device, precision, compile)

        def run(images: torch.Tensor, planned: PlannedModel = planned) -> torch.Tensor:
            return planned.run(planned.model, images)

        planned_rates = {size: throughput(run, shape, size, device, seconds) for size in BATCH_SIZES}
        name, tasks = checkpoint.card.name, checkpoint.card.tasks
        results.append(LimitResult(name, tasks, shape, rates, planned_rates, planned.plan.summary()))
    return results


PHOTO_MODEL = "bsd-denoise-sigma25"


def photo_speeds(checkpoints_dir: Path, device: str = "cpu", precision: str = "auto") -> dict[str, object]:
    """bsd-denoise-sigma25 through its serving method (tiled): 512x512 grayscale megapixels/s and the seconds of
    one 1-megapixel (1000x1000) colour photo, eager float32 and with the plan; the faster of two timed calls."""
    directory = Path(checkpoints_dir) / PHOTO_MODEL
    eager = load_checkpoint(directory, device=device).model
    planned = planned_model(directory, device, precision)
    generator = torch.Generator().manual_seed(0)
    gray, colour = torch.rand(1, 1, 512, 512, generator=generator), torch.rand(1, 3, 1000, 1000, generator=generator)

    def seconds(function: object, images: torch.Tensor) -> float:
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            with torch.inference_mode():
                function(images)  # type: ignore[operator]
            synchronize(device)
            timings.append(time.perf_counter() - started)
        return min(timings)

    def planned_denoise(images: torch.Tensor) -> torch.Tensor:
        return planned.run(planned.method("denoise"), images)

    eager_gray, planned_gray = seconds(eager.denoise, gray), seconds(planned_denoise, gray)
    return {
        "model": PHOTO_MODEL,
        "plan": planned.plan.summary(),
        "gray_512_megapixels_per_s": {"eager": 0.262144 / eager_gray, "planned": 0.262144 / planned_gray},
        "colour_1mp_seconds": {"eager": seconds(eager.denoise, colour), "planned": seconds(planned_denoise, colour)},
    }


def codec_seconds_per_image(png_files: list[Path], seconds: float = 0.4) -> float:
    """In-process cost of decoding one PNG to a (1, H, W) tensor and encoding a PNG back, with the service's
    codecs (app.imaging: its own reader and writer for plain small PNGs, Pillow for the rest)."""
    blobs = [path.read_bytes() for path in png_files]
    runs = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        blob = blobs[runs % len(blobs)]
        tensor = pixels_to_tensor(decode_pixels(blob, max_pixels=1 << 24, channels=1))
        encode_png(tensor_to_pixels(tensor))
        runs += 1
    return (time.perf_counter() - started) / runs


def batcher_requests_per_s(clients: int = 32, max_delay_ms: float = 2.0, seconds: float = 0.5) -> float:
    """Single-image requests/s through `app.engine.scheduling.batching.Batcher` alone, with a trivial batch function.

    Shows the batcher's own cost per request (queueing, waking the worker, slicing outputs); with a
    delay, closed-loop clients that cannot fill a batch also wait out the delay on every pass.
    """
    return asyncio.run(_batcher_requests_per_s(clients, max_delay_ms, seconds))


async def _batcher_requests_per_s(clients: int, max_delay_ms: float, seconds: float) -> float:
    batcher = Batcher("bench", lambda images: images + 1, BatchingConfig(max_delay_ms=max_delay_ms))
    image = torch.zeros(1, 1, 28, 28)
    done = 0
    end = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await batcher.submit(image)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    await batcher.close()
    return done / elapsed


def main(argv: list[str] | None = None) -> None:
    """Run as its own process so that its thread count and core pinning (by `taskset`) start clean."""
    parser = argparse.ArgumentParser(description="In-process throughput, as JSON on stdout.")
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--seconds", type=float, default=0.4, help="timing per measurement")
    parser.add_argument("--pngs", type=Path, help="also time PNG work on these files and the batcher alone")
    parser.add_argument("--precision", default="auto", help="AE_PRECISION of the planned measurements")
    parser.add_argument("--photos", action="store_true", help=f"also time {PHOTO_MODEL} on photo-sized inputs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    limits = measure_limits(args.checkpoints, args.device, args.seconds, args.precision)
    report: dict[str, object] = {"limits": [dataclasses.asdict(result) for result in limits]}
    if args.photos:
        report["photos"] = photo_speeds(args.checkpoints, args.device, args.precision)
    if args.pngs is not None:
        report["codec_seconds_per_image"] = codec_seconds_per_image(sorted(args.pngs.glob("*.png")), args.seconds)
        report["batcher_requests_per_s"] = {
            str(delay): batcher_requests_per_s(32, delay, args.seconds) for delay in (2.0, 0.0)
        }
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
