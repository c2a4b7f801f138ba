"""Natural images and the image-restoration literature's measurement protocols.

- Reading a folder of PNG/BMP images (grayscale or RGB) as uint8 arrays, in file-name order.
- RGB <-> YCbCr as ITU-R BT.601 with studio swing (Y in 16..235, Cb/Cr in 16..240), the convention of
  MATLAB's `rgb2ycbcr`, which the published super-resolution figures use.
- `modcrop` and bicubic resizing. The bicubic is Pillow's (`Image.resize(..., BICUBIC)` on float32 'F'
  images): a = -0.5 like MATLAB's `imresize`, and when shrinking the kernel is widened by the factor
  (antialiasing), like MATLAB's. torch's bicubic uses a = -0.75, which gives other baseline figures.
- PSNR on the Y channel, both images quantised to 0..255 integers, `scale` pixels cropped at each border
  (the SRCNN evaluation code), and the AWGN denoising protocol of the DnCNN code: noise seed 0,
  noisy input not clipped, output rounded to uint8, no border cropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".png", ".bmp")

# BT.601 studio swing for R, G, B in [0, 1]: rows Y, Cb, Cr; offsets in 0..255 levels (MATLAB rgb2ycbcr).
_YCBCR_MATRIX = torch.tensor(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    dtype=torch.float64,
)
_YCBCR_OFFSET = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64)


@dataclass(frozen=True)
class NamedImage:
    name: str  # the file name
    pixels: np.ndarray  # uint8, (H, W) grayscale or (H, W, 3) RGB


def load_images(folder: Path) -> list[NamedImage]:
    """Every PNG/BMP directly in `folder`, sorted by file name, as stored (grayscale stays grayscale)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of images")
    paths = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{folder}: no {'/'.join(IMAGE_SUFFIXES)} images")
    images = []
    for path in paths:
        with Image.open(path) as image:
            mode = "L" if image.mode in ("L", "I;16", "I", "1", "P") and _is_grey(image) else "RGB"
            images.append(NamedImage(path.name, np.asarray(image.convert(mode), dtype=np.uint8)))
    return images


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_pictures(folder: Path, channels: int) -> list[np.ndarray]:
    """Every picture in `folder` (PNG, JPEG, BMP, TIFF), in file-name order, converted to grayscale (1) or
    RGB (3): uint8 (H, W) or (H, W, 3). The photo denoisers' training and test sets are read this way."""
    paths = sorted(path for path in Path(folder).iterdir() if path.suffix.lower() in PICTURE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{folder}: no {'/'.join(PICTURE_SUFFIXES)} pictures")
    mode = "L" if channels == 1 else "RGB"
    pictures = []
    for path in paths:
        with Image.open(path) as image:
            pictures.append(np.asarray(image.convert(mode), dtype=np.uint8))
    return pictures


def _is_grey(image: Image.Image) -> bool:
    if image.mode != "P":
        return True
    rgb = np.asarray(image.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3) -> float32 (1, C, H, W) in [0, 1]."""
    array = torch.from_numpy(np.array(pixels, dtype=np.uint8)).float() / 255.0
    return array[None, None] if array.dim() == 2 else array.permute(2, 0, 1)[None]


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) YCbCr in [0, 1] (Y = 16/255..235/255 for black..white)."""
    matrix = _YCBCR_MATRIX.to(rgb.device)
    ycbcr = torch.einsum("ij,bjhw->bihw", matrix, rgb.double()) + _YCBCR_OFFSET.to(rgb.device).view(1, 3, 1, 1)
    return (ycbcr / 255.0).to(rgb.dtype)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """The inverse of `rgb_to_ycbcr` (not clipped): (B, 3, H, W) -> (B, 3, H, W)."""
    inverse = torch.linalg.inv(_YCBCR_MATRIX).to(ycbcr.device)
    levels = ycbcr.double() * 255.0 - _YCBCR_OFFSET.to(ycbcr.device).view(1, 3, 1, 1)
    return torch.einsum("ij,bjhw->bihw", inverse, levels).to(ycbcr.dtype)


def luminance(pixels: np.ndarray) -> torch.Tensor:
    """uint8 image -> its Y channel as float32 (1, 1, H, W) in [0, 1]; a grayscale image is its own Y."""
    image = to_tensor(pixels)
    return image if image.shape[1] == 1 else rgb_to_ycbcr(image)[:, :1]


def modcrop(pixels: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom and right edges so that height and width are multiples of `scale`."""
    height, width = pixels.shape[0] - pixels.shape[0] % scale, pixels.shape[1] - pixels.shape[1] % scale
    return pixels[:height, :width]


def bicubic_resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow's bicubic (a = -0.5, antialiased when shrinking) on each channel of (B, C, H, W) float images,
    in float32 without clipping or rounding -> (B, C, height, width)."""
    planes = images.detach().float().cpu().numpy()
    out = np.empty((*planes.shape[:2], height, width), dtype=np.float32)
    for index in np.ndindex(*planes.shape[:2]):
        plane = Image.fromarray(planes[index], mode="F")
        out[index] = np.asarray(plane.resize((width, height), Image.Resampling.BICUBIC))
    return torch.from_numpy(out).to(images.device)


def bicubic_downscale(images: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, C, H, W) with H, W multiples of `scale` -> (B, C, H / scale, W / scale), the SR degradation."""
    height, width = images.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"modcrop first: {height}x{width} is not a multiple of {scale}")
    return bicubic_resize(images, height // scale, width // scale)


def bicubic_upscale(images: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, h * scale, w * scale), the bicubic baseline of super-resolution."""
    return bicubic_resize(images, images.shape[-2] * scale, images.shape[-1] * scale)


def quantise(images: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to the 256 levels of uint8 (still float, in [0, 1])."""
    return torch.round(images.clamp(0.0, 1.0) * 255.0) / 255.0


def psnr_255(image: torch.Tensor, reference: torch.Tensor, border: int = 0) -> float:
    """PSNR in dB of one image against its reference, both in [0, 1], on the 0..255 scale, after cropping
    `border` pixels at each edge: 10 log10(255^2 / MSE)."""
    if image.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(image.shape)} vs {tuple(reference.shape)}")
    if border:
        image, reference = image[..., border:-border, border:-border], reference[..., border:-border, border:-border]
    error = ((image.double() - reference.double()) * 255.0).pow(2).mean().item()
    return float("inf") if error == 0 else 10.0 * np.log10(255.0**2 / error)


def psnr_y(output_y: torch.Tensor, reference_y: torch.Tensor, scale: int) -> float:
    """The super-resolution figure: Y channels quantised to uint8 levels, `scale` pixels cropped at each border."""
    return psnr_255(quantise(output_y), quantise(reference_y), border=scale)


def colour_psnr_y(output_rgb: torch.Tensor, reference_rgb: torch.Tensor, scale: int) -> float:
    """`psnr_y` of an RGB output (quantised to uint8 levels first, as it would be saved) against an RGB reference."""
    output_y, reference_y = rgb_to_ycbcr(quantise(output_rgb))[:, :1], rgb_to_ycbcr(reference_rgb)[:, :1]
    return psnr_y(output_y, reference_y, scale)


def awgn(clean: torch.Tensor, sigma_255: float, generator: torch.Generator) -> torch.Tensor:
    """noisy = clean + (sigma / 255) * N(0, 1), not clipped; the caller's generator fixes the draw."""
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float64).to(clean.dtype)
    return clean + (sigma_255 / 255.0) * noise


def noise_generator(seed: int = 0) -> torch.Generator:
    """One generator per (data set, sigma) run, seeded once and drawn from image after image in name order
    (as `randn('seed', 0)` before the loop in the DnCNN test code)."""
    return torch.Generator().manual_seed(seed)
