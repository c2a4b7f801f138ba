"""The peer: LitServe (the `litserve` package) serving the same checkpoint, as its documentation shows.

LitServe advertises at least 2x the throughput of plain FastAPI through its own batching and a separate
inference worker process. Here it serves `POST /v1/denoise` with `max_batch_size=32` and
`batch_timeout=5 ms`, with the same per-request work as the naive server and the service: decode the
uploaded PNG (multipart field `image`) to a (1, H, W) float tensor, run the model eager in float32 (as a
user writes it first), encode the output as PNG. Kept in `bench/` only; it is not part of the service.

    python -m bench.litserve_server --checkpoint checkpoints/mnist-denoise --port 8002
"""

# No `from __future__ import annotations` here: LitServe reads decode_request's annotation at run time
# (Request: the raw request, parsed as a form when it is multipart) to build its route.
import argparse
import io
from pathlib import Path

import litserve as ls
import numpy as np
import torch
from fastapi import Request, Response
from PIL import Image

from models.checkpoint import load_checkpoint

MAX_BATCH_SIZE = 32
BATCH_TIMEOUT_S = 0.005


class DenoiseAPI(ls.LitAPI):
    def __init__(self, checkpoint: Path, threads: int) -> None:
        super().__init__(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S, api_path="/v1/denoise")
        self.checkpoint = checkpoint
        self.threads = threads

    def setup(self, device: str) -> None:
        torch.set_num_threads(self.threads)  # in the inference worker process, where the model runs
        self.device = device
        self.model = load_checkpoint(self.checkpoint, device=device).model

    def decode_request(self, request: Request) -> torch.Tensor:
        upload = request["image"]  # LitServe hands over the multipart form it parsed
        image = Image.open(io.BytesIO(upload.file.read())).convert("L")
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]  # (1, H, W)

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)  # (B, 1, H, W)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(images.to(self.device)).cpu()

    def unbatch(self, outputs: torch.Tensor) -> list[torch.Tensor]:
        return list(outputs)

    def encode_response(self, output: torch.Tensor) -> Response:
        array = (output[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        buffer = io.BytesIO()
        Image.fromarray(array, mode="L").save(buffer, format="PNG")
        return Response(content=buffer.getvalue(), media_type="image/png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/mnist-denoise"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the inference worker")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    server = ls.LitServer(DenoiseAPI(args.checkpoint, args.threads), accelerator=args.device, workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
