"""MNIST from the standard IDX files, with the decompressed bytes checked against known sha256 sums.

The files are read from a directory the caller gives (e.g. `--data-dir ../shared/datasets/mnist`),
gzip-compressed (`*.gz`) or not. Nothing is downloaded at run time unless `download=True` is asked
for explicitly, and then only from the public mirrors, verified with the same sums.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MNIST_FILES = {
    "train-images": ("train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels": ("train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "test-images": ("t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "test-labels": ("t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_LICENCE = "CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. J. C. Burges)"

# IDX element type codes -> big-endian numpy types (the format stores every number big-endian).
_IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(Exception):
    """A data file is missing, malformed or fails its checksum; the message names the file."""


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an IDX file into an array of its declared type and shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: not an IDX file (bad magic)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise DataError(f"{source}: unknown IDX element type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{source}: IDX payload is {len(data) - header} bytes, header promises {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: Path, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (gzip or not), verifying the sha256 of the decompressed bytes when given."""
    path = Path(path)
    raw = path.read_bytes()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise DataError(f"{path}: sha256 of the decompressed bytes is {actual}, expected {sha256}")
    return parse_idx(data, str(path))


def _find(data_dir: Path, stem: str) -> Path | None:
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.is_file():
            return candidate
    return None


def download_mnist(data_dir: Path) -> None:
    """Fetch the missing MNIST files from the public mirrors (only when asked to)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for stem, _ in MNIST_FILES.values():
        if _find(data_dir, stem) is not None:
            continue
        for mirror in MNIST_MIRRORS:
            try:
                with urllib.request.urlopen(f"{mirror}{stem}.gz", timeout=60) as response:  # noqa: S310 - fixed https mirrors
                    (data_dir / f"{stem}.gz").write_bytes(response.read())
                break
            except OSError:
                continue
        else:
            raise DataError(f"{data_dir}: could not download {stem}.gz from any mirror")


@dataclass
class MnistSplit:
    images: torch.Tensor  # (N, 1, 28, 28) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64 digits


def load_mnist(data_dir: Path, split: str = "train", download: bool = False, verify: bool = True) -> MnistSplit:
    """Load the 'train' (60,000) or 'test' (10,000) split from `data_dir`."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data_dir = Path(data_dir)
    if download:
        download_mnist(data_dir)
    arrays = []
    for kind in ("images", "labels"):
        stem, sha = MNIST_FILES[f"{split}-{kind}"]
        path = _find(data_dir, stem)
        if path is None:
            raise DataError(f"{data_dir / stem}(.gz): MNIST file is missing; pass --data-dir pointing at the IDX files")
        arrays.append(read_idx(path, sha if verify else None))
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{data_dir}: MNIST {split} images {images.shape} and labels {labels.shape} do not match")
    pixels = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return MnistSplit(images=pixels, labels=torch.from_numpy(labels.astype(np.int64)))
