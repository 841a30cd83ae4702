"""Hole-mask sources for training MEDFE.

Every function here returns a mask as a ``float32`` array of shape ``(height, width)`` with ``1.0`` marking
the hole (pixels to inpaint) and ``0.0`` the known pixels. Mask image files follow the usual convention of
the irregular-mask data sets: white is the hole, i.e. a pixel is a hole when its grayscale value is > 127.

All randomness comes from an explicit ``numpy.random.Generator``, so a mask is a pure function of the
generator state: equal seeds give equal masks, whatever the number of data-loader workers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..image_files import IMAGE_EXTENSIONS, is_image_file
from ..image_processing_med import prepare_mask

__all__ = [
    "MaskFolder",
    "MaskSampler",
    "ObjectShapes",
    "box_mask",
    "free_form_mask",
]


def _check_size(height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"Mask size must be positive, got height={height}, width={width}.")


def free_form_mask(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    max_strokes: int = 5,
    vertices: tuple[int, int] = (4, 12),
    max_turn: float = 0.6 * math.pi,
    length: tuple[float, float] = (0.08, 0.3),
    brush_width: tuple[float, float] = (0.06, 0.18),
) -> np.ndarray:
    """Draw free-form brush strokes, in the spirit of the DeepFill v2 and LaMa training masks.

    Each of ``1..max_strokes`` strokes is a polyline starting at a uniform random point. Every segment turns
    the heading by a uniform angle in ``[-max_turn, max_turn]`` and has a uniform random length; the whole
    stroke is drawn with one brush width, with round joints and ends. Vertices are clipped to the image.

    Lengths and brush widths are fractions of ``sqrt(height * width)``, so the hole ratio distribution does
    not depend on the resolution. With the defaults it spans roughly 5 % to 60 %: 10th percentile about 9 %,
    median about 28 %, 90th percentile about 46 %.

    Args:
        height, width: mask size in pixels.
        rng: source of randomness; the mask is a deterministic function of its state.
        max_strokes: the number of strokes is uniform in ``[1, max_strokes]``.
        vertices: inclusive range of the number of vertices per stroke.
        max_turn: largest heading change between consecutive segments, in radians.
        length: range of segment lengths, as fractions of ``sqrt(height * width)``.
        brush_width: range of brush widths, as fractions of ``sqrt(height * width)``.

    Returns:
        ``float32`` array of shape ``(height, width)`` with values in ``{0, 1}`` (1 = hole).
    """
    _check_size(height, width)
    scale = math.sqrt(height * width)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(1, max_strokes + 1))):
        num_vertices = int(rng.integers(vertices[0], vertices[1] + 1))
        brush = max(1, round(rng.uniform(*brush_width) * scale))
        x, y = rng.uniform(0, width - 1), rng.uniform(0, height - 1)
        heading = rng.uniform(0, 2 * math.pi)
        points = [(x, y)]
        for _ in range(num_vertices - 1):
            heading += rng.uniform(-max_turn, max_turn)
            step = rng.uniform(*length) * scale
            x = float(np.clip(x + step * math.cos(heading), 0, width - 1))
            y = float(np.clip(y + step * math.sin(heading), 0, height - 1))
            points.append((x, y))
        draw.line(points, fill=255, width=brush)
        # PIL draws thick polylines with square ends and mitred corners; a disc on every vertex rounds both.
        radius = brush / 2
        for px, py in points:
            draw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=255)
    return (np.asarray(canvas) > 127).astype(np.float32)


def box_mask(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    centre: bool = False,
    scale: float = 0.5,
    side: tuple[float, float] = (0.2, 0.6),
) -> np.ndarray:
    """A single rectangular hole.

    With ``centre=True`` this is the classic centre-hole setting (MEDFE's "centre" masks: a 128 x 128 hole in
    a 256 x 256 image for ``scale=0.5``): a box of ``round(scale * height) x round(scale * width)`` pixels
    whose top-left corner is at ``((height - box_height) // 2, (width - box_width) // 2)``; ``rng`` is then
    not used. Otherwise the box height and width are independent uniform fractions ``side`` of the image
    height and width, and the box is placed uniformly at random fully inside the image.

    Args:
        height, width: mask size in pixels.
        rng: source of randomness for random boxes.
        centre: return the deterministic centred box instead of a random one.
        scale: side of the centred box as a fraction of the image side, in ``(0, 1]``.
        side: range of random box sides as fractions of the image side, within ``(0, 1]``.

    Returns:
        ``float32`` array of shape ``(height, width)`` with values in ``{0, 1}`` (1 = hole).
    """
    _check_size(height, width)
    if centre:
        if not 0 < scale <= 1:
            raise ValueError(f"`scale` must be in (0, 1], got {scale}.")
        box_h, box_w = max(1, round(scale * height)), max(1, round(scale * width))
        top, left = (height - box_h) // 2, (width - box_w) // 2
    else:
        if not 0 < side[0] <= side[1] <= 1:
            raise ValueError(f"`side` must satisfy 0 < low <= high <= 1, got {side}.")
        box_h = max(1, round(rng.uniform(*side) * height))
        box_w = max(1, round(rng.uniform(*side) * width))
        top = int(rng.integers(0, height - box_h + 1))
        left = int(rng.integers(0, width - box_w + 1))
    mask = np.zeros((height, width), dtype=np.float32)
    mask[top : top + box_h, left : left + box_w] = 1.0
    return mask


class MaskFolder:
    """Masks read from the image files of a folder (e.g. the irregular-mask data set of Liu et al. 2018).

    The files are the folder's direct children with a known image extension (``IMAGE_EXTENSIONS``, any case),
    sorted by file name; indices always refer to this sorted list, excluded files included. A pixel is a
    hole when its grayscale value is > 127.

    Sampling picks a non-excluded file uniformly, rotates it by a random multiple of 90 degrees, flips it
    horizontally and vertically with probability 1/2 each, then crops a random window of ``1 / zoom`` of its
    height and width (``zoom`` uniform in ``zoom_range``) and resizes that window to the requested size with
    nearest-neighbour interpolation, so the result stays binary.

    Args:
        root: folder holding the mask images.
        exclude: file names (e.g. ``"00042.png"``) or indices into the sorted file list that must never be
            sampled, typically the masks of the evaluation protocol
            (``med_hf.evaluation.protocol_mask_names``).
        flip: apply random horizontal and vertical flips.
        rotate: apply random 90-degree rotations.
        zoom_range: ``(low, high)`` with ``1 <= low <= high``; ``(1, 1)`` disables the crop-and-resize zoom.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        exclude: Iterable[str | int] = (),
        *,
        flip: bool = True,
        rotate: bool = True,
        zoom_range: tuple[float, float] = (1.0, 1.25),
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"Mask folder {self.root} does not exist or is not a directory.")
        self.files = sorted(
            (p for p in self.root.iterdir() if is_image_file(p)),
            key=lambda p: p.name,
        )
        if not self.files:
            raise ValueError(f"Mask folder {self.root} holds no {'/'.join(IMAGE_EXTENSIONS)} files.")
        if not 1 <= zoom_range[0] <= zoom_range[1]:
            raise ValueError(f"`zoom_range` must satisfy 1 <= low <= high, got {zoom_range}.")
        self.flip = flip
        self.rotate = rotate
        self.zoom_range = zoom_range

        excluded = self._resolve(exclude)
        self.indices = [i for i in range(len(self.files)) if i not in excluded]
        if not self.indices:
            raise ValueError(f"All {len(self.files)} masks of {self.root} are excluded.")

    def _resolve(self, exclude: Iterable[str | int]) -> set[int]:
        # Unknown names and out-of-range indices are errors rather than no-ops: a typo, or a folder that is
        # not the one the evaluation indices refer to, would otherwise leak evaluation masks into training.
        by_name = {p.name: i for i, p in enumerate(self.files)}
        resolved = set()
        for item in exclude:
            if isinstance(item, str):
                if item not in by_name:
                    raise ValueError(f"Excluded mask {item!r} is not a mask file of {self.root}.")
                resolved.add(by_name[item])
            else:
                index = int(item)
                if not 0 <= index < len(self.files):
                    raise ValueError(
                        f"Excluded mask index {index} is out of range for the {len(self.files)} files of {self.root}."
                    )
                resolved.add(index)
        return resolved

    def __len__(self) -> int:
        """Number of masks that can be sampled (excluded files not counted)."""
        return len(self.indices)

    def load(self, index: int) -> np.ndarray:
        """The unaugmented mask of file ``index`` of the sorted list, at its native ``(H, W)``, ``{0, 1}``.

        Read like every mask of the project (`prepare_mask`: white, above 127, is a hole).
        """
        return prepare_mask(self.files[index], max_pixels=None).astype(np.float32)

    def sample(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """An augmented mask of a random non-excluded file, ``float32`` ``(height, width)`` in ``{0, 1}``."""
        _check_size(height, width)
        mask = self.load(self.indices[int(rng.integers(len(self.indices)))]) > 0
        if self.rotate:
            mask = np.rot90(mask, k=int(rng.integers(4)))
        if self.flip:
            if rng.random() < 0.5:
                mask = mask[:, ::-1]
            if rng.random() < 0.5:
                mask = mask[::-1, :]
        src_h, src_w = mask.shape
        zoom = rng.uniform(*self.zoom_range)
        crop_h, crop_w = src_h / zoom, src_w / zoom
        top, left = rng.uniform(0, src_h - crop_h), rng.uniform(0, src_w - crop_w)
        image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8) * 255)
        image = image.resize((width, height), Image.Resampling.NEAREST, box=(left, top, left + crop_w, top + crop_h))
        return (np.asarray(image) > 127).astype(np.float32)


class ObjectShapes:
    """Holes shaped like the objects users remove: regions of human segmentations (BSDS500's 16-bit label maps).

    Sampling picks a label map uniformly, then one of its object regions (at most OBJECT_BORDER_FRACTION of the
    border, the evaluation's rule in `med_hf.evaluation.object_masks`), flips it horizontally with probability 1/2,
    resizes the whole map to the requested size with nearest neighbours (the object stays where it was in its
    photo) and dilates it by a random elliptical brush of 1-``max_dilation`` pixels, as a user's brush covers the
    object's edge. Train on the *train* segmentations only: the evaluation's object holes come from them too but
    lie on the *val* photos, which training never sees.

    Args:
        root: folder of ``<photo id>_<annotator>.png`` label maps.
        max_dilation: largest brush side in pixels of the requested size.
    """

    def __init__(self, root: str | os.PathLike[str], max_dilation: int = 9) -> None:
        from ..evaluation.object_masks import label_maps

        self.files = [path for paths in label_maps(root).values() for path in paths]
        if max_dilation < 1:
            raise ValueError(f"`max_dilation` must be at least 1, got {max_dilation}.")
        self.max_dilation = max_dilation

    def __len__(self) -> int:
        return len(self.files)

    def sample(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """An object-shaped hole, ``float32`` ``(height, width)`` in ``{0, 1}`` (all known if the map has no object;
        `MaskSampler` redraws such masks)."""
        from ..evaluation.object_masks import dilate, object_regions, read_labels

        _check_size(height, width)
        labels = read_labels(self.files[int(rng.integers(len(self.files)))])
        regions = object_regions(labels)
        if not regions:
            return np.zeros((height, width), np.float32)
        region = regions[int(rng.integers(len(regions)))]
        if rng.random() < 0.5:
            region = region[:, ::-1]
        image = Image.fromarray(np.ascontiguousarray(region, dtype=np.uint8) * 255)
        hole = np.asarray(image.resize((width, height), Image.Resampling.NEAREST)) > 127
        return dilate(hole, 2 * int(rng.integers(self.max_dilation // 2 + 1)) + 1).astype(np.float32)


class MaskSampler:
    """Mixes mask sources with fixed probabilities.

    Sources are ``"free_form"`` (``free_form_mask``), ``"box"`` (random ``box_mask``), ``"centre_box"``
    (``box_mask(centre=True)``), ``"folder"`` (``folder.sample``) and ``"objects"`` (``objects.sample``).
    Weights are normalised to probabilities. A sampled mask that is all known or all hole is redrawn from the same
    source (so the mix stays exact), at most ``max_tries`` times: such masks make the masked losses empty or the task
    void.

    Example::

        sampler = MaskSampler(
            {"free_form": 0.5, "box": 0.1, "folder": 0.4},
            folder=MaskFolder("masks/train", exclude=eval_mask_indices(num_val_images)),
        )
        mask = sampler.sample(256, 256, rng)

    Args:
        weights: non-negative weight per source name; missing sources get weight 0.
        folder: the ``MaskFolder`` of the ``"folder"`` source; required when its weight is positive.
        objects: the ``ObjectShapes`` of the ``"objects"`` source; required when its weight is positive.
        free_form_kwargs: keyword arguments for ``free_form_mask``.
        box_kwargs: keyword arguments for the random ``box_mask``.
        centre_scale: side of the ``"centre_box"`` hole as a fraction of the image side.
        max_tries: draws per sample before giving up on getting a mask with both holes and known pixels.
    """

    SOURCES = ("free_form", "box", "centre_box", "folder", "objects")

    def __init__(
        self,
        weights: Mapping[str, float],
        folder: MaskFolder | None = None,
        objects: ObjectShapes | None = None,
        *,
        free_form_kwargs: Mapping[str, Any] | None = None,
        box_kwargs: Mapping[str, Any] | None = None,
        centre_scale: float = 0.5,
        max_tries: int = 20,
    ) -> None:
        unknown = set(weights) - set(self.SOURCES)
        if unknown:
            raise ValueError(f"Unknown mask sources {sorted(unknown)}; expected some of {self.SOURCES}.")
        values = np.array([float(weights.get(name, 0.0)) for name in self.SOURCES])
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"Mask source weights must be finite and non-negative, got {dict(weights)}.")
        if values.sum() <= 0:
            raise ValueError(f"Mask source weights must have a positive sum, got {dict(weights)}.")
        if weights.get("folder", 0.0) > 0 and folder is None:
            raise ValueError("A positive 'folder' weight needs a `folder` (MaskFolder).")
        if weights.get("objects", 0.0) > 0 and objects is None:
            raise ValueError("A positive 'objects' weight needs `objects` (ObjectShapes).")
        if max_tries < 1:
            raise ValueError(f"`max_tries` must be at least 1, got {max_tries}.")
        self.probabilities = dict(zip(self.SOURCES, (values / values.sum()).tolist(), strict=True))
        self.folder = folder
        self.objects = objects
        self.free_form_kwargs = dict(free_form_kwargs or {})
        self.box_kwargs = dict(box_kwargs or {})
        self.centre_scale = centre_scale
        self.max_tries = max_tries

    def _draw(self, source: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        if source == "free_form":
            return free_form_mask(height, width, rng, **self.free_form_kwargs)
        if source == "box":
            return box_mask(height, width, rng, **self.box_kwargs)
        if source == "centre_box":
            return box_mask(height, width, rng, centre=True, scale=self.centre_scale)
        if source == "objects":
            return self.objects.sample(height, width, rng)
        return self.folder.sample(height, width, rng)

    def sample_with_source(self, height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """Like ``sample`` but also returns the name of the source the mask came from."""
        source = self.SOURCES[int(rng.choice(len(self.SOURCES), p=list(self.probabilities.values())))]
        for _ in range(self.max_tries):
            mask = self._draw(source, height, width, rng)
            if mask.any() and not mask.all():
                return mask, source
        raise RuntimeError(
            f"Source {source!r} gave only all-known or all-hole {height}x{width} masks in {self.max_tries} "
            "tries; check the mask files or the source parameters."
        )

    def sample(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """A mask from a random source: ``float32`` ``(height, width)`` in ``{0, 1}``, never uniform."""
        return self.sample_with_source(height, width, rng)[0]
