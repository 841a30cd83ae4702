"""Tests of the evaluation protocol (med_hf.evaluation) and of its command-line script (training/evaluate.py).

Everything runs on small synthetic images and masks made in tmp_path; only the last test reads the shared
data folder beside the checkout, and it skips when that folder is absent.
"""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image

from med_hf.evaluation import (
    CLASSICAL_BASELINES,
    IMAGE_SIZE,
    PipelineInpainter,
    beats_summary,
    binomial_blur,
    bucket_label,
    evaluate_methods,
    fid_features,
    fid_from_features,
    frechet_distance,
    high_frequency_ratio,
    keep_known,
    l1_percent,
    laplacian_pyramid,
    list_images,
    load_torchscript,
    markdown_table,
    mask_path,
    masked_input,
    navier_stokes,
    patch_centres,
    preprocess_image,
    protocol_image,
    protocol_mask,
    protocol_mask_name,
    psnr,
    pypatchmatch,
    sliced_wasserstein_distance,
    ssim,
    swd_patches,
    telea,
    texture_summary,
    verdict_lines,
)
from med_hf.evaluation.figures import plotted_metrics
from med_hf.evaluation.metrics import PYRAMID_KERNEL, _binomial_blur_scipy

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def smooth_image(seed: int, height: int = IMAGE_SIZE, width: int = IMAGE_SIZE) -> np.ndarray:
    """A smooth random RGB image, so that inpainting has something sensible to recover."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [
        127.5 + 100 * np.sin(rng.uniform(2, 8) * x + rng.uniform(2, 8) * y + rng.uniform(0, 6)) for _ in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def write_masks(mask_dir: Path, num_images: int, buckets: list[int]) -> None:
    """The protocol mask files needed for ``num_images`` images: rectangles growing with the bucket."""
    mask_dir.mkdir(parents=True, exist_ok=True)
    for index in range(num_images):
        for bucket in buckets:
            mask = np.zeros((512, 512), np.uint8)
            side = 120 + 60 * bucket
            top, left = 40 + 30 * index, 60 + 20 * index
            mask[top : top + side, left : left + side] = 255
            Image.fromarray(mask).save(mask_dir / protocol_mask_name(index, bucket))


@pytest.fixture
def dataset(tmp_path: Path) -> SimpleNamespace:
    """Three landscape/portrait photos of odd sizes and the masks of buckets 0 and 1."""
    val_dir, mask_dir = tmp_path / "val", tmp_path / "masks"
    val_dir.mkdir()
    for seed, (height, width) in enumerate([(90, 131), (131, 90), (100, 100)]):
        Image.fromarray(smooth_image(seed, height, width)).save(val_dir / f"img{seed}.png")
    write_masks(mask_dir, num_images=3, buckets=[0, 1])
    images = [protocol_image(path) for path in list_images(val_dir)]
    return SimpleNamespace(val_dir=val_dir, mask_dir=mask_dir, images=images, buckets=[0, 1])


def hole_filling(value: int):
    """A fake learned method: fills the hole with a constant and checks it never sees ground truth."""

    def fill(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        assert image.dtype == np.uint8 and image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert hole.dtype == bool and hole.shape == (IMAGE_SIZE, IMAGE_SIZE)
        assert not image[hole].any(), "the method must not see the hole pixels"
        return np.full_like(image, value)

    return fill


# ----------------------------------------------------------------------------------------- metrics


def test_metrics_of_identical_images():
    image = smooth_image(0)
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == pytest.approx(1.0)
    assert l1_percent(image, image) == 0.0


def test_metrics_of_constant_offset():
    a, b = np.full((64, 64, 3), 100, np.uint8), np.full((64, 64, 3), 110, np.uint8)
    # MSE = 10^2 = 100.
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    assert l1_percent(a, b) == pytest.approx(10 / 255 * 100)
    # The MSE must be computed in float64, not in wrapping uint8 arithmetic.
    assert psnr(b, a) == psnr(a, b)


def test_mask_name_formula():
    assert protocol_mask_name(0, 0) == "00000.png"
    assert protocol_mask_name(1, 0) == "00037.png"
    assert protocol_mask_name(54, 0) == "01998.png"
    assert protocol_mask_name(55, 2) == f"{4000 + (55 * 37) % 2000:05d}.png" == "04035.png"
    assert protocol_mask_name(99, 5) == f"{10000 + 3663 % 2000:05d}.png"
    with pytest.raises(ValueError):
        protocol_mask_name(0, 6)
    assert bucket_label(1) == "10-20 %"


def test_mask_path_names_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="02037.png"):
        mask_path(tmp_path, 1, 1)


def test_preprocess_centre_crops_to_the_shorter_side():
    landscape = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    # At the target size no resampling happens, so the crop can be checked exactly.
    np.testing.assert_array_equal(preprocess_image(Image.fromarray(landscape), size=20), landscape[:, 5:25])
    portrait = landscape.transpose(1, 0, 2).copy()
    np.testing.assert_array_equal(preprocess_image(Image.fromarray(portrait), size=20), portrait[5:25])
    resized = preprocess_image(Image.fromarray(landscape))
    assert resized.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and resized.dtype == np.uint8


def test_protocol_mask_thresholds_white_holes(tmp_path: Path):
    mask = np.zeros((512, 512), np.uint8)
    mask[:256] = 128
    mask[256:, :256] = 127
    Image.fromarray(mask).save(tmp_path / "mask.png")
    hole = protocol_mask(tmp_path / "mask.png")
    assert hole.dtype == bool and hole.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert hole[:128].all() and not hole[128:].any()


def test_composite_keeps_known_pixels_and_input_hides_holes():
    image, other = smooth_image(0), smooth_image(1)
    hole = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    hole[50:100, 70:200] = True
    result = keep_known(image, other, hole)
    np.testing.assert_array_equal(result[~hole], image[~hole])
    np.testing.assert_array_equal(result[hole], other[hole])
    blanked = masked_input(image, hole)
    assert not blanked[hole].any()
    np.testing.assert_array_equal(blanked[~hole], image[~hole])


@pytest.mark.parametrize("method", [telea, navier_stokes, pypatchmatch])
def test_baselines_inpaint_only_the_hole(method):
    image = smooth_image(2)
    hole = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    hole[100:140, 100:140] = True
    result = method(masked_input(image, hole), hole)
    assert result.dtype == np.uint8 and result.shape == image.shape
    np.testing.assert_array_equal(result[~hole], image[~hole])
    assert psnr(keep_known(image, result, hole), image) > 30


# ---------------------------------------------------------------------------------- texture metrics


def textured_image(seed: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """A photo-like RGB image: gentle shading (half of :func:`smooth_image`'s) plus fine random texture."""
    rng = np.random.default_rng(seed)
    texture = scipy.ndimage.gaussian_filter(rng.normal(0.0, 1.0, (size, size, 3)), (0.7, 0.7, 0))
    shading = 128 + (smooth_image(seed, size, size).astype(np.float64) - 128) / 2
    return np.clip(shading + 80 * texture, 0, 255).astype(np.uint8)


def square_hole(top: int = 64, left: int = 80, side: int = 128, size: int = IMAGE_SIZE) -> np.ndarray:
    hole = np.zeros((size, size), bool)
    hole[top : top + side, left : left + side] = True
    return hole


def test_laplacian_pyramid_shapes_and_exact_properties():
    image = textured_image(0)[:101, :70]  # odd sizes
    pyramid = laplacian_pyramid(image)
    assert [level.shape for level in pyramid] == [(101, 70, 3), (51, 35, 3), (26, 18, 3)]
    assert all(level.dtype == np.float64 for level in pyramid)
    # The same pyramid in an independent form: the 2-D kernel outer(k, k) with the mirrored border.
    current = image / 255.0
    kernel_2d = np.outer(PYRAMID_KERNEL, PYRAMID_KERNEL)[..., None]
    for level in pyramid:
        low = scipy.ndimage.convolve(current, kernel_2d, mode="reflect")
        np.testing.assert_allclose(level, current - low, rtol=0, atol=1e-15)
        # The mirrored binomial blur keeps the sum, so every level sums to 0 in every channel.
        np.testing.assert_allclose(level.sum(axis=(0, 1)), 0.0, atol=1e-12)
        current = low[::2, ::2]
    # uint8 input is divided by 255: the same as a [0, 1] float image.
    for level, from_float in zip(pyramid, laplacian_pyramid(image / 255.0), strict=True):
        np.testing.assert_array_equal(level, from_float)

    for level in laplacian_pyramid(np.full((40, 30, 3), 77, np.uint8)):
        assert np.abs(level).max() < 1e-15  # no detail in a flat image
    # An affine ramp is kept by the symmetric blur: level 0 vanishes 2 pixels or more from the border.
    rows, cols = np.mgrid[0:32, 0:32]
    ramp = np.stack([0.2 + 0.01 * rows + 0.005 * cols] * 3, axis=-1)
    level0 = laplacian_pyramid(ramp, 1)[0]
    assert np.abs(level0[2:-2, 2:-2]).max() < 1e-15 and np.abs(level0[0]).max() > 1e-3
    # A unit impulse: the blur leaves outer(k, k) / 256 = [[..., 16, 24, ...], [..., 24, 36, ...]] / 256.
    impulse = np.zeros((9, 9, 3))
    impulse[4, 4] = 1.0
    level0 = laplacian_pyramid(impulse, 1)[0][..., 0]
    assert level0[4, 4] == pytest.approx(1 - 36 / 256, abs=1e-16)
    assert level0[4, 5] == pytest.approx(-24 / 256, abs=1e-16)
    assert level0[3, 3] == pytest.approx(-16 / 256, abs=1e-16)
    assert level0[2, 6] == pytest.approx(-1 / 256, abs=1e-16)


@pytest.mark.parametrize("shape", [(256, 256, 3), (1, 1, 3), (2, 7, 3), (33, 5, 3), (12, 9)])
def test_binomial_blur_matches_the_protocols_scipy_form(shape):
    image = np.random.default_rng(1).random(shape)
    np.testing.assert_allclose(binomial_blur(image), _binomial_blur_scipy(image), rtol=0, atol=1e-15)


def test_high_frequency_ratio():
    target, hole = textured_image(1), square_hole()
    assert high_frequency_ratio(target, target, hole) == 1.0
    # A flat fill only keeps the step at the hole's boundary.
    mean_colour = np.broadcast_to(target[hole].mean(axis=0).round().astype(np.uint8), target.shape)
    assert high_frequency_ratio(keep_known(target, mean_colour, hole), target, hole) < 0.05
    # Noise adds detail.
    noise = np.random.default_rng(2).normal(0.0, 40.0, target.shape)
    noisy = np.clip(target + noise, 0, 255).astype(np.uint8)
    assert high_frequency_ratio(keep_known(target, noisy, hole), target, hole) > 1.0
    # The more blur, the less fine detail.
    ratios = []
    for sigma in (0.5, 1.0, 2.0):
        blurred = scipy.ndimage.gaussian_filter(target.astype(np.float64), (sigma, sigma, 0))
        filled = keep_known(target, np.clip(blurred.round(), 0, 255).astype(np.uint8), hole)
        ratios.append(high_frequency_ratio(filled, target, hole))
    assert 1.0 > ratios[0] > ratios[1] > ratios[2] > 0.0
    # Skipped: an empty hole, or a ground truth without detail in the hole.
    assert high_frequency_ratio(target, target, np.zeros_like(hole)) is None
    assert high_frequency_ratio(target, np.full_like(target, 90), hole) is None


def test_patch_centres_hand_computed_small_case():
    hole = np.zeros((16, 16), bool)
    hole[[0, 3, 4, 8, 12, 13], [5, 3, 8, 8, 12, 2]] = True
    level0, level1, level2 = patch_centres(hole, image_index=2)
    # Level 0: rows and columns 3..12 are at least 3 pixels from the border; (0, 5) and (13, 2) are not.
    candidates = np.array([[3, 3], [4, 8], [8, 8], [12, 12]])
    np.testing.assert_array_equal(level0, candidates[np.random.default_rng(2 * 7 + 0).choice(4, 4, replace=False)])
    # Level 1: hole[::2, ::2] is 8x8 with rows and columns 3..4 far enough in; only (8, 8) -> (4, 4) is there.
    np.testing.assert_array_equal(level1, [[4, 4]])
    # Level 2: 4x4, no pixel is 3 pixels from every border.
    assert level2.shape == (0, 2)


def test_patch_centres_follow_the_rng_rule():
    hole = np.ones((32, 32), bool)
    centres = patch_centres(hole, image_index=5)
    # 26x26 = 676 candidates at level 0, 10x10 = 100 at level 1, 2x2 = 4 at level 2.
    for level, (count, side) in enumerate([(676, 32), (100, 16), (4, 8)]):
        grid = np.argwhere(np.pad(np.ones((side - 6, side - 6), bool), 3))
        chosen = np.random.default_rng(5 * 7 + level).choice(count, min(64, count), replace=False)
        np.testing.assert_array_equal(centres[level], grid[chosen])
    assert [len(c) for c in centres] == [64, 64, 4]
    assert len({tuple(c) for c in centres[0]}) == 64  # without replacement
    assert not np.array_equal(patch_centres(hole, image_index=6)[0], centres[0])


def test_swd_patches_are_row_column_channel_flattened():
    level = np.arange(12 * 12 * 3, dtype=np.float64).reshape(12, 12, 3)
    (patches,) = swd_patches([level], [np.array([[3, 3], [5, 8]])])
    assert patches.shape == (2, 147)
    np.testing.assert_array_equal(patches[0], level[0:7, 0:7].ravel())
    np.testing.assert_array_equal(patches[1], level[2:9, 5:12].ravel())


def patch_sets(images: list[np.ndarray], targets: list[np.ndarray], hole: np.ndarray) -> tuple[list, list]:
    """The SWD patch sets (per level) of composites and ground truths, as the evaluation collects them."""
    fake, real = [[], [], []], [[], [], []]
    for index, (image, target) in enumerate(zip(images, targets, strict=True)):
        centres = patch_centres(hole, index)
        for level, (a, b) in enumerate(
            zip(
                swd_patches(laplacian_pyramid(keep_known(target, image, hole)), centres),
                swd_patches(laplacian_pyramid(target), centres),
                strict=True,
            )
        ):
            fake[level].append(a)
            real[level].append(b)
    return [np.concatenate(level) for level in fake], [np.concatenate(level) for level in real]


@pytest.fixture(scope="module")
def texture_set() -> SimpleNamespace:
    targets = [textured_image(seed) for seed in range(4)]

    def blurred(sigma: float) -> list[np.ndarray]:
        return [
            np.clip(scipy.ndimage.gaussian_filter(t.astype(np.float64), (sigma, sigma, 0)).round(), 0, 255).astype(
                np.uint8
            )
            for t in targets
        ]

    return SimpleNamespace(targets=targets, hole=square_hole(), blurred=blurred)


def test_sliced_wasserstein_distance_properties(texture_set: SimpleNamespace):
    targets, hole = texture_set.targets, texture_set.hole
    same, real = patch_sets(targets, targets, hole)
    assert [len(level) for level in real] == [256, 256, 256]
    assert sliced_wasserstein_distance(same, real, bucket=0) == 0.0
    # Blur moves the patch statistics away from the photo's, more blur farther.
    distances = []
    for sigma in (0.7, 1.5, 3.0):
        fake, _ = patch_sets(texture_set.blurred(sigma), targets, hole)
        distances.append(sliced_wasserstein_distance(fake, real, bucket=0))
    assert 0 < distances[0] < distances[1] < distances[2]
    fake, _ = patch_sets(texture_set.blurred(1.5), targets, hole)
    # Exactly reproducible; another bucket draws other directions (same magnitude, another value).
    assert sliced_wasserstein_distance(fake, real, bucket=0) == distances[1]
    other_bucket = sliced_wasserstein_distance(fake, real, bucket=3)
    assert other_bucket != distances[1] and other_bucket == pytest.approx(distances[1], rel=0.2)
    # Normalised by the second (ground-truth) set, so swapping the sets changes the value; for two sets of
    # the same statistics (other photos of the same kind) it is small both ways and about the same.
    others = [textured_image(seed) for seed in range(4, 8)]
    other_real, _ = patch_sets(others, others, hole)
    forward = sliced_wasserstein_distance(other_real, real, bucket=0)
    backward = sliced_wasserstein_distance(real, other_real, bucket=0)
    assert 0 < forward < distances[0] and 0 < backward < distances[0]
    assert backward == pytest.approx(forward, rel=0.2)
    # A level without any patch: undefined.
    assert sliced_wasserstein_distance([*fake[:2], fake[2][:0]], [*real[:2], real[2][:0]], bucket=0) is None


def test_sliced_wasserstein_distance_of_a_shift_follows_the_directions_rule():
    """Shifting every value by c shifts each projection by (c / std) . u: the quantile distance is |that|."""
    rng = np.random.default_rng(4)
    real = [rng.normal(0.0, 0.05 * (level + 1), (300 - 50 * level, 147)) for level in range(3)]
    shift = 0.01
    fake = [patches + shift for patches in real]
    generator = np.random.default_rng(2)  # bucket 2; one draw per level from the same generator
    expected = []
    for patches in real:
        directions = generator.standard_normal((147, 256))
        directions /= np.linalg.norm(directions, axis=0)
        expected.append(1000 * np.abs((shift / (patches.std(axis=0) + 1e-8)) @ directions).mean())
    assert sliced_wasserstein_distance(fake, real, bucket=2) == pytest.approx(np.mean(expected), rel=1e-9)


# ------------------------------------------------------------------------------------------ driver


class BatchedFill:
    """A fake batched method (like a model): records the batch sizes it is given."""

    def __init__(self, value: int, batch_size: int) -> None:
        self.fill, self.batch_size, self.batches = hole_filling(value), batch_size, []

    def __call__(self, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        return self.batch(image[None], hole[None])[0]

    def batch(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        self.batches.append(len(images))
        return np.stack([self.fill(image, hole) for image, hole in zip(images, holes, strict=True)])


def test_evaluate_methods_report(dataset: SimpleNamespace):
    batched = BatchedFill(128, batch_size=4)
    methods = {**CLASSICAL_BASELINES, "grey": hole_filling(128), "batched_grey": batched}
    report = evaluate_methods(methods, dataset.images, dataset.mask_dir, dataset.buckets, progress=False)

    assert report["num_images"] == 3 and report["protocol"]["version"]
    assert [bucket["label"] for bucket in report["buckets"]] == ["0-10 %", "10-20 %"]
    expected_ratio = np.mean(
        [protocol_mask(mask_path(dataset.mask_dir, index, 1)).mean() for index in range(len(dataset.images))]
    )
    assert report["buckets"][1]["hole_ratio"]["mean"] == pytest.approx(expected_ratio)
    # 3 images x 2 buckets = 6 items in chunks of the largest batch size.
    assert batched.batches == [4, 2]

    for name, method in report["methods"].items():
        assert method["kind"] == ("classical" if name in CLASSICAL_BASELINES else "learned")
        assert method["seconds"] >= 0 and len(method["buckets"]) == 2
        for bucket in method["buckets"]:
            assert set(bucket) == {"psnr", "ssim", "l1", "hf", "swd", "lpips", "fid"}
            assert bucket["fid"] is None and bucket["lpips"] is None
            assert set(bucket["psnr"]) == set(bucket["hf"]) == {"mean", "std"}
            assert bucket["hf"]["mean"] > 0 and bucket["hf"]["std"] >= 0
            assert isinstance(bucket["swd"], float) and bucket["swd"] > 0
    # Batching must not change the results.
    assert report["methods"]["grey"]["buckets"] == report["methods"]["batched_grey"]["buckets"]
    # Larger holes are harder.
    for baseline in CLASSICAL_BASELINES:
        psnr = [bucket["psnr"]["mean"] for bucket in report["methods"][baseline]["buckets"]]
        assert psnr[0] > psnr[1]

    for metric in ("fid", "lpips"):
        assert report["perceptual"][metric]["computed"] is False
        assert "TorchScript" in report["perceptual"][metric]["reason"]
    assert report["beats"]["baselines"] == ["telea", "ns", "harmonic", "patchmatch", "pypatchmatch"]
    assert report["beats"]["methods"]["grey"]["beats_all"] is False
    assert set(report["texture"]["methods"]) == {"grey", "batched_grey"}
    json.dumps(report, allow_nan=False)

    # HF and SWD are those of the public functions on the protocol's images, masks and image indices.
    holes = [protocol_mask(mask_path(dataset.mask_dir, index, 1)) for index in range(3)]
    grey = [
        keep_known(image, np.full_like(image, 128), hole) for image, hole in zip(dataset.images, holes, strict=True)
    ]
    ratios = [high_frequency_ratio(c, t, h) for c, t, h in zip(grey, dataset.images, holes, strict=True)]
    assert report["methods"]["grey"]["buckets"][1]["hf"]["mean"] == pytest.approx(np.mean(ratios), rel=1e-12)
    fake, real = [[], [], []], [[], [], []]
    for index, (image, hole, result) in enumerate(zip(dataset.images, holes, grey, strict=True)):
        centres = patch_centres(hole, index)
        for level in range(3):
            fake[level].append(swd_patches(laplacian_pyramid(result), centres)[level])
            real[level].append(swd_patches(laplacian_pyramid(image), centres)[level])
    expected_swd = sliced_wasserstein_distance(
        [np.concatenate(level) for level in fake], [np.concatenate(level) for level in real], bucket=1
    )
    assert report["methods"]["grey"]["buckets"][1]["swd"] == pytest.approx(expected_swd, rel=1e-12)

    table = markdown_table(report).splitlines()
    assert table[0].startswith(
        "| hole ratio | Telea PSNR | Telea SSIM | Telea L1 % | Telea HF | Telea SWD | Navier-Stokes PSNR | NS SSIM "
        "| NS L1 % | NS HF | NS SWD | Harmonic PSNR | Harmonic SSIM | Harmonic L1 % | Harmonic HF | Harmonic SWD "
        "| PatchMatch PSNR | PatchMatch SSIM | PatchMatch L1 % | PatchMatch HF | PatchMatch SWD "
        "| pypatchmatch PSNR | pypatchmatch SSIM | pypatchmatch L1 % | pypatchmatch HF | pypatchmatch SWD "
        "| grey PSNR | grey SSIM | grey L1 % | grey HF | grey SWD |"
    )
    assert table[2].startswith("| 0-10 %  | ") and len(table) == 4


def make_report(values: dict[str, list[tuple[float, float]]], kinds: dict[str, str]) -> dict:
    """A hand-made report: per method, per bucket (PSNR, SSIM)."""
    return {
        "buckets": [{"label": bucket_label(b)} for b in range(2)],
        "methods": {
            name: {
                "kind": kinds.get(name, "learned"),
                "buckets": [{"psnr": {"mean": p}, "ssim": {"mean": s}} for p, s in per_bucket],
            }
            for name, per_bucket in values.items()
        },
    }


def test_beats_summary():
    baselines = {"telea": [(30.0, 0.90), (25.0, 0.80)], "ns": [(30.5, 0.89), (24.0, 0.81)]}
    report = make_report(
        {
            **baselines,
            "perfect": [(math.inf, 1.0), (math.inf, 1.0)],
            "tie": [(30.5, 0.90), (25.0, 0.81)],
            "weak_ssim": [(40.0, 0.95), (30.0, 0.805)],
            "weak": [(29.0, 0.95), (20.0, 0.5)],
        },
        kinds={"telea": "classical", "ns": "classical"},
    )
    summary = beats_summary(report)
    assert summary["baselines"] == ["telea", "ns"]
    assert set(summary["methods"]) == {"perfect", "tie", "weak_ssim", "weak"}
    assert summary["methods"]["perfect"] == {"beats_all": True, "psnr": True, "ssim": True, "failures": []}
    assert summary["methods"]["tie"]["beats_all"] is True
    weak = summary["methods"]["weak_ssim"]
    assert weak["beats_all"] is False and weak["psnr"] is True and weak["ssim"] is False
    assert weak["failures"] == [
        {"bucket": "10-20 %", "metric": "ssim", "value": 0.805, "baseline": "ns", "baseline_value": 0.81}
    ]

    alone = beats_summary(make_report({"perfect": [(math.inf, 1.0)] * 2}, kinds={}))
    assert alone["methods"]["perfect"]["beats_all"] is None

    report["beats"] = summary
    assert verdict_lines(report) == [
        "`perfect` matches or beats telea, ns in PSNR and SSIM in every bucket.",
        "`tie` matches or beats telea, ns in PSNR and SSIM in every bucket.",
        "`weak_ssim` matches or beats telea in PSNR and SSIM in every bucket but does NOT beat ns (SSIM in 10-20 %).",
        "`weak` does NOT beat telea (PSNR in 0-10 %, 10-20 %, SSIM in 10-20 %); ns (PSNR in 0-10 %, 10-20 %, SSIM in "
        "10-20 %).",
    ]


def test_texture_summary_and_verdicts():
    report = make_report(
        {
            "telea": [(30.0, 0.90), (25.0, 0.80)],
            "ns": [(30.5, 0.89), (24.0, 0.81)],
            "sharp": [(31.0, 0.91), (26.0, 0.82)],
            "mixed": [(31.0, 0.91), (26.0, 0.82)],
        },
        kinds={"telea": "classical", "ns": "classical"},
    )
    texture = {"telea": [(0.28, 200.0), (0.25, 230.0)], "ns": [(0.27, 180.0), (0.26, 210.0)]}
    texture |= {"sharp": [(0.90, 90.0), (0.85, 100.0)], "mixed": [(0.17, 190.0), (0.14, 220.0)]}
    for name, per_bucket in texture.items():
        for bucket, (hf, swd) in zip(report["methods"][name]["buckets"], per_bucket, strict=True):
            bucket.update(hf={"mean": hf, "std": 0.01}, swd=swd)
    report["beats"] = beats_summary(report)

    summary = texture_summary(report)
    assert summary["baselines"] == ["telea", "ns"] and set(summary["methods"]) == {"sharp", "mixed"}
    assert summary["methods"]["mixed"]["hf"] == [0.17, 0.14] and summary["methods"]["mixed"]["swd"] == [190.0, 220.0]
    assert summary["methods"]["mixed"]["against"] == {
        "telea": {"swd_lower": ["0-10 %", "10-20 %"], "swd_equal": [], "swd_higher": [], "swd_missing": []},
        "ns": {"swd_lower": [], "swd_equal": [], "swd_higher": ["0-10 %", "10-20 %"], "swd_missing": []},
    }
    # The PSNR/SSIM verdict is unchanged; the texture follows it.
    assert verdict_lines(report) == [
        "`sharp` matches or beats telea, ns in PSNR and SSIM in every bucket. Texture: HF 0.850-0.900 against telea "
        "0.250-0.280, ns 0.260-0.270 (1 = the photo's own fine detail); SWD lower (better) than telea and ns in "
        "every bucket.",
        "`mixed` matches or beats telea, ns in PSNR and SSIM in every bucket. Texture: HF 0.140-0.170 against telea "
        "0.250-0.280, ns 0.260-0.270 (1 = the photo's own fine detail); SWD lower (better) than telea in every "
        "bucket; higher (worse) than ns in every bucket.",
    ]
    report["methods"]["mixed"]["buckets"][1]["swd"] = 210.0
    report["methods"]["mixed"]["buckets"][0]["swd"] = None
    assert verdict_lines(report)[1].endswith(
        "SWD lower than telea in 10-20 % and not computed in 0-10 %; equal to ns in 10-20 % and not computed in 0-10 %."
    )
    # Reports made before the texture metrics existed have no texture sentence and no HF/SWD columns.
    for method in report["methods"].values():
        for bucket in method["buckets"]:
            del bucket["hf"], bucket["swd"]
    assert texture_summary(report)["methods"] == {}
    assert verdict_lines(report)[0] == "`sharp` matches or beats telea, ns in PSNR and SSIM in every bucket."


def test_pipeline_inpainter_runs_the_pipeline_users_call_in_batches(tiny_model):
    from med_hf import MEDInpaintPipeline

    pipe = MEDInpaintPipeline(model=tiny_model)
    calls = []
    handle = tiny_model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    inpaint = PipelineInpainter(pipe, batch_size=2)
    images = np.stack([smooth_image(seed) for seed in range(5)])
    holes = np.zeros((5, IMAGE_SIZE, IMAGE_SIZE), bool)
    holes[:, 100:140, 60:120] = True
    try:
        results = inpaint.batch(images, holes)
    finally:
        handle.remove()
    assert calls == [2, 2, 1]
    assert results.dtype == np.uint8 and results.shape == images.shape
    np.testing.assert_array_equal(results[:, ~holes[0]], images[:, ~holes[0]])
    # Image k of the run is seeded with seed + k (the default seed is 0).
    generators = [torch.Generator().manual_seed(k) for k in range(5)]
    expected = pipe(
        image=list(images), mask_image=list(holes), batch_size=2, output_type="np", generator=generators
    ).images
    np.testing.assert_array_equal(results, np.stack([np.rint(e * 255).astype(np.uint8) for e in expected]))


# --------------------------------------------------------------------------------------- FID/LPIPS


class ChannelMeans(torch.nn.Module):
    """Tiny FID 'feature extractor': the mean of each channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class MeanAbsDiff(torch.nn.Module):
    """Tiny LPIPS stand-in: the mean absolute difference per image."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs().mean(dim=(1, 2, 3))


def save_torchscript(module: torch.nn.Module, path: Path, *example: torch.Tensor) -> Path:
    with warnings.catch_warnings():
        # Recent torch marks TorchScript as deprecated; it is still the format the CLI loads.
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(module, example)
    traced.save(str(path))
    return path


def test_frechet_distance_known_cases():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 8))
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-6)
    # A shift leaves the covariance unchanged: the distance is exactly |shift|^2.
    shift = np.arange(8) / 4
    assert fid_from_features(features, features + shift) == pytest.approx(shift @ shift, rel=1e-6)
    # N(0, I) against N(m, s^2 I) in d dimensions: |m|^2 + d (1 - s)^2.
    d, mean, scale = 4, np.full(4, 0.5), 2.0
    analytic = mean @ mean + d * (1 - scale) ** 2
    assert frechet_distance(np.zeros(d), np.eye(d), mean, scale**2 * np.eye(d)) == pytest.approx(analytic)
    sampled = fid_from_features(rng.normal(size=(20000, d)), mean + scale * rng.normal(size=(20000, d)))
    assert sampled == pytest.approx(analytic, abs=0.1)
    # Fewer samples than dimensions: singular covariances must still give a finite, non-negative distance.
    few = rng.normal(size=(5, 16))
    assert 0 <= fid_from_features(few, few + 1) < math.inf


def test_torchscript_metrics(tmp_path: Path, dataset: SimpleNamespace):
    example = torch.rand(2, 3, 8, 8)
    extractor = load_torchscript(save_torchscript(ChannelMeans(), tmp_path / "fid.pt", example))
    lpips = load_torchscript(save_torchscript(MeanAbsDiff(), tmp_path / "lpips.pt", example, example))

    images = np.stack([smooth_image(seed) // 2 for seed in range(4)])
    # Brightening by 20 levels shifts every channel mean by 20 / 255 (bilinear resizing keeps offsets).
    delta = 20 / 255
    real, fake = fid_features(extractor, images), fid_features(extractor, images + 20)
    assert real.shape == (4, 3)
    assert fid_from_features(real, real) == pytest.approx(0.0, abs=1e-9)
    assert fid_from_features(real, fake) == pytest.approx(3 * delta**2, rel=1e-4)

    methods = {"telea": telea, "grey": hole_filling(128)}
    report = evaluate_methods(
        methods,
        dataset.images,
        dataset.mask_dir,
        [0],
        progress=False,
        fid_extractor=extractor,
        lpips_model=lpips,
    )
    assert report["perceptual"]["fid"]["computed"] and report["perceptual"]["lpips"]["computed"]
    for method in report["methods"].values():
        assert method["buckets"][0]["fid"] >= 0 and method["buckets"][0]["lpips"]["mean"] > 0
    assert "Telea LPIPS" in markdown_table(report) and "grey FID" in markdown_table(report)


# ---------------------------------------------------------------------------------------------- CLI


def load_cli():
    spec = importlib.util.spec_from_file_location("evaluate_cli", REPO_ROOT / "training" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_end_to_end(tmp_path: Path, dataset: SimpleNamespace, capsys):
    cli = load_cli()
    output_dir = tmp_path / "out"
    args = ["--val_dir", str(dataset.val_dir), "--mask_dir", str(dataset.mask_dir), "--buckets", "0", "1"]
    cli.main([*args, "--output_dir", str(output_dir), "--save_images", "2", "--image_bucket", "1"])

    captured = capsys.readouterr()
    assert "FID (pass --fid_extractor) and LPIPS (pass --lpips_model) SKIPPED" in captured.err
    assert sorted(path.name for path in output_dir.iterdir()) == [
        "examples.png",
        "metrics.png",
        "report.json",
        "report.md",
    ]
    report = json.loads((output_dir / "report.json").read_text())
    assert list(report["methods"]) == ["telea", "ns"]
    assert report["data"]["images"] == ["img0.png", "img1.png", "img2.png"]
    assert report["perceptual"]["fid"]["computed"] is False
    markdown = (output_dir / "report.md").read_text()
    assert "| hole ratio | Telea PSNR |" in markdown and markdown in captured.out
    assert "| Telea HF | Telea SWD |" in markdown and "* Texture (no network): HF = " in markdown
    assert report["methods"]["ns"]["buckets"][1]["swd"] > 0 and report["methods"]["ns"]["buckets"][1]["hf"]["mean"] > 0
    assert plotted_metrics(report) == ["psnr", "ssim", "l1", "hf", "swd"]
    for name in ("metrics.png", "examples.png"):
        with Image.open(output_dir / name) as image:
            assert image.width > 500


def test_cli_with_perceptual_networks(tmp_path: Path, dataset: SimpleNamespace, capsys):
    example = torch.rand(2, 3, 8, 8)
    extractor = save_torchscript(ChannelMeans(), tmp_path / "fid.pt", example)
    lpips = save_torchscript(MeanAbsDiff(), tmp_path / "lpips.pt", example, example)
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "examples.png").write_bytes(b"stale grid of an earlier run")
    args = ["--val_dir", str(dataset.val_dir), "--mask_dir", str(dataset.mask_dir), "--buckets", "0"]
    args += ["--baselines", "telea", "--fid_extractor", str(extractor), "--lpips_model", str(lpips)]
    report = load_cli().main([*args, "--output_dir", str(output_dir)])

    assert "SKIPPED" not in capsys.readouterr().err
    assert report["perceptual"]["fid"]["computed"] and report["methods"]["telea"]["buckets"][0]["fid"] >= 0
    assert "| Telea HF | Telea SWD | Telea LPIPS | Telea FID |" in (output_dir / "report.md").read_text()
    assert sorted(path.name for path in output_dir.iterdir()) == ["metrics.png", "report.json", "report.md"]


def test_cli_errors(tmp_path: Path, dataset: SimpleNamespace, capsys):
    cli = load_cli()
    empty = tmp_path / "empty"
    empty.mkdir()
    output = ["--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match="holds no image"):
        cli.main(["--val_dir", str(empty), "--mask_dir", str(dataset.mask_dir), *output])
    with pytest.raises(SystemExit, match="04000.png"):
        cli.main(
            [
                "--val_dir",
                str(dataset.val_dir),
                "--mask_dir",
                str(dataset.mask_dir),
                "--buckets",
                "2",
                *output,
            ]
        )
    with pytest.raises(SystemExit):
        cli.main(["--val_dir", str(tmp_path / "missing"), "--mask_dir", str(dataset.mask_dir), *output])
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert cli.parse_model_spec("medfe=hub/org=x") == ("medfe", "hub/org=x")
    assert cli.parse_model_spec("runs/a=b/checkpoint") == ("checkpoint", "runs/a=b/checkpoint")


# ------------------------------------------------------------------------------------ shared data


@pytest.mark.skipif(
    not (SHARED_DATA / "masks" / "irregular").is_dir(),
    reason="the shared data folder (../shared/data beside the repository) is absent",
)
def test_shared_masks_follow_the_protocol_buckets():
    mask_dir = SHARED_DATA / "masks" / "irregular"
    for bucket in range(6):
        for index in range(0, 100, 25):
            ratio = protocol_mask(mask_path(mask_dir, index, bucket)).mean()
            # Nearest resizing from 512 to 256 moves the ratio only slightly out of its bucket.
            assert bucket * 0.1 - 0.01 < ratio <= bucket * 0.1 + 0.11, (index, bucket, ratio)


# Protocol, "Texture metrics": HF / SWD of OpenCV Telea and Navier-Stokes on bsds500/val, per bucket.
REFERENCE_TEXTURE = {
    "telea": [(0.281, 196.9), (0.249, 225.7), (0.233, 262.4), (0.214, 285.3), (0.201, 307.7), (0.167, 383.3)],
    "ns": [(0.277, 183.5), (0.262, 209.3), (0.236, 246.0), (0.213, 269.0), (0.194, 292.6), (0.142, 373.3)],
}
SHARED_VAL = SHARED_DATA / "bsds500" / "val"


@pytest.fixture(scope="module")
def shared_val_images() -> list[np.ndarray]:
    if not (SHARED_VAL.is_dir() and (SHARED_DATA / "masks" / "irregular").is_dir()):
        pytest.skip("the shared data folder (../shared/data/bsds500/val and masks/irregular) is absent")
    return [protocol_image(path) for path in list_images(SHARED_VAL)]


@pytest.mark.parametrize(
    ("method", "bucket"),
    [
        pytest.param(method, bucket, marks=() if (method, bucket) == ("telea", 0) else pytest.mark.slow)
        for method in REFERENCE_TEXTURE
        for bucket in range(6)
    ],
)
def test_texture_metrics_reproduce_the_protocols_reference(shared_val_images, method, bucket):
    """HF and SWD agree with the protocol's table to its last printed digit (one unit of rounding slack)."""
    report = evaluate_methods(
        {method: CLASSICAL_BASELINES[method]},
        shared_val_images,
        SHARED_DATA / "masks" / "irregular",
        [bucket],
        progress=False,
    )
    entry = report["methods"][method]["buckets"][0]
    hf, swd = REFERENCE_TEXTURE[method][bucket]
    assert entry["hf"]["mean"] == pytest.approx(hf, abs=0.001)
    assert entry["swd"] == pytest.approx(swd, abs=0.1)
