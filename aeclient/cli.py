"""`ae`: one command for the service. Calling it (the client verbs, here), and running it (serve) and building
it (train, evaluate, bench), the server's verbs, which live with the server (`app.process.commands`).

    ae serve --port 8000                      # the service (needs the server install: torch)
    ae denoise noisy.png -o clean.png         # the client verbs need only httpx, numpy and Pillow
    ae embed *.png --format jsonl > vectors.jsonl
    ae sample -n 16 --seed 1 -o grid.png

The client verbs read the server's address from --url or AE_URL, and an API key from --api-key or AE_API_KEY.
This module imports no torch: the server's verbs are looked up and run only when one is asked for.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from aeclient.client import DEFAULT_URL, Client
from aeclient.errors import ApiError

EPILOG = """examples:
  ae serve                                   start the service (AE_* settings, see docs/deployment.md)
  ae health --url http://127.0.0.1:8000      is it up and ready?
  ae denoise noisy.png -o clean.png
  ae super-resolve small.png -o big.png --model mnist-sr-x4
  ae super-resolve photo.jpg -o big.png --scale 3   a model that upscales x3
  ae reconstruct a.png b.png -o out/         images to out/, one error per line on stdout
  ae embed *.png --format jsonl > vectors.jsonl
  ae sample -n 16 --seed 1 -o grid.png
  ae train mnist-ae --data-dir /data/mnist   (ae train --help for its options)
  ae train --images-dir pictures/ --task denoise --name my-denoiser --size 32
"""


def server_verbs() -> dict[str, str]:
    """The server's verbs and their summaries (app.process.commands, light to import); none without the server."""
    try:
        from app.process.commands import SERVER_VERBS
    except ImportError:
        return {}
    return {name: verb.summary for name, verb in SERVER_VERBS.items()}


def grid(images: Sequence[Image.Image], columns: int | None = None) -> Image.Image:
    """Images of one size in a grid, row by row; ceil(sqrt(n)) columns unless given."""
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    sheet = Image.new(images[0].mode, (columns * width, rows * height))
    for index, image in enumerate(images):
        sheet.paste(image, ((index % columns) * width, (index // columns) * height))
    return sheet


def output_paths(inputs: Sequence[str], output: str) -> list[Path]:
    """One input: `output` is the file. Several: `output` is a folder, each result named after its input."""
    if len(inputs) == 1 and not output.endswith(("/", os.sep)):
        return [Path(output)]
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    return [folder / f"{Path(name).stem}.png" for name in inputs]


def save_all(images: Sequence[Image.Image], paths: Sequence[Path]) -> None:
    for image, path in zip(images, paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        print(path, file=sys.stderr)


# The client verbs: each takes the parsed arguments and a connected client.
def run_images(args: argparse.Namespace, client: Client) -> int:
    if args.command == "denoise":
        images = client.denoise(list(args.images), model=args.model, preprocess=args.preprocess)
    else:
        images = client.super_resolve(list(args.images), model=args.model, preprocess=args.preprocess, scale=args.scale)
    save_all(images, output_paths(args.images, args.output))
    return 0


def run_reconstruct(args: argparse.Namespace, client: Client) -> int:
    result = client.reconstruct(list(args.images), model=args.model, preprocess=args.preprocess)
    if args.output:
        save_all(result.images, output_paths(args.images, args.output))
    for name, error in zip(args.images, result.errors, strict=True):
        print(f"{name}\t{error:.6g}")
    return 0


def run_embed(args: argparse.Namespace, client: Client) -> int:
    vectors = client.embed(list(args.images), model=args.model, preprocess=args.preprocess, normalize=args.normalize)
    if args.format == "npy":
        if not args.output:
            raise SystemExit("ae embed: --format npy writes a binary file; give -o FILE.npy")
        np.save(args.output, vectors)  # (N, D) float32, in the order of the inputs
        return 0
    rows = [{"file": name, "embedding": vector.tolist()} for name, vector in zip(args.images, vectors, strict=True)]
    if args.format == "jsonl":
        text = "".join(json.dumps(row) + "\n" for row in rows)
    else:
        text = json.dumps(rows, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def run_sample(args: argparse.Namespace, client: Client) -> int:
    images = client.vae_sample(args.n, seed=args.seed, temperature=args.temperature, model=args.model)
    save_all([grid(images, args.columns)], [Path(args.output)])
    return 0


def run_encode(args: argparse.Namespace, client: Client) -> int:
    posterior = client.vae_encode(list(args.images), model=args.model, preprocess=args.preprocess)
    for name, mean, log_variance in zip(args.images, posterior.mean, posterior.log_variance, strict=True):
        print(json.dumps({"file": name, "mean": mean.tolist(), "log_variance": log_variance.tolist()}))
    return 0


def run_decode(args: argparse.Namespace, client: Client) -> int:
    images = client.vae_decode(json.loads(args.latents), model=args.model)
    save_all([grid(images, args.columns)], [Path(args.output)])
    return 0


def run_interpolate(args: argparse.Namespace, client: Client) -> int:
    images = client.vae_interpolate(args.start, args.end, steps=args.steps, model=args.model)
    save_all([grid(images, columns=len(images))], [Path(args.output)])
    return 0


def run_manifold(args: argparse.Namespace, client: Client) -> int:
    save_all([client.vae_manifold(args.size, extent=args.range, model=args.model)], [Path(args.output)])
    return 0


def run_models(args: argparse.Namespace, client: Client) -> int:
    cards = [client.model(args.name)] if args.name else client.models()
    if args.json:
        print(json.dumps(cards if not args.name else cards[0], indent=2))
        return 0
    print(f"{'NAME':<20} {'STATE':<12} {'INPUT':<10} TASKS")
    for card in cards:
        spec = card.get("input") or {}
        if not spec:
            size = "-"
        elif spec.get("width") is None or spec.get("height") is None:
            size = "any"  # fully convolutional: any size up to the server's pixel cap
        else:
            size = f"{spec['width']}x{spec['height']}"
        print(f"{card['name']:<20} {card['state']:<12} {size:<10} {', '.join(card['tasks'])}")
    return 0


def run_health(args: argparse.Namespace, client: Client) -> int:
    """Exit 0 when ready, 1 when alive but not ready (the reasons are printed)."""
    client.health()
    readiness = client.ready()
    print(readiness["status"])
    for reason in readiness.get("reasons", []):
        print(f"  {reason}")
    return 0 if readiness["status"] == "ready" else 1


def add_client_options(parser: argparse.ArgumentParser, *, model: bool = True, preprocess: bool = False) -> None:
    group = parser.add_argument_group("server")
    group.add_argument("--url", default=os.environ.get("AE_URL", DEFAULT_URL), help="AE_URL (default %(default)s)")
    group.add_argument("--api-key", default=os.environ.get("AE_API_KEY"), help="AE_API_KEY, sent as Bearer")
    group.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default %(default)s)")
    if model:
        parser.add_argument("--model", help="checkpoint name (default: the server's default for this task)")
    if preprocess:
        parser.add_argument(
            "--preprocess", choices=["auto", "none"], default="auto", help="auto brings other sizes into the frame"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ae",
        description="Serve, train and call the autoencoder service.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, summary in server_verbs().items():
        commands.add_parser(name, help=summary, add_help=False)

    def verb(name: str, summary: str, run: Callable[[argparse.Namespace, Client], int]) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.set_defaults(run=run)
        return sub

    for name, summary in [("denoise", "remove noise from images"), ("super-resolve", "upscale images")]:
        sub = verb(name, summary, run_images)
        sub.add_argument("images", nargs="+", help="image files")
        sub.add_argument("-o", "--output", required=True, help="output file, or a folder for several inputs")
        if name == "super-resolve":
            sub.add_argument(
                "--scale", type=int, help="upscaling factor; without --model the server picks a model that has it"
            )
        add_client_options(sub, preprocess=True)

    sub = verb("reconstruct", "reconstruct images; prints each image's reconstruction error", run_reconstruct)
    sub.add_argument("images", nargs="+", help="image files")
    sub.add_argument("-o", "--output", help="where to save the reconstructions (file, or folder for several)")
    add_client_options(sub, preprocess=True)

    sub = verb("embed", "embed images as vectors", run_embed)
    sub.add_argument("images", nargs="+", help="image files")
    sub.add_argument("--format", choices=["jsonl", "json", "npy"], default="jsonl", help="default %(default)s")
    sub.add_argument("-o", "--output", help="output file (default: stdout; npy needs one)")
    sub.add_argument("--normalize", action="store_true", help="unit-length vectors")
    add_client_options(sub, preprocess=True)

    sub = verb("sample", "draw images from a VAE's prior into one grid PNG", run_sample)
    sub.add_argument("-n", type=int, default=16, help="how many images (default %(default)s)")
    sub.add_argument("--seed", type=int, help="the same seed draws the same images")
    sub.add_argument("--temperature", type=float, default=1.0, help="z ~ N(0, t^2 I) (default %(default)s)")
    sub.add_argument("--columns", type=int, help="grid columns (default: a square)")
    sub.add_argument("-o", "--output", required=True, help="the grid PNG")
    add_client_options(sub)

    sub = verb("encode", "a VAE's posterior mean and log-variance per image, as JSON lines", run_encode)
    sub.add_argument("images", nargs="+", help="image files")
    add_client_options(sub, preprocess=True)

    sub = verb("decode", "decode latent vectors into one grid PNG", run_decode)
    sub.add_argument("latents", help='JSON list of vectors, e.g. "[[0, 0], [1.5, -0.5]]"')
    sub.add_argument("--columns", type=int, help="grid columns (default: a square)")
    sub.add_argument("-o", "--output", required=True, help="the grid PNG")
    add_client_options(sub)

    sub = verb("interpolate", "a straight latent path between two images, as one row PNG", run_interpolate)
    sub.add_argument("start", help="first image file")
    sub.add_argument("end", help="last image file")
    sub.add_argument("--steps", type=int, default=8, help="images in the path, ends included (default %(default)s)")
    sub.add_argument("-o", "--output", required=True, help="the row PNG")
    add_client_options(sub)

    sub = verb("manifold", "a grid over a 2-D VAE's latent space", run_manifold)
    sub.add_argument("--size", type=int, default=15, help="images per side (default %(default)s)")
    sub.add_argument("--range", type=float, default=2.0, help="z from -range to +range (default %(default)s)")
    sub.add_argument("-o", "--output", required=True, help="the grid PNG")
    add_client_options(sub)

    sub = verb("models", "list the server's models (or show one)", run_models)
    sub.add_argument("name", nargs="?", help="one model's card")
    sub.add_argument("--json", action="store_true", help="the server's JSON as it is")
    add_client_options(sub, model=False)

    sub = verb("health", "is the server up and ready? exit 0 when ready", run_health)
    add_client_options(sub, model=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The server's verbs (serve, train, evaluate, bench) pass everything after their name on, --help included.
    if argv and argv[0] in server_verbs():
        from app.process.commands import run_verb

        return run_verb(argv[0], argv[1:])

    args = build_parser().parse_args(argv)
    options: dict[str, Any] = {"api_key": args.api_key, "timeout": args.timeout}
    try:
        with Client(args.url, **options) as client:
            return int(args.run(args, client))
    except ApiError as error:
        print(f"ae {args.command}: {error}", file=sys.stderr)
        return 1
    except httpx.TransportError as error:
        print(f"ae {args.command}: cannot reach {args.url}: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"ae {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
