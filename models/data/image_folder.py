"""A folder of one's own images as training data: find the files, decode them, one size, one mode, a split.

The rules (docs/deployment.md, "Add your own model", says the same to users):
- Files: every file under the folder, in sub-folders too, whose suffix is one of `IMAGE_SUFFIXES`
  (any case), in sorted path order; hidden files and folders (".name") and other files are ignored.
- Decoding is the service's (app/imaging/codecs.py), so a model is trained on the pixels it will be sent:
  PNG, JPEG, WebP, BMP, TIFF and GIF only, first frame, EXIF orientation applied, transparency
  composited on white, 16-bit values scaled to 8 bits, other modes converted by Pillow.
- A file that cannot be decoded (corrupt, truncated, not really an image, too many pixels) is skipped
  and reported with its path and the reason; the model card lists the skipped files. A folder where
  nothing decodes, or fewer than two images, is refused.
- Channels: 1 (grayscale) or 3 (RGB) when asked for; otherwise 3 if any image has a pixel whose red,
  green and blue differ, else 1. Colour images are made grayscale with ITU-R 601-2 luma, as the service does.
- Size: when asked for (height, width), every image is scaled to cover that size and centre-cropped
  (bicubic, antialiased when shrinking; the aspect ratio is kept). Otherwise every image must already
  have one size: mixed sizes are refused with a count of each, rather than guessed at.
- Hold-out: `hold_out` draws a seeded random share of the images (at least one) for model selection and
  the metrics in the model card; the rest are for training.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
PILLOW_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")  # the service's list: no other decoder is tried
MAX_PIXELS = 50_000_000  # per image, checked from the header before decoding (a decompression-bomb guard)
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
TRANSPARENT_MODES = frozenset({"LA", "La", "RGBA", "RGBa", "PA"})
RESIZE_FILTER = Image.Resampling.BICUBIC


class ImageFolderError(ValueError):
    """The folder cannot be used as training data; the message says why and what to do."""


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str


@dataclass
class ImageFolder:
    root: Path
    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    files: list[Path]  # the N decoded files, relative to `root`, in the order of `images`
    skipped: list[SkippedFile]  # files with an image suffix that could not be decoded
    channels_rule: str  # how the channel count was chosen, in words
    size_rule: str  # how the size was chosen, in words

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of every image."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def describe(self, max_listed: int = 20) -> dict[str, Any]:
        """JSON-friendly description for the model card (paths relative to the folder)."""
        return {
            "images_dir": self.root.resolve().name,  # the folder's own name, also when given as "."
            "images": len(self.files),
            "channels": self.channels_rule,
            "size": self.size_rule,
            "skipped_files": len(self.skipped),
            "skipped": [f"{skipped.path}: {skipped.reason}" for skipped in self.skipped[:max_listed]],
        }


def parse_size(text: str) -> tuple[int, int]:
    """'32' -> (32, 32); '64x48' (WIDTHxHEIGHT, as image sizes are written) -> (48, 64) = (height, width)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(part.strip().isdigit() for part in parts):
        raise ValueError(f"a size is N or WIDTHxHEIGHT, e.g. 32 or 64x48; got {text!r}")
    width, height = (int(parts[0]), int(parts[-1]))
    if width < 1 or height < 1:
        raise ValueError(f"a size must be positive, got {text!r}")
    return height, width


def format_size(size: tuple[int, int]) -> str:
    """(height, width) -> 'WIDTHxHEIGHT'."""
    return f"{size[1]}x{size[0]}"


def find_image_files(root: Path) -> list[Path]:
    """Every file under `root` with an image suffix, skipping hidden entries, in sorted path order."""
    if not root.is_dir():
        raise ImageFolderError(f"{root}: not a folder")
    files = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            files.append(path)
    return sorted(files)


def normalise_mode(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 'L' or 'RGB', by the service's rules (app/imaging/codecs.py, `_to_mode`)."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            values = values * 255.0 if values.size and values.max() <= 1.0 else values
        else:
            values = values / 257.0  # 65535 -> 255
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" or (image.mode in ("L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")  # palette or colour-key transparency -> an alpha channel
    if image.mode in TRANSPARENT_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")  # transparency shown on white
    if image.mode == "1":
        image = image.convert("L")
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV
    return image


def decode_file(path: Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """One file -> an upright 'L' or 'RGB' image. Raises ValueError with the reason."""
    try:
        with Image.open(path, formats=PILLOW_FORMATS) as opened:
            width, height = opened.size  # from the header: nothing is decoded yet
            if width * height > max_pixels:
                raise ValueError(f"{width}x{height} is more than {max_pixels} pixels")
            opened.seek(0)  # the first frame of an animation or the first page
            opened.load()
            upright = ImageOps.exif_transpose(opened) or opened
            return normalise_mode(upright)
    except ValueError:
        raise
    except Exception as exc:  # Pillow fails on broken files with many error types (OSError, SyntaxError, ...)
        detail = str(exc).replace(str(path), path.name)  # the card lists reasons: no absolute paths in them
        raise ValueError(f"not a readable image ({type(exc).__name__}: {detail})") from None


def has_colour(image: Image.Image) -> bool:
    if image.mode != "RGB":
        return False
    pixels = np.asarray(image)  # (H, W, 3) uint8
    return bool((pixels[..., 0] != pixels[..., 1]).any() or (pixels[..., 1] != pixels[..., 2]).any())


def choose_size(images: list[Image.Image], files: list[Path], root: Path) -> tuple[int, int]:
    """The one size all images share, as (height, width); mixed sizes are refused."""
    sizes = Counter((image.height, image.width) for image in images)
    if len(sizes) == 1:
        return next(iter(sizes))
    examples: dict[tuple[int, int], Path] = {}
    for image, path in zip(images, files, strict=True):
        examples.setdefault((image.height, image.width), path.relative_to(root))
    listed = ", ".join(
        f"{format_size(size)} ({count} images, e.g. {examples[size]})" for size, count in sizes.most_common(5)
    )
    raise ImageFolderError(
        f"{root}: the images have {len(sizes)} different sizes: {listed}; "
        "pass --size (e.g. --size 32 or --size 64x48) to resize them all"
    )


def load_image_folder(
    root: Path, channels: int | None = None, size: tuple[int, int] | None = None, max_pixels: int = MAX_PIXELS
) -> ImageFolder:
    """Decode every image under `root` into one (N, C, H, W) tensor, following the rules above.

    `channels`: 1, 3 or None (detected); `size`: (height, width) to resize to, or None (must be uniform).
    """
    root = Path(root)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels}")
    decoded: list[Image.Image] = []
    files: list[Path] = []
    skipped: list[SkippedFile] = []
    for path in find_image_files(root):
        try:
            image = decode_file(path, max_pixels)
        except ValueError as exc:
            skipped.append(SkippedFile(path.relative_to(root), str(exc)))
            continue
        if size is not None:
            image = ImageOps.fit(image, (size[1], size[0]), method=RESIZE_FILTER)  # Pillow sizes are (w, h)
        decoded.append(image)
        files.append(path)
    if len(decoded) < 2:
        reasons = "".join(f"\n  {item.path}: {item.reason}" for item in skipped[:10])
        raise ImageFolderError(
            f"{root}: found {len(decoded)} readable images (suffixes {', '.join(sorted(IMAGE_SUFFIXES))}); "
            f"at least 2 are needed, one to hold out{reasons}"
        )
    if size is None:
        size = choose_size(decoded, files, root)
        size_rule = f"{format_size(size)}: the size of every image (none resized)"
    else:
        size_rule = f"{format_size(size)}: every image scaled to cover it and centre-cropped (bicubic)"
    if channels is None:
        coloured = sum(has_colour(image) for image in decoded)
        channels = 3 if coloured else 1
        channels_rule = (
            f"RGB: detected, {coloured} of {len(decoded)} images have colour"
            if coloured
            else "grayscale: detected, no image has colour"
        )
    else:
        channels_rule = f"{'RGB' if channels == 3 else 'grayscale'}: asked for"
    mode = "RGB" if channels == 3 else "L"
    arrays = [np.asarray(image.convert(mode), dtype=np.float32) / 255.0 for image in decoded]  # (H, W[, 3])
    stacked = torch.from_numpy(np.stack(arrays))  # (N, H, W) or (N, H, W, 3)
    images = stacked.unsqueeze(1) if channels == 1 else stacked.permute(0, 3, 1, 2).contiguous()
    return ImageFolder(
        root=root,
        images=images,
        files=[path.relative_to(root) for path in files],
        skipped=skipped,
        channels_rule=channels_rule,
        size_rule=size_rule,
    )


def hold_out(count: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, held out) of `count` images: a seeded random `fraction` (at least 1) is held out."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    if count < 2:
        raise ValueError(f"at least 2 images are needed to hold one out, got {count}")
    held = min(count - 1, max(1, round(count * fraction)))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[held:].sort().values, order[:held].sort().values
