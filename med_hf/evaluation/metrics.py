"""Image-quality metrics of the evaluation protocol: PSNR, SSIM and L1, the texture metrics HF and SWD (no
network needed; defined in the "Texture metrics" of the protocol's notes, kept outside this repository in
../shared/reference/eval_protocol.md, and restated in `high_frequency_ratio` and `sliced_wasserstein_distance`
below), and FID / LPIPS from local network files."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.ndimage
import torch

# Inception-v3 resolution expected by FID feature extractors.
FID_IMAGE_SIZE = 299


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


def _unit_batch(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0


@torch.inference_mode()
def fid_features(extractor: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """Features (N, D) of uint8 RGB images (N, H, W, 3); the extractor takes (N, 3, 299, 299) in [0, 1]."""
    x = _unit_batch(images, _module_device(extractor))
    # Bilinear resizing to 299 is what pytorch-fid's Inception wrapper does with 256x256 inputs.
    x = torch.nn.functional.interpolate(x, size=(FID_IMAGE_SIZE, FID_IMAGE_SIZE), mode="bilinear")
    features = extractor(x)
    return features.reshape(len(images), -1).double().cpu().numpy()


@torch.inference_mode()
def lpips_distances(lpips_model: torch.nn.Module, results: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-image LPIPS distances (N,) of uint8 RGB images, fed to the network in [-1, 1]."""
    device = _module_device(lpips_model)
    distances = lpips_model(_unit_batch(results, device) * 2 - 1, _unit_batch(targets, device) * 2 - 1)
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


def hole_detail(level0: np.ndarray, hole: np.ndarray) -> float | None:
    """Mean |level 0| over the hole pixels (all channels); ``None`` for an empty hole."""
    if not hole.any():
        return None
    return float(np.abs(level0[hole]).mean())


def detail_ratio(composite_detail: float | None, target_detail: float | None) -> float | None:
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
    composite_detail = hole_detail(laplacian_pyramid(composite, 1)[0], hole)
    return detail_ratio(composite_detail, hole_detail(laplacian_pyramid(target, 1)[0], hole))


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
        # An object hole may be too small to hold a patch centre at a coarse level: then no patch, (0, 147).
        patches.append(level[rows, cols].reshape(len(level_centres), SWD_PATCH_DIM))
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


def swd_reference(target_patches: Sequence[np.ndarray], bucket: int) -> list[dict[str, np.ndarray]] | None:
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


def swd_from_reference(reference: Sequence[Mapping[str, np.ndarray]], composite_patches: Sequence[np.ndarray]):
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
    reference = swd_reference(target_patches, bucket)
    if reference is None:
        return None
    return swd_from_reference(reference, composite_patches)
