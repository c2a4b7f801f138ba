"""Access control: API keys on /v1, the admin key and its management routes, CORS."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import make_settings
from drawn_digits import digit_batch, png_bytes
from fastapi.testclient import TestClient
from service_helpers import assert_error, multipart

from app.http.security import key_matches
from app.main import create_app
from app.settings import DefaultModels, Settings

DIGIT = png_bytes(digit_batch(1, seed=4)[0])
NO_DEFAULTS = DefaultModels(**{task: "absent" for task in DefaultModels().as_dict()})  # nothing warmed up
KEY, OTHER_KEY, ADMIN_KEY = "key-one-0123456789", "key-two-9876543210", "admin-abcdefghij"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_keys=[KEY, OTHER_KEY])


def test_key_lists_come_as_json_or_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_API_KEYS", f" {KEY} , {OTHER_KEY},")
    monkeypatch.setenv("AE_CORS_ORIGINS", '["https://a.example", "https://b.example"]')
    monkeypatch.setenv("AE_ADMIN_API_KEY", "  ")
    settings = Settings()
    assert settings.api_keys == [KEY, OTHER_KEY]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.admin_api_key is None


def test_keys_match_only_exactly() -> None:
    assert key_matches(KEY, [OTHER_KEY, KEY])
    assert not key_matches(KEY[:-1], [KEY])
    assert not key_matches(KEY + "x", [KEY])
    assert not key_matches("", [KEY])
    assert not key_matches(KEY, [])


def test_without_keys_v1_is_open(client: TestClient) -> None:
    assert client.get("/v1/models").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong"), {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer "}],
)
def test_v1_refuses_a_missing_or_wrong_key_with_a_401(keyed: TestClient, headers: dict[str, str]) -> None:
    for response in (
        keyed.get("/v1/models", headers=headers),
        keyed.get("/v1/models/tiny-ae", headers=headers),
        keyed.post("/v1/denoise", files=multipart(DIGIT), headers=headers),
        keyed.post("/v1/vae/sample", json={"n": 1}, headers=headers),
        keyed.get("/v1/vae/manifold", headers=headers),
    ):
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("route", ["/v1/vae/sample", "/v1/vae/decode", "/v1/denoise", "/v1/embeddings"])
@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"n": "many", "latents": 3}'])
def test_the_key_is_checked_before_the_body_is_read(keyed: TestClient, route: str, body: bytes) -> None:
    """Without a key, a malformed body is a 401 like any other: nothing is parsed for a stranger."""
    response = keyed.post(route, content=body, headers={"content-type": "application/json"})
    assert_error(response, 401, "unauthorized")


def test_v1_serves_any_configured_key(keyed: TestClient) -> None:
    assert keyed.get("/v1/models", headers=bearer(KEY)).status_code == 200
    response = keyed.post("/v1/denoise", files=multipart(DIGIT), headers=bearer(OTHER_KEY))
    assert response.status_code == 200, response.text
    assert keyed.get("/v1/models", headers={"Authorization": f"bearer {KEY}"}).status_code == 200


def test_an_unknown_route_is_still_a_404_with_keys(keyed: TestClient) -> None:
    assert_error(keyed.get("/v1/nothing-here"), 404)


def test_probes_never_need_a_key_and_metrics_only_when_configured(
    keyed: TestClient, make_client: Callable[..., TestClient]
) -> None:
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 200
    assert keyed.get("/metrics").status_code == 200
    strict = make_client(api_keys=[KEY], metrics_require_key=True)
    assert_error(strict.get("/metrics"), 401, "unauthorized")
    assert strict.get("/metrics", headers=bearer(KEY)).status_code == 200
    assert strict.get("/readyz").status_code == 200


# -- management routes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/models/tiny-ae/load", "/v1/models/tiny-ae/unload", "/v1/models/reload"])
def test_management_routes_do_not_exist_without_an_admin_key(client: TestClient, path: str) -> None:
    assert client.post(path, headers=bearer("anything")).status_code in (404, 405)
    assert path not in client.get("/openapi.json").json()["paths"]


@pytest.fixture
def admin(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(admin_api_key=ADMIN_KEY, api_keys=[KEY])


@pytest.mark.parametrize("key", [None, "wrong", KEY])
def test_management_routes_need_the_admin_key(admin: TestClient, key: str | None) -> None:
    headers = bearer(key) if key else {}
    for path in ("/v1/models/tiny-ae/load", "/v1/models/tiny-ae/unload", "/v1/models/reload"):
        response = admin.post(path, headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


def test_unload_then_load_a_model(admin: TestClient) -> None:
    unloaded = admin.post("/v1/models/tiny-ae/unload", headers=bearer(ADMIN_KEY))
    assert unloaded.status_code == 200, unloaded.text
    assert unloaded.json()["state"] == "not_loaded"
    assert admin.get("/readyz").status_code == 503  # tiny-ae is the default embedder
    loaded = admin.post("/v1/models/tiny-ae/load", headers=bearer(ADMIN_KEY))
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["state"] == "loaded"
    assert admin.get("/readyz").status_code == 200
    response = admin.post("/v1/embeddings", files=multipart(DIGIT), headers=bearer(KEY))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "name", ["..%2F..%2Fetc", "%2e%2e", "..", ".hidden", "http:%2F%2Fevil.example%2Fm", "no-such-model", "a" * 200]
)
def test_management_loads_only_names_from_the_scan(admin: TestClient, name: str) -> None:
    response = admin.post(f"/v1/models/{name}/load", headers=bearer(ADMIN_KEY))
    assert 400 <= response.status_code < 500, response.text
    assert response.status_code != 401


def test_reload_picks_up_new_folders_and_ignores_links_outside(checkpoints_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    root.mkdir()
    shutil.copytree(checkpoints_dir / "tiny-ae", root / "tiny-ae")
    with TestClient(create_app(make_settings(root, admin_api_key=ADMIN_KEY, default_models=NO_DEFAULTS))) as admin:
        check_reload(admin, root, checkpoints_dir, tmp_path)


def check_reload(admin: TestClient, root: Path, checkpoints_dir: Path, tmp_path: Path) -> None:
    assert [m["name"] for m in admin.get("/v1/models").json()["data"]] == ["tiny-ae"]

    shutil.copytree(checkpoints_dir / "tiny-sr-x2", root / "tiny-sr-x2")
    outside = tmp_path / "outside"
    shutil.copytree(checkpoints_dir / "tiny-denoise", outside)
    (root / "linked").symlink_to(outside, target_is_directory=True)  # a folder that leaves the directory
    shutil.rmtree(root / "tiny-ae")

    response = admin.post("/v1/models/reload", headers=bearer(ADMIN_KEY))
    assert response.status_code == 200, response.text
    assert response.json() == {"added": ["tiny-sr-x2"], "removed": ["tiny-ae"], "models": ["tiny-sr-x2"]}
    assert_error(admin.post("/v1/models/linked/load", headers=bearer(ADMIN_KEY)), 404, "model_not_found")
    assert admin.post("/v1/models/tiny-sr-x2/load", headers=bearer(ADMIN_KEY)).status_code == 200


# -- CORS ----------------------------------------------------------------------------------------------


def test_no_cors_headers_unless_origins_are_configured(client: TestClient) -> None:
    response = client.get("/v1/models", headers={"Origin": "https://a.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/v1/models", headers={"Origin": "https://a.example", "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_configured_origins(make_client: Callable[..., TestClient]) -> None:
    cors = make_client(cors_origins=["https://a.example"], api_keys=[KEY])
    preflight = cors.options(
        "/v1/denoise",
        headers={
            "Origin": "https://a.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://a.example"
    allowed = cors.get("/v1/models", headers={"Origin": "https://a.example", **bearer(KEY)})
    assert allowed.headers["access-control-allow-origin"] == "https://a.example"
    other = cors.get("/v1/models", headers={"Origin": "https://evil.example", **bearer(KEY)})
    assert "access-control-allow-origin" not in other.headers
