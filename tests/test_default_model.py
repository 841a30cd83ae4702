"""The default model shipped inside the package: what loads with no argument, and that it actually inpaints."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from med_hf import MEDInpaintPipeline
from med_hf.harmonic import push_pull_fill
from med_hf.modeling_med import DEFAULT_MODEL_DIR

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe() -> MEDInpaintPipeline:
    pipe = MEDInpaintPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def hole_psnr(result: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    error = (result[hole].astype(np.float64) - truth[hole].astype(np.float64)) ** 2
    return float(10 * np.log10(255**2 / error.mean()))


def test_weights_are_small_fp16_safetensors_with_a_card():
    weights = DEFAULT_MODEL_DIR / "model.safetensors"
    assert weights.stat().st_size <= 30 * 2**20
    assert {tensor.dtype for tensor in load_file(weights).values()} == {torch.float16}
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    assert "training/train_default_model.sh" in card and "Telea" in card


def test_model_without_argument_loads_the_shipped_model(pipe):
    from med_hf import MEDModel

    model = MEDModel.from_pretrained()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, pipe.model.state_dict()[name]), name


def test_pipeline_without_argument_loads_the_shipped_model(pipe):
    config = pipe.model.config
    assert (config.feature_mask, config.partial_conv_renorm, config.equalization_layout) == (
        "nearest",
        "valid_ratio",
        "spatial",
    )
    assert all(parameter.dtype == torch.float32 for parameter in pipe.model.parameters())
    assert not pipe.model.training


def test_its_hole_prior_is_the_fill_it_was_trained_with(pipe):
    # The approximate push-pull membrane, bit for bit: its published numbers were measured with it.
    assert pipe.model.config.hole_prior == "harmonic"
    assert pipe.model.refinement.prior_fill is push_pull_fill


def test_it_fills_a_hole_in_a_real_photo_better_than_the_mean_colour(pipe):
    """Trained weights, not noise: the fill is far closer to the truth than the known pixels' mean colour."""
    photo = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((256, 256), Image.Resampling.BICUBIC))
    mask = Image.new("L", (256, 256), 0)
    ImageDraw.Draw(mask).ellipse((150, 40, 200, 90), fill=255)  # a patch of the wall and the flag's edge
    hole = np.asarray(mask) > 127

    result = np.asarray(pipe(image=Image.fromarray(photo), mask_image=mask).images[0])
    mean_fill = np.broadcast_to(photo[~hole].mean(axis=0), photo.shape)
    assert np.array_equal(result[~hole], photo[~hole])
    assert hole_psnr(result, photo, hole) > hole_psnr(mean_fill, photo, hole) + 3


def test_med_inpaint_without_model_uses_it(tmp_path):
    """The README's first command."""
    output = tmp_path / "result.png"
    examples = REPOSITORY / "examples"
    subprocess.run(
        [
            "med-inpaint",
            "--image",
            examples / "astronaut.png",
            "--mask",
            examples / "astronaut_mask.png",
            "--output",
            output,
        ],
        check=True,
        capture_output=True,
    )
    with Image.open(examples / "astronaut.png") as photo, Image.open(output) as result:
        assert result.size == photo.size
        assert not np.array_equal(np.asarray(result.convert("RGB")), np.asarray(photo.convert("RGB")))
