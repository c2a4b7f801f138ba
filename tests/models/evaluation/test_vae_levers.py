"""The VAE lever table compares like with like: every lever varies the first recipe, whatever ships now."""

from __future__ import annotations

from pathlib import Path

from models.evaluation.vae_levers import BASELINE_ARCHITECTURE, lever_recipes, shipped_label
from models.training.recipes import RECIPES


def test_every_lever_varies_the_first_recipe_not_the_shipped_one() -> None:
    levers = lever_recipes(5, continue_from=Path("first-vae"))
    baseline, _ = levers["baseline"]
    assert baseline.architecture_config == BASELINE_ARCHITECTURE and baseline.fine_tune is None
    assert baseline.objective.name == "bernoulli-elbo" and baseline.epochs == 5
    assert RECIPES["mnist-vae"].architecture_config != BASELINE_ARCHITECTURE  # the shipped recipe moved on
    for name, (recipe, extra) in levers.items():
        assert recipe.fine_tune is None, name
        if name.startswith("continue"):
            assert extra["init_from"] == Path("first-vae"), name


def test_the_shipped_row_is_named_by_how_the_model_was_trained() -> None:
    one_stage = {"epochs": 50, "objective": "bernoulli-elbo"}
    assert shipped_label(one_stage) == "shipped mnist-vae (50 epochs bernoulli-elbo)"
    two_stages = {"epochs": 5, "objective": "bernoulli-iwae", "initialised_from": {"first_stage": one_stage}}
    assert shipped_label(two_stages) == "shipped mnist-vae (50 epochs bernoulli-elbo, then 5 epochs bernoulli-iwae)"
    from_a_checkpoint = {**two_stages, "initialised_from": {"checkpoint": "mnist-vae", "training": {"epochs": 50}}}
    assert shipped_label(from_a_checkpoint) == "shipped mnist-vae (50 epochs, then 5 epochs bernoulli-iwae)"
