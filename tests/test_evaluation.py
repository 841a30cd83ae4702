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
import torch
from PIL import Image

from med_hf.evaluation import (
    CLASSICAL_BASELINES,
    IMAGE_SIZE,
    ModelInpainter,
    beats_summary,
    bucket_label,
    composite,
    evaluate_methods,
    fid_features,
    fid_from_features,
    frechet_distance,
    l1_percent,
    list_images,
    load_image,
    load_mask,
    load_torchscript,
    markdown_table,
    mask_index,
    mask_path,
    masked_input,
    navier_stokes,
    preprocess_image,
    psnr,
    ssim,
    telea,
    verdict_lines,
)

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
            Image.fromarray(mask).save(mask_dir / f"{mask_index(index, bucket):05d}.png")


@pytest.fixture
def dataset(tmp_path: Path) -> SimpleNamespace:
    """Three landscape/portrait photos of odd sizes and the masks of buckets 0 and 1."""
    val_dir, mask_dir = tmp_path / "val", tmp_path / "masks"
    val_dir.mkdir()
    for seed, (height, width) in enumerate([(90, 131), (131, 90), (100, 100)]):
        Image.fromarray(smooth_image(seed, height, width)).save(val_dir / f"img{seed}.png")
    write_masks(mask_dir, num_images=3, buckets=[0, 1])
    images = [load_image(path) for path in list_images(val_dir)]
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


def test_mask_index_formula():
    assert mask_index(0, 0) == 0
    assert mask_index(1, 0) == 37
    assert mask_index(54, 0) == 1998
    assert mask_index(55, 2) == 4000 + (55 * 37) % 2000 == 4035
    assert mask_index(99, 5) == 10000 + 3663 % 2000
    with pytest.raises(ValueError):
        mask_index(0, 6)
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


def test_load_mask_thresholds_white_holes(tmp_path: Path):
    mask = np.zeros((512, 512), np.uint8)
    mask[:256] = 128
    mask[256:, :256] = 127
    Image.fromarray(mask).save(tmp_path / "mask.png")
    hole = load_mask(tmp_path / "mask.png")
    assert hole.dtype == bool and hole.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert hole[:128].all() and not hole[128:].any()


def test_composite_keeps_known_pixels_and_input_hides_holes():
    image, other = smooth_image(0), smooth_image(1)
    hole = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    hole[50:100, 70:200] = True
    result = composite(image, other, hole)
    np.testing.assert_array_equal(result[~hole], image[~hole])
    np.testing.assert_array_equal(result[hole], other[hole])
    blanked = masked_input(image, hole)
    assert not blanked[hole].any()
    np.testing.assert_array_equal(blanked[~hole], image[~hole])


@pytest.mark.parametrize("method", [telea, navier_stokes])
def test_baselines_inpaint_only_the_hole(method):
    image = smooth_image(2)
    hole = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    hole[100:140, 100:140] = True
    result = method(masked_input(image, hole), hole)
    assert result.dtype == np.uint8 and result.shape == image.shape
    np.testing.assert_array_equal(result[~hole], image[~hole])
    assert psnr(composite(image, result, hole), image) > 30


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
        [load_mask(mask_path(dataset.mask_dir, index, 1)).mean() for index in range(len(dataset.images))]
    )
    assert report["buckets"][1]["hole_ratio"]["mean"] == pytest.approx(expected_ratio)
    # 3 images x 2 buckets = 6 items in chunks of the largest batch size.
    assert batched.batches == [4, 2]

    for name, method in report["methods"].items():
        assert method["kind"] == ("classical" if name in CLASSICAL_BASELINES else "learned")
        assert method["seconds"] >= 0 and len(method["buckets"]) == 2
        for bucket in method["buckets"]:
            assert set(bucket) == {"psnr", "ssim", "l1", "lpips", "fid"}
            assert bucket["fid"] is None and bucket["lpips"] is None
            assert set(bucket["psnr"]) == {"mean", "std"}
    # Batching must not change the results.
    assert report["methods"]["grey"]["buckets"] == report["methods"]["batched_grey"]["buckets"]
    # Larger holes are harder.
    for baseline in CLASSICAL_BASELINES:
        psnr = [bucket["psnr"]["mean"] for bucket in report["methods"][baseline]["buckets"]]
        assert psnr[0] > psnr[1]

    for metric in ("fid", "lpips"):
        assert report["perceptual"][metric]["computed"] is False
        assert "TorchScript" in report["perceptual"][metric]["reason"]
    assert report["beats"]["baselines"] == ["telea", "ns", "harmonic"]
    assert report["beats"]["methods"]["grey"]["beats_all"] is False
    json.dumps(report)

    table = markdown_table(report).splitlines()
    assert table[0].startswith(
        "| hole ratio | Telea PSNR | Telea SSIM | Telea L1 % | Navier-Stokes PSNR | NS SSIM | NS L1 % "
        "| Harmonic PSNR | Harmonic SSIM | Harmonic L1 % | grey PSNR | grey SSIM | grey L1 % |"
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


def test_model_inpainter_batches_and_round_trips():
    class Identity(torch.nn.Module):
        """Returns its input: the glue's uint8 -> [-1, 1] -> uint8 conversion must then be lossless."""

        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))
            self.calls = []

        def forward(self, pixel_values: torch.Tensor, mask: torch.Tensor) -> SimpleNamespace:
            self.calls.append((pixel_values.shape, mask.shape, mask.dtype))
            assert not torch.is_grad_enabled()
            return SimpleNamespace(reconstruction=pixel_values * self.scale)

    model = Identity()
    inpaint = ModelInpainter(model, batch_size=2)
    images = np.stack([smooth_image(seed) for seed in range(5)])
    holes = np.zeros((5, IMAGE_SIZE, IMAGE_SIZE), bool)
    np.testing.assert_array_equal(inpaint.batch(images, holes), images)
    assert [call[0][0] for call in model.calls] == [2, 2, 1]
    assert model.calls[0][1:] == ((2, 1, IMAGE_SIZE, IMAGE_SIZE), torch.float32)
    np.testing.assert_array_equal(inpaint(images[0], holes[0]), images[0])


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
    assert "| Telea LPIPS | Telea FID |" in (output_dir / "report.md").read_text()
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
            ratio = load_mask(mask_path(mask_dir, index, bucket)).mean()
            # Nearest resizing from 512 to 256 moves the ratio only slightly out of its bucket.
            assert bucket * 0.1 - 0.01 < ratio <= bucket * 0.1 + 0.11, (index, bucket, ratio)
