"""Execution plans (models.runtime.execution): every architecture's planned output against eager float32.

Tolerances, on outputs in [0, 1] (images) or of order 1 (embeddings, latents):
- float32 plan (batch norms folded, channels-last): max abs difference <= 1e-5 (only the order of float
  sums changes);
- bfloat16 plan (autocast, on CPUs that run it natively): max abs difference <= 0.05 on images and cosine
  similarity >= 0.99 on vectors, for these small random networks; the trained models' real loss is
  measured by the quality guard (models/evaluation/precision.py) and kept in their cards.
Each comparison runs a full batch, a batch of one and, for the models of photographs, odd sizes and
images large enough to go through tiled inference.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from models.architectures import (
    ARCHITECTURES,
    FSRCNN,
    Architecture,
    ConditionalConvVAE,
    ConditionalConvVAEConfig,
    ConvAutoencoder,
    ConvAutoencoderConfig,
    ConvVAE,
    ConvVAEConfig,
    DigitClassifier,
    DigitClassifierConfig,
    DnCNN,
    DnCNNConfig,
    FFDNet,
    FFDNetConfig,
    FSRCNNConfig,
    ResidualSR,
    ResidualSRConfig,
    SuperResolutionAE,
    SuperResolutionAEConfig,
)
from models.checkpoint import load_checkpoint
from models.runtime import execution
from models.runtime.execution import (
    ExecutionError,
    ExecutionPlan,
    PlannedModel,
    Probe,
    guard_verdict,
    plan_execution,
)
from models.runtime.graph_transforms import apply_memory_format, compile_blocks, fold_batch_norm
from models.runtime.machine import available_cpus, native_precisions

FLOAT32_TOLERANCE = 1e-5
BFLOAT16_IMAGE_TOLERANCE = 0.05
BFLOAT16_MIN_COSINE = 0.99
CHECKPOINTS = Path(__file__).resolve().parents[3] / "checkpoints"
BF16_NATIVE = "bfloat16" in native_precisions(torch.device("cpu"))

Call = Callable[[Architecture, torch.Tensor], Any]


def randomise_batch_norms(model: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters far from the identity, so that folding has work to do."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator) * 0.5)  # type: ignore[union-attr]
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)  # type: ignore[union-attr]
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(size, generator=generator) * 0.1)


def _images(batch: int, channels: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))


# (architecture, tiny model, [(description, call, inputs)]): every task method, full batch and batch of one;
# the any-size models also at odd sizes and through tiled inference (small tiles force several windows).
def cases() -> list[tuple[str, Architecture, list[tuple[str, Call, torch.Tensor]]]]:
    torch.manual_seed(0)
    autoencoder = ConvAutoencoder(ConvAutoencoderConfig(widths=(4, 4, 4), latent_size=8))
    super_resolution = SuperResolutionAE(SuperResolutionAEConfig(scale=2, width=8, encoder_layers=2))
    vae = ConvVAE(ConvVAEConfig(latent_size=4, widths=(4, 8), hidden_size=16))
    dncnn = DnCNN(DnCNNConfig(depth=5, width=8))
    fsrcnn = FSRCNN(FSRCNNConfig(scale=3, features=8, shrink=4, mapping_layers=1))
    ffdnet = FFDNet(FFDNetConfig(channels=3, depth=5, width=8))
    residual_sr = ResidualSR(ResidualSRConfig(scale=2, features=8, blocks=1))
    conditional_vae = ConditionalConvVAE(ConditionalConvVAEConfig(latent_size=4, widths=(4, 8), hidden_size=16))
    classifier = DigitClassifier(DigitClassifierConfig(widths=(4, 8), feature_size=16))
    labels = torch.arange(16) % 10  # one per digit of the full batch
    nn.init.normal_(residual_sr.upsample[0].weight, std=0.1)  # type: ignore[arg-type]  # not bicubic alone
    digits = [("full batch", _images(16, 1, 28, 28)), ("batch of 1", _images(1, 1, 28, 28))]
    photos = [
        ("full batch", _images(4, 1, 32, 32)),
        ("batch of 1, odd size", _images(1, 1, 37, 29)),
        ("colour, odd size", _images(2, 3, 31, 45)),
        ("tiled (tile 24)", _images(2, 1, 70, 53)),
    ]
    colour_photos = [
        ("full batch", _images(4, 3, 32, 32)),
        ("batch of 1, odd size", _images(1, 3, 37, 29)),
        ("tiled (tile 32)", _images(2, 3, 70, 53)),
    ]

    def each(method: Callable[[Architecture, torch.Tensor], Any], inputs: list[tuple[str, torch.Tensor]]) -> Any:
        return [(description, method, images) for description, images in inputs]

    return [
        (
            "conv-autoencoder",
            autoencoder,
            [
                *each(lambda m, x: m.denoise(x), digits),
                *each(lambda m, x: m.embed(x), digits),
            ],
        ),
        (
            "sr-autoencoder",
            super_resolution,
            each(
                lambda m, x: m.super_resolve(x),
                [("full batch", _images(16, 1, 14, 14)), ("batch of 1", _images(1, 1, 14, 14))],
            ),
        ),
        (
            "conv-vae",
            vae,
            [
                *each(lambda m, x: m.reconstruct(x), digits),
                *each(lambda m, x: m.encode(x), digits),
                ("decode", lambda m, z: m.decode(z.flatten(1)), torch.randn(16, 4, 1, 1)),
            ],
        ),
        ("dncnn", dncnn, each(lambda m, x: m.denoise(x, tile=24), photos)),
        ("fsrcnn", fsrcnn, each(lambda m, x: m.super_resolve(x, tile=24), photos)),
        ("ffdnet", ffdnet, each(lambda m, x: m.denoise_at(x, 25.0, tile=32), colour_photos)),
        ("residual-sr", residual_sr, each(lambda m, x: m.super_resolve(x, tile=24), photos)),
        (
            "conditional-conv-vae",
            conditional_vae,
            [
                *each(lambda m, x: m.encode_given(x, labels[: len(x)]), digits),
                ("decode", lambda m, z: m.decode_given(z, labels), torch.randn(16, 4)),
            ],
        ),
        (
            "digit-classifier",
            classifier,
            [*each(lambda m, x: m.classify(x), digits), *each(lambda m, x: m.features(x), digits)],
        ),
    ]


CASES = cases()


def test_every_registered_architecture_is_covered() -> None:
    assert {name for name, _, _ in CASES} == set(ARCHITECTURES)


def planned(model: Architecture, precision: str) -> PlannedModel:
    copied = copy.deepcopy(model).eval()
    folded = fold_batch_norm(copied)
    apply_memory_format(copied, "channels_last")
    plan = ExecutionPlan("cpu", precision, "channels_last", folded, False, 1)  # type: ignore[arg-type]
    return PlannedModel(copied, plan)


def eager(model: Architecture, call: Call, inputs: torch.Tensor) -> Any:
    with torch.no_grad():
        return call(model.eval(), inputs)


def as_tuple(outputs: Any) -> tuple[torch.Tensor, ...]:
    return outputs if isinstance(outputs, tuple) else (outputs,)


@pytest.mark.parametrize(("name", "model", "calls"), CASES, ids=[name for name, _, _ in CASES])
def test_the_float32_plan_matches_eager_float32(name: str, model: Architecture, calls: list[Any]) -> None:
    randomise_batch_norms(model)
    plan = planned(model, "float32")
    for description, call, inputs in calls:
        expected = as_tuple(eager(model, call, inputs))
        actual = as_tuple(plan.run(lambda x, call=call: call(plan.model, x), inputs))
        for want, got in zip(expected, actual, strict=True):
            assert got.dtype == torch.float32 and got.is_contiguous(), description
            assert got.shape == want.shape, description
            difference = (got - want).abs().max().item()
            assert difference <= FLOAT32_TOLERANCE, f"{name}, {description}: {difference}"


@pytest.mark.skipif(not BF16_NATIVE, reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
@pytest.mark.parametrize(("name", "model", "calls"), CASES, ids=[name for name, _, _ in CASES])
def test_the_bfloat16_plan_stays_close_to_eager_float32(name: str, model: Architecture, calls: list[Any]) -> None:
    randomise_batch_norms(model)
    plan = planned(model, "bfloat16")
    for description, call, inputs in calls:
        expected = as_tuple(eager(model, call, inputs))
        actual = as_tuple(plan.run(lambda x, call=call: call(plan.model, x), inputs))
        for want, got in zip(expected, actual, strict=True):
            assert got.dtype == torch.float32 and got.shape == want.shape, description
            if want.dim() == 2:  # vectors: direction matters
                cosine = nn.functional.cosine_similarity(got, want, dim=1).min().item()
                assert cosine >= BFLOAT16_MIN_COSINE, f"{name}, {description}: cosine {cosine}"
            else:
                difference = (got - want).abs().max().item()
                assert difference <= BFLOAT16_IMAGE_TOLERANCE, f"{name}, {description}: {difference}"
                assert difference > 0, "bfloat16 that changes nothing did not run in bfloat16"


def test_folding_removes_every_batch_norm_and_keeps_the_output() -> None:
    model = DnCNN(DnCNNConfig(depth=6, width=8)).eval()
    randomise_batch_norms(model, seed=3)
    images = _images(2, 1, 20, 20)
    with torch.no_grad():
        before = model(images)
        assert fold_batch_norm(model) == 4
        after = model(images)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in model.modules())
    assert (after - before).abs().max().item() <= FLOAT32_TOLERANCE


def test_a_batch_norm_in_training_mode_is_not_folded() -> None:
    model = DnCNN(DnCNNConfig(depth=4, width=4)).train()
    assert fold_batch_norm(model) == 0


def test_the_shipped_dncnn_plans_like_its_eager_self() -> None:
    """The real weights and statistics of bsd-denoise-sigma25, folded and channels-last, on a 45x38 picture."""
    checkpoint = load_checkpoint(CHECKPOINTS / "bsd-denoise-sigma25")
    picture = _images(1, 1, 45, 38, seed=5)
    expected = eager(checkpoint.model, lambda m, x: m.denoise(x), picture)
    plan = planned(checkpoint.model, "float32")
    assert plan.plan.batch_norm_folded == 15
    actual = plan.run(plan.method("denoise"), picture)
    assert (actual - expected).abs().max().item() <= FLOAT32_TOLERANCE


# -- choosing the plan ---------------------------------------------------------------------------

GUARD_OK = {"precision": {"bfloat16": {"psnr_delta_db": -0.01, "speed_images_per_s": 1.0}}}
GUARD_LOSSY = {"precision": {"bfloat16": {"psnr_delta_db": -0.2}}}
NO_BF16: frozenset[str] = frozenset({"avx2"})
WITH_BF16 = frozenset({"avx512f", "avx512_bf16"})


def tiny_denoiser() -> ConvAutoencoder:
    torch.manual_seed(0)
    return ConvAutoencoder(ConvAutoencoderConfig(widths=(4, 4, 4))).eval()


def test_a_precision_the_cpu_cannot_run_is_an_error_naming_the_setting() -> None:
    with pytest.raises(ExecutionError, match=r"AE_PRECISION=bfloat16.*does not run bfloat16 natively"):
        plan_execution(tiny_denoiser(), device=torch.device("cpu"), precision="bfloat16", flags=NO_BF16)


def test_the_cpu_flags_decide_what_runs_natively() -> None:
    cpu = torch.device("cpu")
    assert native_precisions(cpu, NO_BF16) == ("float32",)
    assert native_precisions(cpu, WITH_BF16) == ("float32", "bfloat16")
    assert native_precisions(cpu, frozenset({"amx_bf16", "amx_fp16"})) == ("float32", "bfloat16", "float16")


@pytest.mark.parametrize(
    ("serving", "allowed"),
    [
        ({}, False),
        (GUARD_OK, True),
        (GUARD_LOSSY, False),
        ({"precision": {"bfloat16": {"nll_rise_nats": 0.05}}}, True),
        ({"precision": {"bfloat16": {"nll_rise_nats": 0.5}}}, False),
        ({"precision": {"bfloat16": {"knn_accuracy_drop": 0.001, "cosine_similarity": 0.9995}}}, True),
        ({"precision": {"bfloat16": {"knn_accuracy_drop": 0.001, "cosine_similarity": 0.99}}}, False),
        ({"precision": {"bfloat16": {"knn_accuracy_drop": 0.01, "cosine_similarity": 0.9999}}}, False),
        ({"precision": {"bfloat16": {"psnr_delta_db": 0.0, "nll_rise_nats": 0.2}}}, False),
        ({"precision": {"bfloat16": {"speed_images_per_s": 1.0}}}, False),  # no quality figure at all
    ],
)
def test_the_quality_guard_allows_a_precision_only_within_every_tolerance(
    serving: dict[str, Any], allowed: bool
) -> None:
    assert (guard_verdict(serving, "bfloat16") is None) is allowed


def probe() -> Probe:
    return Probe.of_method("denoise", _images(8, 1, 28, 28))


def test_auto_measures_bfloat16_only_where_the_guard_allows_it_and_the_cpu_runs_it() -> None:
    cpu = torch.device("cpu")
    allowed = plan_execution(tiny_denoiser(), device=cpu, serving=GUARD_OK, probe=probe(), flags=WITH_BF16)
    refused = plan_execution(tiny_denoiser(), device=cpu, serving=GUARD_LOSSY, probe=probe(), flags=WITH_BF16)
    not_native = plan_execution(tiny_denoiser(), device=cpu, serving=GUARD_OK, probe=probe(), flags=NO_BF16)

    assert set(allowed.plan.measured_images_per_s) == {
        "float32 contiguous",
        "float32 channels_last",
        "bfloat16 contiguous",
        "bfloat16 channels_last",
    }
    assert set(refused.plan.measured_images_per_s) == {"float32 contiguous", "float32 channels_last"}
    assert refused.plan.precision == "float32"
    assert any("quality guard measured a loss" in reason for reason in refused.plan.reasons)
    assert not_native.plan.precision == "float32"
    assert "bfloat16 contiguous" not in not_native.plan.measured_images_per_s


def test_the_plan_is_described_for_the_listing() -> None:
    planned_model = plan_execution(
        DnCNN(DnCNNConfig(depth=4, width=4)), device=torch.device("cpu"), precision="float32", compile="off"
    )
    described = planned_model.plan.describe()
    assert described["precision"] == "float32" and described["batch_norm_folded"] == 2
    assert described["compiled"] is False and described["threads"] >= 1
    assert described["memory_format"] in ("channels_last", "contiguous") and described["prepare_seconds"] >= 0
    assert "float32" in planned_model.plan.summary()


def test_compile_on_compiles_the_blocks_and_keeps_the_output() -> None:
    """Compilation by TorchDynamo with the 'eager' backend (inductor's C++ code generation takes minutes on
    2 cores): the blocks the service would compile trace, run and give the eager result."""
    model = tiny_denoiser()
    images = _images(4, 1, 28, 28)
    with torch.no_grad():
        expected = model.denoise(images)
    compiled = copy.deepcopy(model)
    assert compile_blocks(compiled, backend="eager") == 2  # encoder and decoder: the blocks with weights
    with torch.no_grad():
        actual = compiled.denoise(images)
    torch.testing.assert_close(actual, expected)


def test_available_cpus_follows_the_affinity_and_the_cgroup_quota(tmp_path: Path) -> None:
    assert available_cpus(affinity=lambda: {0, 1, 2, 3}, cgroup_root=tmp_path) == 4
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert available_cpus(affinity=lambda: {0, 1, 2, 3}, cgroup_root=tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(affinity=lambda: {3}, cgroup_root=tmp_path) == 1
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(affinity=lambda: set(range(8)), cgroup_root=tmp_path) == 3


def fake_rates(single: dict[str, float], batch: dict[str, float]) -> Callable[[PlannedModel, Probe], float]:
    """Probe timings chosen by the test: images per second by precision, for one item or a batch."""

    def rate(planned: PlannedModel, probe: Probe) -> float:
        return (single if probe.inputs.shape[0] == 1 else batch)[planned.plan.precision]

    return rate


def test_a_lone_small_input_runs_in_the_precision_that_measured_faster_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rates = fake_rates(single={"float32": 1200.0, "bfloat16": 1000.0}, batch={"float32": 1000.0, "bfloat16": 3000.0})
    monkeypatch.setattr(execution, "_images_per_second", rates)
    model = tiny_denoiser()
    eager = copy.deepcopy(model)
    planned = plan_execution(model, device=torch.device("cpu"), serving=GUARD_OK, probe=probe(), flags=WITH_BF16)
    plan = planned.plan
    assert plan.precision == "bfloat16" and plan.small_input_precision == "float32"
    assert plan.small_input_values == 28 * 28 and "one item (784 values or fewer) in float32" in plan.reasons[-2]
    assert plan.precision_for(_images(1, 1, 28, 28)) == "float32"
    assert plan.precision_for(_images(2, 1, 28, 28)) == "bfloat16"
    assert plan.describe()["small_input_precision"] == "float32" and "float32 up to 784 values" in plan.summary()
    one = _images(1, 1, 28, 28)
    with torch.no_grad():  # the lone image really runs in float32: the eager float32 answer to rounding
        assert torch.allclose(planned.run(lambda x: planned.model.denoise(x), one), eager.denoise(one), atol=1e-5)


def test_no_small_input_precision_within_the_margin_or_with_one_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    close = fake_rates(single={"float32": 1030.0, "bfloat16": 1000.0}, batch={"float32": 1000.0, "bfloat16": 3000.0})
    monkeypatch.setattr(execution, "_images_per_second", close)
    cpu = torch.device("cpu")
    within = plan_execution(tiny_denoiser(), device=cpu, serving=GUARD_OK, probe=probe(), flags=WITH_BF16).plan
    assert within.precision == "bfloat16" and within.small_input_precision is None
    only_float32 = plan_execution(tiny_denoiser(), device=cpu, serving=GUARD_OK, probe=probe(), flags=NO_BF16).plan
    assert only_float32.small_input_precision is None and only_float32.small_input_values == 0
