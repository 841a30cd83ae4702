"""How far float32 rounding alone moves the MEDFE output, for each feature-mask variant of the parity fixture.

    python benchmarks/parity_conditioning.py [--threads 2]

Builds the `medfe-parity-v1` recipe weights (salt `dev-1`, as in `tests/`), runs the fixture input through
`MEDModel` in float32 and float64 and through a float32 copy of the released code's op order (the emulation of
`bench_forward.py`), and prints the max / mean |difference| between every pair and against the fixture's
`out.raw` / `variant_nearest_feature_mask.out.raw`. If the released op order in float32 is already farther from
the float64 result than the fixture's tolerance (max 5e-3, mean 1e-4; the fixture's notes are kept outside
this repository, in ../shared/reference/parity), that tolerance measures rounding noise, not structure.

It then reruns the float64 model with only the partial convolutions' divisors summed in float32, by three
algorithms a library may use. With the nearest feature mask, some divisors are sums of thousands of random
weights that nearly cancel (|divisor| down to 4e-6), so the order of summation alone moves the output.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_forward import released_code_computation, released_partial_conv
from safetensors.torch import load_file

from med_hf import MEDConfig, MEDModel
from med_hf.convert_original_checkpoint import convert_state_dicts
from med_hf.modeling_med import MEDPartialConv

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from parity_recipe import recipe_state_dicts  # noqa: E402

FIXTURE_KEYS = {"released": "out.raw", "nearest": "variant_nearest_feature_mask.out.raw"}


def _unfold_matmul_conv(mask: torch.Tensor, kernel: torch.Tensor, padding: int) -> torch.Tensor:
    columns = F.unfold(mask, kernel.shape[-1], padding=padding)
    return (kernel.flatten(1) @ columns).view(mask.shape[0], -1, *mask.shape[-2:])


def _channels_last_conv(mask: torch.Tensor, kernel: torch.Tensor, padding: int) -> torch.Tensor:
    channels_last = torch.channels_last
    return F.conv2d(mask.to(memory_format=channels_last), kernel.to(memory_format=channels_last), padding=padding)


# Three ways a float32 library may sum the released divisor (a full 256-channel mask convolution).
DIVISOR_ALGORITHMS = {
    "oneDNN convolution": F.conv2d,
    "im2col + matrix product": _unfold_matmul_conv,
    "channels-last convolution": _channels_last_conv,
}


def float32_divisor(algorithm):
    """A divisor convolution that sums in float32 with `algorithm` and hands the result back in float64."""

    def divisor_conv(mask: torch.Tensor, kernel: torch.Tensor, padding: int) -> torch.Tensor:
        with torch.no_grad():
            return algorithm(mask.float().contiguous(), kernel.float(), padding=padding).to(mask.dtype)

    return divisor_conv


def recipe_model(feature_mask: str) -> MEDModel:
    config = MEDConfig(feature_mask=feature_mask)
    model = MEDModel(config)
    model.load_state_dict(convert_state_dicts(recipe_state_dicts("dev-1"), config))
    return model.eval()


def outputs(model: MEDModel, pixel_values: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """MEDModel in float32, the released op order in float32, MEDModel in float64 (the model is left float64)."""
    results = {}
    with torch.inference_mode():
        results["MEDModel float32"] = model(pixel_values=pixel_values, mask=mask).reconstruction
        with released_code_computation():
            results["released op order float32"] = model(pixel_values=pixel_values, mask=mask).reconstruction
        model.double()
        results["MEDModel float64"] = model(pixel_values=pixel_values.double(), mask=mask.double()).reconstruction
    return {name: value.float() for name, value in results.items()}


def float64_with_float32_divisors(model: MEDModel, pixel_values: torch.Tensor, mask: torch.Tensor):
    """{algorithm: output} of the float64 model whose divisors alone are rounded to float32 by `algorithm`."""
    original = MEDPartialConv.forward
    results = {}
    try:
        for name, algorithm in DIVISOR_ALGORITHMS.items():
            divisor_conv = float32_divisor(algorithm)
            MEDPartialConv.forward = functools.partialmethod(released_partial_conv, divisor_conv=divisor_conv)
            with torch.inference_mode():
                results[name] = model(pixel_values=pixel_values.double(), mask=mask.double()).reconstruction.float()
    finally:
        MEDPartialConv.forward = original
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    fixture = load_file(TESTS / "fixtures" / "medfe_parity_dev-1.safetensors")
    pixel_values = fixture["input.image_uint8_hwc"].permute(2, 0, 1)[None].float() / 127.5 - 1
    mask = fixture["input.mask_hole"]
    print("PARITY.md tolerance: max 5e-3, mean 1e-4")
    for feature_mask, key in FIXTURE_KEYS.items():
        model = recipe_model(feature_mask)
        results = {"fixture": fixture[key], **outputs(model, pixel_values, mask)}
        print(f"\nfeature_mask={feature_mask} (fixture {key})")
        for (name_a, a), (name_b, b) in itertools.combinations(results.items(), 2):
            print_difference(name_a, a, name_b, b)
        print("  float64 model, only the divisors summed in float32 by:")
        for name, output in float64_with_float32_divisors(model, pixel_values, mask).items():
            for other in ("MEDModel float64", "fixture"):
                print_difference(name, output, other, results[other])


def print_difference(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    difference = (a - b).abs()
    print(f"  {name_a:>26} vs {name_b:<26} max {difference.max():.2e}  mean {difference.mean():.2e}")


if __name__ == "__main__":
    main()
