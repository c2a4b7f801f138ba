"""What every architecture shares: a config dataclass and a name in the registry."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import nn

MNIST_IMAGE_SIZE = (28, 28)  # (height, width): the default of every size-bound architecture


def image_size_field() -> Any:
    """A config field `image_size: tuple[int, int]` = (height, width) of the images, 28x28 by default.

    It is added to the card only when it differs from 28x28 (see `Architecture.config_dict`).
    """
    return omitted_when_default(MNIST_IMAGE_SIZE)


def omitted_when_default(default: Any) -> Any:
    """A config field added after checkpoints were published: left out of the card while it holds `default`,
    so the cards (and weights) of those models stay exactly as they were."""
    return dataclasses.field(default=default, metadata={"omit_when_default": True})


def check_image_size(image_size: tuple[int, ...], multiple: int) -> None:
    """Refuse an image size the network cannot map back onto itself."""
    if len(image_size) != 2 or any(side < multiple or side % multiple for side in image_size):
        raise ValueError(f"image_size must be (height, width), both positive multiples of {multiple}, got {image_size}")


class ArchitectureError(ValueError):
    """An architecture name or its keyword arguments are not valid."""


class Architecture(nn.Module):
    """Base class of the registered autoencoders.

    A subclass sets `config_class` to its config dataclass and takes one instance of it.
    Images are float tensors shaped (batch, channels, height, width) with values in [0, 1].
    """

    config_class: ClassVar[type[Any]]
    name: ClassVar[str]
    # True where the task methods read grayscale (1 channel) and colour (3) alike, whatever the card's
    # channels: a grayscale picture is then served as one channel and comes back grayscale.
    reads_grayscale_and_colour: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> Architecture:
        """Build the model from the keyword arguments stored in a model card."""
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(set(kwargs) - fields)
        if unknown:
            raise ArchitectureError(f"{cls.name}: unknown config fields {unknown}; expected some of {sorted(fields)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        try:
            config = cls.config_class(**values)
        except (TypeError, ValueError) as exc:
            raise ArchitectureError(f"{cls.name}: invalid config: {exc}") from exc
        return cls(config)

    def config_dict(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this model (JSON-friendly).

        A field marked `omit_when_default` is left out while it holds its default: fields added after
        checkpoints were published then leave the cards of those models exactly as they were.
        """
        values: dict[str, Any] = {}
        for config_field in dataclasses.fields(self.config):
            value = getattr(self.config, config_field.name)
            if config_field.metadata.get("omit_when_default") and value == config_field.default:
                continue
            values[config_field.name] = list(value) if isinstance(value, tuple) else value
        return values
