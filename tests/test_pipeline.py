"""MEDInpaintPipeline end to end with a tiny random MEDFE: loading, input/output types, pixel-exact compositing,
high-resolution strategies (crops are counted through a forward hook on the model), image modes and edge cases.

Pixel-level format conversions are covered by test_image_processing.py; here the real network runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from diffusers import ImagePipelineOutput
from PIL import Image, ImageDraw, ImageOps
from scipy import ndimage

from med_hf import MEDConfig, MEDModel
from med_hf.pipeline_med import MEDInpaintPipeline

WORKING_SIZE = 256
Box = tuple[int, int, int, int]


# --- fixtures and helpers --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """The tiny preset, working at 256 px, saved as a bare MEDModel folder."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "model"
    MEDModel(MEDConfig.from_preset("tiny", image_size=WORKING_SIZE)).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def pipe(model_dir) -> MEDInpaintPipeline:
    pipeline = MEDInpaintPipeline.from_pretrained(model_dir)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture
def forward_calls(pipe) -> list[tuple[int, ...]]:
    """Shapes (B, C, H, W) of the `pixel_values` of every forward pass of the model during the test."""
    calls: list[tuple[int, ...]] = []

    def record(module, args, kwargs):
        pixel_values = kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]
        calls.append(tuple(pixel_values.shape))

    handle = pipe.model.register_forward_pre_hook(record, with_kwargs=True)
    yield calls
    handle.remove()


def photo(width: int, height: int) -> Image.Image:
    """A real photo (scikit-image's astronaut) scaled to `width` x `height`."""
    return Image.fromarray(skimage.data.astronaut()).resize((width, height), Image.Resampling.BICUBIC)


def blob_mask(size: tuple[int, int], *ellipses: Box, value: int = 255) -> Image.Image:
    """Mode L mask with `value` on each ellipse (left, top, right, bottom) and 0 elsewhere."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for ellipse in ellipses:
        draw.ellipse(ellipse, fill=value)
    return mask


def holes(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask.convert("L")) > 127


def assert_inpainted(before: np.ndarray, after: np.ndarray, hole: np.ndarray, min_changed: float = 0.5) -> None:
    """Bit-identical outside `hole`, and most pixels inside it changed."""
    assert after.shape == before.shape
    assert after.dtype == before.dtype
    np.testing.assert_array_equal(after[~hole], before[~hole])
    changed = np.any(np.atleast_3d(after != before), axis=-1)
    assert changed[hole].mean() > min_changed, f"only {changed[hole].mean():.0%} of the hole changed"


SMALL = (301, 187)  # odd sizes, below the crop trigger
SMALL_BLOB = (120, 60, 170, 110)
BIG = (1600, 1200)
FAR_BLOBS = ((150, 150, 230, 220), (1350, 950, 1450, 1040))


# --- loading and saving ----------------------------------------------------------------------------------


def test_from_pretrained_loads_a_bare_model_folder(pipe, model_dir):
    assert isinstance(pipe, MEDInpaintPipeline)
    assert isinstance(pipe.model, MEDModel)
    assert not pipe.model.training
    assert pipe.image_processor.working_size == WORKING_SIZE
    expected = MEDModel.from_pretrained(model_dir).state_dict()
    loaded = pipe.model.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def test_save_pretrained_writes_a_pipeline_folder_that_loads_back(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "model_index.json").is_file()
    reloaded = MEDInpaintPipeline.from_pretrained(tmp_path / "pipe")
    reloaded.set_progress_bar_config(disable=True)
    assert isinstance(reloaded, MEDInpaintPipeline)
    assert isinstance(reloaded.model, MEDModel)
    assert reloaded.image_processor.working_size == WORKING_SIZE

    image, mask = photo(*SMALL), blob_mask(SMALL, SMALL_BLOB)
    expected = pipe(image=image, mask_image=mask, output_type="np").images[0]
    np.testing.assert_array_equal(reloaded(image=image, mask_image=mask, output_type="np").images[0], expected)


# --- call API: output and input types --------------------------------------------------------------------


def test_output_types_and_return_dict(pipe):
    image, mask = photo(*SMALL), blob_mask(SMALL, SMALL_BLOB)
    output = pipe(image=image, mask_image=mask)
    assert isinstance(output, ImagePipelineOutput)
    assert len(output.images) == 1
    pil = output.images[0]
    assert isinstance(pil, Image.Image)
    assert (pil.size, pil.mode) == (image.size, "RGB")
    assert_inpainted(np.asarray(image), np.asarray(pil), holes(mask))

    array = pipe(image=image, mask_image=mask, output_type="np").images[0]
    assert isinstance(array, np.ndarray)
    assert (array.shape, array.dtype) == ((SMALL[1], SMALL[0], 3), np.float32)
    np.testing.assert_array_equal(np.rint(array * 255).astype(np.uint8), np.asarray(pil))

    tensor = pipe(image=image, mask_image=mask, output_type="pt").images[0]
    assert isinstance(tensor, torch.Tensor)
    assert (tuple(tensor.shape), tensor.dtype) == ((3, SMALL[1], SMALL[0]), torch.float32)
    np.testing.assert_array_equal(tensor.permute(1, 2, 0).numpy(), array)

    as_tuple = pipe(image=image, mask_image=mask, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    np.testing.assert_array_equal(np.asarray(as_tuple[0][0]), np.asarray(pil))


def test_pil_numpy_and_torch_inputs_agree(pipe):
    image, mask = photo(*SMALL), blob_mask(SMALL, SMALL_BLOB)
    hole = holes(mask)
    pixels = np.array(image)  # writable, for torch.from_numpy
    expected = np.asarray(pipe(image=image, mask_image=mask).images[0])
    from_numpy = pipe(image=pixels, mask_image=np.asarray(mask)).images[0]
    from_torch = pipe(image=torch.from_numpy(pixels).permute(2, 0, 1), mask_image=torch.from_numpy(hole)).images[0]
    np.testing.assert_array_equal(np.asarray(from_numpy), expected)
    np.testing.assert_array_equal(np.asarray(from_torch), expected)

    # Float input: unmasked pixels come back exactly, the hole holds the same (unquantised) prediction.
    as_float = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    out = pipe(image=as_float, mask_image=mask, output_type="np").images[0]
    reference = as_float.permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(out[~hole], reference[~hole])
    np.testing.assert_allclose(out[hole], expected[hole] / 255, atol=0.5 / 255 + 1e-6)


def test_lists_and_batched_tensors_give_one_result_per_image(pipe):
    first, second = photo(*SMALL), photo(200, 260)
    masks = [blob_mask(SMALL, SMALL_BLOB), blob_mask((200, 260), (40, 150, 90, 210))]
    results = pipe(image=[first, second], mask_image=masks).images
    assert [r.size for r in results] == [SMALL, (200, 260)]
    for image, mask, result in zip((first, second), masks, results, strict=True):
        alone = pipe(image=image, mask_image=mask).images[0]
        np.testing.assert_array_equal(np.asarray(result), np.asarray(alone))
        assert_inpainted(np.asarray(image), np.asarray(result), holes(mask))

    batch = torch.stack([torch.from_numpy(np.array(first)).permute(2, 0, 1)] * 2)
    batched = pipe(image=batch, mask_image=[masks[0], masks[0]], output_type="pt").images
    assert len(batched) == 2
    torch.testing.assert_close(batched[0], batched[1], rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["1", "L", "RGB", "RGBA", "bool array", "uint8 array", "float tensor"])
def test_mask_of_any_mode_or_type_gives_the_same_result(pipe, mode):
    image, mask = photo(*SMALL), blob_mask(SMALL, SMALL_BLOB)
    hole = holes(mask)
    converted = {
        "1": mask.convert("1"),
        "L": mask,
        "RGB": mask.convert("RGB"),
        "RGBA": mask.convert("RGBA"),
        "bool array": hole,
        "uint8 array": np.asarray(mask),
        "float tensor": torch.from_numpy(hole.astype(np.float32)),
    }[mode]
    expected = np.asarray(pipe(image=image, mask_image=mask).images[0])
    np.testing.assert_array_equal(np.asarray(pipe(image=image, mask_image=converted).images[0]), expected)


def test_mask_threshold_is_above_127(pipe, forward_calls):
    image = photo(*SMALL)
    grey_127 = pipe(image=image, mask_image=blob_mask(SMALL, SMALL_BLOB, value=127)).images[0]
    assert forward_calls == []
    np.testing.assert_array_equal(np.asarray(grey_127), np.asarray(image))
    grey_128 = pipe(image=image, mask_image=blob_mask(SMALL, SMALL_BLOB, value=128)).images[0]
    assert len(forward_calls) == 1
    assert_inpainted(np.asarray(image), np.asarray(grey_128), holes(blob_mask(SMALL, SMALL_BLOB)))


# --- size, pixel exactness and the mask options ----------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "network_shape"),
    [
        ("auto", (1, 3, 128, 256)),  # below the trigger size: resize
        ("resize", (1, 3, 128, 256)),
        ("crop", (1, 3, 192, 256)),  # the square box is clipped to the photo's 187 rows
        ("original", (1, 3, 192, 320)),  # padded to multiples of 64
    ],
)
def test_every_strategy_keeps_the_size_and_the_unmasked_pixels(pipe, forward_calls, strategy, network_shape):
    image, mask = photo(*SMALL), blob_mask(SMALL, SMALL_BLOB)
    result = pipe(image=image, mask_image=mask, hd_strategy=strategy).images[0]
    assert result.size == image.size
    assert_inpainted(np.asarray(image), np.asarray(result), holes(mask))
    assert forward_calls == [network_shape]


def test_at_the_working_size_the_network_sees_exactly_the_photo_and_its_hole(pipe):
    image, mask = photo(WORKING_SIZE, WORKING_SIZE), blob_mask((WORKING_SIZE, WORKING_SIZE), SMALL_BLOB)
    seen = []
    handle = pipe.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    try:
        pipe(image=image, mask_image=mask, texture="none")
    finally:
        handle.remove()
    (inputs,) = seen
    np.testing.assert_array_equal(inputs["mask"][0, 0].numpy() > 0.5, holes(mask))
    known = ~holes(mask)
    expected = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1) * 2 - 1
    torch.testing.assert_close(inputs["pixel_values"][0][:, known], expected[:, known], rtol=0, atol=1e-6)


def test_mask_dilation_grows_the_hole_by_a_disk(pipe):
    image, mask = photo(*SMALL), blob_mask(SMALL, SMALL_BLOB)
    hole = holes(mask)
    distance = ndimage.distance_transform_edt(~hole)
    before = np.asarray(image)
    plain = np.asarray(pipe(image=image, mask_image=mask).images[0])
    grown = np.asarray(pipe(image=image, mask_image=mask, mask_dilation=6).images[0])

    assert_inpainted(before, grown, distance <= 6)
    ring = (distance > 0) & (distance <= 6)
    np.testing.assert_array_equal(plain[ring], before[ring])
    assert np.any(grown != before, axis=-1)[ring].mean() > 0.5


def test_mask_blur_changes_only_a_band_around_the_hole(pipe):
    image, mask = photo(*BIG), blob_mask(BIG, FAR_BLOBS[0])
    hole = holes(mask)
    before = np.asarray(image)
    after = np.asarray(pipe(image=image, mask_image=mask, mask_blur=8, hd_strategy="crop").images[0])
    band = ndimage.binary_dilation(hole, structure=np.ones((17, 17), dtype=bool))  # 8 px per axis
    assert_inpainted(before, after, band, min_changed=0.1)
    assert np.any(after != before, axis=-1)[hole].mean() > 0.5
    assert np.any(after != before, axis=-1)[band & ~hole].any(), "the blur changed nothing outside the hole"

    with pytest.raises(ValueError, match="mask_blur"):
        pipe(image=image, mask_image=mask, mask_blur=200)


# --- high-resolution strategies --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["crop", "auto"])
def test_far_apart_regions_of_a_big_photo_get_one_crop_each(pipe, forward_calls, strategy):
    image, mask = photo(*BIG), blob_mask(BIG, *FAR_BLOBS)
    before = np.asarray(image)
    result = pipe(image=image, mask_image=mask, hd_strategy=strategy).images[0]
    after = np.asarray(result)

    crops = [shape[1:] for shape in forward_calls for _ in range(shape[0])]
    assert crops == [(3, WORKING_SIZE, WORKING_SIZE)] * 2
    assert result.size == BIG
    assert_inpainted(before, after, holes(mask))
    for ellipse in FAR_BLOBS:
        blob = holes(blob_mask(BIG, ellipse))
        assert np.any(after != before, axis=-1)[blob].mean() > 0.5


def test_nearby_regions_share_one_crop(pipe, forward_calls):
    image, mask = photo(*BIG), blob_mask(BIG, (700, 500, 760, 560), (800, 520, 850, 580))
    result = pipe(image=image, mask_image=mask, hd_strategy="crop").images[0]
    assert forward_calls == [(1, 3, WORKING_SIZE, WORKING_SIZE)]
    assert_inpainted(np.asarray(image), np.asarray(result), holes(mask))


def test_resize_runs_the_whole_big_photo_once_at_the_working_size(pipe, forward_calls):
    image, mask = photo(*BIG), blob_mask(BIG, *FAR_BLOBS)
    result = pipe(image=image, mask_image=mask, hd_strategy="resize").images[0]
    assert forward_calls == [(1, 3, 192, 256)]
    assert result.size == BIG
    assert_inpainted(np.asarray(image), np.asarray(result), holes(mask))


def test_original_refuses_big_photos(pipe, forward_calls):
    with pytest.raises(ValueError, match="original"):
        pipe(image=photo(*BIG), mask_image=blob_mask(BIG, *FAR_BLOBS), hd_strategy="original")
    assert forward_calls == []


# --- image modes -----------------------------------------------------------------------------------------


def test_rgba_keeps_its_alpha_outside_the_hole(pipe):
    image = photo(*SMALL).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, SMALL[0]).astype(np.uint8), (SMALL[1], 1))
    image.putalpha(Image.fromarray(alpha))
    mask = blob_mask(SMALL, SMALL_BLOB)
    result = pipe(image=image, mask_image=mask).images[0]
    assert (result.mode, result.size) == ("RGBA", SMALL)
    after, before = np.asarray(result), np.asarray(image)
    hole = holes(mask)
    np.testing.assert_array_equal(after[..., 3][~hole], alpha[~hole])
    # Inside, the alpha ramp is continued from the known alpha around the hole (the membrane continues it exactly).
    assert np.abs(after[..., 3][hole].astype(int) - alpha[hole]).max() <= 1
    assert_inpainted(before[..., :3], after[..., :3], hole)


def test_grayscale_stays_grayscale(pipe):
    image, mask = photo(*SMALL).convert("L"), blob_mask(SMALL, SMALL_BLOB)
    result = pipe(image=image, mask_image=mask).images[0]
    assert (result.mode, result.size) == ("L", SMALL)
    assert_inpainted(np.asarray(image), np.asarray(result), holes(mask))


def test_palette_image_comes_back_as_rgb(pipe):
    image, mask = photo(*SMALL).quantize(64), blob_mask(SMALL, SMALL_BLOB)
    assert image.mode == "P"
    result = pipe(image=image, mask_image=mask).images[0]
    assert (result.mode, result.size) == ("RGB", SMALL)
    assert_inpainted(np.asarray(image.convert("RGB")), np.asarray(result), holes(mask))


def test_sixteen_bit_stays_sixteen_bit(pipe, tmp_path):
    pixels16 = np.asarray(photo(*SMALL).convert("L")).astype(np.uint16) * 257 + 128
    mask = blob_mask(SMALL, SMALL_BLOB)
    image = Image.fromarray(pixels16)
    assert image.mode == "I;16"
    result = pipe(image=image, mask_image=mask).images[0]
    assert (result.mode, result.size) == ("I;16", SMALL)
    assert_inpainted(pixels16, np.asarray(result), holes(mask))

    # A 16-bit PNG given by path; PIL decides its mode, the output keeps it.
    image.save(tmp_path / "sixteen.png")
    from_file = pipe(image=str(tmp_path / "sixteen.png"), mask_image=mask).images[0]
    with Image.open(tmp_path / "sixteen.png") as reread:
        assert from_file.mode == reread.mode
        assert_inpainted(np.asarray(reread), np.asarray(from_file), holes(mask))

    # 16-bit colour arrays: "np" output keeps full precision outside the mask.
    rgb16 = np.asarray(photo(*SMALL)).astype(np.uint16) * 257
    out = pipe(image=rgb16, mask_image=mask, output_type="np").images[0]
    hole = holes(mask)
    np.testing.assert_array_equal(out[~hole], rgb16[~hole].astype(np.float32) / np.float32(65535))


def test_exif_rotated_jpeg_is_processed_upright(pipe, tmp_path):
    stored = photo(240, 160)  # landscape as stored, portrait (160x240) as displayed
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)
    mask = blob_mask((160, 240), (40, 150, 100, 200))
    with Image.open(path) as opened:
        upright = ImageOps.exif_transpose(opened)
    assert upright.size == (160, 240)

    for source in (Image.open(path), str(path)):
        result = pipe(image=source, mask_image=mask).images[0]
        assert result.size == (160, 240)
        assert_inpainted(np.asarray(upright), np.asarray(result), holes(mask))
    # A mask drawn on the stored (unrotated) frame does not fit the upright photo.
    with pytest.raises(ValueError, match="does not match"):
        pipe(image=Image.open(path), mask_image=blob_mask((240, 160), (10, 10, 50, 50)))


# --- empty and full masks, errors ------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "strategy"), [(SMALL, "auto"), (SMALL, "original"), (BIG, "auto"), (BIG, "crop")])
def test_empty_mask_returns_the_input_without_running_the_network(pipe, forward_calls, size, strategy):
    image = photo(*size).convert("RGBA")
    result = pipe(image=image, mask_image=Image.new("L", size, 0), hd_strategy=strategy).images[0]
    assert forward_calls == []
    assert (result.mode, result.size) == (image.mode, image.size)
    np.testing.assert_array_equal(np.asarray(result), np.asarray(image))
    as_array = pipe(image=np.asarray(image), mask_image=np.zeros(size[::-1], bool), output_type="np").images[0]
    assert forward_calls == []
    np.testing.assert_array_equal(as_array, np.asarray(image).astype(np.float32) / np.float32(255))


@pytest.mark.parametrize(
    ("size", "strategy", "network_shape"), [(SMALL, "auto", (1, 3, 128, 256)), ((1000, 700), "crop", (1, 3, 192, 256))]
)
def test_all_hole_mask_fills_everything(pipe, forward_calls, size, strategy, network_shape):
    image = photo(*size).convert("RGBA")
    result = pipe(image=image, mask_image=Image.new("1", size, 1), hd_strategy=strategy).images[0]
    assert forward_calls == [network_shape]
    assert (result.mode, result.size) == ("RGBA", size)
    after, before = np.asarray(result), np.asarray(image)
    assert np.any(after[..., :3] != before[..., :3], axis=-1).mean() > 0.9
    np.testing.assert_array_equal(after[..., 3], before[..., 3])


def test_bad_arguments_raise_clear_errors(pipe, forward_calls):
    image, mask = photo(*SMALL), blob_mask(SMALL, SMALL_BLOB)
    with pytest.raises(ValueError, match=r"Mask size 300x187 does not match image size 301x187"):
        pipe(image=image, mask_image=mask.crop((0, 0, 300, 187)))
    with pytest.raises(ValueError, match="2 images but 1 masks"):
        pipe(image=[image, image], mask_image=[mask])
    with pytest.raises(ValueError, match="hd_strategy must be one of"):
        pipe(image=image, mask_image=mask, hd_strategy="tile")
    with pytest.raises(ValueError, match="mask_dilation"):
        pipe(image=image, mask_image=mask, mask_dilation=-1)
    assert forward_calls == []
