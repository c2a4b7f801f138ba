"""Training objectives: how a batch of clean digits becomes (inputs, targets), and the loss on them.

A recipe names one objective instance; the training loop only ever calls these methods, so a new
kind of training is a new class here, not a new branch in the loop. Images are (B, 1, 28, 28) in [0, 1].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, ClassVar

import torch
from torch.nn import functional as F

from models.architectures import Architecture, ConditionalConvVAE, ConvAutoencoder, ConvVAE, DigitClassifier
from models.architectures.conditional_vae import split_label_plane, with_label_plane
from models.data.corruptions import blind_gaussian_noise, downscale, gaussian_noise
from models.data.natural_images import bicubic_downscale
from models.training.latent_match import per_label_mmd


def draw_seed(generator: torch.Generator) -> int:
    """A fresh seed for one corruption call, drawn from the run's generator (so runs are reproducible)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Move each image by a random whole number of pixels in [-max_shift, max_shift] per axis, filling with 0."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (max_shift, max_shift, max_shift, max_shift))  # (B, C, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (batch, 2), generator=generator)
    crops = [padded[i, :, y : y + height, x : x + width] for i, (y, x) in enumerate(offsets.tolist())]
    return torch.stack(crops)


class Objective(ABC):
    """What a recipe trains its model to do."""

    name: ClassVar[str]
    loss_name: ClassVar[str]  # what the logged loss measures, for the model card
    # True where training reads each digit's class: its images then carry a label plane
    # (models.architectures.conditional_vae.with_label_plane) through the generic loop.
    reads_labels: ClassVar[bool] = False

    @abstractmethod
    def make_batch(self, clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean digits (B, 1, 28, 28) -> (model inputs, training targets)."""

    @abstractmethod
    def loss(
        self,
        model: Architecture,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        epochs_done: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The scalar to minimise, averaged over the batch. `epochs_done` is fractional (for warm-ups)."""

    def validation_loss(
        self, model: Architecture, inputs: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """The loss used for model selection on the hold-out (the fully warmed-up objective)."""
        return self.loss(model, inputs, targets, epochs_done=float("inf"), generator=generator)

    def figure_rows(
        self, model: Architecture, inputs: torch.Tensor, targets: torch.Tensor
    ) -> list[tuple[str, torch.Tensor]]:
        """The rows of a checkpoint's samples.png (hold-out digits): input, output and target images."""
        return [("input", inputs), ("output", model(inputs)), ("target", targets)]

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description for the model card."""
        fields: dict[str, Any] = asdict(self) if is_dataclass(self) else {}
        return {"objective": self.name, "loss": self.loss_name, **fields}


class _PixelLoss(Objective):
    """The model's output against the target, pixel by pixel, with the subclass's `pixel_loss`."""

    @staticmethod
    @abstractmethod
    def pixel_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean loss over every pixel of the batch."""

    def loss(
        self,
        model: Architecture,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        epochs_done: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return self.pixel_loss(model(inputs), targets)


class _PixelCrossEntropy(_PixelLoss):
    """Binary cross-entropy per pixel against grey-level targets in [0, 1].

    Like the squared error it is minimised by the conditional mean (so it serves PSNR), but its gradient
    does not vanish through the sigmoid output: squared error tends to stall on an all-black image first.
    """

    loss_name = "binary cross-entropy per pixel (grey-level targets)"

    @staticmethod
    def pixel_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy(output, target)


@dataclass(frozen=True)
class Reconstruction(_PixelCrossEntropy):
    """Reproduce the input, optionally with two label-free regularisers of the code.

    - input noise (clipped): the denoising autoencoder's trick, features that ignore pixel noise;
    - code noise + code penalty: the dense code is perturbed by N(0, code_noise_sigma^2) before decoding and
      pays 0.5 * ||code||^2 nats per image, i.e. a VAE whose posterior spread is fixed. Nearby codes then
      decode to similar digits, which makes Euclidean distances between embeddings meaningful.
    """

    name: ClassVar[str] = "reconstruction"
    input_noise_sigma: float = 0.0
    input_shift_pixels: int = 0  # inputs moved by up to this many pixels; the target stays centred
    code_noise_sigma: float = 0.0
    code_penalty: float = 0.0  # weight of 0.5 * ||code||^2, in nats per image against the summed pixel loss

    def make_batch(self, clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = clean
        if self.input_shift_pixels > 0:
            inputs = random_shift(inputs, self.input_shift_pixels, generator)
        if self.input_noise_sigma > 0.0:
            inputs = gaussian_noise(inputs, self.input_noise_sigma, clip=True, seed=draw_seed(generator))
        return inputs, clean

    def loss(
        self,
        model: Architecture,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        epochs_done: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        if self.code_noise_sigma == 0.0 and self.code_penalty == 0.0:
            return super().loss(model, inputs, targets, epochs_done, generator)
        if not isinstance(model, ConvAutoencoder):
            raise TypeError(f"code regularisation needs a ConvAutoencoder, got {type(model).__name__}")
        codes = model.encode(inputs)  # (B, latent_size)
        noise = torch.randn(codes.shape, generator=generator, device=codes.device, dtype=codes.dtype)
        outputs = model.decode(codes + self.code_noise_sigma * noise)  # (B, 1, 28, 28)
        pixels = outputs[0].numel()  # the pixel loss is a per-pixel mean, so the penalty is divided alike
        penalty = 0.5 * codes.pow(2).flatten(1).sum(dim=1).mean() / pixels
        return F.binary_cross_entropy(outputs, targets) + self.code_penalty * penalty


@dataclass(frozen=True)
class BlindDenoising(_PixelCrossEntropy):
    """Noisy in, clean out; sigma drawn per image from [0, max_sigma], zero mean, clipped to [0, 1]."""

    name: ClassVar[str] = "blind-denoising"
    max_sigma: float = 0.6

    def make_batch(self, clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        noisy, _ = blind_gaussian_noise(clean, self.max_sigma, seed=draw_seed(generator))
        return noisy, clean


@dataclass(frozen=True)
class SuperResolution(_PixelCrossEntropy):
    """Area-downscaled (box-filtered) digit in, full-resolution digit out."""

    name: ClassVar[str] = "super-resolution"
    scale: int = 2

    def make_batch(self, clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return downscale(clean, self.scale, "area"), clean


@dataclass(frozen=True)
class BernoulliElbo(Objective):
    """VAE negative ELBO on dynamically binarised digits, with the KL weight warmed up linearly from 0 to 1.

    Each batch draws fresh binary pixels ~ Bernoulli(intensity), which regularises far better than a
    fixed binarisation; the likelihood is scored on those same binary pixels.
    """

    name: ClassVar[str] = "bernoulli-elbo"
    loss_name: ClassVar[str] = "negative ELBO in nats per image (KL weighted by the warm-up)"
    trains: ClassVar[type[ConvVAE] | type[ConditionalConvVAE]] = ConvVAE  # the architecture this objective fits
    kl_warmup_epochs: float = 0.0

    def make_batch(self, clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        binary = torch.bernoulli(clean, generator=generator)
        return binary, binary

    def kl_weight(self, epochs_done: float) -> float:
        if self.kl_warmup_epochs <= 0:
            return 1.0
        return min(1.0, epochs_done / self.kl_warmup_epochs)

    def loss(
        self,
        model: Architecture,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        epochs_done: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        if not isinstance(model, self.trains):
            raise TypeError(f"{self.name} trains a {self.trains.__name__}, got {type(model).__name__}")
        _, reconstruction, kl = model.loss(inputs, targets, generator=generator)  # (B,), (B,)
        return (reconstruction + self.kl_weight(epochs_done) * kl).mean()


@dataclass(frozen=True)
class LabelledElbo(BernoulliElbo):
    """The conditional VAE's negative ELBO: dynamically binarised digits, each told its class (the label plane)."""

    name: ClassVar[str] = "labelled-bernoulli-elbo"
    loss_name: ClassVar[str] = "negative ELBO in nats per image given its label (KL weighted by the warm-up)"
    reads_labels: ClassVar[bool] = True
    trains: ClassVar[type[ConvVAE] | type[ConditionalConvVAE]] = ConditionalConvVAE  # its loss is BernoulliElbo's
    # The KL's weight once warmed up: above 1 a beta-VAE, whose latent keeps less of the image and leaves more to
    # the label (the loss is then no longer the ELBO; the card's validation check still reports the ELBO).
    kl_beta: float = 1.0
    # Nats per image for the MMD between each label's latents and N(0, I) (models.training.latent_match), so that
    # every label's codes fill the prior its samples are drawn from; 0: the plain (beta-)ELBO.
    class_mmd_weight: float = 0.0

    def kl_weight(self, epochs_done: float) -> float:
        return self.kl_beta * super().kl_weight(epochs_done)

    def loss(
        self,
        model: Architecture,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        epochs_done: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        if self.class_mmd_weight == 0.0:
            return super().loss(model, inputs, targets, epochs_done, generator)
        if not isinstance(model, ConditionalConvVAE):
            raise TypeError(f"{self.name} trains a ConditionalConvVAE, got {type(model).__name__}")
        reconstruction, kl, latents = model.elbo_terms(inputs, targets, generator)
        mismatch = per_label_mmd(latents, split_label_plane(inputs)[1], generator)
        return (reconstruction + self.kl_weight(epochs_done) * kl).mean() + self.class_mmd_weight * mismatch

    def make_batch(self, clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = split_label_plane(clean)
        binary = torch.bernoulli(images, generator=generator)
        return with_label_plane(binary, labels), binary

    def figure_rows(
        self, model: Architecture, inputs: torch.Tensor, targets: torch.Tensor
    ) -> list[tuple[str, torch.Tensor]]:
        return [("input", inputs[:, :-1]), ("output", model(inputs)), ("target", targets)]


@dataclass(frozen=True)
class Classification(Objective):
    """Cross-entropy of the class logits; each training digit moved by up to `shift_pixels` (augmentation)."""

    name: ClassVar[str] = "classification"
    loss_name: ClassVar[str] = "cross-entropy of the class, nats per image"
    reads_labels: ClassVar[bool] = True
    shift_pixels: int = 2

    def make_batch(self, clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = split_label_plane(clean)
        if self.shift_pixels > 0:
            images = random_shift(images, self.shift_pixels, generator)
        return images, labels

    def loss(
        self,
        model: Architecture,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        epochs_done: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        if not isinstance(model, DigitClassifier):
            raise TypeError(f"{self.name} trains a DigitClassifier, got {type(model).__name__}")
        return F.cross_entropy(model.logits(inputs), targets)

    def figure_rows(
        self, model: Architecture, inputs: torch.Tensor, targets: torch.Tensor
    ) -> list[tuple[str, torch.Tensor]]:
        return [("input", inputs)]


@dataclass(frozen=True)
class GreyLevelElbo(BernoulliElbo):
    """VAE negative ELBO scored on the grey levels themselves, for one's own images (photographs, colour).

    Binarising a photograph throws its shading away, so here the Bernoulli cross-entropy is taken
    against the pixel values in [0, 1] (the usual choice for VAEs on natural images). It is not a
    normalised density of continuous pixels: compare its values only between models on the same images.
    """

    name: ClassVar[str] = "grey-level-bernoulli-elbo"
    loss_name: ClassVar[str] = (
        "negative ELBO in nats per image, Bernoulli cross-entropy on grey levels (KL weighted by the warm-up)"
    )

    def make_batch(self, clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return clean, clean


def random_dihedral(patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each square patch (B, C, P, P) flipped and/or rotated by a multiple of 90 degrees, one of the 8 at random."""
    choices = torch.randint(0, 8, (patches.shape[0],), generator=generator).tolist()
    out = []
    for patch, choice in zip(patches, choices, strict=True):
        turned = torch.rot90(patch, choice % 4, dims=(1, 2))
        out.append(turned.flip(2) if choice >= 4 else turned)
    return torch.stack(out)


class _PixelSquaredError(_PixelLoss):
    """Mean squared error per pixel: what PSNR measures (the image-restoration literature's loss)."""

    loss_name = "mean squared error per pixel (pixels in [0, 1])"

    @staticmethod
    def pixel_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output, target)


@dataclass(frozen=True)
class PatchDenoising(_PixelSquaredError):
    """Natural-image patches, randomly flipped/rotated, plus white Gaussian noise (not clipped) -> the clean patch.

    `sigma` is on the 0..255 scale; with `max_sigma` set, each patch draws its sigma uniformly from
    [sigma, max_sigma] instead (a blind model).
    """

    name: ClassVar[str] = "patch-denoising"
    sigma: float = 25.0
    max_sigma: float | None = None

    def make_batch(self, clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        clean = random_dihedral(clean, generator)
        if self.max_sigma is None:
            sigmas = torch.full((clean.shape[0],), self.sigma)
        else:
            sigmas = self.sigma + torch.rand(clean.shape[0], generator=generator) * (self.max_sigma - self.sigma)
        noise = torch.randn(clean.shape, generator=generator)
        return clean + (sigmas / 255.0).view(-1, 1, 1, 1) * noise, clean


@dataclass(frozen=True)
class PatchSuperResolution(_PixelSquaredError):
    """High-resolution luminance patches, randomly flipped/rotated, downscaled by Pillow's bicubic (the
    evaluation's degradation, models.data.natural_images) -> the high-resolution patch."""

    name: ClassVar[str] = "patch-super-resolution"
    scale: int = 2

    def make_batch(self, clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        clean = random_dihedral(clean, generator)
        return bicubic_downscale(clean, self.scale), clean
