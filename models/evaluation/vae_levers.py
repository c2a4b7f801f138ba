"""Which standard lever improves the unconditional VAE: each one trained at the same budget and measured by
the same bound, the importance-sampled NLL on MNIST test digits 5000-5999 (binarised with seed 0, the whole
test set drawn at once) with 200 posterior samples (seed 0).

    python -m models.evaluation.vae_levers --data-dir ../shared/datasets/mnist --epochs 5 --threads 1 \
        --out docs/vae-levers.json [--only baseline latent-32]

Levers are variants of the `mnist-vae` recipe (models.training.recipes); "continue" trains the shipped mnist-vae
further (its weights as the start, a lower learning rate), the "longer training" lever; "iwae-5" trains on the
5-sample importance-weighted bound (models.training.importance_weighted) and "continue-iwae-k" fine-tunes the
shipped weights on the k-sample bound; "vampprior" learns its prior, a mixture of the encoder's posteriors on K
pseudo-inputs (models.training.vamp_prior), which its NLL then uses in the importance weights. A run with
--epochs other than 5 is stored as "NAME (E epochs)". Nothing here writes a checkpoint: a lever worth shipping
becomes a recipe, and `--checkpoint DIR --label NAME` scores what `python -m models.train mnist-vae ... --out DIR`
wrote by the same protocol.

The levers are variants of the first `mnist-vae` recipe (widths 32/64, hidden 256, 50 epochs of the ELBO), which
the shipped model replaced on 3 December 2026 once a combination of them reached the target; the "continue" rows
start from that first model's weights (sha256 0d5b71ce..., `git show 36f27d0:checkpoints/mnist-vae/...`), to be
put in a folder and passed as --continue-from to run them again.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from models.architectures import ConvVAE
from models.checkpoint import load_checkpoint
from models.data.mnist import load_mnist
from models.evaluation.mnist.vae import importance_sampled_bounds
from models.training.importance_weighted import ImportanceWeightedElbo
from models.training.loop import TrainOptions, train
from models.training.mnist import TrainingData
from models.training.objectives import BernoulliElbo
from models.training.recipes import RECIPES, Recipe
from models.training.vamp_prior import VampPriorElbo, VampPriorVAE

FIRST, LAST = 5000, 6000  # the test digits of the comparison
SAMPLES = 200
# The architecture every stored 5-epoch row was measured at ("baseline" among them): the VampPrior adds its prior
# to exactly this network, whatever the shipped recipe becomes.
BASELINE_ARCHITECTURE: dict[str, Any] = {"latent_size": 16, "widths": (32, 64), "hidden_size": 256}
# The first mnist-vae recipe, one stage of the ELBO at the baseline's architecture: what every lever varies.
BASE = dataclasses.replace(RECIPES["mnist-vae"], architecture_config=BASELINE_ARCHITECTURE, fine_tune=None)
FIRST_VAE = Path("checkpoints/mnist-vae")  # where the "continue" levers find the first recipe's weights
VAMP_PSEUDO_INPUTS = 500  # K, the paper's
# Levers built from their own class rather than the registry's (measured, never served).
UNSERVED = {VampPriorVAE.name: VampPriorVAE}


def lever_recipes(epochs: int, continue_from: Path = FIRST_VAE) -> dict[str, tuple[Recipe, dict[str, Any]]]:
    """name -> (recipe, training options beyond the epochs); `continue_from`: the first recipe's weights."""
    config = dict(BASE.architecture_config)
    warm_up = BernoulliElbo(kl_warmup_epochs=epochs / 10)  # as the shipped recipe: the first tenth of the run
    base = dataclasses.replace(BASE, objective=warm_up, epochs=epochs)
    return {
        "baseline": (base, {}),
        "no-kl-warm-up": (dataclasses.replace(base, objective=BernoulliElbo(kl_warmup_epochs=0)), {}),
        "latent-32": (dataclasses.replace(base, architecture_config={**config, "latent_size": 32}), {}),
        "wider": (
            dataclasses.replace(base, architecture_config={**config, "widths": (64, 128), "hidden_size": 512}),
            {},
        ),
        # Already warmed up: the full KL from the first step.
        "continue": (
            dataclasses.replace(base, objective=BernoulliElbo(kl_warmup_epochs=0)),
            {"init_from": continue_from, "learning_rate": 2e-4},
        ),
        "iwae-5": (
            dataclasses.replace(base, objective=ImportanceWeightedElbo(kl_warmup_epochs=epochs / 10, samples=5)),
            {},
        ),
        # The shipped weights fine-tuned on the k-sample bound: a higher rate than "continue", as the encoder
        # has to move (the bound rewards a broader posterior than the ELBO's).
        **{
            f"continue-iwae-{k}": (
                dataclasses.replace(base, objective=ImportanceWeightedElbo(samples=k)),
                {"init_from": continue_from, "learning_rate": 3e-4},
            )
            for k in (5, 10)
        },
        "vampprior": (
            dataclasses.replace(
                base,
                architecture=VampPriorVAE.name,
                architecture_config={**BASELINE_ARCHITECTURE, "pseudo_inputs": VAMP_PSEUDO_INPUTS},
                objective=VampPriorElbo(kl_warmup_epochs=epochs / 10),
            ),
            {},
        ),
    }


@torch.no_grad()
def nll_on_comparison_digits(model: ConvVAE, data_dir: Path) -> dict[str, float]:
    test = load_mnist(data_dir, "test").images
    binary = torch.bernoulli(test, generator=torch.Generator().manual_seed(0))[FIRST:LAST]
    generator = torch.Generator().manual_seed(0)
    totals = torch.zeros(3, dtype=torch.float64)
    # A learned prior enters the importance weights (and the KL); the standard normal is the function's own.
    log_prior = model.log_prior if isinstance(model, VampPriorVAE) else None
    for start in range(0, len(binary), 50):
        bounds = importance_sampled_bounds(model.eval(), binary[start : start + 50], SAMPLES, generator, log_prior)
        totals += torch.stack([bound.sum().double() for bound in bounds])
    negative_elbo, nll, kl = (totals / len(binary)).tolist()
    return {"negative_elbo_nats": round(negative_elbo, 3), "nll_nats": round(nll, 3), "kl_nats": round(kl, 3)}


def shipped_label(training: dict[str, Any]) -> str:
    """The shipped model's row, named by how it was trained: a model shipped later gets a row of its own."""
    start = training.get("initialised_from") or {}
    first = start.get("first_stage") or start.get("training")  # the same run, or a checkpoint's (--init-from)
    stages = " ".join(f"{first['epochs']} epochs {first.get('objective', '')}".split()) + ", then " if first else ""
    return f"shipped mnist-vae ({stages}{training['epochs']} epochs {training['objective']})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.evaluation.vae_levers", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", metavar="LEVER")
    parser.add_argument("--out", type=Path, default=Path("docs/vae-levers.json"))
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="DIR",
        help="also score this checkpoint (e.g. one `python -m models.train ... --out` wrote), as the lever --label",
    )
    parser.add_argument("--label", help="its row's name (default: the folder's path)")
    parser.add_argument(
        "--continue-from", type=Path, default=FIRST_VAE, help="the first recipe's weights, for the continue levers"
    )
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    results: dict[str, Any] = json.loads(arguments.out.read_text()) if arguments.out.is_file() else {}
    shipped = load_checkpoint(Path("checkpoints/mnist-vae"))
    assert isinstance(shipped.model, ConvVAE)
    results[shipped_label(shipped.card.training)] = {**nll_on_comparison_digits(shipped.model, arguments.data_dir)}
    if arguments.checkpoint is not None:
        candidate = load_checkpoint(arguments.checkpoint)
        assert isinstance(candidate.model, ConvVAE)
        training = candidate.card.training
        results[arguments.label or str(arguments.checkpoint)] = {
            **nll_on_comparison_digits(candidate.model, arguments.data_dir),
            "train_minutes": round(training["duration_s"] / 60, 1),
            **{key: training[key] for key in ("command", "epochs", "initialised_from") if key in training},
            "architecture_config": candidate.model.config_dict(),
            "objective": {
                key: training[key] for key in ("objective", "loss", "kl_warmup_epochs", "samples") if key in training
            },
        }
    data = TrainingData.hold_out(load_mnist(arguments.data_dir, "train"))
    for name, (recipe, extra) in lever_recipes(arguments.epochs, arguments.continue_from).items():
        if (arguments.only or arguments.checkpoint) and name not in (arguments.only or ()):  # only those asked
            continue
        started = time.perf_counter()
        options = TrainOptions(
            epochs=arguments.epochs,
            stream=io.StringIO(),
            architecture_class=UNSERVED.get(recipe.architecture),
            **extra,
        )
        result = train(recipe, data, options)
        minutes = (time.perf_counter() - started) / 60
        assert isinstance(result.model, ConvVAE)
        figures = nll_on_comparison_digits(result.model, arguments.data_dir)
        # One entry per lever and budget: the 5-epoch comparison keeps the bare name.
        results[name if arguments.epochs == 5 else f"{name} ({arguments.epochs} epochs)"] = {
            **figures,
            "epochs": arguments.epochs,
            "train_minutes": round(minutes, 1),
            "images_per_second": round(result.images_per_second, 1),
            "architecture_config": result.model.config_dict(),
            "objective": recipe.objective.describe(),
            **{key: str(value) for key, value in extra.items()},
        }
        print(f"{name}: NLL {figures['nll_nats']:.2f} nats, {minutes:.1f} min", file=sys.stderr, flush=True)
        arguments.out.write_text(json.dumps(results, indent=2) + "\n")
    arguments.out.write_text(json.dumps(results, indent=2) + "\n")
    assert all(math.isfinite(value["nll_nats"]) for value in results.values())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
