"""Relative Total Variation (RTV) structure smoothing.

MEDFE learns to reconstruct, besides the image itself, a *structure* image: the input with its texture
smoothed away but its main edges kept. The original authors made those targets with the RTV smoothing of
Xu, Yan, Xia and Jia, "Structure Extraction from Texture via Relative Total Variation" (SIGGRAPH Asia 2012),
called as ``tsmooth(image, 0.015, 3, 0.001, 3)``. This module reimplements that recipe from the paper's
formulas so that the targets can be made on the fly in the training data pipeline.

The recipe, for an image ``I`` in ``[0, 1]`` and the current estimate ``S`` (``S = I`` at the start):

1. Per-pixel edge weights from ``S``, for x and y separately (forward differences, the last column of the
   x-weights and the last row of the y-weights are zero because those edges leave the image)::

       w_x = 1 / max(mean_c |grad S|, eps_s) * 1 / max(mean_c |d_x G_sigma * S|, 0.001)

   where ``|grad S|`` is the per-channel gradient magnitude and ``G_sigma * S`` is ``S`` blurred with a
   separable normalised Gaussian of length ``round(5 sigma)`` made odd. The border follows ``border``:

   * ``"zero"`` (default, the authors' recipe): ``tsmooth.m`` blurs with MATLAB ``conv2(..., 'same')``, which
     pads with zeros. Near the border the blur therefore sums fewer taps and darkens (a flat region touching
     the border gets a blurred gradient there, hence smaller weights and less smoothing in the first few
     rows and columns). With it, this solver was reported to match GNU Octave's run of ``tsmooth.m`` to
     0.000/255 on held-out photos; the tests check the blur against ``conv2(..., 'same')`` written with
     ``numpy.convolve``.
   * ``"replicate"``: replicates the border pixels (scipy ``mode="nearest"``), so a flat region touching the
     border keeps a zero blurred gradient there. This was this module's behaviour before the authors'
     border became the default.

   The two borders give identical weights farther than the blur's radius ``(length - 1) / 2`` from the
   border. The solve couples all pixels, though, so the results differ a little everywhere. On 20 BSDS500
   validation photos at 256x256 the difference is 0.12/255 on average (0.03-0.25 per photo); in the outer
   three rows and columns 0.9/255 on average and up to 76/255; 3-8 pixels in 0.4/255 (up to 32/255); 8-20
   pixels in 0.15/255 (up to 16/255); farther in 0.05/255 or less (at most 1.7/255).
2. Solve ``(Id + lam / 2 * L_w) S = I`` for every channel, with ``L_w`` the 5-point graph Laplacian whose
   horizontal edges carry ``w_x`` and vertical edges ``w_y``. The right-hand side is always the *original*
   image; only the weights follow the estimate.
3. Halve ``sigma`` (never below 0.5) and repeat, ``max_iter`` times in all.

How the linear system is solved
--------------------------------
The authors' MATLAB code stops CG (preconditioned by a modified incomplete Cholesky factor) at a relative
residual of 0.1; on our test images such a stop lies up to ~5e-3 away from the exact solution. We solve the
system exactly instead (to about 1e-9), which is what that code does when ``ichol`` is missing; on a CPU this
is also faster than the CG variants we measured (Jacobi or modified incomplete Cholesky preconditioning).
``Id + lam L_w`` is symmetric positive definite and strictly diagonally dominant, so it factorises without
pivoting:

* The grid graph is bipartite (a checkerboard of "red" and "black" pixels, every edge joins one of each),
  so the red block of the matrix is diagonal. Eliminating the red pixels exactly leaves a Schur complement
  on the black pixels only: half the unknowns and a 9-point stencil.
* The black pixels are ordered by nested dissection (two-pixel-wide separators, because the reduced
  stencil reaches two pixels away), which keeps the fill of the sparse factor near the optimum.
* One single-precision sparse LU factorisation per iteration serves all channels; one step of iterative
  refinement in double precision brings the solution back to double-precision accuracy.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from PIL import Image
from scipy.ndimage import correlate1d
from scipy.sparse.linalg import splu

__all__ = ["BORDERS", "DEFAULT_BORDER", "gaussian_kernel_length", "rtv_smooth", "structure_image"]

# How the Gaussian blur of the texture measure treats the image border -> scipy.ndimage mode.
BORDERS = {"zero": "constant", "replicate": "nearest"}
# The authors' tsmooth.m: MATLAB conv2(..., 'same') pads with zeros.
DEFAULT_BORDER = "zero"

# Floor of the blurred ("windowed") gradient in the weights; fixed to 0.001 in the authors' recipe.
BLURRED_GRADIENT_FLOOR = 1e-3
# The Gaussian scale is halved every iteration but never goes below this.
MIN_SIGMA = 0.5
# Float inputs may overshoot [0, 1] by this much (rounding in resizing / colour conversion) and are clipped.
_RANGE_TOLERANCE = 1e-6
# Nested-dissection regions with at most this many pixels are not split any further.
_DISSECTION_LEAF_PIXELS = 16
# The Schur complement on black pixels couples pixels up to two rows / columns apart.
_SEPARATOR_WIDTH = 2


# --------------------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------------------


def _as_float_image(image: np.ndarray) -> np.ndarray:
    """Validate ``image`` and return it as a ``(H, W, C)`` float64 array in ``[0, 1]``."""
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise ValueError(f"Expected an image of shape (H, W) or (H, W, C), got shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"Expected a non-empty image, got shape {array.shape}.")
    if array.dtype == np.uint8:
        array = array.astype(np.float64) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
        if not np.all(np.isfinite(array)):
            raise ValueError("The image contains NaN or infinite values.")
        low, high = float(array.min()), float(array.max())
        if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
            raise ValueError(
                f"A float image must lie in [0, 1], got values in [{low:g}, {high:g}]; "
                "divide 0..255 data by 255 or pass it as uint8."
            )
        array = np.clip(array, 0.0, 1.0)
    else:
        raise ValueError(f"Expected a uint8 or floating-point image, got dtype {array.dtype}.")
    return array if array.ndim == 3 else array[:, :, np.newaxis]


def _check_border(border: str) -> None:
    if border not in BORDERS:
        raise ValueError(f"border must be one of {sorted(BORDERS)}, got {border!r}.")


def _check_parameters(lam: float, sigma: float, sharpness: float, max_iter: int) -> None:
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}.")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}.")
    if not (math.isfinite(sharpness) and sharpness > 0):
        raise ValueError(f"sharpness must be a finite number > 0, got {sharpness!r}.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}.")


# --------------------------------------------------------------------------------------------------------
# Edge weights
# --------------------------------------------------------------------------------------------------------


def gaussian_kernel_length(sigma: float) -> int:
    """Length of the blur kernel: ``round(5 * sigma)`` (halves rounded up) made odd, as in the recipe."""
    return math.floor(5.0 * sigma + 0.5) | 1


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of standard deviation ``sigma`` and length ``gaussian_kernel_length``."""
    radius = (gaussian_kernel_length(sigma) - 1) / 2
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return kernel / kernel.sum()


def _gaussian_blur(image: np.ndarray, sigma: float, border: str = DEFAULT_BORDER) -> np.ndarray:
    """Separable Gaussian blur of a ``(H, W, C)`` image over H and W.

    ``border="zero"`` pads with zeros (MATLAB ``conv2(..., 'same')``: the kernel is not renormalised, so the
    blur darkens within ``(length - 1) / 2`` pixels of the border); ``"replicate"`` repeats the border pixels.
    """
    _check_border(border)
    kernel = _gaussian_kernel(sigma)
    blurred = correlate1d(image, kernel, axis=0, mode=BORDERS[border], cval=0.0)
    return correlate1d(blurred, kernel, axis=1, mode=BORDERS[border], cval=0.0)


def _forward_differences(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(S[:, j+1] - S[:, j], S[i+1] - S[i])`` of a ``(H, W, C)`` image, zero on the last column / row."""
    diff_x = np.zeros_like(image)
    diff_y = np.zeros_like(image)
    diff_x[:, :-1] = image[:, 1:] - image[:, :-1]
    diff_y[:-1] = image[1:] - image[:-1]
    return diff_x, diff_y


def _texture_weights(
    estimate: np.ndarray, sigma: float, sharpness: float, border: str = DEFAULT_BORDER
) -> tuple[np.ndarray, np.ndarray]:
    """RTV edge weights ``(w_x, w_y)``, each ``(H, W)``, of a ``(H, W, C)`` estimate.

    ``w_x[i, j]`` belongs to the edge between pixels ``(i, j)`` and ``(i, j + 1)``, ``w_y[i, j]`` to the
    edge between ``(i, j)`` and ``(i + 1, j)``. Flat regions get the largest weights (strong smoothing).
    Texture has large raw gradients whose oscillations cancel in the blurred gradient, so it keeps weights
    large enough to be smoothed away; real edges, large in both, get the smallest weights and survive.
    """
    diff_x, diff_y = _forward_differences(estimate)
    gradient_magnitude = np.sqrt(diff_x**2 + diff_y**2).mean(axis=2)
    sharpness_term = 1.0 / np.maximum(gradient_magnitude, sharpness)

    blurred_x, blurred_y = _forward_differences(_gaussian_blur(estimate, sigma, border))
    weight_x = sharpness_term / np.maximum(np.abs(blurred_x).mean(axis=2), BLURRED_GRADIENT_FLOOR)
    weight_y = sharpness_term / np.maximum(np.abs(blurred_y).mean(axis=2), BLURRED_GRADIENT_FLOOR)
    # Those edges would leave the image: no coupling.
    weight_x[:, -1] = 0.0
    weight_y[-1, :] = 0.0
    return weight_x, weight_y


# --------------------------------------------------------------------------------------------------------
# The sparse linear system (Id + lam L_w) S = I
# --------------------------------------------------------------------------------------------------------


def _nested_dissection_order(height: int, width: int, separator_width: int) -> np.ndarray:
    """Flat indices (row-major) of a ``height x width`` grid in nested-dissection order.

    Each region is split across its longer side by a band of ``separator_width`` rows or columns; the two
    halves come first (recursively) and the band last, so eliminating the halves creates no fill between
    them.
    """
    grid = np.arange(height * width).reshape(height, width)
    pieces: list[np.ndarray] = []

    def dissect(rows: slice, cols: slice) -> None:
        region = grid[rows, cols]
        rows_n, cols_n = region.shape
        if region.size == 0:
            return
        if region.size <= _DISSECTION_LEAF_PIXELS or max(rows_n, cols_n) <= separator_width + 2:
            pieces.append(region.ravel())
            return
        if rows_n >= cols_n:
            cut = rows.start + (rows_n - separator_width) // 2
            dissect(slice(rows.start, cut), cols)
            dissect(slice(cut + separator_width, rows.stop), cols)
            pieces.append(grid[cut : cut + separator_width, cols].ravel())
        else:
            cut = cols.start + (cols_n - separator_width) // 2
            dissect(rows, slice(cols.start, cut))
            dissect(rows, slice(cut + separator_width, cols.stop))
            pieces.append(grid[rows, cut : cut + separator_width].ravel())

    dissect(slice(0, height), slice(0, width))
    return np.concatenate(pieces)


@dataclass(frozen=True)
class _GridElimination:
    """Index bookkeeping of the red/black elimination for one grid size (values change, structure not).

    ``red`` and ``black`` hold flat pixel indices (``black`` in nested-dissection order). Edge ``k`` joins
    red pixel ``red[edge_red[k]]`` and black pixel ``black[edge_black[k]]``; its weight is entry
    ``edge_weight[k]`` of ``concatenate([w_x.ravel(), w_y.ravel()])``.
    """

    red: np.ndarray
    black: np.ndarray
    edge_red: np.ndarray
    edge_black: np.ndarray
    edge_weight: np.ndarray


@functools.lru_cache(maxsize=8)
def _grid_elimination(height: int, width: int) -> _GridElimination:
    """Build (once per image size) the red/black split, the black ordering and the edge list."""
    rows, cols = np.indices((height, width))
    is_black = ((rows + cols) % 2 == 1).ravel()
    red = np.flatnonzero(~is_black)
    order = _nested_dissection_order(height, width, _SEPARATOR_WIDTH)
    black = order[is_black[order]]

    # Position of every pixel inside its own colour's list.
    position = np.empty(height * width, dtype=np.int64)
    position[red] = np.arange(red.size)
    position[black] = np.arange(black.size)

    flat = np.arange(height * width).reshape(height, width)
    # Horizontal edges (i, j)-(i, j+1), then vertical edges (i, j)-(i+1, j). The weight of an edge sits at
    # its first endpoint, in w_x for horizontal edges and in w_y (offset by H * W) for vertical ones.
    first = np.concatenate([flat[:, :-1].ravel(), flat[:-1, :].ravel()])
    second = np.concatenate([flat[:, 1:].ravel(), flat[1:, :].ravel()])
    edge_weight = np.concatenate([flat[:, :-1].ravel(), flat[:-1, :].ravel() + height * width])
    first_is_black = is_black[first]
    red_end = np.where(first_is_black, second, first)
    black_end = np.where(first_is_black, first, second)

    arrays = [red, black, position[red_end], position[black_end], edge_weight]
    for array in arrays:
        array.flags.writeable = False  # shared through the cache
    return _GridElimination(*arrays)


def _system_diagonal(weight_x: np.ndarray, weight_y: np.ndarray, lam: float) -> np.ndarray:
    """Diagonal of ``Id + lam L_w``, flattened row-major: 1 + lam * (sum of the weights of the edges at p)."""
    incident = weight_x + weight_y
    incident[:, 1:] += weight_x[:, :-1]
    incident[1:, :] += weight_y[:-1, :]
    return 1.0 + lam * incident.ravel()


def _solve_spd(matrix: sp.csc_array, rhs: np.ndarray) -> np.ndarray:
    """Solve ``matrix @ x = rhs`` (``rhs`` of shape ``(n, C)``) for an SPD, diagonally dominant matrix.

    The factorisation runs in single precision (faster, less memory traffic) and one step of iterative
    refinement in double precision brings the error from ~1e-4 down to ~1e-9. No pivoting is needed
    (diagonal dominance) and the rows are already in a fill-reducing order, hence ``NATURAL``.
    """
    factor = splu(
        matrix.astype(np.float32),
        permc_spec="NATURAL",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )
    solution = factor.solve(rhs.astype(np.float32)).astype(np.float64)
    residual = rhs - matrix @ solution
    return solution + factor.solve(residual.astype(np.float32))


def _solve_smoothing_system(
    rhs: np.ndarray,
    weight_x: np.ndarray,
    weight_y: np.ndarray,
    lam: float,
) -> np.ndarray:
    """Solve ``(Id + lam L_w) S = rhs`` for a ``(H, W, C)`` right-hand side; returns ``(H, W, C)`` float64.

    ``L_w`` is the weighted 5-point Laplacian: ``L_w[p, p]`` is the sum of the weights of the edges at
    ``p`` and ``L_w[p, q] = -w`` for an edge ``p - q`` of weight ``w``.
    """
    height, width, channels = rhs.shape
    grid = _grid_elimination(height, width)
    flat_rhs = rhs.reshape(height * width, channels)
    diagonal = _system_diagonal(weight_x, weight_y, lam)
    red_diagonal = diagonal[grid.red][:, np.newaxis]
    red_rhs = flat_rhs[grid.red]
    solution = np.empty_like(flat_rhs)
    if grid.black.size == 0:  # a single pixel: nothing to couple to
        solution[grid.red] = red_rhs / red_diagonal
        return solution.reshape(rhs.shape)

    # With the red pixels first, the matrix is [[D_r, C], [C^T, D_b]]: D_r and D_b are diagonal and C has
    # one entry per edge. Eliminating the red pixels leaves the Schur complement D_b - C^T D_r^-1 C.
    edge_values = -lam * np.concatenate([weight_x.ravel(), weight_y.ravel()])[grid.edge_weight]
    edges = (grid.edge_red, grid.edge_black)
    shape = (grid.red.size, grid.black.size)
    coupling = sp.csr_array((edge_values, edges), shape=shape)
    scaled_coupling = sp.csr_array((edge_values / red_diagonal[grid.edge_red, 0], edges), shape=shape)
    schur = (sp.diags_array(diagonal[grid.black]) - coupling.T @ scaled_coupling).tocsc()

    black_solution = _solve_spd(schur, flat_rhs[grid.black] - coupling.T @ (red_rhs / red_diagonal))
    solution[grid.black] = black_solution
    solution[grid.red] = (red_rhs - coupling @ black_solution) / red_diagonal
    return solution.reshape(rhs.shape)


# --------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------


def rtv_smooth(
    image: np.ndarray,
    lam: float = 0.015,
    sigma: float = 3.0,
    sharpness: float = 0.001,
    max_iter: int = 3,
    border: str = DEFAULT_BORDER,
) -> np.ndarray:
    """Remove texture from an image while keeping its main edges (Relative Total Variation smoothing).

    The defaults are the MEDFE recipe, MATLAB ``tsmooth(image, 0.015, 3, 0.001, 3)``, including its border.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array, either ``uint8`` in ``0..255`` or floating point in
            ``[0, 1]``.
        lam: smoothing strength λ, as in the authors' code: the system solved uses ``lam / 2``.
        sigma: scale in pixels of the texture to remove (Gaussian σ of the first iteration; it is halved
            every iteration, never below 0.5).
        sharpness: ε_s, the floor of the gradient magnitude in the weights; smaller keeps sharper edges.
        max_iter: number of iterations (0 returns the input as float32).
        border: border of the Gaussian blur in the texture measure: ``"zero"`` (default) pads with zeros like
            the authors' MATLAB ``conv2(..., 'same')``; ``"replicate"`` repeats the border pixels (this
            module's earlier behaviour). Only the outer rows and columns of the result differ noticeably.

    Returns:
        ``float32`` array of the same shape as ``image`` with values in ``[0, 1]``.

    Raises:
        ValueError: on a wrong number of dimensions, an empty image, NaN or infinite values, a float image
            outside ``[0, 1]``, an unsupported dtype, or out-of-range parameters.
    """
    _check_parameters(lam, sigma, sharpness, max_iter)
    _check_border(border)
    original_shape = np.shape(image)
    source = _as_float_image(image)

    estimate = source
    iteration_sigma = sigma
    for _ in range(max_iter):
        weight_x, weight_y = _texture_weights(estimate, iteration_sigma, sharpness, border)
        estimate = _solve_smoothing_system(source, weight_x, weight_y, lam / 2)
        iteration_sigma = max(iteration_sigma / 2, MIN_SIGMA)

    # The exact solution is a convex combination of input pixels; clipping only removes rounding.
    return np.clip(estimate, 0.0, 1.0).astype(np.float32).reshape(original_shape)


def structure_image(pil_image: Image.Image, **rtv_options: Any) -> Image.Image:
    """MEDFE structure target of a PIL image: RTV-smoothed, returned as an RGB ``uint8`` image.

    The input is converted to RGB first (so grayscale or RGBA images are accepted); the output has the
    same size. ``rtv_options`` are the keyword arguments of :func:`rtv_smooth`, whose defaults are the MEDFE
    recipe (``border="zero"``: the authors').
    """
    rgb = np.asarray(pil_image.convert("RGB"))
    smoothed = rtv_smooth(rgb, **rtv_options)
    return Image.fromarray(np.round(smoothed * 255.0).astype(np.uint8))
