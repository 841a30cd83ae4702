"""Convert the released MEDFE checkpoints (EN.pkl, DE.pkl, MEDEF.pkl) into a `MEDModel` folder.

Usage:

    python -m med_hf.convert_original_checkpoint --encoder EN.pkl --decoder DE.pkl --medfe MEDEF.pkl \
        --output-dir medfe-places2 [--feature-mask released|nearest]

Each file is a plain state dict (optionally with the `module.` prefix of `DataParallel`); it is read with
`torch.load(weights_only=True)`, so no pickled code runs. Every key and shape is checked before anything is
written, and the output folder appears only once it is complete; an existing folder is never replaced.
Every input problem is reported in one line and exit code 1.
"""

from __future__ import annotations

import argparse
import pickle
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from .atomic_files import atomic_folder
from .configuration_med import FEATURE_MASK_MODES, MEDConfig
from .modeling_med import MEDModel, check_finite_weights

NETWORKS = ("EN", "DE", "MEDFE")

# (network, pattern of the original key, replacement giving the MEDModel key)
_KEY_RULES: list[tuple[str, str, str]] = [
    ("EN", r"Encoder_1\.model\.0\.(weight|bias)", r"encoder.down_blocks.0.conv.\1"),
    ("EN", r"Encoder_([2-6])\.model\.1\.(weight|bias)", r"encoder.down_blocks.{\1-1}.conv.\2"),
    ("EN", r"Encoder_([2-5])\.model\.2\.(weight|bias)", r"encoder.down_blocks.{\1-1}.norm.\2"),
    ("EN", r"middle\.(\d+)\.conv_block\.1\.weight", r"encoder.residual_blocks.\1.conv1.weight"),
    ("EN", r"middle\.(\d+)\.conv_block\.5\.weight", r"encoder.residual_blocks.\1.conv2.weight"),
    ("DE", r"Decoder_([1-6])\.model\.1\.(weight|bias)", r"decoder.up_blocks.{\1-1}.conv.\2"),
    ("DE", r"Decoder_([1-5])\.model\.2\.(weight|bias)", r"decoder.up_blocks.{\1-1}.norm.\2"),
    ("MEDFE", r"pc_block\.down_128\.model\.0\.weight", r"medfe.texture_level1.0.conv.weight"),
    ("MEDFE", r"pc_block\.down_128\.model\.3\.weight", r"medfe.texture_level1.1.conv.weight"),
    ("MEDFE", r"pc_block\.down_64\.model\.0\.weight", r"medfe.texture_level2.conv.weight"),
    ("MEDFE", r"pc_block\.down_32\.model\.0\.weight", r"medfe.texture_level3.conv.weight"),
    ("MEDFE", r"pc_block\.up\.conv\.weight", r"medfe.structure_projection.conv.weight"),
    ("MEDFE", r"pc_block\.down\.model\.0\.weight", r"medfe.merge.conv.weight"),
    ("MEDFE", r"pc_block\.cov_3\.(\d)\.conv\.input_conv\.weight", r"medfe.filling_streams.0.\1.conv.weight"),
    ("MEDFE", r"pc_block\.cov_5\.(\d)\.conv\.input_conv\.weight", r"medfe.filling_streams.1.\1.conv.weight"),
    ("MEDFE", r"pc_block\.cov_7\.(\d)\.conv\.input_conv\.weight", r"medfe.filling_streams.2.\1.conv.weight"),
    (
        "MEDFE",
        r"pc_block\.cov_3\.(\d)\.conv\.mask_conv\.weight",
        r"medfe.filling_streams.0.\1.conv.mask_weight",
    ),
    (
        "MEDFE",
        r"pc_block\.cov_5\.(\d)\.conv\.mask_conv\.weight",
        r"medfe.filling_streams.1.\1.conv.mask_weight",
    ),
    (
        "MEDFE",
        r"pc_block\.cov_7\.(\d)\.conv\.mask_conv\.weight",
        r"medfe.filling_streams.2.\1.conv.mask_weight",
    ),
    ("MEDFE", r"pc_block\.cov_3\.(\d)\.bn\.(weight|bias)", r"medfe.filling_streams.0.\1.norm.\2"),
    ("MEDFE", r"pc_block\.cov_5\.(\d)\.bn\.(weight|bias)", r"medfe.filling_streams.1.\1.norm.\2"),
    ("MEDFE", r"pc_block\.cov_7\.(\d)\.bn\.(weight|bias)", r"medfe.filling_streams.2.\1.norm.\2"),
    ("MEDFE", r"loss\.0\.down_model\.0\.(weight|bias)", r"medfe.branch_head.\1"),
    ("MEDFE", r"pc_block\.fuse\.model\.0\.weight", r"medfe.fuse.conv.weight"),
    ("MEDFE", r"pc_block\.base\.model\.0\.fc\.0\.(weight|bias)", r"medfe.equalization.channel_squeeze.\1"),
    ("MEDFE", r"pc_block\.base\.model\.0\.fc\.2\.(weight|bias)", r"medfe.equalization.channel_excite.\1"),
    ("MEDFE", r"pc_block\.base\.down\.0\.weight", r"medfe.equalization.projection.conv.weight"),
    ("MEDFE", r"pc_block\.up_128\.conv\.weight", r"medfe.to_level1.conv.weight"),
    ("MEDFE", r"pc_block\.up_64\.conv\.weight", r"medfe.to_level2.conv.weight"),
    ("MEDFE", r"pc_block\.up_32\.conv\.weight", r"medfe.to_level3.conv.weight"),
    ("MEDFE", r"pc_block\.down_16\.model\.0\.weight", r"medfe.to_level4.conv.weight"),
    ("MEDFE", r"pc_block\.down_8\.model\.([03])\.weight", r"medfe.to_level5.{\1/3}.conv.weight"),
    ("MEDFE", r"pc_block\.down_4\.model\.([036])\.weight", r"medfe.to_level6.{\1/3}.conv.weight"),
]


class CheckpointMismatchError(ValueError):
    """The original state dicts do not match the MEDFE architecture.

    Attributes:
        problems: every missing, unexpected or mis-shaped key, one line each.
    """

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        super().__init__(f"the checkpoint does not match the MEDFE architecture: {len(problems)} problem(s): {shown}")


class CheckpointReadError(ValueError):
    """A file that is not a state dict of tensors that `torch.load(weights_only=True)` can read."""


def original_to_hf_key(network: str, key: str) -> str | None:
    """Name in `MEDModel` of `key` from the original `network` ("EN", "DE" or "MEDFE") state dict, or None."""
    for rule_network, pattern, replacement in _KEY_RULES:
        if rule_network != network:
            continue
        match = re.fullmatch(pattern, key)
        if match:
            # `{n-1}` / `{n/3}` in a replacement turn the original's 1-based or Sequential indices into ours.
            expanded = match.expand(replacement)
            return re.sub(r"\{(\d+)([-/])(\d+)\}", _index_arithmetic, expanded)
    return None


def _index_arithmetic(match: re.Match) -> str:
    left, op, right = int(match.group(1)), match.group(2), int(match.group(3))
    return str(left - right if op == "-" else left // right)


def strip_data_parallel_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def convert_state_dicts(
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]], config: MEDConfig | None = None
) -> dict[str, torch.Tensor]:
    """Map the three original state dicts (keyed by "EN", "DE", "MEDFE") to a `MEDModel` state dict.

    Raises `CheckpointMismatchError` naming every missing, unexpected or mis-shaped key.
    """
    config = config or MEDConfig()
    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in MEDModel(config).state_dict().items()}

    converted: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for network in NETWORKS:
        for key, value in strip_data_parallel_prefix(state_dicts[network]).items():
            target = original_to_hf_key(network, key)
            if target is None or target not in expected:
                problems.append(f"unexpected key {network}.{key}")
            elif tuple(value.shape) != expected[target]:
                problems.append(
                    f"shape mismatch for {network}.{key}: got {tuple(value.shape)}, expected {expected[target]}"
                )
            else:
                converted[target] = value.detach().to(torch.float32).contiguous()
    problems += [f"missing key for {key}" for key in sorted(expected.keys() - converted.keys())]
    if problems:
        raise CheckpointMismatchError(problems)
    return converted


def load_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of one released file, read without running pickled code.

    Raises:
        `FileNotFoundError`: no such file.
        `CheckpointReadError`: not a PyTorch file, a pickle holding more than tensors, or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol before refusing a file; the refusal is what the user reads.
            warnings.simplefilter("ignore", UserWarning)
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointReadError(
            f"{path} cannot be read safely: it is not a PyTorch file, or it pickles objects other than tensors "
            "(refused: weights_only loading never runs code from a file)"
        ) from None
    except (RuntimeError, EOFError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointReadError(f"{path} is not a readable PyTorch file: {reason}") from None
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointReadError(f"{path} does not hold a state dict of tensors")
    return dict(state_dict)


def convert_checkpoint(
    encoder: str | Path,
    decoder: str | Path,
    medfe: str | Path,
    output_dir: str | Path,
    feature_mask: str = "released",
) -> Path:
    """Convert the three released files and write a `MEDModel.from_pretrained`-loadable folder.

    Raises:
        `FileExistsError`: `output_dir` exists (it is never replaced).
        `CheckpointReadError`, `CheckpointMismatchError`, `FileNotFoundError`: see `load_original_state_dict`
            and `convert_state_dicts`.
    """
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise FileExistsError(17, "already exists; remove it or choose another --output-dir", str(output_dir))
    config = MEDConfig(feature_mask=feature_mask)
    state_dicts = {
        "EN": load_original_state_dict(encoder),
        "DE": load_original_state_dict(decoder),
        "MEDFE": load_original_state_dict(medfe),
    }
    converted = convert_state_dicts(state_dicts, config)
    model = MEDModel(config)
    model.load_state_dict(converted, strict=True, assign=True)
    check_finite_weights(model)

    with atomic_folder(output_dir) as staging:
        model.save_pretrained(staging)
    return output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", required=True, help="EN.pkl of the original release")
    parser.add_argument("--decoder", required=True, help="DE.pkl of the original release")
    parser.add_argument("--medfe", required=True, help="MEDEF.pkl of the original release")
    parser.add_argument("--output-dir", required=True, help="folder to write (config.json + model.safetensors)")
    parser.add_argument(
        "--feature-mask",
        choices=FEATURE_MASK_MODES,
        default="released",
        help="'released' mirrors the released code (its feature mask never marks a hole); 'nearest' is the "
        "repository's first version. Both fit the same weights; which one trained them is unknown.",
    )
    args = parser.parse_args(argv)
    try:
        out = convert_checkpoint(args.encoder, args.decoder, args.medfe, args.output_dir, args.feature_mask)
    except (OSError, ValueError) as error:  # CheckpointReadError, CheckpointMismatchError, non-finite weights
        message = f"{error.filename}: {error.strerror}" if isinstance(error, OSError) and error.filename else error
        print(f"convert_original_checkpoint: error: {message}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
