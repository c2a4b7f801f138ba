"""A Python client for the autoencoder service, importable without torch (httpx, numpy and Pillow only).

    from aeclient import Client
    with Client("http://127.0.0.1:8000") as ae:
        clean = ae.denoise("noisy.png")[0]          # a PIL image
        vectors = ae.embed(["a.png", "b.png"])       # (2, D) float32 array

`AsyncClient` has the same methods as coroutines. Errors from the server raise `ApiError` subclasses.
"""

from aeclient.client import AsyncClient, Client
from aeclient.errors import (
    ApiError,
    AuthenticationError,
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from aeclient.images import ImageInput
from aeclient.requests import Posterior, Reconstruction

__all__ = [
    "ApiError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ImageInput",
    "InvalidRequestError",
    "ModelNotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Posterior",
    "Reconstruction",
    "ServiceUnavailableError",
    "UnsupportedMediaTypeError",
    "ValidationError",
]
