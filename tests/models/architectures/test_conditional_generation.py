"""The conditional VAE, the digit classifier and the sample-quality measures, on small inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.architectures import ConditionalConvVAE, ConditionalConvVAEConfig, DigitClassifier, DigitClassifierConfig
from models.architectures.conditional_vae import EveryLayerDecoder, split_label_plane, with_label_plane
from models.evaluation.mnist.sample_quality import frechet_distance, gaussian_blur
from models.runtime.tasks import CONDITIONAL_VAE_DECODE, CONDITIONAL_VAE_ENCODE, TASKS
from models.training.objectives import Classification, LabelledElbo


def test_labels_travel_as_a_plane_and_come_back() -> None:
    images = torch.rand(5, 1, 28, 28)
    labels = torch.tensor([0, 9, 3, 3, 7])
    back_images, back_labels = split_label_plane(with_label_plane(images, labels))
    assert torch.equal(back_images, images) and torch.equal(back_labels, labels)


def test_the_conditional_vae_decodes_the_label_it_is_given() -> None:
    torch.manual_seed(0)
    model = ConditionalConvVAE(ConditionalConvVAEConfig(latent_size=4, widths=(8, 16), hidden_size=32)).eval()
    latents = torch.zeros(2, 4)
    with torch.no_grad():
        same = model.decode_given(latents, torch.tensor([3, 3]))
        other = model.decode_given(latents, torch.tensor([3, 8]))
        mean, log_variance = model.encode_given(torch.rand(2, 1, 28, 28), torch.tensor([1, 2]))
    assert torch.equal(same[0], same[1]) and not torch.equal(other[0], other[1])
    assert same.shape == (2, 1, 28, 28) and mean.shape == log_variance.shape == (2, 4)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        model.decode_given(latents, torch.tensor([3, 10]))


def test_the_label_can_enter_every_decoder_layer() -> None:
    torch.manual_seed(0)
    model = ConditionalConvVAE(
        ConditionalConvVAEConfig(latent_size=4, widths=(8, 16), hidden_size=32, label_every_layer=True)
    ).eval()
    latents = torch.zeros(3, 4)
    with torch.no_grad():
        decoded = model.decode_given(latents, torch.tensor([3, 3, 8]))
        restyled = model(with_label_plane(torch.rand(3, 1, 28, 28), torch.tensor([1, 2, 3])))
    assert decoded.shape == restyled.shape == (3, 1, 28, 28)
    assert torch.equal(decoded[0], decoded[1]) and not torch.equal(decoded[0], decoded[2])
    # every stage widened by the ten label channels; the card names the field only when it is set
    assert isinstance(model.decoder, EveryLayerDecoder)
    assert model.decoder.up.in_channels == 16 + 10 and model.decoder.to_logits.in_channels == 8 + 10
    assert model.config_dict()["label_every_layer"] is True
    first = ConditionalConvVAE(ConditionalConvVAEConfig(latent_size=4))  # the first published layout
    assert "label_every_layer" not in first.config_dict()
    assert {"decoder.0.weight", "decoder.2.weight", "decoder.5.weight", "decoder.7.weight"} <= set(first.state_dict())


def test_the_task_rows_carry_the_label_as_a_per_item_extra() -> None:
    torch.manual_seed(0)
    model = ConditionalConvVAE(ConditionalConvVAEConfig(latent_size=4, widths=(8, 16), hidden_size=32)).eval()
    latents = torch.randn(3, 4)
    labels = torch.tensor([2, 5, 7])
    assert CONDITIONAL_VAE_DECODE.extras == ("label",) and CONDITIONAL_VAE_ENCODE.extras == ("label",)
    with torch.no_grad():
        # as the batcher passes it: the label a float extra, one per item
        decoded = CONDITIONAL_VAE_DECODE.run(model, latents, {"label": labels.float()})
        assert isinstance(decoded, torch.Tensor)
        assert torch.equal(decoded, model.decode_given(latents, labels))
        assert not torch.equal(decoded, model.decode_given(latents, (labels + 1) % 10))
        images = torch.rand(3, 1, 28, 28)
        mean, _ = CONDITIONAL_VAE_ENCODE.run(model, images, {"label": labels.float()})
        assert torch.equal(mean, model.encode_given(images, labels)[0])
    assert TASKS["classify"].card_task == "classify"


def test_the_objectives_read_the_label_plane() -> None:
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(4, 1, 28, 28), torch.tensor([1, 2, 3, 4])
    inputs, targets = LabelledElbo().make_batch(with_label_plane(images, labels), generator)
    assert inputs.shape == (4, 2, 28, 28) and torch.equal(split_label_plane(inputs)[1], labels)
    assert set(targets.unique().tolist()) <= {0.0, 1.0}  # binarised pixels
    shifted, classes = Classification(shift_pixels=2).make_batch(with_label_plane(images, labels), generator)
    assert shifted.shape == (4, 1, 28, 28) and torch.equal(classes, labels)
    classifier = DigitClassifier(DigitClassifierConfig(widths=(4, 8), feature_size=16))
    loss = Classification().loss(classifier, shifted, classes, 0.0, generator)
    assert loss.ndim == 0 and abs(loss.item() - np.log(10)) < 0.5  # an untrained classifier: near chance


def test_frechet_distance_matches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 6))
    b = rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 6)) * 0.5 + 1.0
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a.T), np.cov(b.T)
    # tr((S_a S_b)^(1/2)) from the eigenvalues of the (non-symmetric) product itself: another route than the code's
    trace_root = np.sqrt(np.clip(np.linalg.eigvals(cov_a @ cov_b).real, 0, None)).sum()
    expected = ((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b) - 2 * trace_root
    assert frechet_distance(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(torch.tensor(a), torch.tensor(a)) == pytest.approx(0.0, abs=1e-8)


def test_gaussian_blur_keeps_the_mass_and_spreads_a_point() -> None:
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 14, 14] = 1.0
    blurred = gaussian_blur(image, 1.0)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5) and float(blurred.max()) < 0.2
    assert blurred[0, 0, 14, 15] == pytest.approx(blurred[0, 0, 15, 14])
