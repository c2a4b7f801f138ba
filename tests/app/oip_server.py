"""For the Open Inference Protocol's tests (test_oip*.py): a real `ae-serve` (python -m app.process.cli) with
HTTP and gRPC on free ports, and requests through Triton's clients and the /v1 routes for the same pixels."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import REPO_ROOT, free_port
from drawn_digits import digit_batch
from PIL import Image

SHIPPED = REPO_ROOT / "checkpoints"
API_KEY = "oip-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@dataclass
class Server:
    http_url: str  # host:port, as tritonclient takes it
    grpc_url: str
    process: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://{self.http_url}"


@contextmanager
def running_ae_serve(root: Path, models: list[str], env: dict[str, str]) -> Iterator[Server]:
    """ae-serve with --grpc-port on a copy of the shipped checkpoints `models` (in `root`), AE_* from `env`."""
    for name in models:
        shutil.copytree(SHIPPED / name, root / name)
    http_port, grpc_port = free_port(), free_port()
    settings = {**os.environ, "AE_CHECKPOINTS_DIR": str(root), "AE_DEVICE": "cpu", "AE_TORCH_THREADS": "1", **env}
    command = [sys.executable, "-m", "app.process.cli", "--host", "127.0.0.1", "--port", str(http_port)]
    command += ["--grpc-port", str(grpc_port)]
    log_path = root.parent / "ae-serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=settings, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 180
            while True:
                assert process.poll() is None, f"ae-serve exited: {log_path.read_text()[-2000:]}"
                try:
                    if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "ae-serve did not become ready within 180 s"
                time.sleep(0.3)
            yield Server(f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


KEY_HEADERS = {"authorization": f"Bearer {API_KEY}"}  # tritonclient sends headers as gRPC metadata too


def key_headers() -> dict[str, str]:
    """A fresh dict each call: tritonclient.http adds Inference-Header-Content-Length to the dict it is given."""
    return dict(KEY_HEADERS)


def digits(count: int, seed: int) -> np.ndarray:
    """(n, 28, 28, 1) uint8 drawn digits."""
    batch = digit_batch(count, seed=seed)  # (n, 1, 28, 28) in [0, 1]
    return (batch * 255).round().to(dtype=torch.uint8).permute(0, 2, 3, 1).numpy()


def photo(height: int, width: int) -> np.ndarray:
    """(1, H, W, 3) uint8: a crop of the playground's example photograph."""
    with Image.open(REPO_ROOT / "app/static/examples/photo.jpg") as image:
        pixels = np.asarray(image.convert("RGB"))
    return pixels[None, 40 : 40 + height, 60 : 60 + width].copy()


def png_of(pixels: np.ndarray) -> bytes:
    """One (H, W, C) uint8 image as PNG (what the /v1 routes are sent)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buffer, "PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> (H, W, C) uint8."""
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def infer(client: object, model: str, inputs: dict[str, np.ndarray], binary: bool = True) -> object:
    """One inference with Triton's client, `client` http or grpc; the inputs' datatypes from their dtypes."""
    module = grpcclient if isinstance(client, grpcclient.InferenceServerClient) else httpclient
    datatypes = {np.uint8: "UINT8", np.float32: "FP32", np.int32: "INT32", np.int64: "INT64"}
    tensors = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), datatypes[array.dtype.type])
        if module is httpclient:
            tensor.set_data_from_numpy(array, binary_data=binary)
        else:
            tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    outputs = None
    if module is httpclient and not binary:
        meta = client.get_model_metadata(model, headers=dict(AUTH))  # type: ignore[attr-defined]
        outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=False) for o in meta["outputs"]]
    return client.infer(model, tensors, outputs=outputs, headers=key_headers())  # type: ignore[attr-defined]


def v1_images(server: Server, route: str, images: np.ndarray, **options: object) -> tuple[list[np.ndarray], dict]:
    """The /v1 route's JSON answer for the same pixels sent as PNGs: its images (H, W, C) and the body."""
    body = {"images": [base64.b64encode(png_of(image)).decode() for image in images], "response_format": "json"}
    response = httpx.post(f"{server.base}{route}", json={**body, **options}, headers=AUTH, timeout=120)
    assert response.status_code == 200, response.text
    return [decode_png(base64.b64decode(item["b64_png"])) for item in response.json()["data"]], response.json()
