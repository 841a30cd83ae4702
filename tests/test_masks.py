from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from med_hf.evaluation import mask_path, protocol_mask_name, protocol_mask_names
from med_hf.training.masks import (
    MaskFolder,
    MaskSampler,
    box_mask,
    free_form_mask,
)


def _save(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array.astype(np.uint8)).save(path)


def _assert_binary_mask(mask: np.ndarray, height: int, width: int) -> None:
    assert mask.shape == (height, width)
    assert mask.dtype == np.float32
    assert set(np.unique(mask).tolist()) <= {0.0, 1.0}


def _rows_folder(root: Path, count: int = 6, size: int = 16) -> Path:
    """Square masks whose file ``k`` has its top ``k + 1`` rows white, so the hole area names the file."""
    root.mkdir()
    for k in range(count):
        array = np.zeros((size, size))
        array[: k + 1] = 255
        # One upper-case extension, to check that extensions are matched case-insensitively.
        _save(root / f"{k:05d}.{'BMP' if k == 3 else 'png'}", array)
    (root / "notes.txt").write_text("not a mask")
    return root


@pytest.mark.parametrize("size", [(64, 64), (48, 80), (7, 5)])
def test_free_form_mask_shape_dtype_values(size):
    mask = free_form_mask(*size, np.random.default_rng(0))
    _assert_binary_mask(mask, *size)
    assert mask.any()


def test_free_form_mask_is_deterministic_per_seed():
    first = free_form_mask(64, 64, np.random.default_rng(123))
    again = free_form_mask(64, 64, np.random.default_rng(123))
    other = free_form_mask(64, 64, np.random.default_rng(124))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_free_form_mask_hole_ratio_distribution():
    rng = np.random.default_rng(0)
    ratios = np.array([free_form_mask(128, 128, rng).mean() for _ in range(200)])
    low, median, high = np.percentile(ratios, [10, 50, 90])
    assert 0.02 < low < 0.15
    assert 0.15 < median < 0.40
    assert 0.30 < high < 0.65
    assert ratios.min() > 0 and ratios.max() < 0.8


def test_centre_box_is_centred_half_side():
    mask = box_mask(256, 256, np.random.default_rng(0), centre=True)
    expected = np.zeros((256, 256), dtype=np.float32)
    expected[64:192, 64:192] = 1
    np.testing.assert_array_equal(mask, expected)

    # Odd margins put the extra pixel below and to the right: a 25 x 15 box at rows 38..62, columns 22..36.
    mask = box_mask(101, 60, np.random.default_rng(0), centre=True, scale=0.25)
    expected = np.zeros((101, 60), dtype=np.float32)
    expected[38:63, 22:37] = 1
    np.testing.assert_array_equal(mask, expected)


def test_random_box_is_one_rectangle_inside_the_image():
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = box_mask(40, 60, rng, side=(0.2, 0.5))
        _assert_binary_mask(mask, 40, 60)
        rows, cols = np.nonzero(mask)
        box_h, box_w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert mask.sum() == box_h * box_w
        assert 8 <= box_h <= 20 and 12 <= box_w <= 30
    first = box_mask(40, 60, np.random.default_rng(5))
    np.testing.assert_array_equal(first, box_mask(40, 60, np.random.default_rng(5)))
    assert not np.array_equal(first, box_mask(40, 60, np.random.default_rng(6)))


def test_box_mask_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="scale"):
        box_mask(32, 32, rng, centre=True, scale=1.5)
    with pytest.raises(ValueError, match="side"):
        box_mask(32, 32, rng, side=(0.6, 0.2))
    with pytest.raises(ValueError, match="positive"):
        box_mask(0, 32, rng)


def test_mask_folder_thresholds_at_127(tmp_path):
    array = np.zeros((8, 8))
    array[:, 4:] = 128
    array[:, :4] = 127
    array[0, 0] = 255
    _save(tmp_path / "a.png", array)
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(tmp_path / "b.png")

    folder = MaskFolder(tmp_path, flip=False, rotate=False, zoom_range=(1.0, 1.0))
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[:, 4:] = 1
    expected[0, 0] = 1
    np.testing.assert_array_equal(folder.load(0), expected)
    assert folder.load(1).all()  # RGB files are converted to grayscale first

    rng = np.random.default_rng(0)
    samples = [folder.sample(8, 8, rng) for _ in range(20)]
    assert any(np.array_equal(sample, expected) for sample in samples)


def test_mask_folder_resizes_with_nearest(tmp_path):
    array = np.zeros((64, 64))
    array[:, :32] = 255
    _save(tmp_path / "half.png", array)
    folder = MaskFolder(tmp_path, flip=False, rotate=False, zoom_range=(1.0, 1.0))
    mask = folder.sample(16, 24, np.random.default_rng(0))
    expected = np.zeros((16, 24), dtype=np.float32)
    expected[:, :12] = 1
    np.testing.assert_array_equal(mask, expected)

    augmented = MaskFolder(tmp_path, zoom_range=(1.0, 1.5))
    rng = np.random.default_rng(0)
    for _ in range(20):
        _assert_binary_mask(augmented.sample(30, 20, rng), 30, 20)


def test_mask_folder_augments_orientation_and_is_deterministic(tmp_path):
    array = np.zeros((32, 32))
    array[:8, :8] = 255
    _save(tmp_path / "corner.png", array)
    folder = MaskFolder(tmp_path, zoom_range=(1.0, 1.0))
    rng = np.random.default_rng(0)
    corners = set()
    for _ in range(40):
        mask = folder.sample(32, 32, rng)
        rows, cols = np.nonzero(mask)
        corners.add((rows.min() == 0, cols.min() == 0))
    assert len(corners) == 4

    zoomed = MaskFolder(tmp_path, zoom_range=(1.1, 1.5))
    first = zoomed.sample(32, 32, np.random.default_rng(7))
    np.testing.assert_array_equal(first, zoomed.sample(32, 32, np.random.default_rng(7)))
    assert any(not np.array_equal(first, zoomed.sample(32, 32, np.random.default_rng(s))) for s in range(8, 12))


def test_mask_folder_lists_sorted_images_only(tmp_path):
    folder = MaskFolder(_rows_folder(tmp_path / "masks"))
    assert [p.name for p in folder.files] == [
        "00000.png",
        "00001.png",
        "00002.png",
        "00003.BMP",
        "00004.png",
        "00005.png",
    ]
    assert len(folder) == 6
    for k in range(6):
        assert folder.load(k).sum() == 16 * (k + 1)


def test_mask_folder_never_samples_excluded_files(tmp_path):
    root = _rows_folder(tmp_path / "masks")
    folder = MaskFolder(root, exclude=["00001.png", 4], zoom_range=(1.0, 1.0))
    assert len(folder) == 4
    rng = np.random.default_rng(0)
    # Flips and 90-degree rotations keep the hole area, which identifies the file.
    seen = {int(folder.sample(16, 16, rng).sum()) // 16 - 1 for _ in range(200)}
    assert seen == {0, 2, 3, 5}


def test_mask_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        MaskFolder(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no masks here")
    with pytest.raises(ValueError, match="no"):
        MaskFolder(empty)

    root = _rows_folder(tmp_path / "masks")
    with pytest.raises(ValueError, match="not a mask file"):
        MaskFolder(root, exclude=["99999.png"])
    with pytest.raises(ValueError, match="out of range"):
        MaskFolder(root, exclude=[6])
    with pytest.raises(ValueError, match="excluded"):
        MaskFolder(root, exclude=range(6))
    with pytest.raises(ValueError, match="zoom_range"):
        MaskFolder(root, zoom_range=(0.5, 1.0))


def test_mask_sampler_respects_ratios(tmp_path):
    # A checkerboard cannot come from strokes or boxes, and flips and rotations map it onto itself or its
    # complement, so folder masks are recognisable by their content alone.
    checker = (np.indices((32, 32)) // 4).sum(axis=0) % 2
    _save(tmp_path / "checker.png", checker * 255)
    folder = MaskFolder(tmp_path, zoom_range=(1.0, 1.0))
    sampler = MaskSampler({"free_form": 0.5, "box": 0.1, "folder": 0.4}, folder=folder)
    expected = {"free_form": 0.5, "box": 0.1, "centre_box": 0.0, "folder": 0.4, "objects": 0.0}
    assert sampler.probabilities == pytest.approx(expected)

    rng = np.random.default_rng(0)
    counts = {name: 0 for name in MaskSampler.SOURCES}
    checkers = 0
    for _ in range(400):
        mask, source = sampler.sample_with_source(32, 32, rng)
        _assert_binary_mask(mask, 32, 32)
        counts[source] += 1
        checkers += np.array_equal(mask, checker) or np.array_equal(mask, 1 - checker)
    assert checkers == counts["folder"]
    # Binomial standard deviations are 10, 6 and 10 samples.
    assert abs(counts["free_form"] - 200) < 45
    assert abs(counts["box"] - 40) < 25
    assert abs(counts["folder"] - 160) < 45
    assert counts["centre_box"] == 0


def test_mask_sampler_weights_are_normalised_and_deterministic():
    sampler = MaskSampler({"free_form": 3, "centre_box": 1}, centre_scale=0.5)
    assert sampler.probabilities["free_form"] == pytest.approx(0.75)
    assert sampler.probabilities["centre_box"] == pytest.approx(0.25)
    first = [sampler.sample(32, 32, np.random.default_rng(9)) for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])

    rng = np.random.default_rng(0)
    centre = box_mask(32, 32, rng, centre=True)
    sources = [sampler.sample_with_source(32, 32, rng) for _ in range(100)]
    assert all(np.array_equal(mask, centre) for mask, source in sources if source == "centre_box")
    assert {source for _, source in sources} == {"free_form", "centre_box"}


def test_mask_sampler_validation(tmp_path):
    with pytest.raises(ValueError, match="Unknown"):
        MaskSampler({"freeform": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        MaskSampler({"free_form": 1.0, "box": -0.1})
    with pytest.raises(ValueError, match="non-negative"):
        MaskSampler({"free_form": float("nan")})
    with pytest.raises(ValueError, match="positive sum"):
        MaskSampler({"free_form": 0.0, "box": 0})
    with pytest.raises(ValueError, match="positive sum"):
        MaskSampler({})
    with pytest.raises(ValueError, match="folder"):
        MaskSampler({"free_form": 0.5, "folder": 0.5})
    with pytest.raises(ValueError, match="max_tries"):
        MaskSampler({"free_form": 1.0}, max_tries=0)


def test_mask_sampler_never_returns_uniform_masks(tmp_path):
    _save(tmp_path / "0_blank.png", np.zeros((16, 16)))
    _save(tmp_path / "1_full.png", np.full((16, 16), 255))
    mixed = np.zeros((16, 16))
    mixed[4:12, 4:12] = 255
    _save(tmp_path / "2_mixed.png", mixed)
    sampler = MaskSampler({"folder": 1.0}, folder=MaskFolder(tmp_path, zoom_range=(1.0, 1.0)))
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert sampler.sample(16, 16, rng).sum() == 64

    broken = MaskSampler({"folder": 1.0}, folder=MaskFolder(tmp_path, exclude=[2]), max_tries=5)
    with pytest.raises(RuntimeError, match="all-known or all-hole"):
        broken.sample(16, 16, rng)


def test_protocol_mask_names_are_the_files_the_evaluation_opens(tmp_path):
    names = protocol_mask_names(100)
    assert len(names) == len(set(names)) == 600
    assert names == sorted(names)
    for image, bucket, expected in [(0, 0, 0), (1, 0, 37), (54, 0, 1998), (55, 0, 35), (99, 5, 11663), (2, 3, 6074)]:
        assert protocol_mask_name(image, bucket) == f"{expected:05d}.png" in names
        assert mask_path(_mask_dir_with(tmp_path, f"{expected:05d}.png"), image, bucket).name == f"{expected:05d}.png"
    assert [sum(b * 2000 <= int(n[:5]) < (b + 1) * 2000 for n in names) for b in range(6)] == [100] * 6
    assert protocol_mask_names(3, buckets=[1]) == ["02000.png", "02037.png", "02074.png"]
    assert protocol_mask_names(0) == []


def _mask_dir_with(root: Path, name: str) -> Path:
    folder = root / name.removesuffix(".png")
    folder.mkdir(exist_ok=True)
    _save(folder / name, np.zeros((4, 4)))
    return folder


def test_training_excludes_the_evaluation_masks_by_name(tmp_path):
    """A stray file in the mask folder shifts every position but not the names: nothing leaks."""
    folder = tmp_path / "masks"
    folder.mkdir()
    for index in range(40):
        _save(folder / f"{index:05d}.png", np.full((8, 8), 255 if index in (0, 37) else 0))
    _save(folder / "00000a.png", np.zeros((8, 8)))  # sorts between 00000.png and 00001.png
    masks = MaskFolder(folder, exclude=protocol_mask_names(2, buckets=[0]), rotate=False, flip=False)
    assert {masks.files[i].name for i in masks.indices}.isdisjoint({"00000.png", "00037.png"})
    assert len(masks) == 39
    rng = np.random.default_rng(0)
    assert all(masks.sample(8, 8, rng).sum() == 0 for _ in range(50))


def test_object_shapes_are_dilated_object_regions(tmp_path):
    """The 'objects' source: an object region of a label map (never the background that fills the border), where it
    lies in its photo, grown by an odd brush, flipped or not."""
    from med_hf.training.masks import ObjectShapes

    labels = np.ones((60, 90), np.uint16)
    labels[40:] = 2  # ground: touches much of the border, not an object
    labels[20:30, 10:25] = 3  # an object left of the centre
    Image.fromarray(labels).save(tmp_path / "1_0.png")
    shapes = ObjectShapes(tmp_path, max_dilation=5)
    rng = np.random.default_rng(0)
    masks = [shapes.sample(60, 90, rng) for _ in range(40)]
    for mask in masks:
        assert mask.dtype == np.float32 and mask.shape == (60, 90) and set(np.unique(mask)) <= {0.0, 1.0}
        rows, columns = np.nonzero(mask)
        assert 18 <= rows.min() <= 20 and 29 <= rows.max() <= 31  # the object's rows, grown by 0-2 px
        assert (columns.max() < 45) != (columns.min() > 45)  # left as drawn, or mirrored to the right
    assert {masks[k].sum() for k in range(40)} != {masks[0].sum()}  # brushes of several sizes
    assert any(mask[:, :45].any() for mask in masks) and any(mask[:, 45:].any() for mask in masks)
    again = np.random.default_rng(0)
    assert all(np.array_equal(mask, shapes.sample(60, 90, again)) for mask in masks)
    sampler = MaskSampler({"objects": 1.0}, objects=shapes)
    assert sampler.sample_with_source(32, 48, rng)[1] == "objects"
    with pytest.raises(ValueError, match="needs `objects`"):
        MaskSampler({"objects": 1.0})
