"""The direct path (app.http.direct) answers the image routes exactly as FastAPI's routes do.

Every case is sent twice to the same app: once as it runs (the request pipeline hands the image routes to the
direct path when it can) and once with the direct path switched off (every request through FastAPI's routing
and dependency solving). Status, error bodies, the headers a client reads and the decoded pixels must agree;
a spy checks which requests the direct path answered.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_settings
from drawn_digits import digit_batch
from fastapi.testclient import TestClient
from PIL import Image
from service_helpers import b64, multipart, pngs

from app.http.direct import DirectRoutes
from app.main import create_app

KEY = "direct-path-key"
HEADERS_COMPARED = ("content-type", "x-model", "x-preprocessing", "x-noise-sigma", "x-grid", "retry-after")


@pytest.fixture(scope="module")
def digits() -> list[bytes]:
    return pngs(digit_batch(3, seed=99))


@pytest.fixture(scope="module")
def keyed_client(checkpoints_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(checkpoints_dir, api_keys=[KEY])), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def direct_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the direct path answered during the test."""
    calls: list[str] = []
    original = DirectRoutes._call

    async def spy(self: DirectRoutes, direct: Any, request: Any, options: Any) -> Any:
        calls.append(request.url.path)
        return await original(self, direct, request, options)

    monkeypatch.setattr(DirectRoutes, "_call", spy)
    return calls


def answer(response: Any) -> dict[str, Any]:
    """What a client sees of an answer: status, headers, and the body (images decoded to pixels)."""
    seen: dict[str, Any] = {"status": response.status_code}
    seen.update({name: response.headers.get(name) for name in HEADERS_COMPARED})
    kind = response.headers.get("content-type", "")
    if kind == "image/png":
        seen["pixels"] = np.asarray(Image.open(io.BytesIO(response.content))).tolist()
    elif kind.startswith("application/json"):
        body = response.json()
        for item in body.get("data", []) if isinstance(body, dict) else []:
            if isinstance(item, dict) and "b64_png" in item:
                png = base64.b64decode(item.pop("b64_png"))
                item["pixels"] = np.asarray(Image.open(io.BytesIO(png))).tolist()
        seen["body"] = body
    return seen


def both_ways(client: TestClient, monkeypatch: pytest.MonkeyPatch, **request: Any) -> tuple[dict, dict]:
    direct = answer(client.post(**request))
    with monkeypatch.context() as switched_off:
        switched_off.setattr(DirectRoutes, "claim", lambda self, scope: None)
        through_fastapi = answer(client.post(**request))
    return direct, through_fastapi


CASES: dict[str, dict[str, Any]] = {
    "one digit, multipart": {"url": "/v1/denoise", "files": "one"},
    "three digits, multipart -> JSON": {"url": "/v1/denoise", "files": "three"},
    "three digits as a grid": {"url": "/v1/denoise?response_format=png", "files": "three"},
    "query model": {"url": "/v1/denoise?model=tiny-denoise", "files": "one"},
    "JSON body": {"url": "/v1/denoise", "json": "three"},
    "raw body": {"url": "/v1/reconstruct", "content": "one"},
    "super-resolve a 28x28 digit (400: wrong size)": {"url": "/v1/super-resolve", "files": "one"},
    "unknown model (404)": {"url": "/v1/denoise?model=no-such-model", "files": "one"},
    "bad image (400)": {"url": "/v1/denoise", "files": "garbage"},
    "no images (400)": {"url": "/v1/denoise", "data": {"model": "tiny-denoise"}},
    "wrong content type (415)": {"url": "/v1/reconstruct", "text": "hello"},
    "invalid body option (422)": {"url": "/v1/denoise", "json": "bad option"},
}
FALLBACK_CASES = {
    "invalid query option (422, FastAPI's wording)": "/v1/denoise?preprocess=sideways",
    "unknown query option (422)": "/v1/denoise?colour=blue",
    "repeated query option": "/v1/denoise?model=tiny-denoise&model=tiny-denoise",
}


def build(case: dict[str, Any], digits: list[bytes]) -> dict[str, Any]:
    images = {"one": digits[:1], "three": digits, "garbage": [b"not an image"]}
    request: dict[str, Any] = {"url": case["url"]}
    if "files" in case:
        request["files"] = multipart(*images[case["files"]])
    if case.get("json") == "bad option":
        request["json"] = {"images": [b64(digits[0])], "sigma": "loud"}
    elif "json" in case:
        request["json"] = {"images": [b64(image) for image in images[case["json"]]]}
    if "content" in case:
        request.update(content=images[case["content"]][0], headers={"content-type": "image/png"})
    if "text" in case:
        request.update(content=case["text"].encode(), headers={"content-type": "text/plain"})
    if "data" in case:
        request["data"] = case["data"]
    return request


@pytest.mark.parametrize("name", list(CASES))
def test_the_direct_path_answers_as_fastapi_does(
    client: TestClient, digits: list[bytes], monkeypatch: pytest.MonkeyPatch, direct_calls: list[str], name: str
) -> None:
    request = build(CASES[name], digits)
    direct, through_fastapi = both_ways(client, monkeypatch, **request)
    assert direct == through_fastapi
    assert direct_calls == [request["url"].split("?")[0]], "the direct path did not answer this request"


@pytest.mark.parametrize("name", list(FALLBACK_CASES))
def test_query_options_it_cannot_vouch_for_go_to_fastapi(
    client: TestClient, digits: list[bytes], monkeypatch: pytest.MonkeyPatch, direct_calls: list[str], name: str
) -> None:
    request = {"url": FALLBACK_CASES[name], "files": multipart(digits[0])}
    direct, through_fastapi = both_ways(client, monkeypatch, **request)
    assert direct == through_fastapi
    assert direct_calls == []


def test_api_keys_are_checked_first_on_the_direct_path(
    keyed_client: TestClient, digits: list[bytes], monkeypatch: pytest.MonkeyPatch, direct_calls: list[str]
) -> None:
    attempts = (({}, 401), ({"authorization": "Bearer wrong"}, 401), ({"authorization": f"Bearer {KEY}"}, 200))
    for headers, status in attempts:
        request = {"url": "/v1/denoise", "files": multipart(digits[0]), "headers": headers}
        direct, through_fastapi = both_ways(keyed_client, monkeypatch, **request)
        assert direct == through_fastapi and direct["status"] == status
    assert len(direct_calls) == 3


def test_dependency_overrides_send_requests_through_fastapi(
    client: TestClient, digits: list[bytes], direct_calls: list[str]
) -> None:
    from app.http.dependencies import get_registry

    client.app.dependency_overrides[get_registry] = get_registry  # type: ignore[attr-defined]
    try:
        assert client.post("/v1/denoise", files=multipart(digits[0])).status_code == 200
    finally:
        client.app.dependency_overrides.clear()  # type: ignore[attr-defined]
    assert direct_calls == []


def test_the_direct_path_can_be_switched_off(
    checkpoints_dir: Path, digits: list[bytes], direct_calls: list[str]
) -> None:
    with TestClient(create_app(make_settings(checkpoints_dir, direct_path=False))) as plain:
        assert plain.post("/v1/denoise", files=multipart(digits[0])).status_code == 200
    assert direct_calls == []
