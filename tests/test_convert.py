"""The converter of the released checkpoints: every input problem is one line and exit code 1, nothing written."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from med_hf.convert_original_checkpoint import CheckpointMismatchError, convert_state_dicts, main


def arguments(encoder: Path, output: Path) -> list[str]:
    """`encoder` as all three files (each problem shows on the first one read)."""
    return ["--encoder", str(encoder), "--decoder", str(encoder), "--medfe", str(encoder), "--output-dir", str(output)]


def convert(capsys, tmp_path: Path, encoder: Path) -> tuple[int, str]:
    code = main(arguments(encoder, tmp_path / "out"))
    return code, capsys.readouterr().err


class _RunsCode:
    """A pickle that would create a file when unpickled without `weights_only`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _text_file(path: Path) -> None:
    path.write_text("not a checkpoint\n")


def _list_of_numbers(path: Path) -> None:
    torch.save([1, 2, 3], path)


def _malicious_pickle(path: Path) -> None:
    with open(path, "wb") as handle:
        pickle.dump({"weight": _RunsCode(path.with_name("pwned"))}, handle)


def _truncated(path: Path) -> None:
    torch.save({"Encoder_1.model.0.weight": torch.zeros(64, 4, 7, 7)}, path)
    path.write_bytes(path.read_bytes()[:300])


def _missing_keys(path: Path) -> None:
    torch.save({"Encoder_1.model.0.weight": torch.zeros(64, 4, 7, 7)}, path)


BAD_FILES = [
    (_text_file, "cannot be read safely"),
    (_list_of_numbers, "does not hold a state dict of tensors"),
    (_malicious_pickle, "cannot be read safely"),
    (_truncated, "is not a readable PyTorch file"),
    (_missing_keys, "does not match the MEDFE architecture"),
]


@pytest.mark.parametrize(("make", "expected"), BAD_FILES, ids=[make.__name__.strip("_") for make, _ in BAD_FILES])
def test_bad_inputs_are_one_line_and_write_nothing(capsys, tmp_path, make, expected):
    checkpoint = tmp_path / "EN.pkl"
    make(checkpoint)
    code, err = convert(capsys, tmp_path, checkpoint)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("convert_original_checkpoint: error: ") and expected in lines[0]
    assert [p.name for p in tmp_path.iterdir()] == ["EN.pkl"], "something was written, or the pickle ran code"


def test_malicious_pickle_from_the_command_line(tmp_path):
    """As users run it: one line on stderr (no warning from torch's unpickler), no code run, nothing written."""
    _malicious_pickle(tmp_path / "EN.pkl")
    command = [
        sys.executable,
        "-m",
        "med_hf.convert_original_checkpoint",
        *arguments(tmp_path / "EN.pkl", tmp_path / "out"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot be read safely" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["EN.pkl"]


def test_missing_file_and_existing_output_are_refused(capsys, tmp_path):
    code, err = convert(capsys, tmp_path, tmp_path / "nope.pkl")
    assert code == 1 and "no such checkpoint file" in err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    _missing_keys(tmp_path / "EN.pkl")
    code, err = convert(capsys, tmp_path, tmp_path / "EN.pkl")
    assert code == 1 and "already exists" in err and len(err.splitlines()) == 1
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_mismatch_keeps_every_problem_for_callers():
    with pytest.raises(CheckpointMismatchError) as info:
        convert_state_dicts({"EN": {"bogus": torch.zeros(1)}, "DE": {}, "MEDFE": {}})
    assert "unexpected key EN.bogus" in info.value.problems
    assert len(info.value.problems) > 100  # every missing key is listed
    assert "\n" not in str(info.value)


def test_output_has_the_permissions_of_the_umask(tmp_path, monkeypatch):
    import med_hf.convert_original_checkpoint as converter
    from med_hf import MEDConfig, MEDModel

    tiny = MEDConfig.from_preset("tiny")
    monkeypatch.setattr(converter, "MEDConfig", lambda feature_mask: tiny)
    state = MEDModel(tiny).state_dict()
    monkeypatch.setattr(converter, "load_original_state_dict", lambda path: {})
    monkeypatch.setattr(converter, "convert_state_dicts", lambda state_dicts, config: state)
    previous = os.umask(0o022)
    try:
        output = converter.convert_checkpoint("EN.pkl", "DE.pkl", "MEDEF.pkl", tmp_path / "model")
    finally:
        os.umask(previous)
    assert output.stat().st_mode & 0o777 == 0o755
    for path in output.iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path
