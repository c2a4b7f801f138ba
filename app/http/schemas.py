"""Request options and response bodies of API version 1, as pydantic models (they make the OpenAPI schema).

Options of image routes can come as query parameters, multipart form fields or JSON fields; the same
class validates all three. Unknown fields are refused (422) so a typo never passes silently.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

ModelName = Annotated[
    str | None,
    Field(description="checkpoint name (see GET /v1/models); the task's configured default when left out"),
]
ResponseFormat = Annotated[
    Literal["png", "json"] | None,
    Field(
        description="png: PNG bytes (several images come as one grid PNG); json: base64 PNGs with sizes. "
        "Default: png for one image sent as multipart or raw body, json otherwise"
    ),
]
PreprocessOption = Annotated[
    Literal["auto", "none"],
    Field(
        description="auto: for MNIST-domain models, images of another size than 28x28 are brought into the "
        "MNIST frame; none: such images are refused with a 400 naming the expected size. Models of photographs "
        "(domain 'natural') take any size and are never framed"
    ),
]
# A latent vector. The prior is N(0, I), so values beyond a few units mean nothing; past LATENT_MAX_ABS they
# only overflow to inf/NaN inside the decoder and come back as a blank image, so they are refused (422),
# as are NaN and infinities. LATENT_MAX_LENGTH bounds the work before the model's latent size is checked.
# A class label (a digit for MNIST models); the upper bound is the model's, checked by the service (422).
Label = Annotated[int, Field(ge=0, le=1000)]
LabelOption = Annotated[
    Label | list[Label] | None,
    Field(
        description="conditional VAEs (see 'labels' in GET /v1/models): one label for every image, or one per "
        "image; left out, labels are drawn at random from the seed. A model that takes no labels refuses it "
        "(422); with no model named, the default conditional model serves it"
    ),
]
LATENT_MAX_ABS = 1000.0
LATENT_MAX_LENGTH = 4096
Latent = Annotated[
    list[Annotated[float, Field(allow_inf_nan=False, ge=-LATENT_MAX_ABS, le=LATENT_MAX_ABS)]],
    Field(min_length=1, max_length=LATENT_MAX_LENGTH),
]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageOptions(Options):
    """Options of /v1/denoise, /v1/super-resolve and /v1/reconstruct."""

    model: ModelName = None
    response_format: ResponseFormat = None
    preprocess: PreprocessOption = "auto"


# The noise levels a `sigma` may name (0..255 scale): the range the photo denoisers are trained for.
MIN_SIGMA, MAX_SIGMA = 0.0, 75.0


class DenoiseOptions(ImageOptions):
    """Options of /v1/denoise: `sigma` tells a model of every noise level how strong the noise is."""

    sigma: float | None = Field(
        None,
        ge=MIN_SIGMA,
        le=MAX_SIGMA,
        description="the standard deviation of the noise on the 0..255 scale, for models of every noise level "
        "(photo-denoise-*). Left out, the service estimates it from each image and says what it used in the "
        "X-Noise-Sigma header and the JSON answer's noise_sigma; a model of one noise level refuses it (400)",
    )


# Factors a `scale` may name; the models decide which of them are served (a 400 lists those).
MIN_SCALE, MAX_SCALE = 2, 8


class SuperResolveOptions(ImageOptions):
    """Options of /v1/super-resolve: `scale` picks a model by its factor when `model` is left out."""

    scale: int | None = Field(
        None,
        ge=MIN_SCALE,
        le=MAX_SCALE,
        description="upscaling factor. Without `model`: the default super-resolution model if it has this "
        "factor, else a model that has it (those of the default's domain first, then by name); a factor no model "
        "has is a 400 listing the available ones. With `model`: it must be that model's factor (else a 400)",
    )


class EmbeddingOptions(Options):
    model: ModelName = None
    preprocess: PreprocessOption = "auto"
    normalize: bool = Field(False, description="scale every vector to unit L2 norm")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: JSON numbers; base64: the vector as little-endian float32 bytes, base64-encoded"
    )
    # OpenAI's embeddings API options, so that its clients work unchanged
    dimensions: int | None = Field(
        None,
        ge=1,
        description="the vector size the client expects: must equal the model's embedding size (its latent_size in "
        "GET /v1/models), else 422; an autoencoder's code is not ordered by importance, so it is never truncated",
    )
    user: str | None = Field(None, description="accepted and ignored (OpenAI's end-user id)")


class EncodeOptions(Options):
    model: ModelName = None
    preprocess: PreprocessOption = "auto"


class InterpolateOptions(Options):
    model: ModelName = None
    response_format: ResponseFormat = None
    preprocess: PreprocessOption = "auto"
    steps: int = Field(8, ge=2, description="images in the path, both ends included")
    latents: list[Latent] | None = Field(
        None, description="two latent vectors to interpolate between (instead of two images); JSON body only"
    )


def _label_list(value: Any) -> Any:
    """Query and form fields carry a list of labels as "3,5,7" or repeated (JSON sends a list or one number)."""
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in items):
        return items
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


class RestyleOptions(Options):
    model: ModelName = None
    response_format: ResponseFormat = None
    preprocess: PreprocessOption = "auto"
    labels: Annotated[
        list[Label] | None,
        BeforeValidator(_label_list),
        Field(
            min_length=1,
            max_length=1000,
            description="the digits to draw the image as, e.g. [3, 5] or '3,5' (a query or form field); "
            "every label of the model (0..9) when left out",
        ),
    ] = None
    source_label: Label | None = Field(
        None,
        description="the digit the image shows; left out, the model's best explanation of it (the label with the "
        "smallest negative ELBO), returned as source_label / X-Source-Label",
    )


class ImagesField(BaseModel):
    images: list[str] | None = Field(
        None, description="base64-encoded image files (PNG, JPEG, WebP, BMP, TIFF or GIF); data: URLs are accepted"
    )


# The JSON bodies of the image routes: the route's options plus `images`.
class ImageBody(ImageOptions, ImagesField):
    pass


class DenoiseBody(DenoiseOptions, ImagesField):
    pass


class SuperResolveBody(SuperResolveOptions, ImagesField):
    pass


class EmbeddingBody(EmbeddingOptions, ImagesField):
    input: str | list[str] | None = Field(
        None,
        description="OpenAI's name for the images: one base64-encoded image (or data: URL) or a list of them; "
        "decoded and limited like `images`, and sending both is a 422",
    )


class RestyleBody(RestyleOptions, ImagesField):
    pass


class EncodeBody(EncodeOptions, ImagesField):
    pass


class InterpolateBody(InterpolateOptions, ImagesField):
    pass


class JsonOptions(Options):
    """A JSON-only body: strict types, so `"n": "4"` or `"temperature": false` are refused as the schema says
    (options that may come as query or form strings stay lax)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SampleRequest(JsonOptions):
    model: ModelName = None
    n: int = Field(1, ge=1, description="how many images")
    seed: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="the same seed gives the same images; a random one is chosen and returned when left out",
    )
    temperature: float = Field(1.0, ge=0.0, le=10.0, allow_inf_nan=False, description="z ~ N(0, temperature^2 I)")
    label: LabelOption = None
    response_format: ResponseFormat = None


class DecodeRequest(JsonOptions):
    model: ModelName = None
    latents: list[Latent] = Field(..., min_length=1, description="latent vectors, each of the model's latent size")
    label: Annotated[
        Label | list[Label] | None,
        Field(description="conditional VAEs: the label to decode with, one for all latents or one each (required)"),
    ] = None
    response_format: ResponseFormat = None


# -- responses ---------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    type: str = Field(description="stable machine-readable kind, e.g. invalid_image, model_not_found")
    message: str
    param: str | None = Field(None, description="the request field or part at fault, when there is one")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class InputSpecInfo(BaseModel):
    channels: int
    height: int | None
    width: int | None
    domain: str


class ModelInfo(BaseModel):
    # OpenAI's model object (what `openai.OpenAI().models.list()` reads), then the model card
    id: str = Field(description="the model's name, as OpenAI's API calls it")
    object: Literal["model"] = "model"
    created: int = Field(
        description="when the weights were trained (the card's training.finished_at), Unix seconds; 0 when unknown"
    )
    owned_by: str = Field(description="the AE_OWNED_BY setting")
    name: str
    state: Literal["loaded", "not_loaded", "unavailable"]
    reason: str | None = Field(None, description="why the model is unavailable")
    tasks: list[str]
    architecture: str | None
    input: InputSpecInfo | None
    latent_size: int | None
    labels: list[int] | None = Field(
        None,
        description="the labels a conditional VAE takes ('label' of /v1/vae/sample and /v1/vae/decode); null: none",
    )
    scale: int | None
    device: str
    dtype: str | None = Field(None, description="the precision of the model step once loaded (see execution)")
    execution: dict[str, Any] | None = Field(
        None,
        description="once loaded, its execution plan: precision, memory_format, batch_norm_folded, compiled, "
        "threads, the reasons of each choice, the measured candidates, prepare_seconds, and the precision of a "
        "lone small input (small_input_precision, for inputs of at most small_input_values values; null: the same)",
    )
    description: str
    sha256: str | None = Field(
        None, description="sha256 of the model.safetensors that serves (or will, once loaded), checked when it loads"
    )
    metrics: dict[str, Any] = Field(description="measured by models.evaluate, from the model card")
    training: dict[str, Any]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class ImageData(BaseModel):
    index: int
    b64_png: str = Field(description="the image as a base64-encoded PNG")
    width: int
    height: int
    preprocessing: Literal["none", "mnist-frame"] | None = Field(
        None, description="what was done to the input before the model saw it (image routes)"
    )
    reconstruction_error: float | None = Field(
        None, description="mean squared error per pixel between the (preprocessed) input and its reconstruction"
    )
    noise_sigma: float | None = Field(
        None, description="/v1/denoise on a model of every noise level: the noise level used (given or estimated)"
    )
    label: int | None = Field(None, description="conditional VAEs: the label the image was drawn as")


class ImageList(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[ImageData]
    seed: int | None = Field(None, description="the seed used (/v1/vae/sample)")
    source_label: int | None = Field(
        None, description="/v1/vae/restyle: the digit the image shows (source_label, or the model's best guess)"
    )


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    images: int
    preprocessing: list[Literal["none", "mnist-frame"]]
    # OpenAI's usage keys, only in answers to requests that sent `input` (other answers stay as they were).
    # Images are not tokens: each image counts as one.
    prompt_tokens: int | None = Field(default=None, description="the number of images (requests with `input` only)")
    total_tokens: int | None = Field(default=None, description="the number of images (requests with `input` only)")


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage


class Posterior(BaseModel):
    index: int
    mean: list[float]
    log_variance: list[float]
    preprocessing: Literal["none", "mnist-frame"]


class EncodeResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Posterior]


class LatentMapResponse(BaseModel):
    """GET /v1/vae/latent-map: where test images land in a 2-D latent space, point by point."""

    object: Literal["latent_map"] = "latent_map"
    model: str
    source: str = Field(description="which images were encoded, e.g. the first 5000 MNIST test digits")
    count: int
    x: list[float] = Field(description="z1 of each image's posterior mean")
    y: list[float] = Field(description="z2 of each image's posterior mean")
    labels: list[int] = Field(description="the class (digit) of each image")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    reasons: list[str] = Field(default_factory=list)
    models: dict[str, str] = Field(default_factory=dict, description="state of every model")
