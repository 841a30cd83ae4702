"""Tests of the RTV structure smoothing (med_hf.training.rtv) on synthetic images whose structure is known."""

import inspect
import math

import numpy as np
import pytest
import scipy.sparse as sp
from PIL import Image
from scipy.ndimage import correlate1d
from scipy.sparse.linalg import spsolve

from med_hf.training.rtv import (
    BORDERS,
    DEFAULT_BORDER,
    _gaussian_blur,
    _gaussian_kernel,
    _solve_smoothing_system,
    _texture_weights,
    gaussian_kernel_length,
    rtv_smooth,
    structure_image,
)

SIZE = 64
EDGE_COLUMN = 32  # first column of the right-hand region
LOW, HIGH = 0.3, 0.7
TEXTURE_AMPLITUDE = 0.08
# Pixels next to the edge are left out when measuring the texture left inside a region.
EDGE_MARGIN = 4
# Texture variance left inside a flat region, relative to the input (a 3x3 box blur leaves ~1/9 to 1/81).
MAX_VARIANCE_RATIO = 0.01
# Fraction of the step that must remain between the pixels 2 to the left and 1 to the right of the edge.
MIN_JUMP_FRACTION = 0.7


def _two_region_image(texture: str) -> np.ndarray:
    """A 64x64 gray step edge (0.3 | 0.7) with high-frequency texture of amplitude 0.08 added."""
    rows, cols = np.indices((SIZE, SIZE))
    base = np.where(cols < EDGE_COLUMN, LOW, HIGH)
    if texture == "checkerboard":
        pattern = np.where((rows + cols) % 2 == 0, 1.0, -1.0)
    elif texture == "vertical_stripes":
        pattern = np.where(cols % 2 == 0, 1.0, -1.0)
    elif texture == "horizontal_stripes":
        pattern = np.where((rows // 2) % 2 == 0, 1.0, -1.0)
    elif texture == "noise":
        pattern = np.random.default_rng(0).uniform(-1.0, 1.0, (SIZE, SIZE))
    else:
        raise AssertionError(texture)
    return base + TEXTURE_AMPLITUDE * pattern


def _colour(gray: np.ndarray) -> np.ndarray:
    """Three channels with different contrasts, all in [0, 1]."""
    return np.stack([gray, 0.8 * gray + 0.1, 1.0 - gray], axis=-1)


@pytest.mark.parametrize("texture", ["checkerboard", "vertical_stripes", "horizontal_stripes", "noise"])
def test_texture_is_removed_and_the_step_edge_kept(texture):
    image = _colour(_two_region_image(texture))
    smoothed = rtv_smooth(image)

    left = np.s_[:, : EDGE_COLUMN - EDGE_MARGIN]
    right = np.s_[:, EDGE_COLUMN + EDGE_MARGIN :]
    for channel in range(3):
        before, after = image[..., channel], smoothed[..., channel]
        for region in (left, right):
            assert after[region].var() < MAX_VARIANCE_RATIO * before[region].var()
        step = before[right].mean() - before[left].mean()
        jump = after[:, EDGE_COLUMN + 1].mean() - after[:, EDGE_COLUMN - 2].mean()
        assert abs(jump) > MIN_JUMP_FRACTION * abs(step)
        assert np.sign(jump) == np.sign(step)
        # The flat regions keep their own level (no bleeding across the edge).
        assert after[left].mean() == pytest.approx(before[left].mean(), abs=0.01)
        assert after[right].mean() == pytest.approx(before[right].mean(), abs=0.01)


def test_plain_blur_would_fail_the_edge_criterion():
    """The edge criterion above is strict enough to reject a smoother that does not preserve edges."""
    image = _two_region_image("checkerboard")
    kernel = np.exp(-(np.arange(-7, 8) ** 2) / (2 * 3.0**2))
    blurred = correlate1d(image, kernel / kernel.sum(), axis=1, mode="nearest")
    jump = blurred[:, EDGE_COLUMN + 1].mean() - blurred[:, EDGE_COLUMN - 2].mean()
    assert jump < MIN_JUMP_FRACTION * (HIGH - LOW)


def test_four_regions_keep_both_edges():
    rows, cols = np.indices((48, 56))
    image = 0.2 + 0.25 * (rows >= 24) + 0.4 * (cols >= 28)
    image += 0.06 * np.where((rows + cols) % 2 == 0, 1.0, -1.0)
    smoothed = rtv_smooth(image)
    for row_block in (np.s_[:20], np.s_[28:]):
        for col_block in (np.s_[:24], np.s_[32:]):
            block = smoothed[row_block, col_block]
            assert block.std() < 0.1 * image[row_block, col_block].std()
    assert smoothed[25, :].mean() - smoothed[22, :].mean() > MIN_JUMP_FRACTION * 0.25
    assert smoothed[:, 29].mean() - smoothed[:, 26].mean() > MIN_JUMP_FRACTION * 0.4


@pytest.mark.parametrize("border", sorted(BORDERS))
@pytest.mark.parametrize("value", [0.0, 0.42, 1.0])
def test_constant_image_stays_constant(value, border):
    # Whatever the weights (the zero border changes them near the border), L_w annihilates constants.
    image = np.full((20, 30, 3), value)
    np.testing.assert_allclose(rtv_smooth(image, border=border), value, atol=1e-6)


SHAPES = [(33, 47), (33, 47, 1), (33, 47, 3), (40, 40, 4), (1, 1), (1, 9), (9, 1, 3)]


@pytest.mark.parametrize("shape", SHAPES)
def test_output_shape_dtype_and_range(shape):
    image = np.random.default_rng(1).uniform(0.0, 1.0, shape)
    image.flat[0], image.flat[-1] = 0.0, 1.0
    smoothed = rtv_smooth(image)
    assert smoothed.shape == shape
    assert smoothed.dtype == np.float32
    assert smoothed.min() >= 0.0 and smoothed.max() <= 1.0


def test_uint8_and_float_inputs_agree():
    image = np.random.default_rng(2).integers(0, 256, (30, 26, 3), dtype=np.uint8)
    from_uint8 = rtv_smooth(image)
    from_float64 = rtv_smooth(image / 255.0)
    from_float32 = rtv_smooth((image / 255.0).astype(np.float32))
    np.testing.assert_allclose(from_uint8, from_float64, atol=1e-6)
    np.testing.assert_allclose(from_uint8, from_float32, atol=1e-4)


def test_grayscale_matches_an_rgb_image_with_equal_channels():
    gray = np.clip(_two_region_image("noise")[:40, 20:60], 0.0, 1.0)
    rgb = np.repeat(gray[:, :, np.newaxis], 3, axis=2)
    smoothed_gray = rtv_smooth(gray)
    smoothed_rgb = rtv_smooth(rgb)
    assert smoothed_gray.shape == gray.shape
    for channel in range(3):
        np.testing.assert_allclose(smoothed_rgb[..., channel], smoothed_gray, atol=1e-6)


def test_zero_iterations_or_zero_lambda_return_the_input():
    image = np.random.default_rng(3).uniform(0.0, 1.0, (12, 10, 3))
    np.testing.assert_allclose(rtv_smooth(image, max_iter=0), image, atol=1e-7)
    np.testing.assert_allclose(rtv_smooth(image, lam=0.0), image, atol=1e-7)


def test_larger_lambda_smooths_more():
    image = _two_region_image("noise")
    left = np.s_[:, : EDGE_COLUMN - EDGE_MARGIN]
    variances = [rtv_smooth(image, lam=lam, max_iter=1)[left].var() for lam in (0.001, 0.005, 0.015)]
    assert variances[0] > variances[1] > variances[2]


@pytest.mark.parametrize(
    ("sigma", "length"), [(3.0, 15), (1.5, 9), (0.75, 5), (0.5, 3), (1.0, 5), (2.0, 11), (0.05, 1)]
)
def test_gaussian_kernel_length_is_round_five_sigma_made_odd(sigma, length):
    assert gaussian_kernel_length(sigma) == length


def test_weights_follow_the_recipe_on_flat_and_edge_pixels():
    image = np.full((6, 8, 2), 0.5)
    weight_x, weight_y = _texture_weights(image, sigma=1.5, sharpness=0.001, border="replicate")
    # Flat: both gradients are clamped to their floors, 1 / (0.001 * 0.001).
    np.testing.assert_allclose(weight_x[:, :-1], 1e6)
    np.testing.assert_allclose(weight_y[:-1, :], 1e6)
    assert np.all(weight_x[:, -1] == 0.0) and np.all(weight_y[-1, :] == 0.0)

    # The authors' zero padding darkens the blur near the border: a blurred gradient appears there and the
    # weights drop; beyond the blur radius (4 for sigma 1.5) the image looks flat again.
    flat = np.full((12, 14, 2), 0.5)
    weight_x, weight_y = _texture_weights(flat, sigma=1.5, sharpness=0.001)
    np.testing.assert_allclose(weight_x[:, 4:-5], 1e6)
    np.testing.assert_allclose(weight_y[4:-5, :], 1e6)
    assert weight_x[:, 0].max() < 0.1 * 1e6 and weight_y[0, :].max() < 0.1 * 1e6
    assert np.all(weight_x[:, -1] == 0.0) and np.all(weight_y[-1, :] == 0.0)

    image[:, 4:] = 1.0  # a vertical step between columns 3 and 4
    for border, ratio in (("replicate", 1e-3), ("zero", 1e-2)):  # zero: column 0 has lost weight too
        weight_x, weight_y = _texture_weights(image, sigma=1.5, sharpness=0.001, border=border)
        assert weight_x[:, 3].max() < ratio * weight_x[:, 0].min()


def _reference_system_matrix(weight_x: np.ndarray, weight_y: np.ndarray, lam: float) -> sp.csc_array:
    """``Id + lam L_w`` written out the textbook way, as an independent check of the fast solver."""
    height, width = weight_x.shape
    index = np.arange(height * width).reshape(height, width)
    first = np.concatenate([index[:, :-1].ravel(), index[:-1, :].ravel()])
    second = np.concatenate([index[:, 1:].ravel(), index[1:, :].ravel()])
    weights = np.concatenate([weight_x[:, :-1].ravel(), weight_y[:-1, :].ravel()])
    adjacency = sp.coo_array((weights, (first, second)), shape=(index.size, index.size))
    adjacency = (adjacency + adjacency.T).tocsc()
    laplacian = sp.diags_array(np.asarray(adjacency.sum(axis=1)).ravel()) - adjacency
    return (sp.eye_array(index.size) + lam * laplacian).tocsc()


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (7, 1), (2, 2), (5, 3), (17, 23), (40, 31)])
def test_fast_solver_matches_a_direct_solve(shape):
    rng = np.random.default_rng(4)
    # Weights spanning the dynamic range RTV produces (up to 1 / (0.001 * 0.001)).
    weight_x = 10.0 ** rng.uniform(-1.0, 6.0, shape)
    weight_y = 10.0 ** rng.uniform(-1.0, 6.0, shape)
    weight_x[:, -1] = 0.0
    weight_y[-1, :] = 0.0
    rhs = rng.uniform(0.0, 1.0, (*shape, 3))

    matrix = _reference_system_matrix(weight_x, weight_y, 0.0075)
    expected = spsolve(matrix, rhs.reshape(-1, 3)).reshape(rhs.shape)
    solution = _solve_smoothing_system(rhs, weight_x, weight_y, 0.0075)
    np.testing.assert_allclose(solution, expected, atol=1e-7)


def _conv2_same(channel: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """MATLAB ``conv2(conv2(channel, g, 'same'), g', 'same')``: rows, then columns, zero padding."""
    rows = np.stack([np.convolve(row, kernel, mode="same") for row in channel])
    return np.stack([np.convolve(column, kernel, mode="same") for column in rows.T]).T


def _reference_rtv(image: np.ndarray, border: str = "zero") -> np.ndarray:
    """The recipe spelled out with no shortcuts: tsmooth(image, 0.015, 3, 0.001, 3).

    ``border="zero"`` blurs like the authors' code (``conv2(..., 'same')``, written with ``np.convolve``);
    ``"replicate"`` repeats the border pixels.
    """
    estimate, sigma = image, 3.0
    for _ in range(3):
        length = int(np.floor(5 * sigma + 0.5)) | 1
        offsets = np.arange(length) - (length - 1) / 2
        kernel = np.exp(-(offsets**2) / (2 * sigma**2))
        kernel /= kernel.sum()
        if border == "zero":
            blurred = np.stack([_conv2_same(estimate[..., c], kernel) for c in range(image.shape[2])], axis=-1)
        else:
            blurred = correlate1d(estimate, kernel, axis=0, mode="nearest")
            blurred = correlate1d(blurred, kernel, axis=1, mode="nearest")
        dx, dy, bx, by = (np.zeros_like(image) for _ in range(4))
        dx[:, :-1], dy[:-1] = np.diff(estimate, axis=1), np.diff(estimate, axis=0)
        bx[:, :-1], by[:-1] = np.diff(blurred, axis=1), np.diff(blurred, axis=0)
        sharp = 1 / np.maximum(np.sqrt(dx**2 + dy**2).mean(axis=2), 0.001)
        weight_x = sharp / np.maximum(np.abs(bx).mean(axis=2), 0.001)
        weight_y = sharp / np.maximum(np.abs(by).mean(axis=2), 0.001)
        matrix = _reference_system_matrix(weight_x, weight_y, 0.015 / 2)
        estimate = spsolve(matrix, image.reshape(-1, image.shape[2])).reshape(image.shape)
        sigma = max(sigma / 2, 0.5)
    return estimate


@pytest.mark.parametrize("border", ["zero", "replicate"])
def test_matches_the_recipe_spelled_out(border):
    rng = np.random.default_rng(5)
    image = _colour(_two_region_image("noise"))[10:34, 18:48]
    image = np.clip(image + rng.normal(0.0, 0.05, image.shape), 0.0, 1.0)
    np.testing.assert_allclose(rtv_smooth(image, border=border), _reference_rtv(image, border), atol=1e-6)


# ------------------------------------------------------------------------------------------------- border


def test_the_default_border_is_the_authors_zero_padding():
    assert DEFAULT_BORDER == "zero" and BORDERS == {"zero": "constant", "replicate": "nearest"}
    assert inspect.signature(rtv_smooth).parameters["border"].default == "zero"
    image = np.clip(_colour(_two_region_image("noise"))[:24, 20:44], 0.0, 1.0)
    np.testing.assert_array_equal(rtv_smooth(image), rtv_smooth(image, border="zero"))
    assert not np.array_equal(rtv_smooth(image), rtv_smooth(image, border="replicate"))
    # structure_image takes rtv_smooth's defaults
    photo = Image.fromarray(np.round(image * 255).astype(np.uint8))
    expected = np.round(rtv_smooth(np.asarray(photo)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(structure_image(photo)), expected)
    assert not np.array_equal(np.asarray(structure_image(photo, border="replicate")), expected)


def test_zero_border_blur_of_a_constant_image_by_hand():
    """sigma 0.5: kernel [e^-2, 1, e^-2] / (1 + 2 e^-2). A pixel on the border loses the tap that falls outside."""
    value, tail = 0.6, math.exp(-2.0)
    np.testing.assert_allclose(_gaussian_kernel(0.5), np.array([tail, 1.0, tail]) / (1 + 2 * tail))
    kept = (1 + tail) / (1 + 2 * tail)  # the share of the kernel inside the image at a border pixel
    image = np.full((5, 6, 1), value)

    zero = _gaussian_blur(image, 0.5, "zero")[..., 0]
    expected = np.full((5, 6), value)
    expected[[0, -1], :] *= kept
    expected[:, [0, -1]] *= kept  # the corners lose a tap in both directions: value * kept**2
    np.testing.assert_allclose(zero, expected, rtol=1e-15)
    assert zero[0, 0] == pytest.approx(value * kept**2, rel=1e-15)
    np.testing.assert_allclose(_gaussian_blur(image, 0.5, "replicate"), value, rtol=1e-15)


@pytest.mark.parametrize("sigma", [3.0, 1.5, 0.75])
def test_zero_border_blur_of_a_constant_image_sums_the_taps_inside(sigma):
    height, width = 20, 31
    kernel = _gaussian_kernel(sigma)
    radius = (len(kernel) - 1) // 2

    def inside(size: int) -> np.ndarray:
        """Per position, the sum of the kernel taps that land inside [0, size)."""
        return np.array([sum(kernel[k] for k in range(len(kernel)) if 0 <= p + k - radius < size) for p in range(size)])

    blurred = _gaussian_blur(np.full((height, width, 2), 0.5), sigma, "zero")
    np.testing.assert_allclose(blurred[..., 1], 0.5 * np.outer(inside(height), inside(width)), rtol=1e-12)
    # Farther than the radius from the border nothing is lost.
    np.testing.assert_allclose(blurred[radius:-radius, radius:-radius], 0.5, rtol=1e-14)
    assert blurred[0, 0, 0] < 0.5 * 0.6


@pytest.mark.parametrize("sigma", [3.0, 1.5, 0.75])
def test_borders_give_the_same_weights_beyond_the_blur_radius(sigma):
    """The border only changes the blur within its radius, so the RTV weights are bitwise equal farther in."""
    image = np.clip(_colour(_two_region_image("noise"))[:40, 8:56], 0.0, 1.0)
    radius = (gaussian_kernel_length(sigma) - 1) // 2
    zero = _texture_weights(image, sigma, 0.001, "zero")
    replicate = _texture_weights(image, sigma, 0.001, "replicate")
    # The forward difference at (i, j) also reads (i, j + 1) / (i + 1, j): one more row or column at the end.
    interior = np.s_[radius : -radius - 1, radius : -radius - 1]
    for weights_zero, weights_replicate in zip(zero, replicate, strict=True):
        np.testing.assert_array_equal(weights_zero[interior], weights_replicate[interior])
        assert not np.array_equal(weights_zero, weights_replicate)
    # The zero-padded blur darkens towards the border: a spurious blurred gradient, hence smaller weights there.
    assert zero[0][:, 0].mean() < 0.5 * replicate[0][:, 0].mean()


def test_borders_differ_mostly_along_the_image_border():
    """The solve couples all pixels, so the results differ everywhere, but by far the most in the outer rows."""
    image = np.random.default_rng(6).uniform(0.0, 1.0, (64, 64, 3))
    difference = np.abs(rtv_smooth(image, border="zero") - rtv_smooth(image, border="replicate")).max(axis=2)
    rows, cols = np.indices(difference.shape)
    distance = np.minimum.reduce([rows, cols, 63 - rows, 63 - cols])
    outer, inner = difference[distance < 3], difference[distance >= 16]
    assert outer.max() > 20 / 255 and outer.mean() > 2 / 255
    assert inner.max() < 1 / 255 and inner.mean() < outer.mean() / 20


def test_unknown_border_raises_value_error():
    with pytest.raises(ValueError, match="border must be one of"):
        rtv_smooth(np.zeros((4, 4)), border="reflect")


def test_structure_image_is_rgb_uint8_of_the_same_size():
    pixels = _colour(_two_region_image("checkerboard"))[:, :50]
    image = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
    structure = structure_image(image)
    assert structure.mode == "RGB" and structure.size == image.size
    expected = np.round(rtv_smooth(np.asarray(image)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(structure), expected)
    assert structure_image(image.convert("L")).mode == "RGB"


@pytest.mark.parametrize(
    "image",
    [
        np.zeros(5),
        np.zeros((2, 3, 3, 1)),
        np.zeros((0, 4)),
        np.zeros((4, 4, 0)),
        np.array([[0.5, np.nan], [0.1, 0.2]]),
        np.array([[0.5, np.inf], [0.1, 0.2]]),
        np.full((4, 4), 200.0),
        np.full((4, 4), -0.5),
        np.zeros((4, 4), dtype=np.int16),
        np.zeros((4, 4), dtype=bool),
    ],
    ids=["1d", "4d", "empty", "no-channels", "nan", "inf", "float-0-255", "negative", "int16", "bool"],
)
def test_bad_images_raise_value_error(image):
    with pytest.raises(ValueError):
        rtv_smooth(image)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lam": -0.1},
        {"lam": float("nan")},
        {"sigma": 0.0},
        {"sharpness": -1.0},
        {"max_iter": -1},
        {"max_iter": 1.5},
    ],
)
def test_bad_parameters_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        rtv_smooth(np.zeros((4, 4)), **kwargs)
