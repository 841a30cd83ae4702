"""Tests of med_hf.image_processing_med: every format round-trips with unmasked pixels bit-identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from med_hf.image_processing_med import (
    CropBox,
    ImageLoadError,
    ImageTooLargeError,
    MEDImageProcessor,
    check_image_size,
    composite,
    convert_output,
    dilate_mask,
    erase_holes,
    load_image,
    mask_crop_boxes,
    network_size,
    normalize_image,
    prepare_mask,
    resize_image,
    resize_mask,
)

# Odd, non-square sizes catch (width, height) / (H, W) mix-ups.
WIDTH, HEIGHT = 37, 23
LUMA = np.array([0.299, 0.587, 0.114])


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _hole() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[5:15, 8:20] = True
    # A notch and a second region put unmasked pixels inside the holes' bounding box too.
    mask[5:8, 8:11] = False
    mask[18, 30] = True
    return mask


def _prediction() -> np.ndarray:
    return _rng().random((HEIGHT, WIDTH, 3))


def _inpaint(image, output_type: str = "input", blur: float = 0):
    """Run everything but the network, whose output is `_prediction()`."""
    normalized = normalize_image(image)
    pixels = composite(normalized.pixels, _prediction(), _hole(), blur=blur)
    return normalized, convert_output(pixels, normalized, output_type)


def _pil_image(mode: str) -> Image.Image:
    rng = _rng()
    shape = (HEIGHT, WIDTH)
    if mode in ("RGB", "RGBA", "L", "LA"):
        channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
        values = rng.integers(0, 256, (*shape, channels), dtype=np.uint8)
        return Image.fromarray(values[..., 0] if channels == 1 else values)
    if mode == "1":
        return Image.fromarray(rng.random(shape) > 0.5)
    if mode in ("P", "PA"):
        palette = Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).quantize(16)
        return palette.convert(mode)
    if mode in ("I;16", "I;16B"):
        values = rng.integers(0, 65536, shape).astype(">u2" if mode == "I;16B" else "<u2")
        return Image.frombytes(mode, (WIDTH, HEIGHT), values.tobytes())
    if mode == "I":
        return Image.fromarray(rng.integers(0, 65536, shape).astype(np.int32))
    if mode == "F":
        return Image.fromarray(rng.random(shape).astype(np.float32))
    raise AssertionError(mode)


# (input mode, output mode): modes without a lossless working form come back in their family.
PIL_MODES = [
    ("RGB", "RGB"),
    ("RGBA", "RGBA"),
    ("L", "L"),
    ("LA", "LA"),
    ("1", "L"),
    ("P", "RGB"),
    ("PA", "RGBA"),
    ("I;16", "I;16"),
    ("I;16B", "I;16B"),
    ("I", "I"),
    ("F", "F"),
]


@pytest.mark.parametrize(("mode", "out_mode"), PIL_MODES)
def test_pil_modes_round_trip_with_unmasked_pixels_bit_identical(mode, out_mode):
    image = _pil_image(mode)
    assert image.mode == mode
    _, out = _inpaint(image)
    assert isinstance(out, Image.Image)
    assert out.mode == out_mode
    assert out.size == image.size
    before = np.asarray(image if out_mode == mode else image.convert(out_mode))
    after = np.asarray(out)
    assert after.dtype == before.dtype
    keep = ~_hole()
    np.testing.assert_array_equal(after[keep], before[keep])
    assert not np.array_equal(after[_hole()], before[_hole()])


ARRAYS = [
    np.arange(HEIGHT * WIDTH, dtype=np.uint8).reshape(HEIGHT, WIDTH),
    _rng().integers(0, 256, (HEIGHT, WIDTH, 1), dtype=np.uint8),
    _rng().integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8),
    _rng().integers(0, 256, (HEIGHT, WIDTH, 4), dtype=np.uint8),
    _rng().integers(0, 65536, (HEIGHT, WIDTH), dtype=np.uint16),
    _rng().integers(0, 65536, (HEIGHT, WIDTH, 3), dtype=np.uint16),
    _rng().integers(0, 65536, (HEIGHT, WIDTH)).astype(">u2"),
    _rng().random((HEIGHT, WIDTH, 3), dtype=np.float32),
    _rng().random((HEIGHT, WIDTH)),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}-{a.shape}")
def test_numpy_round_trip_keeps_dtype_shape_and_unmasked_pixels(array):
    _, out = _inpaint(array)
    assert isinstance(out, np.ndarray)
    assert out.dtype == array.dtype
    assert out.shape == array.shape
    keep = ~_hole()
    np.testing.assert_array_equal(out[keep], array[keep])
    assert not np.array_equal(out[_hole()], array[_hole()])


@pytest.mark.parametrize(
    "tensor",
    [
        torch.rand(3, HEIGHT, WIDTH),
        torch.randint(0, 256, (1, HEIGHT, WIDTH), dtype=torch.uint8),
        torch.rand(HEIGHT, WIDTH, dtype=torch.float64),
        torch.rand(4, HEIGHT, WIDTH),
    ],
    ids=lambda t: f"{t.dtype}-{tuple(t.shape)}",
)
def test_torch_round_trip_keeps_dtype_layout_and_unmasked_pixels(tensor):
    _, out = _inpaint(tensor)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == tensor.dtype
    assert out.shape == tensor.shape
    keep = torch.from_numpy(~_hole())
    torch.testing.assert_close(out[..., keep], tensor[..., keep], rtol=0, atol=0)
    assert not torch.equal(out[..., ~keep], tensor[..., ~keep])


def test_alpha_is_kept_outside_the_mask_and_filled_smoothly_inside():
    image = _pil_image("RGBA")
    _, out = _inpaint(image, blur=3)
    np.testing.assert_array_equal(np.asarray(out)[..., 3][~_hole()], np.asarray(image)[..., 3][~_hole()])
    # An alpha ramp across the hole is continued, whatever the hole's own alpha was.
    array = np.asarray(image).copy()
    array[..., 3] = np.linspace(0, 255, WIDTH).round().astype(np.uint8)
    array[_hole(), 3] = 7
    _, out_array = _inpaint(array)
    np.testing.assert_array_equal(out_array[~_hole(), 3], array[~_hole(), 3])
    ramp = np.linspace(0, 255, WIDTH)[None].repeat(HEIGHT, 0)
    # The membrane continues a ramp exactly: within rounding of the rounded known alpha.
    assert np.abs(out_array[..., 3][_hole()] - ramp[_hole()]).max() <= 1
    # Opaque around the hole: opaque inside; nothing known at all: opaque.
    array[..., 3] = 255
    array[_hole(), 3] = 0
    np.testing.assert_array_equal(_inpaint(array)[1][..., 3], 255)
    everything = np.ones((HEIGHT, WIDTH), dtype=bool)
    filled = composite(array, _prediction(), everything)
    np.testing.assert_array_equal(filled[..., 3], 255)


def test_masked_pixels_take_the_prediction_in_the_inputs_format():
    hole = _hole()
    prediction = _prediction()
    rgb8 = np.rint(prediction * 255)

    _, out = _inpaint(_pil_image("RGB"))
    np.testing.assert_array_equal(np.asarray(out)[hole], rgb8[hole])

    # Greyscale gets ITU-R 601-2 luma, within rounding of PIL's own conversion of the 8-bit prediction.
    _, out = _inpaint(_pil_image("L"))
    pil_luma = np.asarray(Image.fromarray(rgb8.astype(np.uint8)).convert("L")).astype(int)
    assert np.abs(np.asarray(out)[hole].astype(int) - pil_luma[hole]).max() <= 1

    _, out = _inpaint(_pil_image("I;16"))
    np.testing.assert_array_equal(np.asarray(out)[hole], np.rint(prediction @ LUMA * 65535)[hole])


def test_values_outside_the_nominal_range_survive_unmasked():
    # Mode "I" is read as 16-bit, but unmasked pixels must not go through any clipping conversion.
    values = _rng().integers(-1000, 100_000, (HEIGHT, WIDTH)).astype(np.int32)
    _, out = _inpaint(Image.fromarray(values))
    np.testing.assert_array_equal(np.asarray(out)[~_hole()], values[~_hole()])
    assert np.asarray(out)[_hole()].min() >= 0 and np.asarray(out)[_hole()].max() <= 65535


def test_palette_image_with_transparency_becomes_rgba():
    image = Image.new("P", (WIDTH, HEIGHT))
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.putdata([(i % 2) for i in range(WIDTH * HEIGHT)])
    image.info["transparency"] = 0
    normalized, out = _inpaint(image)
    assert normalized.has_alpha and out.mode == "RGBA"
    known = ~_hole()
    np.testing.assert_array_equal(np.asarray(out)[..., 3][known], np.asarray(image.convert("RGBA"))[..., 3][known])


def test_sixteen_bit_stays_sixteen_bit_and_8bit_values_scale_by_257():
    image = _pil_image("I;16")
    normalized = normalize_image(image)
    assert normalized.pixels.dtype == np.uint16
    grey = np.full((HEIGHT, WIDTH, 3), 200 / 255)
    out = convert_output(composite(normalized.pixels, grey, _hole()), normalized, "pil")
    assert out.mode == "I;16"
    assert (np.asarray(out)[_hole()] == 200 * 257).all()

    array = _rng().integers(0, 65536, (HEIGHT, WIDTH), dtype=np.uint16)
    normalized = normalize_image(array)
    out = convert_output(composite(normalized.pixels, grey, _hole()), normalized, "pil")
    assert out.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(out)[~_hole()], array[~_hole()])


def test_working_rgb_is_float_rgb_on_the_8bit_scale():
    grey16 = np.full((HEIGHT, WIDTH), 100 * 257, dtype=np.uint16)
    for image in (Image.fromarray(np.full((HEIGHT, WIDTH), 100, np.uint8)), grey16, _pil_image("RGBA")):
        rgb = normalize_image(image).rgb
        assert rgb.shape == (HEIGHT, WIDTH, 3)
        assert rgb.dtype == np.float32
        assert rgb.min() >= 0 and rgb.max() <= 1
    np.testing.assert_allclose(normalize_image(grey16).rgb, 100 / 255, rtol=1e-6)


def test_output_types_np_and_pt():
    image = _pil_image("RGB")
    _, as_np = _inpaint(image, "np")
    _, as_pt = _inpaint(image, "pt")
    _, as_pil = _inpaint(image, "pil")
    assert as_np.dtype == np.float32 and as_np.shape == (HEIGHT, WIDTH, 3)
    assert as_pt.dtype == torch.float32 and as_pt.shape == (3, HEIGHT, WIDTH)
    np.testing.assert_array_equal(as_np, np.asarray(as_pil) / np.float32(255))
    np.testing.assert_array_equal(as_pt.permute(1, 2, 0).numpy(), as_np)
    _, grey_np = _inpaint(_pil_image("L"), "np")
    assert grey_np.shape == (HEIGHT, WIDTH, 1)


def test_float_image_outside_unit_range_raises():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        normalize_image(np.full((4, 4, 3), 2.0))
    with pytest.raises(TypeError, match="uint8, uint16 or float"):
        normalize_image(np.zeros((4, 4, 3), dtype=np.int64))


def test_exif_rotated_jpeg_is_loaded_upright(tmp_path):
    # Left half red, right half blue; orientation 6 means "turn 90 degrees clockwise to view".
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)

    loaded = load_image(path)
    assert loaded.size == (20, 40)
    top, bottom = loaded.getpixel((10, 5)), loaded.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60

    # The same for a PIL image opened without it, and the output keeps the upright size.
    with Image.open(path) as raw:
        assert raw.size == (40, 20)
        normalized = normalize_image(raw)
    assert normalized.size == (20, 40)
    pixels = composite(normalized.pixels, np.zeros((40, 20, 3)), np.zeros((40, 20), bool))
    assert convert_output(pixels, normalized).size == (20, 40)


def test_corrupt_file_raises_load_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.png"
    Image.fromarray(_rng().integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="broken.png"):
        load_image(path)


def test_non_image_file_raises_load_error_naming_the_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    with pytest.raises(ImageLoadError, match="notes.txt"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="notes.txt"):
        normalize_image(str(path))


def test_memory_guard():
    check_image_size(8000, 8000)
    with pytest.raises(ImageTooLargeError, match="8001x8000"):
        check_image_size(8001, 8000)
    check_image_size(100_000, 100_000, max_pixels=None)
    assert issubclass(ImageTooLargeError, ValueError)
    with pytest.raises(ImageTooLargeError):
        normalize_image(np.zeros((10, 10, 3), dtype=np.uint8), max_pixels=99)
    with pytest.raises(ImageTooLargeError):
        normalize_image(Image.new("RGB", (10, 10)), max_pixels=99)


def test_too_large_file_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (20, 20)).save(path)
    with pytest.raises(ImageTooLargeError, match="big.png"):
        load_image(path, max_pixels=100)
    # The project's own limit replaces PIL's decompression-bomb limit, which the user cannot set.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert load_image(path, max_pixels=None).size == (20, 20)
    assert load_image(path, max_pixels=400).size == (20, 20)
    assert Image.MAX_IMAGE_PIXELS == 100


# --- masks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (np.array([[127, 128]], dtype=np.uint8), [False, True]),
        (Image.fromarray(np.array([[127, 128]], dtype=np.uint8)), [False, True]),
        (np.array([[127 * 257, 128 * 257]], dtype=np.uint16), [False, True]),
        (np.array([[127 * 257, 128 * 257]], dtype=">u2"), [False, True]),
        (Image.fromarray(np.array([[127 * 257, 128 * 257]], dtype=np.uint16)), [False, True]),
        (np.array([[0.5, 0.51]]), [False, True]),
        (np.array([[False, True]]), [False, True]),
        (torch.tensor([[[0.2, 0.9]]]), [False, True]),
        (Image.fromarray(np.array([[False, True]])), [False, True]),
        (Image.fromarray(np.array([[[127] * 3, [128] * 3]], dtype=np.uint8)), [False, True]),
        (
            Image.fromarray(np.array([[[255, 255, 255, 0], [255, 255, 255, 255]]], dtype=np.uint8)),
            [False, True],
        ),
        (Image.fromarray(np.array([[[255, 0], [255, 255]]], dtype=np.uint8), mode="LA"), [False, True]),
        (np.array([[[255, 255, 255, 0], [255, 255, 255, 255]]], dtype=np.uint8), [False, True]),
    ],
    ids=[
        "u8",
        "L",
        "u16",
        "u16-big-endian",
        "I;16",
        "float",
        "bool",
        "torch",
        "1",
        "RGB",
        "RGBA",
        "LA",
        "u8-RGBA",
    ],
)
def test_mask_threshold_and_modes(mask, expected):
    np.testing.assert_array_equal(prepare_mask(mask), [expected])


def test_palette_mask_uses_colours_and_transparency():
    mask = Image.new("P", (3, 1))
    mask.putpalette([0, 0, 0, 255, 255, 255, 200, 200, 200])
    mask.putdata([0, 1, 2])
    np.testing.assert_array_equal(prepare_mask(mask), [[False, True, True]])
    mask.info["transparency"] = 1
    np.testing.assert_array_equal(prepare_mask(mask), [[False, False, True]])


def test_ambiguous_or_out_of_range_masks_raise():
    with pytest.raises(ValueError, match="only 0 and 1"):
        prepare_mask(np.array([[0, 1]], dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        prepare_mask(np.array([[0.0, 255.0]]))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        prepare_mask(np.array([[0, 300]]))


def test_mask_size_mismatch_names_both_sizes():
    with pytest.raises(ValueError, match="20x10.*10x20"):
        prepare_mask(np.zeros((10, 20), dtype=bool), image_size=(10, 20))
    assert prepare_mask(np.zeros((10, 20), dtype=bool), image_size=(20, 10)).shape == (10, 20)


@pytest.mark.parametrize(("radius", "area"), [(1, 5), (3, 29), (5, 81)])
def test_dilation_grows_a_pixel_to_a_disk(radius, area):
    mask = np.zeros((21, 25), dtype=bool)
    mask[10, 12] = True
    grown = prepare_mask(mask, dilation=radius)
    assert grown.sum() == area  # lattice points within the disk
    rows, cols = np.nonzero(grown)
    assert ((rows - 10) ** 2 + (cols - 12) ** 2 <= radius**2).all()
    assert grown[10, 12 + radius] and grown[10 - radius, 12]
    assert not grown[10 - radius, 12 + 1]


def test_dilation_near_the_border_and_zero_radius():
    mask = np.zeros((8, 8), dtype=bool)
    mask[0, 0] = True
    np.testing.assert_array_equal(dilate_mask(mask, 0), mask)
    assert dilate_mask(mask, 2).sum() == 6  # the quarter disk inside the image


# --- compositing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("blur", [0, 2, 4.5])
def test_blur_changes_pixels_exactly_within_its_band(blur):
    # A float image shows every non-zero weight, however small.
    original = np.zeros((40, 50, 3), dtype=np.float32)
    hole = np.zeros((40, 50), dtype=bool)
    hole[15:25, 20:30] = True
    out = composite(original, np.ones((40, 50, 3)), hole, blur=blur)
    changed = (out != original).any(axis=-1)
    distance = ndimage.distance_transform_cdt(~hole, metric="chessboard")

    assert (out[hole] == 1).all()  # hole pixels take the full prediction
    np.testing.assert_array_equal(changed, distance <= np.ceil(blur))


def test_feather_fades_from_the_mask_edge_to_zero():
    original = np.zeros((9, 40, 3), dtype=np.float32)
    hole = np.zeros((9, 40), dtype=bool)
    hole[:, 20:] = True
    weights = composite(original, np.ones((9, 40, 3)), hole, blur=8)[4, 11:20, 0][::-1]  # distance 1 to 9
    assert weights[0] > 0.7
    assert (np.diff(weights) < 0).all()
    assert 0 < weights[7] < 0.05
    assert weights[8] == 0


def test_composite_without_holes_returns_an_equal_copy():
    original = _rng().integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    out = composite(original, _prediction(), np.zeros((HEIGHT, WIDTH), bool), blur=3)
    np.testing.assert_array_equal(out, original)
    assert out is not original


def test_composite_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="Shapes do not match"):
        composite(np.zeros((HEIGHT, WIDTH, 3), np.uint8), np.zeros((WIDTH, HEIGHT, 3)), _hole())


# --- crops and resizing -------------------------------------------------------------------------------------


def _blob_mask(shape, *blobs) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for top, left, bottom, right in blobs:
        mask[top:bottom, left:right] = True
    return mask


def _contains(box: CropBox, top: int, left: int, bottom: int, right: int, margin: int, shape) -> bool:
    return (
        box.left <= max(left - margin, 0)
        and box.top <= max(top - margin, 0)
        and box.right >= min(right + margin, shape[1])
        and box.bottom >= min(bottom + margin, shape[0])
    )


def test_far_apart_blobs_give_separate_square_boxes():
    shape = (800, 1000)
    blobs = [(100, 100, 110, 112), (600, 800, 620, 830)]
    boxes = mask_crop_boxes(_blob_mask(shape, *blobs), margin=128, min_size=256)
    assert len(boxes) == 2
    for box, blob in zip(boxes, blobs, strict=True):
        assert _contains(box, *blob, margin=128, shape=shape)
        assert 0 <= box.left < box.right <= shape[1] and 0 <= box.top < box.bottom <= shape[0]
        assert box.width == box.height >= 256
    first, second = boxes
    assert first.right < second.left or first.bottom < second.top


def test_nearby_blobs_merge_into_one_box():
    shape = (800, 1000)
    blobs = [(300, 300, 320, 320), (300, 500, 320, 520)]  # margins of 128 overlap
    boxes = mask_crop_boxes(_blob_mask(shape, *blobs), margin=128, min_size=256)
    assert len(boxes) == 1
    assert all(_contains(boxes[0], *blob, margin=128, shape=shape) for blob in blobs)


def test_box_is_the_blob_plus_margin_when_that_is_large_enough():
    blob = (100, 200, 120, 220)
    boxes = mask_crop_boxes(_blob_mask((500, 500), blob), margin=30, min_size=64)
    assert boxes == [CropBox(170, 70, 250, 150)]


def test_oblong_regions_get_square_boxes():
    boxes = mask_crop_boxes(_blob_mask((1000, 1000), (300, 500, 700, 520)), margin=16, min_size=256)
    assert boxes == [CropBox(294, 284, 726, 716)]


def test_boxes_are_clipped_to_small_images_and_empty_masks_give_none():
    shape = (80, 100)
    boxes = mask_crop_boxes(_blob_mask(shape, (70, 0, 80, 5)), margin=128, min_size=256)
    assert boxes == [CropBox(0, 0, 100, 80)]
    assert mask_crop_boxes(np.zeros(shape, dtype=bool)) == []


def test_boxes_near_the_border_are_shifted_inside():
    shape = (1000, 1000)
    boxes = mask_crop_boxes(_blob_mask(shape, (990, 990, 1000, 1000)), margin=16, min_size=256)
    assert boxes == [CropBox(744, 744, 1000, 1000)]


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1000, 500), (256, 128)), ((1000, 700), (256, 192)), ((300, 300), (256, 256)), ((100, 10), (256, 64))],
)
def test_network_size_scales_the_long_side_and_rounds_to_64(size, expected):
    assert network_size(*size) == expected


def test_resize_image_keeps_float_precision():
    image = np.full((30, 50, 3), 0.5, dtype=np.float32)
    resized = resize_image(image, (64, 32))
    assert resized.shape == (32, 64, 3) and resized.dtype == np.float32
    np.testing.assert_allclose(resized, 0.5, atol=1e-5)


def test_resized_hole_covers_the_filter_footprint():
    mask = np.zeros((64, 64), dtype=bool)
    mask[33, 33] = True
    small = resize_mask(mask, (16, 16))
    assert small[8, 8]
    # Lanczos reads 3 target pixels either side at a 4x shrink: the neighbours of (8, 8) read (33, 33) too,
    # pixels far away do not.
    assert small[6:11, 6:11].all()
    assert not small[:4].any() and not small[:, 13:].any()
    assert resize_mask(np.ones((4, 4), bool), (8, 6)).shape == (6, 8)
    # No resampling at the same size, so nothing is grown: the network sees exactly the hole.
    np.testing.assert_array_equal(resize_mask(mask, (64, 64)), mask)


@pytest.mark.parametrize("resample", [Image.Resampling.LANCZOS, Image.Resampling.BICUBIC, Image.Resampling.BILINEAR])
@pytest.mark.parametrize(("shape", "size"), [((301, 187), (256, 128)), ((100, 61), (256, 192)), ((64, 64), (64, 64))])
def test_resized_known_pixels_never_depend_on_hidden_ones(resample, shape, size):
    rng = _rng()
    hole = np.zeros(shape, dtype=bool)
    hole[20:45, 10:40] = True
    hole[rng.random(shape) < 0.002] = True
    first = rng.random((*shape, 3), dtype=np.float32)
    second = first.copy()
    second[hole] = rng.random((int(hole.sum()), 3), dtype=np.float32)
    small_hole = resize_mask(hole, size, resample)
    assert small_hole.any() and not small_hole.all()
    # Without any erasing: a resized pixel outside the resized hole reads no hole pixel at all.
    np.testing.assert_array_equal(
        resize_image(first, size, resample)[~small_hole], resize_image(second, size, resample)[~small_hole]
    )


def test_erase_holes_blanks_exactly_the_holes():
    rgb = _rng().random((HEIGHT, WIDTH, 3), dtype=np.float32)
    erased = erase_holes(rgb, _hole())
    assert (erased[_hole()] == 0).all()
    np.testing.assert_array_equal(erased[~_hole()], rgb[~_hole()])


@pytest.mark.parametrize("strategy", ["crop", "resize", "original"])
def test_processor_tiles_with_a_stand_in_network(strategy):
    processor = MEDImageProcessor()
    photo = _rng().integers(0, 256, (400, 600, 3), dtype=np.uint8)
    image = processor.preprocess(Image.fromarray(photo))
    mask = processor.preprocess_mask(_blob_mask((400, 600), (100, 100, 120, 140)), image, dilation=4)
    result = image.pixels.copy()
    tiles = processor.tiles(mask, strategy)
    assert len(tiles) == 1
    for tile in tiles:
        rgb, hole = processor.tile_input(image.rgb, mask, tile)
        assert (hole.shape[1], hole.shape[0]) == tile.size and rgb.shape[:2] == hole.shape
        assert hole.shape[0] % 64 == 0 and hole.shape[1] % 64 == 0
        assert (rgb[hole] == 0).all() or not tile.padded  # erased before padding
        if strategy != "original":
            assert max(hole.shape) == 256
        rows, cols = tile.box.slices
        result[rows, cols] = processor.composite(image, processor.tile_output(1 - rgb, tile), mask, box=tile.box)
    out = processor.postprocess(result, image)
    assert out.size == (600, 400) and out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out)[~mask], photo[~mask])
    assert not np.array_equal(np.asarray(out)[mask], photo[mask])
    assert processor.tiles(np.zeros((400, 600), bool), strategy) == []


def test_original_tiles_pad_holes_like_pixels():
    processor = MEDImageProcessor()
    rgb = _rng().random((70, 100, 3), dtype=np.float32)
    mask = np.zeros((70, 100), dtype=bool)
    mask[60:70, 90:100] = True  # touches the corner: the reflected padding must be a hole too
    (tile,) = processor.tiles(mask, "original")
    assert tile.size == (128, 128) and tile.padded
    padded_rgb, padded_hole = processor.tile_input(rgb, mask, tile)
    # Reflection without repeating the edge: rows 70-78 mirror rows 68-60, which are holes.
    assert padded_hole[70:79, 90:100].all() and padded_hole[60:70, 100:109].all()
    assert not padded_hole[79].any() and not padded_hole[:59].any()
    assert (padded_rgb[padded_hole] == 0).all()
    np.testing.assert_array_equal(
        padded_rgb[~padded_hole], np.pad(rgb, ((0, 58), (0, 28), (0, 0)), "reflect")[~padded_hole]
    )
