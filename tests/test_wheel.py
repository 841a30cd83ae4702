"""An installed wheel, not the checkout: `med-publish --dry-run` finds everything it ships (the Space's files,
the model card template, the remote-code files) inside the package."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import torch

from med_hf import MEDConfig, MEDModel

REPOSITORY = Path(__file__).resolve().parents[1]


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A virtual environment with med-hf installed from a freshly built wheel (its dependencies come from this
    environment's site-packages, so nothing is downloaded)."""
    root = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist", REPOSITORY])
    (wheel,) = (root / "dist").glob("med_hf-*.whl")
    venv.create(root / "venv", system_site_packages=True, with_pip=False)
    python = root / "venv" / "bin" / "python"
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", wheel])
    return root / "venv"


@pytest.mark.slow
def test_med_publish_dry_run_from_a_wheel(installed, tmp_path):
    location = run([installed / "bin" / "python", "-c", "import med_hf; print(med_hf.__file__)"], cwd=tmp_path)
    assert Path(location.stdout.strip()).is_relative_to(installed), "the checkout, not the wheel, was imported"

    torch.manual_seed(0)
    MEDModel(MEDConfig.from_preset("tiny")).save_pretrained(tmp_path / "model")
    command = [installed / "bin" / "med-publish", "--model", tmp_path / "model", "--repo-id", "org/medfe-tiny"]
    command += ["--space-id", "org/medfe-tiny-demo", "--dry-run", tmp_path / "out"]
    run(command, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    space = tmp_path / "out" / "space"
    for name in ("app.py", "requirements.txt", "README.md"):
        assert (space / name).is_file() and not (space / name).is_symlink()
        assert (space / name).read_bytes() == (REPOSITORY / "space" / name).read_bytes() or name == "README.md"
    assert "org/medfe-tiny" in (space / "README.md").read_text()
    card = (tmp_path / "out" / "model" / "README.md").read_text()
    assert "MEDFE" in card and "{{" not in card
    for name in ("modeling_med.py", "configuration_med.py", "pipeline_med.py"):
        assert (tmp_path / "out" / "model" / name).is_file()
