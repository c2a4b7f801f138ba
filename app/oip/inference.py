"""One inference of the Open Inference Protocol, whichever transport brought it: check the input tensors
against the protocol model's metadata (app.oip.model_map), run the service (app.engine.service) as the REST routes
do, and return the output tensors. Nothing here is business logic of its own: the service chooses, batches
(with the REST requests of the same model) and raises `app.errors`; each transport maps those errors.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict

import numpy as np
import torch
from pydantic import ValidationError

from app.engine.requests.jobs import ImageJob, ImageResult, Images, ImageUpload
from app.engine.service import Service
from app.errors import InvalidRequest, PayloadTooLarge, ValidationFailed
from app.http.schemas import (
    MAX_SIGMA,
    MIN_SIGMA,
    DenoiseOptions,
    EmbeddingOptions,
    EncodeOptions,
    ImageOptions,
    SampleRequest,
    SuperResolveOptions,
)
from app.oip.model_map import ANY, ProtocolModel, TensorSpec
from app.oip.tensors import InferRequest, Tensor


async def infer(service: Service, model: ProtocolModel, request: InferRequest, route: str) -> list[Tensor]:
    """The outputs `request` asks for (all of the model's when it names none), in the metadata's order."""
    inputs = checked_inputs(model, request.inputs)
    wanted = requested_outputs(model, request.requested)
    outputs = await run(service, model, inputs, route)
    chosen = [tensor for tensor in outputs if tensor.name in wanted]
    for tensor in chosen:
        tensor.binary = tensor.name in request.binary_outputs or "*" in request.binary_outputs
    return chosen


def checked_inputs(model: ProtocolModel, tensors: list[Tensor]) -> dict[str, Tensor]:
    """Inputs by name, each of the datatype and shape the metadata states; the required ones present."""
    found: dict[str, Tensor] = {}
    for tensor in tensors:
        spec = model.input(tensor.name)
        if spec is None:
            names = ", ".join(s.name for s in model.inputs)
            raise InvalidRequest(
                f"model {model.name!r} has no input {tensor.name!r}; its inputs: {names}", param=tensor.name
            )
        if tensor.name in found:
            raise InvalidRequest(f"input {tensor.name!r} is given twice", param=tensor.name)
        check_tensor(model, spec, tensor)
        found[tensor.name] = tensor
    for spec in model.inputs:
        if not spec.optional and spec.name not in found:
            raise InvalidRequest(f"model {model.name!r} needs input {spec.name!r}", param=spec.name)
    return found


def check_tensor(model: ProtocolModel, spec: TensorSpec, tensor: Tensor) -> None:
    if tensor.datatype != spec.datatype:
        raise InvalidRequest(
            f"input {spec.name!r} of model {model.name!r} is {spec.datatype}; got {tensor.datatype}", param=spec.name
        )
    shape = tensor.shape
    fits = len(shape) == len(spec.shape) and all(
        want in (ANY, got) for want, got in zip(spec.shape, shape, strict=True)
    )
    if not fits:
        raise InvalidRequest(
            f"input {spec.name!r} of model {model.name!r} has shape {list(spec.shape)} (-1: any size); got {shape}",
            param=spec.name,
        )


def requested_outputs(model: ProtocolModel, requested: list[str] | None) -> set[str]:
    names = {spec.name for spec in model.outputs}
    if requested is None:
        return names
    for name in requested:
        if name not in names:
            raise InvalidRequest(
                f"model {model.name!r} has no output {name!r}; its outputs: {', '.join(sorted(names))}", param=name
            )
    return set(requested)


async def run(service: Service, model: ProtocolModel, inputs: dict[str, Tensor], route: str) -> list[Tensor]:
    name = model.model
    if model.task == "sample":
        return await sample(service, model, inputs)
    if model.task == "decode":
        latents = inputs["LATENT"].data.astype(np.float32)
        check_finite(latents, "LATENT")
        label = labels_of(inputs.get("LABEL"))
        decoded = await service.vae_decode(name, latents.tolist(), label)
        return [image_tensor(decoded), *label_tensor(model, decoded)]
    upload = ImageUpload.of_pixels(list(inputs["IMAGE"].data), "IMAGE")
    if upload.count == 0:
        raise InvalidRequest("input 'IMAGE' holds no images", param="IMAGE")
    limit = service.settings.max_images_per_request
    if upload.count > limit:
        raise PayloadTooLarge(f"{upload.count} images in one request; the limit is {limit}", param="IMAGE")
    if model.task == "embed":
        embedded = await service.embed(
            ImageJob(upload, EmbeddingOptions.model_validate({"model": name, "preprocess": "none"}), route)
        )
        return [Tensor("EMBEDDING", "FP32", embedded.vectors.numpy().astype(np.float32))]
    if model.task == "encode":
        posteriors = await service.vae_encode(ImageJob(upload, EncodeOptions(model=name, preprocess="none"), route))
        return [
            Tensor("MEAN", "FP32", posteriors.means.numpy().astype(np.float32)),
            Tensor("LOG_VARIANCE", "FP32", posteriors.log_variances.numpy().astype(np.float32)),
        ]
    if model.task == "reconstruct":
        images = await service.reconstruct(ImageJob(upload, ImageOptions(model=name, preprocess="none"), route))
        errors = [result.extra["reconstruction_error"] for result in images.results]
        return [image_tensor(images), Tensor("RECONSTRUCTION_ERROR", "FP32", np.asarray(errors, dtype=np.float32))]
    if model.task == "super-resolve":
        options = SuperResolveOptions.model_validate({"model": name, "preprocess": "none"})
        return [image_tensor(await service.super_resolve(ImageJob(upload, options, route)))]
    if model.task == "denoise":
        return await denoise(service, model, upload, inputs.get("SIGMA"), route)
    raise InvalidRequest(f"model {model.name!r} cannot be run here", param="model_name")  # not reached: model_map


async def denoise(
    service: Service, model: ProtocolModel, upload: ImageUpload, sigma: Tensor | None, route: str
) -> list[Tensor]:
    """SIGMA holds one level for every image or one per image; images of the same level share a service call
    (the service takes one level per request), and come back in request order."""
    assert upload.pixels is not None
    pixels, count = upload.pixels, upload.count
    levels: list[float | None] = [None] * count
    if sigma is not None:
        values = sigma.data.astype(np.float64).reshape(-1)
        if values.size not in (1, count):
            raise InvalidRequest(
                f"SIGMA holds {values.size} levels for {count} images: give 1 or {count}", param="SIGMA"
            )
        if not all(math.isfinite(v) and MIN_SIGMA <= v <= MAX_SIGMA for v in values):
            raise InvalidRequest(f"SIGMA levels are between {MIN_SIGMA:g} and {MAX_SIGMA:g}", param="SIGMA")
        levels = [float(v) for v in np.broadcast_to(values, (count,))]
    groups: dict[float | None, list[int]] = defaultdict(list)
    for index, level in enumerate(levels):
        groups[level].append(index)

    async def run_group(level: float | None, indices: list[int]) -> tuple[list[int], Images]:
        part = ImageUpload.of_pixels([pixels[i] for i in indices], "IMAGE") if len(groups) > 1 else upload
        options = DenoiseOptions(model=model.model, preprocess="none", sigma=level)
        return indices, await service.denoise(ImageJob(part, options, route))

    results = await asyncio.gather(*(run_group(level, indices) for level, indices in groups.items()))
    ordered: list[ImageResult | None] = [None] * count
    for indices, images in results:
        for index, result in zip(indices, images.results, strict=True):
            ordered[index] = result
    merged = Images(model.model, [result for result in ordered if result is not None])
    outputs = [image_tensor(merged)]
    if model.input("SIGMA") is not None:  # a model of every noise level: the level each image was denoised at
        used = [float(result.extra.get("noise_sigma", 0.0)) for result in merged.results]
        outputs.append(Tensor("NOISE_SIGMA", "FP32", np.asarray(used, dtype=np.float32)))
    return outputs


async def sample(service: Service, model: ProtocolModel, inputs: dict[str, Tensor]) -> list[Tensor]:
    values = {"n": int(inputs["N"].data.reshape(-1)[0])}
    if "SEED" in inputs:
        values["seed"] = int(inputs["SEED"].data.reshape(-1)[0])
    if "TEMPERATURE" in inputs:
        values["temperature"] = float(inputs["TEMPERATURE"].data.reshape(-1)[0])  # type: ignore[assignment]
    if "LABEL" in inputs:
        values["label"] = labels_of(inputs["LABEL"])  # type: ignore[assignment]
    try:
        options = SampleRequest.model_validate(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        tensor = str(error["loc"][0]).upper() if error["loc"] else "N"
        raise ValidationFailed(f"{tensor}: {error['msg']}", param=tensor) from None
    images = await service.vae_sample(model.model, options.n, options.seed, options.temperature, options.label)
    seed = Tensor("SEED", "INT64", np.asarray([images.seed], dtype=np.int64))
    return [image_tensor(images), seed, *label_tensor(model, images)]


def labels_of(tensor: Tensor | None) -> int | list[int] | None:
    """LABEL [-1]: one label for every image, or one per image (the service checks them against the model's)."""
    if tensor is None:
        return None
    values = [int(value) for value in tensor.data.reshape(-1)]
    return values[0] if len(values) == 1 else values


def label_tensor(model: ProtocolModel, images: Images) -> list[Tensor]:
    """LABEL INT32 (n,): the label each image was drawn as, for the models that answer it."""
    if model.output("LABEL") is None:
        return []
    labels = [int(result.extra.get("label", -1)) for result in images.results]
    return [Tensor("LABEL", "INT32", np.asarray(labels, dtype=np.int32))]


def image_tensor(images: Images) -> Tensor:
    """IMAGE UINT8 (n, H, W, C): each (C, H, W) result in [0, 1] rounded to 0..255 as the PNG answers are
    (app.imaging.tensor_to_image). Images of different sizes cannot share one tensor: a 400 asks for one size."""
    shapes = {tuple(result.image.shape) for result in images.results}
    if len(shapes) > 1:
        raise InvalidRequest("the images of one request must share one size to come back as one tensor", param="IMAGE")
    stack = torch.stack([result.image for result in images.results])
    pixels = (stack.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu()
    return Tensor("IMAGE", "UINT8", pixels.permute(0, 2, 3, 1).contiguous().numpy())


def check_finite(values: np.ndarray, name: str) -> None:
    if not np.isfinite(values).all():
        raise InvalidRequest(f"{name} holds NaN or infinite values", param=name)
