"""docs/examples/similarity_search.py on a small generated MNIST-format set: its figures are checked against
a brute-force search over vectors fetched independently, and the README's one-command form (the script
starting the service itself) gives the same figures as the script pointed at a running service."""

from __future__ import annotations

import gzip
import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import numpy as np
import pytest
from conftest import REPO_ROOT
from drawn_digits import render_digit

SCRIPT = REPO_ROOT / "docs" / "examples" / "similarity_search.py"
MODEL = "tiny-ae"  # 16-d; untrained, but the figures are checked against a search, not against a quality
QUERIES = 30


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """An IDX file as MNIST ships it: zeros, the uint8 type code, the rank, big-endian sizes, the bytes."""
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def drawn_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=count).astype(np.uint8)
    images = np.stack([np.round(render_digit(int(label), rng) * 255).astype(np.uint8) for label in labels])
    return images, labels


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mnist-like")
    for prefix, count, seed in (("t10k", 150, 1), ("train", 80, 2)):
        images, labels = drawn_split(count, seed)
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, compress=True)  # as downloaded
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, compress=False)  # and unpacked
    return root


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("similarity_search", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(data_dir: Path, out: Path, *options: str) -> dict[str, object]:
    command = [sys.executable, str(SCRIPT), "--data-dir", str(data_dir), "--model", MODEL]
    command += ["--queries", str(QUERIES), "--batch-size", "16", "--json-out", str(out), *options]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "precision@5" in result.stdout and "images/s" in result.stdout  # the printed report
    return dict(json.loads(out.read_text()))


@pytest.fixture(scope="module")
def through_url(data_dir: Path, server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The example pointed at the running service (the tiny checkpoints)."""
    return run_example(data_dir, tmp_path_factory.mktemp("example") / "url.json", "--url", server)


def brute_force_quality(index: np.ndarray, index_labels: np.ndarray, queries: np.ndarray, labels: np.ndarray) -> dict:
    distances = ((queries[:, None, :] - index[None, :, :]) ** 2).sum(axis=2)
    found = index_labels[np.argsort(distances, axis=1, kind="stable")[:, :5]]
    votes = []
    for row in found:
        counts = {label: int((row == label).sum()) for label in row}
        best = max(counts.values())
        votes.append(next(label for label in row if counts[label] == best))  # a tie: the nearer label
    precision = (found == labels[:, None]).mean(axis=1)
    return {
        "precision_at_5": precision.mean(),
        "by_label": {str(label): precision[labels == label].mean() for label in set(labels.tolist())},
        "knn5_accuracy": (np.array(votes) == labels).mean(),
    }


def assert_quality(reported: object, expected: dict) -> None:
    assert isinstance(reported, dict)
    assert reported["precision_at_5"] == pytest.approx(expected["precision_at_5"], abs=1e-4)
    assert reported["knn5_accuracy"] == pytest.approx(expected["knn5_accuracy"], abs=1e-4)
    assert reported["precision_at_5_by_label"] == pytest.approx(expected["by_label"], abs=1e-4)


def test_the_example_reports_what_a_brute_force_search_finds(
    example: ModuleType, data_dir: Path, server: str, through_url: dict[str, object]
) -> None:
    results = through_url
    assert (results["indexed_images"], results["query_images"], results["embedding_size"]) == (150, QUERIES, 16)
    assert isinstance(results["indexing_images_per_second"], float) and results["indexing_images_per_second"] > 0

    index, queries = example.load_digits(data_dir, None, QUERIES)

    def vectors(pngs: list[str]) -> np.ndarray:
        response = httpx.post(f"{server}/v1/embeddings", json={"model": MODEL, "images": pngs}, timeout=60)
        assert response.status_code == 200, response.text
        return np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float64)

    index_vectors = np.concatenate([vectors(index.pngs()[start : start + 50]) for start in range(0, 150, 50)])
    model = brute_force_quality(index_vectors, index.labels, vectors(queries.pngs()), queries.labels)
    assert_quality(results["embeddings"], model)

    # PCA of the same size, fitted on the index's pixels, is the baseline.
    pixels = index.images.reshape(150, -1) / 255.0
    mean = pixels.mean(axis=0)
    directions = np.linalg.svd(pixels - mean, full_matrices=False)[2][:16]
    query_pixels = queries.images.reshape(QUERIES, -1) / 255.0
    baseline = brute_force_quality(
        (pixels - mean) @ directions.T, index.labels, (query_pixels - mean) @ directions.T, queries.labels
    )
    assert_quality(results["pca16"], baseline)


def test_the_one_command_form_starts_the_service_and_finds_the_same(
    data_dir: Path, checkpoints_dir: Path, through_url: dict[str, object], tmp_path: Path
) -> None:
    self_started = run_example(data_dir, tmp_path / "own.json", "--checkpoints-dir", str(checkpoints_dir))
    assert self_started["embeddings"] == through_url["embeddings"]
    assert self_started["pca16"] == through_url["pca16"]
