"""A photo denoiser against BM3D/CBM3D on every image of a set, not only the evaluation's first few.

`python -m models.evaluate` runs (C)BM3D on the first 3 to 10 images of a set (it costs ~10 s per
481x321 colour image on one thread); this sweep runs it on all of them, at one sigma and one protocol,
with the evaluation's own noise draws (one generator seeded as the evaluation, image after image in name
order, so image i gets the same noise here as there). Shards split the images between processes; the
noise of the images a shard skips is still drawn, so every shard sees the same draws:

    python -m models.evaluation.photo.baseline_sweep --natural-dir ../shared/datasets \
        --model checkpoints/photo-denoise-color --set CBSD68 --sigma 25 --shard 0/2 --out a.json
    python -m models.evaluation.photo.baseline_sweep --combine a.json b.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from models.architectures import FFDNet
from models.checkpoint import load_checkpoint
from models.data.natural_images import noise_generator, psnr_255, quantise
from models.evaluation.context import EvaluationSettings
from models.evaluation.photo.denoise import PROTOCOLS, bm3d_baseline, noisy_pair, read_set, to_batch


def sweep(
    model_dir: Path,
    folder: Path,
    sigma: float,
    protocol: str,
    shard: int = 0,
    shards: int = 1,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Per image of this shard: its index in name order and the PSNR of the noisy input, of the model (told
    sigma) and of (C)BM3D (told sigma), outputs rounded to 8 bits as in the evaluation."""
    checkpoint = load_checkpoint(model_dir, device="cpu")
    model = checkpoint.model
    if not isinstance(model, FFDNet):
        raise ValueError(f"{model_dir} is not a photo denoiser of every noise level (FFDNet)")
    images = read_set(folder, int(checkpoint.card.input.channels))[:limit]
    generator = noise_generator(EvaluationSettings.natural_noise_seed)
    rows = []
    for index, pixels in enumerate(images):
        clean = to_batch(pixels)
        noisy = noisy_pair(clean, sigma, generator)[protocol]  # drawn for every image: the draws stay aligned
        if index % shards != shard:
            continue
        with torch.no_grad():
            denoised = model.denoise_at(noisy, sigma)
        rows.append(
            {
                "index": index,
                "noisy input": float(psnr_255(noisy, clean)),
                "model": float(psnr_255(quantise(denoised), clean)),
                "BM3D": float(psnr_255(quantise(bm3d_baseline(noisy, sigma)), clean)),
            }
        )
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the images, and how many the model beat (C)BM3D on."""
    rows = sorted(rows, key=lambda row: row["index"])
    means = {name: round(statistics.fmean(row[name] for row in rows), 3) for name in ("noisy input", "model", "BM3D")}
    return {
        "images": len(rows),
        **means,
        "model minus BM3D": round(means["model"] - means["BM3D"], 3),
        "images where the model wins": sum(1 for row in rows if row["model"] > row["BM3D"]),
        "first 3 images, model minus BM3D": round(statistics.fmean(r["model"] - r["BM3D"] for r in rows[:3]), 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.evaluation.photo.baseline_sweep", description=__doc__)
    parser.add_argument("--natural-dir", type=Path, help="folder holding the test sets")
    parser.add_argument("--model", type=Path, help="a photo denoiser's checkpoint folder")
    parser.add_argument("--set", default="CBSD68", help="test set folder name (default %(default)s)")
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--protocol", choices=PROTOCOLS, default="literature")
    parser.add_argument("--shard", default="0/1", help="K/N: the images whose index is K modulo N")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write this shard's rows as JSON")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="JSON", help="summarise shards' rows")
    arguments = parser.parse_args(argv)
    if arguments.combine:
        rows = [row for path in arguments.combine for row in json.loads(path.read_text())]
        print(json.dumps(summary(rows), indent=2))
        return
    if arguments.natural_dir is None or arguments.model is None:
        parser.error("--natural-dir and --model are required (or --combine)")
    shard, _, shards = arguments.shard.partition("/")
    if not (shard.isdigit() and shards.isdigit() and int(shard) < int(shards)):
        parser.error(f"--shard takes K/N with 0 <= K < N, not {arguments.shard!r}")
    torch.set_num_threads(arguments.threads)
    rows = sweep(
        arguments.model,
        arguments.natural_dir / arguments.set,
        arguments.sigma,
        arguments.protocol,
        int(shard),
        int(shards),
        arguments.limit,
    )
    if arguments.out:
        arguments.out.write_text(json.dumps(rows))
    print(json.dumps(summary(rows), indent=2))


if __name__ == "__main__":
    main()
