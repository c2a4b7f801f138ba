"""The Open Inference Protocol (KServe v2) with Triton's own clients, unchanged: `tritonclient.http` (JSON and
binary tensors) and `tritonclient.grpc`, against one real `ae-serve` process (HTTP and gRPC on free ports, in
the same process) serving shipped checkpoints, with an API key on.

Every answer is compared with the service's own REST answer for the same pixels: embeddings within float32
precision, images pixel for pixel with the PNGs of /v1, VAE samples for the same seed. Errors follow the
protocol (404 / NOT_FOUND, 400 / INVALID_ARGUMENT naming the tensor, 401 / UNAUTHENTICATED) and a refusal of
admission control is 503 with Retry-After over REST and UNAVAILABLE over gRPC.
The `kserve` SDK is not installed beside the project's pins (it needs protobuf < 7): see docs/api.md.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import REPO_ROOT
from oip_server import (
    API_KEY,
    AUTH,
    SHIPPED,
    Server,
    decode_png,
    digits,
    infer,
    key_headers,
    photo,
    png_of,
    running_ae_serve,
    v1_images,
)
from PIL import Image
from tritonclient.utils import InferenceServerException

MODELS = ["mnist-ae", "mnist-denoise", "mnist-sr-x2", "mnist-vae", "mnist-vae-2d", "photo-denoise-gray"]
MODELS += ["photo-denoise-color", "t91-sr-x2", "mnist-cvae"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """ae-serve with --grpc-port on a copy of some shipped checkpoints, keys on."""
    env = {
        "AE_API_KEYS": API_KEY,
        "AE_BATCH_MAX_QUEUE_IMAGES": "64",  # two requests of 64 images do not fit: admission refuses the second
        "AE_PLAYGROUND": "false",
        "AE_SHUTDOWN_DRAIN_S": "3",  # the last test stops the server: a short drain
    }
    with running_ae_serve(tmp_path_factory.mktemp("oip") / "checkpoints", MODELS, env) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.http_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(server: Server) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


# -- server and model metadata ---------------------------------------------------------------------


def test_health_and_server_metadata_with_both_clients(http: httpclient.InferenceServerClient, grpc: object) -> None:
    assert http.is_server_live() and http.is_server_ready()  # probes need no key
    assert grpc.is_server_live() and grpc.is_server_ready()  # type: ignore[attr-defined]
    assert http.get_server_metadata(headers=dict(AUTH))["extensions"] == ["binary_tensor_data"]
    assert grpc.get_server_metadata(headers=key_headers(), as_json=True)["name"] == "ae-service"  # type: ignore[attr-defined]
    assert http.is_model_ready("mnist-ae.embed", headers=dict(AUTH))
    assert grpc.is_model_ready("photo-denoise-color.denoise", headers=key_headers())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("model", "inputs", "outputs"),
    [
        ("mnist-ae.embed", [("IMAGE", "UINT8", [-1, 28, 28, 1])], [("EMBEDDING", "FP32", [-1, 32])]),
        ("mnist-ae.reconstruct", [("IMAGE", "UINT8", [-1, 28, 28, 1])],
         [("IMAGE", "UINT8", [-1, 28, 28, 1]), ("RECONSTRUCTION_ERROR", "FP32", [-1])]),
        ("mnist-sr-x2.super-resolve", [("IMAGE", "UINT8", [-1, 14, 14, 1])], [("IMAGE", "UINT8", [-1, 28, 28, 1])]),
        ("t91-sr-x2.super-resolve", [("IMAGE", "UINT8", [-1, -1, -1, -1])], [("IMAGE", "UINT8", [-1, -1, -1, -1])]),
        ("photo-denoise-color.denoise", [("IMAGE", "UINT8", [-1, -1, -1, -1]), ("SIGMA", "FP32", [-1])],
         [("IMAGE", "UINT8", [-1, -1, -1, -1]), ("NOISE_SIGMA", "FP32", [-1])]),
        ("mnist-vae.sample", [("N", "INT32", [1]), ("SEED", "INT64", [1]), ("TEMPERATURE", "FP32", [1])],
         [("IMAGE", "UINT8", [-1, 28, 28, 1]), ("SEED", "INT64", [1])]),
        ("mnist-vae.decode", [("LATENT", "FP32", [-1, 16])], [("IMAGE", "UINT8", [-1, 28, 28, 1])]),
    ],
)  # fmt: skip
def test_model_metadata_states_names_datatypes_and_shapes(
    http: httpclient.InferenceServerClient, grpc: object, model: str, inputs: list, outputs: list
) -> None:
    def described(tensors: list[dict]) -> list[tuple[str, str, list[int]]]:
        return [(t["name"], t["datatype"], [int(s) for s in t["shape"]]) for t in tensors]

    over_rest = http.get_model_metadata(model, headers=dict(AUTH))
    over_grpc = grpc.get_model_metadata(model, headers=key_headers(), as_json=True)  # type: ignore[attr-defined]
    for meta in (over_rest, over_grpc):
        assert meta["name"] == model and meta["versions"] == ["1"]
        assert described(meta["inputs"]) == [tuple(t) for t in inputs]
        assert described(meta["outputs"]) == [tuple(t) for t in outputs]


def test_the_vae_latent_size_in_the_metadata_is_the_cards(http: httpclient.InferenceServerClient) -> None:
    card = json.loads((SHIPPED / "mnist-vae" / "config.json").read_text())
    assert http.get_model_metadata("mnist-vae.decode", headers=dict(AUTH))["inputs"][0]["shape"] == [
        -1,
        card["latent_size"],
    ]


# -- the same numbers as REST -----------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http-binary", "http-json", "grpc"])
def test_embeddings_equal_the_v1_embeddings(server: Server, http: object, grpc: object, transport: str) -> None:
    images = digits(5, seed=23)
    client = grpc if transport == "grpc" else http
    result = infer(client, "mnist-ae.embed", {"IMAGE": images}, binary=transport != "http-json")
    vectors = result.as_numpy("EMBEDDING")  # type: ignore[attr-defined]
    body = {"model": "mnist-ae", "images": [base64.b64encode(png_of(image)).decode() for image in images]}
    response = httpx.post(f"{server.base}/v1/embeddings", json=body, headers=AUTH, timeout=60)
    expected = np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)
    assert vectors.dtype == np.float32 and vectors.shape == (5, 32)
    np.testing.assert_allclose(vectors, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_denoised_mnist_digits_equal_the_png_answers(
    server: Server, http: object, grpc: object, transport: str
) -> None:
    images = digits(3, seed=5)
    result = infer(grpc if transport == "grpc" else http, "mnist-denoise.denoise", {"IMAGE": images})
    expected, _ = v1_images(server, "/v1/denoise", images, model="mnist-denoise")
    np.testing.assert_array_equal(result.as_numpy("IMAGE"), np.stack(expected))  # type: ignore[attr-defined]


def test_photo_denoising_at_a_given_sigma_and_an_estimated_one(server: Server, grpc: object) -> None:
    picture = photo(36, 44)
    given = infer(grpc, "photo-denoise-color.denoise", {"IMAGE": picture, "SIGMA": np.array([25.0], np.float32)})
    expected, _ = v1_images(server, "/v1/denoise", picture, model="photo-denoise-color", sigma=25)
    np.testing.assert_array_equal(given.as_numpy("IMAGE"), np.stack(expected))  # type: ignore[attr-defined]
    assert given.as_numpy("NOISE_SIGMA").tolist() == [25.0]  # type: ignore[attr-defined]

    estimated = infer(grpc, "photo-denoise-color.denoise", {"IMAGE": picture})
    expected, body = v1_images(server, "/v1/denoise", picture, model="photo-denoise-color")
    np.testing.assert_array_equal(estimated.as_numpy("IMAGE"), np.stack(expected))  # type: ignore[attr-defined]
    level = float(estimated.as_numpy("NOISE_SIGMA")[0])  # type: ignore[attr-defined]
    assert level == pytest.approx(body["data"][0]["noise_sigma"], abs=0.005)  # REST rounds it to 2 decimals


def test_a_grayscale_picture_goes_to_the_grayscale_denoiser_and_stays_grayscale(server: Server, grpc: object) -> None:
    gray = photo(32, 32).mean(axis=3, keepdims=True).round().astype(np.uint8)
    result = infer(grpc, "photo-denoise-color.denoise", {"IMAGE": gray, "SIGMA": np.array([15.0], np.float32)})
    expected, _ = v1_images(server, "/v1/denoise", gray, model="photo-denoise-color", sigma=15)
    assert result.as_numpy("IMAGE").shape == (1, 32, 32, 1)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(result.as_numpy("IMAGE"), np.stack(expected))  # type: ignore[attr-defined]
    assert result.get_response().model_name == "photo-denoise-color.denoise"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("model", "images"), [("t91-sr-x2", photo(20, 24)), ("mnist-sr-x2", None)])
def test_super_resolved_pixels_equal_the_png_answers(
    server: Server, http: object, model: str, images: np.ndarray | None
) -> None:
    if images is None:  # MNIST super-resolution reads 14 x 14 digits
        images = np.asarray(Image.fromarray(digits(1, seed=9)[0, :, :, 0]).resize((14, 14)))[None, :, :, None]
    result = infer(http, f"{model}.super-resolve", {"IMAGE": images})
    expected, _ = v1_images(server, "/v1/super-resolve", images, model=model)
    upscaled = result.as_numpy("IMAGE")  # type: ignore[attr-defined]
    assert upscaled.shape == (1, images.shape[1] * 2, images.shape[2] * 2, images.shape[3])
    np.testing.assert_array_equal(upscaled, np.stack(expected))


def test_reconstructions_and_their_errors_equal_the_v1_answers(server: Server, grpc: object) -> None:
    images = digits(4, seed=31)
    result = infer(grpc, "mnist-ae.reconstruct", {"IMAGE": images})
    expected, body = v1_images(server, "/v1/reconstruct", images, model="mnist-ae")
    np.testing.assert_array_equal(result.as_numpy("IMAGE"), np.stack(expected))  # type: ignore[attr-defined]
    errors = [item["reconstruction_error"] for item in body["data"]]
    np.testing.assert_allclose(result.as_numpy("RECONSTRUCTION_ERROR"), errors, rtol=1e-6)  # type: ignore[attr-defined]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_vae_samples_equal_for_the_same_seed(server: Server, http: object, grpc: object, transport: str) -> None:
    inputs: dict[str, np.ndarray] = {"N": np.array([3], np.int32), "SEED": np.array([2024], np.int64)}
    result = infer(grpc if transport == "grpc" else http, "mnist-vae.sample", inputs)
    response = httpx.post(
        f"{server.base}/v1/vae/sample",
        json={"model": "mnist-vae", "n": 3, "seed": 2024, "response_format": "json"},
        headers=AUTH,
        timeout=60,
    )
    expected = [decode_png(base64.b64decode(item["b64_png"])) for item in response.json()["data"]]
    np.testing.assert_array_equal(result.as_numpy("IMAGE"), np.stack(expected))  # type: ignore[attr-defined]
    assert result.as_numpy("SEED").tolist() == [2024]  # type: ignore[attr-defined]


def test_decoded_latents_equal_the_v1_decode(server: Server, grpc: object) -> None:
    latents = np.random.default_rng(3).normal(size=(2, 16)).astype(np.float32)
    result = infer(grpc, "mnist-vae.decode", {"LATENT": latents})
    response = httpx.post(
        f"{server.base}/v1/vae/decode",
        json={"model": "mnist-vae", "latents": latents.tolist(), "response_format": "json"},
        headers=AUTH,
        timeout=60,
    )
    expected = [decode_png(base64.b64decode(item["b64_png"])) for item in response.json()["data"]]
    np.testing.assert_array_equal(result.as_numpy("IMAGE"), np.stack(expected))  # type: ignore[attr-defined]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_labelled_samples_and_decodes_equal_the_v1_answers(
    server: Server, http: object, grpc: object, transport: str
) -> None:
    client = grpc if transport == "grpc" else http
    inputs = {"N": np.array([3], np.int32), "SEED": np.array([7], np.int64), "LABEL": np.array([4, 0, 9], np.int32)}
    result = infer(client, "mnist-cvae.sample", inputs)
    response = httpx.post(
        f"{server.base}/v1/vae/sample",
        json={"model": "mnist-cvae", "n": 3, "seed": 7, "label": [4, 0, 9], "response_format": "json"},
        headers=AUTH,
        timeout=60,
    )
    expected = [decode_png(base64.b64decode(item["b64_png"])) for item in response.json()["data"]]
    np.testing.assert_array_equal(result.as_numpy("IMAGE"), np.stack(expected))  # type: ignore[attr-defined]
    assert result.as_numpy("LABEL").tolist() == [4, 0, 9]  # type: ignore[attr-defined]
    latents = np.zeros((2, 8), np.float32)
    decoded = infer(client, "mnist-cvae.decode", {"LATENT": latents, "LABEL": np.array([3], np.int32)})
    assert decoded.as_numpy("LABEL").tolist() == [3, 3]  # type: ignore[attr-defined]
    with pytest.raises(InferenceServerException):
        infer(client, "mnist-cvae.sample", {"N": np.array([1], np.int32), "LABEL": np.array([10], np.int32)})


# -- errors ------------------------------------------------------------------------------------------


def refusal(call: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()  # type: ignore[operator]
    return caught.value


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_an_unknown_model_is_not_found(http: object, grpc: object, transport: str) -> None:
    client = grpc if transport == "grpc" else http
    for call in (
        lambda: infer(client, "mnist-ae.sample", {"IMAGE": digits(1, seed=1)}),
        lambda: client.get_model_metadata("no-such-model.embed", headers=key_headers()),  # type: ignore[attr-defined]
    ):
        error = refusal(call)
        assert error.status() == ("StatusCode.NOT_FOUND" if transport == "grpc" else "404")
        assert "mnist-ae.embed" in error.message()  # says how models are named


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        ({"IMAGE": digits(2, seed=1).astype(np.float32)}, "IMAGE"),  # wrong datatype
        ({"IMAGE": digits(2, seed=1)[:, :27]}, "IMAGE"),  # wrong shape
        ({"IMAGE": digits(1, seed=1), "SIGMA": np.array([10.0], np.float32)}, "SIGMA"),  # no such input here
    ],
)
def test_a_wrong_tensor_is_invalid_and_named(
    http: object, grpc: object, transport: str, inputs: dict, named: str
) -> None:
    error = refusal(lambda: infer(grpc if transport == "grpc" else http, "mnist-ae.embed", inputs))
    assert error.status() == ("StatusCode.INVALID_ARGUMENT" if transport == "grpc" else "400")
    assert f"'{named}'" in error.message()


def test_out_of_range_sigma_and_sample_size_are_refused_naming_the_tensor(grpc: object) -> None:
    picture = photo(16, 16)
    error = refusal(
        lambda: infer(grpc, "photo-denoise-color.denoise", {"IMAGE": picture, "SIGMA": np.array([99.0], np.float32)})
    )
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "SIGMA" in error.message()
    error = refusal(lambda: infer(grpc, "mnist-vae.sample", {"N": np.array([0], np.int32)}))
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "N" in error.message()


def test_the_rest_error_body_is_the_protocols(server: Server) -> None:
    response = httpx.post(f"{server.base}/v2/models/nothing.embed/infer", json={"inputs": []}, headers=dict(AUTH))
    assert response.status_code == 404
    assert isinstance(response.json()["error"], str) and response.json()["type"] == "model_not_found"


# -- keys, admission, metrics -------------------------------------------------------------------------


def test_a_key_is_needed_over_both_transports(server: Server) -> None:
    images = {"IMAGE": digits(1, seed=2)}
    for module, url in ((httpclient, server.http_url), (grpcclient, server.grpc_url)):
        client = module.InferenceServerClient(url)
        tensor = module.InferInput("IMAGE", [1, 28, 28, 1], "UINT8")
        tensor.set_data_from_numpy(images["IMAGE"])
        assert client.is_server_ready()  # the probes need none
        missing = refusal(lambda c=client, t=tensor: c.infer("mnist-ae.embed", [t]))
        wrong = refusal(
            lambda c=client, t=tensor: c.infer("mnist-ae.embed", [t], headers={"authorization": "Bearer x"})
        )
        for error in (missing, wrong):
            assert error.status() == ("401" if module is httpclient else "StatusCode.UNAUTHENTICATED")
        client.close()


def test_a_refusal_under_admission_is_unavailable_over_grpc_and_503_over_rest(server: Server) -> None:
    """64-image requests to one model, 12 at once: with at most 64 images in flight per model, admission refuses
    those that arrive while one is being served (after a few requests have taught it their size)."""
    images = np.repeat(digits(8, seed=4), 8, axis=0)  # 64 images

    def send(module: object, url: str) -> str:
        client = module.InferenceServerClient(url)  # type: ignore[attr-defined]
        try:
            infer(client, "mnist-vae.encode", {"IMAGE": images})
            return "ok"
        except InferenceServerException as error:
            return str(error.status())
        finally:
            client.close()

    for _ in range(8):  # the moving average of images per request learns 64
        assert send(grpcclient, server.grpc_url) == "ok"
    outcomes: set[str] = set()
    for _ in range(5):  # rounds until requests overlap (the first round did on every machine tried)
        with ThreadPoolExecutor(12) as pool:
            outcomes |= set(pool.map(lambda _: send(grpcclient, server.grpc_url), range(12)))
        if "StatusCode.UNAVAILABLE" in outcomes:
            break
    assert outcomes == {"ok", "StatusCode.UNAVAILABLE"}

    shape = list(images.shape)
    body = {"inputs": [{"name": "IMAGE", "datatype": "UINT8", "shape": shape, "data": images.ravel().tolist()}]}
    statuses: set[int] = set()
    with httpx.Client(headers=AUTH, timeout=60) as client:
        for _ in range(5):
            with ThreadPoolExecutor(12) as pool:
                answers = list(
                    pool.map(
                        lambda _: client.post(f"{server.base}/v2/models/mnist-vae.encode/infer", json=body), range(12)
                    )
                )
            statuses |= {answer.status_code for answer in answers}
            refused = [answer for answer in answers if answer.status_code == 503]
            if refused:
                assert all(int(answer.headers["retry-after"]) >= 1 for answer in refused)
                assert refused[0].json()["type"] == "overloaded"
                break
    assert statuses == {200, 503}


def test_grpc_calls_are_counted_in_the_metrics(server: Server, grpc: object) -> None:
    infer(grpc, "mnist-ae.embed", {"IMAGE": digits(2, seed=8)})
    text = httpx.get(f"{server.base}/metrics").text
    line = 'ae_requests_total{method="GRPC",route="/inference.GRPCInferenceService/ModelInfer",status="OK"}'
    assert line in text
    assert 'ae_images_total{route="/inference.GRPCInferenceService/ModelInfer"}' in text


# -- the documentation's examples ----------------------------------------------------------------------


def oip_examples() -> list[str]:
    """The Python examples of docs/api.md's Open Inference Protocol section."""
    text = (REPO_ROOT / "docs" / "api.md").read_text()
    section = text.split("## The Open Inference Protocol", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


def test_the_documented_tritonclient_examples_run_as_written(server: Server) -> None:
    examples = oip_examples()
    assert len(examples) == 2
    env = {**os.environ, "AE_URL": server.http_url, "AE_GRPC_URL": server.grpc_url, "AE_API_KEY": API_KEY}
    outputs = []
    for example in examples:
        done = subprocess.run([sys.executable, "-c", example], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout)
    assert "(8, 32)" in outputs[0]
    assert "(1, 48, 64, 3) [25.]" in outputs[1] and "(4, 28, 28, 1)" in outputs[1]


# -- last: the drain ---------------------------------------------------------------------------------------


def test_sigterm_drains_grpc_with_http_then_the_process_exits_0(server: Server) -> None:
    """Runs last (it stops the module's server): on SIGTERM both transports say not ready at once and still
    serve through the drain; then both stop and the process exits 0."""
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    assert grpc.is_server_ready()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert not grpc.is_server_ready()
    assert httpx.get(f"{server.base}/v2/health/ready").status_code == 503
    answer = infer(grpc, "mnist-ae.embed", {"IMAGE": digits(2, seed=6)})  # still served while draining
    assert answer.as_numpy("EMBEDDING").shape == (2, 32)  # type: ignore[attr-defined]
    assert server.process.wait(timeout=30) == 0
    with pytest.raises(InferenceServerException):
        grpc.is_server_live(client_timeout=2)
    grpc.close()
