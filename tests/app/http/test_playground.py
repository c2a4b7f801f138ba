"""The playground's page and files over HTTP: caching headers, versions, the key and the switch.

What the page does in a browser is tested in test_playground_browser.py (a real Chromium).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import assert_error

from app.http.routes.playground import ASSET_CACHE, STATIC_DIR, Playground
from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[3]
ASSET_URL = re.compile(r'(?:href|src)="(/playground/[0-9a-f]+/[^"]+)"')
MODULE_IMPORT = re.compile(r'from "\./([^"]+)"')


def page_assets(client: TestClient) -> list[str]:
    return ASSET_URL.findall(client.get("/").text)


def test_the_page_is_served_at_the_root_and_revalidated(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "Autoencoder playground" in response.text and "{{ASSET_ROOT}}" not in response.text
    again = client.get("/", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.head("/").status_code == 200


def test_assets_are_versioned_and_cached_for_good(client: TestClient) -> None:
    urls = page_assets(client)
    assert {url.rsplit("/", 1)[1] for url in urls} == {"favicon.svg", "style.css", "main.js"}
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["cache-control"] == ASSET_CACHE
        assert response.headers["content-type"] == types[Path(url).suffix]


def test_every_module_the_scripts_import_is_served(client: TestClient) -> None:
    root = next(url for url in page_assets(client) if url.endswith("main.js")).rsplit("/", 1)[0]
    pending, seen = ["main.js"], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        response = client.get(f"{root}/{name}")
        assert response.status_code == 200, name
        pending += MODULE_IMPORT.findall(response.text)
    assert {"api.js", "ui.js", "input.js", "pixels.js", "views.js", "latent.js", "models.js"} <= seen
    for digit in range(10):  # the example digits the page offers and embeds as references
        assert client.get(f"{root}/examples/digit-{digit}.png").headers["content-type"] == "image/png"


def test_the_version_follows_the_files(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script src="{{ASSET_ROOT}}/a.js"></script>')
    (tmp_path / "a.js").write_text("1")
    first = Playground(tmp_path)
    (tmp_path / "a.js").write_text("2")
    second = Playground(tmp_path)
    assert first.version != second.version
    assert f'src="/playground/{second.version}/a.js"'.encode() in second.page


def test_no_request_reaches_outside_the_files_or_another_version(client: TestClient) -> None:
    root = page_assets(client)[0].rsplit("/", 1)[0]
    assert_error(client.get("/playground/0000000000000000/main.js"), 404, "not_found")
    assert_error(client.get(f"{root}/nothing.js"), 404, "not_found")
    assert_error(client.get(f"{root}/index.html"), 404, "not_found")  # the page has one address: /
    for sneaky in ("..%2F..%2Fsettings.py", "%2E%2E/%2E%2E/routes/playground.py", "../../app/settings.py"):
        assert client.get(f"{root}/{sneaky}").status_code == 404


def test_the_page_and_its_files_need_no_key_but_the_api_does(make_client: object) -> None:
    keyed = make_client(api_keys=["k1"], preload="none")  # type: ignore[operator]
    assert keyed.get("/").status_code == 200
    assert all(keyed.get(url).status_code == 200 for url in page_assets(keyed))
    assert_error(keyed.get("/v1/models"), 401, "unauthorized")
    assert keyed.get("/v1/models", headers={"Authorization": "Bearer k1"}).status_code == 200


def test_the_playground_can_be_switched_off(make_client: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_PLAYGROUND", "false")
    assert Settings().playground is False
    off = make_client(playground=False, preload="none")  # type: ignore[operator]
    assert_error(off.get("/"), 404)
    assert off.get("/v1/models").status_code == 200  # the API itself is untouched


def test_the_static_files_are_installed_with_the_package() -> None:
    """A non-editable install (the Docker image) must carry app/static: package data in pyproject.toml."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["app"]
    files = {path.relative_to(STATIC_DIR.parent) for path in STATIC_DIR.rglob("*") if path.is_file()}
    covered = {path for path in files if any(path.match(pattern) for pattern in patterns)}
    assert covered == files
