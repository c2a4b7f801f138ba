"""The service on Ray Serve (ae_ray), on a local Ray instance with 2 CPUs bound to 127.0.0.1.

Every answer that goes through Ray's HTTP proxy is compared with the plain service's answer to the same
request (the real `uvicorn app.main:app` process of the service tests, with the same AE_* settings): same
status, same bytes, same headers. The model deployment runs 2 replicas, and one of them is killed while
requests flow. The last test shuts Ray down and checks that nothing it started is left running.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from drawn_digits import decode_png, digit_batch, png_bytes
from PIL import Image
from service_helpers import b64, multipart, pngs
from tiny_checkpoints import DEFAULT_MODELS

from models.architectures import FFDNet, FFDNetConfig
from models.checkpoint import InputSpec, ModelCard, save_checkpoint
from models.data.corruptions import downscale, gaussian_noise

if os.environ.get("AE_TESTS_REQUIRE_RAY") != "1":  # CI sets it: there a missing Ray fails instead of skipping
    pytest.importorskip("ray.serve", reason='Ray Serve is not installed: pip install -e ".[ray]"')
import ray
from ray import serve
from ray_harness import APP, RayApp, alive, running_ray_app

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

GROUP = "models"  # the tiny checkpoints match no named group, so they all go to the default group
MODELS_PER_REPLICA = 2
# Headers that differ between any two servers, or that Ray's proxy sets itself.
UNCOMPARED_HEADERS = {"date", "server", "x-request-id"}


PHOTO_PAIR = (("photo-denoise-gray", 1), ("photo-denoise-color", 3))  # names the "photo" group takes


@pytest.fixture(scope="module")
def ray_checkpoints(checkpoints_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoints plus a tiny FFDNet pair under the photo denoisers' names, so that the photo group
    (a deployment of its own, see ae_ray.options) and its `sigma` are served too."""
    root = tmp_path_factory.mktemp("ray-checkpoints") / "checkpoints"
    shutil.copytree(checkpoints_dir, root)
    for seed, (name, channels) in enumerate(PHOTO_PAIR):
        torch.manual_seed(seed)
        card = ModelCard(
            name=name,
            tasks=["denoise"],
            architecture="ffdnet",
            architecture_config={},
            input=InputSpec(channels=channels, height=None, width=None, domain="natural"),
            description="tiny untrained FFDNet for tests",
            companion=PHOTO_PAIR[1 - seed][0],  # the pair, as the photo cards name it
        )
        save_checkpoint(FFDNet(FFDNetConfig(channels=channels, depth=3, width=8)), card, root / name)
    return root


@pytest.fixture(scope="module")
def server(ray_checkpoints: Path, serve_checkpoints: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    """The plain service (`python -m uvicorn app.main:app`) on the same folder as the Ray application."""
    with serve_checkpoints(ray_checkpoints, DEFAULT_MODELS) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def ray_app(ray_checkpoints: Path, server: str) -> Iterator[RayApp]:
    """The application on a fresh local Ray instance, configured with the plain server's AE_* settings."""
    env = {
        "AE_CHECKPOINTS_DIR": str(ray_checkpoints),
        "AE_DEVICE": "cpu",
        "AE_DEFAULT_MODELS": json.dumps(DEFAULT_MODELS),
        "AE_TORCH_THREADS": "1",
        "AE_MAX_BODY_BYTES": str(2 * 1024 * 1024),
    }
    args = {"num_replicas": 2, "cpus_per_replica": 0.5, "models_per_replica": MODELS_PER_REPLICA}
    # 3 logical CPUs: 2 replicas x 0.5 for each of the two groups, and the gateway.
    with running_ray_app(env, args, num_cpus=3) as app:
        yield app


@pytest.fixture(scope="module")
def digits() -> Any:
    return digit_batch(4, seed=11)


def both(server: str, ray_app: RayApp, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, httpx.Response]:
    plain = httpx.request(method, server + path, timeout=60, **kwargs)
    through_ray = httpx.request(method, ray_app.url + path, timeout=60, **kwargs)
    return plain, through_ray


def assert_same_answer(plain: httpx.Response, through_ray: httpx.Response) -> None:
    assert plain.status_code == through_ray.status_code, through_ray.text
    assert plain.content == through_ray.content
    plain_headers = {k: v for k, v in plain.headers.items() if k not in UNCOMPARED_HEADERS}
    ray_headers = {k: v for k, v in through_ray.headers.items() if k not in UNCOMPARED_HEADERS}
    assert plain_headers == ray_headers


def test_ready_only_after_the_default_models_ran_their_warm_up(ray_app: RayApp) -> None:
    answer = httpx.get(ray_app.url + "/readyz", timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "ready" and body["reasons"] == []
    for name in set(DEFAULT_MODELS.values()):
        assert body["models"][name] == "loaded"  # loaded in a replica of the model deployment


def image_requests(digits: Any) -> dict[str, tuple[str, str, dict[str, Any]]]:
    noisy = gaussian_noise(digits, 0.4, seed=5)
    small = downscale(digits, 2, "area")
    return {
        "denoise png": ("POST", "/v1/denoise", {"files": multipart(png_bytes(noisy[0]))}),
        "denoise grid of 4": ("POST", "/v1/denoise", {"files": multipart(*pngs(noisy))}),
        "denoise json": ("POST", "/v1/denoise?response_format=json", {"files": multipart(*pngs(noisy[:2]))}),
        "denoise raw body": (
            "POST",
            "/v1/denoise",
            {"content": png_bytes(noisy[1]), "headers": {"content-type": "image/png"}},
        ),
        "denoise base64": ("POST", "/v1/denoise", {"json": {"images": [b64(png_bytes(noisy[2]))]}}),
        "super-resolve png": ("POST", "/v1/super-resolve", {"files": multipart(png_bytes(small[0]))}),
        "super-resolve json": ("POST", "/v1/super-resolve?response_format=json", {"files": multipart(*pngs(small))}),
        "reconstruct json": ("POST", "/v1/reconstruct?response_format=json", {"files": multipart(*pngs(digits))}),
        "reconstruct png": ("POST", "/v1/reconstruct", {"files": multipart(png_bytes(digits[0]))}),
        "embeddings": ("POST", "/v1/embeddings", {"files": multipart(*pngs(digits))}),
        "embeddings of another model": (
            "POST",
            "/v1/embeddings?model=tiny-denoise",
            {"files": multipart(*pngs(digits))},
        ),
        "vae encode": ("POST", "/v1/vae/encode", {"files": multipart(*pngs(digits))}),
        "vae interpolate images": ("POST", "/v1/vae/interpolate?steps=4", {"files": multipart(*pngs(digits[:2]))}),
    }


def latent_requests() -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {
        "vae sample json": ("POST", "/v1/vae/sample", {"json": {"n": 6, "seed": 3, "response_format": "json"}}),
        "vae sample grid": ("POST", "/v1/vae/sample", {"json": {"n": 9, "seed": 4}}),
        "vae sample, 3-d model": ("POST", "/v1/vae/sample", {"json": {"n": 2, "seed": 5, "model": "tiny-vae-3d"}}),
        "vae decode": ("POST", "/v1/vae/decode", {"json": {"latents": [[0.5, -1.0], [2.0, 0.25]]}}),
        "vae interpolate": (
            "POST",
            "/v1/vae/interpolate",
            {"json": {"latents": [[-2.0, 0.0], [2.0, 1.0]], "steps": 5, "response_format": "json"}},
        ),
        "vae manifold": ("GET", "/v1/vae/manifold?size=4&range=2", {}),
    }


@pytest.mark.parametrize("case", [*image_requests(digit_batch(4, seed=11)), *latent_requests()])
def test_every_model_route_answers_the_same_bytes_as_the_plain_service(
    server: str, ray_app: RayApp, digits: Any, case: str
) -> None:
    method, path, kwargs = {**image_requests(digits), **latent_requests()}[case]
    plain, through_ray = both(server, ray_app, method, path, **kwargs)
    assert plain.status_code == 200, plain.text
    assert_same_answer(plain, through_ray)


def photo_png(channels: int) -> bytes:
    """A small noisy picture (24x20) in L or RGB."""
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("sigma", ["20", None])
@pytest.mark.parametrize("channels", [1, 3])
def test_the_photo_group_with_sigma_answers_the_same_bytes_as_the_plain_service(
    server: str, ray_app: RayApp, channels: int, sigma: str | None
) -> None:
    """Through the gateway to the photo group's deployment: the noise level given (or estimated), the colour
    mode's model of the pair, X-Noise-Sigma, the PNG: all as the plain service answers."""
    query = "model=photo-denoise-color" + (f"&sigma={sigma}" if sigma else "")
    plain, through_ray = both(server, ray_app, "POST", f"/v1/denoise?{query}", files=multipart(photo_png(channels)))
    assert plain.status_code == 200, plain.text
    assert plain.headers["x-model"] == PHOTO_PAIR[0 if channels == 1 else 1][0]
    assert plain.headers["x-noise-sigma"] == (f"{float(sigma):.2f}" if sigma else plain.headers["x-noise-sigma"])
    assert_same_answer(plain, through_ray)


ERROR_CASES: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "not an image": ("POST", "/v1/denoise", {"files": multipart(b"garbage")}, 400),
    "not json": ("POST", "/v1/vae/sample", {"content": b"{", "headers": {"content-type": "application/json"}}, 400),
    "wrong size without preprocessing": (
        "POST",
        "/v1/super-resolve?preprocess=none",
        {"files": multipart(png_bytes(np.zeros((28, 28), dtype=np.float32)))},
        400,
    ),
    "model without the task": ("POST", "/v1/vae/sample", {"json": {"n": 1, "model": "tiny-ae"}}, 400),
    "unknown model": ("POST", "/v1/denoise?model=nope", {"files": multipart(b"x")}, 404),
    "unknown path": ("GET", "/v9/nothing", {}, 404),  # /v2 is the Open Inference Protocol's (its own error shape)
    "wrong method": ("GET", "/v1/denoise", {}, 405),
    "body over the limit": ("POST", "/v1/denoise", {"content": b"\0" * (2 * 1024 * 1024 + 1)}, 413),
    "too many samples": ("POST", "/v1/vae/sample", {"json": {"n": 100000}}, 422),
    "unsupported content type": (
        "POST",
        "/v1/denoise",
        {"content": b"abc", "headers": {"content-type": "text/csv"}},
        415,
    ),
    "latent size mismatch": ("POST", "/v1/vae/decode", {"json": {"latents": [[1.0, 2.0, 3.0]]}}, 422),
    "broken checkpoint": ("POST", "/v1/reconstruct?model=broken", {"files": multipart(b"x")}, 503),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_keep_their_status_headers_and_json_body(server: str, ray_app: RayApp, case: str) -> None:
    method, path, kwargs, status = ERROR_CASES[case]
    plain, through_ray = both(server, ray_app, method, path, **kwargs)
    assert plain.status_code == status, plain.text
    assert set(through_ray.json()) == {"error"}
    assert_same_answer(plain, through_ray)


def test_a_replica_keeps_at_most_its_share_of_checkpoints_loaded(ray_app: RayApp) -> None:
    """Multiplexing: each request loads its checkpoint where it runs; the LRU unloads the least recently used."""
    handle = serve.get_deployment_handle(GROUP, app_name=APP)
    names = ["tiny-denoise", "tiny-ae", "tiny-vae-2d", "tiny-vae-3d", "tiny-sr-x2", "tiny-denoise", "tiny-vae-3d"]
    for name in names:
        held = handle.options(multiplexed_model_id=name).loaded_models.remote().result(timeout_s=60)
        assert name in held
        assert len(held) <= MODELS_PER_REPLICA, held  # 5 checkpoints on 2 replicas of 2: some were unloaded


def test_a_killed_replica_loses_no_request(server: str, ray_app: RayApp, digits: Any) -> None:
    """While one of the 2 replicas is killed, every request gets its image or a 503 saying to retry."""
    image = png_bytes(gaussian_noise(digits[:1], 0.4, seed=9)[0])
    expected = decode_png(httpx.post(server + "/v1/denoise", files=multipart(image), timeout=30).content)
    replicas = [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith(f"SERVE_REPLICA::{APP}#{GROUP}#")
    ]
    assert len(replicas) == 2
    total = 120

    def send(index: int) -> tuple[int, httpx.Response]:
        return index, httpx.post(ray_app.url + "/v1/denoise", files=multipart(image), timeout=90)

    answers: list[tuple[int, httpx.Response]] = []
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(send, index) for index in range(total)]
        while sum(future.done() for future in futures) < total // 4:
            time.sleep(0.01)
        ray.kill(ray.get_actor(replicas[0], namespace="serve"), no_restart=True)
        killed_after = sum(future.done() for future in futures)
        answers = [future.result() for future in futures]  # a transport error would raise here

    assert len(answers) == total
    statuses = [answer.status_code for _, answer in answers]
    for _, answer in answers:
        if answer.status_code == 200:
            # Batches of other sizes may round one pixel the other way.
            assert np.abs(decode_png(answer.content) - expected).max() <= 1 / 255 + 1e-6
        else:  # refused with the service's own 503 and a Retry-After, never a bare failure
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["type"] in {"replica_lost", "overloaded", "not_ready"}
            assert "retry-after" in answer.headers
    assert killed_after < total and statuses[-1] == 200  # it kept serving after the kill
    assert statuses.count(200) >= total // 2, statuses


def test_shutdown_stops_everything_ray_started(ray_app: RayApp) -> None:
    assert ray_app.started_pids, "Ray started no processes?"
    ray_app.shutdown()
    assert not ray.is_initialized()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in ray_app.started_pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in ray_app.started_pids if alive(pid)]
    with pytest.raises(httpx.TransportError):
        httpx.get(ray_app.url + "/readyz", timeout=5)
