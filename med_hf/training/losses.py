"""Training losses of MEDFE (the released recipe): reconstruction, perceptual/style on VGG16, relativistic LSGAN,
plus an SSIM term (not in the original recipe) for models tuned for PSNR/SSIM. The recipe's quirks and the
options that change them are released quirks Q8-Q11 in docs/released_quirks.md.

All images are float tensors (batch, 3, H, W) in [-1, 1].
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

# torchvision's VGG16 `features` layout: conv channel widths, "M" = max-pool. Indices follow from it.
_VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# Index (in `features`) of the ReLU whose output each loss reads.
PERCEPTUAL_LAYERS = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 18, "relu5_1": 25}
STYLE_LAYERS = {"relu2_2": 8, "relu3_3": 15, "relu4_3": 22}


def reconstruction_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    hole_weight: float,
    valid_weight: float,
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean L1 with separate weights for hole and known pixels.

    `hole_weight == valid_weight == 1` is the released recipe: one L1 over the whole raw output (released quirk
    Q10, docs/released_quirks.md).
    `sample_weights` (batch,) scale each sample's mean (see `hole_area_weights`); `None` weighs all alike.
    """
    error = (prediction - target).abs()
    if hole_weight != valid_weight:
        error = error * (hole_weight * mask + valid_weight * (1 - mask))
    else:
        error = hole_weight * error
    return _weighted_mean(error, sample_weights)


def hole_area_weights(mask: torch.Tensor, floor: float = 0.01) -> torch.Tensor:
    """Per-sample loss weights proportional to 1 / hole area (floored at `floor`), normalised to mean 1.

    The evaluation averages PSNR and SSIM per image, so a 5 % hole counts as much as a 50 % one; a loss averaged
    over pixels instead lets the large holes dominate the gradient. `mask` is (batch, 1, H, W), 1 = hole.
    """
    weights = 1 / mask.flatten(1).mean(dim=1).clamp_min(floor)
    return weights / weights.mean()


def _weighted_mean(values: torch.Tensor, sample_weights: torch.Tensor | None) -> torch.Tensor:
    if sample_weights is None:
        return values.mean()
    return (values.flatten(1).mean(dim=1) * sample_weights).mean()


def differentiable_ssim(
    prediction: torch.Tensor, target: torch.Tensor, window: int = 7, sample_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean SSIM with the conventions of `skimage.metrics.structural_similarity` (the evaluation metric).

    Uniform `window` x `window` statistics with the sample-covariance correction, K1 = 0.01, K2 = 0.03, border of
    `window // 2` pixels cropped, averaged over channels and pixels. SSIM is not shift-invariant (its luminance
    term compares absolute means), so the [-1, 1] images are first mapped to [0, 1], data range 1.
    `sample_weights` (batch,) weigh each image's mean SSIM as in `reconstruction_loss`.
    """
    prediction, target = (prediction + 1) / 2, (target + 1) / 2
    channels = prediction.shape[1]
    kernel = prediction.new_full((channels, 1, window, window), 1.0 / window**2)

    def local_mean(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=channels)

    n = window**2
    correction = n / (n - 1)
    mu_x, mu_y = local_mean(prediction), local_mean(target)
    var_x = correction * (local_mean(prediction * prediction) - mu_x**2)
    var_y = correction * (local_mean(target * target) - mu_y**2)
    cov = correction * (local_mean(prediction * target) - mu_x * mu_y)
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return _weighted_mean(ssim_map, sample_weights)


def relativistic_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic-average LSGAN loss of a discriminator: real should beat the average fake by 1, and vice versa."""
    return 0.5 * (
        ((real_logits - fake_logits.mean() - 1) ** 2).mean() + ((fake_logits - real_logits.mean() + 1) ** 2).mean()
    )


def relativistic_generator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic-average LSGAN loss of the generator: the roles of real and fake swapped."""
    return 0.5 * (
        ((real_logits - fake_logits.mean() + 1) ** 2).mean() + ((fake_logits - real_logits.mean() - 1) ** 2).mean()
    )


class VGG16Features(nn.Module):
    """Frozen VGG16 convolutional trunk returning the activations the perceptual and style losses read.

    Built without torchvision; the weights (ImageNet VGG16, torchvision's `features.*` keys, as in
    `vgg16-397923af.pth` or a Hub repository holding such a state dict) must be supplied: they are never
    downloaded behind the user's back and never faked.
    """

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_channels, item, 3, padding=1), nn.ReLU()]
                in_channels = item
        self.features = nn.Sequential(*layers)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_pretrained(cls, weights: str | Path) -> VGG16Features:
        """Load from a local file (.pth/.bin/.safetensors) or a Hub repo id (optionally `repo_id:filename`)."""
        model = cls()
        state = _load_state_dict(weights)
        trunk = {}
        for key, value in state.items():
            name = key.split("features.", 1)[-1] if "features." in key else None
            if name is not None:
                trunk[name] = value
        missing, unexpected = model.features.load_state_dict(trunk, strict=False)
        if missing:
            raise ValueError(f"{weights} is not a VGG16 state dict: missing {len(missing)} keys, e.g. {missing[0]}")
        return model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        wanted = {**{v: k for k, v in PERCEPTUAL_LAYERS.items()}, **{v: k for k, v in STYLE_LAYERS.items()}}
        outputs = {}
        hidden = images
        for index, layer in enumerate(self.features):
            hidden = layer(hidden)
            if index in wanted:
                outputs[wanted[index]] = hidden
            if index == PERCEPTUAL_LAYERS["relu5_1"]:
                break
        # Released quirk Q9 (docs/released_quirks.md): the released code's "relu5_2" re-applies the relu5_1 block
        # (pool, conv5_1, ReLU) to the relu5_1 features.
        outputs["relu5_2"] = self.features[25](self.features[24](self.features[23](hidden)))
        return outputs


def _load_state_dict(weights: str | Path) -> dict[str, torch.Tensor]:
    path = Path(weights)
    if not path.is_file():
        repo_id, _, filename = str(weights).partition(":")
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(repo_id, filename or "model.safetensors"))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = features.shape
    flat = features.reshape(batch, channels, height * width)
    return flat @ flat.transpose(1, 2) / (channels * height * width)


class PerceptualStyleLoss(nn.Module):
    """Perceptual (mean L1 of relu{1..5}_1) and style (L1 of Gram matrices) losses on VGG16 features.

    Images go in as [-1, 1] without ImageNet normalisation, as in the released recipe.
    """

    def __init__(self, vgg: VGG16Features):
        super().__init__()
        self.vgg = vgg

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        predicted = self.vgg(prediction)
        with torch.no_grad():
            reference = self.vgg(target)
        perceptual = sum(F.l1_loss(predicted[name], reference[name]) for name in PERCEPTUAL_LAYERS)
        style = sum(
            F.l1_loss(gram_matrix(predicted[name]), gram_matrix(reference[name])) for name in [*STYLE_LAYERS, "relu5_2"]
        )
        return perceptual, style
