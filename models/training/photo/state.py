"""The resumable state of a photo model's training, kept small enough to commit once a session.

`training-state/<name>/` (a tracked folder, outside the served checkpoint) holds two files:

- `state.safetensors`: the weights (float32, exact), their exponential moving average (continued training:
  what is validated and published), Adam's second moments in bfloat16 (0.4% relative
  precision, ample for a per-parameter step size), Adam's step counts and the random generators. Adam's
  first moments are *not* stored: with beta1 = 0.9 they rebuild within ~20 steps, and starting them at
  zero only shortens the first steps after a resume (a built-in warm-up). This halves the optimiser's share:
  ~5 MB for the grayscale FFDNet, ~9 MB for the colour one, with the average.
- `run.json`: cumulative patch passes and training minutes (including those of the served checkpoint the
  run started from), the step count, the learning-rate phase, the training-loss curve and the validation
  curve (PSNR at sigma 15/25/50 on the fixed validation subset, against cumulative patch passes).

A file is written to a temporary name and renamed, so an interruption leaves the previous state whole.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

STATE_FILE = "state.safetensors"
RUN_FILE = "run.json"
# True: both Adam moments in float32, so a resumed run repeats an uninterrupted one exactly (3x the
# optimiser's bytes); the tests use it to check everything else a resume restores.
FULL_MOMENTS = False


@dataclass
class RunState:
    step: int = 0  # optimiser steps of this lineage since its start (fresh or from a served checkpoint)
    total_steps: int = 0  # a fresh run budgeted in steps; 0: budgeted in time (budget_s) or continued training
    budget_s: float = 0.0
    seconds: float = 0.0  # training time of this lineage, summed over every (resumed) part
    origin_patch_passes: int = 0  # what the served checkpoint it continued from had been trained on
    origin_seconds: float = 0.0
    continued: bool = False  # started from a served checkpoint's weights (continued-training schedule)
    batch_size: int = 0
    curve: list[list[float]] = field(default_factory=list)  # [cumulative patch passes, mean training loss]
    validation: list[dict[str, Any]] = field(default_factory=list)  # see `validation_point`
    paused_s: float = 0.0  # wall time not counted as training (SIGSTOP pauses, validation)
    threads: int = 0  # torch threads of the latest invocation that trained a step (0: none recorded)
    # continued training's phases, each {"from_patch_passes", "loss", "learning_rate"}: a new one whenever an
    # invocation changes the objective or the constant rate (models.training.photo.denoise.note_phase)
    phases: list[dict[str, Any]] = field(default_factory=list)

    @property
    def patch_passes(self) -> int:
        return self.origin_patch_passes + self.step * self.batch_size

    @property
    def minutes(self) -> float:
        return (self.origin_seconds + self.seconds) / 60.0


def save_state(
    directory: Path,
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    state: RunState,
    generators: dict[str, torch.Generator],
    average: nn.Module | None = None,
) -> None:
    """Write the state; `average` (the weights' moving average, continued training) in float32 beside."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if average is not None:
        tensors |= {f"average.{k}": v.detach().to("cpu").contiguous() for k, v in average.state_dict().items()}
    for index, values in optimiser.state_dict()["state"].items():
        if "exp_avg_sq" in values:
            moment = values["exp_avg_sq"].detach().to("cpu", torch.float32 if FULL_MOMENTS else torch.bfloat16)
            tensors[f"optimiser.{index}.exp_avg_sq"] = moment.contiguous()
        if "exp_avg" in values and FULL_MOMENTS:
            tensors[f"optimiser.{index}.exp_avg"] = values["exp_avg"].detach().to("cpu").contiguous()
        if "step" in values:
            tensors[f"optimiser.{index}.step"] = torch.as_tensor(values["step"], dtype=torch.float32).reshape(1)
    for name, generator in generators.items():
        tensors[f"generator.{name}"] = generator.get_state()
    temporary = directory / (STATE_FILE + ".tmp")
    safetensors.torch.save_file(tensors, str(temporary))
    temporary.replace(directory / STATE_FILE)
    record = {
        **asdict(state),
        "patch_passes": state.patch_passes,
        "minutes": round(state.minutes, 2),
    }
    (directory / (RUN_FILE + ".tmp")).write_text(json.dumps(record, indent=1) + "\n")
    (directory / (RUN_FILE + ".tmp")).replace(directory / RUN_FILE)


def load_state(
    directory: Path,
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    generators: dict[str, torch.Generator],
    average: nn.Module | None = None,
) -> RunState | None:
    """Restore what `save_state` wrote into `model`, `optimiser`, `generators` and `average` (the model's
    weights where the state holds no average); None when there is no state."""
    if not (directory / RUN_FILE).is_file() or not (directory / STATE_FILE).is_file():
        return None
    tensors = safetensors.torch.load_file(str(directory / STATE_FILE))
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    if average is not None:
        prefix = "average." if any(key.startswith("average.") for key in tensors) else "model."
        average.load_state_dict({k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)})
    parameters = [p for group in optimiser.param_groups for p in group["params"]]
    optimiser_state = optimiser.state_dict()
    for index, parameter in enumerate(parameters):
        if f"optimiser.{index}.exp_avg_sq" not in tensors:
            continue
        first = tensors.get(f"optimiser.{index}.exp_avg")
        optimiser_state["state"][index] = {
            "step": tensors[f"optimiser.{index}.step"].reshape(()).clone(),
            "exp_avg": torch.zeros_like(parameter) if first is None else torch.empty_like(parameter).copy_(first),
            "exp_avg_sq": torch.empty_like(parameter).copy_(tensors[f"optimiser.{index}.exp_avg_sq"]),
        }
    optimiser.load_state_dict(optimiser_state)
    for name, generator in generators.items():
        generator.set_state(tensors[f"generator.{name}"])
    values = json.loads((directory / RUN_FILE).read_text())
    known = set(RunState.__dataclass_fields__)
    return RunState(**{k: v for k, v in values.items() if k in known})
