"""Winograd minimal-filtering convolution for the stride-1 'same' convolutions of the MEDFE filling streams.

The 15 partial convolutions (256 -> 256 channels, kernels 3/5/7, on a 32x32 grid) are most of the MEDFE
forward. Winograd's F(m, r) computes m outputs of an r-tap filter from m + r - 1 inputs with m + r - 1
multiplications instead of m * r (Lavin & Gray, 2016); nested over rows and columns,

    Y = A_rows^T [ (G_rows g G_cols^T) * (B_rows^T d B_cols) ] A_cols

The transforms come from evaluating polynomials at a few small interpolation points (Toom-Cook); the more
points, the worse float32 rounding gets. Every tile is 4x4 outputs. 3x3 and 5x5 kernels use F(4, k) on both
axes (at most 8 points). A 7x7 kernel would need 10 points per axis, which float32 does not tolerate on both
axes at once; on the columns alone it does (the convolution's rounding grows about 8-fold, the released
model's output moves 2e-5 on average from float64), so the columns use F(4, 7) and the rows are split into
blocks of 4 taps (the last one cut short) computed with F(4, 4): a block's shift of 4 rows is one tile, so the
blocks share one input transform, and their sum is one accumulated matrix product per block.

The channel mixing is one batched matrix product per interpolation point, on channels-last tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import torch
import torch.nn.functional as F

TILE = 4
# Points per input tile: rows (both axes of a 2D tile) stay accurate up to 8, columns alone up to 10.
MAX_ROW_POINTS = 8
MAX_COLUMN_POINTS = 10
MAX_KERNEL_SIZE = MAX_COLUMN_POINTS - TILE + 1
# Finite interpolation points per input-tile size n (the n-th point is infinity). Small integers and their
# reciprocals keep the transform matrices well conditioned.
_POINTS = {
    6: (0, 1, -1, 2, -2),
    7: (0, 1, -1, 2, -2, Fraction(1, 2)),
    8: (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)),
    10: (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2), Fraction(3, 2), Fraction(-3, 2)),
}


@dataclass(frozen=True)
class AxisPlan:
    """F(`tile`, `taps`) along one axis, in float64: A^T (tile, points), G (points, taps), B^T (points, points)."""

    tile: int
    taps: int
    output_transform: torch.Tensor
    kernel_transform: torch.Tensor
    input_transform: torch.Tensor

    @property
    def points(self) -> int:
        return self.tile + self.taps - 1


@dataclass(frozen=True)
class WinogradPlan:
    """The tiling of a `kernel_size` x `kernel_size` 'same' convolution: the kernel's rows are split into
    `row_blocks` blocks of `rows.taps` taps, its columns are one block of `cols.taps == kernel_size` taps."""

    kernel_size: int
    rows: AxisPlan
    cols: AxisPlan

    @property
    def row_blocks(self) -> int:
        return -(-self.kernel_size // self.rows.taps)


@lru_cache
def winograd_plan(kernel_size: int) -> WinogradPlan:
    """The tiling of a `kernel_size` x `kernel_size` convolution (odd, from 3 to `MAX_KERNEL_SIZE`)."""
    if kernel_size % 2 == 0 or not 3 <= kernel_size <= MAX_KERNEL_SIZE:
        raise ValueError(
            f"Winograd 'same' convolution needs an odd kernel size from 3 to {MAX_KERNEL_SIZE}, got {kernel_size}"
        )
    row_taps = kernel_size if TILE + kernel_size - 1 <= MAX_ROW_POINTS else TILE
    # The plan is shared by every later call: its tensors must not be inference tensors, which autograd rejects.
    with torch.inference_mode(False):
        return WinogradPlan(kernel_size, _axis_plan(TILE, row_taps), _axis_plan(TILE, kernel_size))


def _axis_plan(tile: int, taps: int) -> AxisPlan:
    """F(tile, taps) from the points of `_POINTS` plus the point at infinity.

    A linear convolution s = g * x of lengths `taps` and `tile` is recovered from the products of the two
    polynomials evaluated at n points: s = E_n^-1 [(E_taps g) * (E_tile x)], with E_k the (n x k) evaluation
    matrix. The correlation a convolution layer computes is its transpose with respect to x.
    """
    points = tile + taps - 1

    def evaluation(columns: int) -> torch.Tensor:
        rows = [[Fraction(p) ** j for j in range(columns)] for p in _POINTS[points]]
        rows.append([Fraction(0)] * (columns - 1) + [Fraction(1)])  # infinity: the leading coefficient
        return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)

    input_transform = torch.linalg.inv(evaluation(points)).T.contiguous()
    return AxisPlan(tile, taps, evaluation(tile).T.contiguous(), evaluation(taps), input_transform)


def transform_kernel(weight: torch.Tensor, plan: WinogradPlan) -> torch.Tensor:
    """(out, in, k, k) kernel -> (points, row_blocks, in, out): the matrices of the channel product."""
    out_channels, in_channels, size, _ = weight.shape
    if size != plan.kernel_size:
        raise ValueError(f"plan is for {plan.kernel_size}x{plan.kernel_size} kernels, got {size}x{size}")
    rows, cols = plan.rows, plan.cols
    row_transform, col_transform = rows.kernel_transform.to(weight), cols.kernel_transform.to(weight)
    transformed = weight.new_empty(rows.points * cols.points, plan.row_blocks, in_channels, out_channels)
    # Block by block, so that temporaries stay a fraction of the kernel. A block cut short by the kernel's edge
    # uses the first columns of G, which is the same as zero-padding it.
    for block in range(plan.row_blocks):
        taps = weight[:, :, block * rows.taps : (block + 1) * rows.taps]
        transform = torch.kron(row_transform[:, : taps.shape[2]], col_transform)
        taps = taps.permute(2, 3, 1, 0).reshape(-1, in_channels * out_channels)
        transformed[:, block] = (transform @ taps).view(-1, in_channels, out_channels)
    return transformed


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
    rows, cols, blocks = plan.rows, plan.cols, plan.row_blocks
    tiles_h, tiles_w = -(-height // rows.tile), -(-width // cols.tile)
    grid_h = tiles_h + blocks - 1  # input tile rows: the last block reads further down
    pad = plan.kernel_size // 2
    padded_h = (grid_h - 1) * rows.tile + rows.points
    padded_w = (tiles_w - 1) * cols.tile + cols.points
    # (height, batch, width, channels): gathers move whole channel vectors, and a range of tile rows is one
    # strided matrix over all samples.
    padded = F.pad(
        hidden.permute(2, 0, 3, 1),
        (0, 0, pad, padded_w - width - pad, 0, 0, pad, padded_h - height - pad),
    )

    # B^T d B as two one-dimensional transforms, columns first so that the result comes out point-major.
    tiles = padded.unfold(2, cols.points, cols.tile).permute(4, 0, 1, 2, 3).reshape(cols.points, -1)
    tiles = (cols.input_transform.to(hidden) @ tiles).view(cols.points, -1, batch, tiles_w, channels)
    tiles = tiles.unfold(1, rows.points, rows.tile).permute(5, 0, 1, 2, 3, 4).reshape(rows.points, -1)
    tiles = (rows.input_transform.to(hidden) @ tiles).view(rows.points * cols.points, grid_h, -1, channels)

    # Row block b of the kernel reads the input tiles b rows further down: one accumulated product per block.
    products = torch.bmm(tiles[:, :tiles_h].flatten(1, 2), transformed_kernel[:, 0])
    for block in range(1, blocks):
        products.baddbmm_(tiles[:, block : block + tiles_h].flatten(1, 2), transformed_kernel[:, block])

    output_transform = torch.kron(rows.output_transform.to(hidden), cols.output_transform.to(hidden))
    output = (output_transform @ products.view(rows.points * cols.points, -1)).view(
        rows.tile, cols.tile, tiles_h, batch, tiles_w, -1
    )
    output = output.permute(3, 5, 2, 0, 4, 1).reshape(batch, -1, tiles_h * rows.tile, tiles_w * cols.tile)
    return output[..., :height, :width]
