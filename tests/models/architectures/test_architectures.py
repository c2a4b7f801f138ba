"""Shapes and basic contracts of every registered architecture, on tiny random inputs."""

from __future__ import annotations

import pytest
import torch

from models.architectures import (
    ARCHITECTURES,
    FSRCNN,
    ArchitectureError,
    ConditionalConvVAE,
    ConvAutoencoder,
    ConvAutoencoderConfig,
    ConvVAE,
    ConvVAEConfig,
    DigitClassifier,
    DnCNN,
    FFDNet,
    ResidualSR,
    SuperResolutionAE,
    SuperResolutionAEConfig,
    build_model,
)


def digits(batch: int = 3, size: int = 28) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0))


def test_registry_names_every_architecture() -> None:
    expected = {
        "conv-autoencoder": ConvAutoencoder,
        "sr-autoencoder": SuperResolutionAE,
        "conv-vae": ConvVAE,
        "dncnn": DnCNN,
        "fsrcnn": FSRCNN,
        "ffdnet": FFDNet,
        "residual-sr": ResidualSR,
        "conditional-conv-vae": ConditionalConvVAE,
        "digit-classifier": DigitClassifier,
    }
    assert expected == ARCHITECTURES


@pytest.mark.parametrize("latent_size", [None, 5])
def test_conv_autoencoder_shapes(latent_size: int | None) -> None:
    model = ConvAutoencoder(ConvAutoencoderConfig(widths=(4, 6, 8), latent_size=latent_size))
    images = digits()
    codes = model.encode(images)
    expected_code = (3, 5) if latent_size else (3, 8, 4, 4)
    assert codes.shape == expected_code
    assert model.embed(images).shape == (3, model.embedding_size)
    assert model.embedding_size == (latent_size or 8 * 4 * 4)
    for output in (model.decode(codes), model.reconstruct(images), model.denoise(images), model(images)):
        assert output.shape == images.shape
        assert output.min() >= 0 and output.max() <= 1


@pytest.mark.parametrize(("scale", "low"), [(2, 14), (4, 7)])
def test_super_resolution_shapes(scale: int, low: int) -> None:
    model = SuperResolutionAE(SuperResolutionAEConfig(scale=scale, width=4, encoder_layers=2))
    output = model.super_resolve(digits(size=low))
    assert model.scale == scale
    assert output.shape == (3, 1, 28, 28)
    assert output.min() >= 0 and output.max() <= 1


@pytest.mark.parametrize("latent_size", [2, 7])
def test_conv_vae_shapes(latent_size: int) -> None:
    model = ConvVAE(ConvVAEConfig(latent_size=latent_size, widths=(4, 6), hidden_size=16))
    images = digits()
    mean, log_variance = model.encode(images)
    assert mean.shape == log_variance.shape == (3, latent_size)
    assert model.embed(images).shape == (3, latent_size)
    assert model.decode_logits(mean).shape == images.shape
    assert model.reconstruct(images).shape == images.shape
    samples = model.sample(4, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (4, 1, 28, 28)
    assert samples.min() >= 0 and samples.max() <= 1
    neg_elbo, reconstruction, kl = model.loss(images.round())
    assert neg_elbo.shape == reconstruction.shape == kl.shape == (3,)
    assert torch.allclose(neg_elbo, reconstruction + kl)
    assert (kl >= 0).all() and (reconstruction > 0).all()


def test_build_model_round_trips_config_and_rejects_bad_kwargs() -> None:
    model = build_model("conv-autoencoder", {"widths": [4, 6, 8], "latent_size": 3})
    assert build_model("conv-autoencoder", model.config_dict()).config == model.config
    with pytest.raises(ArchitectureError, match="unknown architecture"):
        build_model("resnet", {})
    with pytest.raises(ArchitectureError, match="unknown config fields"):
        build_model("conv-vae", {"latent": 3})
    with pytest.raises(ArchitectureError, match="invalid config"):
        build_model("sr-autoencoder", {"scale": 3})
