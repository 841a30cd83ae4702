"""The fill never depends on what the mask hides: the output is a function of the known pixels and the mask.

The same photo with the pixels under the (dilated) mask replaced by noise, by black and by the original gives
bit-identical results, for every strategy, size, mode, batch, mask option and texture mode, through the pipeline,
the CLI and the Space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from med_hf import MEDConfig, MEDModel
from med_hf.cli import main
from med_hf.patchmatch import TEXTURES
from med_hf.pipeline_med import MEDInpaintPipeline

HIDINGS = ("noise", "black", "original")


@pytest.fixture(scope="module")
def pipe() -> MEDInpaintPipeline:
    torch.manual_seed(0)
    return MEDInpaintPipeline(model=MEDModel(MEDConfig.from_preset("tiny", image_size=256)).eval())


def photo_pixels(width: int, height: int, mode: str) -> np.ndarray:
    """A real photo (scikit-image's astronaut) at `width` x `height` as the pixel array of a PIL `mode` image."""
    rgb = Image.fromarray(skimage.data.astronaut()).resize((width, height), Image.Resampling.BICUBIC)
    if mode == "RGBA":
        rgba = np.asarray(rgb.convert("RGBA")).copy()
        rgba[..., 3] = np.linspace(40, 255, width).astype(np.uint8)
        return rgba
    if mode == "I;16":
        return (np.asarray(rgb.convert("L")).astype(np.uint16) * 257 + 100).astype(np.uint16)
    return np.asarray(rgb.convert(mode))


def hole_mask(width: int, height: int) -> np.ndarray:
    """An ellipse in the middle plus a stroke that touches the right border: bool (height, width)."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    draw.ellipse((width * 0.3, height * 0.3, width * 0.55, height * 0.6), fill=255)
    draw.line((width * 0.7, height * 0.2, width, height * 0.5), fill=255, width=max(3, width // 40))
    return np.asarray(mask) > 127


def hide(pixels: np.ndarray, hole: np.ndarray, how: str, seed: int = 0) -> np.ndarray:
    """`pixels` with the hole replaced by noise, by black (0, alpha too) or left as the original."""
    hidden = pixels.copy()
    if how == "noise":
        info = np.iinfo(pixels.dtype)
        shape = hidden[hole].shape
        hidden[hole] = np.random.default_rng(seed).integers(
            info.min, info.max, shape, endpoint=True, dtype=pixels.dtype
        )
    elif how == "black":
        hidden[hole] = 0
    return hidden


def to_pil(pixels: np.ndarray, mode: str) -> Image.Image:
    image = Image.fromarray(pixels)  # uint16 arrays become mode I;16
    assert image.mode == mode
    return image


def inpaint(pipe, pixels: np.ndarray, mode: str, hole: np.ndarray, **options) -> np.ndarray:
    return np.asarray(pipe(image=to_pil(pixels, mode), mask_image=hole, **options).images[0])


def assert_independent_of_hidden_pixels(pipe, pixels, mode, hole, **options) -> None:
    grown = ndimage.distance_transform_edt(~hole) <= options.get("mask_dilation", 0)
    results = [inpaint(pipe, hide(pixels, grown, how), mode, hole, **options) for how in HIDINGS]
    for how, result in zip(HIDINGS[1:], results[1:], strict=True):
        np.testing.assert_array_equal(result, results[0], err_msg=f"hidden pixels as {how} changed the result")
    assert not np.array_equal(results[0][grown], pixels[grown]), "nothing was filled"


@pytest.mark.parametrize("texture", TEXTURES)
@pytest.mark.parametrize("strategy", ["auto", "crop", "resize", "original"])
@pytest.mark.parametrize(
    ("size", "mode"), [((301, 187), "RGB"), ((97, 203), "RGBA"), ((150, 100), "L"), ((120, 90), "I;16")]
)
def test_every_strategy_size_and_mode(pipe, strategy, size, mode, texture):
    pixels, hole = photo_pixels(*size, mode), hole_mask(*size)
    assert_independent_of_hidden_pixels(pipe, pixels, mode, hole, hd_strategy=strategy, texture=texture)


@pytest.mark.parametrize("texture", TEXTURES)
@pytest.mark.parametrize("strategy", ["auto", "crop", "resize", "original"])
def test_mask_dilation_and_blur(pipe, strategy, texture):
    size = (211, 157)
    pixels, hole = photo_pixels(*size, "RGB"), hole_mask(*size)
    assert_independent_of_hidden_pixels(
        pipe, pixels, "RGB", hole, hd_strategy=strategy, mask_dilation=4, mask_blur=5, texture=texture
    )


@pytest.mark.parametrize("texture", TEXTURES)
@pytest.mark.parametrize("strategy", ["auto", "resize"])
def test_very_large_photo(pipe, strategy, texture):
    """3001x2003 px: auto crops around each hole at full resolution, resize shrinks 12-fold (the texture stage
    then works at full resolution inside the whole photo)."""
    size = (3001, 2003)
    pixels = photo_pixels(*size, "RGB")
    hole = np.zeros(size[::-1], dtype=bool)
    hole[400:700, 500:760] = True
    hole[1900:, 2900:] = True  # a corner
    assert_independent_of_hidden_pixels(
        pipe, pixels, "RGB", hole, hd_strategy=strategy, mask_dilation=2, texture=texture
    )


def test_batches(pipe):
    """Images of a call share forward passes; each result still depends on its own known pixels only.

    (A batch may round differently from a single image in the last float bit, so batches are compared with
    batches of the same size.)
    """
    size = (180, 140)
    pixels, hole = photo_pixels(*size, "RGB"), hole_mask(*size)
    hidden = [to_pil(hide(pixels, hole, how, seed), "RGB") for seed, how in enumerate(("noise", "black", "noise"))]
    originals = [to_pil(pixels, "RGB")] * 3
    expected = pipe(image=originals, mask_image=[hole] * 3, output_type="np").images
    for result, reference in zip(
        pipe(image=hidden, mask_image=[hole] * 3, output_type="np").images, expected, strict=True
    ):
        np.testing.assert_array_equal(result, reference)


@pytest.mark.parametrize("texture", TEXTURES)
def test_through_the_space(space_app, pipe, texture):
    """The editor's value: the photo as background with the hole painted over in one layer's alpha."""
    size = (240, 176)
    pixels, hole = photo_pixels(*size, "RGB"), hole_mask(*size)
    layer = np.zeros((*hole.shape, 4), np.uint8)
    layer[hole, 3] = 255
    results = []
    for how in HIDINGS:
        background = np.dstack([hide(pixels, hole, how), np.full(hole.shape, 255, np.uint8)])
        value = {"background": background, "layers": [layer], "composite": None}
        result, _ = space_app.inpaint(value, "auto", 0, 0, texture, pipeline=pipe)
        results.append(np.asarray(result))
    for how, result in zip(HIDINGS[1:], results[1:], strict=True):
        np.testing.assert_array_equal(result, results[0], err_msg=f"hidden pixels as {how} changed the result")
    assert not np.array_equal(results[0][hole], pixels[hole])


@pytest.mark.parametrize("texture", TEXTURES)
def test_through_the_cli(tmp_path: Path, pipe, texture):
    size = (230, 170)
    pixels, hole = photo_pixels(*size, "RGB"), hole_mask(*size)
    model = tmp_path / "model"
    pipe.model.save_pretrained(model)
    Image.fromarray(hole).save(tmp_path / "mask.png")
    results = []
    for how in HIDINGS:
        Image.fromarray(hide(pixels, hole, how)).save(tmp_path / f"{how}.png")
        output = tmp_path / f"result-{how}.png"
        arguments = ["--image", tmp_path / f"{how}.png", "--mask", tmp_path / "mask.png", "--output", output]
        assert main([str(a) for a in [*arguments, "--model", model, "--texture", texture, "--quiet"]]) == 0
        with Image.open(output) as result:
            results.append(np.asarray(result))
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
