"""The service layer: the work of every request, between the route that parsed it and the route that answers.

Each method takes typed inputs (`app.engine.requests.jobs`), chooses the model
(`app.engine.models.model_choice`), runs it through its batchers (`app.engine.models.registry`) and returns
typed results; it knows nothing of HTTP, and raises only `app.errors` exceptions, which
`app.http.error_handlers` turns into responses. CPU work on images (decoding here, encoding in the routes) goes
through `app.engine.scheduling.cpu_work.run_cpu_work`, which alone decides whether it leaves the event loop.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import torch

from app.engine.models.catalogue import ModelEntry
from app.engine.models.loading import warm_up_tasks
from app.engine.models.model_choice import ModelChoice
from app.engine.models.registry import ModelRegistry
from app.engine.requests.jobs import (
    NO_ACCOUNTING,
    Accounting,
    Embeddings,
    Grid,
    ImageJob,
    ImageResult,
    Images,
    ImageUpload,
    LatentPoints,
    Posteriors,
)
from app.engine.requests.labelled_generation import LabelledGeneration, takes_labels
from app.engine.requests.latent_maps import served_latent_map
from app.engine.requests.model_info import describe_model
from app.engine.requests.request_inputs import (
    check_dimensions,
    check_limit,
    latents_tensor,
    require_estimable,
    to_levels,
    total_pixels,
)
from app.engine.scheduling.batch_items import queued
from app.engine.scheduling.cpu_work import run_cpu_work
from app.errors import InvalidRequest, TaskNotSupported, ValidationFailed
from app.http.schemas import (
    DenoiseOptions,
    EmbeddingOptions,
    EncodeOptions,
    ImageOptions,
    InterpolateOptions,
    ModelInfo,
    SuperResolveOptions,
)
from app.imaging.codecs import decode_pixels, grid_columns, sent_pixels, tile_grid
from app.imaging.model_input import PreparedImage, Preprocess, prepare
from app.observability import Metrics
from app.settings import Settings
from models.checkpoint import ModelCard
from models.quality.noise_estimation import estimate_sigma
from models.runtime.tasks import (
    DENOISE,
    DENOISE_AT_NOISE_LEVEL,
    EMBED,
    RECONSTRUCT,
    SUPER_RESOLVE,
    VAE_DECODE,
    VAE_ENCODE,
    Task,
    model_takes,
)


class Service:
    """The work of one request. `accounting` is told which model serves it and how many images it holds, as
    soon as the model is chosen (for HTTP: the request's record, which counts it against that model's
    admission and may refuse it with 503 there; app.http.request_record)."""

    def __init__(
        self, registry: ModelRegistry, settings: Settings, metrics: Metrics, accounting: Accounting = NO_ACCOUNTING
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.accounting = accounting
        self.choice = ModelChoice(registry, settings.default_models)
        self.labelled = LabelledGeneration(self)  # conditional VAEs: samples and decodes of a label, restyles

    # -- images in, images out ---------------------------------------------------------------------

    async def denoise(self, job: ImageJob[DenoiseOptions]) -> Images:
        """Models of every noise level denoise at `sigma`, or at the level estimated from each image; models
        of one level refuse a `sigma`."""
        entry = self.choice.choose(job.options.model, DENOISE)
        if _takes_noise_level(entry):
            return await self.denoise_at_noise_level(job, entry)
        if job.options.sigma is not None:
            levels = [e.name for e in self.registry.entries.values() if _takes_noise_level(e)]
            raise InvalidRequest(
                f"model {entry.name!r} is trained for one noise level and takes no sigma; models that take it: "
                f"{', '.join(sorted(levels)) or 'none served'}",
                param="sigma",
            )
        return await self.transform(job, entry, DENOISE)

    async def denoise_at_noise_level(self, job: ImageJob[DenoiseOptions], entry: ModelEntry) -> Images:
        """Each picture goes to the model of its colour mode (`ModelChoice.companion`), at the given sigma or
        the one estimated from it (`models.quality.noise_estimation`, in the decoding worker), in one pass."""
        self.accounting.serving(entry.name, job.upload.count)
        prepared = await self.prepare(
            job.upload, _card(entry), DENOISE_AT_NOISE_LEVEL, job.options.preprocess, job.route
        )
        given = job.options.sigma
        if given is None:
            require_estimable(prepared)

        def levels() -> list[float]:
            with self.metrics.stage("estimate-noise", job.route):
                return [given if given is not None else estimate_sigma(to_levels(p.tensor)) for p in prepared]

        sigmas = await run_cpu_work(levels, 0 if given is not None else total_pixels(job.upload))
        sigma_per_image = torch.tensor(sigmas, dtype=torch.float32)  # an extra: travels with its image
        models = [self.choice.companion(entry, p.tensor.shape[0]) for p in prepared]
        by_model: dict[str, list[int]] = defaultdict(list)
        for index, model in enumerate(models):
            by_model[model.name].append(index)

        async def run_model(name: str, indices: list[int]) -> tuple[list[int], list[tuple[torch.Tensor, ...]]]:
            images = [prepared[i].tensor for i in indices]
            return indices, await self.run(name, DENOISE_AT_NOISE_LEVEL, images, {"sigma": sigma_per_image[indices]})

        outputs: list[torch.Tensor] = [torch.empty(0)] * len(prepared)
        for indices, model_outputs in await asyncio.gather(*(run_model(n, i) for n, i in by_model.items())):
            for index, output in zip(indices, model_outputs, strict=True):
                outputs[index] = output[0]
        results = [
            ImageResult(output, item.preprocessing, {"noise_sigma": round(float(sigma), 2)})
            for item, output, sigma in zip(prepared, outputs, sigmas, strict=True)
        ]
        names = sorted({model.name for model in models})
        return Images(",".join(names), results)

    async def super_resolve(self, job: ImageJob[SuperResolveOptions]) -> Images:
        """`scale` may choose the model (see ModelChoice.choose_super_resolution)."""
        entry = self.choice.choose_super_resolution(job.options.model, job.options.scale)
        return await self.transform(job, entry, SUPER_RESOLVE)

    async def reconstruct(self, job: ImageJob[ImageOptions]) -> Images:
        """The reconstructions, each with its reconstruction error (mean squared error per pixel)."""
        return await self.image_task(job, RECONSTRUCT)

    async def image_task(self, job: ImageJob[ImageOptions], task: Task) -> Images:
        """Any task of images in, images out, on the model the request names or the task's default."""
        return await self.transform(job, self.choice.choose(job.options.model, task), task)

    async def transform(self, job: ImageJob[ImageOptions], entry: ModelEntry, task: Task) -> Images:
        """Images in, images out through `task` on the chosen model: what the image routes share."""
        self.accounting.serving(entry.name, job.upload.count)
        prepared = await self.prepare(job.upload, _card(entry), task, job.options.preprocess, job.route)
        outputs = await self.run(entry.name, task, [p.tensor for p in prepared])
        results = []
        for item, output in zip(prepared, outputs, strict=True):
            extra = {"reconstruction_error": float(output[1])} if task is RECONSTRUCT else {}
            results.append(ImageResult(output[0], item.preprocessing, extra))
        return Images(entry.name, results)

    # -- images in, vectors out --------------------------------------------------------------------

    async def embed(self, job: ImageJob[EmbeddingOptions]) -> Embeddings:
        entry = self.choice.choose(job.options.model, EMBED)
        check_dimensions(entry.name, job.options.dimensions, _card(entry).latent_size)  # before any work
        self.accounting.serving(entry.name, job.upload.count)
        prepared = await self.prepare(job.upload, _card(entry), EMBED, job.options.preprocess, job.route)
        outputs = await self.run(entry.name, EMBED, [p.tensor for p in prepared])
        vectors = torch.stack([output[0] for output in outputs])  # (n, D)
        check_dimensions(entry.name, job.options.dimensions, vectors.shape[1])  # for cards that do not say
        if job.options.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=1)
        return Embeddings(entry.name, vectors, [p.preprocessing for p in prepared])

    async def vae_encode(self, job: ImageJob[EncodeOptions]) -> Posteriors:
        entry = self.choice.choose(job.options.model, VAE_ENCODE)
        self.accounting.serving(entry.name, job.upload.count)
        return await self._encode(entry, job.upload, job.options.preprocess, job.route)

    async def _encode(self, entry: ModelEntry, upload: ImageUpload, preprocess: Preprocess, route: str) -> Posteriors:
        prepared = await self.prepare(upload, _card(entry), VAE_ENCODE, preprocess, route)
        outputs = await self.run(entry.name, VAE_ENCODE, [p.tensor for p in prepared])
        means = torch.stack([output[0] for output in outputs])
        log_variances = torch.stack([output[1] for output in outputs])
        return Posteriors(entry.name, means, log_variances, [p.preprocessing for p in prepared])

    # -- latents in, images out --------------------------------------------------------------------

    async def vae_sample(
        self, model: str | None, n: int, seed: int | None, temperature: float, label: int | list[int] | None = None
    ) -> Images:
        """n images from the prior (of the given labels, for a conditional VAE); the latents come from a CPU
        generator so a seed gives the same images whatever the device and however requests were batched."""
        check_limit(n, self.settings.max_samples, "n")
        labelled = await self.labelled.sample(model, n, seed, temperature, label)
        if labelled is not None:
            return labelled
        entry = self.choice.choose(model, VAE_DECODE)
        self.accounting.serving(entry.name, n)
        size = await self.latent_size(entry)
        seed = random.SystemRandom().randrange(2**63) if seed is None else seed
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn((n, size), generator=generator) * temperature
        return Images(entry.name, [ImageResult(image) for image in await self._decode(entry, latents)], seed)

    async def vae_decode(
        self, model: str | None, latents: list[list[float]], label: int | list[int] | None = None
    ) -> Images:
        """Latent vectors, each of the model's latent size -> one image each (of its label, when conditional)."""
        check_limit(len(latents), self.settings.max_images_per_request, "latents")
        if label is not None:
            return await self.labelled.decode(model, latents_tensor(latents), label)
        if model is not None and takes_labels(self.registry.entry(model)):
            raise ValidationFailed(
                f"model {model!r} is a conditional VAE: send 'label' with the latents", param="label"
            )
        entry = self.choice.choose(model, VAE_DECODE)
        self.accounting.serving(entry.name, len(latents))
        images = await self._decode(entry, latents_tensor(latents))
        return Images(entry.name, [ImageResult(image) for image in images])

    async def vae_interpolate(self, job: ImageJob[InterpolateOptions]) -> Images:
        """A straight path in latent space, both ends included: between two images' posterior means, or
        between two latents."""
        options, upload = job.options, job.upload
        check_limit(options.steps, self.settings.max_steps, "steps")
        entry = self.choice.choose(options.model, VAE_DECODE)
        if (options.latents is None) == (upload.count == 0):
            raise InvalidRequest("send either two images or two 'latents', not both and not neither", param="images")
        if options.latents is not None:
            if len(options.latents) != 2:
                raise ValidationFailed(
                    f"'latents' needs exactly two vectors; got {len(options.latents)}", param="latents"
                )
            start, end = latents_tensor(options.latents)
        else:
            if upload.count != 2:
                raise InvalidRequest(f"interpolation needs exactly two images; got {upload.count}", param="image")
            start, end = (await self._encode(entry, upload, options.preprocess, job.route)).means
        self.accounting.serving(entry.name, options.steps)
        weights = torch.linspace(0.0, 1.0, options.steps).unsqueeze(1)  # (steps, 1)
        images = await self._decode(entry, (1 - weights) * start + weights * end)
        return Images(entry.name, [ImageResult(image) for image in images])

    async def vae_manifold(self, model: str | None, size: int, extent: float) -> Grid:
        """A size x size grid over z1, z2 in [-extent, extent], as one picture.

        Columns go along z1 (left to right), rows along z2 (top is +extent), like a plot's axes.
        """
        check_limit(size, self.settings.max_manifold_size, "size")
        entry = self.choice.choose(model, VAE_DECODE, default_key="manifold")
        self.accounting.serving(entry.name, size * size)
        dimensions = await self.latent_size(entry)
        if dimensions != 2:
            raise TaskNotSupported(
                f"the manifold needs a 2-D latent space; model {entry.name!r} has {dimensions} dimensions",
                param="model",
            )
        values = torch.linspace(-extent, extent, size)
        z1 = values.repeat(size)  # (size * size,)
        z2 = values.flip(0).repeat_interleave(size)
        images = await self._decode(entry, torch.stack([z1, z2], dim=1))
        return Grid(entry.name, tile_grid(images, grid_columns(size * size)), size)

    async def vae_latent_map(self, model: str | None) -> LatentPoints:
        """The latent map of a 2-D VAE (the manifold's model by default): read from beside its weights, no
        forward pass. The file is read in a worker thread: it holds thousands of points."""
        entry = self.choice.choose(model, VAE_DECODE, default_key="manifold")
        self.accounting.serving(entry.name, 0)
        found = await asyncio.to_thread(served_latent_map, entry)
        return LatentPoints(entry.name, found.source, found.x, found.y, found.labels)

    async def _decode(self, entry: ModelEntry, latents: torch.Tensor) -> list[torch.Tensor]:
        """(n, D) latents -> n images (C, H, W), after checking D against the model's latent size."""
        size = await self.latent_size(entry)
        if latents.shape[1] != size:
            raise ValidationFailed(
                f"model {entry.name!r} has {size} latent dimensions; got vectors of {latents.shape[1]}", param="latents"
            )
        outputs = await self.registry.run(entry.name, VAE_DECODE, latents)
        assert isinstance(outputs, torch.Tensor)
        return list(outputs)

    # -- the steps every image task takes ----------------------------------------------------------

    async def latent_size(self, entry: ModelEntry) -> int:
        """The model's latent dimensions: from its card, else from the loaded model."""
        await self.registry.load(entry.name)
        card = _card(entry)
        if card.latent_size:
            return card.latent_size
        running = self.registry.describe(entry)
        if running is None or running.latent_size is None:
            raise InvalidRequest(f"model {entry.name!r} does not state its latent size", param="model")
        return running.latent_size

    async def prepare(
        self, upload: ImageUpload, card: ModelCard, task: Task, preprocess: Preprocess, route: str
    ) -> list[PreparedImage]:
        """Decode and preprocess every image; in a worker thread unless the images are small
        (app.engine.scheduling.cpu_work)."""

        # The pixel cap bounds what the service holds and sends back: for super-resolution that is the answer,
        # scale^2 larger than the image sent (checked from the header, before anything is decoded).
        output_scale = task.output_scale(card)
        channels, max_pixels = model_takes(card).picture_channels, self.settings.max_pixels

        def work() -> list[PreparedImage]:
            with self.metrics.stage("decode", route):
                prepared = []
                for index in range(upload.count):
                    param = upload.param(index)
                    if upload.pixels is not None:  # a tensor protocol's pixels: nothing to decode
                        pixels = sent_pixels(upload.pixels[index], max_pixels, channels, param, output_scale)
                    else:
                        pixels = decode_pixels(upload.blobs[index], max_pixels, channels, param, output_scale)
                    prepared.append(prepare(pixels, card, task, preprocess, param=param))
                return prepared

        return await run_cpu_work(work, total_pixels(upload))

    async def run(
        self, name: str, task: Task, tensors: list[torch.Tensor], extras: dict[str, torch.Tensor] | None = None
    ) -> list[tuple[torch.Tensor, ...]]:
        """Run every (C, H, W) input (and its per-item extras: each extra holds one value per input) through
        the model; -> per input, the task's outputs without batch dim.

        Inputs of one shape go as one submission; different shapes (any-size models) go side by side.
        """
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, tensor in enumerate(tensors):
            groups[tuple(tensor.shape)].append(index)

        async def run_group(indices: list[int]) -> tuple[list[int], tuple[torch.Tensor, ...]]:
            group_extras = {key: extra[indices] for key, extra in extras.items()} if extras else None
            inputs = queued(torch.stack([tensors[i] for i in indices]), group_extras)
            outputs = await self.registry.run(name, task, inputs)
            return indices, outputs if isinstance(outputs, tuple) else (outputs,)

        results: list[tuple[torch.Tensor, ...]] = [()] * len(tensors)
        for indices, outputs in await asyncio.gather(*(run_group(group) for group in groups.values())):
            for position, index in enumerate(indices):
                results[index] = tuple(output[position] for output in outputs)
        return results

    # -- the models --------------------------------------------------------------------------------

    def readiness(self) -> tuple[list[str], dict[str, str]]:
        """-> why the service is not ready (nothing when it is), and the state of every model."""
        states = {name: str(entry.state) for name, entry in sorted(self.registry.entries.items())}
        return self.choice.not_ready_reasons(), states

    def models(self) -> list[ModelInfo]:
        return [self.model_info(entry) for _, entry in sorted(self.registry.entries.items())]

    def model(self, name: str) -> ModelInfo:
        return self.model_info(self.registry.entry(name))

    async def load_model(self, name: str) -> ModelInfo:
        """Load a model and run one forward pass per task its card lists."""
        entry = self.registry.entry(name)
        if entry.card is None:
            await self.registry.load(name)
        await self.registry.warm_up(name, warm_up_tasks(_card(entry)))
        return self.model_info(entry)

    async def replace_model(self, name: str) -> ModelInfo:
        """Serve the model's folder as it is now; the old weights serve until the new ones are ready, and
        keep serving if they are refused (app.engine.models.registry.ModelRegistry.replace)."""
        await self.registry.replace(name)
        return self.model_info(self.registry.entry(name))

    async def unload_model(self, name: str) -> ModelInfo:
        await self.registry.unload(name)
        return self.model_info(self.registry.entry(name))

    async def reload_models(self) -> tuple[list[str], list[str]]:
        """Rescan the checkpoints directory -> (added, removed) names."""
        return await self.registry.rescan()

    def model_info(self, entry: ModelEntry) -> ModelInfo:
        """What /v1/models says of one checkpoint (made in one place: app.engine.requests.model_info)."""
        return describe_model(entry, self.registry, self.settings.owned_by)


def _takes_noise_level(entry: ModelEntry) -> bool:
    return entry.card is not None and model_takes(entry.card).noise_level


def _card(entry: ModelEntry) -> ModelCard:
    assert entry.card is not None, "ModelChoice never hands out an entry without a card"
    return entry.card
