"""training/train.py end to end on a tiny model: outputs, checkpoints, resume after SIGKILL, two processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from med_hf import MEDModel

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "training" / "train.py"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Twelve synthetic 'photos' (gradients, discs, stripes) in an image folder."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:160, 0:192]
    for i in range(12):
        base = np.stack([xx / 192, yy / 160, np.full_like(xx, i / 12, dtype=float)], -1) * 200
        disc = (yy - rng.integers(40, 120)) ** 2 + (xx - rng.integers(40, 150)) ** 2 < rng.integers(200, 900)
        base[disc] = rng.integers(0, 255, 3)
        base += 20 * np.sin(xx / (2 + i % 4))[..., None]
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(folder / f"photo_{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def masks(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("masks")
    for i in range(4):
        mask = np.zeros((200, 200), np.uint8)
        mask[30 + 20 * i : 90 + 20 * i, 40:120] = 255
        Image.fromarray(mask).save(folder / f"{i:05d}.png")
    return folder


def train_args(photos: Path, masks: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--train_data_dir", str(photos), "--mask_dir", str(masks), "--mask_ratios", "free_form=0.5,folder=0.5",
        "--model_config", "tiny", "--resolution", "128", "--train_batch_size", "2",
        "--shuffle_buffer_size", "4", "--output_dir", str(output_dir), "--seed", "3", "--logging_steps", "1",
        *extra,
    ]  # fmt: skip


def run(args: list[str], env: dict | None = None, launcher: list[str] | None = None, timeout: int = 600):
    command = (launcher or [sys.executable]) + [str(TRAIN), *args]
    environment = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **(env or {}))
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.slow
def test_training_writes_model_checkpoints_logs_and_card(photos, masks, tmp_path):
    out = tmp_path / "run"
    result = run(
        train_args(
            photos, masks, out, "--max_train_steps", "4", "--checkpointing_steps", "2",
            "--checkpoints_total_limit", "1", "--validation_steps", "2", "--num_validation_images", "2",
            "--refinement_channels", "4", "--hole_prior", "harmonic", "--weight_by_hole_area",
        )
    )  # fmt: skip
    assert "PERCEPTUAL AND STYLE LOSSES ARE OFF" in result.stderr
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]  # pruned to the limit
    assert not list(out.glob(".checkpoint-*"))  # no half-written checkpoint left behind
    checkpoint_files = {p.name for p in (out / "checkpoint-4").iterdir()}
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl"} <= checkpoint_files
    assert "model_1.safetensors" in checkpoint_files  # the discriminators are trained and saved (GAN on)
    assert MEDModel.from_pretrained(out / "checkpoint-4" / "generator").config.base_channels == 4

    model = MEDModel.from_pretrained(out)
    assert model.config.base_channels == 4 and model.config.refinement_channels == 4
    assert model.config.hole_prior == "harmonic"
    assert model.refinement.conv_out.weight.any()  # the zero-initialised head was trained
    assert model.refinement.gate_out.weight.any()
    card = (out / "README.md").read_text()
    assert "license: cc-by-nc-sa-4.0" in card and "Steps: 4" in card

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "logs" / "med-train"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/l1", "loss/aux", "loss/gan", "loss/discriminator", "lr", "images_per_second"} <= scalars
    assert "validation/psnr_composite" in scalars
    assert any("validation" in tag for tag in events.Tags()["images"])


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_same_weights(photos, masks, tmp_path):
    common = (
        "--max_train_steps",
        "6",
        "--checkpointing_steps",
        "2",
        "--validation_steps",
        "100",
        "--report_to",
        "none",
    )
    run(train_args(photos, masks, tmp_path / "straight", *common))

    killed = tmp_path / "killed"
    command = [sys.executable, str(TRAIN), *train_args(photos, masks, killed, *common)]
    environment = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint-2").is_dir():
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists(), "killed too late to test anything"

    result = run(train_args(photos, masks, killed, *common, "--resume_from_checkpoint", "latest"))
    assert "resuming from" in result.stdout + result.stderr
    straight, resumed = load_file(tmp_path / "straight" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


@pytest.mark.slow
def test_two_cpu_processes_stay_in_sync_on_different_data(photos, masks, tmp_path):
    out = tmp_path / "ddp"
    run(
        train_args(photos, masks, out, "--max_train_steps", "3", "--checkpointing_steps", "100",
                   "--validation_steps", "100", "--report_to", "none"),
        env={"ACCELERATE_USE_CPU": "true"},
        launcher=[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                  "--master_addr", "127.0.0.1", "--master_port", str(29500 + os.getpid() % 1000)],
    )  # fmt: skip
    summaries = [json.loads((out / "rank_summaries" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert summaries[0]["weights_sha256"] == summaries[1]["weights_sha256"]
    assert summaries[0]["first_samples"] != summaries[1]["first_samples"]
    assert len(summaries[0]["first_samples"]) == 6  # 3 steps x batch 2 on each rank
    assert MEDModel.from_pretrained(out).config.base_channels == 4
