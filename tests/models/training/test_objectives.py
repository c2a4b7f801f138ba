"""What each training objective feeds the model, and the loss it returns."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from models.architectures import (
    ConditionalConvVAE,
    ConditionalConvVAEConfig,
    ConvAutoencoder,
    ConvAutoencoderConfig,
    ConvVAE,
    ConvVAEConfig,
    SuperResolutionAE,
    SuperResolutionAEConfig,
)
from models.architectures.conditional_vae import with_label_plane
from models.data.corruptions import downscale
from models.evaluation.mnist.vae import importance_sampled_bounds
from models.training.importance_weighted import ImportanceWeightedElbo, importance_weighted_bound, log_normal
from models.training.latent_match import mmd_to_standard_normal, per_label_mmd
from models.training.objectives import (
    BernoulliElbo,
    BlindDenoising,
    LabelledElbo,
    Reconstruction,
    SuperResolution,
    random_shift,
)


def digits() -> torch.Tensor:
    return torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_plain_reconstruction_targets_its_input() -> None:
    clean = digits()
    inputs, targets = Reconstruction().make_batch(clean, generator())
    assert inputs is clean and targets is clean


def test_input_noise_is_seeded_by_the_run_generator() -> None:
    clean = digits()
    objective = Reconstruction(input_noise_sigma=0.3)
    first, targets = objective.make_batch(clean, generator(1))
    again, _ = objective.make_batch(clean, generator(1))
    other, _ = objective.make_batch(clean, generator(2))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(targets, clean) and first.min() >= 0 and first.max() <= 1


def test_blind_denoising_pairs_noisy_inputs_with_clean_targets() -> None:
    clean = digits()
    noisy, targets = BlindDenoising(max_sigma=0.6).make_batch(clean, generator())
    assert torch.equal(targets, clean) and not torch.equal(noisy, clean)
    assert noisy.min() >= 0 and noisy.max() <= 1


def test_super_resolution_inputs_are_area_downscaled() -> None:
    clean = digits()
    small, targets = SuperResolution(scale=4).make_batch(clean, generator())
    assert torch.equal(small, downscale(clean, 4, "area")) and torch.equal(targets, clean)
    model = SuperResolutionAE(SuperResolutionAEConfig(scale=4, width=4, encoder_layers=1))
    loss = SuperResolution(scale=4).loss(model, small, targets, 0.0, generator())
    assert loss.dim() == 0 and loss.item() > 0


def test_dynamic_binarisation_draws_fresh_pixels_each_batch() -> None:
    clean = digits()
    objective = BernoulliElbo()
    run = generator(7)  # not digits()'s seed: the same uniform stream would reproduce p itself
    first, targets = objective.make_batch(clean, run)
    second, _ = objective.make_batch(clean, run)
    assert torch.equal(first, targets) and set(first.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(first, second)
    assert abs(float(first.mean()) - float(clean.mean())) < 0.02


def test_kl_warm_up_ramps_linearly_to_one() -> None:
    objective = BernoulliElbo(kl_warmup_epochs=4)
    assert [objective.kl_weight(e) for e in (0, 1, 2, 4, 10)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert BernoulliElbo().kl_weight(0) == 1.0


def test_the_labelled_elbo_can_weight_the_kl_as_a_beta_vae() -> None:
    assert LabelledElbo(kl_beta=1.5).kl_weight(10) == 1.5 and LabelledElbo().kl_weight(0) == 1.0
    assert LabelledElbo(kl_warmup_epochs=2, kl_beta=2.0).kl_weight(1) == 1.0
    assert LabelledElbo(kl_beta=1.5).describe()["kl_beta"] == 1.5


def test_the_per_label_mmd_is_small_for_prior_draws_and_large_for_a_gathered_label() -> None:
    draws = torch.randn(400, 4, generator=generator(1))
    assert abs(float(mmd_to_standard_normal(draws, generator(2)))) < 0.02
    labels = torch.arange(400) % 2
    gathered = torch.where(labels[:, None] == 0, draws, 0.3 * draws + 2.0)  # label 1 in a corner
    near, far = (float(per_label_mmd(codes, labels, generator(2))) for codes in (draws, gathered))
    assert far > 10 * abs(near)
    model = ConditionalConvVAE(ConditionalConvVAEConfig(latent_size=3, widths=(2, 2), hidden_size=8))
    labelled = with_label_plane(digits(), torch.arange(len(digits())) % 3)
    inputs, targets = LabelledElbo().make_batch(labelled, generator())
    plain = LabelledElbo().loss(model, inputs, targets, 1.0, generator(5))
    matched = LabelledElbo(class_mmd_weight=100.0).loss(model, inputs, targets, 1.0, generator(5))
    assert torch.isfinite(matched) and not torch.allclose(matched, plain)
    matched.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_elbo_loss_with_and_without_warm_up() -> None:
    torch.manual_seed(0)
    model = ConvVAE(ConvVAEConfig(latent_size=3, widths=(2, 2), hidden_size=8))
    binary, _ = BernoulliElbo().make_batch(digits(), generator())
    objective = BernoulliElbo(kl_warmup_epochs=2)
    cold = objective.loss(model, binary, binary, 0.0, generator(5))
    warm = objective.loss(model, binary, binary, 2.0, generator(5))
    _, reconstruction, kl = model.loss(binary, generator=generator(5))
    assert torch.allclose(cold, reconstruction.mean()) and torch.allclose(warm, (reconstruction + kl).mean())
    with pytest.raises(TypeError, match="ConvVAE"):
        objective.loss(ConvAutoencoder(ConvAutoencoderConfig()), binary, binary, 0.0, generator())


def test_code_penalty_is_half_the_squared_norm_per_pixel() -> None:
    torch.manual_seed(0)
    model = ConvAutoencoder(ConvAutoencoderConfig(widths=(2, 2, 2), latent_size=4))
    clean = digits()
    plain = Reconstruction().loss(model, clean, clean, 0.0, generator())
    penalised = Reconstruction(code_penalty=2.0).loss(model, clean, clean, 0.0, generator())
    codes = model.encode(clean)
    expected = 2.0 * 0.5 * codes.pow(2).sum(1).mean() / (28 * 28)
    assert torch.allclose(penalised - plain, expected, atol=1e-6)
    noisy = Reconstruction(code_noise_sigma=0.5).loss(model, clean, clean, 0.0, generator())
    assert not torch.allclose(noisy, plain)
    with pytest.raises(TypeError, match="ConvAutoencoder"):
        Reconstruction(code_penalty=1.0).loss(
            SuperResolutionAE(SuperResolutionAEConfig()), clean, clean, 0.0, generator()
        )


def test_describe_lists_the_parameters() -> None:
    assert BlindDenoising(max_sigma=0.6).describe()["max_sigma"] == 0.6
    assert Reconstruction(code_noise_sigma=0.2).describe()["objective"] == "reconstruction"


def test_random_shift_moves_whole_images_within_the_limit() -> None:
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 10:14, 12:15] = 1.0
    batch = image.repeat(200, 1, 1, 1)
    shifted = random_shift(batch, 2, generator(3))
    assert shifted.shape == batch.shape
    assert torch.equal(shifted.sum(dim=(1, 2, 3)), batch.sum(dim=(1, 2, 3)))  # nothing falls off the frame here
    rows = shifted[:, 0].sum(dim=2).argmax(dim=1) - 10  # first lit row moved by dy
    columns = shifted[:, 0].sum(dim=1).argmax(dim=1) - 12
    assert set(rows.tolist()) == set(range(-2, 3)) and set(columns.tolist()) == set(range(-2, 3))
    assert torch.equal(random_shift(batch, 2, generator(3)), shifted)


def test_reconstruction_with_shifts_keeps_centred_targets() -> None:
    clean = digits()
    inputs, targets = Reconstruction(input_shift_pixels=1).make_batch(clean, generator(4))
    assert torch.equal(targets, clean) and not torch.equal(inputs, clean)


def test_the_importance_weighted_bound_with_one_sample_is_the_elbo() -> None:
    torch.manual_seed(0)
    model = ConvVAE(ConvVAEConfig(latent_size=3, widths=(2, 2), hidden_size=8)).eval()
    binary, _ = BernoulliElbo().make_batch(digits(), generator())
    with torch.no_grad():
        one = importance_weighted_bound(model, binary, binary, 1, generator(5))
        # The same draw by hand: reconstruction + log q(z|x) - log p(z) (the ELBO with a sampled KL).
        mean, log_variance = model.encode(binary)
        latents = mean + (0.5 * log_variance).exp() * torch.randn((1, *mean.shape), generator=generator(5))[0]
        reconstruction = F.binary_cross_entropy_with_logits(model.decode_logits(latents), binary, reduction="none")
        sampled_kl = log_normal(latents, mean, log_variance) - log_normal(latents, 0 * mean, 0 * mean)
        assert torch.allclose(one, reconstruction.flatten(1).sum(dim=1) + sampled_kl, atol=1e-4)
        # On average over draws it is the analytic ELBO.
        many = torch.stack([importance_weighted_bound(model, binary, binary, 1, generator(s)) for s in range(400)])
        elbo = torch.stack([model.loss(binary, generator=generator(s))[0] for s in range(400)])
        assert torch.allclose(many.mean(dim=0), elbo.mean(dim=0), rtol=2e-3)


def test_more_importance_samples_give_a_tighter_bound_equal_to_the_evaluated_nll() -> None:
    torch.manual_seed(0)
    model = ConvVAE(ConvVAEConfig(latent_size=3, widths=(2, 2), hidden_size=8)).eval()
    binary, _ = BernoulliElbo().make_batch(digits(), generator())
    with torch.no_grad():
        model.to_log_variance.bias.fill_(2.0)  # a posterior too broad: the weights vary, and k matters
        expected = {
            k: torch.stack(
                [importance_weighted_bound(model, binary, binary, k, generator(s)) for s in range(20)]
            ).mean()
            for k in (1, 5, 50)
        }
        assert expected[50] + 1 < expected[5] < expected[1] - 1  # nats per image
        bounds = {k: importance_weighted_bound(model, binary, binary, k, generator(1)).mean() for k in (5, 50)}
        _, nll, _ = importance_sampled_bounds(model, binary, 50, generator(1))  # the same draw as the evaluation's
        assert torch.allclose(bounds[50], nll.mean(), atol=1e-4)
    objective = ImportanceWeightedElbo(kl_warmup_epochs=2, samples=5)
    loss = objective.loss(model.train(), binary, binary, 2.0, generator(1))
    assert torch.allclose(loss, bounds[5], atol=1e-4)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with pytest.raises(TypeError, match="ConvVAE"):
        objective.loss(ConvAutoencoder(ConvAutoencoderConfig()), binary, binary, 0.0, generator())
