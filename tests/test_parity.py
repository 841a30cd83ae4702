"""The model reproduces what the ORIGINAL MEDFE code computes (fixture made with recipe weights)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from parity_recipe import recipe_state_dicts
from safetensors.torch import load_file

from med_hf import MEDModel

FIXTURE = Path(__file__).parent / "fixtures" / "medfe_parity_dev-1.safetensors"


@pytest.fixture(scope="module")
def fixture():
    return load_file(FIXTURE)


@pytest.fixture(scope="module")
def original_checkpoint(tmp_path_factory):
    """The recipe weights written as the three released files; one carries DataParallel's `module.` prefix."""
    folder = tmp_path_factory.mktemp("original")
    state_dicts = recipe_state_dicts("dev-1")
    state_dicts["DE"] = {f"module.{key}": value for key, value in state_dicts["DE"].items()}
    paths = {}
    for network, filename in (("EN", "EN.pkl"), ("DE", "DE.pkl"), ("MEDFE", "MEDEF.pkl")):
        paths[network] = folder / filename
        torch.save(state_dicts[network], paths[network])
    return paths


def convert(paths, output_dir, *extra):
    command = [
        sys.executable, "-m", "med_hf.convert_original_checkpoint",
        "--encoder", str(paths["EN"]), "--decoder", str(paths["DE"]), "--medfe", str(paths["MEDFE"]),
        "--output-dir", str(output_dir), *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, check=False)


def fixture_inputs(fixture):
    image = fixture["input.image_uint8_hwc"].permute(2, 0, 1)[None].float()
    return image / 127.5 - 1.0, fixture["input.mask_hole"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("feature_mask", "key", "max_tol", "mean_tol"),
    [
        # The tolerance the parity fixture comes with (max 5e-3, mean 1e-4 on the raw output; the fixture's notes
        # are kept outside this repository, in ../shared/reference/parity).
        ("released", "out.raw", 5e-3, 1e-4),
        # With holes on the feature grid, partial-conv divisors get as small as 4e-6 (a single random tap), so
        # the original's own float32 rounding moves its output by more than that mean tolerance of 1e-4: a
        # float32 copy of the original's op order lands 2.5e-4 (mean) from this model computed in float64, and
        # 4.4e-4 from the fixture; this model in float32 stays within 2e-5 of float64 and lands 4.6e-4 from
        # the fixture. A structural mistake costs 0.07 or more, which this bound still catches.
        ("nearest", "variant_nearest_feature_mask.out.raw", 1e-2, 1e-3),
    ],
)
def test_converted_checkpoint_reproduces_original(
    fixture, original_checkpoint, tmp_path, feature_mask, key, max_tol, mean_tol
):
    result = convert(original_checkpoint, tmp_path / "model", "--feature-mask", feature_mask)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "model" / "config.json").read_text())["feature_mask"] == feature_mask

    model = MEDModel.from_pretrained(tmp_path / "model").eval()
    pixel_values, mask = fixture_inputs(fixture)
    with torch.inference_mode():
        output = model(pixel_values=pixel_values, mask=mask)
    difference = (output.reconstruction - fixture[key]).abs()
    assert difference.max() <= max_tol and difference.mean() <= mean_tol, (
        difference.max(),
        difference.mean(),
    )
    if feature_mask == "released":
        assert torch.allclose(output.structure, fixture["out.aux_structure_32"], atol=5e-3)
        assert torch.allclose(output.texture, fixture["out.aux_texture_32"], atol=5e-3)
        composite = output.reconstruction * mask + pixel_values * (1 - mask)
        assert (composite - fixture["out.composite"]).abs().max() <= max_tol


def test_converter_names_missing_unexpected_and_misshaped_keys(original_checkpoint, tmp_path):
    state = torch.load(original_checkpoint["MEDFE"], weights_only=True)
    del state["pc_block.cov_5.2.conv.mask_conv.weight"]
    state["pc_block.extra.weight"] = torch.zeros(3)
    state["pc_block.fuse.model.0.weight"] = torch.zeros(512, 256, 1, 1)
    broken = dict(original_checkpoint, MEDFE=tmp_path / "broken.pkl")
    torch.save(state, broken["MEDFE"])

    result = convert(broken, tmp_path / "out")
    assert result.returncode == 1
    assert "missing key for medfe.filling_streams.1.2.conv.mask_weight" in result.stderr
    assert "unexpected key MEDFE.pc_block.extra.weight" in result.stderr
    assert "shape mismatch for MEDFE.pc_block.fuse.model.0.weight" in result.stderr
    assert not (tmp_path / "out").exists(), "nothing may be written when the checkpoint does not fit"


def test_converter_reports_missing_file(original_checkpoint, tmp_path):
    result = convert(dict(original_checkpoint, EN=tmp_path / "nope.pkl"), tmp_path / "out")
    assert result.returncode == 1
    assert "no such checkpoint file" in result.stderr
