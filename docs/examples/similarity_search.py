"""Image similarity search, as another service would build it: the official `openai` SDK fetches the
service's embeddings and LanceDB, an embedded vector database, stores and searches them.

    python docs/examples/similarity_search.py --data-dir ../shared/datasets/mnist

1. Index: the 10,000 MNIST test digits go through `/v1/embeddings` (64 a request, a few requests at
   once) and into a LanceDB table with their labels.
2. Query: new digits (the last training digits, which no index entry is) are embedded the same way, and
   LanceDB returns each one's 5 nearest neighbours (exact L2 search).
3. Report: precision@5 (the share of the 5 neighbours with the query's label) per label and overall,
   5-NN accuracy (majority vote, ties to the nearer), next to PCA of the same size fitted on the index's
   pixels and searched the same way, and how many images per second the indexing took.

Without `--url` the script starts the service itself (`python -m uvicorn app.main:app` on a free port,
on the checkpoints in `--checkpoints-dir`) and stops it at the end. The script needs numpy, Pillow,
`openai` and `lancedb` (the project's `examples` extra), not the project's code.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import lancedb
import numpy as np
import openai
import pyarrow as pa
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
NEIGHBOURS = 5


# -- data ---------------------------------------------------------------------------------------------


def read_idx(data_dir: Path, stem: str) -> np.ndarray:
    """One MNIST IDX file (`stem` or `stem.gz`) as an array: unsigned bytes, big-endian header."""
    for path in (data_dir / stem, data_dir / f"{stem}.gz"):
        if path.exists():
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            dimensions = data[3]
            shape = struct.unpack(f">{dimensions}I", data[4 : 4 + 4 * dimensions])
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dimensions).reshape(shape)
    raise SystemExit(f"{data_dir / stem}(.gz) is missing: --data-dir must hold the MNIST IDX files")


@dataclass
class Digits:
    images: np.ndarray  # (n, 28, 28) uint8
    labels: np.ndarray  # (n,) int

    def pngs(self) -> list[str]:
        """Each digit as a base64 PNG: what the embeddings API takes as `input`."""
        encoded = []
        for image in self.images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")  # uint8 (28, 28): greyscale
            encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
        return encoded


def load_digits(data_dir: Path, index_size: int | None, queries: int) -> tuple[Digits, Digits]:
    """The test digits to index (the first `index_size`, all by default) and the last `queries` training digits."""
    index = Digits(read_idx(data_dir, "t10k-images-idx3-ubyte"), read_idx(data_dir, "t10k-labels-idx1-ubyte"))
    train = Digits(read_idx(data_dir, "train-images-idx3-ubyte"), read_idx(data_dir, "train-labels-idx1-ubyte"))
    index = Digits(index.images[:index_size], index.labels[:index_size].astype(np.int64))
    return index, Digits(train.images[-queries:], train.labels[-queries:].astype(np.int64))


# -- the service --------------------------------------------------------------------------------------


@contextmanager
def started_service(checkpoints_dir: Path, model: str) -> Iterator[str]:
    """The service on a free loopback port, loading `model` at start-up; its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "AE_CHECKPOINTS_DIR": str(checkpoints_dir),
        "AE_PRELOAD": json.dumps([model]),
        "AE_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env)  # noqa: S603 (our own interpreter and arguments)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not _healthy(base_url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the service did not start (exit code {process.poll()})")
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def embed(client: openai.OpenAI, model: str, images: list[str], batch_size: int, concurrency: int) -> np.ndarray:
    """(n, D) float32 vectors of base64 images, `batch_size` images a request, `concurrency` requests at once."""
    batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]

    def one(batch: list[str]) -> np.ndarray:
        answer = client.embeddings.create(model=model, input=batch)  # the SDK fetches base64 float32
        return np.array([item.embedding for item in answer.data], dtype=np.float32)

    with ThreadPoolExecutor(concurrency) as pool:
        return np.concatenate(list(pool.map(one, batches)))


# -- the vector database ------------------------------------------------------------------------------


def create_table(db: lancedb.DBConnection, name: str, vectors: np.ndarray, labels: np.ndarray) -> lancedb.table.Table:
    size = vectors.shape[1]
    columns = {
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), size),
        "label": pa.array(labels),
    }
    db.drop_table(name, ignore_missing=True)  # a --db-dir from an earlier run
    return db.create_table(name, data=pa.table(columns))


def neighbour_labels(table: lancedb.table.Table, queries: np.ndarray) -> np.ndarray:
    """(q, NEIGHBOURS) labels of each query's nearest entries, nearest first (exact L2 search)."""
    found = (
        table.search([list(vector) for vector in queries])
        .distance_type("l2")
        .limit(NEIGHBOURS)
        .select(["label", "_distance"])
        .to_arrow()
    )
    query_index = found["query_index"].to_numpy()
    distances = found["_distance"].to_numpy()
    found_labels = found["label"].to_numpy()
    labels = np.full((len(queries), NEIGHBOURS), -1, dtype=np.int64)
    ranks = np.zeros(len(queries), dtype=np.int64)
    # LanceDB answers query by query, nearest first; sorting by (query, distance) relies on neither.
    for row in np.lexsort((distances, query_index)):
        query = query_index[row]
        labels[query, ranks[query]] = found_labels[row]
        ranks[query] += 1
    return labels


# -- retrieval quality --------------------------------------------------------------------------------


def majority_vote(labels: np.ndarray) -> int:
    """The most frequent label among the neighbours; a tie goes to the label met first (the nearer)."""
    values, counts = np.unique(labels, return_counts=True)
    tied = set(values[counts == counts.max()].tolist())
    return int(next(label for label in labels if label in tied))


def retrieval_quality(found: np.ndarray, query_labels: np.ndarray) -> dict[str, object]:
    hits = found == query_labels[:, None]  # (q, NEIGHBOURS)
    per_query = hits.mean(axis=1)
    votes = np.array([majority_vote(row) for row in found])
    return {
        "precision_at_5": round(float(per_query.mean()), 4),
        "precision_at_5_by_label": {
            str(label): round(float(per_query[query_labels == label].mean()), 4)
            for label in sorted(set(query_labels.tolist()))
        },
        "knn5_accuracy": round(float((votes == query_labels).mean()), 4),
    }


def pca(index_pixels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the top `size` principal directions (size, pixels) of the index's pixels."""
    mean = index_pixels.mean(axis=0)
    _, _, directions = np.linalg.svd(index_pixels - mean, full_matrices=False)
    return mean, directions[:size]


# -- the run ------------------------------------------------------------------------------------------


def run(arguments: argparse.Namespace, base_url: str) -> dict[str, object]:
    index, queries = load_digits(arguments.data_dir, arguments.index_size, arguments.queries)
    index_pngs, query_pngs = index.pngs(), queries.pngs()
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=arguments.api_key or "none", max_retries=2)
    with tempfile.TemporaryDirectory() as scratch:
        db = lancedb.connect(arguments.db_dir or scratch)

        started = time.perf_counter()
        vectors = embed(client, arguments.model, index_pngs, arguments.batch_size, arguments.concurrency)
        embedded = time.perf_counter()
        table = create_table(db, "digits", vectors, index.labels)
        indexed = time.perf_counter()

        query_vectors = embed(client, arguments.model, query_pngs, arguments.batch_size, arguments.concurrency)
        model_quality = retrieval_quality(neighbour_labels(table, query_vectors), queries.labels)

        size = vectors.shape[1]
        index_pixels = index.images.reshape(len(index.images), -1).astype(np.float32) / 255.0
        query_pixels = queries.images.reshape(len(queries.images), -1).astype(np.float32) / 255.0
        mean, directions = pca(index_pixels, size)
        pca_table = create_table(db, "digits_pca", (index_pixels - mean) @ directions.T, index.labels)
        pca_quality = retrieval_quality(
            neighbour_labels(pca_table, (query_pixels - mean) @ directions.T), queries.labels
        )

    return {
        "model": arguments.model,
        "embedding_size": size,
        "indexed_images": len(index_pngs),
        "query_images": len(query_pngs),
        "batch_size": arguments.batch_size,
        "concurrency": arguments.concurrency,
        "embedding_images_per_second": round(len(index_pngs) / (embedded - started), 1),
        "indexing_images_per_second": round(len(index_pngs) / (indexed - started), 1),
        "lancedb_write_seconds": round(indexed - embedded, 3),
        "embeddings": model_quality,
        f"pca{size}": pca_quality,
    }


def report(results: dict[str, object]) -> str:
    size = results["embedding_size"]
    model, baseline = results["embeddings"], results[f"pca{size}"]
    assert isinstance(model, dict) and isinstance(baseline, dict)
    lines = [
        f"{results['model']}: {results['indexed_images']} digits indexed in LanceDB, "
        f"{results['query_images']} new digits queried, {NEIGHBOURS} nearest neighbours (L2)",
        f"indexing: {results['indexing_images_per_second']} images/s "
        f"(embedding through the service {results['embedding_images_per_second']} images/s, "
        f"{results['batch_size']} a request, {results['concurrency']} at once; "
        f"LanceDB write {results['lancedb_write_seconds']} s)",
        "",
        f"| | {results['model']} ({size}-d) | PCA ({size}-d) |",
        "|---|---|---|",
        f"| precision@5 | {model['precision_at_5']:.4f} | {baseline['precision_at_5']:.4f} |",
        f"| 5-NN accuracy | {model['knn5_accuracy']:.4f} | {baseline['knn5_accuracy']:.4f} |",
    ]
    for label, precision in model["precision_at_5_by_label"].items():
        lines.append(
            f"| precision@5, digit {label} | {precision:.4f} | {baseline['precision_at_5_by_label'][label]:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with the MNIST IDX files (.gz or not)")
    parser.add_argument("--url", help="a running service (default: start one on --checkpoints-dir)")
    parser.add_argument("--api-key", default=os.environ.get("AE_API_KEY"), help="when the service wants a key")
    parser.add_argument("--checkpoints-dir", type=Path, default=REPO_ROOT / "checkpoints")
    parser.add_argument("--model", default="mnist-ae", help="an embedding model (GET /v1/models)")
    parser.add_argument("--index-size", type=int, default=None, help="index only the first N test digits")
    parser.add_argument("--queries", type=int, default=1000, help="how many new digits to query with")
    parser.add_argument("--batch-size", type=int, default=64, help="images per request (the service allows 64)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--db-dir", type=Path, help="keep the LanceDB tables here (default: a temporary folder)")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    arguments = parser.parse_args(argv)

    if arguments.url:
        results = run(arguments, arguments.url.rstrip("/"))
    else:
        with started_service(arguments.checkpoints_dir, arguments.model) as base_url:
            results = run(arguments, base_url)
    print(report(results))
    if arguments.json_out:
        arguments.json_out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
