"""Tests of the object-hole sets (med_hf.evaluation.object_masks) and of `training/evaluate.py --masks objects`.

Label maps are drawn in tmp_path; the last tests read the shared segmentations and skip when they are absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_evaluation import load_cli, smooth_image

from med_hf.evaluation import evaluate_methods, list_images, protocol_image, telea
from med_hf.evaluation.object_masks import (
    OBJECT_BUCKETS,
    ObjectMasks,
    dilate,
    label_maps,
    object_regions,
    own_object,
    protocol_labels,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_SEGMENTATIONS = REPO_ROOT.parent / "shared" / "data" / "bsds500" / "segmentations"


def write_labels(path: Path, labels: np.ndarray) -> None:
    """A 16-bit label map as BSDS500 ships them."""
    Image.fromarray(labels.astype(np.uint16)).save(path)


def scene_labels(height: int, width: int, objects: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Label 1 = sky (top half), 2 = ground, then one label per (top, left, bottom, right) box."""
    labels = np.ones((height, width), np.int32)
    labels[height // 2 :] = 2
    for k, (top, left, bottom, right) in enumerate(objects):
        labels[top:bottom, left:right] = 3 + k
    return labels


def test_object_regions_keep_what_touches_little_of_the_border():
    labels = scene_labels(100, 100, [(30, 30, 60, 60), (80, 0, 100, 40)])
    regions = object_regions(labels)
    # Sky and ground touch half the border each; the second box touches 20 + 40 + 19 of 396 border pixels (20 %).
    assert len(regions) == 1 and regions[0].sum() == 30 * 30 and regions[0][30:60, 30:60].all()
    # A small object on the border (4 of 396 pixels, 1 %) is still an object.
    small = object_regions(scene_labels(100, 100, [(0, 48, 3, 50)]))
    assert len(small) == 1


def test_dilate_grows_by_the_brush_radius():
    region = np.zeros((41, 41), bool)
    region[20, 20] = True
    grown = dilate(region, 9)
    rows, columns = np.nonzero(grown)
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (16, 24, 16, 24)
    assert not grown[16, 16]  # an ellipse, not a square


def test_protocol_labels_crop_and_resize_like_the_images():
    labels = np.zeros((100, 200), np.int32)
    labels[:, 50:150] = 7  # exactly the centre square
    resized = protocol_labels(labels, 64)
    assert resized.shape == (64, 64) and (resized == 7).all()
    assert protocol_labels(np.arange(12).reshape(3, 4) + 40000, 3).max() >= 40000  # 16-bit labels survive


@pytest.fixture
def segmentations(tmp_path: Path) -> Path:
    """Four photos' label maps (two annotators for one) with objects of about 4, 14 and 24 % of the square."""
    folder = tmp_path / "segmentations"
    folder.mkdir()
    boxes = {
        "1": [(120, 120, 170, 170)],  # 50x50 of 256x256 crops: ~4 % before dilation
        "2": [(80, 80, 180, 180)],
        "3": [(60, 60, 190, 190)],
        "4": [(100, 40, 130, 70), (60, 150, 160, 250)],
    }
    for photo, objects in boxes.items():
        shifted = [(top, left + 22, bottom, right + 22) for top, left, bottom, right in objects]
        write_labels(folder / f"{photo}_0.png", scene_labels(256, 300, shifted))
    write_labels(folder / "2_1.png", scene_labels(256, 300, [(90, 100, 170, 170)]))
    return folder


def test_object_masks_bucket_by_hole_ratio_and_pair_like_the_protocol(segmentations: Path):
    masks = ObjectMasks(segmentations)
    assert masks.buckets == OBJECT_BUCKETS
    counts = masks.counts()
    assert sum(counts.values()) == 5 and all(count >= 1 for count in counts.values())
    for bucket in OBJECT_BUCKETS:
        holes = [masks.hole(index, bucket) for index in range(10)]
        for hole in holes:
            assert hole.shape == (256, 256) and hole.dtype == bool
            assert bucket * 0.1 < hole.mean() <= bucket * 0.1 + 0.1
        # Photo i gets mask (i * 37) % n: with n masks the pairing repeats every n photos.
        assert all(np.array_equal(holes[index], holes[index % counts[bucket]]) for index in range(10))
    again = ObjectMasks(segmentations)
    assert all(np.array_equal(masks.hole(3, b), again.hole(3, b)) for b in OBJECT_BUCKETS)


def test_object_masks_refuse_an_empty_bucket_or_folder(tmp_path: Path, segmentations: Path):
    for path in segmentations.glob("3_*.png"):
        path.unlink()
    with pytest.raises(ValueError, match="20-30 %"):
        ObjectMasks(segmentations)
    with pytest.raises(FileNotFoundError, match="no <photo id>_<annotator>.png"):
        ObjectMasks(tmp_path)  # holds only a folder
    with pytest.raises(FileNotFoundError, match="does not exist"):
        label_maps(tmp_path / "nothing")


def test_own_object_is_the_largest_object_at_full_size(segmentations: Path):
    hole = own_object(segmentations, "4")
    assert hole.shape == (256, 300)
    # The larger box (100x100 of 256x300: 13 %) dilated by 6 px; the small one stays.
    assert hole[60:160, 172:272].all() and hole[54, 200] and not hole[53, 200]
    assert not hole[115, 75]
    assert own_object(segmentations, "3") is None  # 130x130 = 22 % of the photo: more than an object to remove
    assert own_object(segmentations, "missing") is None


def test_evaluate_methods_on_object_holes(tmp_path: Path, segmentations: Path):
    images = [smooth_image(seed) for seed in range(3)]
    report = evaluate_methods({"telea": telea}, images, ObjectMasks(segmentations), progress=False)
    assert [bucket["label"] for bucket in report["buckets"]] == ["0-10 %", "10-20 %", "20-30 %"]
    assert report["protocol"]["mask"] == ObjectMasks.description
    for bucket, entry in zip(report["buckets"], report["methods"]["telea"]["buckets"], strict=True):
        assert bucket["bucket"] * 0.1 < bucket["hole_ratio"]["mean"] <= bucket["bucket"] * 0.1 + 0.1
        assert entry["psnr"]["mean"] > 20 and entry["swd"] > 0


def test_cli_object_holes(tmp_path: Path, segmentations: Path, capsys):
    val_dir = tmp_path / "val"
    val_dir.mkdir()
    for seed in range(2):
        Image.fromarray(smooth_image(seed, 120, 150)).save(val_dir / f"img{seed}.png")
    output_dir = tmp_path / "out"
    cli = load_cli()
    args = ["--val_dir", str(val_dir), "--masks", "objects", "--segmentation_dir", str(segmentations)]
    cli.main([*args, "--baselines", "telea", "--output_dir", str(output_dir), "--save_images", "2"])
    report = json.loads((output_dir / "report.json").read_text())
    assert len(report["buckets"]) == 3 and report["data"]["segmentation_dir"] == str(segmentations)
    assert "mask_dir" not in report["data"]
    assert "| 20-30 % |" in capsys.readouterr().out
    with Image.open(output_dir / "examples.png") as grid:
        assert grid.width > 500
    with pytest.raises(SystemExit):
        cli.main([*args, "--buckets", "4", "--output_dir", str(output_dir)])
    assert "has buckets [0, 1, 2], not [4]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--val_dir", str(val_dir), "--masks", "objects", "--output_dir", str(output_dir)])
    assert "needs --segmentation_dir" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ shared data


@pytest.mark.skipif(
    not (SHARED_SEGMENTATIONS / "train").is_dir(),
    reason="the shared segmentations (../shared/data/bsds500/segmentations) are absent",
)
def test_shared_object_set():
    masks = ObjectMasks(SHARED_SEGMENTATIONS / "train")
    counts = masks.counts()
    assert counts[0] > counts[1] > counts[2] >= 20, counts
    for bucket in OBJECT_BUCKETS:
        for index in range(0, 100, 20):
            assert bucket * 0.1 < masks.hole(index, bucket).mean() <= bucket * 0.1 + 0.1
    val = SHARED_SEGMENTATIONS.parent / "val"
    removable = [path for path in list_images(val) if own_object(SHARED_SEGMENTATIONS / "val", path.stem) is not None]
    assert len(removable) >= 8
    assert protocol_image(removable[0]).shape == (256, 256, 3)


@pytest.mark.slow
def test_removal_figures_script(tmp_path: Path, segmentations: Path):
    """training/removal_figures.py on photos with their own objects: the full-resolution figure (one row per photo,
    five columns) and, for a blind comparison, the four fills shuffled with their key."""
    import runpy
    import sys

    pytest.importorskip("patchmatch", reason="the pypatchmatch column needs the pypatchmatch package")
    val_dir = tmp_path / "val"
    val_dir.mkdir()
    for photo in ("1", "2", "4"):
        Image.fromarray(smooth_image(int(photo), 256, 300)).save(val_dir / f"{photo}.png")
    output, blind = tmp_path / "figures", tmp_path / "blind"
    argv = ["removal_figures.py", "--val_dir", str(val_dir), "--segmentation_dir", str(segmentations)]
    argv += ["--output_dir", str(output), "--count", "2", "--skip", "1", "--blind_dir", str(blind)]
    old_argv, sys.argv = sys.argv, argv
    try:
        runpy.run_path(str(REPO_ROOT / "training" / "removal_figures.py"), run_name="__main__")
    finally:
        sys.argv = old_argv
    # Photo "1" has a 3 % object (the first that qualifies, skipped), "2" and "4" objects of 13 %.
    assert sorted(path.name for path in blind.iterdir()) == ["2", "4"]
    key = json.loads((blind / "4" / "key.json").read_text())
    assert sorted(key.values()) == sorted(["default", "pypatchmatch", 'smooth (texture="none")', "Telea"])
    with Image.open(blind / "4" / "input.png") as shown, Image.open(output / "removal_examples.png") as figure:
        assert shown.size == (300, 256)
        assert figure.width >= 5 * 300 and figure.height >= 2 * 256
    hole = own_object(segmentations, "4")
    with Image.open(val_dir / "4.png") as photo, Image.open(blind / "4" / "A.png") as fill:
        assert np.array_equal(np.asarray(fill)[~hole], np.asarray(photo)[~hole])  # only the hole changes
