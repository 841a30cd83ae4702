"""Evaluation protocol of the project: classical baselines, metrics and a per-bucket driver.

The protocol (kept identical across the project's history so that numbers stay comparable):

1. Image: centre-crop to a square (side = shorter side), resize to 256x256 with PIL LANCZOS, RGB uint8.
2. Mask for image ``i`` (index in the sorted file list) in hole-ratio bucket ``b``: mask file
   ``b * 2000 + (i * 37) % 2000`` of the irregular-mask test set of Liu et al. 2018, resized to 256x256 with
   PIL NEAREST, hole = pixel > 127.
3. The method sees the image with its hole pixels blanked and the hole; its output is composited: known pixels
   come from the input, hole pixels from the method.
4. PSNR (peak 255, float64 MSE), SSIM (scikit-image, ``data_range=255, channel_axis=2``) and L1 (mean absolute
   difference in % of 255) on the whole 256x256 composite against the original, averaged per bucket.
   Texture, with no network: HF (:func:`high_frequency_ratio`, the finest Laplacian-pyramid level's energy in
   the hole relative to the original's, averaged per bucket; 1 = the photo's own detail, a smooth fill is far
   below) and SWD (:func:`sliced_wasserstein_distance`, the sliced Wasserstein distance x 1000 between the
   7x7 patch statistics of the composites and of the originals in the holes, one value per bucket; lower is
   better). See the protocol's "Texture metrics".
   FID and LPIPS only with network weights given as local TorchScript files: nothing is ever downloaded.

Example::

    from med_hf.evaluation import CLASSICAL_BASELINES, evaluate_methods, list_images, load_image
    from med_hf.evaluation import markdown_table

    images = [load_image(path) for path in list_images("../shared/data/bsds500/val")]
    report = evaluate_methods(CLASSICAL_BASELINES, images, "../shared/data/masks/irregular")
    print(markdown_table(report))
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.linalg
import scipy.ndimage
import torch
from PIL import Image
from tqdm.auto import tqdm

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
INPAINT_RADIUS = 3
# Inception-v3 resolution expected by FID feature extractors.
FID_IMAGE_SIZE = 299
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
METRICS = ("psnr", "ssim", "l1")
# The metrics that a learned method has to match or exceed against every classical baseline.
BEATS_METRICS = ("psnr", "ssim")

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


def load_image(path: str | os.PathLike, size: int = IMAGE_SIZE) -> np.ndarray:
    """Read an image file and apply :func:`preprocess_image`."""
    with Image.open(path) as image:
        return preprocess_image(image, size)


def mask_index(image_index: int, bucket: int) -> int:
    """Index of the mask file used for image ``image_index`` in hole-ratio bucket ``bucket``."""
    if not 0 <= bucket < NUM_BUCKETS:
        raise ValueError(f"bucket must be in [0, {NUM_BUCKETS}), got {bucket}.")
    return bucket * MASKS_PER_BUCKET + (image_index * MASK_STRIDE) % MASKS_PER_BUCKET


def mask_path(mask_dir: str | os.PathLike, image_index: int, bucket: int) -> Path:
    """Path of the protocol mask file (``00000.png`` … ``11999.png``) for an image and a bucket."""
    path = Path(mask_dir) / f"{mask_index(image_index, bucket):05d}.png"
    if not path.is_file():
        raise FileNotFoundError(
            f"Mask file {str(path)!r} is missing: the mask folder must hold the 12,000 irregular test masks "
            "00000.png … 11999.png of Liu et al. 2018 (sorted by hole ratio, white = hole)."
        )
    return path


def load_mask(path: str | os.PathLike, size: int = IMAGE_SIZE) -> np.ndarray:
    """Read a mask file (white = hole), resize it with NEAREST: bool (size, size), True = hole."""
    with Image.open(path) as mask:
        mask = mask.convert("L").resize((size, size), Image.Resampling.NEAREST)
        return np.asarray(mask) > 127


def bucket_label(bucket: int) -> str:
    """Hole-ratio range of a bucket as written in the protocol's tables, e.g. ``"10-20 %"``."""
    return f"{bucket * 10}-{bucket * 10 + 10} %"


# ------------------------------------------------------------------------------------------ metrics


def psnr(result: np.ndarray, target: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for uint8 images (peak 255, MSE in float64); ``inf`` if identical."""
    mse = np.mean((result.astype(np.float64) - target.astype(np.float64)) ** 2)
    if mse == 0:
        return math.inf
    return float(10.0 * np.log10(255.0**2 / mse))


def ssim(result: np.ndarray, target: np.ndarray) -> float:
    """Structural similarity of two uint8 RGB images (scikit-image defaults, data range 255)."""
    from skimage.metrics import structural_similarity  # imported here: evaluation reports load without it

    return float(structural_similarity(result, target, data_range=255, channel_axis=2))


def l1_percent(result: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images in percent of 255."""
    return float(np.mean(np.abs(result.astype(np.float64) - target.astype(np.float64))) / 255.0 * 100.0)


METRIC_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "psnr": psnr,
    "ssim": ssim,
    "l1": l1_percent,
}


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2))``. With fewer samples than feature
    dimensions the covariances are singular and ``sqrtm`` may fail: both are then regularised by ``eps * I``.
    Round-off gives the matrix square root small imaginary parts, which are dropped; large ones mean the
    result is meaningless and raise an error.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("Both Gaussians must have the same dimension.")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # A singular product is expected with few samples; it is handled below.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        max_imaginary = np.max(np.abs(np.diagonal(covmean).imag))
        if max_imaginary > 1e-3:
            raise ValueError(f"Matrix square root has a large imaginary component ({max_imaginary:.3g}).")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two feature sets of shape (N, D) (e.g. Inception pool features, D = 2048)."""
    if len(real) < 2 or len(fake) < 2:
        raise ValueError("FID needs at least two images per set.")
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    return frechet_distance(
        real.mean(axis=0), np.cov(real, rowvar=False), fake.mean(axis=0), np.cov(fake, rowvar=False)
    )


def load_torchscript(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load a local TorchScript module (FID feature extractor or LPIPS network) in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TorchScript file {str(path)!r} does not exist.")
    with warnings.catch_warnings():
        # torch >= 2.10 marks TorchScript as deprecated; it remains the portable format for these networks.
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location=device)
    return module.eval()


def _module_device(module: torch.nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0


@torch.inference_mode()
def fid_features(extractor: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """Features (N, D) of uint8 RGB images (N, H, W, 3); the extractor takes (N, 3, 299, 299) in [0, 1]."""
    x = _to_tensor(images, _module_device(extractor))
    # Bilinear resizing to 299 is what pytorch-fid's Inception wrapper does with 256x256 inputs.
    x = torch.nn.functional.interpolate(x, size=(FID_IMAGE_SIZE, FID_IMAGE_SIZE), mode="bilinear")
    features = extractor(x)
    return features.reshape(len(images), -1).double().cpu().numpy()


@torch.inference_mode()
def lpips_distances(lpips_model: torch.nn.Module, results: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-image LPIPS distances (N,) of uint8 RGB images, fed to the network in [-1, 1]."""
    device = _module_device(lpips_model)
    distances = lpips_model(_to_tensor(results, device) * 2 - 1, _to_tensor(targets, device) * 2 - 1)
    if distances.numel() != len(results):
        raise ValueError(f"LPIPS model returned {distances.numel()} values for {len(results)} image pairs.")
    return distances.reshape(-1).double().cpu().numpy()


# ---------------------------------------------------------------------------------- texture metrics

# HF and SWD: does the hole carry the photo's texture? No pretrained network is involved.
PYRAMID_KERNEL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
PYRAMID_LEVELS = 3
# Images whose ground truth has no more fine detail than this in the hole are left out of HF.
HF_MIN_TARGET = 1e-6
SWD_PATCH_SIZE = 7
SWD_PATCH_RADIUS = SWD_PATCH_SIZE // 2
SWD_PATCH_DIM = SWD_PATCH_SIZE * SWD_PATCH_SIZE * 3
SWD_PATCHES_PER_IMAGE = 64
SWD_DIRECTIONS = 256
SWD_QUANTILES = 200
SWD_SCALE = 1000.0
SWD_STD_EPS = 1e-8


def _unit_float(image: np.ndarray) -> np.ndarray:
    """uint8 0..255 -> float64 in [0, 1]; a float image is taken to be in [0, 1] already."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"Expected a uint8 or float image, got dtype {image.dtype}.")
    return image.astype(np.float64)


def binomial_blur(image: np.ndarray) -> np.ndarray:
    """The pyramid's low-pass filter: ``[1, 4, 6, 4, 1] / 16`` along the rows, then along the columns.

    Borders are mirrored including the edge pixel (``d c b a | a b c d``: scipy's ``mode="reflect"``,
    OpenCV's ``BORDER_REFLECT``). ``image`` is float (H, W) or (H, W, C); the result is float64 of the same
    shape. OpenCV's ``sepFilter2D`` computes it when OpenCV is installed (about 5x faster than scipy); the
    protocol's ``scipy.ndimage.convolve1d`` otherwise. The two agree to one unit in the last place (tested).
    """
    image = np.ascontiguousarray(image, dtype=np.float64)
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None and image.ndim in (2, 3) and (image.ndim == 2 or image.shape[2] <= 4):
        blurred = cv2.sepFilter2D(image, cv2.CV_64F, PYRAMID_KERNEL, PYRAMID_KERNEL, borderType=cv2.BORDER_REFLECT)
        return blurred.reshape(image.shape)
    return _binomial_blur_scipy(image)


def _binomial_blur_scipy(image: np.ndarray) -> np.ndarray:
    """:func:`binomial_blur` exactly as the protocol writes it (``scipy.ndimage.convolve1d``)."""
    blurred = scipy.ndimage.convolve1d(image, PYRAMID_KERNEL, axis=1, mode="reflect")
    return scipy.ndimage.convolve1d(blurred, PYRAMID_KERNEL, axis=0, mode="reflect")


def laplacian_pyramid(image: np.ndarray, levels: int = PYRAMID_LEVELS) -> list[np.ndarray]:
    """Band-pass levels of the Laplacian pyramid of an RGB image, finest first.

    ``cur`` starts as the image in float64 ``[0, 1]`` (uint8 is divided by 255); then for each level
    ``low = binomial_blur(cur)``, ``level = cur - low`` and ``cur = low[::2, ::2]``. Level ``k`` therefore has
    the size of the image subsampled ``2**k`` times, (``ceil(H / 2**k)``, ``ceil(W / 2**k)``, C). The low-pass
    residual is not returned: the texture metrics only use the band-pass levels. Exact properties: a level
    is ``cur - binomial_blur(cur)`` of the subsampled low-pass image, every level of a constant image is 0,
    and every level sums to 0 per channel (the mirrored binomial blur preserves the sum).
    """
    current = _unit_float(image)
    pyramid = []
    for _ in range(levels):
        low = binomial_blur(current)
        pyramid.append(current - low)
        current = low[::2, ::2]
    return pyramid


def _hole_detail(level0: np.ndarray, hole: np.ndarray) -> float | None:
    """Mean |level 0| over the hole pixels (all channels); ``None`` for an empty hole."""
    if not hole.any():
        return None
    return float(np.abs(level0[hole]).mean())


def _detail_ratio(composite_detail: float | None, target_detail: float | None) -> float | None:
    if composite_detail is None or target_detail is None or target_detail <= HF_MIN_TARGET:
        return None
    return composite_detail / target_detail


def high_frequency_ratio(composite: np.ndarray, target: np.ndarray, hole: np.ndarray) -> float | None:
    """HF of one image: the fine detail of the composite in the hole relative to the photo's own.

    Mean |level 0| of :func:`laplacian_pyramid` of ``composite`` over the hole pixels (all channels), divided
    by the same for ``target``. 1 = as much fine detail as the photo; a smooth fill is far below 1, noise
    above 1. ``None`` when the hole is empty or the target's value is <= 1e-6 (such images are skipped when
    averaging). Images are uint8 or float in ``[0, 1]``, (H, W, 3); ``hole`` is bool (H, W).
    """
    hole = np.asarray(hole, dtype=bool)
    composite_detail = _hole_detail(laplacian_pyramid(composite, 1)[0], hole)
    return _detail_ratio(composite_detail, _hole_detail(laplacian_pyramid(target, 1)[0], hole))


def patch_centres(hole: np.ndarray, image_index: int, levels: int = PYRAMID_LEVELS) -> list[np.ndarray]:
    """Centres of the SWD patches of one image, per pyramid level: int arrays (n, 2) of (row, column).

    At level ``k`` the hole is subsampled like the pyramid (``hole[::2**k, ::2**k]``); candidates are its hole
    pixels at least 3 pixels from the level's border (so that the 7x7 patch fits), in row-major order.
    ``numpy.random.default_rng(image_index * 7 + k).choice(count, min(64, count), replace=False)`` picks
    which ones. ``image_index`` is the protocol's image index (position in the sorted file list). The same
    centres serve the composite and the ground truth.
    """
    hole = np.asarray(hole, dtype=bool)
    centres = []
    for level in range(levels):
        sub = hole[:: 2**level, :: 2**level]
        valid = np.zeros_like(sub)
        r = SWD_PATCH_RADIUS
        valid[r : sub.shape[0] - r, r : sub.shape[1] - r] = sub[r : sub.shape[0] - r, r : sub.shape[1] - r]
        candidates = np.argwhere(valid)
        rng = np.random.default_rng(image_index * 7 + level)
        chosen = rng.choice(len(candidates), size=min(SWD_PATCHES_PER_IMAGE, len(candidates)), replace=False)
        centres.append(candidates[chosen])
    return centres


_PATCH_OFFSETS = np.arange(-SWD_PATCH_RADIUS, SWD_PATCH_RADIUS + 1)


def swd_patches(pyramid: Sequence[np.ndarray], centres: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The 7x7x3 patches of each pyramid level at ``centres`` (from :func:`patch_centres`).

    Returns per level a float64 array (n, 147): each patch flattened in (row, column, channel) order.
    """
    patches = []
    for level, level_centres in zip(pyramid, centres, strict=True):
        rows = level_centres[:, 0, None, None] + _PATCH_OFFSETS[None, :, None]
        cols = level_centres[:, 1, None, None] + _PATCH_OFFSETS[None, None, :]
        patches.append(level[rows, cols].reshape(len(level_centres), -1))
    return patches


def _row_quantiles(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """``numpy.quantile(values, quantiles, axis=1).T`` (linear method) for a (rows, n) array, sorting in place.

    One sort per row instead of NumPy's partition around 400 indices: about twice as fast, and the same
    values (NumPy's interpolation formula, tested bit for bit).
    """
    values.sort(axis=1)
    virtual = (values.shape[1] - 1) * quantiles
    previous = np.floor(virtual)
    gamma = virtual - previous
    previous = previous.astype(np.intp)
    following = np.minimum(previous + 1, values.shape[1] - 1)
    previous[virtual >= values.shape[1] - 1] = values.shape[1] - 1
    low, high = values[:, previous], values[:, following]
    difference = high - low
    return np.where(gamma >= 0.5, high - difference * (1 - gamma), low + difference * gamma)


def _project(patches: np.ndarray, level: Mapping[str, np.ndarray]) -> np.ndarray:
    """Normalised patches (n, 147) projected on the level's directions, as a C-contiguous (256, n) array."""
    return level["directions"].T @ ((patches - level["mean"]) / level["std"]).T


def _swd_reference(target_patches: Sequence[np.ndarray], bucket: int) -> list[dict[str, np.ndarray]] | None:
    """Per level: the ground truth's normalisation, the random directions and its projected quantiles.

    Everything SWD needs from the ground-truth set, computed once and shared by all the methods of a bucket.
    ``None`` when a level has no patch at all.
    """
    generator = np.random.default_rng(bucket)
    quantiles = np.linspace(0.0, 1.0, SWD_QUANTILES)
    reference = []
    for patches in target_patches:
        # Drawn for every level, even an empty one, so that the directions of later levels do not move.
        directions = generator.standard_normal((SWD_PATCH_DIM, SWD_DIRECTIONS))
        directions /= np.linalg.norm(directions, axis=0, keepdims=True)
        patches = np.asarray(patches, dtype=np.float64)
        if len(patches) == 0:
            return None
        level = {"mean": patches.mean(axis=0), "std": patches.std(axis=0) + SWD_STD_EPS, "directions": directions}
        level["quantiles"] = _row_quantiles(_project(patches, level), quantiles)
        reference.append(level)
    return reference


def _swd_from_reference(reference: Sequence[Mapping[str, np.ndarray]], composite_patches: Sequence[np.ndarray]):
    quantiles = np.linspace(0.0, 1.0, SWD_QUANTILES)
    distances = []
    for level, patches in zip(reference, composite_patches, strict=True):
        patches = np.asarray(patches, dtype=np.float64)
        if len(patches) == 0:
            return None
        difference = _row_quantiles(_project(patches, level), quantiles) - level["quantiles"]
        distances.append(SWD_SCALE * float(np.abs(difference).mean()))
    return float(np.mean(distances))


def sliced_wasserstein_distance(
    composite_patches: Sequence[np.ndarray], target_patches: Sequence[np.ndarray], bucket: int
) -> float | None:
    """SWD (x 1000) between the composites' and the ground truth's patch sets of one bucket, mean over levels.

    After Karras et al. 2018 ("Progressive Growing of GANs"). ``composite_patches`` and ``target_patches``
    hold per pyramid level an array (n, 147) of patches (:func:`swd_patches`, collected over all images of
    the bucket; the two sets may differ in size). Per level, both sets are normalised by the ground truth's
    per-dimension mean and std (+1e-8) and projected on 256 random unit directions; the distance is the mean
    over directions and over 200 quantiles (``linspace(0, 1, 200)``, NumPy's linear interpolation) of the
    absolute quantile difference, x 1000. The directions come from ``numpy.random.default_rng(bucket)
    .standard_normal((147, 256))`` (columns normalised), one draw per level from the same generator, so a
    given bucket always uses the same directions. Lower is better, 0 for identical sets. ``None`` when a
    level has no patch.
    """
    if len(composite_patches) != len(target_patches):
        raise ValueError("Both patch sets must have the same number of pyramid levels.")
    reference = _swd_reference(target_patches, bucket)
    if reference is None:
        return None
    return _swd_from_reference(reference, composite_patches)


# ------------------------------------------------------------------------------- methods and glue


def masked_input(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The image a method sees: hole pixels set to 0 so that no method can read the ground truth there."""
    return np.where(hole[..., None], np.uint8(0), image)


def composite(image: np.ndarray, result: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Known pixels from ``image``, hole pixels from ``result``."""
    return np.where(hole[..., None], result, image)


def telea(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """OpenCV fast-marching inpainting (Telea 2004), radius 3."""
    import cv2

    return cv2.inpaint(image, hole.astype(np.uint8) * 255, INPAINT_RADIUS, cv2.INPAINT_TELEA)


def navier_stokes(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """OpenCV Navier-Stokes inpainting (Bertalmio et al. 2001), radius 3."""
    import cv2

    return cv2.inpaint(image, hole.astype(np.uint8) * 255, INPAINT_RADIUS, cv2.INPAINT_NS)


def harmonic(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Harmonic (membrane) interpolation: the smooth fill that the default model's refinement head blends in.

    Not in the protocol's reference table; evaluating it shows what the network adds to its smooth prior.
    """
    from .modeling_med import harmonic_fill

    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    filled = harmonic_fill(pixels, torch.from_numpy(hole)[None, None].float())
    return filled[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


CLASSICAL_BASELINES: dict[str, InpaintFn] = {"telea": telea, "ns": navier_stokes, "harmonic": harmonic}
# Column titles used in the protocol's reference table: (first column, following columns).
DISPLAY_NAMES = {"telea": ("Telea", "Telea"), "ns": ("Navier-Stokes", "NS"), "harmonic": ("Harmonic", "Harmonic")}


def is_classical(fn: InpaintFn) -> bool:
    """Whether ``fn`` is one of the classical baselines that learned methods have to beat."""
    return any(fn is baseline for baseline in CLASSICAL_BASELINES.values())


class ModelInpainter:
    """:class:`BatchedInpaintFn` running a :class:`~med_hf.MEDModel` on batches of images.

    Args:
        model: a loaded model, or a local folder / Hub repo id passed to ``MEDModel.from_pretrained``.
        batch_size: images per forward pass.
        device: where to load ``model`` when it is given as a path (default: CUDA if available).
    """

    def __init__(self, model: Any, batch_size: int = 8, device: str | torch.device | None = None) -> None:
        if isinstance(model, (str, os.PathLike)):
            # Imported here so that the protocol (and the baselines) work without the model code.
            from med_hf import MEDModel

            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = MEDModel.from_pretrained(model).to(device)
        self.model = model.eval()
        self.batch_size = batch_size

    def __call__(self, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        return self.batch(image[None], hole[None])[0]

    @torch.inference_mode()
    def batch(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        parameter = next(self.model.parameters())
        outputs = []
        for start in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + self.batch_size]))
            x = x.permute(0, 3, 1, 2).to(parameter.device, parameter.dtype) / 127.5 - 1
            mask = torch.from_numpy(holes[start : start + self.batch_size])[:, None]
            mask = mask.to(parameter.device, parameter.dtype)
            y = self.model(pixel_values=x, mask=mask).reconstruction
            outputs.append(y.float().permute(0, 2, 3, 1).cpu().numpy())
        y = np.concatenate(outputs)
        return np.clip(np.rint((y + 1) * 127.5), 0, 255).astype(np.uint8)


def model_inpaint_fn(model: Any, batch_size: int = 8, device: str | torch.device | None = None) -> ModelInpainter:
    """Wrap a MEDModel (or a path / repo id to load one from) as a batched :data:`InpaintFn`."""
    return ModelInpainter(model, batch_size=batch_size, device=device)


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
    mask_dir: str | os.PathLike,
    buckets: Iterable[int] = range(NUM_BUCKETS),
    progress: bool = True,
    fid_extractor: torch.nn.Module | None = None,
    lpips_model: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Run every method on every (image, bucket) pair of the protocol and average the metrics per bucket.

    Args:
        methods: name -> :data:`InpaintFn`. The functions of :data:`CLASSICAL_BASELINES` count as classical,
            all others as learned methods (they enter the ``"beats"`` summary).
        images: preprocessed uint8 RGB (256, 256, 3) images (see :func:`load_image`) in protocol order: the
            position in the sequence selects the masks.
        mask_dir: folder of the irregular test masks ``00000.png`` … ``11999.png``.
        buckets: hole-ratio buckets to evaluate (0 = 0-10 % holes … 5 = 50-60 %).
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
    buckets = list(buckets)
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
                f"Images must be uint8 ({IMAGE_SIZE}, {IMAGE_SIZE}, 3) (see load_image), got {targets.dtype} "
                f"{targets.shape[1:]}."
            )
        holes = np.stack([load_mask(mask_path(mask_dir, index, bucket)) for index, bucket in items])
        inputs = np.stack([masked_input(target, hole) for target, hole in zip(targets, holes, strict=True)])
        for (_, bucket), hole in zip(items, holes, strict=True):
            hole_ratios[bucket].append(float(hole.mean()))
        centres, target_details = [], []
        for k, (index, bucket) in enumerate(items):
            if target_pyramid is None or target_pyramid[0] != index:
                target_pyramid = (index, laplacian_pyramid(targets[k]))
            centres.append(patch_centres(holes[k], index))
            target_details.append(_hole_detail(target_pyramid[1][0], holes[k]))
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
            composites = composite(targets, results, holes)
            lpips_values = lpips_distances(lpips_model, composites, targets) if lpips_model is not None else None
            features = fid_features(fid_extractor, composites) if fid_extractor is not None else None
            for k, (_, bucket) in enumerate(items):
                for metric, metric_fn in METRIC_FUNCTIONS.items():
                    values[name][bucket][metric].append(metric_fn(composites[k], targets[k]))
                pyramid = laplacian_pyramid(composites[k])
                ratio = _detail_ratio(_hole_detail(pyramid[0], holes[k]), target_details[k])
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
        bucket: _swd_reference([_stack_patches(level) for level in target_patches[bucket]], bucket)
        for bucket in buckets
    }

    def swd(name: str, bucket: int) -> float | None:
        if swd_references[bucket] is None:
            return None
        patches = [_stack_patches(level) for level in method_patches[name][bucket]]
        return _swd_from_reference(swd_references[bucket], patches)

    def bucket_entry(name: str, bucket: int) -> dict[str, Any]:
        entry: dict[str, Any] = {metric: _mean_std(values[name][bucket][metric]) for metric in METRICS}
        hf = values[name][bucket]["hf"]
        entry["hf"] = _mean_std(hf) if hf else {"mean": None, "std": None}
        entry["swd"] = swd(name, bucket)
        entry["lpips"] = _mean_std(values[name][bucket]["lpips"]) if lpips_model is not None else None
        entry["fid"] = fid_from_features(real, np.stack(fake_features[name][bucket])) if real is not None else None
        return entry

    report: dict[str, Any] = {
        "protocol": PROTOCOL,
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


def beats_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """Whether each learned method's PSNR and SSIM are >= every classical baseline's, in every bucket.

    Returns ``{"baselines": [...], "metrics": ["psnr", "ssim"], "methods": {name: {"beats_all": bool | None,
    "psnr": bool, "ssim": bool, "failures": [...]}}}``; ``beats_all`` is ``None`` when no baseline was run.
    """
    methods = report["methods"]
    baselines = [name for name, method in methods.items() if method["kind"] == "classical"]
    summary: dict[str, Any] = {"baselines": baselines, "metrics": list(BEATS_METRICS), "methods": {}}
    for name, method in methods.items():
        if method["kind"] == "classical":
            continue
        if not baselines:
            summary["methods"][name] = {"beats_all": None, "reason": "no classical baseline was evaluated"}
            continue
        failures = []
        for baseline in baselines:
            for k, bucket in enumerate(report["buckets"]):
                for metric in BEATS_METRICS:
                    ours = method["buckets"][k][metric]["mean"]
                    theirs = methods[baseline]["buckets"][k][metric]["mean"]
                    if ours < theirs:
                        failures.append(
                            {
                                "bucket": bucket["label"],
                                "metric": metric,
                                "value": ours,
                                "baseline": baseline,
                                "baseline_value": theirs,
                            }
                        )
        failed_metrics = {failure["metric"] for failure in failures}
        summary["methods"][name] = {
            "beats_all": not failures,
            **{metric: metric not in failed_metrics for metric in BEATS_METRICS},
            "failures": failures,
        }
    return summary


def _has_texture(method: Mapping[str, Any]) -> bool:
    return all("hf" in bucket and "swd" in bucket for bucket in method["buckets"])


def texture_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """Texture of each learned method against each classical baseline: where its SWD is lower or higher.

    Informational: unlike :func:`beats_summary` it decides nothing. Returns ``{"baselines": [...],
    "methods": {name: {"hf": [per-bucket mean], "swd": [per bucket], "against": {baseline: {"swd_lower":
    [labels], "swd_equal": [...], "swd_higher": [...], "swd_missing": [...]}}}}}``, lower SWD being better.
    Methods without HF/SWD (reports made before these metrics existed) are left out.
    """
    methods = {name: method for name, method in report["methods"].items() if _has_texture(method)}
    baselines = [name for name, method in methods.items() if method["kind"] == "classical"]
    labels = [bucket["label"] for bucket in report["buckets"]]
    summary: dict[str, Any] = {"baselines": baselines, "methods": {}}
    for name, method in methods.items():
        if method["kind"] == "classical":
            continue
        swd = [bucket["swd"] for bucket in method["buckets"]]
        against = {}
        for baseline in baselines:
            theirs = [bucket["swd"] for bucket in methods[baseline]["buckets"]]
            comparison: dict[str, list[str]] = {"swd_lower": [], "swd_equal": [], "swd_higher": [], "swd_missing": []}
            for label, ours, other in zip(labels, swd, theirs, strict=True):
                if ours is None or other is None:
                    comparison["swd_missing"].append(label)
                else:
                    key = "swd_lower" if ours < other else "swd_higher" if ours > other else "swd_equal"
                    comparison[key].append(label)
            against[baseline] = comparison
        summary["methods"][name] = {
            "hf": [bucket["hf"]["mean"] for bucket in method["buckets"]],
            "swd": swd,
            "against": against,
        }
    return summary


def _value_range(values: Sequence[float | None], fmt: str) -> str:
    present = [value for value in values if value is not None]
    if not present:
        return "n/a"
    low, high = fmt.format(min(present)), fmt.format(max(present))
    return low if low == high else f"{low}-{high}"


def _texture_sentence(name: str, report: Mapping[str, Any]) -> str:
    """``" Texture: HF ... ; SWD ..."`` for one learned method, or ``""`` when the report has no HF/SWD."""
    summary = texture_summary(report)
    if name not in summary["methods"]:
        return ""
    texture = summary["methods"][name]
    baseline_hf = [
        f"{baseline} {_value_range([b['hf']['mean'] for b in report['methods'][baseline]['buckets']], '{:.3f}')}"
        for baseline in summary["baselines"]
    ]
    hf = f"HF {_value_range(texture['hf'], '{:.3f}')}"
    if baseline_hf:
        hf += f" against {', '.join(baseline_hf)}"
    if not summary["baselines"]:
        return f" Texture: {hf} (1 = the photo's own fine detail); SWD {_value_range(texture['swd'], '{:.1f}')}."
    # Baselines with the same comparison share one phrase.
    groups: dict[tuple, list[str]] = {}
    for baseline, comparison in texture["against"].items():
        groups.setdefault(tuple(tuple(labels) for labels in comparison.values()), []).append(baseline)
    count = len(report["buckets"])
    phrases = []
    for (lower, equal, higher, missing), names in groups.items():
        target = " and ".join(names)
        if len(lower) == count:
            phrases.append(f"lower (better) than {target} in every bucket")
            continue
        if len(higher) == count:
            phrases.append(f"higher (worse) than {target} in every bucket")
            continue
        pieces = [
            (word, labels)
            for word, labels in (("lower", lower), ("equal", equal), ("higher", higher), ("not computed", missing))
            if labels
        ]
        words, named = [], False
        for word, labels in pieces:
            if not named and word != "not computed":
                word, named = f"{word} {'to' if word == 'equal' else 'than'} {target}", True
            words.append(f"{word} in {', '.join(labels)}")
        phrases.append(" and ".join(words) + ("" if named else f" (against {target})"))
    return f" Texture: {hf} (1 = the photo's own fine detail); SWD {'; '.join(phrases)}."


def verdict_lines(report: Mapping[str, Any]) -> list[str]:
    """One line per learned method: which classical baselines it matches or beats everywhere, and where not.

    The verdict is on PSNR and SSIM (:func:`beats_summary`). When the report has the texture metrics, the
    line goes on with them: the method's HF range against the baselines' and where its SWD is lower
    (better) or higher than each baseline's (:func:`texture_summary`).
    """
    baselines = report["beats"]["baselines"]
    lines = []
    for name, verdict in report["beats"]["methods"].items():
        if verdict["beats_all"] is None:
            lines.append(f"`{name}`: {verdict['reason']}." + _texture_sentence(name, report))
            continue
        lost_to = {failure["baseline"] for failure in verdict["failures"]}
        beaten = [baseline for baseline in baselines if baseline not in lost_to]
        sentence = f"`{name}`"
        if beaten:
            sentence += f" matches or beats {', '.join(beaten)} in PSNR and SSIM in every bucket"
        losses = [
            _losses_against(baseline, verdict["failures"], report) for baseline in baselines if baseline in lost_to
        ]
        if losses:
            sentence += f"{' but' if beaten else ''} does NOT beat {'; '.join(losses)}"
        lines.append(sentence + "." + _texture_sentence(name, report))
    return lines


def _losses_against(baseline: str, failures: Sequence[Mapping[str, Any]], report: Mapping[str, Any]) -> str:
    lost = {(failure["metric"], failure["bucket"]) for failure in failures if failure["baseline"] == baseline}
    parts = []
    for metric in BEATS_METRICS:
        labels = [bucket["label"] for bucket in report["buckets"] if (metric, bucket["label"]) in lost]
        if labels:
            parts.append(f"{metric.upper()} in {', '.join(labels)}")
    return f"{baseline} ({', '.join(parts)})"


# ------------------------------------------------------------------------------------------ tables


def bucket_metric(entry: Mapping[str, Any], metric: str) -> float | None:
    """Value of ``metric`` in one bucket entry: the mean of a per-image metric, or SWD / FID itself (or None)."""
    value = entry[metric]
    return value["mean"] if isinstance(value, Mapping) else value


_TABLE_COLUMNS = (("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("l1", "L1 %", "{:.2f}"))
_TEXTURE_COLUMNS = (("hf", "HF", "{:.3f}"), ("swd", "SWD", "{:.1f}"))
_PERCEPTUAL_COLUMNS = (("lpips", "LPIPS", "{:.4f}"), ("fid", "FID", "{:.2f}"))


def markdown_table(report: Mapping[str, Any]) -> str:
    """The report as a Markdown table in the layout of the protocol's reference table (one row per bucket).

    Per method: PSNR, SSIM, L1 %, then HF and SWD (when the report has them), then LPIPS and FID (when
    computed). A value that could not be computed reads ``n/a``.
    """
    methods = report["methods"]
    labels = [bucket["label"] for bucket in report["buckets"]]
    width = max(len(label) for label in labels)
    header, cells = ["hole ratio"], [[label.ljust(width)] for label in labels]
    for name, method in methods.items():
        first, other = DISPLAY_NAMES.get(name, (name, name))
        columns = [*_TABLE_COLUMNS]
        columns += [*_TEXTURE_COLUMNS] if _has_texture(method) else []
        columns += [c for c in _PERCEPTUAL_COLUMNS if report["perceptual"][c[0]]["computed"]]
        for k, (metric, title, fmt) in enumerate(columns):
            header.append(f"{first if k == 0 else other} {title}")
            for row, bucket in zip(cells, method["buckets"], strict=True):
                value = bucket_metric(bucket, metric)
                row.append("n/a" if value is None else fmt.format(value))
    lines = [header, ["---"] * len(header), *cells]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)
