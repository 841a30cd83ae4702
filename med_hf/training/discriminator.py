"""The PatchGAN discriminators MEDFE trains against (a global one on the image, a local one on a crop)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class MEDDiscriminator(nn.Module):
    """Spectral-normalised PatchGAN: stride-2 4x4 convolutions 3 -> 64 -> 128 -> 256 -> 512 -> 1, no norm layers.

    Input: images (batch, 3, H, W) in [-1, 1]. Output: logits (batch, 1, H / 32, W / 32), e.g. 8x8 for 256x256
    and 2x2 for the 64x64 local crop. No sigmoid: the relativistic LSGAN losses take raw logits.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3, slope: float = 0.2):
        super().__init__()
        widths = [in_channels] + [base_channels * min(2**i, 8) for i in range(num_layers + 1)] + [1]
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            layers.append(spectral_norm(nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1)))
            if i < len(widths) - 2:
                layers.append(nn.LeakyReLU(slope))
        self.layers = nn.Sequential(*layers)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """The original initialisation: kernels ~ N(0, std), biases 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.parametrizations.weight.original, 0.0, std)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)
