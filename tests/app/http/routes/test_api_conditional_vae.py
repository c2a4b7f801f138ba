"""Conditional VAEs over HTTP: `label` on /v1/vae/sample and /v1/vae/decode, /v1/vae/restyle, and which
models take labels in /v1/models. In-process, and over a real uvicorn process with httpx."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch
from drawn_digits import decode_png, digit_batch, png_bytes
from fastapi.testclient import TestClient
from service_helpers import assert_error, b64, json_images

DIGITS = list(range(10))


@pytest.fixture(scope="module")
def seven() -> bytes:
    return png_bytes(digit_batch(1, seed=7)[0])


def test_models_say_which_take_labels(client: TestClient) -> None:
    models = {item["name"]: item for item in client.get("/v1/models").json()["data"]}
    assert models["tiny-cvae"]["labels"] == DIGITS and models["tiny-cvae"]["tasks"] == ["conditional-vae"]
    assert models["tiny-vae-2d"].get("labels") is None and models["tiny-ae"].get("labels") is None


def test_one_label_for_all_and_one_per_sample(client: TestClient) -> None:
    sevens = client.post("/v1/vae/sample", json={"n": 3, "seed": 9, "label": 7})
    assert sevens.status_code == 200 and sevens.json()["model"] == "tiny-cvae"  # the default conditional model
    assert [item["label"] for item in sevens.json()["data"]] == [7, 7, 7]
    mixed = client.post("/v1/vae/sample", json={"n": 3, "seed": 9, "label": [7, 1, 7]})
    assert [item["label"] for item in mixed.json()["data"]] == [7, 1, 7]
    same, other = json_images(sevens), json_images(mixed)
    # The seed fixes the latents whatever the labels: the 7s agree, the 1 differs from the 7 it replaces.
    assert np.array_equal(same[0], other[0]) and np.array_equal(same[2], other[2])
    assert not np.array_equal(same[1], other[1])


def test_labelled_samples_are_reproducible_and_report_their_labels_in_png(client: TestClient) -> None:
    body = {"n": 4, "seed": 3, "label": [0, 1, 2, 3], "response_format": "png"}
    first, again = client.post("/v1/vae/sample", json=body), client.post("/v1/vae/sample", json=body)
    assert first.status_code == 200 and first.content == again.content
    assert first.headers["x-labels"] == "0,1,2,3" and first.headers["x-seed"] == "3"


def test_a_conditional_model_without_labels_draws_them_from_the_seed(client: TestClient) -> None:
    body = {"n": 6, "seed": 11, "model": "tiny-cvae"}
    first, again = client.post("/v1/vae/sample", json=body).json(), client.post("/v1/vae/sample", json=body).json()
    labels = [item["label"] for item in first["data"]]
    assert labels == [item["label"] for item in again["data"]] and all(0 <= label <= 9 for label in labels)
    assert [d["b64_png"] for d in first["data"]] == [d["b64_png"] for d in again["data"]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"n": 2, "label": 10}, "0..9"),
        ({"n": 2, "label": [1, 2, 3]}, "one per image"),
        ({"n": 2, "label": []}, "one per image"),
        ({"n": 2, "label": 1, "model": "tiny-vae-2d"}, "takes no labels"),
    ],
)
def test_bad_labels_are_422_naming_the_field(client: TestClient, body: dict[str, object], message: str) -> None:
    error = assert_error(client.post("/v1/vae/sample", json=body), 422, "validation_error")
    assert error["param"] == "label" and message in error["message"]


def test_a_negative_or_text_label_is_refused_by_the_schema(client: TestClient) -> None:
    for label in (-1, "7"):
        error = assert_error(client.post("/v1/vae/sample", json={"n": 1, "label": label}), 422)
        assert "label" in str(error["param"])


def test_decode_with_labels(client: TestClient) -> None:
    latents = [[0.0] * 4, [0.0] * 4]
    response = client.post("/v1/vae/decode", json={"latents": latents, "label": [3, 8]})
    assert response.status_code == 200 and [item["label"] for item in response.json()["data"]] == [3, 8]
    three, eight = json_images(response)
    assert not np.array_equal(three, eight)  # same latent, different digit
    error = assert_error(client.post("/v1/vae/decode", json={"latents": latents, "model": "tiny-cvae"}), 422)
    assert error["param"] == "label" and "send 'label'" in error["message"]
    error = assert_error(client.post("/v1/vae/decode", json={"latents": [[0.0] * 3], "label": 1}), 422)
    assert error["param"] == "latents" and "4 latent dimensions" in error["message"]
    plain_model = {"latents": [[0.0, 0.0]], "label": 1, "model": "tiny-vae-2d"}
    error = assert_error(client.post("/v1/vae/decode", json=plain_model), 422)
    assert error["param"] == "label"


def test_the_unconditional_routes_are_unchanged(client: TestClient) -> None:
    plain = client.post("/v1/vae/sample", json={"n": 2, "seed": 1})
    assert plain.json()["model"] == "tiny-vae-2d" and "label" not in plain.json()["data"][0]


def test_restyle_draws_one_digit_as_every_label(client: TestClient, seven: bytes) -> None:
    response = client.post(
        "/v1/vae/restyle", files={"image": ("7.png", seven, "image/png")}, data={"source_label": "7"}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["source_label"] == 7 and [item["label"] for item in body["data"]] == DIGITS
    images = json_images(response)
    assert len({image.tobytes() for image in images}) == 10  # ten different digits


def test_restyle_chosen_labels_as_png_and_json_body(client: TestClient, seven: bytes) -> None:
    response = client.post(
        "/v1/vae/restyle?labels=3,5&response_format=png&source_label=7",
        content=seven,
        headers={"Content-Type": "image/png"},
    )
    assert response.status_code == 200 and response.headers["x-labels"] == "3,5"
    assert response.headers["x-source-label"] == "7" and decode_png(response.content).shape == (28, 56)
    as_json = client.post("/v1/vae/restyle", json={"images": [b64(seven)], "labels": [3, 5], "source_label": 7})
    assert [item["label"] for item in as_json.json()["data"]] == [3, 5]
    from_json = json_images(as_json)
    assert np.array_equal(from_json[0], decode_png(response.content)[:, :28])


def test_restyle_infers_the_source_label_reproducibly(client: TestClient, seven: bytes) -> None:
    first = client.post("/v1/vae/restyle", json={"images": [b64(seven)], "labels": [1]}).json()
    again = client.post("/v1/vae/restyle", json={"images": [b64(seven)], "labels": [1]}).json()
    assert 0 <= first["source_label"] <= 9 and first == again


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"labels": [12]}, "labels"),
        ({"source_label": 10}, "source_label"),
        ({"model": "tiny-vae-2d"}, "model"),
    ],
)
def test_restyle_refuses_bad_options(client: TestClient, seven: bytes, options: dict[str, object], param: str) -> None:
    error = assert_error(client.post("/v1/vae/restyle", json={"images": [b64(seven)], **options}), 422)
    assert error["param"] == param


def test_restyle_takes_exactly_one_image(client: TestClient, seven: bytes) -> None:
    error = assert_error(client.post("/v1/vae/restyle", json={"images": [b64(seven), b64(seven)]}), 400)
    assert error["param"] == "image"


def test_over_uvicorn_labels_and_restyle(server: str, seven: bytes) -> None:
    with httpx.Client(base_url=server, timeout=30) as http:
        first = http.post("/v1/vae/sample", json={"n": 2, "seed": 5, "label": 4})
        again = http.post("/v1/vae/sample", json={"n": 2, "seed": 5, "label": 4})
        assert first.status_code == 200 and first.json() == again.json()
        error = http.post("/v1/vae/sample", json={"n": 1, "label": 99}).json()["error"]
        assert error["param"] == "label"
        restyled = http.post("/v1/vae/restyle", files={"image": ("7.png", seven, "image/png")}, data={"labels": "0,9"})
        assert restyled.status_code == 200 and restyled.json()["data"][1]["label"] == 9
        assert torch.tensor(json_images(restyled)[0]).shape == (28, 28)
