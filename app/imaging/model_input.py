"""From a decoded picture to the tensor a model reads, following the model card's input spec.

- MNIST-domain models (28x28): a 28x28 picture is taken as it is, pixel for pixel, so outputs line up
  with inputs. Any other size is brought into the MNIST frame (`app.imaging.mnist_frame`) and marked
  `mnist-frame`; with `preprocess=none` another size is refused with a 400 naming the expected size.
- Super-resolution models take exactly their trained input size (14x14 for x2, 7x7 for x4): framing a
  picture down to 7x7 would throw away what the model is meant to restore, so other sizes get a 400.
- Other fixed-size models take exactly their size; any-size models take the picture as it is. Models of
  photographs (domain "natural") are never framed: they take any size up to the pixel cap.
- Channels (`models.runtime.tasks.model_takes`): what the card says (a grayscale picture is repeated into RGB
  for a 3-channel model), except for architectures that read 1 or 3 channels alike
  (`reads_grayscale_and_colour`: DnCNN denoises colour channel by channel, FSRCNN upscales the luminance):
  they get the picture's own channels, so a grayscale picture costs a third of the work and comes back
  grayscale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

from app.errors import InvalidRequest
from app.imaging.codecs import array_to_tensor
from app.imaging.mnist_frame import FRAME_SIZE, to_mnist_frame
from models.checkpoint import ModelCard
from models.runtime.tasks import Task, expected_input_size

Preprocess = Literal["auto", "none"]
Preprocessing = Literal["none", "mnist-frame"]


@dataclass
class PreparedImage:
    tensor: torch.Tensor  # (C, H, W) float32 in [0, 1]
    preprocessing: Preprocessing


def prepare(pixels: np.ndarray, card: ModelCard, task: Task, preprocess: Preprocess, param: str) -> PreparedImage:
    """A decoded picture, (H, W) or (H, W, 3) uint8 pixels (app.imaging.codecs.decode_pixels) -> the model's
    input, or InvalidRequest naming the expected size."""
    size = expected_input_size(card, task)
    height, width = pixels.shape[:2]
    if size is None or (height, width) == size:
        return PreparedImage(pixels_to_tensor(pixels), "none")
    can_frame = card.input.domain == "mnist" and task.input_kind == "images" and size == (FRAME_SIZE, FRAME_SIZE)
    if can_frame and preprocess == "auto":
        gray = pixels if pixels.ndim == 2 else np.asarray(Image.fromarray(pixels, mode="RGB").convert("L"))
        return PreparedImage(array_to_tensor(to_mnist_frame(gray.astype(np.float32) / 255.0)), "mnist-frame")
    expected = f"{size[1]}x{size[0]}"
    hint = "" if not can_frame else "; send it with preprocess=auto to bring it into the MNIST frame"
    raise InvalidRequest(
        f"model {card.name!r} takes {expected} images for {task.card_task}; got {width}x{height}{hint}", param=param
    )


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) uint8 -> (C, H, W) float32 in [0, 1] (the same values as `image_to_array`)."""
    # Pillow's arrays are read-only, which torch warns about; the bytes are copied by .float() below anyway.
    levels = torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy())
    levels = levels.unsqueeze(0) if levels.dim() == 2 else levels.permute(2, 0, 1)
    return levels.float().div_(255.0).contiguous()
