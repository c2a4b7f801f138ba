"""A class-conditional convolutional VAE for 28x28 digits: the label enters both the encoder and the decoder.

encode_given: (image, label) -> (mean, log_variance) of q(z|x, y)
decode_given: (z, label) -> Bernoulli pixel probabilities p(x|z, y)
The prior is N(0, I) whatever the label, so z carries what the label does not: the handwriting (slant,
stroke width, size). Encoding a digit with its own label and decoding with another restyles it.
During training the label travels with its image as a constant extra plane (`with_label_plane`), the way
the task table carries per-image settings through shared batches.
With `label_every_layer` the decoder reads the label at each of its four stages (one-hot beside the latent,
beside the hidden layer, and as constant planes beside the 7x7 and 14x14 feature maps) instead of only at its
input, so no layer can lose it: docs/cvae-levers.md measures what it does to label accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.architectures.base import Architecture, check_image_size, image_size_field, omitted_when_default
from models.architectures.protocols import ConditionalVariationalCoder
from models.architectures.vae import kl_divergence


def with_label_plane(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W) images and (n,) class labels -> (n, C + 1, H, W), each image with a constant plane of its label."""
    planes = labels.to(images.dtype).view(-1, 1, 1, 1).expand(images.shape[0], 1, *images.shape[2:])
    return torch.cat([images, planes], dim=1)


def split_label_plane(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of `with_label_plane`: (n, C + 1, H, W) -> images (n, C, H, W), labels (n,) int64."""
    return batch[:, :-1], batch[:, -1].flatten(1).mean(dim=1).round().long()


@dataclass(frozen=True)
class ConditionalConvVAEConfig:
    latent_size: int = 16
    classes: int = 10  # labels 0..classes-1
    in_channels: int = 1
    widths: tuple[int, int] = (32, 64)  # channels after the two stride-2 convolutions (14x14, 7x7)
    hidden_size: int = 256
    image_size: tuple[int, int] = image_size_field()
    # The label into every decoder stage, not only its input (False: the first published mnist-cvae's decoder).
    label_every_layer: bool = omitted_when_default(False)

    def __post_init__(self) -> None:
        if self.latent_size < 1 or self.classes < 2 or self.hidden_size < 1 or min(self.widths) < 1:
            raise ValueError(f"invalid ConditionalConvVAE config: {self}")
        check_image_size(self.image_size, 4)


def label_planes(one_hot: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, K) one-hot labels beside (B, C, H, W) feature maps -> (B, C + K, H, W)."""
    planes = one_hot.view(*one_hot.shape, 1, 1).expand(-1, -1, *like.shape[2:])
    return torch.cat([like, planes], dim=1)


class EveryLayerDecoder(nn.Module):
    """The decoder of `ConditionalConvVAE` with the one-hot label beside the input of each of its four layers."""

    def __init__(self, config: ConditionalConvVAEConfig, feature_shape: tuple[int, int, int]) -> None:
        super().__init__()
        w1, _ = config.widths
        w2 = feature_shape[0]
        classes = config.classes
        self.feature_shape = feature_shape
        self.dense = nn.Linear(config.latent_size + classes, config.hidden_size)
        self.to_features = nn.Linear(config.hidden_size + classes, math.prod(feature_shape))
        self.up = nn.ConvTranspose2d(w2 + classes, w1, 4, stride=2, padding=1)  # (B, w1, 14, 14)
        self.to_logits = nn.ConvTranspose2d(w1 + classes, config.in_channels, 4, stride=2, padding=1)  # 28x28

    def forward(self, latents: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.dense(torch.cat([latents, one_hot], dim=1)))
        features = F.relu(self.to_features(torch.cat([hidden, one_hot], dim=1))).view(-1, *self.feature_shape)
        upsampled = F.relu(self.up(label_planes(one_hot, features)))
        return self.to_logits(label_planes(one_hot, upsampled))  # (B, C, 28, 28) logits


class ConditionalConvVAE(Architecture, ConditionalVariationalCoder):
    name = "conditional-conv-vae"
    config_class = ConditionalConvVAEConfig
    config: ConditionalConvVAEConfig

    def __init__(self, config: ConditionalConvVAEConfig) -> None:
        super().__init__(config)
        w1, w2 = config.widths
        feature_shape = (w2, config.image_size[0] // 4, config.image_size[1] // 4)
        feature_size = math.prod(feature_shape)
        self.features = nn.Sequential(
            nn.Conv2d(config.in_channels, w1, 4, stride=2, padding=1),  # (B, w1, 14, 14)
            nn.ReLU(inplace=True),
            nn.Conv2d(w1, w2, 4, stride=2, padding=1),  # (B, w2, 7, 7)
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        self.encoder_dense = nn.Sequential(nn.Linear(feature_size + config.classes, config.hidden_size), nn.ReLU())
        self.to_mean = nn.Linear(config.hidden_size, config.latent_size)
        self.to_log_variance = nn.Linear(config.hidden_size, config.latent_size)
        self.decoder: nn.Module
        if config.label_every_layer:
            self.decoder = EveryLayerDecoder(config, feature_shape)
            return
        self.decoder = nn.Sequential(  # the label at its input only; the module names of the published weights
            nn.Linear(config.latent_size + config.classes, config.hidden_size),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden_size, feature_size),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, feature_shape),
            nn.ConvTranspose2d(w2, w1, 4, stride=2, padding=1),  # (B, w1, 14, 14)
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(w1, config.in_channels, 4, stride=2, padding=1),  # (B, C, 28, 28) logits
        )

    @property
    def latent_size(self) -> int:
        return self.config.latent_size

    @property
    def classes(self) -> int:
        return self.config.classes

    def _one_hot(self, labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.classes):
            raise ValueError(f"labels must be in 0..{self.classes - 1}, got {labels.tolist()}")
        return F.one_hot(labels.long(), self.classes).to(like.dtype)

    def encode_given(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, 28, 28) images and (B,) labels -> mean (B, D), log_variance (B, D) of q(z|x, y)."""
        features = self.features(images)
        hidden = self.encoder_dense(torch.cat([features, self._one_hot(labels, features)], dim=1))
        return self.to_mean(hidden), self.to_log_variance(hidden)

    def decode_logits_given(self, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        one_hot = self._one_hot(labels, latents)
        if isinstance(self.decoder, EveryLayerDecoder):
            return self.decoder(latents, one_hot)
        return self.decoder(torch.cat([latents, one_hot], dim=1))

    def decode_given(self, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, D) latents and (B,) labels -> (B, C, 28, 28) pixel probabilities (the mean image)."""
        return torch.sigmoid(self.decode_logits_given(latents, labels))

    def restyle(self, images: torch.Tensor, labels: torch.Tensor, new_labels: torch.Tensor) -> torch.Tensor:
        """Each image (shown digit `labels`) drawn as `new_labels`: the posterior mean decoded with the new label."""
        mean, _ = self.encode_given(images, labels)
        return self.decode_given(mean, new_labels)

    def sample_given(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One image per label from the prior: (n,) -> (n, C, 28, 28)."""
        param = next(self.parameters())
        latents = torch.randn((len(labels), self.latent_size), generator=generator, dtype=param.dtype)
        return self.decode_given(latents.to(param.device), labels.to(param.device))

    def loss(
        self, inputs: torch.Tensor, targets: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Negative ELBO per example of images carrying their label plane (`with_label_plane`), with its terms."""
        reconstruction, kl, _ = self.elbo_terms(inputs, targets, generator)
        return reconstruction + kl, reconstruction, kl

    def elbo_terms(
        self, inputs: torch.Tensor, targets: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> the ELBO's reconstruction (B,) and KL (B,) terms and the latents drawn from q(z|x, y) (B, D)."""
        images, labels = split_label_plane(inputs)
        targets = images if targets is None else targets
        mean, log_variance = self.encode_given(images, labels)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        latents = mean + (0.5 * log_variance).exp() * noise
        logits = self.decode_logits_given(latents, labels)
        reconstruction = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).sum(dim=1)
        return reconstruction, kl_divergence(mean, log_variance), latents

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Images with their label plane -> reconstructions (the posterior mean decoded with the same label)."""
        images, labels = split_label_plane(inputs)
        return self.restyle(images, labels, labels)
