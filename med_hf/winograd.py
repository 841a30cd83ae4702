"""Winograd minimal-filtering convolution for the stride-1 'same' convolutions of the MEDFE filling streams.

The 15 partial convolutions (256 -> 256 channels, kernels 3/5/7, on a 32x32 grid) are most of the MEDFE
forward. Winograd's F(m x m, r x r) computes an m x m output tile from an (m + r - 1)^2 input tile with
(m + r - 1)^2 multiplications per channel pair instead of m^2 r^2 (Lavin & Gray, 2016):

    Y = A^T [ (G g G^T) * (B^T d B) ] A

The transforms come from evaluating polynomials at a few small interpolation points (Toom-Cook). We use output
tiles of m = 4 and keep every input tile at n <= 8 points, where float32 rounding stays within a few times that
of a direct convolution. A 7x7 kernel would need n = 10, which is not accurate enough, so it is zero-padded to
8x8 and split into 2x2 blocks of 4x4 kernels: a block's shift of 4 pixels is one output tile, so all blocks
share one input transform, and the block sum becomes part of the matrix product.

The channel mixing is one batched matrix product per interpolation point, on channels-last tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import torch
import torch.nn.functional as F

OUTPUT_TILE = 4
MAX_POINTS = 8
# Finite interpolation points per input-tile size n (the n-th point is infinity). Small integers and their
# reciprocals keep the transform matrices well conditioned.
_POINTS = {
    4: (0, 1, -1),
    5: (0, 1, -1, 2),
    6: (0, 1, -1, 2, -2),
    7: (0, 1, -1, 2, -2, Fraction(1, 2)),
    8: (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)),
}


@dataclass(frozen=True)
class WinogradPlan:
    """How a `kernel_size` x `kernel_size` 'same' convolution is tiled.

    The kernel is zero-padded to `blocks * block_size` and split into `blocks` x `blocks` sub-kernels of
    `block_size`, each computed with F(`tile` x `tile`, `block_size` x `block_size`) on input tiles of
    `points` x `points`.
    """

    kernel_size: int
    tile: int
    block_size: int
    blocks: int
    output_transform: torch.Tensor  # A^T, (tile, points)
    kernel_transform: torch.Tensor  # G, (points, block_size)
    input_transform: torch.Tensor  # B^T, (points, points)

    @property
    def points(self) -> int:
        return self.tile + self.block_size - 1


@lru_cache
def winograd_plan(kernel_size: int) -> WinogradPlan:
    """The tiling of a `kernel_size` x `kernel_size` convolution, transforms in float64."""
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"Winograd 'same' convolution needs an odd kernel size of at least 3, got {kernel_size}")
    tile = OUTPUT_TILE
    block_size = kernel_size if tile + kernel_size - 1 <= MAX_POINTS else tile
    blocks = -(-kernel_size // block_size)
    points = tile + block_size - 1
    output_transform, kernel_transform, input_transform = _toom_cook(tile, block_size, _POINTS[points])
    return WinogradPlan(kernel_size, tile, block_size, blocks, output_transform, kernel_transform, input_transform)


def _toom_cook(tile: int, kernel: int, finite_points: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A^T, G, B^T of F(tile, kernel) for the given points plus the point at infinity.

    A linear convolution s = g * x of lengths `kernel` and `tile` is recovered from the products of the two
    polynomials evaluated at n points: s = E_n^-1 [(E_kernel g) * (E_tile x)], with E_k the (n x k) evaluation
    matrix. The correlation a convolution layer computes is its transpose with respect to x.
    """

    def evaluation(columns: int) -> torch.Tensor:
        rows = [[Fraction(p) ** j for j in range(columns)] for p in finite_points]
        rows.append([Fraction(0)] * (columns - 1) + [Fraction(1)])  # infinity: the leading coefficient
        return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)

    points = tile + kernel - 1
    return evaluation(tile).T.contiguous(), evaluation(kernel), torch.linalg.inv(evaluation(points)).T.contiguous()


def transform_kernel(weight: torch.Tensor, plan: WinogradPlan) -> torch.Tensor:
    """(out, in, k, k) kernel -> (points^2, blocks^2 * in, out): the per-point matrices of the channel product."""
    out_channels, in_channels, size, _ = weight.shape
    if size != plan.kernel_size:
        raise ValueError(f"plan is for {plan.kernel_size}x{plan.kernel_size} kernels, got {size}x{size}")
    r, s, n = plan.block_size, plan.blocks, plan.points
    padded = F.pad(weight, (0, s * r - size, 0, s * r - size)).view(out_channels, in_channels, s, r, s, r)
    # Taps first, then (block row, block col, in, out): one matrix product transforms every sub-kernel straight
    # into the layout of the channel product.
    taps = padded.permute(3, 5, 2, 4, 1, 0).reshape(r * r, -1)
    kernel_transform = plan.kernel_transform.to(weight)
    transformed = torch.kron(kernel_transform, kernel_transform) @ taps
    return transformed.view(n * n, s * s * in_channels, out_channels)


def winograd_conv2d(hidden: torch.Tensor, transformed_kernel: torch.Tensor, plan: WinogradPlan) -> torch.Tensor:
    """Stride-1 convolution with zero padding `kernel_size // 2`, no bias.

    Args:
        hidden: (batch, in, height, width), any height and width.
        transformed_kernel: `transform_kernel(weight, plan)`.
    Returns:
        (batch, out, height, width), equal to `F.conv2d(hidden, weight, padding=kernel_size // 2)` up to float
        rounding.
    """
    batch, channels, height, width = hidden.shape
    m, n, s = plan.tile, plan.points, plan.blocks
    tiles_h, tiles_w = -(-height // m), -(-width // m)
    grid_h, grid_w = tiles_h + s - 1, tiles_w + s - 1  # input tiles, one more per extra block
    pad = plan.kernel_size // 2
    padded = F.pad(
        hidden.permute(0, 2, 3, 1),  # channels last: every gather below moves whole channel vectors
        (0, 0, pad, (grid_w - 1) * m + n - width - pad, pad, (grid_h - 1) * m + n - height - pad),
    )
    input_transform = plan.input_transform.to(hidden)

    # B^T d B as two one-dimensional transforms, columns first so that the result comes out point-major.
    cols = padded.unfold(2, n, m).permute(4, 0, 1, 2, 3).reshape(n, -1)
    cols = (input_transform @ cols).view(n, batch, padded.shape[1], grid_w, channels)
    rows = cols.unfold(2, n, m).permute(5, 0, 1, 2, 3, 4).reshape(n, -1)
    tiles = (input_transform @ rows).view(n, n, batch, grid_h, grid_w, channels)
    if s > 1:
        # The block (a, b) of the kernel reads the input tile (a, b) places further on.
        tiles = torch.cat([tiles[:, :, :, a : a + tiles_h, b : b + tiles_w] for a in range(s) for b in range(s)], -1)
    products = torch.bmm(tiles.reshape(n * n, batch * tiles_h * tiles_w, -1), transformed_kernel)

    output_transform = plan.output_transform.to(hidden)
    output = torch.kron(output_transform, output_transform) @ products.view(n * n, -1)
    output = output.view(m, m, batch, tiles_h, tiles_w, -1).permute(2, 5, 3, 0, 4, 1)
    return output.reshape(batch, -1, tiles_h * m, tiles_w * m)[..., :height, :width]
