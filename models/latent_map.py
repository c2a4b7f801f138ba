"""The latent map of a 2-D VAE: the posterior means of test digits with their labels, kept beside the weights.

    python -m models.latent_map mnist-vae-2d --data-dir ../shared/datasets/mnist

writes `checkpoints/mnist-vae-2d/latent-map.json`, which the service sends to the playground
(`GET /v1/vae/latent-map`) so that the page can draw the lesson's scatter plot of the latent space coloured by
digit without the data set. The file names the weights it was computed with (their sha256): a map
of other weights would put the digits in the wrong places, so the service refuses a stale one.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint
from models.data.mnist import load_mnist

LATENT_MAP_FILE = "latent-map.json"
DEFAULT_POINTS = 5000
DECIMALS = 3  # a thousandth of a unit is far below a pixel of any plot; it keeps the file small


class LatentMapError(Exception):
    """A latent map that is missing, unreadable or does not fit its model."""


@dataclass
class LatentMap:
    model: str
    weights_sha256: str
    source: str  # which images, e.g. "MNIST test set, first 5000 digits"
    x: list[float]  # z1 of each image's posterior mean
    y: list[float]  # z2
    labels: list[int]  # the digit each point is

    def __post_init__(self) -> None:
        if not len(self.x) == len(self.y) == len(self.labels):
            raise LatentMapError(f"x, y and labels differ in length: {len(self.x)}, {len(self.y)}, {len(self.labels)}")


def compute_latent_map(
    model_with_means: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    model: str,
    weights_sha256: str,
    source: str,
    batch_size: int = 500,
) -> LatentMap:
    """Posterior means of `images` (the model's `embed`: (N, 1, H, W) -> (N, 2)), rounded, with their `labels`."""
    embed = getattr(model_with_means, "embed", None)
    if embed is None:
        raise LatentMapError(f"model {model!r} has no posterior means to map (no embed method)")
    with torch.no_grad():
        means = torch.cat([embed(images[start : start + batch_size]) for start in range(0, len(images), batch_size)])
    if means.ndim != 2 or means.shape[1] != 2:
        raise LatentMapError(f"model {model!r} has a {tuple(means.shape[1:])} latent space; the map needs 2-D")
    rounded = means.double().round(decimals=DECIMALS)
    return LatentMap(
        model=model,
        weights_sha256=weights_sha256,
        source=source,
        x=rounded[:, 0].tolist(),
        y=rounded[:, 1].tolist(),
        labels=[int(label) for label in labels],
    )


def write_latent_map(directory: Path, latent_map: LatentMap) -> Path:
    path = Path(directory) / LATENT_MAP_FILE
    path.write_text(json.dumps(asdict(latent_map), separators=(",", ":")) + "\n")
    return path


def read_latent_map(directory: Path) -> LatentMap:
    """The map in `directory`; LatentMapError naming the file when it is missing or malformed."""
    path = Path(directory) / LATENT_MAP_FILE
    if not path.is_file():
        raise LatentMapError(f"{path.name} is missing")
    try:
        data = json.loads(path.read_text())
        return LatentMap(
            model=str(data["model"]),
            weights_sha256=str(data["weights_sha256"]),
            source=str(data["source"]),
            x=[float(value) for value in data["x"]],
            y=[float(value) for value in data["y"]],
            labels=[int(value) for value in data["labels"]],
        )
    except KeyError as exc:
        raise LatentMapError(f"{path.name} is not a valid latent map: it lacks the field {exc}") from exc
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise LatentMapError(f"{path.name} is not a valid latent map: {exc}") from exc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="checkpoint folder name of a VAE with a 2-D latent space")
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--checkpoints-dir", type=Path, default=Path("checkpoints"))
    parser.add_argument("--points", type=int, default=DEFAULT_POINTS, help="the first N test digits")
    args = parser.parse_args(argv)
    directory = args.checkpoints_dir / args.name
    checkpoint = load_checkpoint(directory)
    test = load_mnist(args.data_dir, "test")
    count = min(args.points, len(test.images))
    latent_map = compute_latent_map(
        checkpoint.model,
        test.images[:count],
        test.labels[:count],
        model=checkpoint.card.name,
        weights_sha256=checkpoint.card.weights_sha256 or "",
        source=f"MNIST test set, the first {count} digits (posterior means)",
    )
    print(f"{write_latent_map(directory, latent_map)}: {count} points")


if __name__ == "__main__":
    main()
