"""Generation told the digit: a class-conditional VAE's samples, decodes and restyles (the same handwriting
drawn as another digit). The service layer of those requests, beside `app.engine.service` (which it builds on).

A request that sends `label` means a conditional model: the one it names (refused with a 422 naming
`label` when that model takes no labels) or, when it names none, the default of `conditional_vae`.
A conditional model asked without labels draws them uniformly from the request's seeded generator, so a
seed still fixes the answer.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Protocol

import torch
from torch.nn import functional as F

from app.engine.models.catalogue import ModelEntry
from app.engine.models.model_choice import ModelChoice
from app.engine.models.registry import ModelRegistry
from app.engine.requests.jobs import Accounting, ImageJob, ImageResult, Images, ImageUpload
from app.engine.scheduling.batch_items import Items
from app.errors import InvalidRequest, ValidationFailed
from models.architectures.vae import kl_divergence
from models.runtime.tasks import CONDITIONAL_VAE_DECODE, CONDITIONAL_VAE_ENCODE, model_takes

if TYPE_CHECKING:
    from app.http.schemas import RestyleOptions
    from app.imaging.model_input import PreparedImage, Preprocess
    from models.checkpoint import ModelCard
    from models.runtime.tasks import Task

Labels = int | list[int] | None


class Service(Protocol):
    """What these requests use of the service they belong to (app.engine.service.Service), named here so
    that this module does not import the service back."""

    registry: ModelRegistry
    choice: ModelChoice
    accounting: Accounting

    async def prepare(
        self, upload: ImageUpload, card: ModelCard, task: Task, preprocess: Preprocess, route: str
    ) -> list[PreparedImage]: ...

    async def latent_size(self, entry: ModelEntry) -> int: ...


def takes_labels(entry: ModelEntry) -> bool:
    return entry.card is not None and model_takes(entry.card).labels is not None


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
        count = model_takes(entry.card).labels
        if count is None:
            raise InvalidRequest(f"model {entry.name!r} does not state its labels", param="model")
        return count

    async def latent_size(self, entry: ModelEntry) -> int:
        """From the card, else from the running model (`Service.latent_size`)."""
        return await self.service.latent_size(entry)

    async def sample(
        self,
        model: str | None,
        n: int,
        seed: int | None,
        temperature: float,
        labels: Labels,
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
        service.accounting.serving(entry.name, n)
        return await self._decode(entry, latents, chosen, seed)

    async def decode(self, model: str | None, latents: torch.Tensor, labels: int | list[int]) -> Images:
        entry = choose_conditional(self.service.choice, model)
        chosen = label_tensor(labels, len(latents), self.classes(entry))
        self.service.accounting.serving(entry.name, len(latents))
        return await self._decode(entry, latents, chosen)

    async def restyle(self, job: ImageJob[RestyleOptions]) -> Images:
        """One digit, encoded given the digit it shows, decoded as each requested label (the posterior mean:
        the same handwriting). The digit it shows is `source_label`, else the label under which the model
        explains the image best (the smallest negative ELBO at the posterior mean)."""
        options, upload = job.options, job.upload
        if upload.count != 1:
            raise InvalidRequest(f"restyle takes exactly one image; got {upload.count}", param="image")
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
        self.service.accounting.serving(entry.name, len(new_labels))
        batch = _labelled(image.unsqueeze(0), torch.tensor([source]))
        mean, _ = await self.service.registry.run(entry.name, CONDITIONAL_VAE_ENCODE, batch)
        images = await self._decode(entry, mean.expand(len(new_labels), -1), new_labels)
        for result in images.results:
            result.preprocessing = prepared[0].preprocessing
        images.source_label = source
        return images

    async def _best_label(self, entry: ModelEntry, image: torch.Tensor, classes: int) -> int:
        """The label whose posterior mean decodes closest to the image, KL included (negative ELBO at the mean)."""
        candidates = torch.arange(classes)
        batch = _labelled(image.unsqueeze(0).expand(classes, *image.shape).contiguous(), candidates)
        mean, log_variance = await self.service.registry.run(entry.name, CONDITIONAL_VAE_ENCODE, batch)
        decoded = await self.service.registry.run(entry.name, CONDITIONAL_VAE_DECODE, _labelled(mean, candidates))
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
        outputs = await self.service.registry.run(entry.name, CONDITIONAL_VAE_DECODE, _labelled(latents, labels))
        assert isinstance(outputs, torch.Tensor)
        results = [
            ImageResult(image, extra={"label": int(label)}) for image, label in zip(outputs, labels, strict=True)
        ]
        return Images(entry.name, results, seed)


def _labelled(inputs: torch.Tensor, labels: torch.Tensor) -> Items:
    """(n, ...) latents or images and their (n,) labels -> the batch items of the conditional tasks (the label
    a per-item extra, as float like the warm-up's blank extras; the model reads it as a class index)."""
    return Items(inputs, {"label": labels.to(torch.float32)})
