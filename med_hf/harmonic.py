"""Harmonic (membrane) fill: the smooth interpolation of a hole from its surroundings.

The default model's refinement head blends it in as a hole prior (`MEDConfig.hole_prior="harmonic"`), the
image processor fills an alpha channel's hole with it, and the evaluation runs it as a classical baseline.
Shipped with the model files as remote code: it imports torch only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Jacobi sweeps per pyramid level of the harmonic fill. The coarse-to-fine start leaves only local error, which a
# few sweeps remove; 16 instead of 8 raises the fill's validation PSNR by only 0.03 dB and doubles its cost.
HARMONIC_SWEEPS = 8
# The pyramid stops once a side is at most this many pixels.
HARMONIC_COARSEST = 4


def harmonic_fill(image: torch.Tensor, hole: torch.Tensor, sweeps: int = HARMONIC_SWEEPS) -> torch.Tensor:
    """Fill the hole with a smooth interpolation of its surroundings (an approximate membrane/Laplace solution).

    A mask-weighted image pyramid (push-pull) gives a coarse-to-fine start, and at every level Jacobi sweeps of
    the discrete Laplace equation relax the unknown pixels while the known ones stay fixed. This is the smooth
    fill that classical diffusion inpainting (Navier-Stokes, Telea) approximates, computed in a few
    milliseconds for a 256x256 image.

    Args:
        image (`torch.Tensor` of shape `(batch_size, channels, height, width)`): any value range; pixels in the
            hole are ignored.
        hole (`torch.Tensor` of shape `(batch_size, 1, height, width)`): 1 = hole, 0 = known.

    Returns:
        `torch.Tensor` of the image's shape and range, equal to `image` outside the hole. A sample without any
        known pixel comes back as zeros.
    """
    known = 1 - hole
    # `where`, not a product: a NaN or infinity in the hole must not reach the known pixels' average.
    levels = [(torch.where(hole > 0, 0, image), known)]
    while min(levels[-1][1].shape[-2:]) > HARMONIC_COARSEST:
        weighted, weight = levels[-1]
        levels.append((F.avg_pool2d(weighted, 2), F.avg_pool2d(weight, 2)))
    weighted, weight = levels[-1]
    # Every pixel of the coarsest level starts at the mean of the sample's known pixels.
    known_mass = weight.sum((2, 3), keepdim=True)
    filled = (weighted.sum((2, 3), keepdim=True) / torch.where(known_mass > 0, known_mass, 1)).expand_as(weighted)
    for weighted, weight in reversed(levels):
        filled = F.interpolate(filled, size=weighted.shape[-2:], mode="bilinear", align_corners=False)
        observed = weight > 0
        values = weighted / torch.where(observed, weight, 1)
        filled = _jacobi_sweeps(values, observed, filled, sweeps)
    return filled


def _jacobi_sweeps(values: torch.Tensor, observed: torch.Tensor, start: torch.Tensor, sweeps: int) -> torch.Tensor:
    fixed = torch.where(observed, values, 0)
    free = (~observed).to(values.dtype)
    # One multiply-add per sweep both sets the free pixels and restores the observed ones (faster than
    # `torch.where` on CPU).
    filled = torch.addcmul(fixed, start, free)
    free_quarter = free * 0.25
    for _ in range(sweeps):
        # The 4 neighbours by slicing: several times faster on CPU than a depthwise convolution.
        padded = F.pad(filled, (1, 1, 1, 1), mode="replicate")
        up, down = padded[..., :-2, 1:-1], padded[..., 2:, 1:-1]
        left, right = padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]
        filled = torch.addcmul(fixed, up + down + left + right, free_quarter)
    return filled


__all__ = ["harmonic_fill"]
