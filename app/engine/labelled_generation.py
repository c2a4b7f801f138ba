"""Generation told the digit: a class-conditional VAE's samples, decodes and restyles (the same handwriting
drawn as another digit). The service layer of those requests, beside `app.engine.service` (which it builds on).

A request that sends `label` means a conditional model: the one it names (refused with a 422 naming
`label` when that model takes no labels) or, when it names none, the default of `conditional_vae`.
A conditional model asked without labels draws them uniformly from the request's seeded generator, so a
seed still fixes the answer.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from app.engine.jobs import ImageJob, ImageResult, Images, NoteRequest
from app.engine.model_choice import ModelChoice
from app.engine.registry import ModelEntry
from app.errors import InvalidRequest, ValidationFailed
from models.architectures.conditional_vae import with_label_plane
from models.architectures.vae import kl_divergence
from models.runtime.tasks import CONDITIONAL_VAE_DECODE, CONDITIONAL_VAE_ENCODE

if TYPE_CHECKING:
    from app.engine.service import Service
    from app.http.schemas import RestyleOptions

Labels = int | list[int] | None


def label_count(card_tasks: list[str], architecture_config: dict[str, object]) -> int | None:
    """How many labels (0..n-1) a model takes: its card's `classes`, for models that list conditional-vae."""
    if CONDITIONAL_VAE_DECODE.card_task not in card_tasks:
        return None
    classes = architecture_config.get("classes", 10)
    return int(classes) if isinstance(classes, int) else None


def takes_labels(entry: ModelEntry) -> bool:
    return entry.card is not None and CONDITIONAL_VAE_DECODE.card_task in entry.card.tasks


def choose_conditional(choice: ModelChoice, model: str | None, param: str = "label") -> ModelEntry:
    """The conditional model a request with labels means; a named model that takes none is a 422 on `param`."""
    if model is not None:
        entry = choice.registry.entry(model)
        if entry.card is not None and not takes_labels(entry):
            conditional = sorted(name for name, other in choice.registry.entries.items() if takes_labels(other))
            raise ValidationFailed(
                f"model {model!r} takes no labels (it is not a conditional VAE); models that do: "
                f"{', '.join(conditional) or 'none'}",
                param=param,
            )
    return choice.choose(model, CONDITIONAL_VAE_DECODE)


def label_tensor(labels: int | list[int], count: int, classes: int, param: str = "label") -> torch.Tensor:
    """One label for all `count` items, or one each -> (count,) int64, checked against 0..classes-1."""
    values = [labels] * count if isinstance(labels, int) else list(labels)
    if len(values) != count:
        raise ValidationFailed(f"'{param}' needs one label or {count} (one per image); got {len(values)}", param=param)
    wrong = sorted({value for value in values if not 0 <= value < classes})
    if wrong:
        raise ValidationFailed(f"labels must be in 0..{classes - 1}; got {wrong}", param=param)
    return torch.tensor(values, dtype=torch.int64)


class LabelledGeneration:
    """The conditional-VAE requests of one service."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def classes(self, entry: ModelEntry) -> int:
        assert entry.card is not None
        count = label_count(entry.card.tasks, entry.card.architecture_config)
        if count is None:
            raise InvalidRequest(f"model {entry.name!r} does not state its labels", param="model")
        return count

    async def latent_size(self, entry: ModelEntry) -> int:
        """From the card, else from the loaded model (a ConditionalVariationalCoder states it)."""
        if entry.card is not None and entry.card.latent_size:
            return entry.card.latent_size
        size = getattr((await self.service.registry.load(entry.name)).model, "latent_size", None)
        if not isinstance(size, int):
            raise InvalidRequest(f"model {entry.name!r} does not state its latent size", param="model")
        return size

    async def sample(
        self,
        model: str | None,
        n: int,
        seed: int | None,
        temperature: float,
        labels: Labels,
        note: NoteRequest,
    ) -> Images | None:
        """n images of the given labels; None when the request is not for a conditional model (no label, and a
        model that takes none), which `Service.vae_sample` then answers."""
        service = self.service
        if labels is None and (model is None or not takes_labels(service.registry.entry(model))):
            return None
        entry = choose_conditional(service.choice, model)
        classes = self.classes(entry)
        seed = random.SystemRandom().randrange(2**63) if seed is None else seed
        generator = torch.Generator().manual_seed(seed)
        # The latents are drawn first, so that a seed gives the same handwriting whatever labels are asked.
        latents = torch.randn((n, await self.latent_size(entry)), generator=generator) * temperature
        if labels is None:
            chosen = torch.randint(0, classes, (n,), generator=generator)
        else:
            chosen = label_tensor(labels, n, classes)
        note(entry.name, n)
        return await self._decode(entry, latents, chosen, seed)

    async def decode(
        self, model: str | None, latents: torch.Tensor, labels: int | list[int], note: NoteRequest
    ) -> Images:
        entry = choose_conditional(self.service.choice, model)
        chosen = label_tensor(labels, len(latents), self.classes(entry))
        note(entry.name, len(latents))
        return await self._decode(entry, latents, chosen)

    async def restyle(self, job: ImageJob[RestyleOptions]) -> Images:
        """One digit, encoded given the digit it shows, decoded as each requested label (the posterior mean:
        the same handwriting). The digit it shows is `source_label`, else the label under which the model
        explains the image best (the smallest negative ELBO at the posterior mean)."""
        options, upload = job.options, job.upload
        if len(upload.blobs) != 1:
            raise InvalidRequest(f"restyle takes exactly one image; got {len(upload.blobs)}", param="image")
        entry = choose_conditional(self.service.choice, options.model, param="model")
        classes = self.classes(entry)
        targets = (
            None if options.labels is None else label_tensor(options.labels, len(options.labels), classes, "labels")
        )
        if options.source_label is not None:
            label_tensor(options.source_label, 1, classes, "source_label")
        assert entry.card is not None
        prepared = await self.service.prepare(upload, entry.card, CONDITIONAL_VAE_ENCODE, options.preprocess, job.route)
        image = prepared[0].tensor  # (C, H, W)
        source = options.source_label
        if source is None:
            source = await self._best_label(entry, image, classes)
        new_labels = targets if targets is not None else torch.arange(classes)
        job.note(entry.name, len(new_labels))
        batch = with_label_plane(image.unsqueeze(0), torch.tensor([source]))
        mean, _ = await self.service.registry.run(entry.name, CONDITIONAL_VAE_ENCODE, batch)
        images = await self._decode(entry, mean.expand(len(new_labels), -1), new_labels)
        for result in images.results:
            result.preprocessing = prepared[0].preprocessing
        images.source_label = source
        return images

    async def _best_label(self, entry: ModelEntry, image: torch.Tensor, classes: int) -> int:
        """The label whose posterior mean decodes closest to the image, KL included (negative ELBO at the mean)."""
        candidates = torch.arange(classes)
        batch = with_label_plane(image.unsqueeze(0).expand(classes, *image.shape), candidates)
        mean, log_variance = await self.service.registry.run(entry.name, CONDITIONAL_VAE_ENCODE, batch)
        decoded = await self.service.registry.run(entry.name, CONDITIONAL_VAE_DECODE, _with_labels(mean, candidates))
        assert isinstance(decoded, torch.Tensor)
        targets = image.unsqueeze(0).expand_as(decoded)
        cross_entropy = F.binary_cross_entropy(decoded.clamp(1e-6, 1 - 1e-6), targets, reduction="none")
        scores = cross_entropy.flatten(1).sum(dim=1) + kl_divergence(mean, log_variance)
        return int(scores.argmin())

    async def _decode(
        self, entry: ModelEntry, latents: torch.Tensor, labels: torch.Tensor, seed: int | None = None
    ) -> Images:
        size = await self.latent_size(entry)
        if latents.shape[1] != size:
            raise ValidationFailed(
                f"model {entry.name!r} has {size} latent dimensions; got vectors of {latents.shape[1]}", param="latents"
            )
        outputs = await self.service.registry.run(entry.name, CONDITIONAL_VAE_DECODE, _with_labels(latents, labels))
        assert isinstance(outputs, torch.Tensor)
        results = [
            ImageResult(image, extra={"label": int(label)}) for image, label in zip(outputs, labels, strict=True)
        ]
        return Images(entry.name, results, seed)


def _with_labels(latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(n, D) latents, (n,) labels -> (n, D + 1): the batch of CONDITIONAL_VAE_DECODE."""
    return torch.cat([latents, labels.to(latents.dtype).unsqueeze(1)], dim=1)
