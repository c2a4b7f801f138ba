"""Every error the API promises, in its JSON shape and with its status; nothing a client sends is a 500."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from drawn_digits import digit_batch, digit_photo, png_bytes
from fastapi.testclient import TestClient
from service_helpers import assert_error, b64, multipart

from app.engine.models.registry import ModelRegistry
from app.errors import Overloaded, RequestTimeout
from app.http.dependencies import get_registry

DIGIT = png_bytes(digit_batch(1, seed=4)[0])
MULTIPART_X = "multipart/form-data; boundary=x"
IMAGE_ROUTES = ["/v1/denoise", "/v1/reconstruct", "/v1/embeddings", "/v1/vae/encode", "/v1/super-resolve"]


# -- 400 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", IMAGE_ROUTES)
def test_bytes_that_are_not_an_image_are_a_400(client: TestClient, route: str) -> None:
    response = client.post(route, content=b"not a png at all", headers={"content-type": "image/png"})
    assert assert_error(response, 400, "invalid_image")["param"] == "image"


def test_the_bad_image_among_several_is_named(client: TestClient) -> None:
    response = client.post("/v1/denoise", files=multipart(DIGIT, b"\x89PNG broken"))
    assert assert_error(response, 400, "invalid_image")["param"] == "image[1]"


def test_invalid_base64_is_a_400(client: TestClient) -> None:
    response = client.post("/v1/denoise", json={"images": ["@@not base64@@"]})
    assert assert_error(response, 400, "invalid_image")["param"] == "images[0]"


@pytest.mark.parametrize("route", ["/v1/denoise", "/v1/vae/sample"])
def test_a_body_that_is_not_json_is_a_400(client: TestClient, route: str) -> None:
    response = client.post(route, content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_request")


def test_a_request_without_images_is_a_400(client: TestClient) -> None:
    assert_error(client.post("/v1/denoise", json={"images": []}), 400, "invalid_request")
    assert_error(client.post("/v1/denoise", data={"model": "tiny-denoise"}, files={"other": ("x", b"1")}), 400)
    assert_error(client.post("/v1/denoise", content=b"", headers={"content-type": "image/png"}), 400, "invalid_image")


def test_a_model_without_the_task_is_a_400(client: TestClient) -> None:
    error = assert_error(client.post("/v1/denoise?model=tiny-sr-x2", files=multipart(DIGIT)), 400, "task_not_supported")
    assert error["param"] == "model"
    assert_error(client.get("/v1/vae/manifold?model=tiny-ae"), 400, "task_not_supported")


def test_wrong_sizes_are_a_400(client: TestClient) -> None:
    photo = digit_photo(1)
    assert_error(client.post("/v1/denoise?preprocess=none", content=photo, headers={"content-type": "image/jpeg"}), 400)
    assert_error(client.post("/v1/super-resolve", content=photo, headers={"content-type": "image/jpeg"}), 400)


# -- 404 ----------------------------------------------------------------------------------------------


def test_unknown_models_and_paths_are_404s(client: TestClient) -> None:
    assert_error(client.post("/v1/denoise?model=nope", files=multipart(DIGIT)), 404, "model_not_found")
    assert_error(client.post("/v1/vae/sample", json={"model": "nope"}), 404, "model_not_found")
    assert_error(client.get("/v1/vae/manifold?model=nope"), 404, "model_not_found")
    assert_error(client.get("/v9/nothing"), 404, "not_found")
    # /v2 is the Open Inference Protocol's (app.oip): its errors come in the protocol's shape
    protocol = client.get("/v2/nothing")
    assert protocol.status_code == 404 and protocol.json()["type"] == "not_found"
    assert isinstance(protocol.json()["error"], str)
    assert_error(client.get("/v1/denoise"), 405, "method_not_allowed")


# -- 413 ----------------------------------------------------------------------------------------------


@pytest.fixture
def small_limits(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(max_body_bytes=20_000, max_images_per_request=3, max_pixels=100 * 100)


def test_a_body_over_the_limit_is_a_413_from_its_length(small_limits: TestClient) -> None:
    response = small_limits.post("/v1/denoise", content=b"\x00" * 20_001, headers={"content-type": "image/png"})
    assert_error(response, 413, "payload_too_large")


def test_a_streamed_body_over_the_limit_is_a_413_while_reading(small_limits: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap must trip while the body streams in
        for _ in range(30):
            yield b"\x00" * 1000

    for route, content_type in (("/v1/denoise", "image/png"), ("/v1/vae/sample", "application/json")):
        response = small_limits.post(route, content=chunks(), headers={"content-type": content_type})
        assert_error(response, 413, "payload_too_large")


def test_too_many_images_is_a_413(small_limits: TestClient) -> None:
    assert_error(small_limits.post("/v1/denoise", files=multipart(*[DIGIT] * 4)), 413, "payload_too_large")
    many = {"images": [b64(DIGIT)] * 4}
    assert_error(small_limits.post("/v1/embeddings", json=many), 413, "payload_too_large")
    assert small_limits.post("/v1/denoise", files=multipart(*[DIGIT] * 3)).status_code == 200


def test_an_image_over_the_pixel_limit_is_a_413(small_limits: TestClient) -> None:
    response = small_limits.post("/v1/denoise", content=digit_photo(2), headers={"content-type": "image/jpeg"})
    assert assert_error(response, 413, "payload_too_large")["param"] == "image"


# -- 415 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "image/svg+xml", "application/octet-stream", None])
def test_unsupported_content_types_are_a_415(client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/denoise", content=DIGIT, headers=headers)
    assert assert_error(response, 415, "unsupported_media_type")["param"] == "content-type"


@pytest.mark.parametrize("route", ["/v1/vae/sample", "/v1/vae/decode"])
def test_json_routes_refuse_other_content_types_with_a_415(client: TestClient, route: str) -> None:
    # What `curl -d '{"n": 2}'` sends without -H 'Content-Type: application/json'.
    headers = {"content-type": "application/x-www-form-urlencoded"}
    response = client.post(route, content=b'{"n": 2, "latents": [[0, 0]]}', headers=headers)
    assert "application/json" in assert_error(response, 415, "unsupported_media_type")["message"]


# -- 422 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body", "param"),
    [
        ("post", "/v1/vae/sample", {"n": 0}, "n"),
        ("post", "/v1/vae/sample", {"n": 65}, "n"),  # over AE_MAX_SAMPLES (64)
        ("post", "/v1/vae/sample", {"n": 2, "temperature": -1}, "temperature"),
        ("post", "/v1/vae/sample", {"n": 2, "colour": "red"}, "colour"),
        ("post", "/v1/vae/sample", {"n": 2, "response_format": "gif"}, "response_format"),
        ("post", "/v1/vae/decode", {"latents": []}, "latents"),
        ("post", "/v1/vae/decode", {"latents": [[0, 0], [1]]}, "latents"),
        ("post", "/v1/vae/interpolate", {"latents": [[0, 0], [1, 1]], "steps": 1}, "steps"),
        ("post", "/v1/vae/interpolate", {"latents": [[0, 0], [1, 1]], "steps": 65}, "steps"),  # over AE_MAX_STEPS
        ("post", "/v1/denoise", {"images": [], "preprocess": "maybe"}, "preprocess"),
        ("post", "/v1/denoise", {"images": "not a list"}, "images"),
        ("post", "/v1/embeddings", {"images": [], "encoding_format": "hex"}, "encoding_format"),
        ("get", "/v1/vae/manifold?size=0", None, "size"),
        ("get", "/v1/vae/manifold?size=31", None, "size"),  # over AE_MAX_MANIFOLD_SIZE (30)
        ("get", "/v1/vae/manifold?range=-1", None, "range"),
        ("post", "/v1/denoise?response_format=gif", {"images": []}, "response_format"),
    ],
)
def test_invalid_fields_are_a_422_naming_the_field(
    client: TestClient, method: str, url: str, body: object, param: str
) -> None:
    response = client.request(method.upper(), url, json=body) if body is not None else client.get(url)
    assert assert_error(response, 422, "validation_error")["param"] == param


def test_invalid_multipart_fields_are_a_422(client: TestClient) -> None:
    response = client.post("/v1/denoise", data={"response_format": "gif"}, files=multipart(DIGIT))
    assert assert_error(response, 422, "validation_error")["param"] == "response_format"


# -- 503 ----------------------------------------------------------------------------------------------


class FailingRegistry(ModelRegistry):
    """The real registry's models, but every forward pass fails with `error` (what the batcher raises)."""

    error: Exception

    async def run(self, name: str, task: str, inputs: object) -> object:  # type: ignore[override]
        raise self.error


def post_with_failing_batcher(client: TestClient, error: Exception) -> httpx.Response:
    real = client.app.state.registry  # type: ignore[attr-defined]
    failing = FailingRegistry(real.settings)
    failing.entries, failing.error = real.entries, error
    client.app.dependency_overrides[get_registry] = lambda: failing  # type: ignore[attr-defined]
    try:
        return client.post("/v1/denoise", files=multipart(DIGIT))
    finally:
        client.app.dependency_overrides.clear()  # type: ignore[attr-defined]


def test_an_overloaded_model_is_a_503_with_retry_after(client: TestClient) -> None:
    response = post_with_failing_batcher(client, Overloaded("model is busy: 2048 images are waiting", retry_after=2.4))
    assert_error(response, 503, "overloaded")
    assert response.headers["retry-after"] == "2"


def test_a_model_that_answers_too_late_is_a_504(client: TestClient) -> None:
    assert_error(post_with_failing_batcher(client, RequestTimeout("no answer within 30 s")), 504, "timeout")


# -- never a 500 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", [*IMAGE_ROUTES, "/v1/vae/interpolate", "/v1/vae/sample", "/v1/vae/decode"])
@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"", "application/json"),
        (b"[]", "application/json"),
        (b'{"images": [1, 2]}', "application/json"),
        (b'{"images": ["' + b"A" * 4000 + b'"]}', "application/json"),
        (b'{"latents": [[1e400, 0]]}', "application/json"),
        (b'{"latents": [["a", 0], [0, 0]]}', "application/json"),
        (b"--x\r\nContent-Disposition: form-data; name=image\r\n\r\nabc\r\n--x--\r\n", MULTIPART_X),
        (b"garbage", "multipart/form-data"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "image/jpeg"),
        (b"GIF89a" + b"\xff" * 64, "image/gif"),
    ],
)
def test_nothing_a_client_sends_is_a_500(client: TestClient, route: str, content: bytes, content_type: str) -> None:
    response = client.post(route, content=content, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"error"}
