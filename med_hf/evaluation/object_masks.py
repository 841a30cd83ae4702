"""Object-shaped holes from human segmentations: what a user paints when removing an object.

The irregular masks of the protocol are brush strokes; these sets are built from the BSDS500 human
segmentations (16-bit label maps, one region per label, ``<photo id>_<annotator>.png``):

- :class:`ObjectMasks`, holes with ground truth: every object region of the *train* label maps, cropped and
  resized like the protocol's images, dilated by a brush, bucketed by hole ratio, and laid on the *val* photos
  (so the photo under the hole is known);
- :func:`own_object`, a real removal: one of a photo's *own* objects, at the photo's own size (no ground truth).

A region is an *object* when at most OBJECT_BORDER_FRACTION of the image border belongs to it (the sky or the
ground touch much of the border; a person, a boat or a rock touch little of it).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .protocol import IMAGE_SIZE, MASK_STRIDE, bucket_label

OBJECT_BORDER_FRACTION = 0.08
# The brush covering the object's edge: a 9x9 ellipse on the 256x256 protocol images.
OBJECT_DILATION = 9
OBJECT_BUCKETS = (0, 1, 2)
# Annotator choice (one label map per train photo) and the fixed order of each bucket's masks.
OBJECT_SEED = 7
# Real removals: an object of 3-15 % of the photo, dilated 6 px at the photo's own size.
REMOVAL_RATIO = (0.03, 0.15)
REMOVAL_DILATION = 6


def label_maps(folder: str | os.PathLike) -> dict[str, list[Path]]:
    """Photo id -> its annotators' label-map files (sorted), for a folder of ``<id>_<annotator>.png``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Segmentation folder {str(folder)!r} does not exist or is not a folder.")
    maps: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*_*.png")):
        maps.setdefault(path.stem.rsplit("_", 1)[0], []).append(path)
    if not maps:
        raise FileNotFoundError(f"Segmentation folder {str(folder)!r} holds no <photo id>_<annotator>.png file.")
    return maps


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """A label map as int32 (h, w)."""
    with Image.open(path) as image:
        return np.asarray(image, dtype=np.int32)


def object_regions(labels: np.ndarray) -> list[np.ndarray]:
    """Bool masks of the regions of ``labels`` that are objects (at most OBJECT_BORDER_FRACTION of the border),
    in label order."""
    border = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    regions = []
    for label in np.unique(labels):
        if np.count_nonzero(border == label) <= OBJECT_BORDER_FRACTION * border.size:
            regions.append(labels == label)
    return regions


def dilate(region: np.ndarray, size: int) -> np.ndarray:
    """``region`` grown by an elliptical ``size`` x ``size`` brush."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.dilate(region.astype(np.uint8), kernel).astype(bool)


def protocol_labels(labels: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Centre-crop a label map to a square and resize it with nearest neighbours, as the protocol's images."""
    height, width = labels.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    # int32 is the widest integer mode PIL resizes (BSDS500's labels are 16-bit).
    square = Image.fromarray(np.ascontiguousarray(labels[top : top + side, left : left + side], dtype=np.int32))
    return np.asarray(square.resize((size, size), Image.Resampling.NEAREST))


class ObjectMasks:
    """The object-hole set: shapes of the train segmentations for the val photos, buckets 0-10/10-20/20-30 %.

    One annotator per train photo (drawn with ``default_rng(OBJECT_SEED)`` in photo-id order); every object
    region of that map, dilated by the OBJECT_DILATION brush, goes to the bucket of its hole ratio (above 30 %:
    dropped). Each bucket's masks are shuffled once (``default_rng(OBJECT_SEED + 1 + bucket)``), and photo ``i``
    gets mask ``(i * MASK_STRIDE) % n`` of its bucket, as the irregular set pairs its files.
    """

    buckets = OBJECT_BUCKETS
    description = (
        "object shapes from the train segmentations (one annotator per photo, rng 7; regions touching <= 8 % of "
        "the border; centre crop, NEAREST 256x256, 9x9 ellipse dilation), bucket by hole ratio, shuffled once, "
        "mask (i*37) % n for image i"
    )

    def __init__(self, segmentation_dir: str | os.PathLike, size: int = IMAGE_SIZE) -> None:
        self.size = size
        rng = np.random.default_rng(OBJECT_SEED)
        by_bucket: dict[int, list[np.ndarray]] = {bucket: [] for bucket in self.buckets}
        for files in label_maps(segmentation_dir).values():
            labels = protocol_labels(read_labels(files[int(rng.integers(len(files)))]), size)
            for region in object_regions(labels):
                hole = dilate(region, OBJECT_DILATION)
                bucket = int(np.ceil(hole.mean() * 10)) - 1
                if bucket in by_bucket:
                    by_bucket[bucket].append(hole)
        self._masks = {}
        for bucket, holes in by_bucket.items():
            if not holes:
                raise ValueError(f"no object shape of {bucket_label(bucket)} holes in {str(segmentation_dir)!r}")
            order = np.random.default_rng(OBJECT_SEED + 1 + bucket).permutation(len(holes))
            self._masks[bucket] = [holes[k] for k in order]

    def counts(self) -> dict[int, int]:
        """How many shapes each bucket holds."""
        return {bucket: len(holes) for bucket, holes in self._masks.items()}

    def hole(self, image_index: int, bucket: int) -> np.ndarray:
        """Bool (size, size) hole of image ``image_index`` in ``bucket``."""
        holes = self._masks[bucket]
        return holes[(image_index * MASK_STRIDE) % len(holes)]


def own_object(segmentation_dir: str | os.PathLike, photo_id: str) -> np.ndarray | None:
    """A real removal's hole at the photo's own size: the largest object region (any annotator's, first
    annotator first) covering REMOVAL_RATIO of the photo, dilated REMOVAL_DILATION px; None if it has none."""
    files = label_maps(segmentation_dir).get(photo_id, [])
    low, high = REMOVAL_RATIO
    for path in files:
        regions = [region for region in object_regions(read_labels(path)) if low <= region.mean() <= high]
        if regions:
            largest = max(regions, key=np.count_nonzero)
            return dilate(largest, 2 * REMOVAL_DILATION + 1)
    return None
