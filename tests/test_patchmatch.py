"""Tests of the texture stage (med_hf.patchmatch): structure-guided exemplar synthesis.

Everything runs on small synthetic images; nothing reads the shared data folder or the network.
"""

from __future__ import annotations

import math

import pytest
import torch

from med_hf import patchmatch
from med_hf.patchmatch import exemplar_fill, exemplar_fill_with_field

RED = torch.tensor([0.9, 0.1, 0.1])
BLUE = torch.tensor([0.1, 0.1, 0.9])
SKY_MEAN = torch.tensor([0.45, 0.55, 0.85])[:, None, None]
GRASS_MEAN = torch.tensor([0.25, 0.58, 0.15])[:, None, None]


def textured_image(height: int = 48, width: int = 48, seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) smooth colours plus fine random texture, in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.linspace(0, 1, height)[:, None]
    columns = torch.linspace(0, 1, width)[None, :]
    zero = torch.zeros(height, width)
    base = torch.stack(
        [0.3 + 0.4 * rows * columns + zero, 0.5 - 0.3 * rows + 0.1 * columns, 0.2 + 0.5 * columns + zero]
    )
    texture = 0.15 * torch.rand(3, height, width, generator=generator)
    return (base + texture).clamp(0, 1)[None]


def box_hole(height: int, width: int, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    hole = torch.zeros(1, 1, height, width, dtype=torch.bool)
    hole[..., top:bottom, left:right] = True
    return hole


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_sources_valid(sources: torch.Tensor, hole: torch.Tensor, patch_size: int) -> None:
    """Every listed source patch lies inside the image and on known pixels; every hole pixel has a source."""
    radius = patch_size // 2
    height, width = hole.shape[-2:]
    for b in range(hole.shape[0]):
        listed = sources[b, 0] >= 0
        assert bool(listed[hole[b, 0]].all()), "a hole pixel has no source patch"
        rows, columns = sources[b, 0][listed], sources[b, 1][listed]
        assert bool(((rows >= radius) & (rows < height - radius)).all()), "a source patch sticks out of the image"
        assert bool(((columns >= radius) & (columns < width - radius)).all()), "a source patch sticks out"
        known = ~hole[b, 0]
        for d_row in range(-radius, radius + 1):
            for d_column in range(-radius, radius + 1):
                assert bool(known[rows + d_row, columns + d_column].all()), "a source patch covers a hole pixel"


# ------------------------------------------------------------------------------------------- contract


def test_known_pixels_are_bit_identical_and_values_in_range():
    image = textured_image()
    hole = box_hole(48, 48, 14, 34, 10, 30)
    guide = torch.rand(image.shape, generator=seeded(1))
    result = exemplar_fill(image, hole, guide, generator=seeded())
    assert result.shape == image.shape and result.dtype == image.dtype
    assert torch.equal(result[~hole.expand_as(image)], image[~hole.expand_as(image)])
    assert result.min() >= 0 and result.max() <= 1
    assert not torch.equal(result, image)


@pytest.mark.parametrize("guided", [True, False])
def test_same_seed_same_pixels_other_seed_other_pixels(guided):
    image = textured_image()
    hole = box_hole(48, 48, 12, 36, 12, 36)
    guide = torch.rand(image.shape, generator=seeded(1)) if guided else None
    first = exemplar_fill(image, hole, guide, generator=seeded(5))
    again = exemplar_fill(image, hole, guide, generator=seeded(5))
    other = exemplar_fill(image, hole, guide, generator=seeded(6))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # Without a generator the fill is reproducible too (a fixed seed).
    assert torch.equal(exemplar_fill(image, hole, guide), exemplar_fill(image, hole, guide))


@pytest.mark.parametrize("guided", [True, False])
def test_hidden_pixels_never_matter(guided):
    image = textured_image(40, 52)
    hole = box_hole(40, 52, 8, 30, 20, 44)
    hole[..., 0:5, 0:6] = True  # a second hole at the corner
    guide = torch.rand(image.shape, generator=seeded(2)) if guided else None
    hidden = hole.expand_as(image)
    variants = {
        "original": image,
        "black": torch.where(hidden, 0.0, image),
        "noise": torch.where(hidden, torch.rand(image.shape, generator=seeded(3)), image),
        "nan": torch.where(hidden, torch.nan, image),
    }
    results = {name: exemplar_fill_with_field(x, hole, guide, generator=seeded()) for name, x in variants.items()}
    reference_fill, reference_sources = results["original"]
    for name, (fill, sources) in results.items():
        assert torch.equal(fill[hidden], reference_fill[hidden]), name
        assert torch.equal(sources, reference_sources), name
        assert not torch.isnan(fill[hidden]).any(), name


def test_fill_only_copies_known_colours():
    """Known area: red and blue texture only; the hole holds a unique green that must never come back."""
    generator = seeded(4)
    height, width = 48, 64
    stripes = (torch.arange(width) // 3 % 2).bool()[None, :].expand(height, width)
    image = torch.where(stripes, RED[:, None, None], BLUE[:, None, None])
    image = image * (0.8 + 0.2 * torch.rand(1, height, width, generator=generator))  # red/blue shades, no green
    image[1] = 0
    image = image[None]
    hole = box_hole(height, width, 10, 40, 16, 50)
    image = torch.where(hole.expand_as(image), torch.tensor([0.0, 1.0, 0.0])[:, None, None], image)
    # A guide without green (its low frequencies do reach the fill: that is what a guide is for).
    purple_guide = torch.zeros_like(image)
    purple_guide[:, 0], purple_guide[:, 2] = 0.6, 0.4
    for guide in (None, purple_guide):
        result, sources = exemplar_fill_with_field(image, hole, guide, generator=seeded())
        assert result[:, 1].abs().max() < 1e-6, "a hole colour was copied"
        assert_sources_valid(sources, hole, 7)


@pytest.mark.parametrize("patch_size", [5, 7])
def test_sources_lie_inside_the_image_on_known_pixels(patch_size):
    image = textured_image(45, 61)
    hole = box_hole(45, 61, 0, 20, 0, 25)  # touches two borders
    hole |= box_hole(45, 61, 30, 45, 40, 61)  # touches the two others
    hole[..., 20:24, 30:33] = True
    guide = torch.rand(image.shape, generator=seeded(7))
    result, sources = exemplar_fill_with_field(image, hole, guide, patch_size=patch_size, generator=seeded())
    assert_sources_valid(sources, hole, patch_size)
    # Pixels whose patch does not overlap the hole have no entry.
    dilated = torch.nn.functional.max_pool2d(hole.float(), patch_size, 1, patch_size // 2) > 0
    assert torch.equal(sources[:, 0] >= 0, dilated[:, 0])
    assert torch.equal(result[~hole.expand_as(image)], image[~hole.expand_as(image)])


# ------------------------------------------------------------------------------------------- guidance


def two_colour_scene(size: int = 96) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left half red texture, right half blue texture, a square hole over the middle two thirds of both halves,
    and a guide that says: top half red, bottom half blue."""
    texture = 0.75 + 0.25 * torch.rand(1, size, size, generator=seeded(8))
    left = (torch.arange(size) < size // 2)[None, :].expand(size, size)
    image = torch.where(left, RED[:, None, None], BLUE[:, None, None]) * texture
    margin = size // 6
    hole = box_hole(size, size, margin, size - margin, margin, size - margin)
    guide = torch.empty_like(image)
    guide[:, : size // 2] = RED[:, None, None]
    guide[:, size // 2 :] = BLUE[:, None, None]
    return image[None], hole, guide[None]


def redness(fill: torch.Tensor, rows: slice, columns: slice) -> float:
    """Fraction of the pixels of a region that are more red than blue."""
    region = fill[0, :, rows, columns]
    return float((region[0] > region[2]).float().mean())


def test_guide_steers_the_fill():
    """Inside the hole (8 px from its edge, where the known pixels no longer decide) the fill is red where the guide
    says red and blue where it says blue, across the known left/right split; unguided, it follows the split."""
    image, hole, guide = two_colour_scene()
    size = image.shape[-1]
    inner = size // 6 + 8
    top, bottom = slice(inner, size // 2 - 4), slice(size // 2 + 4, size - inner)
    left, right = top, bottom
    guided = exemplar_fill(image, hole, guide, generator=seeded())
    assert redness(guided, top, right) > 0.9  # red, though the known pixels to its right are blue
    assert redness(guided, bottom, left) < 0.1  # blue, though the known pixels to its left are red
    assert redness(guided, top, left) > 0.9 and redness(guided, bottom, right) < 0.1
    unguided = exemplar_fill(image, hole, None, generator=seeded())
    assert redness(unguided, top, right) < 0.1 and redness(unguided, bottom, left) > 0.9


def sky_and_grass(size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Object removal in miniature: smooth blue sky above a horizon, fine green grass below, and the hole of an
    object standing on the horizon (an upright ellipse, dilated like a brush stroke, reaching 14 px either side)."""
    horizon = size // 2
    rows, columns = torch.arange(size)[:, None].float(), torch.arange(size)[None, :].float()
    flat = torch.zeros(size, size)
    sky = torch.stack([0.35 + 0.002 * rows + flat, 0.55 + flat, 0.9 - 0.001 * rows + flat])
    blades = torch.rand(1, size, size, generator=seeded(11))
    grass = torch.stack([0.15 + 0.2 * blades[0], 0.35 + 0.45 * blades[0], 0.1 + 0.1 * blades[0]])
    image = torch.where(rows < horizon, sky, grass)
    hole = ((rows - horizon) / 16) ** 2 + ((columns - size / 2) / 11) ** 2 <= 1
    return image[None].clamp(0, 1), hole[None, None]


@pytest.mark.parametrize("guide_kind", ["none", "sharp", "blur"])
def test_object_on_the_horizon_is_filled_with_each_side_s_texture(guide_kind):
    """Above the horizon the hole becomes smooth sky, below it grass with the grass's grain; never a colour of the
    other side. Holds unguided, with a guide that knows the split, and with a guide that is one blurred mean colour
    over the whole hole (what a network predicts where it does not know): the known pixels around decide."""
    image, hole = sky_and_grass()
    size, horizon = image.shape[-1], image.shape[-1] // 2
    guide = None
    if guide_kind == "sharp":
        guide = torch.where(hole, torch.where(torch.arange(size)[:, None] < horizon, SKY_MEAN, GRASS_MEAN), image)
    elif guide_kind == "blur":
        guide = torch.where(hole, (SKY_MEAN + GRASS_MEAN) / 2, image)
    fill, sources = exemplar_fill_with_field(image, hole, guide, generator=seeded())
    assert_sources_valid(sources, hole, 7)
    assert torch.equal(fill, exemplar_fill(image, hole, guide, generator=seeded()))
    columns = slice(size // 2 - 6, size // 2 + 6)
    sky_part, grass_part = (
        fill[0, :, horizon - 14 : horizon - 4, columns],
        fill[0, :, horizon + 4 : horizon + 14, columns],
    )

    # Each pixel is nearer its own side's colour than the other side's (a wrong guide may tint, never swap).
    def nearer_sky(part: torch.Tensor) -> torch.Tensor:
        return (part - SKY_MEAN).norm(dim=0) < (part - GRASS_MEAN).norm(dim=0)

    assert bool(nearer_sky(sky_part).all()), "a grass pixel above the horizon"
    assert not bool(nearer_sky(grass_part).any()), "a sky pixel below the horizon"
    known_grain = image[0, 1, horizon + 4 :, : size // 4].std()
    assert float(sky_part[1].std()) < 0.02
    assert 0.75 * known_grain < float(grass_part[1].std()) < 1.25 * known_grain, "the grass lost (or gained) its grain"


def test_guidance_weight_zero_ignores_the_guide_structure():
    image, hole, guide = two_colour_scene(48)
    weighted = exemplar_fill(image, hole, guide, guidance_weight=1.0, generator=seeded())
    unweighted = exemplar_fill(image, hole, guide, guidance_weight=0.0, generator=seeded())
    assert not torch.equal(weighted, unweighted)


def test_fill_takes_the_guides_low_frequencies():
    """A guide brighter than anything known: the copied texture cannot be that bright, the fill's local means move
    towards the guide's (the structure correction), as far as the guidance weight says."""
    image = textured_image(64, 64)
    hole = box_hole(64, 64, 16, 48, 16, 48)
    brighter = (image + 0.3).clamp(max=1)
    inner = (slice(None), slice(None), slice(24, 40), slice(24, 40))

    def inner_mean(guidance_weight: float) -> float:
        fill = exemplar_fill(image, hole, brighter, guidance_weight=guidance_weight, generator=seeded())
        return float(fill[inner].mean())

    known_mean = float(image[inner].mean())
    assert abs(inner_mean(0.0) - known_mean) < 0.05
    half, full = inner_mean(0.5), inner_mean(1.0)
    assert known_mean + 0.05 < half < full - 0.05
    assert full > known_mean + 0.12


def test_structure_correction_has_no_seam():
    """The correction towards the guide's low frequencies vanishes at the hole's edge (no outline of the hole) and
    grows inside it."""
    image = textured_image(64, 64)[0]
    known = ~box_hole(64, 64, 16, 48, 16, 48)[0, 0]
    guide = torch.where(known, image, (image + 0.3).clamp(max=1))
    level = patchmatch._Level(torch.where(known, image, 0), known, guide, 7)
    # A fill that already continues the known pixels: only the correction differs from it.
    correction = patchmatch._correct_structure(level, image, 1.0) - image
    assert torch.equal(correction[:, known], torch.zeros_like(correction[:, known]))
    centre = float(correction[:, 28:36, 28:36].mean())
    assert centre > 0.1
    # Walking in from each side through the middle of the hole, the correction starts as a ramp from 0: the step
    # from the last known pixel to the first hole pixel is no larger than the next one (no jump, no outline).
    inward = {
        "left": correction[:, 32, 15:20],
        "right": correction[:, 32, 44:49].flip(-1),
        "top": correction[:, 15:20, 32],
        "bottom": correction[:, 44:49, 32].flip(-1),
    }
    for side, profile in inward.items():
        steps = profile.mean(0).diff()
        assert float(profile[:, 0].abs().max()) == 0.0, side
        assert 0 < float(steps[0]) <= 1.1 * float(steps[1]), (side, steps)
        assert float(profile[:, 1].abs().max()) < 0.2 * centre, side


def random_level_and_field(seed: int) -> tuple[patchmatch._Level, patchmatch._Field, torch.Tensor]:
    """A 20x24 level with a hole, every target matched to a random valid source, and random vote costs."""
    generator = seeded(seed)
    image = textured_image(20, 24, seed)[0]
    known = ~box_hole(20, 24, 6, 13, 8, 17)[0, 0]
    level = patchmatch._Level(torch.where(known, image, 0), known, None, 5)
    sources = level.random_sources(len(level.targets), generator)
    costs = 3 * torch.rand(len(level.targets), generator=generator)
    return level, patchmatch._Field(level.targets, sources, costs), costs


def brute_force_votes(level: patchmatch._Level, nnf: patchmatch._Field, costs: torch.Tensor, temperature: float):
    """Every voter, by a plain loop over the patches covering it: (cheapest patch's value, weighted mean)."""
    radius, width = level.patch_size // 2, level.width
    pixels = level.image.flatten(1).T
    index = {int(target): i for i, target in enumerate(nnf.targets)}
    cheapest, weighted = [], []
    for voter in nnf.targets.tolist():
        row, column = divmod(voter, width)
        covering = []
        for d_row in range(-radius, radius + 1):
            for d_column in range(-radius, radius + 1):
                centre = (row - d_row) * width + (column - d_column)
                inside = 0 <= row - d_row < level.height and 0 <= column - d_column < width
                if inside and centre in index:
                    i = index[centre]
                    covering.append((float(costs[i]), pixels[int(nnf.sources[i]) + d_row * width + d_column]))
        cheapest.append(min(covering, key=lambda pair: pair[0])[1])
        weights = torch.tensor([math.exp(-cost / temperature) for cost, _ in covering], dtype=torch.float64)
        values = torch.stack([value for _, value in covering]).double()
        weighted.append(((weights[:, None] * values).sum(0) / weights.sum()).float())
    return torch.stack(cheapest), torch.stack(weighted)


@pytest.mark.parametrize("seed", [0, 1])
def test_votes_match_a_plain_loop_over_covering_patches(seed):
    level, nnf, costs = random_level_and_field(seed)
    pixels = level.image.flatten(1).T.contiguous()
    cheapest, weighted = brute_force_votes(level, nnf, costs, 0.3)
    torch.testing.assert_close(patchmatch._cheapest_votes(level, nnf, costs, pixels), cheapest, rtol=0, atol=0)
    torch.testing.assert_close(patchmatch._weighted_votes(level, nnf, costs, pixels, 0.3), weighted)
    # Cold: some voters' covering patches all cost hundreds of temperatures more than the level's cheapest, and
    # still keep their relative weights (the float64 weights).
    _, cold_weighted = brute_force_votes(level, nnf, costs, 0.01)
    torch.testing.assert_close(patchmatch._weighted_votes(level, nnf, costs, pixels, 0.01), cold_weighted)


# ------------------------------------------------------------------------------------------- edge cases


def test_empty_hole_returns_the_input():
    image = textured_image()
    hole = torch.zeros(1, 1, 48, 48, dtype=torch.bool)
    result, sources = exemplar_fill_with_field(image, hole, torch.rand(image.shape))
    assert torch.equal(result, image)
    assert bool((sources == -1).all())


def test_all_hole_falls_back_to_the_guide_or_grey():
    image = textured_image(20, 24)
    hole = torch.ones(1, 1, 20, 24, dtype=torch.bool)
    guide = torch.rand(image.shape, generator=seeded(9))
    assert torch.equal(exemplar_fill(image, hole, guide), guide)
    assert torch.equal(exemplar_fill(image, hole, None), torch.full_like(image, 0.5))


def test_too_little_known_area_falls_back_to_a_smooth_fill():
    """A 1-pixel known frame cannot hold a single 7x7 patch: the hole gets a smooth fill of the frame."""
    image = torch.full((1, 3, 16, 16), 0.25)
    image[..., :, :8] = 0.75
    hole = box_hole(16, 16, 1, 15, 1, 15)
    result, sources = exemplar_fill_with_field(image, hole, None)
    assert bool((sources == -1).all())
    inner = result[0, :, 2:14, 2:14]
    assert inner.min() >= 0.25 - 1e-6 and inner.max() <= 0.75 + 1e-6
    assert float(result[0, 0, 8, 2]) > float(result[0, 0, 8, 13])  # left stays brighter, like its frame


def test_tiny_and_odd_sized_images():
    for height, width in ((5, 5), (9, 13), (33, 47)):
        image = textured_image(height, width)
        hole = box_hole(height, width, height // 3, height // 3 + 2, width // 3, width // 3 + 3)
        result = exemplar_fill(image, hole, None)
        assert result.shape == image.shape
        assert torch.equal(result[~hole.expand_as(image)], image[~hole.expand_as(image)])
        assert torch.isfinite(result).all()


def test_batch_equals_samples_alone():
    images = torch.cat([textured_image(40, 40, seed=1), textured_image(40, 40, seed=2), textured_image(40, 40, 3)])
    holes = torch.cat(
        [box_hole(40, 40, 5, 20, 5, 25), box_hole(40, 40, 18, 38, 10, 30), torch.zeros(1, 1, 40, 40, dtype=torch.bool)]
    )
    guides = torch.rand(images.shape, generator=seeded(10))
    batch, batch_sources = exemplar_fill_with_field(images, holes, guides, generator=seeded(11))
    for b in range(3):
        alone, alone_sources = exemplar_fill_with_field(
            images[b : b + 1], holes[b : b + 1], guides[b : b + 1], generator=seeded(11)
        )
        assert torch.equal(batch[b : b + 1], alone)
        assert torch.equal(batch_sources[b : b + 1], alone_sources)


def test_other_float_dtypes():
    image = textured_image(32, 32).double()
    hole = box_hole(32, 32, 10, 20, 10, 20)
    result = exemplar_fill(image, hole, None)
    assert result.dtype == torch.float64
    assert torch.equal(result[~hole.expand_as(image)], image[~hole.expand_as(image)])


def test_invalid_arguments_are_refused():
    image = textured_image(16, 16)
    hole = box_hole(16, 16, 4, 8, 4, 8)
    with pytest.raises(ValueError, match="hole"):
        exemplar_fill(image, hole.float(), None)
    with pytest.raises(ValueError, match="patch_size"):
        exemplar_fill(image, hole, None, patch_size=4)
    with pytest.raises(ValueError, match="guide"):
        exemplar_fill(image, hole, torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="image"):
        exemplar_fill(image[:, :1], hole[:, :, :, :], None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
def test_cuda_matches_the_contract():
    image = textured_image(48, 48).cuda()
    hole = box_hole(48, 48, 12, 36, 12, 36).cuda()
    guide = torch.rand(image.shape, generator=seeded(12)).cuda()
    result, sources = exemplar_fill_with_field(image, hole, guide, generator=seeded())
    assert result.is_cuda and sources.is_cuda
    assert torch.equal(result[~hole.expand_as(image)], image[~hole.expand_as(image)])
    assert_sources_valid(sources.cpu(), hole.cpu(), 7)
    again = exemplar_fill(image, hole, guide, generator=seeded())
    assert torch.equal(result, again)
    cuda_generator = torch.Generator(device="cuda").manual_seed(0)
    assert exemplar_fill(image, hole, guide, generator=cuda_generator).is_cuda
