"""Recipe weights `medfe-parity-v1`: deterministic stand-ins for the released checkpoints.

The parity fixture in `fixtures/` was computed by the original MEDFE code with these weights; rebuilding them
from the recipe keeps the fixture small. The key list (names and shapes of the three original state dicts)
is stored beside this file.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch

ORIGINAL_KEYS = Path(__file__).parent / "fixtures" / "original_keys.tsv"


def original_key_shapes() -> dict[str, tuple[int, ...]]:
    """{"EN.Encoder_1.model.0.weight": (64, 6, 4, 4), ...} for every key of the released state dicts."""
    shapes = {}
    for line in ORIGINAL_KEYS.read_text().splitlines()[1:]:
        key, shape, *_ = line.split("\t")
        shapes[key] = tuple(int(n) for n in shape.split("x"))
    return shapes


def recipe_tensor(key: str, shape: tuple[int, ...], salt: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(zlib.crc32(f"{salt}|{key}".encode()))
    z = torch.randn(shape, generator=generator, dtype=torch.float32)
    if len(shape) >= 2:
        return 0.02 * z
    if key.endswith(".weight"):
        return 1.0 + 0.1 * z
    return 0.05 * z


def recipe_state_dicts(salt: str) -> dict[str, dict[str, torch.Tensor]]:
    """The three original state dicts {"EN": ..., "DE": ..., "MEDFE": ...}, keys without the network prefix."""
    state_dicts: dict[str, dict[str, torch.Tensor]] = {"EN": {}, "DE": {}, "MEDFE": {}}
    for key, shape in original_key_shapes().items():
        network, local_key = key.split(".", 1)
        state_dicts[network][local_key] = recipe_tensor(key, shape, salt)
    return state_dicts
