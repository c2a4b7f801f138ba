"""The architecture registry: a name in a model card -> the class that builds it."""

from __future__ import annotations

from typing import Any

from models.architectures.base import Architecture, ArchitectureError
from models.architectures.classifier import DigitClassifier, DigitClassifierConfig
from models.architectures.conditional_vae import ConditionalConvVAE, ConditionalConvVAEConfig
from models.architectures.conv_autoencoder import ConvAutoencoder, ConvAutoencoderConfig
from models.architectures.dncnn import DnCNN, DnCNNConfig
from models.architectures.ffdnet import FFDNet, FFDNetConfig
from models.architectures.fsrcnn import FSRCNN, FSRCNNConfig
from models.architectures.residual_sr import ResidualSR, ResidualSRConfig
from models.architectures.super_resolution import SuperResolutionAE, SuperResolutionAEConfig
from models.architectures.vae import ConvVAE, ConvVAEConfig

ARCHITECTURES: dict[str, type[Architecture]] = {
    cls.name: cls
    for cls in (
        ConvAutoencoder,
        SuperResolutionAE,
        ConvVAE,
        DnCNN,
        FSRCNN,
        FFDNet,
        ResidualSR,
        ConditionalConvVAE,
        DigitClassifier,
    )
}


def register(cls: type[Architecture]) -> type[Architecture]:
    """Add an architecture to the registry (usable as a class decorator)."""
    if cls.name in ARCHITECTURES and ARCHITECTURES[cls.name] is not cls:
        raise ArchitectureError(f"architecture name {cls.name!r} is already registered")
    ARCHITECTURES[cls.name] = cls
    return cls


def build_model(architecture: str, kwargs: dict[str, Any]) -> Architecture:
    """Rebuild a model from its registered name and the keyword arguments of its config."""
    try:
        cls = ARCHITECTURES[architecture]
    except KeyError:
        raise ArchitectureError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}") from None
    return cls.from_kwargs(kwargs)


__all__ = [
    "ARCHITECTURES",
    "FSRCNN",
    "Architecture",
    "ArchitectureError",
    "ConditionalConvVAE",
    "ConditionalConvVAEConfig",
    "ConvAutoencoder",
    "ConvAutoencoderConfig",
    "ConvVAE",
    "ConvVAEConfig",
    "DigitClassifier",
    "DigitClassifierConfig",
    "DnCNN",
    "DnCNNConfig",
    "FFDNet",
    "FFDNetConfig",
    "FSRCNNConfig",
    "ResidualSR",
    "ResidualSRConfig",
    "SuperResolutionAE",
    "SuperResolutionAEConfig",
    "build_model",
    "register",
]
