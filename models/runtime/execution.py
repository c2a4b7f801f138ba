"""Execution plans: how a loaded model runs its forward passes, chosen once when it loads.

PyTorch's default way of running a network on a CPU (eager, NCHW, float32) is its slowest. A plan picks,
per model and per machine:
- the **memory format**: channels-last (NHWC) lets oneDNN run the convolutions without reordering every
  activation; it is measured against the default (contiguous NCHW) and used where it is faster;
- the **precision**: float32, or bfloat16 / float16 through autocast (convolutions and linear layers in the
  reduced precision, everything else, residual additions included, in float32). A reduced precision is
  used under `auto` only where the model card's quality guard (`serving.precision.<dtype>`, written by
  `python -m models.evaluate`) shows the loss within `TOLERANCES`, the hardware runs it natively
  (bfloat16 on CPUs with AVX512-BF16 or AMX, float16 and bfloat16 on CUDA), and it measures faster;
- **BatchNorm folded** into the convolution before it (exact up to float rounding: in eval mode a batch
  norm is a fixed per-channel affine map), which removes a pass over every activation;
- **torch.compile** of the model's top-level blocks, where asked (`on`) or by default on CUDA. On this
  project's CPU it is off under `auto`: inductor took from 16 s to minutes per model and batch shape
  to compile on 2 cores, for about 13% over channels-last in float32 and less than bfloat16 gives
  (docs/benchmarks.md), so start-up would grow by minutes for a small gain;
- the **threads** torch uses (the process's share of the cores, see `models.runtime.machine.available_cpus`).

Only the model step changes: inputs arrive as float32 and outputs leave as contiguous float32, so the
decoding, preprocessing and encoding around it stay exact. `tests/models/runtime/test_execution.py` compares
every architecture's planned output with the eager float32 one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from models.runtime.graph_transforms import MemoryFormat, apply_memory_format, compile_blocks, fold_batch_norm
from models.runtime.machine import Precision, describe_hardware, native_precisions

logger = logging.getLogger("models.execution")

PrecisionSetting = Literal["auto", "float32", "bfloat16", "float16"]
CompileSetting = Literal["auto", "on", "off"]
REDUCED_PRECISIONS: tuple[Precision, ...] = ("bfloat16", "float16")
TORCH_DTYPES: dict[Precision, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass(frozen=True)
class Tolerances:
    """The quality a reduced precision may cost, measured against float32 by the quality guard."""

    psnr_drop_db: float = 0.05  # image models (denoise, super-resolve, reconstruct)
    nll_rise_nats: float = 0.1  # VAEs: importance-sampled negative log-likelihood
    knn_accuracy_drop: float = 0.002  # embeddings: 5-NN accuracy
    min_cosine_similarity: float = 0.999  # embeddings: mean cosine similarity to the float32 vectors


TOLERANCES = Tolerances()

# A candidate must beat the plain float32 NCHW step by this factor to be chosen: timings on a shared
# machine wobble by a few percent, and a choice should not flip on noise.
SPEEDUP_MARGIN = 1.05
PROBE_SECONDS = 0.3  # the most time spent timing one candidate (memory format x precision)
PROBE_REPEATS = 5


class ExecutionError(ValueError):
    """A setting this machine cannot honour; the message names the setting."""


# -- the quality guard's verdict -----------------------------------------------------------------


def guard_verdict(serving: dict[str, Any], precision: Precision, tolerances: Tolerances = TOLERANCES) -> str | None:
    """None when the card's quality guard allows `precision`, else why not.

    `serving` is the card's "serving" object; the guard's figures for a precision are in
    serving["precision"][precision] (see models.evaluation.precision). Every figure that is there must be
    within its tolerance, and at least one must be there.
    """
    measured = serving.get("precision", {}).get(precision)
    if not isinstance(measured, dict):
        return f"the model card has no quality measurement for {precision} (python -m models.evaluate)"
    checks: list[tuple[str, bool]] = []
    if "psnr_delta_db" in measured:
        checks.append(("PSNR", measured["psnr_delta_db"] >= -tolerances.psnr_drop_db))
    if "nll_rise_nats" in measured:
        checks.append(("NLL", measured["nll_rise_nats"] <= tolerances.nll_rise_nats))
    if "knn_accuracy_drop" in measured:
        checks.append(("5-NN accuracy", measured["knn_accuracy_drop"] <= tolerances.knn_accuracy_drop))
    if "cosine_similarity" in measured:
        checks.append(("cosine similarity", measured["cosine_similarity"] >= tolerances.min_cosine_similarity))
    if not checks:
        return f"the model card's {precision} entry holds no quality figure"
    failed = [name for name, ok in checks if not ok]
    if failed:
        return f"the quality guard measured a loss beyond tolerance in {precision}: {', '.join(failed)}"
    return None


# -- the plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What to time when choosing (or run to warm up): call(model, inputs), with a typical batch (float32, CPU)."""

    call: Callable[[nn.Module, torch.Tensor], object]
    inputs: torch.Tensor

    @classmethod
    def of_method(cls, name: str, inputs: torch.Tensor) -> Probe:
        """A probe calling the model's method `name` (e.g. "denoise") on the inputs."""
        return cls(lambda model, batch: getattr(model, name)(batch), inputs)


@dataclass
class ExecutionPlan:
    device: str
    precision: Precision
    memory_format: MemoryFormat
    batch_norm_folded: int  # batch norms folded into convolutions (0: the model has none)
    compiled: bool
    threads: int
    reasons: list[str] = field(default_factory=list)  # why each choice was made, for the log and /v1/models
    measured_images_per_s: dict[str, float] = field(default_factory=dict)  # probe results per candidate
    prepare_seconds: float = 0.0  # probing, compiling and warming up
    # Inputs of at most `small_input_values` values (one item of the probe's size: a lone request) run in
    # this precision instead, where it measured faster: a reduced precision pays for itself on full batches
    # but its conversions can cost more than they save on one small image.
    small_input_precision: Precision | None = None
    small_input_values: int = 0

    def precision_for(self, inputs: torch.Tensor) -> Precision:
        if self.small_input_precision is not None and inputs.numel() <= self.small_input_values:
            return self.small_input_precision
        return self.precision

    def describe(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "precision": self.precision,
            "memory_format": self.memory_format,
            "batch_norm_folded": self.batch_norm_folded,
            "compiled": self.compiled,
            "threads": self.threads,
            "reasons": self.reasons,
            "measured_images_per_s": self.measured_images_per_s,
            "prepare_seconds": round(self.prepare_seconds, 3),
            "small_input_precision": self.small_input_precision,
            "small_input_values": self.small_input_values,
        }

    def summary(self) -> str:
        """One line for the start-up log."""
        parts = [self.precision, self.memory_format.replace("_", "-")]
        if self.small_input_precision is not None:
            parts[0] += f" ({self.small_input_precision} up to {self.small_input_values} values)"
        parts.append(f"{self.batch_norm_folded} batch norms folded" if self.batch_norm_folded else "no batch norm")
        parts.append("compiled" if self.compiled else "eager")
        parts.append(f"{self.threads} threads, prepared in {self.prepare_seconds:.2f} s")
        return ", ".join(parts)


class PlannedModel:
    """A model with its plan applied; `run` is the only way the service calls it."""

    def __init__(self, model: nn.Module, plan: ExecutionPlan) -> None:
        self.model = model
        self.plan = plan
        self.device = torch.device(plan.device)

    def method(self, name: str) -> Callable[..., Any]:
        function = getattr(self.model, name, None)
        if not callable(function):
            raise TypeError(f"{type(self.model).__name__} has no method {name}()")
        return function

    def run(self, function: Callable[[torch.Tensor], Any], inputs: torch.Tensor) -> Any:
        """function(inputs) under the plan: float32 inputs in, contiguous float32 outputs (on the device) out."""
        prepared = inputs.to(self.device, torch.float32)
        if self.plan.memory_format == "channels_last" and prepared.dim() == 4:
            prepared = prepared.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), precision_context(self.device, self.plan.precision_for(prepared)):
            outputs = function(prepared)
        return _to_float32(outputs)


@contextlib.contextmanager
def precision_context(device: torch.device, precision: Precision) -> Iterator[None]:
    """Autocast to the reduced precision (convolutions and matrix products); nothing for float32."""
    if precision == "float32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=TORCH_DTYPES[precision]):
        yield


def _to_float32(outputs: Any) -> Any:
    if isinstance(outputs, tuple):
        return tuple(_to_float32(output) for output in outputs)
    if isinstance(outputs, torch.Tensor):
        return outputs.float().contiguous()
    return outputs


def plan_execution(
    model: nn.Module,
    *,
    device: torch.device,
    precision: PrecisionSetting = "auto",
    compile: CompileSetting = "auto",
    serving: dict[str, Any] | None = None,
    probe: Probe | None = None,
    warm_up: Sequence[Probe] = (),
    threads: int | None = None,
    flags: frozenset[str] | None = None,
) -> PlannedModel:
    """Choose and apply a plan for an eval-mode model (moved to `device`, float32 weights, changed in place).

    precision: "auto" (the fastest native precision the card's quality guard allows, else float32) or
    one precision, which must be native to the device (ExecutionError naming AE_PRECISION otherwise).
    compile: "on", "off", or "auto" (on for CUDA, off on the CPU; see the module docstring).
    probe: what to time when choosing the memory format and precision; without one the plan takes
    channels-last and the guard's precision without measuring. warm_up: calls run after the plan is
    applied (the batch sizes the batcher uses), so a compiled model compiles before the first request.
    """
    started = time.perf_counter()
    serving = serving or {}
    native = native_precisions(device, flags)
    reasons: list[str] = []
    if precision != "auto" and precision not in native:
        raise ExecutionError(
            f"AE_PRECISION={precision}: {describe_hardware(device, flags)} does not run {precision} natively "
            f"(it runs {', '.join(native)}); use AE_PRECISION=auto or float32"
        )
    model = model.to(device=device, dtype=torch.float32).eval()
    folded = fold_batch_norm(model)
    if folded:
        reasons.append(f"folded {folded} batch norms into the convolutions before them")

    if precision == "auto":
        candidates: list[Precision] = ["float32"]
        for reduced in REDUCED_PRECISIONS:
            if reduced not in native:
                continue
            refusal = guard_verdict(serving, reduced)
            if refusal is None:
                candidates.append(reduced)
            else:
                reasons.append(f"{reduced} not used: {refusal}")
    else:
        candidates = [precision]
        if precision != "float32":
            refusal = guard_verdict(serving, precision)
            if refusal is not None:
                logger.warning("AE_PRECISION=%s as asked, although %s", precision, refusal)
                reasons.append(f"{precision} as AE_PRECISION asks, although {refusal}")

    measured: dict[str, float] = {}
    if probe is not None:
        chosen_format, chosen_precision, measured = _fastest(model, device, candidates, probe)
        reasons.append(
            f"measured fastest: {chosen_precision} {chosen_format} "
            f"(of {', '.join(f'{name} {rate:.0f}/s' for name, rate in measured.items())} images per second)"
        )
    else:
        chosen_format, chosen_precision = "channels_last", candidates[-1]
        reasons.append("not measured (no probe input): channels-last and the most reduced allowed precision")
    apply_memory_format(model, chosen_format)

    compiled = compile == "on" or (compile == "auto" and device.type == "cuda")
    small_input = None
    if probe is not None and not compiled:  # a compiled graph would recompile for the other precision
        small_input = _small_input_precision(model, device, candidates, chosen_format, chosen_precision, probe)
        if small_input is not None:
            reasons.append(small_input[1])
    if compiled:
        blocks = compile_blocks(model)
        reasons.append(f"compiled {blocks} blocks with torch.compile (AE_COMPILE={compile})")
    elif compile == "auto":
        reasons.append("not compiled: AE_COMPILE=auto compiles on CUDA only (CPU compile costs minutes of start-up)")

    plan = ExecutionPlan(
        device=str(device),
        precision=chosen_precision,
        memory_format=chosen_format,
        batch_norm_folded=folded,
        compiled=compiled,
        threads=threads or torch.get_num_threads(),
        reasons=reasons,
        measured_images_per_s=measured,
        small_input_precision=small_input[0] if small_input else None,
        small_input_values=probe.inputs[:1].numel() if small_input and probe is not None else 0,
    )
    planned = PlannedModel(model, plan)
    for warm in warm_up:
        planned.run(partial(warm.call, model), warm.inputs)
    _synchronize(device)
    plan.prepare_seconds = time.perf_counter() - started
    return planned


def _fastest(
    model: nn.Module, device: torch.device, precisions: Sequence[Precision], probe: Probe
) -> tuple[MemoryFormat, Precision, dict[str, float]]:
    """Time the probe under every (memory format, precision); -> the fastest, with every rate measured.

    Plain float32 NCHW is the reference: another candidate must beat it by SPEEDUP_MARGIN.
    """
    rates: dict[tuple[MemoryFormat, Precision], float] = {}
    formats: tuple[MemoryFormat, ...] = ("contiguous", "channels_last")
    for memory_format in formats:
        apply_memory_format(model, memory_format)
        for precision in precisions:
            plan = ExecutionPlan(str(device), precision, memory_format, 0, False, torch.get_num_threads())
            rates[memory_format, precision] = _images_per_second(PlannedModel(model, plan), probe)
    reference: tuple[MemoryFormat, Precision] = ("contiguous", precisions[0])
    best = max(rates, key=lambda key: rates[key])
    if rates[best] < rates[reference] * SPEEDUP_MARGIN:
        best = reference
    return best[0], best[1], {f"{precision} {fmt}": round(rate, 1) for (fmt, precision), rate in rates.items()}


def _small_input_precision(
    model: nn.Module,
    device: torch.device,
    precisions: Sequence[Precision],
    memory_format: MemoryFormat,
    chosen: Precision,
    probe: Probe,
) -> tuple[Precision, str] | None:
    """Time one item of the probe under every precision in the chosen memory format; -> the precision for
    such small inputs and why, when it beats the chosen one by SPEEDUP_MARGIN (else None)."""
    one = Probe(probe.call, probe.inputs[:1])
    if probe.inputs.shape[0] < 2 or len(precisions) < 2:
        return None
    rates = {
        precision: _images_per_second(
            PlannedModel(
                model, ExecutionPlan(str(device), precision, memory_format, 0, False, torch.get_num_threads())
            ),
            one,
        )
        for precision in precisions
    }
    best = max(rates, key=lambda precision: rates[precision])
    if best == chosen or rates[best] < rates[chosen] * SPEEDUP_MARGIN:
        return None
    measured = ", ".join(f"{precision} {rate:.0f}/s" for precision, rate in rates.items())
    return best, f"one item ({one.inputs.numel()} values or fewer) in {best}: measured faster ({measured})"


def _images_per_second(planned: PlannedModel, probe: Probe) -> float:
    """Images per second of the probe's batch: the fastest of a few timed calls after one warm-up call."""

    def function(batch: torch.Tensor) -> object:
        return probe.call(planned.model, batch)

    planned.run(function, probe.inputs)
    _synchronize(planned.device)
    fastest = math.inf
    budget_end = time.perf_counter() + PROBE_SECONDS
    for _ in range(PROBE_REPEATS):
        started = time.perf_counter()
        planned.run(function, probe.inputs)
        _synchronize(planned.device)
        fastest = min(fastest, time.perf_counter() - started)
        if time.perf_counter() > budget_end:
            break
    return probe.inputs.shape[0] / fastest


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
