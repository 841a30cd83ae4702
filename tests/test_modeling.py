"""MEDModel / MEDConfig behaviour: architecture size, batching, sizes, variants, HF integration."""

import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel

from med_hf import MEDConfig, MEDModel
from med_hf.harmonic import harmonic_fill, push_pull_fill
from med_hf.modeling_med import MEDFeatureEqualization, MEDPartialConv, reflect_pad


def random_inputs(batch: int, height: int, width: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, height, width, generator=generator) * 2 - 1
    mask = torch.zeros(batch, 1, height, width)
    for i in range(batch):  # a different hole per sample
        top, left = 8 + 16 * i, 24 + 8 * i
        mask[i, :, top : top + height // 3, left : left + width // 4] = 1
    return image, mask


def test_default_config_is_the_released_architecture():
    with torch.device("meta"):
        model = MEDModel(MEDConfig())
    parameters = list(model.parameters())
    assert sum(p.numel() for p in parameters) == 130_316_070
    assert sum(p.numel() for p in parameters if not p.requires_grad) == 27_197_440
    assert len(model.state_dict()) == 133
    assert MEDConfig().is_released_variant


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="feature_mask"):
        MEDConfig(feature_mask="bilinear")
    with pytest.raises(ValueError, match="multiple of 64"):
        MEDConfig(image_size=200)
    with pytest.raises(ValueError, match="unknown preset"):
        MEDConfig.from_preset("huge")
    with pytest.raises(ValueError, match="refinement_channels"):
        MEDConfig(refinement_channels=-1)
    with pytest.raises(ValueError, match="hole_prior"):
        MEDConfig(refinement_channels=8, hole_prior="telea")
    with pytest.raises(ValueError, match="set refinement_channels"):
        MEDConfig(hole_prior="harmonic")


@pytest.mark.parametrize(
    "variant",
    [
        dict(feature_mask="released", partial_conv_renorm="released", equalization_layout="released"),
        dict(feature_mask="nearest", partial_conv_renorm="valid_ratio", equalization_layout="spatial"),
        dict(feature_mask="nearest", partial_conv_renorm="released", equalization_layout="released"),
    ],
)
def test_batch_equals_samples_alone(variant):
    torch.manual_seed(0)
    model = MEDModel(MEDConfig.from_preset("tiny", **variant)).eval()
    image, mask = random_inputs(3, 128, 128)
    # Matrix products round differently for different batch sizes, and the released random divisors amplify
    # that float32 noise to about 2e-5; a mixed-up sample or mask moves outputs by more than 1e-3.
    with torch.inference_mode():
        batched = model(pixel_values=image, mask=mask)
        for i in range(3):
            alone = model(pixel_values=image[i : i + 1], mask=mask[i : i + 1])
            torch.testing.assert_close(batched.reconstruction[i : i + 1], alone.reconstruction, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(batched.structure[i : i + 1], alone.structure, atol=1e-4, rtol=1e-4)
    # Each sample's own mask matters: swapping masks changes the outputs.
    with torch.inference_mode():
        swapped = model(pixel_values=image, mask=mask.flip(0)).reconstruction
    assert (swapped[0] - batched.reconstruction[0]).abs().max() > 1e-3


@pytest.mark.parametrize(("height", "width"), [(64, 64), (128, 192), (320, 256)])
def test_any_multiple_of_64_runs(tiny_model, height, width):
    image, mask = random_inputs(1, height, width)
    with torch.inference_mode():
        output = tiny_model(pixel_values=image, mask=mask)
    assert output.reconstruction.shape == (1, 3, height, width)
    assert output.structure.shape == output.texture.shape == (1, 3, height // 8, width // 8)
    assert output.reconstruction.abs().max() <= 1


def test_bad_sizes_and_shapes_raise_clear_errors(tiny_model):
    with pytest.raises(ValueError, match="multiples of 64, got 100x128"):
        tiny_model(pixel_values=torch.zeros(1, 3, 100, 128), mask=torch.zeros(1, 1, 100, 128))
    with pytest.raises(ValueError, match=r"mask must have shape \(1, 1, 128, 128\)"):
        tiny_model(pixel_values=torch.zeros(1, 3, 128, 128), mask=torch.zeros(1, 128, 128))
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        tiny_model(pixel_values=torch.zeros(1, 4, 128, 128), mask=torch.zeros(1, 1, 128, 128))


def test_hole_content_is_ignored(tiny_model):
    image, mask = random_inputs(1, 128, 128)
    scribbled = torch.where(mask.bool(), torch.rand_like(image), image)
    with torch.inference_mode():
        a = tiny_model(pixel_values=image, mask=mask).reconstruction
        b = tiny_model(pixel_values=scribbled, mask=mask).reconstruction
    torch.testing.assert_close(a, b)


def test_auxiliary_loss_only_with_targets(tiny_model):
    image, mask = random_inputs(2, 128, 128)
    assert tiny_model(pixel_values=image, mask=mask).loss is None
    output = tiny_model(pixel_values=image, mask=mask, labels=image, structure_labels=image)
    target = torch.nn.functional.interpolate(image, size=(16, 16), mode="bilinear", align_corners=False)
    expected = (output.structure - target).abs().mean() + (output.texture - target).abs().mean()
    torch.testing.assert_close(output.loss, expected)
    output.loss.backward()  # differentiable
    only_texture = tiny_model(pixel_values=image, mask=mask, labels=image)
    torch.testing.assert_close(only_texture.loss, (only_texture.texture - target).abs().mean())


def test_partial_conv_valid_ratio_renormalises_and_propagates():
    torch.manual_seed(0)
    conv = MEDPartialConv(2, 3, renorm="valid_ratio")
    conv.weight.data.normal_()
    hidden = torch.randn(1, 2, 8, 8)
    # All valid: interior equals a plain convolution; borders are scaled up by 9 / valid taps.
    out, valid = conv(hidden, None)
    plain = torch.nn.functional.conv2d(hidden, conv.weight, padding=1)
    torch.testing.assert_close(out[..., 1:-1, 1:-1], plain[..., 1:-1, 1:-1])
    torch.testing.assert_close(out[..., 0, 0], plain[..., 0, 0] * 9 / 4)
    assert valid is None
    # A 3x3 hole: its centre has no valid tap -> output 0 and still invalid; its ring becomes valid.
    mask = torch.ones(1, 1, 8, 8)
    mask[..., 3:6, 3:6] = 0
    out, valid = conv(hidden, mask)
    assert out[..., 4, 4].abs().max() == 0 and valid[..., 4, 4] == 0
    assert valid.sum() == 63
    expected = torch.nn.functional.conv2d(hidden * mask, conv.weight, padding=1)[..., 3, 3] * 9 / 5  # 5 of 9 taps valid
    torch.testing.assert_close(out[..., 3, 3], expected)


def test_partial_conv_released_divides_by_mask_kernel_convolution():
    torch.manual_seed(0)
    conv = MEDPartialConv(4, 3, renorm="released")
    conv.weight.data.normal_()
    conv.mask_weight.data.normal_(0, 0.02)
    hidden, mask = torch.randn(1, 4, 6, 6), (torch.rand(1, 1, 6, 6) > 0.3).float()
    out, _ = conv(hidden, mask)
    numerator = torch.nn.functional.conv2d(hidden * mask, conv.weight, padding=1)
    divisor = torch.nn.functional.conv2d(mask.expand(-1, 4, -1, -1), conv.mask_weight, padding=1)
    has_valid = divisor != 0
    torch.testing.assert_close(out[has_valid], (numerator / divisor)[has_valid], rtol=1e-3, atol=1e-4)


def test_spatial_equalisation_matches_the_dense_gaussian_formula():
    hidden = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    module = MEDFeatureEqualization(MEDConfig.from_preset("tiny"))
    ys, xs = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    points = torch.stack([ys.flatten(), xs.flatten()], 1).double()
    dense = torch.exp(-(torch.cdist(points, points) ** 2) / (2 * 1.5**2))
    dense = dense / dense.sum(1, keepdim=True)
    expected = (hidden.flatten(2) @ dense.T).reshape(hidden.shape)
    torch.testing.assert_close(module.spatial_propagation(hidden), expected)


def test_range_equalisation_matches_a_direct_loop():
    hidden = torch.randn(1, 3, 4, 5, dtype=torch.float64)
    result = MEDFeatureEqualization.range_propagation(hidden)
    padded = torch.nn.functional.pad(hidden, (1, 1, 1, 1))
    similarity = torch.nn.functional.pad(torch.sigmoid(hidden), (1, 1, 1, 1))
    for y in range(4):
        for x in range(5):
            centre = torch.sigmoid(hidden[0, :, y, x])
            logits = torch.stack(
                [(centre * similarity[0, :, y + dy, x + dx]).mean() for dy in range(3) for dx in range(3)]
            )
            weights = logits.softmax(0)
            values = torch.stack([padded[0, :, y + dy, x + dx] for dy in range(3) for dx in range(3)])
            torch.testing.assert_close(result[0, :, y, x], (weights[:, None] * values).sum(0))


def test_reflect_pad_extends_beyond_tiny_maps():
    x = torch.arange(4.0).view(1, 1, 2, 2)
    padded = reflect_pad(x, 2)
    assert padded.shape == (1, 1, 6, 6)
    assert padded[0, 0, 2].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    big = torch.randn(1, 2, 5, 6)
    torch.testing.assert_close(reflect_pad(big, 2), torch.nn.functional.pad(big, (2, 2, 2, 2), mode="reflect"))


def test_init_weights_is_the_original_initialisation():
    torch.manual_seed(0)
    model = MEDModel(MEDConfig.from_preset("tiny", partial_conv_renorm="released"))
    kernels = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(kernels.std().item() - 0.02) < 0.002
    assert all(m.bias is None or not m.bias.any() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.InstanceNorm2d) and m.affine]
    assert norms and all((m.weight == 1).all() and (m.bias == 0).all() for m in norms)
    mask_kernels = torch.cat([m.mask_weight.flatten() for m in model.modules() if isinstance(m, MEDPartialConv)])
    assert abs(mask_kernels.std().item() - 0.02) < 0.002 and not mask_kernels.requires_grad


def test_save_load_round_trip_keeps_every_tensor(tmp_path):
    torch.manual_seed(0)
    model = MEDModel(MEDConfig.from_preset("tiny", partial_conv_renorm="released")).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    for loader in (MEDModel.from_pretrained, AutoModel.from_pretrained):
        loaded = loader(tmp_path).eval()
        assert type(loaded) is MEDModel
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key  # meta loading clobbered nothing
        image, mask = random_inputs(1, 128, 128)
        with torch.inference_mode():
            torch.testing.assert_close(loaded(image, mask).reconstruction, model(image, mask).reconstruction)
    assert AutoConfig.from_pretrained(tmp_path).feature_mask == "nearest"


def train_refinement_head(model: MEDModel, image: torch.Tensor, mask: torch.Tensor, steps: int = 3) -> None:
    """A few Adam steps on the head alone, towards reproducing `image`."""
    optimizer = torch.optim.Adam(model.refinement.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = (model.train()(image, mask).reconstruction - image).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_refinement_head_starts_as_identity_then_learns(tmp_path):
    torch.manual_seed(0)
    MEDModel(MEDConfig.from_preset("tiny")).save_pretrained(tmp_path / "plain")
    plain = MEDModel.from_pretrained(tmp_path / "plain").eval()
    refined = MEDModel.from_pretrained(tmp_path / "plain", refinement_channels=8)
    assert not plain.config.refinement_channels and refined.config.refinement_channels == 8
    assert not refined.config.is_released_variant
    assert not refined.refinement.conv_out.weight.any() and refined.refinement.conv_in.weight.std() > 0.01
    image, mask = random_inputs(2, 128, 128)
    with torch.inference_mode():
        before = refined.eval()(image, mask).reconstruction
        torch.testing.assert_close(before, plain(image, mask).reconstruction)

    train_refinement_head(refined, image, mask)
    refined.save_pretrained(tmp_path / "refined")
    loaded = MEDModel.from_pretrained(tmp_path / "refined").eval()
    assert loaded.config.refinement_channels == 8
    with torch.inference_mode():
        after = loaded(image, mask).reconstruction
        torch.testing.assert_close(after, refined.eval()(image, mask).reconstruction)
    assert (after - before).abs().max() > 1e-3
    assert (after - image).abs().mean() < (before - image).abs().mean()


# "harmonic" is the approximate fill the default model was trained with, "exact_harmonic" the converged one.
@pytest.mark.parametrize(("hole_prior", "fill"), [("harmonic", push_pull_fill), ("exact_harmonic", harmonic_fill)])
def test_hole_prior_starts_as_an_even_blend_then_learns(tmp_path, hole_prior, fill):
    torch.manual_seed(0)
    MEDModel(MEDConfig.from_preset("tiny", refinement_channels=8)).save_pretrained(tmp_path / "head")
    head_only = MEDModel.from_pretrained(tmp_path / "head").eval()
    with_prior = MEDModel.from_pretrained(tmp_path / "head", hole_prior=hole_prior).eval()
    assert not with_prior.refinement.gate_out.weight.any() and not with_prior.refinement.prior_in.weight.any()
    image, mask = random_inputs(2, 128, 128)
    hole_fill = torch.tensor(with_prior.config.hole_fill_value).view(1, 3, 1, 1) / 127.5 - 1
    prior = fill(torch.where(mask > 0, hole_fill, image), mask)
    with torch.inference_mode():
        before = with_prior(image, mask).reconstruction
        torch.testing.assert_close(before, 0.5 * head_only(image, mask).reconstruction + 0.5 * prior)

    train_refinement_head(with_prior, image, mask)
    assert with_prior.refinement.gate_out.weight.any() and with_prior.refinement.prior_in.weight.any()
    with_prior.save_pretrained(tmp_path / "prior")
    loaded = MEDModel.from_pretrained(tmp_path / "prior").eval()
    assert loaded.config.hole_prior == hole_prior
    with torch.inference_mode():
        after = loaded(image, mask).reconstruction
        torch.testing.assert_close(after, with_prior.eval()(image, mask).reconstruction)
    assert after.abs().max() <= 1 and (after - before).abs().max() > 1e-3


def test_checkpoint_without_mask_kernels_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    MEDModel(MEDConfig.from_preset("tiny", partial_conv_renorm="released")).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.endswith("mask_weight")}, tmp_path / "model.safetensors")
    with pytest.raises(OSError, match="frozen partial-convolution mask kernels"):
        MEDModel.from_pretrained(tmp_path)


@pytest.mark.slow
def test_remote_code_loads_without_med_hf(tmp_path):
    torch.manual_seed(0)
    model = MEDModel(MEDConfig.from_preset("tiny")).eval()
    model.save_pretrained(tmp_path / "model")
    assert {"configuration_med.py", "modeling_med.py"} <= {p.name for p in (tmp_path / "model").iterdir()}
    image, mask = random_inputs(1, 128, 128)
    torch.save({"image": image, "mask": mask}, tmp_path / "inputs.pt")
    with torch.inference_mode():
        torch.save(model(image, mask).reconstruction, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["med_hf"] = None  # make `import med_hf` fail in this process
        import torch
        from transformers import AutoModel
        try:
            AutoModel.from_pretrained({str(tmp_path / "model")!r})
        except ValueError as error:
            assert "trust_remote_code" in str(error), error
        else:
            raise AssertionError("custom code must need trust_remote_code=True")
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.inference_mode():
            out = model(pixel_values=inputs["image"], mask=inputs["mask"]).reconstruction
        torch.testing.assert_close(out, torch.load({str(tmp_path / "expected.pt")!r}))
        print("remote code OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=_offline_env(), check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK" in result.stdout


def _offline_env():
    import os

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    return env
