"""The reference point: one checkpoint behind a minimal FastAPI route, one forward pass per request.

This is what a first version of a model server usually looks like: no batching, no queue, the
model called directly in the handler. It does the same per-request work as the service's
`/v1/denoise` for a multipart PNG upload (decode the PNG to a (1, 1, 28, 28) float tensor, run the
model, encode the output as PNG) so that the difference measured is the serving strategy.
Kept in `bench/` only; it is not part of the service.

With `AE_BENCH_BATCHED=1` the same minimal route sends its image through `app.engine.scheduling.batching.Batcher`
(the service's default settings) instead of calling the model: what batching alone buys without the rest of the
service (validation, preprocessing, middleware, logging, metrics).

With `AE_BENCH_PLAN=1` the model runs with the execution plan the service chooses for it on this machine
(models.runtime.execution: memory format, precision under the card's quality guard, batch norms folded), still one
pass per request: what the plan alone buys, without batching (`AE_BENCH_PRECISION` sets AE_PRECISION).

    AE_BENCH_CHECKPOINT=checkpoints/mnist-denoise uvicorn bench.naive_server:app --port 8001
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, Request, Response
from PIL import Image
from starlette.datastructures import UploadFile

from app.engine.scheduling.batching import Batcher, BatchingConfig
from bench.limit import planned_model
from models.checkpoint import load_checkpoint


def create_app(
    checkpoint_dir: Path, device: str = "cpu", batched: bool = False, plan: bool = False, precision: str = "auto"
) -> FastAPI:
    model = load_checkpoint(checkpoint_dir, device=device).model
    planned = planned_model(checkpoint_dir, device, precision) if plan else None

    def forward(images: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, 1, H, W)
        if planned is not None:
            return planned.run(planned.model, images).cpu()
        with torch.inference_mode():
            return model(images.to(device)).cpu()

    batching = BatchingConfig(adaptive_delay=True)  # the service's default batching settings
    batcher = Batcher("naive", forward, batching) if batched else None
    app = FastAPI(title="naive server, batched" if batched else "naive server")

    @app.get("/ping")
    async def ping() -> Response:
        """A trivial endpoint: shows what the HTTP stack and the load generator can do alone."""
        return Response(b"ok", media_type="text/plain")

    @app.post("/v1/denoise")
    async def denoise(request: Request) -> Response:
        form = await request.form()
        upload = form["image"]
        assert isinstance(upload, UploadFile)
        image = Image.open(io.BytesIO(await upload.read())).convert("L")
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None, None]  # (1, 1, H, W)
        if batcher is None:
            output = forward(pixels)[0, 0]  # (H, W)
        else:
            result = await batcher.submit(pixels)
            assert isinstance(result, torch.Tensor)
            output = result[0, 0]
        array = (output.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        buffer = io.BytesIO()
        Image.fromarray(array, mode="L").save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")

    return app


torch.set_num_threads(int(os.environ.get("AE_BENCH_TORCH_THREADS", "1")))
app = create_app(
    Path(os.environ.get("AE_BENCH_CHECKPOINT", "checkpoints/mnist-denoise")),
    os.environ.get("AE_BENCH_DEVICE", "cpu"),
    batched=os.environ.get("AE_BENCH_BATCHED", "") == "1",
    plan=os.environ.get("AE_BENCH_PLAN", "") == "1",
    precision=os.environ.get("AE_BENCH_PRECISION", "auto"),
)
