"""The evaluation protocol of the project: its images and masks, and the driver that scores methods per bucket.

The protocol (kept identical across the project's history so that numbers stay comparable):

1. Image: centre-crop to a square (side = shorter side), resize to 256x256 with PIL LANCZOS, RGB uint8.
2. Mask for image ``i`` (index in the sorted file list) in hole-ratio bucket ``b``: mask file
   ``b * 2000 + (i * 37) % 2000`` of the irregular-mask test set of Liu et al. 2018, resized to 256x256 with
   PIL NEAREST, hole = pixel > 127 (:func:`protocol_mask_names` names every file an evaluation uses, so that
   training can leave them out).
3. The method sees the image with its hole pixels blanked and the hole; its output is composited: known pixels
   come from the input, hole pixels from the method.
4. Metrics (:mod:`.metrics`) on the whole 256x256 composite against the original, averaged per bucket: PSNR,
   SSIM, L1, the texture metrics HF and SWD, and FID / LPIPS when their networks are given as local files.

Example::

    from med_hf.evaluation import CLASSICAL_BASELINES, evaluate_methods, list_images, protocol_image
    from med_hf.evaluation import markdown_table

    images = [protocol_image(path) for path in list_images("../shared/data/bsds500/val")]
    report = evaluate_methods(CLASSICAL_BASELINES, images, "../shared/data/masks/irregular")
    print(markdown_table(report))
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..image_files import IMAGE_EXTENSIONS
from ..image_processing_med import prepare_mask
from .baselines import is_classical
from .metrics import (
    METRIC_FUNCTIONS,
    PYRAMID_LEVELS,
    SWD_PATCH_DIM,
    detail_ratio,
    fid_features,
    fid_from_features,
    hole_detail,
    laplacian_pyramid,
    lpips_distances,
    patch_centres,
    swd_from_reference,
    swd_patches,
    swd_reference,
)
from .report import beats_summary, texture_summary

PROTOCOL_VERSION = "1"
PROTOCOL = {
    "version": PROTOCOL_VERSION,
    "image": "centre crop to a square (side = shorter side), PIL LANCZOS resize to 256x256, RGB uint8",
    "mask": "file b*2000 + (i*37) % 2000 for image i in bucket b, PIL NEAREST resize to 256x256, hole = pixel > 127",
    "composite": "known pixels from the input, hole pixels from the method; methods never see hole pixels",
    "metrics": "on the whole 256x256 composite: PSNR (peak 255, float64 MSE), SSIM (skimage, data_range=255, "
    "channel_axis=2), L1 = mean |diff| / 255 * 100; mean and population std over images per bucket",
    "texture": "Laplacian pyramid (binomial [1,4,6,4,1]/16, reflect, levels 0-2) of the [0,1] float64 composite; "
    "HF = mean |level 0| over the hole / same for the original, per image (skipped if <= 1e-6), mean and std; "
    "SWD = sliced Wasserstein distance x1000 of <= 64 7x7x3 patches per image and level at hole pixels "
    "(rng(i*7+level)), normalised by the originals' mean/std, 256 directions from rng(bucket), 200 quantiles, "
    "mean over levels 0-2, one value per bucket",
}
IMAGE_SIZE = 256
NUM_BUCKETS = 6
MASKS_PER_BUCKET = 2000
MASK_STRIDE = 37
METRICS = ("psnr", "ssim", "l1")

InpaintFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``fn(image, hole) -> result``: uint8 RGB (256, 256, 3) with blanked holes, bool (256, 256) hole mask,
returns uint8 RGB (256, 256, 3). Only the hole pixels of the result are used."""


@runtime_checkable
class BatchedInpaintFn(Protocol):
    """An :data:`InpaintFn` that can also run a stack of images at once (learned models)."""

    batch_size: int

    def __call__(self, image: np.ndarray, hole: np.ndarray) -> np.ndarray: ...

    def batch(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        """uint8 (N, 256, 256, 3) and bool (N, 256, 256) -> uint8 (N, 256, 256, 3)."""
        ...


# --------------------------------------------------------------------------------------------- data


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files of ``folder`` sorted by name: the index in this list is the protocol's image index."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder {str(folder)!r} does not exist or is not a folder.")
    paths = sorted((path for path in folder.iterdir() if path.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: p.name)
    if not paths:
        raise FileNotFoundError(f"Image folder {str(folder)!r} holds no image ({', '.join(IMAGE_EXTENSIONS)} files).")
    return paths


def preprocess_image(image: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """Centre-crop ``image`` to a square and resize it with LANCZOS: uint8 RGB (size, size, 3)."""
    image = image.convert("RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def protocol_image(path: str | os.PathLike, size: int = IMAGE_SIZE) -> np.ndarray:
    """Read an image file and apply :func:`preprocess_image`: uint8 RGB (size, size, 3)."""
    with Image.open(path) as image:
        return preprocess_image(image, size)


def protocol_mask_name(image_index: int, bucket: int) -> str:
    """File name of the mask paired with image ``image_index`` in hole-ratio bucket ``bucket`` (e.g. ``00037.png``).

    The one owner of the protocol's mask choice: evaluation opens these files, and training leaves them out
    (:func:`protocol_mask_names`).
    """
    if not 0 <= bucket < NUM_BUCKETS:
        raise ValueError(f"bucket must be in [0, {NUM_BUCKETS}), got {bucket}.")
    if image_index < 0:
        raise ValueError(f"image_index must be >= 0, got {image_index}.")
    return f"{bucket * MASKS_PER_BUCKET + (image_index * MASK_STRIDE) % MASKS_PER_BUCKET:05d}.png"


def protocol_mask_names(num_images: int, buckets: Iterable[int] = range(NUM_BUCKETS)) -> list[str]:
    """Sorted names of every mask file an evaluation of ``num_images`` images uses (pass them to training's
    ``MaskFolder(exclude=...)`` so that training never sees an evaluation mask)."""
    buckets = list(buckets)  # iterated once per image, so a one-shot iterator would not do
    return sorted({protocol_mask_name(index, bucket) for index in range(num_images) for bucket in buckets})


def mask_path(mask_dir: str | os.PathLike, image_index: int, bucket: int) -> Path:
    """Path of the protocol mask file (``00000.png`` … ``11999.png``) for an image and a bucket."""
    path = Path(mask_dir) / protocol_mask_name(image_index, bucket)
    if not path.is_file():
        raise FileNotFoundError(
            f"Mask file {str(path)!r} is missing: the mask folder must hold the 12,000 irregular test masks "
            "00000.png … 11999.png of Liu et al. 2018 (sorted by hole ratio, white = hole)."
        )
    return path


def protocol_mask(path: str | os.PathLike, size: int = IMAGE_SIZE) -> np.ndarray:
    """Read a mask file (white = hole, see `prepare_mask`) and resize it with NEAREST: bool (size, size)."""
    hole = prepare_mask(path, max_pixels=None)
    return np.asarray(Image.fromarray(hole).resize((size, size), Image.Resampling.NEAREST))


class MaskSet(Protocol):
    """Where an evaluation's holes come from: one bool (256, 256) hole per (image index, bucket)."""

    buckets: Sequence[int]
    description: str

    def hole(self, image_index: int, bucket: int) -> np.ndarray: ...


class IrregularMasks:
    """The protocol's irregular-hole set (step 2 above): the test masks of Liu et al. 2018 in ``mask_dir``."""

    buckets = tuple(range(NUM_BUCKETS))
    description = PROTOCOL["mask"]

    def __init__(self, mask_dir: str | os.PathLike) -> None:
        self.mask_dir = Path(mask_dir)

    def check(self, num_images: int, buckets: Iterable[int]) -> None:
        """Raise FileNotFoundError now if a mask the evaluation will need is missing (not after an hour)."""
        for index in range(num_images):
            for bucket in buckets:
                mask_path(self.mask_dir, index, bucket)

    def hole(self, image_index: int, bucket: int) -> np.ndarray:
        return protocol_mask(mask_path(self.mask_dir, image_index, bucket))


def as_mask_set(masks: MaskSet | str | os.PathLike) -> MaskSet:
    """A mask set as given, or the irregular set of a mask folder."""
    return IrregularMasks(masks) if isinstance(masks, str | os.PathLike) else masks


def bucket_label(bucket: int) -> str:
    """Hole-ratio range of a bucket as written in the protocol's tables, e.g. ``"10-20 %"``."""
    return f"{bucket * 10}-{bucket * 10 + 10} %"


# ----------------------------------------------------------------------------- what a method sees


def masked_input(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The image a method sees: hole pixels set to 0 so that no method can read the ground truth there."""
    return np.where(hole[..., None], np.uint8(0), image)


def keep_known(image: np.ndarray, result: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Known pixels from ``image``, hole pixels from ``result``."""
    return np.where(hole[..., None], result, image)


# ------------------------------------------------------------------------------------------- driver


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std())}


def _run(fn: InpaintFn, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
    if isinstance(fn, BatchedInpaintFn):
        return fn.batch(images, holes)
    return np.stack([fn(image, hole) for image, hole in zip(images, holes, strict=True)])


def evaluate_methods(
    methods: Mapping[str, InpaintFn],
    images: Sequence[np.ndarray],
    masks: MaskSet | str | os.PathLike,
    buckets: Iterable[int] | None = None,
    progress: bool = True,
    fid_extractor: torch.nn.Module | None = None,
    lpips_model: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Run every method on every (image, bucket) pair of the protocol and average the metrics per bucket.

    Args:
        methods: name -> :data:`InpaintFn`. The functions of :data:`CLASSICAL_BASELINES` count as classical,
            all others as learned methods (they enter the ``"beats"`` summary).
        images: preprocessed uint8 RGB (256, 256, 3) images (see :func:`protocol_image`) in protocol order: the
            position in the sequence selects the masks.
        masks: the holes (:class:`IrregularMasks`, the object set of :mod:`.object_masks`), or a folder of the
            irregular test masks ``00000.png`` … ``11999.png``.
        buckets: hole-ratio buckets to evaluate (0 = 0-10 % holes … 5 = 50-60 %); default: all of the set's.
        progress: show a progress bar over images.
        fid_extractor: optional network mapping (B, 3, 299, 299) in [0, 1] to (B, D) features.
        lpips_model: optional network mapping two (B, 3, H, W) batches in [-1, 1] to B distances.

    Returns:
        A JSON-serialisable report: ``buckets`` (label and hole-ratio mean/std), ``methods`` (per method its
        ``kind``, ``seconds``, ``ms_per_inpainting`` and per bucket ``{metric: {"mean", "std"}}`` for PSNR,
        SSIM, L1, HF and LPIPS, and the bucket's single ``"swd"`` and ``"fid"`` values; LPIPS and FID are
        ``None`` when not computed, HF's mean/std are ``None`` when every image was skipped and SWD is
        ``None`` when a pyramid level has no patch), ``perceptual`` (whether FID/LPIPS were computed and why
        not), ``beats`` (:func:`beats_summary`) and ``texture`` (:func:`texture_summary`).

    HF and SWD (:func:`high_frequency_ratio`, :func:`sliced_wasserstein_distance`) need no network. The
    patches kept for SWD are bounded: at most 64 per image and pyramid level, 147 float64 values each, for
    the ground truth once and for every method (about 22 MB per method and bucket for 100 images).
    """
    masks = as_mask_set(masks)
    buckets = list(masks.buckets if buckets is None else buckets)
    if not methods:
        raise ValueError("No method to evaluate.")
    if not images:
        raise ValueError("No image to evaluate.")
    work = [(index, bucket) for index in range(len(images)) for bucket in buckets]
    chunk = max([fn.batch_size for fn in methods.values() if isinstance(fn, BatchedInpaintFn)], default=1)

    hole_ratios: dict[int, list[float]] = {bucket: [] for bucket in buckets}
    values = {name: {b: {metric: [] for metric in (*METRICS, "hf", "lpips")} for b in buckets} for name in methods}
    # SWD patches per bucket and pyramid level: the ground truth's once, each method's composites.
    target_patches: dict[int, list[list[np.ndarray]]] = {b: [[] for _ in range(PYRAMID_LEVELS)] for b in buckets}
    method_patches = {name: {b: [[] for _ in range(PYRAMID_LEVELS)] for b in buckets} for name in methods}
    target_pyramid: tuple[int, list[np.ndarray]] | None = None  # of the last image: shared by its buckets
    seconds = dict.fromkeys(methods, 0.0)
    real_features: list[np.ndarray] = []
    fake_features = {name: {bucket: [] for bucket in buckets} for name in methods}

    bar = tqdm(total=len(images), desc="Evaluating", unit="image", disable=not progress)
    for start in range(0, len(work), chunk):
        items = work[start : start + chunk]
        targets = np.stack([images[index] for index, _ in items])
        if targets.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3) or targets.dtype != np.uint8:
            raise ValueError(
                f"Images must be uint8 ({IMAGE_SIZE}, {IMAGE_SIZE}, 3) (see protocol_image), got {targets.dtype} "
                f"{targets.shape[1:]}."
            )
        holes = np.stack([masks.hole(index, bucket) for index, bucket in items])
        inputs = np.stack([masked_input(target, hole) for target, hole in zip(targets, holes, strict=True)])
        for (_, bucket), hole in zip(items, holes, strict=True):
            hole_ratios[bucket].append(float(hole.mean()))
        centres, target_details = [], []
        for k, (index, bucket) in enumerate(items):
            if target_pyramid is None or target_pyramid[0] != index:
                target_pyramid = (index, laplacian_pyramid(targets[k]))
            centres.append(patch_centres(holes[k], index))
            target_details.append(hole_detail(target_pyramid[1][0], holes[k]))
            for level, patches in enumerate(swd_patches(target_pyramid[1], centres[k])):
                target_patches[bucket][level].append(patches)
        if fid_extractor is not None:
            first_of_image = [k for k, (_, bucket) in enumerate(items) if bucket == buckets[0]]
            if first_of_image:
                real_features.append(fid_features(fid_extractor, targets[first_of_image]))

        for name, fn in methods.items():
            tic = time.perf_counter()
            results = _run(fn, inputs, holes)
            seconds[name] += time.perf_counter() - tic
            if results.shape != targets.shape or results.dtype != np.uint8:
                raise ValueError(
                    f"Method {name!r} returned {results.dtype} {results.shape[1:]}, expected uint8 {targets.shape[1:]}."
                )
            composites = keep_known(targets, results, holes)
            lpips_values = lpips_distances(lpips_model, composites, targets) if lpips_model is not None else None
            features = fid_features(fid_extractor, composites) if fid_extractor is not None else None
            for k, (_, bucket) in enumerate(items):
                for metric, metric_fn in METRIC_FUNCTIONS.items():
                    values[name][bucket][metric].append(metric_fn(composites[k], targets[k]))
                pyramid = laplacian_pyramid(composites[k])
                ratio = detail_ratio(hole_detail(pyramid[0], holes[k]), target_details[k])
                if ratio is not None:
                    values[name][bucket]["hf"].append(ratio)
                for level, patches in enumerate(swd_patches(pyramid, centres[k])):
                    method_patches[name][bucket][level].append(patches)
                if lpips_values is not None:
                    values[name][bucket]["lpips"].append(float(lpips_values[k]))
                if features is not None:
                    fake_features[name][bucket].append(features[k])
        bar.update((start + len(items)) // len(buckets) - bar.n)
    bar.close()

    real = np.concatenate(real_features) if real_features else None
    swd_references = {
        bucket: swd_reference([_stack_patches(level) for level in target_patches[bucket]], bucket) for bucket in buckets
    }

    def swd(name: str, bucket: int) -> float | None:
        if swd_references[bucket] is None:
            return None
        patches = [_stack_patches(level) for level in method_patches[name][bucket]]
        return swd_from_reference(swd_references[bucket], patches)

    def bucket_entry(name: str, bucket: int) -> dict[str, Any]:
        entry: dict[str, Any] = {metric: _mean_std(values[name][bucket][metric]) for metric in METRICS}
        hf = values[name][bucket]["hf"]
        entry["hf"] = _mean_std(hf) if hf else {"mean": None, "std": None}
        entry["swd"] = swd(name, bucket)
        entry["lpips"] = _mean_std(values[name][bucket]["lpips"]) if lpips_model is not None else None
        entry["fid"] = fid_from_features(real, np.stack(fake_features[name][bucket])) if real is not None else None
        return entry

    report: dict[str, Any] = {
        "protocol": {**PROTOCOL, "mask": masks.description},
        "num_images": len(images),
        "buckets": [
            {"bucket": bucket, "label": bucket_label(bucket), "hole_ratio": _mean_std(hole_ratios[bucket])}
            for bucket in buckets
        ],
        "methods": {
            name: {
                "kind": "classical" if is_classical(fn) else "learned",
                "seconds": seconds[name],
                "ms_per_inpainting": 1000.0 * seconds[name] / len(work),
                "buckets": [bucket_entry(name, bucket) for bucket in buckets],
            }
            for name, fn in methods.items()
        },
        "perceptual": {
            "fid": _perceptual_status(fid_extractor, "FID feature extractor (Inception-v3 pool features)"),
            "lpips": _perceptual_status(lpips_model, "LPIPS network"),
        },
    }
    report["beats"] = beats_summary(report)
    report["texture"] = texture_summary(report)
    return report


def _stack_patches(patches: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(patches) if patches else np.zeros((0, SWD_PATCH_DIM))


def _perceptual_status(module: torch.nn.Module | None, what: str) -> dict[str, Any]:
    if module is not None:
        return {"computed": True, "reason": None}
    return {
        "computed": False,
        "reason": f"no {what} given: its weights are never downloaded, pass a local TorchScript file.",
    }
