"""How far float32 rounding alone moves the MEDFE output, for each feature-mask variant of the parity fixture.

    python benchmarks/parity_conditioning.py [--threads 2]

Builds the `medfe-parity-v1` recipe weights (salt `dev-1`, as in `tests/`), runs the fixture input through
`MEDModel` in float32 and float64 and through a float32 copy of the released code's op order (the emulation of
`bench_forward.py`), and prints the max / mean |difference| between every pair and against the fixture's
`out.raw` / `variant_nearest_feature_mask.out.raw`. If the released op order in float32 is already farther from
the float64 result than PARITY.md's tolerance, that tolerance measures rounding noise, not structure.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
from bench_forward import released_code_computation
from safetensors.torch import load_file

from med_hf import MEDConfig, MEDModel
from med_hf.convert_original_checkpoint import convert_state_dicts

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from parity_recipe import recipe_state_dicts  # noqa: E402

FIXTURE_KEYS = {"released": "out.raw", "nearest": "variant_nearest_feature_mask.out.raw"}


def outputs(feature_mask: str, pixel_values: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    config = MEDConfig(feature_mask=feature_mask)
    model = MEDModel(config)
    model.load_state_dict(convert_state_dicts(recipe_state_dicts("dev-1"), config))
    model.eval()
    results = {}
    with torch.inference_mode():
        results["MEDModel float32"] = model(pixel_values=pixel_values, mask=mask).reconstruction
        with released_code_computation():
            results["released op order float32"] = model(pixel_values=pixel_values, mask=mask).reconstruction
        model.double()
        results["MEDModel float64"] = model(pixel_values=pixel_values.double(), mask=mask.double()).reconstruction
    return {name: value.float() for name, value in results.items()}


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
        results = {"fixture": fixture[key], **outputs(feature_mask, pixel_values, mask)}
        print(f"\nfeature_mask={feature_mask} (fixture {key})")
        for (name_a, a), (name_b, b) in itertools.combinations(results.items(), 2):
            difference = (a - b).abs()
            print(f"  {name_a:>26} vs {name_b:<26} max {difference.max():.2e}  mean {difference.mean():.2e}")


if __name__ == "__main__":
    main()
