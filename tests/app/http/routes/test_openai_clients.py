"""The official `openai` SDK and LangChain's `OpenAIEmbeddings`, unchanged, against the service as a real
uvicorn process with API keys on: the only adapter code is `base_url` and the key.

Each vector is compared with the service's own `float` answer for the same images (a plain httpx
request with `images`), within float32 precision.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from conftest import running_server
from drawn_digits import digit_batch, digit_photo
from langchain_openai import OpenAIEmbeddings
from service_helpers import b64, pngs
from tiny_checkpoints import DEFAULT_MODELS

API_KEY = "sdk-test-key"
MODEL = "tiny-ae"  # 16-d embeddings


@pytest.fixture(scope="module")
def server(checkpoints_dir: Path) -> Iterator[str]:
    env = {"AE_API_KEYS": f"another-key,{API_KEY}", "AE_OWNED_BY": "test-lab"}
    with running_server(checkpoints_dir, DEFAULT_MODELS, extra_env=env) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def sdk(server: str) -> Iterator[openai.OpenAI]:
    # No retries: a 503 would otherwise be retried, and a failure must show at once.
    with openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def images() -> list[str]:
    """Five drawn digits as bare base64 PNGs."""
    return [b64(data) for data in pngs(digit_batch(5, seed=16))]


def assert_float32_equal(actual: object, expected: np.ndarray) -> None:
    """Equal within float32 precision (the vectors are float32; the JSON floats print them exactly)."""
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=1e-6, atol=1e-6)


def service_floats(server: str, images: list[str]) -> np.ndarray:
    """The service's own answer: `images` in, JSON floats out."""
    response = httpx.post(
        f"{server}/v1/embeddings",
        json={"model": MODEL, "images": images},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)


def test_the_sdk_embeds_one_image_sent_as_a_bare_string(sdk: openai.OpenAI, server: str, images: list[str]) -> None:
    result = sdk.embeddings.create(model=MODEL, input=images[0])  # the SDK asks for base64 by default
    assert result.model == MODEL and len(result.data) == 1 and result.data[0].index == 0
    assert result.usage.prompt_tokens == result.usage.total_tokens == 1  # one image
    assert_float32_equal(np.array([result.data[0].embedding]), service_floats(server, images[:1]))


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_the_sdk_embeds_several_images_in_either_format(
    sdk: openai.OpenAI, server: str, images: list[str], encoding_format: str
) -> None:
    result = sdk.embeddings.create(model=MODEL, input=images, encoding_format=encoding_format)  # type: ignore[arg-type]
    assert [item.index for item in result.data] == list(range(len(images)))
    if encoding_format == "base64":  # asked for explicitly, the SDK hands over the string as it came
        vectors = np.stack([np.frombuffer(base64.b64decode(item.embedding), dtype="<f4") for item in result.data])  # type: ignore[arg-type]
    else:
        vectors = np.array([item.embedding for item in result.data], dtype=np.float32)
    assert vectors.shape == (5, 16)
    assert_float32_equal(vectors, service_floats(server, images))
    assert result.usage.prompt_tokens == 5


def test_the_sdk_takes_data_urls_dimensions_and_user(sdk: openai.OpenAI, server: str, images: list[str]) -> None:
    data_urls = [f"data:image/png;base64,{image}" for image in images[:2]]
    result = sdk.embeddings.create(model=MODEL, input=data_urls, dimensions=16, user="someone")
    assert_float32_equal(np.array([item.embedding for item in result.data]), service_floats(server, images[:2]))


def test_the_sdk_gets_a_bad_request_error_naming_the_bad_image(sdk: openai.OpenAI, images: list[str]) -> None:
    not_an_image = b64(b"these bytes are no image")
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model=MODEL, input=[images[0], not_an_image])
    error = caught.value
    assert error.status_code == 400 and error.type == "invalid_image" and error.param == "input[1]"
    assert isinstance(error.body, dict) and "not a readable image" in error.body["message"]
    assert "not a readable image" in str(error)


def test_the_sdk_gets_a_422_for_dimensions_the_model_does_not_make(sdk: openai.OpenAI, images: list[str]) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        sdk.embeddings.create(model=MODEL, input=images[0], dimensions=8)
    assert caught.value.param == "dimensions" and "16" in caught.value.message


def test_a_key_is_required_and_a_wrong_one_refused(server: str, images: list[str]) -> None:
    # (The right key is what every other test here sends.) No key at all: 401 with the Bearer challenge.
    response = httpx.post(f"{server}/v1/embeddings", json={"model": MODEL, "input": images[0]}, timeout=30)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    with (
        openai.OpenAI(base_url=f"{server}/v1", api_key="not-the-key", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        client.embeddings.create(model=MODEL, input=images[0])
    assert caught.value.type == "unauthorized" and "not valid" in caught.value.message


def test_the_sdk_lists_the_models(sdk: openai.OpenAI, checkpoints_dir: Path) -> None:
    models = {model.id: model for model in sdk.models.list()}
    assert set(models) == {path.name for path in checkpoints_dir.iterdir() if path.is_dir()}
    assert {(model.object, model.owned_by) for model in models.values()} == {("model", "test-lab")}
    assert models[MODEL].created > 0  # tiny-ae's card says when it was trained
    one = sdk.models.retrieve(MODEL)
    assert (one.id, one.created) == (MODEL, models[MODEL].created)


def test_langchain_embeds_documents_and_a_query(server: str, images: list[str]) -> None:
    embedder = OpenAIEmbeddings(
        model=MODEL,
        base_url=f"{server}/v1",
        api_key=API_KEY,  # type: ignore[arg-type]
        check_embedding_ctx_length=False,  # send the strings as they are, not as tiktoken tokens
        chunk_size=2,  # several requests for five images: the order must survive
        max_retries=0,
    )
    expected = service_floats(server, images)
    assert_float32_equal(np.array(embedder.embed_documents(images)), expected)
    assert_float32_equal(np.array(embedder.embed_query(images[3])), expected[3])


def test_a_photo_goes_through_the_mnist_frame_as_with_images(sdk: openai.OpenAI, server: str) -> None:
    photo = b64(digit_photo(3))  # not 28x28: framed like any image the service gets
    result = sdk.embeddings.create(model=MODEL, input=photo, encoding_format="float")
    assert_float32_equal(np.array([result.data[0].embedding]), service_floats(server, [photo]))


def test_the_sdk_retries_a_503_then_reports_the_service_s_error(server: str, images: list[str]) -> None:
    """The SDK's own retry (max_retries=2) tries a 503 of the service again, then raises with the service's error
    body and status (`broken-card`: a checkpoint whose card cannot be read, answered 503 model_unavailable)."""
    attempts: list[str] = []
    http_client = httpx.Client(event_hooks={"request": [lambda request: attempts.append(request.url.path)]})
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=2, http_client=http_client)
    with client, pytest.raises(openai.InternalServerError) as unavailable:
        client.embeddings.create(model="broken-card", input=images[:1])
    assert attempts == ["/v1/embeddings"] * 3  # the first try and two retries
    assert unavailable.value.status_code == 503
    assert unavailable.value.response.json()["error"]["type"] == "model_unavailable"
