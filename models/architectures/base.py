"""What every architecture shares: a config dataclass and a name in the registry."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import nn


class ArchitectureError(ValueError):
    """An architecture name or its keyword arguments are not valid."""


class Architecture(nn.Module):
    """Base class of the registered autoencoders.

    A subclass sets `config_class` to its config dataclass and takes one instance of it.
    Images are float tensors shaped (batch, channels, height, width) with values in [0, 1].
    """

    config_class: ClassVar[type[Any]]
    name: ClassVar[str]

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
        """The keyword arguments that rebuild this model (JSON-friendly)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.config).items()}
