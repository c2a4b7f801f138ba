"""Image codecs: bytes in any common format -> a grayscale or RGB image; arrays -> PNG bytes.

Decoding is deliberate about every step, because the models were trained on one kind of pixel:
- Formats: PNG, JPEG, WebP, BMP, TIFF and GIF only (Pillow tries no other decoder); for animated
  GIF/WebP and multi-page TIFF the first frame is used.
- The pixel count is checked from the header, before any pixel is decoded.
- EXIF orientation is applied, so a phone photo comes out the way it is shown.
- Modes are converted to L (grayscale) or RGB, whichever the model reads (or, for models that read
  both, L for a grayscale picture and RGB for the others, see `GRAYSCALE_MODES`):
  * L: as is. 1 (bilevel): 0 -> 0, 1 -> 255.
  * LA, RGBA, PA and P or L/RGB with a transparent colour: composited on **white**, the way browsers
    and viewers show transparency. A digit drawn as dark strokes on a transparent canvas therefore
    becomes dark on white, which the MNIST framing then inverts to MNIST's white-on-black.
  * I;16 (and its byte orders) and I: 16-bit values scaled to 8 bit (divided by 257, so 65535 -> 255);
    F: values in [0, 1] are scaled by 255, larger values are clipped to [0, 255].
  * CMYK, YCbCr, LAB, HSV: converted to RGB by Pillow first.
  * RGB -> L uses ITU-R 601-2 luma (L = 0.299 R + 0.587 G + 0.114 B), Pillow's conversion.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import InvalidImage, PayloadTooLarge
from app.imaging.png_reader import png_size, read_plain_png
from app.imaging.png_writer import SMALL_PIXELS, write_png

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
ALLOWED_CONTENT_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/jpg", "image/webp", "image/bmp", "image/x-ms-bmp", "image/tiff", "image/gif"}
)
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
TRANSPARENT_MODES = frozenset({"LA", "La", "RGBA", "RGBa", "PA"})
# Modes that hold no colour: with channels=None such a picture stays grayscale (composited on white, it still is).
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "F"}) | SIXTEEN_BIT_MODES

# Set once for the process, not per call: `warnings.catch_warnings` is not thread-safe and images are
# decoded in worker threads. Our own pixel cap replaces Pillow's decompression-bomb warning, and what
# Pillow says about a client's broken metadata (e.g. "Corrupt EXIF data") is not the service's to log.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


# Decoding or encoding this many pixels takes a few tens of microseconds: less than handing the work to
# a worker thread and back, so it runs on the event loop; anything larger goes to a thread.
INLINE_PIXELS = 64 * 64


def declared_pixels(data: bytes) -> int | None:
    """Width x height read from the image's header (no pixel is decoded), or None when unreadable."""
    size = png_size(data)  # a PNG states its size at a fixed place: no need for Pillow's plugin machinery
    if size is not None:
        return size[0] * size[1]
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            width, height = image.size
            return width * height
    except Exception:  # decode_image reports what is wrong with it
        return None


def decode_image(
    data: bytes, max_pixels: int, channels: int | None = 1, param: str = "image", output_scale: int = 1
) -> Image.Image:
    """Bytes -> an 'L' (channels=1) or 'RGB' (channels=3) image; channels=None: 'L' for a picture without
    colour (a mode of GRAYSCALE_MODES), 'RGB' for the others. See the module docstring for the rules.

    Raises InvalidImage (400) for bytes that are not an image of an allowed format, and
    PayloadTooLarge (413) for an image with more than `max_pixels` pixels, or, when the answer is the image
    upscaled `output_scale` times, one whose answer would have more than `max_pixels` pixels.
    """
    if not data:
        raise InvalidImage("the image is empty", param=param)
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        width, height = image.size  # from the header: nothing is decoded yet
        check_pixels(width, height, max_pixels, output_scale, param)
        if width < 1 or height < 1:
            raise InvalidImage(f"the image has no pixels ({width}x{height})", param=param)
        image.seek(0)  # first frame of an animation or the first page
        image.load()
        upright = ImageOps.exif_transpose(image) or image
        if channels is None:
            return _to_mode(upright, "L" if upright.mode in GRAYSCALE_MODES else "RGB")
        return _to_mode(upright, "L" if channels == 1 else "RGB")
    except (PayloadTooLarge, InvalidImage):
        raise
    except UnidentifiedImageError:
        raise InvalidImage(
            f"the data is not a readable image; supported formats: {', '.join(ALLOWED_FORMATS)}", param=param
        ) from None
    except Image.DecompressionBombError:  # Pillow's own, larger cap, hit while reading the header
        raise PayloadTooLarge(f"the image has more pixels than the limit of {max_pixels}", param=param) from None
    except Exception as exc:  # a truncated or corrupt file fails in the decoder with many error types
        raise InvalidImage(f"the image could not be decoded: {exc}", param=param) from None


def decode_pixels(
    data: bytes, max_pixels: int, channels: int | None = 1, param: str = "image", output_scale: int = 1
) -> np.ndarray:
    """`decode_image`, as (H, W) ('L') or (H, W, 3) ('RGB') uint8 pixels: the same pixels, the same errors.

    A plain PNG (app.imaging.png_reader: most small grayscale digits clients make) is read without Pillow,
    at about a third of the cost; its size is checked against the caps before a byte is inflated.
    """
    size = png_size(data)
    if size is not None:
        check_pixels(*size, max_pixels, output_scale, param)
        plain = read_plain_png(data)
        if plain is not None:
            if channels == 3 and plain.ndim == 2:
                return np.repeat(plain[:, :, None], 3, axis=2)  # what Pillow's L -> RGB does
            if channels == 1 and plain.ndim == 3:  # Pillow's rounding of ITU-R 601-2 luma, exactly
                return np.asarray(Image.fromarray(plain, mode="RGB").convert("L"))
            return plain
    return np.asarray(decode_image(data, max_pixels, channels, param, output_scale))


def sent_pixels(
    pixels: np.ndarray, max_pixels: int, channels: int | None = 1, param: str = "image", output_scale: int = 1
) -> np.ndarray:
    """(H, W, C) uint8 pixels (C = 1 or 3, as a tensor protocol sends them) -> (H, W) or (H, W, 3) pixels, by the
    rules of `decode_pixels` for channels and caps: what a PNG of the same pixels would give."""
    height, width, depth = pixels.shape
    check_pixels(width, height, max_pixels, output_scale, param)
    if width < 1 or height < 1:
        raise InvalidImage(f"the image has no pixels ({width}x{height})", param=param)
    if depth not in (1, 3):
        raise InvalidImage(f"images have 1 (grayscale) or 3 (RGB) channels; got {depth}", param=param)
    image = Image.fromarray(
        np.ascontiguousarray(pixels[:, :, 0] if depth == 1 else pixels), mode="L" if depth == 1 else "RGB"
    )
    wanted = image.mode if channels is None else ("L" if channels == 1 else "RGB")
    return np.asarray(image if image.mode == wanted else image.convert(wanted))


def check_pixels(width: int, height: int, max_pixels: int, output_scale: int, param: str) -> None:
    """PayloadTooLarge when the image, or its answer upscaled `output_scale` times, has more than `max_pixels`."""
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}", param=param
        )
    out_width, out_height = width * output_scale, height * output_scale
    if out_width * out_height > max_pixels:
        # The cap bounds what the service holds and sends back, and an upscaled answer is scale^2 larger.
        raise PayloadTooLarge(
            f"the image is {width}x{height}, and upscaled x{output_scale} the answer would be "
            f"{out_width}x{out_height} = {out_width * out_height} pixels; the limit of {max_pixels} pixels applies "
            f"to the answer, so send at most {max_pixels // (output_scale * output_scale)} pixels at x{output_scale}",
            param=param,
        )


def _to_mode(image: Image.Image, target: str) -> Image.Image:
    """Convert any Pillow mode to 'L' or 'RGB' following the documented rules."""
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or mode == "F":
        image = _to_eight_bit(image)
        mode = image.mode
    if mode == "P" or (mode in ("L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")  # palette or colour-key transparency -> an alpha channel
        mode = "RGBA"
    if mode in TRANSPARENT_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")
        mode = "RGB"
    if mode == "1":
        image = image.convert("L")
        mode = "L"
    if mode not in ("L", "RGB"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV
    return image if image.mode == target else image.convert(target)


def _to_eight_bit(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        scaled = values * 255.0 if values.size and values.max() <= 1.0 else values
    else:
        scaled = values / 257.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def image_to_array(image: Image.Image) -> np.ndarray:
    """'L' -> (H, W) or 'RGB' -> (H, W, 3) float32 in [0, 1]."""
    return np.asarray(image, dtype=np.float32) / 255.0


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) floats in [0, 1] -> (C, H, W) float32 tensor."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """(C, H, W) floats in [0, 1] (C = 1 or 3) -> an 'L' or 'RGB' image."""
    pixels = tensor_to_pixels(tensor)
    return Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB")


def tensor_to_pixels(tensor: torch.Tensor) -> np.ndarray:
    """(C, H, W) floats in [0, 1] (C = 1 or 3) -> (H, W) or (H, W, 3) uint8, rounded to the nearest level."""
    return tensors_to_pixels([tensor])[0]


def tensors_to_pixels(tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """`tensor_to_pixels` of each, converted in one go for images of one shape (a batch's answers): four
    tensor operations for the batch instead of four per image."""
    if not tensors:
        return []
    if any(tensor.shape != tensors[0].shape for tensor in tensors):
        return [pixels for tensor in tensors for pixels in tensors_to_pixels([tensor])]
    stack = torch.stack([tensor.detach() for tensor in tensors]) if len(tensors) > 1 else tensors[0].detach()[None]
    levels = (stack.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu()  # (N, C, H, W)
    if levels.shape[1] == 1:
        return list(levels[:, 0].numpy())
    return list(levels.permute(0, 2, 3, 1).contiguous().numpy())


def encode_png(image: Image.Image | np.ndarray) -> bytes:
    """An image, or its (H, W) / (H, W, 3) uint8 pixels -> PNG bytes: small ones by `app.imaging.png_writer`
    (a few times faster), larger ones by Pillow (smaller files, see that module)."""
    if isinstance(image, np.ndarray):
        if image.shape[0] * image.shape[1] <= SMALL_PIXELS:
            return write_png(image)
        image = Image.fromarray(image, mode="L" if image.ndim == 2 else "RGB")
    elif image.mode in ("L", "RGB") and image.width * image.height <= SMALL_PIXELS:
        return write_png(np.asarray(image))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def grid_columns(count: int) -> int:
    """Columns of the most nearly square grid that holds `count` tiles."""
    return max(1, math.ceil(math.sqrt(count)))


def tile_grid(tensors: Sequence[torch.Tensor] | torch.Tensor, columns: int) -> torch.Tensor:
    """(N, C, H, W) -> one (C, rows * H, columns * W) image, row-major, empty cells black."""
    stack = torch.stack(list(tensors)) if not isinstance(tensors, torch.Tensor) else tensors
    count, channels, height, width = stack.shape
    rows = math.ceil(count / columns)
    grid = torch.zeros((channels, rows * height, columns * width), dtype=stack.dtype)
    for index in range(count):
        row, column = divmod(index, columns)
        grid[:, row * height : (row + 1) * height, column * width : (column + 1) * width] = stack[index]
    return grid
