"""A sweep of the image routes that finds a 500 before a user does (issue 25): every image route x every
shipped model x picture sizes and modes x the optional fields, through a real uvicorn on one keep-alive
connection.

Every answer must be a 200 or a 4xx with the JSON error body, never a 5xx; and the connection must
answer the next request (a GET /healthz on the same connection), unless the answer said
`Connection: close`. First one fixed picture through every (route, model) pair, then Hypothesis draws
sizes (1..40 on a side, and a few large odd ones), modes (L, LA, RGB, RGBA, P with transparency, I;16,
CMYK JPEG, animated GIF, grayscale JPEG) and fields, within a fixed example budget (derandomised: the
same examples every run, so CI stays fast and a failure reproduces).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import running_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from shipped import CHECKPOINTS, SHIPPED, require_shipped

from app.settings import DefaultModels

EXAMPLES = 60  # the Hypothesis budget: about a minute on a busy 2-core machine
# Each route, and the optional fields it takes (None: the field left out).
ROUTES: dict[str, dict[str, list[Any]]] = {
    "/v1/denoise": {
        "sigma": [None, 0, 12.5, 75],
        "response_format": [None, "png", "json"],
        "preprocess": [None, "auto", "none"],
    },
    "/v1/super-resolve": {
        "scale": [None, 2, 3, 4],
        "response_format": [None, "png", "json"],
        "preprocess": [None, "none"],
    },
    "/v1/reconstruct": {"response_format": [None, "png", "json"], "preprocess": [None, "auto", "none"]},
    "/v1/embeddings": {"preprocess": [None, "none"], "normalize": [None, True], "encoding_format": [None, "base64"]},
    "/v1/vae/encode": {"preprocess": [None, "auto", "none"]},
}
MODES = ("L", "LA", "RGB", "RGBA", "P-transparent", "I;16", "CMYK-JPEG", "animated-GIF", "L-JPEG")
LARGE_ODD_SIZES = [(257, 3), (3, 257), (101, 67), (301, 199)]


def picture(width: int, height: int, mode: str, seed: int) -> tuple[bytes, str]:
    """An image file of this size and mode, of seeded random content: (bytes, content type)."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    if mode == "P-transparent":
        palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        palette.info["transparency"] = 0
        palette.save(buffer, "PNG")
    elif mode == "I;16":
        Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16)).save(buffer, "PNG")
    elif mode == "CMYK-JPEG":
        rgb.convert("CMYK").save(buffer, "JPEG")
        return buffer.getvalue(), "image/jpeg"
    elif mode == "L-JPEG":
        rgb.convert("L").save(buffer, "JPEG")
        return buffer.getvalue(), "image/jpeg"
    elif mode == "animated-GIF":
        frames = [rgb.convert("P"), rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P")]
        frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
        return buffer.getvalue(), "image/gif"
    else:
        rgb.convert(mode).save(buffer, "PNG")
    return buffer.getvalue(), "image/png"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service on the shipped checkpoints, each loaded on first use."""
    require_shipped(*SHIPPED)
    checkpoints = tmp_path_factory.mktemp("sweep") / "checkpoints"
    checkpoints.symlink_to(CHECKPOINTS, target_is_directory=True)
    env = {"AE_PRELOAD": "none", "AE_MAX_BODY_BYTES": str(4 * 1024 * 1024)}
    with running_server(checkpoints, DefaultModels().as_dict(), env) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def connection(server: str) -> Iterator[httpx.Client]:
    """One keep-alive connection: at most one in the pool, so a reused stream is the same connection."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with httpx.Client(base_url=server, limits=limits, timeout=120) as client:
        yield client


def check_answer_and_connection(client: httpx.Client, response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "param"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    closing = response.headers.get("connection", "").lower() == "close"
    stream = response.extensions["network_stream"]
    follow_up = client.get("/healthz")
    assert follow_up.status_code == 200
    if not closing:  # the next request went over the same connection, and it was answered
        assert follow_up.extensions["network_stream"] is stream, "the connection was dropped without notice"


def send(
    client: httpx.Client, route: str, model: str | None, image: tuple[bytes, str], fields: dict[str, Any]
) -> httpx.Response:
    data, content_type = image
    params = {
        name: str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in fields.items()
        if value is not None
    }
    if model is not None:
        params["model"] = model
    return client.post(route, params=params, files={"image": ("picture", data, content_type)})


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_every_model_on_every_image_route_answers_200_or_a_4xx(connection: httpx.Client, route: str) -> None:
    # A digit-sized picture, and one too small for most things (the noise estimator needs 7x7, issue 25).
    for image in (picture(28, 28, "L", seed=0), picture(2, 2, "RGB", seed=0)):
        for model in (None, *SHIPPED):
            check_answer_and_connection(connection, send(connection, route, model, image, {}))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str | None, tuple[int, int], str, int, dict[str, Any]]:
    route = draw(st.sampled_from(sorted(ROUTES)))
    model = draw(st.sampled_from([None, *SHIPPED]))
    size = draw(st.one_of(st.tuples(st.integers(1, 40), st.integers(1, 40)), st.sampled_from(LARGE_ODD_SIZES)))
    mode = draw(st.sampled_from(MODES))
    fields = {name: draw(st.sampled_from(values)) for name, values in ROUTES[route].items()}
    return route, model, size, mode, draw(st.integers(0, 2**16)), fields


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_any_picture_on_any_route_is_a_200_or_a_4xx_and_the_connection_lives_on(
    connection: httpx.Client, request: tuple[str, str | None, tuple[int, int], str, int, dict[str, Any]]
) -> None:
    route, model, (width, height), mode, seed, fields = request
    response = send(connection, route, model, picture(width, height, mode, seed), fields)
    check_answer_and_connection(connection, response)


def test_the_sweep_reaches_the_models(connection: httpx.Client) -> None:
    """Not every answer of the sweep is a refusal: a colour picture of any size is denoised, for instance."""
    response = send(connection, "/v1/denoise", "photo-denoise-color", picture(33, 17, "RGBA", seed=1), {})
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (33, 17)
