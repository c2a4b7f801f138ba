"""The playground in a real Chromium, against a real uvicorn on the shipped checkpoints.

Playwright drives the system's Chromium (Debian's `chromium` package, which `.ci/run` installs; Playwright's
own browser download is not used): the tests are skipped, saying so, where it or Playwright is missing.
One server and one browser serve the module. The server has an API key configured, so the page's key
prompt is tested too; the other tests' pages hold the key as a user would after typing it once.

Screenshots of every view are taken on the way; they go to a temporary folder, or to the folder named
by PLAYGROUND_SCREENSHOTS (the README's come from `PLAYGROUND_SCREENSHOTS=docs/playground`).
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import REPO_ROOT, running_server
from PIL import Image

from app.settings import DefaultModels
from models.checkpoint import read_card

# Under CI (.ci/run sets AE_TESTS_REQUIRE_BROWSER=1) a missing browser fails these tests instead of skipping them.
REQUIRED = os.environ.get("AE_TESTS_REQUIRE_BROWSER") == "1"
try:
    import playwright.sync_api as sync_api
except ImportError:
    if REQUIRED:
        raise
    pytest.skip("Playwright is not installed (pip install playwright)", allow_module_level=True)
CHROMIUM = os.environ.get("AE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    reason = "no Chromium on this machine (apt-get install chromium); the browser tests need it"
    if REQUIRED:
        raise RuntimeError(f"{reason}, and AE_TESTS_REQUIRE_BROWSER=1 requires them")
    pytest.skip(reason, allow_module_level=True)

API_KEY = "playground-test-key"
KEY_STORAGE = "ae-playground-api-key"  # app/static/api.js
MAP_RANGE = 3.0  # the latent view's default range; the map shows half a manifold cell more (app/static/latent.js)
MAP_EXTENT = MAP_RANGE * (1 + 1 / 14)
TIMEOUT_MS = 60_000  # a busy 2-core CI machine; the first photo request also loads its model
RESOURCE_ERROR = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service on the shipped checkpoints; a link to them in a temporary folder, where the log goes."""
    checkpoints = tmp_path_factory.mktemp("shipped") / "checkpoints"
    checkpoints.symlink_to(REPO_ROOT / "checkpoints", target_is_directory=True)
    env = {"AE_API_KEYS": API_KEY, "AE_MAX_BODY_BYTES": str(10 * 1024 * 1024)}
    with running_server(checkpoints, DefaultModels().as_dict(), env) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI and these machines run as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        sync_api.expect.set_options(timeout=TIMEOUT_MS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("PLAYGROUND_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Console:
    """What the page reported as errors: console.error messages and uncaught exceptions."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))


def open_page(browser: Any, base_url: str, with_key: bool = True, **context_options: Any) -> tuple[Any, Console]:
    context = browser.new_context(**{"viewport": {"width": 1100, "height": 900}, **context_options})
    if with_key:  # as if typed into the page's prompt once (sessionStorage: this tab only)
        context.add_init_script(f"sessionStorage.setItem({KEY_STORAGE!r}, {API_KEY!r})")
    page = context.new_page()
    console = Console(page)
    page.goto(base_url + "/")
    return page, console


def screenshot(
    page: Any, path: Path, testid: str | None = None, max_height: int = 1000, full_top: bool = False
) -> None:
    """A screenshot of the screen, of the page's top or of one element (their top `max_height` pixels), as a
    palette PNG: small enough to commit, sharp enough to read."""
    clip = None
    if full_top:  # the page from its top, longer than the screen
        width = page.evaluate("document.documentElement.scrollWidth")
        clip = {"x": 0, "y": 0, "width": width, "height": min(max_height, page.evaluate("document.body.scrollHeight"))}
    if testid:
        box = page.get_by_test_id(testid).bounding_box()  # relative to the viewport; the clip is on the page
        scroll_x, scroll_y = page.evaluate("[window.scrollX, window.scrollY]")
        clip = {"x": box["x"] + scroll_x, "y": box["y"] + scroll_y, "width": box["width"]}
        clip["height"] = min(box["height"], max_height)
    page.screenshot(path=path, clip=clip, full_page=clip is not None)
    Image.open(path).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


def number(text: str) -> float:
    match = re.search(r"-?\d+(\.\d+)?", text)
    assert match, text
    return float(match.group())


def card_gain_floor() -> float:
    """The least PSNR gain the page may show for mnist-denoise: the smaller of its card's gains (+8 dB at
    sigma 0.25, +10 dB at 0.5; the page adds 0.4) less 1.5 dB, on one digit rather than the test set's mean."""
    levels = read_card(REPO_ROOT / "checkpoints" / "mnist-denoise").metrics["denoise"]["noise"].values()
    scores = [level["test_set"]["scores"] for level in levels]
    return min(s["model"]["psnr"] - s["noisy input"]["psnr"] for s in scores) - 1.5


def data_url_pixels(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("L"), dtype=np.int16)


def test_an_upload_is_denoised_as_uploaded_without_a_psnr(browser: Any, server: str, shots: Path) -> None:
    page, console = open_page(browser, server)
    expect = sync_api.expect
    output = page.get_by_test_id("denoise-output")
    expect(output).to_have_attribute("src", re.compile("^data:image/png"))  # the starting example, done
    expect(page.get_by_test_id("denoise-as-uploaded")).not_to_be_checked()  # an example is clean: noise is added
    expect(page.get_by_test_id("psnr-denoised")).to_contain_text("dB")
    first = output.get_attribute("src")
    noisy = REPO_ROOT / "docs/examples/noisy.png"
    page.get_by_test_id("upload-input").set_input_files(str(noisy))
    expect(page.get_by_test_id("input-caption")).to_contain_text("noisy.png")
    expect(page.get_by_test_id("denoise-as-uploaded")).to_be_checked()  # an upload: denoised as it came
    expect(output).not_to_have_attribute("src", first)
    expect(page.get_by_test_id("psnr-denoised")).to_contain_text("no clean reference")
    expect(page.get_by_test_id("psnr-noisy")).to_contain_text("no clean reference")
    expect(page.get_by_test_id("denoise-clean")).to_be_hidden()
    # What the page showed is the API's answer to the upload itself: no noise was added on the way.
    direct = httpx.post(
        f"{server}/v1/denoise?model=mnist-denoise",
        files={"image": ("noisy.png", noisy.read_bytes(), "image/png")},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert direct.status_code == 200
    shown = data_url_pixels(output.get_attribute("src"))
    expected = np.asarray(Image.open(io.BytesIO(direct.content)).convert("L"), dtype=np.int16)
    assert np.abs(shown - expected).max() <= 1
    screenshot(page, shots / "denoise.png")

    # Asked to, the page adds noise to the upload, which then is the clean reference: a PSNR, and a real gain.
    page.get_by_test_id("upload-input").set_input_files(str(REPO_ROOT / "docs/examples/digit.png"))
    expect(page.get_by_test_id("input-caption")).to_contain_text("digit.png")
    page.get_by_test_id("denoise-as-uploaded").uncheck()
    expect(page.get_by_test_id("psnr-denoised")).to_contain_text("dB")
    expect(page.get_by_test_id("latency-denoise")).to_contain_text(re.compile(r"POST /v1/denoise \d+ ms"))
    noisy_db = number(page.get_by_test_id("psnr-noisy").inner_text())
    denoised_db = number(page.get_by_test_id("psnr-denoised").inner_text())
    assert denoised_db - noisy_db >= card_gain_floor(), (noisy_db, denoised_db)
    expect(page.get_by_test_id("last-request")).to_contain_text("200")
    assert console.errors == []


def set_range(page: Any, testid: str, value: str) -> None:
    """Move a range input as a user would: its value, then the input and change events."""
    page.get_by_test_id(testid).evaluate(
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event('change')); }",
        value,
    )


def test_the_photo_view_opens_on_the_model_of_every_level_and_starts_the_slider_at_the_estimate(
    browser: Any, server: str, tmp_path: Path
) -> None:
    page, console = open_page(browser, server)
    expect = sync_api.expect
    page.get_by_test_id("tab-photo").click()
    expect(page.get_by_test_id("photo-model")).to_have_value("photo-denoise-color")  # before any picture
    colour = tmp_path / "colour-photo.png"  # the example photo, tinted: a colour picture
    example = np.asarray(Image.open(REPO_ROOT / "app/static/examples/photo.jpg").convert("RGB"), dtype=np.float64)
    Image.fromarray((example * np.array([1.0, 0.8, 0.55])).round().astype(np.uint8)).save(colour)
    page.get_by_test_id("photo-input").set_input_files(str(colour))
    used = page.get_by_test_id("photo-sigma-used")
    expect(used).to_contain_text("Estimated noise level σ =")
    expect(used).to_contain_text("photo-denoise-color")
    expect(page.get_by_test_id("photo-model")).to_have_value("photo-denoise-color")
    expect(used).not_to_contain_text("PSNR")  # nothing added, so no clean reference
    estimate = number(used.inner_text().split("σ =", 1)[1])
    level = page.get_by_test_id("photo-level-slider")
    expect(level).to_be_enabled()
    assert float(level.input_value()) == pytest.approx(estimate, abs=0.5)  # the slider starts at the estimate
    expect(page.get_by_test_id("photo-level-value")).to_contain_text("estimated")

    set_range(page, "photo-level-slider", "40")  # denoise harder: the level is sent
    expect(used).to_contain_text("Denoised at σ = 40.00 (chosen")

    gray = tmp_path / "gray-photo.png"  # a grayscale picture goes to the grayscale model of every level
    Image.open(REPO_ROOT / "app/static/examples/photo.jpg").convert("L").save(gray)
    page.get_by_test_id("photo-input").set_input_files(str(gray))
    expect(page.get_by_test_id("photo-model")).to_have_value("photo-denoise-gray")
    expect(used).to_contain_text("Estimated noise level σ =")
    expect(used).to_contain_text("photo-denoise-gray")

    set_range(page, "photo-noise-slider", "25")  # noise added in the page: a clean reference, so a PSNR
    page.get_by_test_id("run-photo").click()
    expect(used).to_contain_text("PSNR noisy")
    noisy_db, denoised_db = (number(part) for part in used.inner_text().split("PSNR noisy", 1)[1].split("→"))
    assert denoised_db > noisy_db
    assert console.errors == []


def test_a_drawn_digit_is_reconstructed_and_embedded(browser: Any, server: str, shots: Path) -> None:
    page, console = open_page(browser, server)
    expect = sync_api.expect
    page.get_by_test_id("tab-reconstruct").click()
    expect(page.get_by_test_id("anomaly-score")).to_have_text(re.compile(r"^\d"))  # the starting example
    box = page.get_by_test_id("draw-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.85, steps=12)
    page.mouse.up()  # a straight stroke: a "1"
    expect(page.get_by_test_id("input-caption")).to_contain_text("Drawn digit")
    expect(page.get_by_test_id("reconstruct-output")).to_have_attribute("src", re.compile("^data:image/png"))
    expect(page.get_by_test_id("reconstruct-heatmap")).to_have_attribute("src", re.compile("^data:image/png"))
    expect(page.get_by_test_id("anomaly-context")).to_contain_text("MNIST test set")
    assert number(page.get_by_test_id("anomaly-score").inner_text()) > 0
    screenshot(page, shots / "reconstruct.png", "view-reconstruct")

    page.get_by_test_id("tab-embeddings").click()
    expect(page.get_by_test_id("embedding-size")).to_have_text("32")  # mnist-ae's code
    assert page.get_by_test_id("embedding-chart").locator("rect").count() == 32
    expect(page.get_by_test_id("similarities").locator("li")).to_have_count(10)
    expect(page.get_by_test_id("nearest-digit")).to_contain_text(re.compile(r"^1 \(cosine"))
    screenshot(page, shots / "embeddings.png", "view-embeddings")
    assert console.errors == []


def test_a_click_on_the_latent_map_decodes_that_point(browser: Any, server: str, shots: Path) -> None:
    page, console = open_page(browser, server)
    expect = sync_api.expect
    page.get_by_test_id("tab-latent").click()
    expect(page.get_by_test_id("latent-count")).to_contain_text("5000 points")
    expect(page.get_by_test_id("latent-manifold")).to_have_attribute("src", re.compile("^blob:"))
    latent_map = page.get_by_test_id("latent-map")
    box = latent_map.bounding_box()
    latent_map.click(position={"x": box["width"] * 0.75, "y": box["height"] * 0.25})
    expect(page.get_by_test_id("latent-point")).to_have_text(re.compile(r"^\(-?\d"))
    z1, z2 = (float(v) for v in re.findall(r"-?\d+\.\d+", page.get_by_test_id("latent-point").inner_text()))
    # Three quarters right and a quarter down from the top: (+E/2, +E/2), to the click's rounding to pixels.
    assert z1 == pytest.approx(MAP_EXTENT / 2, abs=0.03) and z2 == pytest.approx(MAP_EXTENT / 2, abs=0.03)
    expect(page.get_by_test_id("latent-decoded")).to_have_attribute("src", re.compile("^data:image/png"))
    # Two points, and the path between them.
    page.get_by_test_id("click-set-a").check()
    latent_map.click(position={"x": box["width"] * 0.2, "y": box["height"] * 0.5})
    page.get_by_test_id("click-set-b").check()
    latent_map.click(position={"x": box["width"] * 0.8, "y": box["height"] * 0.6})
    expect(page.get_by_test_id("latent-b")).not_to_have_text("–")
    page.get_by_test_id("run-interpolate").click()
    expect(page.get_by_test_id("interpolation").locator("img")).to_have_count(8)
    page.get_by_test_id("latent-show-manifold").check()
    screenshot(page, shots / "latent-space.png", "view-latent")
    assert console.errors == []


def test_sampling_with_a_seed_twice_gives_the_same_picture(browser: Any, server: str, shots: Path) -> None:
    page, console = open_page(browser, server)
    expect = sync_api.expect
    page.get_by_test_id("tab-sample").click()
    samples = page.get_by_test_id("samples").locator("img")

    def sample(seed: str) -> list[str]:
        page.get_by_test_id("sample-seed").fill(seed)
        page.get_by_test_id("run-sample").click()
        expect(page.get_by_test_id("sample-seed-used")).to_have_text(seed)
        expect(samples).to_have_count(16)
        return [samples.nth(i).get_attribute("src") for i in range(16)]

    first = sample("42")
    other = sample("43")
    again = sample("42")
    assert again == first and other != first
    screenshot(page, shots / "sampling.png", "view-sample")
    assert console.errors == []


def test_sampling_a_chosen_digit_and_restyling_a_sample(browser: Any, server: str, shots: Path) -> None:
    page, console = open_page(browser, server)
    expect = sync_api.expect
    page.get_by_test_id("tab-sample").click()
    samples = page.get_by_test_id("samples").locator("img")
    expect(samples).to_have_count(16)  # the unconditional model, on opening the view
    page.get_by_test_id("sample-label").select_option("7")  # a digit: the conditional model is chosen for it
    expect(page.get_by_test_id("sample-model")).to_have_value("mnist-cvae")
    page.get_by_test_id("sample-n").fill("10")
    page.get_by_test_id("sample-seed").fill("5")
    page.get_by_test_id("run-sample").click()
    expect(samples).to_have_count(10)
    expect(samples.first).to_have_attribute("alt", "sample 1, a 7")
    sevens = [samples.nth(i).get_attribute("src") for i in range(10)]
    page.get_by_test_id("sample-label").select_option("each")
    page.get_by_test_id("run-sample").click()
    expect(samples.nth(9)).to_have_attribute("alt", "sample 10, a 9")
    assert samples.nth(7).get_attribute("src") == sevens[7]  # the same seed: the same latent, asked for a 7 again
    samples.nth(3).click()  # restyle the sample drawn as a 3
    restyled = page.get_by_test_id("restyled").locator("img")
    expect(restyled).to_have_count(10)
    expect(page.get_by_test_id("restyle-source")).to_have_text("3")
    expect(restyled.nth(3)).to_have_attribute("alt", "drawn as 3")
    answer = httpx.post(
        f"{server}/v1/vae/sample",
        json={"model": "mnist-cvae", "n": 10, "seed": 5, "label": list(range(10))},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()
    assert samples.nth(3).get_attribute("src") == f"data:image/png;base64,{answer['data'][3]['b64_png']}"
    page.get_by_test_id("sample-model").select_option("mnist-vae")  # no digits for an unconditional model
    expect(page.get_by_test_id("sample-label")).to_have_value("")
    screenshot(page, shots / "sampling-digits.png", "view-sample")
    assert console.errors == []


def test_an_invalid_upload_shows_the_apis_message(browser: Any, server: str) -> None:
    page, console = open_page(browser, server)
    expect = sync_api.expect
    expect(page.get_by_test_id("denoise-output")).to_have_attribute("src", re.compile("^data:image/png"))
    text = b"this is not an image"
    page.get_by_test_id("upload-input").set_input_files(
        files=[{"name": "not-an-image.png", "mimeType": "image/png", "buffer": text}]
    )
    direct = httpx.post(
        f"{server}/v1/denoise?model=mnist-denoise",
        files={"image": ("not-an-image.png", text, "image/png")},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert direct.status_code in (400, 415)
    error = page.get_by_test_id("error-denoise")
    expect(error).to_be_visible()
    expect(error).to_contain_text(direct.json()["error"]["message"])
    expect(error).to_contain_text(str(direct.status_code))
    # The browser logs the refused request itself; nothing else may go wrong.
    assert [message for message in console.errors if not RESOURCE_ERROR.search(message)] == []


def test_the_page_asks_for_the_key_and_keeps_it_for_the_tab_only(browser: Any, server: str) -> None:
    page, console = open_page(browser, server, with_key=False)
    expect = sync_api.expect
    dialog = page.get_by_test_id("api-key-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("needs an API key")  # the API's own message
    page.get_by_test_id("api-key-input").fill(API_KEY)
    page.get_by_test_id("api-key-save").click()
    expect(page.get_by_test_id("denoise-output")).to_have_attribute("src", re.compile("^data:image/png"))
    assert page.evaluate(f"sessionStorage.getItem({KEY_STORAGE!r})") == API_KEY
    assert page.evaluate(f"localStorage.getItem({KEY_STORAGE!r})") is None
    other_tab = page.context.new_page()  # sessionStorage is per tab: a new tab asks again
    other_tab.goto(server + "/")
    expect(other_tab.get_by_test_id("api-key-dialog")).to_be_visible()
    assert [message for message in console.errors if not RESOURCE_ERROR.search(message)] == []


def test_every_view_works_without_console_errors(browser: Any, server: str, shots: Path) -> None:
    page, console = open_page(browser, server)
    expect = sync_api.expect
    expect(page.get_by_test_id("denoise-output")).to_have_attribute("src", re.compile("^data:image/png"))

    page.get_by_test_id("tab-photo").click()
    page.get_by_test_id("photo-example").click()  # long work: busy, and it can be cancelled
    expect(page.get_by_test_id("busy-photo")).to_be_visible()
    page.get_by_test_id("cancel-photo").click()
    expect(page.get_by_test_id("latency-photo")).to_have_text("Cancelled.")
    expect(page.get_by_test_id("busy-photo")).to_be_hidden()
    assert page.get_by_test_id("photo-after").get_attribute("src") is None
    page.get_by_test_id("run-photo").click()
    expect(page.get_by_test_id("photo-after")).to_have_attribute("src", re.compile("^blob:"))
    expect(page.get_by_test_id("photo-sigma-used")).to_contain_text("Estimated noise level σ =")
    expect(page.get_by_test_id("photo-download")).to_have_attribute("href", re.compile("^blob:"))
    screenshot(page, shots / "photo.png", "view-photo")

    page.get_by_test_id("tab-super-resolve").click()
    page.get_by_test_id("sr-scale").select_option("mnist-sr-x4")
    expect(page.get_by_test_id("sr-low-size")).to_have_text("7×7")
    expect(page.get_by_test_id("psnr-sr")).to_contain_text("dB")
    model_psnr = number(page.get_by_test_id("psnr-sr").inner_text())
    assert model_psnr > number(page.get_by_test_id("psnr-bicubic").inner_text())
    screenshot(page, shots / "super-resolve.png", "view-super-resolve")

    page.get_by_test_id("tab-models").click()
    cards = sorted(path.parent.name for path in (REPO_ROOT / "checkpoints").glob("*/config.json"))
    expect(page.get_by_test_id("model-cards").locator("article")).to_have_count(len(cards))
    expect(page.get_by_test_id("model-card-mnist-ae")).to_contain_text("CC BY-SA 3.0")
    # The precision is the execution plan's: bfloat16 where the CPU runs it natively (the card's guard allows it).
    plan = re.compile(r"cpu, (float32|bfloat16), (channels-last|contiguous)")
    expect(page.get_by_test_id("model-card-mnist-ae")).to_contain_text(plan)
    expect(page.get_by_test_id("latency-models")).to_contain_text(re.compile(r"GET /v1/models \d+ ms"))
    screenshot(page, shots / "models.png", "view-models", max_height=700)
    assert console.errors == []

    # A phone: one column, nothing wider than the screen.
    phone_size = {"width": 390, "height": 844}
    phone, phone_console = open_page(browser, server, viewport=phone_size, is_mobile=True, has_touch=True)
    expect(phone.get_by_test_id("denoise-output")).to_have_attribute("src", re.compile("^data:image/png"))
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(phone, shots / "phone.png", max_height=1500, full_top=True)
    assert phone_console.errors == []
