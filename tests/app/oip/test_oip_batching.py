"""A gRPC request and an HTTP request of the same model share one forward pass: the two transports go through
one batcher (app.engine.models.registry), seen in the batcher's own metric (`ae_batch_size`). The server waits 300 ms
for company before each pass (AE_BATCH_MAX_DELAY_MS, not adaptive), so two requests sent together meet."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from oip_server import Server, running_ae_serve
from PIL import Image

BATCHER = 'batcher="mnist-ae/embed"'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"AE_BATCH_MAX_DELAY_MS": "300", "AE_BATCH_ADAPTIVE_DELAY": "false", "AE_PLAYGROUND": "false"}
    models = ["mnist-ae", "mnist-denoise", "mnist-sr-x2", "mnist-vae", "mnist-vae-2d"]  # the default models
    with running_ae_serve(tmp_path_factory.mktemp("oip-batching") / "checkpoints", models, env) as running:
        yield running


def batch_sizes(server: Server) -> tuple[float, float]:
    """(forward passes, images) of mnist-ae's embedding batcher so far."""
    lines = httpx.get(f"{server.base}/metrics").text.splitlines()
    passes = next(float(line.split()[-1]) for line in lines if line.startswith(f"ae_batch_size_count{{{BATCHER}}}"))
    images = next(float(line.split()[-1]) for line in lines if line.startswith(f"ae_batch_size_sum{{{BATCHER}}}"))
    return passes, images


def test_a_grpc_and_an_http_request_share_one_forward_pass(server: Server) -> None:
    digit = np.zeros((1, 28, 28, 1), dtype=np.uint8)
    digit[0, 5:22, 12:16] = 255
    png = io.BytesIO()
    Image.fromarray(digit[0, :, :, 0]).save(png, "PNG")
    answers: dict[str, np.ndarray] = {}

    def over_grpc() -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("IMAGE", [1, 28, 28, 1], "UINT8")
        tensor.set_data_from_numpy(digit)
        answers["grpc"] = client.infer("mnist-ae.embed", [tensor]).as_numpy("EMBEDDING")[0]
        client.close()

    def over_http() -> None:
        files = {"image": ("digit.png", png.getvalue(), "image/png")}
        response = httpx.post(f"{server.base}/v1/embeddings?model=mnist-ae", files=files, timeout=30)
        answers["http"] = np.array(response.json()["data"][0]["embedding"], dtype=np.float32)

    passes, images = batch_sizes(server)  # the warm-up's passes so far
    threads = [threading.Thread(target=over_grpc), threading.Thread(target=over_http)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after_passes, after_images = batch_sizes(server)
    assert (after_passes - passes, after_images - images) == (1, 2)  # one pass, both images
    np.testing.assert_allclose(answers["grpc"], answers["http"], rtol=1e-6, atol=1e-6)
