"""The service layer: what each route does, between parsing the request and encoding the response.

Routes stay thin: they resolve the model, hand the parsed request here, and encode what comes back.
Decoding and PNG encoding of large images run in worker threads (small ones inline, see app.offload);
every forward pass goes through
the model's batcher via `ModelRegistry.run`. Errors are `app.errors` exceptions, never HTTP ones.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Annotated

import torch
from fastapi import Depends, Request

from app.dependencies import RegistryDep
from app.errors import InvalidRequest, TaskNotSupported, ValidationFailed
from app.imaging import INLINE_PIXELS, declared_pixels, decode_image, grid_columns, tile_grid
from app.inputs import ImageUpload
from app.observability import Metrics
from app.offload import run_cpu_work
from app.preprocessing import PreparedImage, Preprocess, Preprocessing, input_channels, prepare
from app.registry import ModelEntry, ModelRegistry, TaskFunction
from app.responses import ImageResult
from app.settings import Settings
from models.checkpoint import ModelCard


class Service:
    def __init__(self, registry: ModelRegistry, settings: Settings, metrics: Metrics) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics

    # -- images in ---------------------------------------------------------------------------------

    async def prepare(
        self, upload: ImageUpload, card: ModelCard, task: str, preprocess: Preprocess, route: str
    ) -> list[PreparedImage]:
        """Decode and preprocess every image; in a worker thread unless the images are small (app.offload)."""

        # The pixel cap bounds what the service holds and sends back: for super-resolution that is the answer,
        # scale^2 larger than the image sent (checked from the header, before anything is decoded).
        output_scale = (card.scale or 1) if task == "super-resolve" else 1
        channels = input_channels(card)

        def work() -> list[PreparedImage]:
            with self.metrics.stage("decode", route):
                prepared = []
                for index, blob in enumerate(upload.blobs):
                    param = upload.param(index)
                    image = decode_image(blob, self.settings.max_pixels, channels, param, output_scale)
                    prepared.append(prepare(image, card, task, preprocess, param=param))
                return prepared

        return await run_cpu_work(work, total_pixels(upload.blobs))

    async def run(self, name: str, task: TaskFunction, tensors: list[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
        """Run every (C, H, W) input through the model; -> per input, the task's outputs without batch dim.

        Inputs of one shape go as one submission; different shapes (any-size models) go side by side.
        """
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, tensor in enumerate(tensors):
            groups[tuple(tensor.shape)].append(index)

        async def run_group(indices: list[int]) -> tuple[list[int], tuple[torch.Tensor, ...]]:
            outputs = await self.registry.run(name, task, torch.stack([tensors[i] for i in indices]))
            return indices, outputs if isinstance(outputs, tuple) else (outputs,)

        results: list[tuple[torch.Tensor, ...]] = [()] * len(tensors)
        for indices, outputs in await asyncio.gather(*(run_group(group) for group in groups.values())):
            for position, index in enumerate(indices):
                results[index] = tuple(output[position] for output in outputs)
        return results

    async def transform(
        self, entry: ModelEntry, upload: ImageUpload, task: TaskFunction, preprocess: Preprocess, route: str
    ) -> list[ImageResult]:
        """Images in, images out: denoise, super-resolve and reconstruct (which adds its error)."""
        card = _card(entry)
        prepared = await self.prepare(upload, card, task, preprocess, route)
        outputs = await self.run(entry.name, task, [p.tensor for p in prepared])
        results = []
        for item, output in zip(prepared, outputs, strict=True):
            extra = {"reconstruction_error": float(output[1])} if task == "reconstruct" else {}
            results.append(ImageResult(output[0], item.preprocessing, extra))
        return results

    async def embed(
        self, entry: ModelEntry, upload: ImageUpload, preprocess: Preprocess, route: str
    ) -> tuple[torch.Tensor, list[Preprocessing]]:
        """-> (n, D) vectors and each image's preprocessing."""
        prepared = await self.prepare(upload, _card(entry), "embed", preprocess, route)
        outputs = await self.run(entry.name, "embed", [p.tensor for p in prepared])
        return torch.stack([output[0] for output in outputs]), [p.preprocessing for p in prepared]

    async def encode(
        self, entry: ModelEntry, upload: ImageUpload, preprocess: Preprocess, route: str
    ) -> tuple[torch.Tensor, torch.Tensor, list[Preprocessing]]:
        """-> posterior means (n, D), log-variances (n, D) and each image's preprocessing."""
        prepared = await self.prepare(upload, _card(entry), "vae", preprocess, route)
        outputs = await self.run(entry.name, "vae-encode", [p.tensor for p in prepared])
        means = torch.stack([output[0] for output in outputs])
        log_variances = torch.stack([output[1] for output in outputs])
        return means, log_variances, [p.preprocessing for p in prepared]

    # -- latents in ----------------------------------------------------------------------------------

    async def decode(self, entry: ModelEntry, latents: torch.Tensor) -> list[torch.Tensor]:
        """(n, D) latents -> n images (C, H, W)."""
        await self.registry.load(entry.name)
        size = latent_size(entry)
        if latents.shape[1] != size:
            raise ValidationFailed(
                f"model {entry.name!r} has {size} latent dimensions; got vectors of {latents.shape[1]}", param="latents"
            )
        # The batcher queues (n, C, H, W) tensors, so latents travel as (n, D, 1, 1).
        outputs = await self.registry.run(entry.name, "vae-decode", latents.reshape(*latents.shape, 1, 1))
        assert isinstance(outputs, torch.Tensor)
        return list(outputs)

    async def sample(
        self, entry: ModelEntry, n: int, seed: int | None, temperature: float
    ) -> tuple[list[torch.Tensor], int]:
        """n images from the prior; the latents come from a CPU generator so a seed gives the same images
        whatever the device and however requests were batched."""
        await self.registry.load(entry.name)
        seed = random.SystemRandom().randrange(2**63) if seed is None else seed
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn((n, latent_size(entry)), generator=generator) * temperature
        return await self.decode(entry, latents), seed

    async def interpolate(
        self, entry: ModelEntry, start: torch.Tensor, end: torch.Tensor, steps: int
    ) -> list[torch.Tensor]:
        """Straight line from `start` to `end` (D,) in `steps` points, both ends included."""
        weights = torch.linspace(0.0, 1.0, steps).unsqueeze(1)  # (steps, 1)
        return await self.decode(entry, (1 - weights) * start + weights * end)

    async def manifold(self, entry: ModelEntry, size: int, extent: float) -> torch.Tensor:
        """A size x size grid over z1, z2 in [-extent, extent] -> one (C, size * H, size * W) image.

        Columns go along z1 (left to right), rows along z2 (top is +extent), like a plot's axes.
        """
        await self.registry.load(entry.name)
        if latent_size(entry) != 2:
            raise TaskNotSupported(
                f"the manifold needs a 2-D latent space; model {entry.name!r} has {latent_size(entry)} dimensions",
                param="model",
            )
        values = torch.linspace(-extent, extent, size)
        z1 = values.repeat(size)  # (size * size,)
        z2 = values.flip(0).repeat_interleave(size)
        images = await self.decode(entry, torch.stack([z1, z2], dim=1))
        return tile_grid(images, grid_columns(size * size))


def total_pixels(blobs: list[bytes]) -> int | None:
    """The pixels all images declare in their headers; None (offload) when more than inline work or unreadable."""
    total = 0
    for blob in blobs:
        pixels = declared_pixels(blob)
        if pixels is None:
            return None
        total += pixels
        if total > INLINE_PIXELS:  # no need to read the other headers
            return None
    return total


def latent_size(entry: ModelEntry) -> int:
    card = _card(entry)
    if card.latent_size:
        return card.latent_size
    loaded = entry.loaded
    size = getattr(loaded.planned.model, "latent_size", None) if loaded else None
    if not isinstance(size, int):
        raise InvalidRequest(f"model {entry.name!r} does not state its latent size", param="model")
    return size


def _card(entry: ModelEntry) -> ModelCard:
    assert entry.card is not None, "resolve() never hands out an entry without a card"
    return entry.card


async def get_service(request: Request, registry: RegistryDep) -> Service:
    # Settings and metrics straight from the app: each sub-dependency FastAPI resolves costs as much
    # as a small route's own work. The registry stays a dependency, so tests can swap it.
    return Service(registry, request.app.state.settings, request.app.state.metrics)


ServiceDep = Annotated[Service, Depends(get_service)]
