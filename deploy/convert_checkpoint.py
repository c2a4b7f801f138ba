"""Turn an existing PyTorch model into a checkpoint folder the service serves as it is.

From your own training code, with the model in hand:

    from deploy.convert_checkpoint import convert_model
    convert_model(model, "checkpoints/my-ae", name="my-ae", tasks=["reconstruct", "embed"])

Or from a weights file (safetensors only: a pickled .pt file can run code when loaded, so load it yourself,
in your own process, and call convert_model):

    python deploy/convert_checkpoint.py weights.safetensors --architecture conv-autoencoder \\
        --config '{"latent_size": 32}' --name my-ae --tasks reconstruct embed --out checkpoints/my-ae

The weights must fit one of the service's architectures (`python -c "from models.architectures import
ARCHITECTURES; print(list(ARCHITECTURES))"`): the service rebuilds the network from the card, never from code
in the checkpoint. The state dict is loaded strictly, so a name or shape that differs is an error here and
not a surprise at serving time.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from models.architectures import build_model
from models.architectures.base import Architecture
from models.checkpoint import InputSpec, ModelCard, load_checkpoint, save_checkpoint


def convert_model(
    model: Architecture,
    directory: str | Path,
    *,
    name: str,
    tasks: Sequence[str],
    input_spec: InputSpec | None = None,
    description: str = "",
    training: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Write `model` as `directory/model.safetensors` + `config.json`, then load it back as the service will."""
    spec = input_spec or InputSpec(channels=1, height=28, width=28, domain="mnist")
    card = ModelCard(
        name=name,
        tasks=list(tasks),
        architecture=model.name,
        architecture_config={},  # save_checkpoint fills both from the model itself
        input=spec,
        scale=getattr(model, "scale", None),
        latent_size=_latent_size(model),
        description=description,
        training=dict(training or {"source": "converted with deploy/convert_checkpoint.py"}),
        metrics=dict(metrics or {}),
    )
    save_checkpoint(model, card, Path(directory))
    load_checkpoint(Path(directory), "cpu")  # fails now, with the reason, if the service could not load it
    return card


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], architecture: str, config: Mapping[str, Any], **card: Any
) -> ModelCard:
    """Weights of a registered architecture (e.g. from a safetensors file) -> a checkpoint folder."""
    model = build_model(architecture, dict(config))
    model.load_state_dict(dict(state_dict), strict=True)
    model.eval()
    directory = card.pop("directory")
    return convert_model(model, directory, **card)


def _latent_size(model: Architecture) -> int | None:
    for attribute in ("embedding_size", "latent_size"):
        value = getattr(model, attribute, None) or getattr(model.config, attribute, None)
        if isinstance(value, int):
            return value
    return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert safetensors weights into a servable checkpoint folder.")
    parser.add_argument("weights", type=Path, help="a .safetensors state dict")
    parser.add_argument("--architecture", required=True, help="a key of models.architectures.ARCHITECTURES")
    parser.add_argument("--config", default="{}", help="JSON keyword arguments of the architecture's config")
    parser.add_argument("--name", required=True, help="the model's name (use the folder's name)")
    parser.add_argument("--tasks", nargs="+", required=True, help="reconstruct embed denoise super-resolve vae")
    parser.add_argument("--size", type=int, nargs=2, default=(28, 28), metavar=("H", "W"), help="input size")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--domain", default="mnist", choices=["mnist", "natural"])
    parser.add_argument("--description", default="")
    parser.add_argument("--out", type=Path, required=True, help="the checkpoint folder, e.g. checkpoints/NAME")
    args = parser.parse_args(argv)
    card = convert_state_dict(
        safetensors.torch.load_file(str(args.weights)),
        args.architecture,
        json.loads(args.config),
        directory=args.out,
        name=args.name,
        tasks=args.tasks,
        input_spec=InputSpec(channels=args.channels, height=args.size[0], width=args.size[1], domain=args.domain),
        description=args.description,
    )
    print(f"{args.out}: {card.architecture}, tasks {card.tasks}, sha256 {card.weights_sha256}")


if __name__ == "__main__":
    main()
