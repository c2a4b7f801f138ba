"""Measure trained checkpoints against classical baselines and write the results into their cards.

Each task a card lists is measured by one function, looked up in TASK_EVALUATIONS.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from models.checkpoint import (
    CARD_FILE,
    Checkpoint,
    ModelCard,
    load_checkpoint,
    read_card,
    update_metrics,
    update_serving_precision,
)
from models.evaluation.context import EvaluationContext, EvaluationSettings
from models.evaluation.mnist.denoise import evaluate_denoising
from models.evaluation.mnist.embedding import evaluate_embedding, evaluate_reconstruction
from models.evaluation.mnist.sample_quality import evaluate_classification, evaluate_conditional_vae
from models.evaluation.mnist.super_resolution import evaluate_super_resolution
from models.evaluation.mnist.vae import evaluate_vae
from models.evaluation.photo.denoise import evaluate_photo_denoising
from models.evaluation.photo.natural import evaluate_natural_denoising, evaluate_natural_super_resolution
from models.evaluation.precision import measure_precision
from models.evaluation.reporting.model_report import render_report
from models.runtime.machine import machine_description

# The tasks the quality guard of reduced precision (models.evaluation.precision) knows how to measure.
GUARDED_TASKS = {"denoise", "super-resolve", "reconstruct", "embed", "vae"}
TaskEvaluation = Callable[[Checkpoint, EvaluationContext], dict[str, Any]]

TASK_EVALUATIONS: dict[str, TaskEvaluation] = {
    "denoise": evaluate_denoising,
    "super-resolve": evaluate_super_resolution,
    "embed": evaluate_embedding,
    "reconstruct": evaluate_reconstruction,
    "vae": evaluate_vae,
    "conditional-vae": evaluate_conditional_vae,
    "classify": evaluate_classification,
}

# Models of photographs (card input domain "natural") are measured with the literature's protocols.
NATURAL_TASK_EVALUATIONS: dict[str, TaskEvaluation] = {
    "denoise": evaluate_natural_denoising,
    "super-resolve": evaluate_natural_super_resolution,
}

# Architectures whose tasks take another protocol than their domain's: the photo denoisers of every noise
# level are measured on gray and colour sets under two protocols (models.evaluation.photo.denoise).
ARCHITECTURE_EVALUATIONS: dict[str, dict[str, TaskEvaluation]] = {
    "ffdnet": {"denoise": evaluate_photo_denoising},
}

__all__ = [
    "TASK_EVALUATIONS",
    "EvaluationContext",
    "EvaluationSettings",
    "evaluate_checkpoints",
    "evaluate_serving_precision",
    "machine_description",
    "write_report",
]


def checkpoint_directories(checkpoints_dir: Path, only: Sequence[str] | None = None) -> list[Path]:
    """The checkpoint folders (those with a card) in name order, restricted to `only` when given."""
    found = {path.name: path for path in sorted(Path(checkpoints_dir).iterdir()) if (path / CARD_FILE).is_file()}
    if not only:
        return list(found.values())
    missing = sorted(set(only) - set(found))
    if missing:
        raise ValueError(f"no checkpoint named {missing} in {checkpoints_dir}; found {sorted(found)}")
    return [found[name] for name in sorted(set(only))]


def evaluate_checkpoint(checkpoint: Checkpoint, context: EvaluationContext) -> dict[str, Any]:
    """Every task's metrics for one checkpoint: {task: metrics}."""
    evaluations = NATURAL_TASK_EVALUATIONS if checkpoint.card.input.domain == "natural" else TASK_EVALUATIONS
    evaluations = {**evaluations, **ARCHITECTURE_EVALUATIONS.get(checkpoint.card.architecture, {})}
    unknown = [task for task in checkpoint.card.tasks if task not in evaluations]
    if unknown:
        raise ValueError(f"{checkpoint.card.name}: no evaluation for tasks {unknown}")
    results = {}
    for task in checkpoint.card.tasks:
        started = time.perf_counter()
        results[task] = evaluations[task](checkpoint, context)
        print(f"  {checkpoint.card.name} {task}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return results


def _utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def evaluate_checkpoints(
    checkpoints_dir: Path,
    context: EvaluationContext,
    report_path: Path | None,
    command: str,
    only: Sequence[str] | None = None,
) -> dict[str, ModelCard]:
    """Evaluate the chosen checkpoints, store the metrics in their cards and (re)write the report.

    The report covers every checkpoint in `checkpoints_dir`, evaluated in this run or before.
    """
    machine = machine_description(context.device)
    updated: dict[str, ModelCard] = {}
    for directory in checkpoint_directories(checkpoints_dir, only):
        started = time.perf_counter()
        checkpoint = load_checkpoint(directory, context.device)
        print(f"evaluating {checkpoint.card.name} ({', '.join(checkpoint.card.tasks)})", file=sys.stderr, flush=True)
        metrics = evaluate_checkpoint(checkpoint, context)
        metrics["evaluation"] = {
            "command": command,
            "machine": machine,
            "date": _utc_now(),
            "seconds": round(time.perf_counter() - started, 1),
            "settings": dataclasses.asdict(context.settings),
        }
        update_metrics(directory, metrics)
        updated[checkpoint.card.name] = _guard_precision(directory, checkpoint, context, command, machine)
    if report_path is not None:
        write_report(checkpoints_dir, report_path, command, machine)
    return updated


def _guard_precision(
    directory: Path, checkpoint: Checkpoint, context: EvaluationContext, command: str, machine: str
) -> ModelCard:
    """Measure what serving in each reduced precision costs and store it as the card's `serving.precision`."""
    if not set(checkpoint.card.tasks) & GUARDED_TASKS:
        # No guard measures these tasks yet: without serving.precision the service keeps them in float32.
        print(f"  {checkpoint.card.name}: no precision guard for its tasks; served in float32", file=sys.stderr)
        return checkpoint.card
    started = time.perf_counter()
    precisions = measure_precision(checkpoint, context, command, machine)
    card = update_serving_precision(directory, precisions)
    verdicts = ", ".join(
        f"{name} {'within' if figures['within_tolerance'] else 'beyond'} tolerance"
        for name, figures in precisions.items()
    )
    print(
        f"  {checkpoint.card.name} serving precision: {verdicts or 'no reduced precision on this device'} "
        f"({time.perf_counter() - started:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return card


def evaluate_serving_precision(
    checkpoints_dir: Path, context: EvaluationContext, command: str, only: Sequence[str] | None = None
) -> dict[str, ModelCard]:
    """Only the quality guard of reduced precision (seconds to a minute per model), for the chosen checkpoints."""
    machine = machine_description(context.device)
    updated = {}
    for directory in checkpoint_directories(checkpoints_dir, only):
        checkpoint = load_checkpoint(directory, context.device)
        updated[checkpoint.card.name] = _guard_precision(directory, checkpoint, context, command, machine)
    return updated


def write_report(checkpoints_dir: Path, report_path: Path, command: str, machine: str) -> None:
    """(Re)write the report from the metrics every card holds (evaluated in this run or before)."""
    cards = [read_card(directory) for directory in checkpoint_directories(checkpoints_dir)]
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(render_report(cards, report_path, command, machine, _utc_now()))
