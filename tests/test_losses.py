"""Training losses and discriminators."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from med_hf.training.discriminator import MEDDiscriminator
from med_hf.training.losses import (
    PerceptualStyleLoss,
    VGG16Features,
    differentiable_ssim,
    gram_matrix,
    hole_area_weights,
    reconstruction_loss,
    relativistic_discriminator_loss,
    relativistic_generator_loss,
)


def test_ssim_matches_the_evaluation_metric():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (48, 40, 3)).astype(np.uint8)
    noisy = np.clip(target + rng.normal(0, 25, target.shape), 0, 255).astype(np.uint8)
    expected = structural_similarity(noisy, target, data_range=255, channel_axis=2)
    as_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].double() / 127.5 - 1  # noqa: E731
    assert differentiable_ssim(as_tensor(noisy), as_tensor(target)).item() == pytest.approx(expected, abs=1e-6)
    assert differentiable_ssim(as_tensor(target), as_tensor(target)).item() == pytest.approx(1.0)


def test_reconstruction_loss_weights_hole_and_valid_pixels():
    prediction, target = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1  # half the image is hole
    assert reconstruction_loss(prediction, target, mask, 1.0, 1.0).item() == pytest.approx(1.0)
    assert reconstruction_loss(prediction, target, mask, 6.0, 1.0).item() == pytest.approx(3.5)
    assert reconstruction_loss(prediction, target, mask, 0.0, 2.0).item() == pytest.approx(1.0)


def test_hole_area_weights_give_each_sample_the_same_say():
    mask = torch.zeros(3, 1, 10, 10)
    mask[0, :, :5] = 1  # 50 % hole
    mask[1, :, :1] = 1  # 10 % hole
    weights = hole_area_weights(mask)  # the empty mask is floored at 1 %
    assert weights.mean().item() == pytest.approx(1.0)
    assert (weights / weights[0]).tolist() == pytest.approx([1.0, 5.0, 50.0])

    # The same error per hole pixel: pixel averaging weighs the large hole 5x, hole-area weighting evens it out.
    prediction, target = torch.zeros(2, 3, 10, 10), mask[:2].expand(2, 3, 10, 10).clone()
    large, small = (reconstruction_loss(prediction[i, None], target[i, None], mask[i, None], 1, 1) for i in range(2))
    assert large.item() == pytest.approx(5 * small.item())
    weighted = reconstruction_loss(prediction, target, mask[:2], 1.0, 1.0, sample_weights=hole_area_weights(mask[:2]))
    assert weighted.item() == pytest.approx(0.5 * (1 / 3 * 0.5 + 5 / 3 * 0.1))
    assert differentiable_ssim(target, target, sample_weights=hole_area_weights(mask[:2])).item() == pytest.approx(1.0)


def test_relativistic_average_lsgan_formulas():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([1.0, -1.0])  # means 1 and 0
    # D: 1/2 [mean((r - mean f - 1)^2) + mean((f - mean r + 1)^2)] = 1/2 [(1 + 1)/2 + (1 + 1)/2] = 1
    assert relativistic_discriminator_loss(real, fake).item() == pytest.approx(1.0)
    # G: 1/2 [mean((r - mean f + 1)^2) + mean((f - mean r - 1)^2)] = 1/2 [(9 + 1)/2 + (1 + 9)/2] = 5
    assert relativistic_generator_loss(real, fake).item() == pytest.approx(5.0)
    # A perfect discriminator (real exceeds fake by exactly 1 on average) has zero loss.
    assert relativistic_discriminator_loss(torch.tensor([1.0]), torch.tensor([0.0])).item() == 0


def test_discriminator_matches_the_released_size_and_patch_grid():
    discriminator = MEDDiscriminator()
    assert sum(p.numel() for p in discriminator.parameters()) == 2_764_737
    assert discriminator(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 8, 8)
    assert discriminator(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 2, 2)


def test_vgg16_loads_local_weights_and_gives_zero_loss_for_identical_images(tmp_path):
    torch.manual_seed(0)
    reference = VGG16Features()
    state = {f"features.{k}": v for k, v in reference.features.state_dict().items()}
    torch.save(state, tmp_path / "vgg16.pth")  # torchvision's key layout
    loaded = VGG16Features.from_pretrained(tmp_path / "vgg16.pth")
    for key, value in reference.features.state_dict().items():
        assert torch.equal(loaded.features.state_dict()[key], value)
    assert not any(p.requires_grad for p in loaded.parameters())

    loss = PerceptualStyleLoss(loaded)
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    perceptual, style = loss(image, image)
    assert perceptual.item() == 0 and style.item() == 0
    perceptual, style = loss(image, image.flip(-1))
    assert perceptual.item() > 0 and style.item() >= 0
    features = loaded(image)
    assert features["relu5_1"].shape == (1, 512, 4, 4)
    assert features["relu5_2"].shape == (1, 512, 2, 2)  # the released relu5_1 block applied twice: 1/32


def test_vgg16_rejects_a_file_that_is_not_vgg(tmp_path):
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a VGG16 state dict"):
        VGG16Features.from_pretrained(tmp_path / "bad.pth")


def test_gram_matrix_is_normalised_by_size():
    features = torch.ones(1, 2, 3, 4)
    torch.testing.assert_close(gram_matrix(features), torch.full((1, 2, 2), 12 / 24))
