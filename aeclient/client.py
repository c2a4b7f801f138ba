"""`Client` (sync) and `AsyncClient`: the same methods over httpx, one per route of the service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
import numpy as np
from PIL import Image

from aeclient import requests as api
from aeclient.errors import error_from_response, retry_after_seconds
from aeclient.images import ImageInput
from aeclient.requests import Call, Images, Posterior, Reconstruction

T = TypeVar("T")
Latents = np.ndarray | Sequence[Sequence[float]]
DEFAULT_URL = "http://127.0.0.1:8000"


class _Base:
    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        max_retry_wait: float = 10.0,
    ) -> None:
        """max_retries: how many times a 503 carrying Retry-After is tried again (0: never); each wait is the
        server's Retry-After, capped at max_retry_wait seconds."""
        if max_retries < 0 or max_retry_wait < 0:
            raise ValueError("max_retries and max_retry_wait must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before trying again, or None when this answer is final."""
        if response.status_code != 503 or attempt >= self.max_retries:
            return None
        retry_after = retry_after_seconds(response)
        return None if retry_after is None else min(retry_after, self.max_retry_wait)

    @staticmethod
    def _result(call: Call[T], response: httpx.Response) -> T:
        if response.is_success:
            return call.parse(response)
        raise error_from_response(response)


class Client(_Base):
    """A synchronous client. Use it as a context manager, or call close()."""

    def __init__(self, base_url: str = DEFAULT_URL, *, transport: httpx.BaseTransport | None = None, **options: Any):
        super().__init__(base_url, **options)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call[Any]) -> httpx.Response:
        attempt = 0
        while True:
            response = self._http.request(call.method, call.path, json=call.json, params=call.params)
            wait = self._retry_wait(response, attempt)
            if wait is None:
                return response
            time.sleep(wait)
            attempt += 1

    def _run(self, call: Call[T]) -> T:
        return self._result(call, self._send(call))

    # Images in, images out: one or a list of inputs; always a list of PIL images, in order.
    def denoise(self, images: Images, *, model: str | None = None, preprocess: str = "auto") -> list[Image.Image]:
        return self._run(api.denoise(images, model, preprocess))

    def super_resolve(
        self, images: Images, *, model: str | None = None, preprocess: str = "auto", scale: int | None = None
    ) -> list[Image.Image]:
        """scale: the upscaling factor; without `model` the server picks a model that has it (a factor no
        model has, or one that is not `model`'s, raises InvalidRequestError)."""
        return self._run(api.super_resolve(images, model, preprocess, scale))

    def reconstruct(self, images: Images, *, model: str | None = None, preprocess: str = "auto") -> Reconstruction:
        return self._run(api.reconstruct(images, model, preprocess))

    def embed(
        self,
        images: Images,
        *,
        model: str | None = None,
        preprocess: str = "auto",
        normalize: bool = False,
        encoding_format: str = "base64",
    ) -> np.ndarray:
        """(N, D) float32 embeddings. base64 transfer is exact and smaller; "float" sends JSON numbers."""
        return self._run(api.embed(images, model, preprocess, normalize, encoding_format))

    # The VAE
    def vae_sample(
        self,
        n: int = 1,
        *,
        seed: int | None = None,
        temperature: float = 1.0,
        model: str | None = None,
        label: api.Labels = None,
    ) -> list[Image.Image]:
        """n samples; `label` (one digit, or one per sample) asks a conditional VAE for those digits."""
        return self._run(api.vae_sample(n, seed, temperature, model, label))

    def vae_decode(self, latents: Latents, *, model: str | None = None, label: api.Labels = None) -> list[Image.Image]:
        return self._run(api.vae_decode(latents, model, label))

    def vae_restyle(
        self,
        image: ImageInput,
        labels: Sequence[int] | None = None,
        *,
        source_label: int | None = None,
        model: str | None = None,
        preprocess: str = "auto",
    ) -> list[Image.Image]:
        """The digit drawn as each of `labels` (default 0..9) in its handwriting, by a conditional VAE."""
        return self._run(api.vae_restyle(image, labels, source_label, model, preprocess))

    def vae_encode(self, images: Images, *, model: str | None = None, preprocess: str = "auto") -> Posterior:
        return self._run(api.vae_encode(images, model, preprocess))

    def vae_interpolate(
        self,
        start: ImageInput | None = None,
        end: ImageInput | None = None,
        *,
        latents: Latents | None = None,
        steps: int = 8,
        model: str | None = None,
    ) -> list[Image.Image]:
        return self._run(api.vae_interpolate(start, end, latents, steps, model))

    def vae_manifold(self, size: int = 15, *, extent: float = 2.0, model: str | None = None) -> Image.Image:
        return self._run(api.vae_manifold(size, extent, model))

    # Models and health
    def models(self) -> list[dict[str, Any]]:
        return self._run(api.models())

    def model(self, name: str) -> dict[str, Any]:
        return self._run(api.model(name))

    def health(self) -> dict[str, Any]:
        return self._run(api.health())

    def ready(self) -> dict[str, Any]:
        """The readiness body, {"status": "ready" | "not_ready", "reasons", "models"}; not-ready does not raise."""
        response = self._http.get("/readyz")
        if response.status_code in (200, 503) and "status" in response.json():
            return dict(response.json())
        raise error_from_response(response)


class AsyncClient(_Base):
    """The same methods as `Client`, as coroutines. Use it as an async context manager, or await aclose()."""

    def __init__(
        self, base_url: str = DEFAULT_URL, *, transport: httpx.AsyncBaseTransport | None = None, **options: Any
    ):
        super().__init__(base_url, **options)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call[Any]) -> httpx.Response:
        attempt = 0
        while True:
            response = await self._http.request(call.method, call.path, json=call.json, params=call.params)
            wait = self._retry_wait(response, attempt)
            if wait is None:
                return response
            await asyncio.sleep(wait)
            attempt += 1

    async def _run(self, call: Call[T]) -> T:
        return self._result(call, await self._send(call))

    async def denoise(self, images: Images, *, model: str | None = None, preprocess: str = "auto") -> list[Image.Image]:
        return await self._run(api.denoise(images, model, preprocess))

    async def super_resolve(
        self, images: Images, *, model: str | None = None, preprocess: str = "auto", scale: int | None = None
    ) -> list[Image.Image]:
        return await self._run(api.super_resolve(images, model, preprocess, scale))

    async def reconstruct(
        self, images: Images, *, model: str | None = None, preprocess: str = "auto"
    ) -> Reconstruction:
        return await self._run(api.reconstruct(images, model, preprocess))

    async def embed(
        self,
        images: Images,
        *,
        model: str | None = None,
        preprocess: str = "auto",
        normalize: bool = False,
        encoding_format: str = "base64",
    ) -> np.ndarray:
        return await self._run(api.embed(images, model, preprocess, normalize, encoding_format))

    async def vae_sample(
        self,
        n: int = 1,
        *,
        seed: int | None = None,
        temperature: float = 1.0,
        model: str | None = None,
        label: api.Labels = None,
    ) -> list[Image.Image]:
        """n samples; `label` (one digit, or one per sample) asks a conditional VAE for those digits."""
        return await self._run(api.vae_sample(n, seed, temperature, model, label))

    async def vae_decode(
        self, latents: Latents, *, model: str | None = None, label: api.Labels = None
    ) -> list[Image.Image]:
        return await self._run(api.vae_decode(latents, model, label))

    async def vae_restyle(
        self,
        image: ImageInput,
        labels: Sequence[int] | None = None,
        *,
        source_label: int | None = None,
        model: str | None = None,
        preprocess: str = "auto",
    ) -> list[Image.Image]:
        """The digit drawn as each of `labels` (default 0..9) in its handwriting, by a conditional VAE."""
        return await self._run(api.vae_restyle(image, labels, source_label, model, preprocess))

    async def vae_encode(self, images: Images, *, model: str | None = None, preprocess: str = "auto") -> Posterior:
        return await self._run(api.vae_encode(images, model, preprocess))

    async def vae_interpolate(
        self,
        start: ImageInput | None = None,
        end: ImageInput | None = None,
        *,
        latents: Latents | None = None,
        steps: int = 8,
        model: str | None = None,
    ) -> list[Image.Image]:
        return await self._run(api.vae_interpolate(start, end, latents, steps, model))

    async def vae_manifold(self, size: int = 15, *, extent: float = 2.0, model: str | None = None) -> Image.Image:
        return await self._run(api.vae_manifold(size, extent, model))

    async def models(self) -> list[dict[str, Any]]:
        return await self._run(api.models())

    async def model(self, name: str) -> dict[str, Any]:
        return await self._run(api.model(name))

    async def health(self) -> dict[str, Any]:
        return await self._run(api.health())

    async def ready(self) -> dict[str, Any]:
        response = await self._http.get("/readyz")
        if response.status_code in (200, 503) and "status" in response.json():
            return dict(response.json())
        raise error_from_response(response)
