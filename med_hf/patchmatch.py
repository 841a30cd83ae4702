"""Structure-guided exemplar synthesis: the texture stage of inpainting.

The network predicts a hole's structure and colours but fills it with a smooth smear. :func:`exemplar_fill`
re-synthesises the hole from patches of the photo's own known pixels, choosing them so that they agree both with
the fill around them and with the network's prediction (the *guide*): edges the network continues stay
continued, colours stay where the network put them, and the texture is the photo's.

The method is the multi-scale completion of Wexler et al. (2007, "Space-time completion of video") with the
randomised nearest-neighbour search of Barnes et al. (2009, "PatchMatch"):

1. A pyramid of 2x2 box averages. At a coarser level a pixel counts as known only if all four pixels it is made
   of are known, so pixels under the hole never reach any level. Coarse levels whose known area is too thin for
   the patch use smaller patches, and the pyramid stops once the hole is thin at the current level.
2. At the coarsest level the hole starts as the guide (or, without one, a smooth membrane fill). Every level then
   alternates a nearest-neighbour-field (NNF) search and a vote (expectation-maximisation): each pixel whose patch
   overlaps the hole (a *target*) looks for the closest *source* patch, one entirely inside the image and entirely
   on known pixels; each hole pixel then takes its value from the most reliable patch covering it.
3. The NNF is upsampled to the next finer level, down to the full resolution.

Patch distance: the squared distance between the target's current fill and the source's pixels, plus
``guidance_weight`` times the squared distance between their low-passed colours, the guide's at the target and
the photo's at the source (the guide is smooth, so it is compared at a scale where it is reliable and a textured
source is not penalised for its texture). Patches are compared on a per-image PCA basis: projecting every patch
is a convolution, and evaluating a candidate is a gather of a short row.

The search is PatchMatch's, done for all targets at once: propagation tries the neighbours' offsets (at doubling
distances at the coarsest level, jump-flood style), random search tries sources around the current one at
halving radii, plus one drawn from the whole level. A source continuing a neighbour's offset gets a small bonus
(coherence, as in Ashikhmin 2001), which keeps the fill in large coherent pieces rather than a mosaic.

Voting: every hole pixel copies what the most reliable patch covering it says, reliability being the patch
distance and the patch's *confidence* (patches that see known pixels know better than patches deep in the hole,
which only match a fill they made themselves; Wexler et al.'s confidence term). The last vote at full resolution
is instead Wexler et al.'s weighted mean of all covering patches, which keeps the copy where the patches agree
and hedges where they do not. The patches also vote on the known pixels they cover, and the mismatch there is
spread over the hole as a smooth membrane (the idea of Perez et al. 2003, "Poisson image editing"), so the copied
texture meets the known pixels without a seam.

Finally, with a guide, the fill's low frequencies move to the guide's: at that scale the network is more
faithful than any copied patch, and the texture is left as copied. The move is blended in as Perez et al.'s
seamless cloning does it (it is zero on the hole's edge), so a network that disagrees with the copy shows no
outline of the hole.

Everything is batched torch (CPU or CUDA). This file imports only torch, the standard library and the harmonic
fill: it is shipped as remote code next to the model weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .harmonic import harmonic_fill

# The pipeline's texture modes (`MEDInpaintPipeline(texture=...)`): "exemplar" runs this stage, "none" keeps the
# network's smooth prediction.
TEXTURES = ("exemplar", "none")
DEFAULT_TEXTURE = "exemplar"
DEFAULT_PATCH_SIZE = 7
DEFAULT_GUIDANCE_WEIGHT = 1.0
# PCA components of the (3, p, p) patches that the fill term compares.
FILL_DIMENSIONS = 16
# Low-pass of the guide term, in full-resolution pixels: coarse enough that the smooth guide is a fair reference
# and that sources keep their texture, fine enough to place colours and large structures.
STRUCTURE_SIGMA = 6.0
# Patches drawn (per level) to estimate the PCA basis.
BASIS_SAMPLES = 1024
# The pyramid stops when the working region's longer side would fall below COARSEST_SIDE, when no hole pixel is
# farther than THIN_HOLE_RADIUS pixels from a known one, or when a level would hold fewer source patches than
# MIN_SOURCE_FRACTION of its targets even with patches as small as MIN_COARSE_PATCH.
COARSEST_SIDE = 32
THIN_HOLE_RADIUS = 3
MIN_SOURCE_FRACTION = 0.1
MIN_COARSE_PATCH = 3
# EM iterations: the coarsest level gets the most, each finer level one fewer, down to FINEST_ITERATIONS, and the
# full-resolution level FULL_RESOLUTION_ITERATIONS.
COARSEST_ITERATIONS = 6
FINEST_ITERATIONS = 2
# The full-resolution level starts from a field already settled at half resolution, so one iteration does (a
# second buys 0.1 dB for 15-20 % more time: docs/texture_experiments.md).
FULL_RESOLUTION_ITERATIONS = 1
# Random search radius at the finer levels (the coarsest level searches all of itself).
FINE_SEARCH_RADIUS = 8
# Jump-flood propagation distances at the coarsest level's first search; later searches use neighbours only.
JUMP_STEPS = (8, 4, 2, 1)
# A source that continues a neighbour's offset counts as this much closer.
COHERENCE_BONUS = 0.2
# Confidence of a hole pixel: CONFIDENCE_DECAY ** (distance to the nearest known pixel); a patch's confidence is
# the mean over its pixels, and costs it CONFIDENCE_WEIGHT * -log(confidence) in the vote. A strong weight lets the
# patches that see known pixels decide, so the weighted last vote copies their texture instead of averaging it with
# the guesses deep in the hole (docs/texture_experiments.md: HF 0.68-0.82 -> 0.75-0.97 on object holes).
CONFIDENCE_DECAY = 0.7
CONFIDENCE_WEIGHT = 10.0
# Vote costs measure squared distances in units of this quantile of the level's squared distances.
VOTE_QUANTILE = 0.75
# The last vote at full resolution is a weighted mean (Wexler et al.'s vote): every patch covering a hole pixel votes
# with weight exp(-cost / VOTE_TEMPERATURE), its cost being its confidence cost plus a colour cost scaled by this
# temperature (`_weighted_vote_costs`): the temperature sets how much confidence counts, VOTE_COLOUR_SCALE how sharply
# colour differences do. Where the patches agree the texture stays as copied; where they disagree the mean hedges,
# which is what makes the fill more faithful than a copy. Coarser levels keep winner-take-all votes, so the structure
# they hand down stays crisp (docs/texture_experiments.md).
VOTE_TEMPERATURE = 0.4
# The weighted vote computes its weights in float64, relative to the level's cheapest patch, so that every
# voter's covering patches keep their exact relative weights; costs beyond this many temperatures above the
# cheapest weigh the same (exp of it is still a normal float64).
VOTE_WEIGHT_FLOOR = 700.0
# The weighted vote's similarity is absolute (as in the `pypatchmatch` package's vote): a patch whose values differ
# from the fill's by this much (RMS, on [0, 1]) weighs 1/e of an exact match, whether the level is smooth or busy.
VOTE_COLOUR_SCALE = 0.09
# The copy's low frequencies move to the guide's (a Gaussian of this sigma, in full-resolution pixels, of their
# difference): at that scale the network's prediction is closer to the photo than any copied patch; it gives back
# the PSNR that the sharper vote (CONFIDENCE_WEIGHT) costs. Blended in seamlessly (`_correct_structure`), so a
# network that disagrees with the copy shows no outline of the hole.
STRUCTURE_CORRECTION_SIGMA = 5.0
# Working region: the hole's bounding box grown by MARGIN_FRACTION of its longer side (at least
# MIN_MARGIN_PATCHES patches); sources come from there. The pipeline cuts a photo's distant holes apart with the
# same margins (`MEDImageProcessor.texture_regions`). Half the hole's size scores as well as the whole photo and
# searches a quarter of the area (docs/texture_experiments.md).
MARGIN_FRACTION = 0.5
MIN_MARGIN_PATCHES = 8
# Value of a sample that has neither a known pixel nor a guide.
NO_INFORMATION_VALUE = 0.5
_NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def exemplar_fill(
    image: torch.Tensor,
    hole: torch.Tensor,
    guide: torch.Tensor | None = None,
    patch_size: int = DEFAULT_PATCH_SIZE,
    guidance_weight: float = DEFAULT_GUIDANCE_WEIGHT,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fill ``hole`` with patches of the image's own known pixels, steered by ``guide``.

    Args:
        image: ``(B, 3, H, W)`` float in [0, 1]. Pixels under ``hole`` are never read (they may be garbage,
            NaN included).
        hole: ``(B, 1, H, W)`` bool, True = to fill. Each sample has its own hole.
        guide: ``(B, 3, H, W)`` float in [0, 1]: the network's prediction at this size. Only its hole pixels
            matter. ``None``: plain unguided PatchMatch, started from a smooth (membrane) fill of the hole.
        patch_size: odd side of the square patches, in pixels of the full resolution.
        guidance_weight: weight of the guide term of the patch distance against the fill term; it also moves the
            fill's low frequencies that fraction (at most all) of the way to the guide's. 0 keeps the guide only
            as the starting point.
        generator: seeds every random choice (default: a CPU generator seeded with 0, so that results are
            reproducible). Every sample of a batch starts from the generator's state at the call, so sample ``b``
            of a batch is bit-identical to ``exemplar_fill(image[b:b+1], hole[b:b+1], guide[b:b+1], ...)`` with a
            generator in the same state. A CUDA generator draws on the GPU, a CPU one on the CPU (then moved): the
            same seed gives different fills with the two kinds.

    Returns:
        ``(B, 3, H, W)``, the image's dtype, in [0, 1]; bit-identical to ``image`` outside the hole. It depends
        only on the known pixels, the hole, the guide and the generator's state. Where not a single patch fits
        entirely on known pixels (too little known area, e.g. an all-hole sample), the hole gets the guide, or
        without a guide a smooth fill of the known pixels (the constant 0.5 when no pixel is known).
    """
    return exemplar_fill_with_field(image, hole, guide, patch_size, guidance_weight, generator)[0]


def exemplar_fill_with_field(
    image: torch.Tensor,
    hole: torch.Tensor,
    guide: torch.Tensor | None = None,
    patch_size: int = DEFAULT_PATCH_SIZE,
    guidance_weight: float = DEFAULT_GUIDANCE_WEIGHT,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`exemplar_fill`, also returning the final nearest-neighbour field.

    Returns:
        ``(filled, sources)``: ``filled`` as from :func:`exemplar_fill`; ``sources``, ``(B, 2, H, W)`` int64, the
        (row, column) of the centre of the source patch matched to every pixel whose ``patch_size`` patch
        overlaps the hole, and -1 elsewhere (everywhere for a sample without a hole or without room for a
        single source patch). Every hole pixel's value was copied from one of these source patches (plus the
        smooth seam correction).
    """
    _check_inputs(image, hole, guide, patch_size)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    start_state = generator.get_state()
    filled = image.clone()
    sources = torch.full((image.shape[0], 2, *image.shape[-2:]), -1, dtype=torch.long, device=image.device)
    for b in range(image.shape[0]):
        if not bool(hole[b].any()):
            continue
        generator.set_state(start_state)
        sample_guide = None if guide is None else guide[b].float()
        sample, sources[b] = _fill_sample(
            image[b].float(), hole[b, 0], sample_guide, patch_size, guidance_weight, generator
        )
        filled[b] = sample.clamp(0, 1).to(image.dtype)
    return torch.where(hole, filled, image), sources


def _check_inputs(image: torch.Tensor, hole: torch.Tensor, guide: torch.Tensor | None, patch_size: int) -> None:
    if image.ndim != 4 or image.shape[1] != 3 or not image.is_floating_point():
        raise ValueError(f"image must be a float (B, 3, H, W) tensor, got {image.dtype} {tuple(image.shape)}.")
    if hole.dtype != torch.bool or hole.shape != (image.shape[0], 1, *image.shape[-2:]):
        raise ValueError(
            f"hole must be a bool (B, 1, H, W) tensor matching the image, got {hole.dtype} {tuple(hole.shape)}."
        )
    if guide is not None and guide.shape != image.shape:
        raise ValueError(f"guide must have the image's shape {tuple(image.shape)}, got {tuple(guide.shape)}.")
    check_patch_size(patch_size)


def check_patch_size(patch_size: int, name: str = "patch_size") -> None:
    """Refuse a patch side that is even (no centre pixel) or below MIN_COARSE_PATCH (the smallest that matches
    anything but single colours)."""
    if patch_size < MIN_COARSE_PATCH or patch_size % 2 == 0:
        raise ValueError(f"{name} must be an odd number >= {MIN_COARSE_PATCH}, got {patch_size}")


# ------------------------------------------------------------------------------------------- one sample


@dataclass
class _Level:
    """One pyramid level of the working region, with the patch geometry derived from its known pixels."""

    image: torch.Tensor  # (3, h, w) float: known pixels, 0 in the hole
    known: torch.Tensor  # (h, w) bool
    guide: torch.Tensor | None  # (3, h, w): known pixels, the guide in the hole
    patch_size: int
    scale: int = 1  # full-resolution pixels per pixel of this level
    valid: torch.Tensor = field(init=False)  # (h * w,) bool: centres of source patches
    valid_indices: torch.Tensor = field(init=False)  # their flat indices
    targets: torch.Tensor = field(init=False)  # flat indices of the pixels whose patch overlaps the hole
    holes: torch.Tensor = field(init=False)  # flat indices of the hole pixels

    def __post_init__(self) -> None:
        # Hole pixels in each pixel's patch: none for a source (if the patch is inside the level), some for a target.
        hole_counts = _window_counts(~self.known, self.patch_size)
        self.valid = _valid_sources(hole_counts, self.patch_size).flatten()
        self.valid_indices = torch.nonzero(self.valid).flatten()
        self.targets = torch.nonzero((hole_counts > 0).flatten()).flatten()
        self.holes = torch.nonzero(~self.known.flatten()).flatten()

    @property
    def height(self) -> int:
        return self.image.shape[-2]

    @property
    def width(self) -> int:
        return self.image.shape[-1]

    def rows_columns(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.div(indices, self.width, rounding_mode="floor"), indices % self.width

    def clamped(self, rows: torch.Tensor, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat indices of (rows, columns), clamped into the level, and whether each was inside it."""
        inside = (rows >= 0) & (rows < self.height) & (columns >= 0) & (columns < self.width)
        return rows.clamp(0, self.height - 1) * self.width + columns.clamp(0, self.width - 1), inside

    def checked(self, rows: torch.Tensor, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat indices of (rows, columns), clamped into the level, and whether each is a valid source."""
        flat, inside = self.clamped(rows, columns)
        return flat, inside & self.valid[flat]

    def random_sources(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` sources drawn uniformly among the valid ones."""
        picks = torch.randint(len(self.valid_indices), (count,), generator=generator, device=generator.device)
        return self.valid_indices[picks.to(self.valid_indices.device)]

    def target_confidence(self) -> torch.Tensor:
        """(targets,) mean over each target's patch of CONFIDENCE_DECAY ** (distance to a known pixel).

        The distance is the chessboard one, counted up to the patch size: beyond it the confidence is negligible
        and stays at its floor (positive: its log is a cost).
        """
        # Only the hole's bounding box, grown by the reach of the distance and of the patch mean, can differ from
        # 1 (the confidence of a known pixel) or influence a target.
        reach = self.patch_size + self.patch_size // 2
        (top, bottom), (left, right) = (_grown_span((~self.known).any(axis), reach) for axis in (1, 0))
        known = self.known[top:bottom, left:right]
        pixel = torch.full(known.shape, CONFIDENCE_DECAY**self.patch_size, dtype=self.image.dtype, device=known.device)
        # From the farthest distance in: a pixel within chessboard distance k of a known one gets DECAY ** k.
        known_counts = _window_counter(known, 2 * self.patch_size - 1)
        for distance in range(self.patch_size - 1, -1, -1):
            near = known_counts(2 * distance + 1) > 0
            pixel = torch.where(near, CONFIDENCE_DECAY**distance, pixel)
        confidence = torch.ones_like(self.image[0])
        confidence[top:bottom, left:right] = pixel
        radius = self.patch_size // 2
        patch_mean = F.avg_pool2d(F.pad(confidence[None, None], (radius,) * 4, mode="replicate"), self.patch_size, 1)
        return patch_mean.flatten()[self.targets]


@dataclass
class _Field:
    """Nearest-neighbour field of a level: the patch at ``targets[i]`` is matched to the one at ``sources[i]``.

    Both are flat pixel indices (``row * width + column``) of patch centres, and every source is valid.
    ``distances[i]`` is their patch distance (less the coherence bonus where the match continues a neighbour's).
    """

    targets: torch.Tensor
    sources: torch.Tensor
    distances: torch.Tensor


def _fill_sample(
    image: torch.Tensor,
    hole: torch.Tensor,
    guide: torch.Tensor | None,
    patch_size: int,
    guidance_weight: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill one (3, H, W) image's (H, W) hole; returns the filled image and the (2, H, W) source field."""
    sources = torch.full((2, *image.shape[-2:]), -1, dtype=torch.long, device=image.device)
    known = ~hole
    # Sanitise once: from here on nothing can read a hole pixel (multiplying by 0 would keep NaN; `where` does not).
    image = torch.where(known, image, torch.zeros((), dtype=image.dtype, device=image.device))
    if guide is not None:
        guide = torch.where(known, image, guide)
    top, bottom, left, right = _working_region(hole, patch_size)
    finest = _Level(
        image[:, top:bottom, left:right],
        known[top:bottom, left:right],
        None if guide is None else guide[:, top:bottom, left:right],
        patch_size,
    )
    if len(finest.valid_indices) == 0:
        return (guide if guide is not None else _smooth_fill(image, known)), sources
    guidance_weight = guidance_weight if guide is not None else 0.0
    fill, nnf = _synthesise(_pyramid(finest), guidance_weight, generator)
    if guidance_weight > 0:
        fill = _correct_structure(finest, fill, min(guidance_weight, 1.0))
    result = image.clone()
    result[:, top:bottom, left:right] = fill
    target_rows, target_columns = finest.rows_columns(nnf.targets)
    source_rows, source_columns = finest.rows_columns(nnf.sources)
    sources[0, target_rows + top, target_columns + left] = source_rows + top
    sources[1, target_rows + top, target_columns + left] = source_columns + left
    return result, sources


def _working_region(hole: torch.Tensor, patch_size: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the hole's bounding box grown by the margin the sources come from."""
    rows = torch.nonzero(hole.any(1)).flatten()
    columns = torch.nonzero(hole.any(0)).flatten()
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(columns[0]), int(columns[-1]) + 1
    margin = max(int(MARGIN_FRACTION * max(bottom - top, right - left)), MIN_MARGIN_PATCHES * patch_size)
    height, width = hole.shape
    return max(top - margin, 0), min(bottom + margin, height), max(left - margin, 0), min(right + margin, width)


# ------------------------------------------------------------------------------------------- pyramid


def _pyramid(finest: _Level) -> list[_Level]:
    """Levels from finest to coarsest; the finest holds at least one source patch."""
    levels = [finest]
    while max(levels[-1].height, levels[-1].width) // 2 >= COARSEST_SIDE and _is_thick(levels[-1]):
        coarser = _coarser_level(levels[-1])
        if coarser is None:
            break
        levels.append(coarser)
    return levels


def _is_thick(level: _Level) -> bool:
    """Whether some hole pixel lies farther than THIN_HOLE_RADIUS pixels (chessboard) from every known one.

    Thin holes are best filled at their own scale (a coarser level would only blur their surroundings into them);
    thick ones need coarser levels, where they are thin.
    """
    size = 2 * THIN_HOLE_RADIUS + 1
    return bool((_window_counts(level.known, size) == 0).any())


def _coarser_level(level: _Level) -> _Level | None:
    """The next coarser level with the largest patch (down to MIN_COARSE_PATCH) that leaves enough sources.

    The hole grows at every level; smaller patches keep a deep pyramid possible, and a deep pyramid is what keeps
    large holes from collapsing into a smooth fill.
    """
    known = _all_known(level.known, 2, stride=2)
    image = F.avg_pool2d(level.image[None], 2)[0]
    image = torch.where(known, image, torch.zeros((), dtype=image.dtype, device=image.device))
    guide = None if level.guide is None else F.avg_pool2d(level.guide[None], 2)[0]
    for patch_size in range(level.patch_size, MIN_COARSE_PATCH - 1, -2):
        coarser = _Level(image, known, guide, patch_size, level.scale * 2)
        if len(coarser.valid_indices) >= max(MIN_SOURCE_FRACTION * len(coarser.targets), 1):
            return coarser
    return None


def _all_known(known: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """Logical AND over size x size windows (no padding: windows sticking out of the mask are dropped)."""
    return F.max_pool2d((~known)[None, None].float(), size, stride=stride)[0, 0] < 0.5


def _window_counts(flags: torch.Tensor, size: int) -> torch.Tensor:
    """(h, w) int: how many of the (h, w) bool ``flags`` are True in the odd size x size window centred at each
    pixel (nothing counts outside)."""
    return _window_counter(flags, size)(size)


def _window_counter(flags: torch.Tensor, largest: int) -> Callable[[int], torch.Tensor]:
    """:func:`_window_counts` of ``flags`` for any odd window size up to ``largest``, from one summed-area table
    (each size then costs the same few subtractions)."""
    reach = largest // 2
    table = F.pad(flags.to(torch.int32), (reach + 1, reach, reach + 1, reach)).cumsum(0).cumsum(1)
    height, width = flags.shape

    def counts(size: int) -> torch.Tensor:
        # Window rows [y - r, y + r] are table rows y + reach - r ... y + reach + r + 1 (the table is one ahead).
        low, high = reach - size // 2, reach + size // 2 + 1
        rows_low, rows_high = slice(low, low + height), slice(high, high + height)
        columns_low, columns_high = slice(low, low + width), slice(high, high + width)
        return (
            table[rows_high, columns_high]
            - table[rows_low, columns_high]
            - table[rows_high, columns_low]
            + table[rows_low, columns_low]
        )

    return counts


def _grown_span(flags: torch.Tensor, reach: int) -> tuple[int, int]:
    """[start, stop) of the True entries of a 1-D ``flags``, grown by ``reach`` on both sides within its length."""
    indices = torch.nonzero(flags).flatten()
    return max(int(indices[0]) - reach, 0), min(int(indices[-1]) + 1 + reach, len(flags))


def _valid_sources(hole_counts: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(h, w) bool: centres of the patches that lie entirely inside the level and on known pixels, given each
    pixel's count of hole pixels in its patch."""
    radius = patch_size // 2
    height, width = hole_counts.shape
    valid = torch.zeros(height, width, dtype=torch.bool, device=hole_counts.device)
    inner = (slice(radius, height - radius), slice(radius, width - radius))
    valid[inner] = hole_counts[inner] == 0
    return valid


# ------------------------------------------------------------------------------------------- synthesis


def _synthesise(
    levels: list[_Level], guidance_weight: float, generator: torch.Generator
) -> tuple[torch.Tensor, _Field]:
    """Coarse-to-fine EM over the pyramid; returns the finest level's fill and its field."""
    coarsest = levels[-1]
    fill = coarsest.guide if coarsest.guide is not None else _smooth_fill(coarsest.image, coarsest.known)
    nnf = _Field(coarsest.targets, coarsest.random_sources(len(coarsest.targets), generator), None)
    for depth, level in enumerate(reversed(levels)):
        confidence_costs = _confidence_costs(level)
        if depth > 0:
            nnf = _upsample_field(nnf, levels[len(levels) - depth], level, generator)
            # The first fill of a level: nothing is matched yet, so only the patches' confidence ranks their votes.
            fill = _vote(level, nnf, confidence_costs)
        iterations = max(COARSEST_ITERATIONS - depth, FINEST_ITERATIONS)
        last_temperature = 0.0
        if level is levels[0]:
            iterations = min(iterations, FULL_RESOLUTION_ITERATIONS)
            last_temperature = VOTE_TEMPERATURE
        fill = _expectation_maximisation(
            level, fill, nnf, confidence_costs, guidance_weight, generator, iterations, depth == 0, last_temperature
        )
    return fill, nnf


def _expectation_maximisation(
    level: _Level,
    fill: torch.Tensor,
    nnf: _Field,
    confidence_costs: torch.Tensor,
    guidance_weight: float,
    generator: torch.Generator,
    iterations: int,
    is_coarsest: bool,
    last_temperature: float,
) -> torch.Tensor:
    """Alternate the NNF search and the vote at one level; improves ``nnf`` in place, returns the new fill. The
    last vote has ``last_temperature`` (see :func:`_vote`)."""
    descriptors = _Descriptors(level, guidance_weight, generator)
    radius = max(level.height, level.width) if is_coarsest else FINE_SEARCH_RADIUS
    for iteration in range(iterations):
        search = _Search(level, nnf, descriptors.of_targets(fill, nnf.targets), descriptors.of_sources)
        search.propagate(JUMP_STEPS if is_coarsest and iteration == 0 else (1,))
        search.random_search(radius, generator)
        if iteration == iterations - 1 and last_temperature > 0:
            costs = _weighted_vote_costs(nnf.distances, level.patch_size, last_temperature) + confidence_costs
            fill = _vote(level, nnf, costs, last_temperature)
        else:
            fill = _vote(level, nnf, _vote_costs(nnf.distances) + confidence_costs)
    return fill


def _upsample_field(coarse: _Field, coarse_level: _Level, level: _Level, generator: torch.Generator) -> _Field:
    """The coarse field one level finer: each target inherits its parent's source, shifted by its own offset."""
    parent_sources = torch.full(
        (coarse_level.height * coarse_level.width,), -1, dtype=torch.long, device=coarse.sources.device
    )
    parent_sources[coarse.targets] = coarse.sources
    rows, columns = level.rows_columns(level.targets)
    # Odd sizes: the last fine row/column has no parent of its own and borrows the last coarse one.
    parent_rows = (rows // 2).clamp(max=coarse_level.height - 1)
    parent_columns = (columns // 2).clamp(max=coarse_level.width - 1)
    inherited = parent_sources[parent_rows * coarse_level.width + parent_columns]
    inherited_rows, inherited_columns = coarse_level.rows_columns(inherited)
    sources, ok = level.checked(
        inherited_rows * 2 + rows - 2 * parent_rows, inherited_columns * 2 + columns - 2 * parent_columns
    )
    ok &= inherited >= 0
    # A target whose parent had no source, or whose inherited source is not valid here, starts at random.
    sources = torch.where(ok, sources, level.random_sources(len(sources), generator))
    return _Field(level.targets, sources, None)


# ------------------------------------------------------------------------------------------- descriptors


class _Descriptors:
    """Patch descriptors of one level: rows whose squared distance is the patch distance.

    Fill term: the first FILL_DIMENSIONS PCA coordinates of the (3, p, p) patch (the current fill for a target,
    the photo for a source). Guide term: the low-passed colour at the patch centre (the guide composite's for a
    target, the known pixels' for a source), scaled so that a colour difference counts as over a whole patch,
    times sqrt(guidance_weight).
    """

    def __init__(self, level: _Level, guidance_weight: float, generator: torch.Generator) -> None:
        self.basis = _patch_basis(level, generator)
        self.of_sources = _project(level.image, self.basis)
        self.guide_of_targets = None
        if guidance_weight > 0 and level.guide is not None:
            sigma = STRUCTURE_SIGMA / level.scale
            # A colour difference over the whole patch, like the fill term's pixel differences.
            factor = level.patch_size * guidance_weight**0.5
            source_structure = _low_pass(level.image, level.known, sigma).flatten(1).T * factor
            self.of_sources = torch.cat([self.of_sources, source_structure], 1).contiguous()
            all_known = torch.ones_like(level.known)
            guide_structure = _low_pass(level.guide, all_known, sigma).flatten(1).T * factor
            self.guide_of_targets = guide_structure[level.targets]

    def of_targets(self, fill: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(targets, D) descriptors of the targets given the current fill."""
        descriptors = _project(fill, self.basis, targets)
        if self.guide_of_targets is None:
            return descriptors
        return torch.cat([descriptors, self.guide_of_targets], 1)


def _patch_basis(level: _Level, generator: torch.Generator) -> torch.Tensor:
    """(D, 3, p, p) principal directions of the level's source patches, strongest first."""
    p = level.patch_size
    samples = level.random_sources(min(BASIS_SAMPLES, 4 * len(level.valid_indices)), generator)
    offsets = torch.arange(p, device=samples.device) - p // 2
    offsets = (offsets[:, None] * level.width + offsets[None, :]).flatten()
    patches = level.image.flatten(1)[:, samples[:, None] + offsets]  # (3, N, p * p)
    patches = patches.permute(1, 0, 2).reshape(len(samples), 3 * p * p)
    patches = patches - patches.mean(0)
    # float32 on purpose: LAPACK's float64 eigensolver is two orders of magnitude slower here, and nothing needs
    # more than a few digits of these directions.
    _, vectors = torch.linalg.eigh(patches.T @ patches / len(samples))
    dimensions = min(FILL_DIMENSIONS, 3 * p * p)
    return vectors[:, -dimensions:].flip(1).T.reshape(dimensions, 3, p, p).contiguous()


def _project(image: torch.Tensor, basis: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
    """(h * w, D) projection of every patch of a (3, h, w) image (replicated borders) onto the basis, or (N, D) of
    the patches centred at the flat indices ``at`` only (convolving just their bounding box)."""
    radius = basis.shape[-1] // 2
    padded = F.pad(image[None], (radius,) * 4, mode="replicate")
    if at is None:
        return F.conv2d(padded, basis)[0].flatten(1).T.contiguous()
    width = image.shape[-1]
    rows, columns = torch.div(at, width, rounding_mode="floor"), at % width
    top, left = int(rows.min()), int(columns.min())
    bottom, right = int(rows.max()) + 1, int(columns.max()) + 1
    window = padded[..., top : bottom + 2 * radius, left : right + 2 * radius]
    projected = F.conv2d(window, basis)[0]  # (D, bottom - top, right - left)
    return projected[:, rows - top, columns - left].T.contiguous()


def _low_pass(image: torch.Tensor, weight: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a (3, h, w) image over the pixels where ``weight`` (h, w) is True (normalised).

    Wide blurs are computed on a 2x-pooled grid (repeatedly) and upsampled: the result is smooth at that scale.
    """
    weight = weight[None].to(image.dtype)
    stacked = torch.cat([image * weight, weight])[None]  # (1, 4, h, w)
    size = stacked.shape[-2:]
    while sigma >= 4 and min(stacked.shape[-2:]) >= 16:
        stacked = F.avg_pool2d(stacked, 2, ceil_mode=True)
        sigma /= 2
    radius = max(int(3 * sigma + 0.5), 1)
    taps = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).repeat(4, 1)
    stacked = F.conv2d(F.pad(stacked, (radius, radius, 0, 0)), kernel[:, None, None, :], groups=4)
    stacked = F.conv2d(F.pad(stacked, (0, 0, radius, radius)), kernel[:, None, :, None], groups=4)
    stacked = F.interpolate(stacked, size=size, mode="bilinear", align_corners=False)[0]
    return stacked[:3] / stacked[3:].clamp_min(1e-6)


# ------------------------------------------------------------------------------------------- search


class _Search:
    """PatchMatch's two moves for all targets of a level at once, improving ``nnf`` in place."""

    def __init__(
        self, level: _Level, nnf: _Field, target_descriptors: torch.Tensor, source_descriptors: torch.Tensor
    ) -> None:
        self.level, self.nnf = level, nnf
        self.target_descriptors, self.source_descriptors = target_descriptors, source_descriptors
        # The fill changed since the last search: the current matches are measured again.
        nnf.distances = self._distances(nnf.sources)

    def _distances(self, sources: torch.Tensor) -> torch.Tensor:
        # Norms rather than squares: one fused reduction; the order is the same.
        gathered = self.source_descriptors.index_select(0, sources)
        return torch.linalg.vector_norm(self.target_descriptors - gathered, dim=1)

    def try_candidates(self, candidates: torch.Tensor, ok: torch.Tensor, bonus: float = 0.0) -> None:
        """Keep each candidate source that is valid (``ok``) and closer (less ``bonus``) than the current one."""
        nnf = self.nnf
        candidates = torch.where(ok, candidates, nnf.sources)
        distances = self._distances(candidates) * (1 - bonus)
        better = ok & (distances < nnf.distances)
        nnf.sources = torch.where(better, candidates, nnf.sources)
        nnf.distances = torch.where(better, distances, nnf.distances)

    def propagate(self, steps: tuple[int, ...]) -> None:
        """Each target tries its neighbours' sources, shifted back by the step (neighbours ``step`` pixels away)."""
        level, nnf = self.level, self.nnf
        dense = torch.full((level.height * level.width,), -1, dtype=torch.long, device=nnf.sources.device)
        rows, columns = level.rows_columns(nnf.targets)
        for step in steps:
            for d_row, d_column in _NEIGHBOURS:
                dense[nnf.targets] = nnf.sources
                neighbour, inside = level.clamped(rows + d_row * step, columns + d_column * step)
                inherited = dense[neighbour]
                inherited_rows, inherited_columns = level.rows_columns(inherited)
                candidates, ok = level.checked(inherited_rows - d_row * step, inherited_columns - d_column * step)
                # Only an adjacent neighbour's offset makes a seamless continuation.
                bonus = COHERENCE_BONUS if step == 1 else 0.0
                self.try_candidates(candidates, ok & inside & (inherited >= 0), bonus)

    def random_search(self, radius: int, generator: torch.Generator) -> None:
        """Sources drawn around the current one at halving radii, then one drawn from the whole level."""
        level, nnf = self.level, self.nnf
        count = len(nnf.targets)
        while radius >= 1:
            jitter = torch.randint(-radius, radius + 1, (2, count), generator=generator, device=generator.device)
            jitter = jitter.to(nnf.sources.device)
            rows, columns = level.rows_columns(nnf.sources)
            self.try_candidates(*level.checked(rows + jitter[0], columns + jitter[1]))
            radius //= 2
        candidates = level.random_sources(count, generator)
        self.try_candidates(candidates, torch.ones_like(candidates, dtype=torch.bool))


# ------------------------------------------------------------------------------------------- voting


def _confidence_costs(level: _Level) -> torch.Tensor:
    """Vote cost of each target for its confidence: patches that see known pixels outrank those deep in the hole."""
    return -CONFIDENCE_WEIGHT * torch.log(level.target_confidence())


def _vote_costs(distances: torch.Tensor) -> torch.Tensor:
    """Squared distances in units of 2x their VOTE_QUANTILE over the level (a scale-free similarity cost)."""
    squared = distances.square()
    rank = min(max(int(math.ceil(VOTE_QUANTILE * len(squared))), 1), len(squared))
    scale = torch.kthvalue(squared, rank).values.clamp_min(1e-12)
    return squared / (2 * scale)


def _weighted_vote_costs(distances: torch.Tensor, patch_size: int, temperature: float) -> torch.Tensor:
    """Costs of the weighted vote: a patch weighs exp(-mean squared difference per patch value / VOTE_COLOUR_SCALE
    ** 2) before its confidence, whatever the level's other patches cost."""
    return temperature * distances.square() / (3 * patch_size**2 * VOTE_COLOUR_SCALE**2)


def _vote(level: _Level, nnf: _Field, costs: torch.Tensor, temperature: float = 0.0) -> torch.Tensor:
    """The level's fill: what the patches covering each hole pixel say about it, plus the seam correction.

    At ``temperature`` 0 every hole pixel copies its cheapest covering patch's source (winner-take-all); above 0 it
    takes the mean of all its covering patches' sources, weighted by exp(-cost / temperature).

    The patches also vote on the known pixels they cover; the mismatch there is spread over the hole as a smooth
    membrane and added, so the copied texture meets the known pixels without a seam.
    """
    pixels = level.image.flatten(1).T.contiguous()  # (h * w, 3): a gathered pixel is one contiguous row
    if temperature > 0:
        votes = _weighted_votes(level, nnf, costs, pixels, temperature)
    else:
        votes = _cheapest_votes(level, nnf, costs, pixels)
    in_hole = ~level.known.flatten()[nnf.targets]
    mismatch = torch.zeros_like(pixels)
    mismatch[nnf.targets] = torch.where(in_hole[:, None], 0, pixels[nnf.targets] - votes)
    correction = _seam_correction(mismatch.T.reshape(level.image.shape), level.known).flatten(1).T
    pixels[level.holes] = (votes + correction[nnf.targets])[in_hole]
    return pixels.T.reshape(level.image.shape)


def _cheapest_votes(level: _Level, nnf: _Field, costs: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """(targets, 3): for every voter (the targets themselves: the hole and the known pixels within a patch radius of
    it), what its cheapest covering patch's source says."""
    radius = level.patch_size // 2
    size = level.height * level.width
    # Every pixel of the level as a patch centre: its cost (infinite where no patch is matched) and its source.
    cost_map = torch.full((size,), torch.inf, dtype=pixels.dtype, device=pixels.device)
    cost_map[nnf.targets] = costs.to(pixels.dtype)
    source_map = torch.zeros(size, dtype=torch.long, device=pixels.device)
    source_map[nnf.targets] = nnf.sources
    # The cheapest patch covering a voter is the cheapest centre in the patch-sized window around it: a min-pool
    # with its argmin (the window always holds the voter's own, finite, patch). Its source, shifted by the voter's
    # offset from the centre, is a known pixel (a matched patch lies on known pixels).
    _, winners = F.max_pool2d(
        -cost_map.view(1, 1, level.height, level.width),
        level.patch_size,
        stride=1,
        padding=radius,
        return_indices=True,
    )
    centres = winners.flatten()[nnf.targets]
    return pixels.index_select(0, source_map[centres] + (nnf.targets - centres))


def _weighted_votes(
    level: _Level, nnf: _Field, costs: torch.Tensor, pixels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(targets, 3): for every voter, the mean of what all its covering patches' sources say, weighted by
    exp(-cost / temperature).

    Computed per patch offset on the targets' bounding box: each matched centre adds its weighted source pixel at
    that offset to the pixel it covers there (a shifted slice), and the weights covering a voter are a box sum.
    """
    radius = level.patch_size // 2
    rows, columns = level.rows_columns(nnf.targets)
    top, left = int(rows.min()), int(columns.min())
    height, width = int(rows.max()) + 1 - top, int(columns.max()) + 1 - left
    box_rows, box_columns = rows - top, columns - left
    exponents = ((costs.double() - costs.min()) / temperature).clamp(max=VOTE_WEIGHT_FLOOR)
    weights = torch.zeros(height, width, dtype=torch.float64, device=pixels.device)
    weights[box_rows, box_columns] = torch.exp(-exponents)
    # Centres without a patch weigh 0; their source is any pixel.
    sources = torch.zeros(height, width, dtype=torch.long, device=pixels.device)
    sources[box_rows, box_columns] = nnf.sources
    sources, centre_weights = sources.flatten(), weights.flatten()[:, None]
    totals = torch.zeros(height + 2 * radius, width + 2 * radius, 3, dtype=torch.float64, device=pixels.device)
    wide_pixels, last = pixels.double(), len(pixels) - 1
    for d_row in range(-radius, radius + 1):
        for d_column in range(-radius, radius + 1):
            shifted = (sources + (d_row * level.width + d_column)).clamp_(0, last)
            values = wide_pixels.index_select(0, shifted).mul_(centre_weights).view(height, width, 3)
            totals[radius + d_row : radius + d_row + height, radius + d_column : radius + d_column + width] += values
    padded_weights = F.pad(weights[None, None], (radius,) * 4)
    weight_sums = F.avg_pool2d(padded_weights, level.patch_size, 1, radius, divisor_override=1)[0, 0]
    voters = (box_rows + radius, box_columns + radius)
    return (totals[voters] / weight_sums[voters][:, None]).to(pixels.dtype)


def _seam_correction(mismatch: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Membrane interpolation into the hole of a (3, h, w) mismatch given on the known pixels (bounding box only)."""
    rows = torch.nonzero((~known).any(1)).flatten()
    columns = torch.nonzero((~known).any(0)).flatten()
    top, bottom = max(int(rows[0]) - 1, 0), int(rows[-1]) + 2
    left, right = max(int(columns[0]) - 1, 0), int(columns[-1]) + 2
    correction = torch.zeros_like(mismatch)
    correction[:, top:bottom, left:right] = _smooth_fill(
        mismatch[:, top:bottom, left:right], known[top:bottom, left:right]
    )
    return correction


def _correct_structure(level: _Level, fill: torch.Tensor, strength: float) -> torch.Tensor:
    """The (3, h, w) fill moved ``strength`` of the way to the guide's low frequencies (STRUCTURE_CORRECTION_SIGMA),
    in the hole only, without a seam.

    The low-passed difference spills over the hole's edge (where guide and fill both equal the known pixels), so
    on its own it would step there; the membrane through its values on the known pixels is taken off, which
    leaves the correction's shape inside the hole and makes it zero at the edge.
    """
    everywhere = torch.ones_like(level.known)
    difference = _low_pass(level.guide - fill, everywhere, STRUCTURE_CORRECTION_SIGMA)
    # The membrane reads only the known pixels' values.
    seamless = difference - _seam_correction(difference, level.known)
    return torch.where(level.known, fill, fill + strength * seamless)


# ------------------------------------------------------------------------------------------- smooth fill


def _smooth_fill(image: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """The harmonic (membrane) fill of a (3, h, w) image's unknown pixels; NO_INFORMATION_VALUE without any known
    pixel."""
    if not bool(known.any()):
        return torch.full_like(image, NO_INFORMATION_VALUE)
    return harmonic_fill(image[None], (~known)[None, None].to(image.dtype))[0]
