"""models.data.image_folder: a folder of one's own images -> one (N, C, H, W) tensor, by the documented rules."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.imaging.codecs import decode_image, image_to_array
from models.data.image_folder import (
    ImageFolderError,
    find_image_files,
    hold_out,
    load_image_folder,
    parse_size,
)

SIZE = 16  # side of the generated images


def pattern(seed: int, channels: int = 3, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    """A random uint8 image, (H, W, 3) or (H, W)."""
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if channels == 3 else size
    return rng.integers(0, 256, shape, dtype=np.uint8)


def make_folder(root: Path) -> dict[str, np.ndarray]:
    """Every format, nested folders, grayscale and RGB, transparency, 16-bit, plus files to skip or ignore.

    Returns the lossless files' pixels by relative path.
    """
    (root / "colour" / "deeper").mkdir(parents=True)
    (root / "grey").mkdir()
    (root / ".cache").mkdir()
    lossless = {
        "colour/a.png": pattern(1),
        "colour/deeper/b.bmp": pattern(2),
        "colour/deeper/c.tiff": pattern(3),
        "grey/d.png": pattern(4, channels=1),
        "grey/e.webp": pattern(5, channels=1),
    }
    for name, pixels in lossless.items():
        Image.fromarray(pixels).save(root / name, lossless=True)  # WebP needs asking; the others ignore it
    Image.fromarray(pattern(6)).save(root / "colour" / "f.JPG", format="JPEG", quality=90)
    Image.fromarray(pattern(7, channels=1)).save(root / "grey" / "g.jpeg", quality=90)
    Image.fromarray(pattern(8)).convert("P").save(root / "colour" / "h.gif")
    rgba = np.dstack([pattern(9), pattern(10, channels=1)])
    Image.fromarray(rgba).save(root / "colour" / "i_transparent.png")
    sixteen = (pattern(11, channels=1).astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(sixteen).save(root / "grey" / "j_16bit.png")
    (root / "grey" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (root / "notes.txt").write_text("not an image")
    Image.fromarray(pattern(12)).save(root / ".cache" / "hidden.png")
    Image.fromarray(pattern(13)).save(root / ".hidden.png")
    return lossless


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "my-images"
    return root, make_folder(root)


def relative(paths: list[Path], root: Path) -> list[str]:
    return [path.relative_to(root).as_posix() for path in paths]


def test_files_are_found_recursively_in_sorted_order_skipping_hidden_and_other_files(
    folder: tuple[Path, dict[str, np.ndarray]],
) -> None:
    root, _ = folder
    assert relative(find_image_files(root), root) == [
        "colour/a.png",
        "colour/deeper/b.bmp",
        "colour/deeper/c.tiff",
        "colour/f.JPG",
        "colour/h.gif",
        "colour/i_transparent.png",
        "grey/broken.png",
        "grey/d.png",
        "grey/e.webp",
        "grey/g.jpeg",
        "grey/j_16bit.png",
    ]


def test_a_corrupt_file_is_skipped_with_its_path_and_reason(folder: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = folder
    loaded = load_image_folder(root)
    assert [skipped.path.as_posix() for skipped in loaded.skipped] == ["grey/broken.png"]
    assert "not a readable image" in loaded.skipped[0].reason
    assert str(root) not in loaded.skipped[0].reason  # the card lists reasons: no absolute paths
    assert len(loaded.files) == 10 and "grey/broken.png" not in [path.as_posix() for path in loaded.files]
    assert loaded.describe()["skipped"] == [f"grey/broken.png: {loaded.skipped[0].reason}"]
    assert loaded.describe()["images_dir"] == "my-images"


def test_colour_is_detected_and_lossless_pixels_arrive_exactly(folder: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, lossless = folder
    loaded = load_image_folder(root)
    assert loaded.images.shape == (10, 3, SIZE, SIZE) and loaded.images.dtype == torch.float32
    assert loaded.channels == 3 and loaded.channels_rule.startswith("RGB: detected")
    index = {path.as_posix(): i for i, path in enumerate(loaded.files)}
    for name, pixels in lossless.items():
        expected = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)  # grey -> R = G = B
        actual = (loaded.images[index[name]].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(actual, expected, err_msg=name)


def test_a_folder_without_colour_is_grayscale_and_channels_can_be_forced(tmp_path: Path) -> None:
    for index in range(3):
        Image.fromarray(pattern(index)).convert("L").convert("RGB").save(tmp_path / f"{index}.png")  # RGB files, grey
    detected = load_image_folder(tmp_path)
    assert (
        detected.images.shape == (3, 1, SIZE, SIZE)
        and detected.channels_rule == "grayscale: detected, no image has colour"
    )
    forced = load_image_folder(tmp_path, channels=3)
    assert forced.images.shape == (3, 3, SIZE, SIZE)
    torch.testing.assert_close(forced.images, detected.images.expand(-1, 3, -1, -1))


@pytest.mark.parametrize("channels", [1, 3])
def test_decoding_matches_what_the_service_is_sent(folder: tuple[Path, dict[str, np.ndarray]], channels: int) -> None:
    """Transparency, palettes, 16-bit and colour-to-grey follow the service's decoder (app.imaging.codecs) exactly."""
    root, _ = folder
    loaded = load_image_folder(root, channels=channels)
    for index, path in enumerate(loaded.files):
        served = image_to_array(decode_image((root / path).read_bytes(), 10**6, channels))  # (H, W[, 3])
        served_chw = served[None] if served.ndim == 2 else served.transpose(2, 0, 1)
        np.testing.assert_array_equal(loaded.images[index].numpy(), served_chw, err_msg=str(path))


def test_mixed_sizes_are_refused_naming_the_sizes_unless_a_size_is_given(tmp_path: Path) -> None:
    for index in range(3):
        Image.fromarray(pattern(index, size=(16, 16))).save(tmp_path / f"small{index}.png")
    Image.fromarray(pattern(9, size=(30, 40))).save(tmp_path / "wide.png")  # 40 wide, 30 high
    with pytest.raises(ImageFolderError) as refused:
        load_image_folder(tmp_path)
    message = str(refused.value)
    assert "16x16 (3 images" in message and "40x30 (1 images, e.g. wide.png)" in message and "--size" in message

    resized = load_image_folder(tmp_path, size=parse_size("24x20"))  # 24 wide, 20 high
    assert resized.images.shape == (4, 3, 20, 24)
    assert resized.size == (20, 24) and resized.size_rule.startswith("24x20: every image scaled to cover it")


def test_resizing_keeps_the_aspect_ratio_by_centre_cropping(tmp_path: Path) -> None:
    picture = np.zeros((20, 40), dtype=np.uint8)  # 40 wide: a white centre square, black bands left and right
    picture[:, 10:30] = 255
    Image.fromarray(picture).save(tmp_path / "wide.png")
    Image.fromarray(picture).save(tmp_path / "wide-copy.png")
    loaded = load_image_folder(tmp_path, size=(10, 10))
    assert loaded.images.shape == (2, 1, 10, 10)
    assert float(loaded.images.min()) > 0.8  # the crop is the white centre; stretching would show black bands


def test_too_few_readable_images_are_refused(tmp_path: Path) -> None:
    Image.fromarray(pattern(1)).save(tmp_path / "only.png")
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(ImageFolderError, match=r"found 1 readable images.*\n  bad.jpg: not a readable image"):
        load_image_folder(tmp_path)
    with pytest.raises(ImageFolderError, match="not a folder"):
        load_image_folder(tmp_path / "missing")


def test_an_image_over_the_pixel_cap_is_skipped(tmp_path: Path) -> None:
    for index in range(2):
        Image.fromarray(pattern(index)).save(tmp_path / f"{index}.png")
    Image.fromarray(pattern(5, size=(64, 64))).save(tmp_path / "huge.png")
    loaded = load_image_folder(tmp_path, max_pixels=SIZE * SIZE)
    assert [skipped.path.name for skipped in loaded.skipped] == ["huge.png"]
    assert "more than 256 pixels" in loaded.skipped[0].reason


@pytest.mark.parametrize(("text", "size"), [("32", (32, 32)), ("64x48", (48, 64)), ("7X9", (9, 7))])
def test_parse_size(text: str, size: tuple[int, int]) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "x", "0", "32x", "3.5", "-4", "1x2x3", "big"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_hold_out_is_a_seeded_disjoint_split() -> None:
    train, held = hold_out(50, 0.1, seed=3)
    assert len(held) == 5 and len(train) == 45
    assert sorted(torch.cat([train, held]).tolist()) == list(range(50))
    again_train, again_held = hold_out(50, 0.1, seed=3)
    assert torch.equal(train, again_train) and torch.equal(held, again_held)
    assert not torch.equal(held, hold_out(50, 0.1, seed=4)[1])
    assert held.tolist() != list(range(45, 50))  # drawn at random, not the last files
    assert len(hold_out(3, 0.1, seed=0)[1]) == 1  # at least one image is held out
    assert len(hold_out(2, 0.9, seed=0)[0]) == 1  # and at least one is trained on
    with pytest.raises(ValueError):
        hold_out(1, 0.1, seed=0)


def test_an_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((SIZE, SIZE), value, dtype=np.uint8)) for value in (200, 30)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    (tmp_path / "anim.gif").write_bytes(buffer.getvalue())
    Image.fromarray(np.full((SIZE, SIZE), 10, dtype=np.uint8)).save(tmp_path / "still.png")
    loaded = load_image_folder(tmp_path)
    assert loaded.files[0].name == "anim.gif"
    assert float(loaded.images[0].mean()) == pytest.approx(200 / 255, abs=1e-6)


def test_the_card_names_the_folder_also_when_it_is_given_as_dot(
    folder: tuple[Path, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = folder
    monkeypatch.chdir(root)
    assert load_image_folder(Path(".")).describe()["images_dir"] == "my-images"
