"""Pick the playground's example digits from the MNIST test set (one of each, 0 to 9).

    python docs/examples/make_playground_digits.py --data-dir ../shared/datasets/mnist

writes `app/static/examples/digit-<d>.png` (28x28 grayscale, white on black): the first test digit of
each class. The playground offers them as inputs and embeds them as the reference digits that a
drawing's embedding is compared with. MNIST is CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. J. C. Burges).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from models.data.mnist import load_mnist

OUTPUT = Path(__file__).resolve().parents[2] / "app" / "static" / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with the MNIST IDX files")
    args = parser.parse_args()
    test = load_mnist(args.data_dir, "test")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for digit in range(10):
        index = int((test.labels == digit).nonzero()[0])
        pixels = (test.images[index, 0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(OUTPUT / f"digit-{digit}.png", optimize=True)
    print(f"{OUTPUT}: digit-0.png .. digit-9.png")


if __name__ == "__main__":
    main()
