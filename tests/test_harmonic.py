"""The harmonic (membrane) fill: `harmonic_fill` solves the discrete Laplace equation exactly (against a direct
solve, harmonic test functions, the alpha channel through `composite` and the pipeline), and `push_pull_fill` is
the approximation the default model reads."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import skimage.data
import torch
from PIL import Image

from med_hf import MEDConfig, MEDModel
from med_hf.harmonic import harmonic_fill, push_pull_fill
from med_hf.image_processing_med import composite
from med_hf.pipeline_med import MEDInpaintPipeline

HEIGHT, WIDTH = 72, 96
# One 8-bit level on the 0..255 scale of the test functions.
LEVEL = 1.0


def _coordinates(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(HEIGHT, dtype=dtype).view(HEIGHT, 1).expand(HEIGHT, WIDTH)
    columns = torch.arange(WIDTH, dtype=dtype).view(1, WIDTH).expand(HEIGHT, WIDTH)
    return rows, columns


def _harmonic_functions(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(1, 4, H, W) on 0..255: an x ramp, a y ramp, a diagonal ramp and x * y, each exactly discrete-harmonic."""
    rows, columns = _coordinates(dtype)
    functions = [columns, rows, 2 * rows - columns, (rows - HEIGHT / 3) * (columns - WIDTH / 2)]
    scaled = [255 * (f - f.min()) / (f.max() - f.min()) for f in functions]
    return torch.stack(scaled)[None]


def _mask(*boxes: tuple[int, int, int, int]) -> torch.Tensor:
    """(1, 1, H, W) float, 1 on each (top, bottom, left, right) box."""
    hole = torch.zeros(1, 1, HEIGHT, WIDTH)
    for top, bottom, left, right in boxes:
        hole[..., top:bottom, left:right] = 1
    return hole


def _ellipse(height: int, width: int) -> torch.Tensor:
    rows, columns = _coordinates(torch.float32)
    inside = ((rows - HEIGHT / 2) / (height / 2)) ** 2 + ((columns - WIDTH / 2) / (width / 2)) ** 2 < 1
    return inside[None, None].float()


def _strokes() -> torch.Tensor:
    """Thin diagonal strokes and a few single pixels: a hole with much boundary and a far-reaching inside."""
    rows, columns = _coordinates(torch.float32)
    strokes = ((rows + columns) % 23 < 3) & (rows > 4) & (rows < HEIGHT - 5) & (columns > 4) & (columns < WIDTH - 5)
    strokes[10, 10] = strokes[40, 77] = True
    return strokes[None, None].float()


# Holes inside the image, away from its border.
INNER_HOLES = {
    "80x70-like box": _mask((4, 66, 10, 90)),
    "small box": _mask((30, 36, 40, 52)),
    "single pixel": _mask((20, 21, 20, 21)),
    "tall thin": _mask((3, 69, 47, 50)),
    "ellipse": _ellipse(50, 70),
    "two boxes": _mask((5, 25, 5, 30), (40, 65, 60, 90)),
    "ring": _mask((10, 60, 10, 80)) - _mask((25, 45, 30, 60)),
    "strokes": _strokes(),
}


def _direct_solve(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The same discrete system solved directly: `image` (C, H, W) float64, `hole` (H, W) bool. Each hole pixel is
    the mean of its neighbours inside the image (the natural boundary condition at the border)."""
    height, width = hole.shape
    index = -np.ones((height, width), dtype=np.int64)
    index[hole] = np.arange(hole.sum())
    rows, columns, values = [], [], []
    rhs = np.zeros((hole.sum(), image.shape[0]))
    for k, (y, x) in enumerate(zip(*np.nonzero(hole), strict=True)):
        neighbours = [(y + dy, x + dx) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
        neighbours = [(yy, xx) for yy, xx in neighbours if 0 <= yy < height and 0 <= xx < width]
        rows.append(k), columns.append(k), values.append(len(neighbours))
        for yy, xx in neighbours:
            if hole[yy, xx]:
                rows.append(k), columns.append(index[yy, xx]), values.append(-1.0)
            else:
                rhs[k] += image[:, yy, xx]
    matrix = scipy.sparse.csc_matrix((values, (rows, columns)), shape=(len(rhs), len(rhs)))
    solved = image.copy()
    solved[:, hole] = scipy.sparse.linalg.spsolve(matrix, rhs).reshape(len(rhs), -1).T
    return solved


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(INNER_HOLES))
def test_harmonic_functions_are_reproduced_within_an_8_bit_level(name, dtype):
    image, hole = _harmonic_functions(dtype), INNER_HOLES[name].to(dtype)
    filled = harmonic_fill(image, hole)
    assert filled.dtype == dtype
    known = hole.expand_as(image) == 0
    assert torch.equal(filled[known], image[known])
    assert (filled - image).abs().max() <= LEVEL


@pytest.mark.parametrize(
    ("name", "hole", "functions"),
    [
        # Each test function has zero normal derivative on the border the hole touches: it is the solution there.
        ("top border", _mask((0, 40, 20, 70)), [0]),
        ("bottom-left corner", _mask((50, HEIGHT, 0, 30)), []),
        ("left border", _mask((10, 60, 0, 50)), [1]),
        ("full-height band", _mask((0, HEIGHT, 30, 40)), [0]),
        ("full-width band", _mask((20, 30, 0, WIDTH)), [1]),
    ],
)
def test_holes_touching_the_border_take_the_natural_boundary_condition(name, hole, functions):
    image = _harmonic_functions()
    filled = harmonic_fill(image, hole)
    if functions:
        assert (filled[:, functions] - image[:, functions]).abs().max() <= LEVEL
    # Whatever the function, the fill is the direct solution of the system with that border condition.
    expected = torch.from_numpy(_direct_solve(image[0].numpy(), hole[0, 0].numpy() > 0))
    assert (filled[0] - expected).abs().max() <= LEVEL


def test_matches_the_direct_solution_on_a_photo_with_an_irregular_hole():
    photo = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((WIDTH, HEIGHT)), dtype=np.float64)
    image = torch.from_numpy(photo).permute(2, 0, 1)[None]
    rng = np.random.default_rng(0)
    hole = (_strokes() + _ellipse(30, 50) + torch.from_numpy(rng.random((HEIGHT, WIDTH)) < 0.2)).clamp(max=1)
    hole[..., :8, :20] = 1  # and a corner of the image
    expected = torch.from_numpy(_direct_solve(photo.transpose(2, 0, 1), hole[0, 0].numpy() > 0))
    for dtype in (torch.float32, torch.float64):
        filled = harmonic_fill(image.to(dtype), hole.to(dtype))
        assert (filled[0].double() - expected).abs().max() <= 0.5 * LEVEL


def test_push_pull_is_the_old_approximation():
    # What the shipped default model reads: far from the membrane, hence the exact fill for everything else.
    image, hole = _harmonic_functions(torch.float32), INNER_HOLES["80x70-like box"]
    assert (push_pull_fill(image, hole) - image).abs().max() > 5
    assert (harmonic_fill(image, hole) - image).abs().max() <= LEVEL


def test_no_seam_at_the_hole_edge():
    # Across the hole's edge a ramp keeps its slope: no step between the known pixels and the fill.
    image, hole = _harmonic_functions()[:, :1], _mask((10, 60, 20, 70))
    steps = harmonic_fill(image, hole).diff(dim=-1)[0, 0, 10:60]
    slope = 255 / (WIDTH - 1)
    assert (steps - slope).abs().max() < 0.25 * slope


def test_nan_and_infinity_under_the_hole_are_ignored():
    image, hole = _harmonic_functions(torch.float32), INNER_HOLES["ellipse"]
    poisoned = image.clone()
    poisoned[hole.expand_as(image) > 0] = float("nan")
    poisoned[..., HEIGHT // 2, WIDTH // 2] = float("inf")
    filled = harmonic_fill(poisoned, hole)
    assert torch.isfinite(filled).all()
    assert torch.equal(filled, harmonic_fill(torch.where(hole > 0, 0, image), hole))


def test_each_sample_is_filled_from_its_own_known_pixels():
    functions = _harmonic_functions(torch.float32)
    noise = torch.rand(1, 4, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0)) * 255
    images = torch.cat([functions, noise, torch.full_like(noise, 77.0)])
    holes = torch.cat([INNER_HOLES["ring"], INNER_HOLES["strokes"], _mask((0, 40, 0, 50))])
    filled = harmonic_fill(images, holes)
    for sample in range(3):
        alone = harmonic_fill(images[sample : sample + 1], holes[sample : sample + 1])
        assert (filled[sample] - alone[0]).abs().max() <= 0.5 * LEVEL
    # A mean of neighbours never leaves the range of the known values; a constant stays that constant.
    assert noise.min() <= filled[1].min() and filled[1].max() <= noise.max()
    torch.testing.assert_close(filled[2], torch.full_like(filled[2], 77.0))


def test_empty_hole_is_the_identity_and_an_all_hole_sample_zeros():
    image = _harmonic_functions(torch.float32)
    assert torch.equal(harmonic_fill(image, torch.zeros_like(image[:, :1])), image)
    images = torch.cat([image, image])
    holes = torch.cat([torch.ones_like(image[:, :1]), INNER_HOLES["small box"]])
    filled = harmonic_fill(images, holes)
    assert not filled[0].any()
    assert (filled[1] - image[0]).abs().max() <= LEVEL
    # A single known pixel: its value everywhere.
    single = torch.ones_like(image[:, :1])
    single[..., 5, 7] = 0
    torch.testing.assert_close(harmonic_fill(torch.full_like(image, 0.25), single), torch.full_like(image, 0.25))


def test_half_precision_is_computed_in_float32_and_returned_in_its_dtype():
    image, hole = _harmonic_functions(torch.float32) / 255, INNER_HOLES["ellipse"]
    filled = harmonic_fill(image.half(), hole.half())
    assert filled.dtype == torch.float16
    assert (filled.float() - image).abs().max() <= 2e-3


# --- the alpha channel ----------------------------------------------------------------------------------------


def _rgba_photo(alpha: np.ndarray) -> np.ndarray:
    """The 512x512 astronaut as RGBA uint8 with `alpha` (512, 512)."""
    return np.dstack([skimage.data.astronaut(), alpha.astype(np.uint8)])


SIDE = 512
RAMP = np.tile(np.linspace(40, 255, SIDE), (SIDE, 1))
# (top, left, height, width): the 80x70 and 30x90 holes, and one on the top border.
ALPHA_HOLES = [(200, 150, 80, 70), (60, 300, 30, 90), (0, 380, 40, 60)]


def _box_mask(top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), dtype=bool)
    mask[top : top + height, left : left + width] = True
    return mask


@pytest.mark.parametrize("box", ALPHA_HOLES)
def test_composite_continues_an_alpha_ramp_across_the_hole(box):
    original, mask = _rgba_photo(np.rint(RAMP)), _box_mask(*box)
    prediction = np.random.default_rng(0).random((SIDE, SIDE, 3))
    alpha = composite(original, prediction, mask)[..., 3].astype(int)
    np.testing.assert_array_equal(alpha[~mask], original[..., 3][~mask])
    # Within rounding of the ramp (the push-pull fill was off by up to 28 levels, with a seam at the left edge).
    assert np.abs(alpha[mask] - RAMP[mask]).max() <= 1


@pytest.mark.parametrize("blur", [0, 4])
@pytest.mark.parametrize("value", [0, 128, 255])
def test_composite_keeps_a_constant_alpha_in_a_rectangular_hole(value, blur):
    original, mask = _rgba_photo(np.full((SIDE, SIDE), value)), _box_mask(*ALPHA_HOLES[0])
    prediction = np.random.default_rng(0).random((SIDE, SIDE, 3))
    np.testing.assert_array_equal(composite(original, prediction, mask, blur=blur)[..., 3], value)


def test_composite_makes_the_alpha_opaque_when_nothing_around_the_hole_is_known():
    original = _rgba_photo(np.full((SIDE, SIDE), 128))
    everything = np.ones((SIDE, SIDE), dtype=bool)
    np.testing.assert_array_equal(composite(original, np.zeros((SIDE, SIDE, 3)), everything)[..., 3], 255)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> MEDInpaintPipeline:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny") / "model"
    MEDModel(MEDConfig.from_preset("tiny", image_size=256)).save_pretrained(folder)
    pipeline = MEDInpaintPipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.mark.parametrize("box", ALPHA_HOLES[:2])
def test_pipeline_continues_an_alpha_ramp_and_keeps_a_constant_alpha(pipe, box):
    mask = _box_mask(*box)
    mask_image = Image.fromarray(mask.astype(np.uint8) * 255)
    ramp = _rgba_photo(np.rint(RAMP))
    # The alpha does not depend on the texture stage, which is left out for speed.
    alpha = np.asarray(pipe(image=Image.fromarray(ramp), mask_image=mask_image, texture="none").images[0])[..., 3]
    alpha = alpha.astype(int)
    np.testing.assert_array_equal(alpha[~mask], ramp[..., 3][~mask])
    assert np.abs(alpha[mask] - RAMP[mask]).max() <= 4
    constant = Image.fromarray(_rgba_photo(np.full((SIDE, SIDE), 128)))
    result = pipe(image=constant, mask_image=mask_image, texture="none").images[0]
    np.testing.assert_array_equal(np.asarray(result)[..., 3], 128)
