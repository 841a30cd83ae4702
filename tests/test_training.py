"""training/train.py end to end on a tiny model: outputs, checkpoints, resume after SIGKILL, two processes, the
push to the Hub; its validation through the pipeline, and the training record of the model cards."""

import importlib.util
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from med_hf import MEDConfig, MEDModel
from med_hf.atomic_files import current_umask
from med_hf.evaluation import PipelineInpainter, keep_known, l1_percent, masked_input, psnr
from med_hf.publishing import hub
from med_hf.training.record import TRAINING_ARGUMENTS_FILE, training_record, write_training_arguments

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "training" / "train.py"
EXPORT = ROOT / "training" / "export_default_model.py"
SECRET = "hf_never_written_anywhere"


def load_script(path: Path):
    """A script of training/ imported as a module (it is not part of the package), once per session."""
    name = f"training_script_{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the script runs
        spec.loader.exec_module(module)
    return sys.modules[name]


def files_in(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


def umask_mode(path: Path) -> int:
    """The mode a new file gets under the current umask (0644 under 022); executables keep their x bits."""
    executable = path.stat().st_mode & 0o100
    return (0o777 if executable else 0o666) & ~current_umask()


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
            "--refinement_channels", "4", "--hole_prior", "harmonic", "--weight_by_hole_area", "--hub_token", SECRET,
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
    # The training record: options, data named without the machine's folders, hours from the TensorBoard log.
    assert "`--max_train_steps 4`" in card and "`--hole_prior harmonic`" in card and "- Time: " in card
    assert f"- Data: {photos.parent.name}/{photos.name}, masks from {masks.parent.name}/{masks.name}" in card
    assert str(photos) not in card and str(out) not in card
    arguments = json.loads((out / "training_args.json").read_text())
    assert "hub_token" not in arguments and arguments["num_processes"] == 1
    for path in out.rglob("*"):  # the token reaches no file: not the arguments, the card or the TensorBoard log
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
    # Whatever wrote them (save_state on every rank, save_pretrained), files get the umask's modes.
    for path in [*(out / "checkpoint-4").rglob("*"), *out.glob("*.*")]:
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == umask_mode(path), path
    assert not list(out.glob(".*"))  # no staging folder left

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "logs" / "med-train"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/l1", "loss/aux", "loss/gan", "loss/discriminator", "lr", "images_per_second"} <= scalars
    # Validation goes through MEDInpaintPipeline and the evaluation's metrics (L1 in percent of 255).
    assert {"validation/psnr_composite", "validation/l1_percent_composite"} <= scalars
    psnr_values = [event.value for event in events.Scalars("validation/psnr_composite")]
    assert [event.step for event in events.Scalars("validation/psnr_composite")] == [2, 4]
    assert all(5 < value < 60 for value in psnr_values)
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


# --- the push to the Hub is med-publish's --------------------------------------------------------------------

# Runs train.py (argv[2:]) with HfApi's network methods replaced: each upload is copied to argv[1], the
# arguments of create_repo are written beside it.
PUSH_DRIVER = """
import json, runpy, shutil, sys
from pathlib import Path
from huggingface_hub import HfApi

uploaded = Path(sys.argv[1])

def create_repo(self, repo_id, **kwargs):
    (uploaded.parent / "create_repo.json").write_text(json.dumps({"repo_id": repo_id, "token": self.token, **kwargs}))
    return f"https://huggingface.co/{repo_id}"

def upload_folder(self, *, repo_id, folder_path, **kwargs):
    shutil.copytree(folder_path, uploaded)

HfApi.create_repo, HfApi.upload_folder = create_repo, upload_folder
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_push_to_hub_uploads_the_repo_of_med_publish(photos, masks, tmp_path):
    out, uploaded, repo_id = tmp_path / "run", tmp_path / "uploaded", "med-org/pushed"
    args = train_args(
        photos, masks, out, "--max_train_steps", "2", "--checkpointing_steps", "1", "--validation_steps", "100",
        "--gan_weight", "0", "--report_to", "none",
        "--push_to_hub", "--hub_model_id", repo_id, "--hub_token", "hf_dummy", "--hub_private_repo",
    )  # fmt: skip
    run(args, launcher=[sys.executable, "-c", PUSH_DRIVER, str(uploaded)])

    created = json.loads((tmp_path / "create_repo.json").read_text())
    assert created == {"repo_id": repo_id, "token": "hf_dummy", "repo_type": "model", "private": True, "exist_ok": True}
    # Not the raw output folder (checkpoints, logs, arguments): the layout of med-publish, file for file.
    assert hub.main(["--model", str(out), "--repo-id", repo_id, "--dry-run", str(tmp_path / "dry")]) == 0
    published = tmp_path / "dry" / "model"
    expected = {"README.md", "config.json", "model.safetensors", *hub.REMOTE_CODE_FILES}
    assert files_in(uploaded) == files_in(published) == expected
    for name in expected:
        assert (uploaded / name).read_bytes() == (published / name).read_bytes(), name
    assert json.loads((uploaded / "config.json").read_text())["auto_map"] == hub.AUTO_MAP
    card = (uploaded / "README.md").read_text()
    assert card == (out / "README.md").read_text()  # the card of the output folder is the one on the Hub
    assert f'from_pretrained("{repo_id}")' in card and "- Steps: 2" in card and "`--gan_weight 0.0`" in card
    assert "hf_dummy" not in card and str(photos) not in card


def test_a_bad_hub_model_id_is_refused_before_training(tmp_path, capsys):
    train = load_script(TRAIN)
    with pytest.raises(SystemExit):
        train.parse_args(["--train_data_dir", str(tmp_path), "--output_dir", str(tmp_path), "--hub_model_id", "no id"])
    assert "--hub_model_id" in capsys.readouterr().err


def test_every_hole_prior_of_the_config_is_a_choice(tmp_path):
    from med_hf.configuration_med import HOLE_PRIORS

    train = load_script(TRAIN)
    common = ["--train_data_dir", str(tmp_path), "--output_dir", str(tmp_path), "--refinement_channels", "4"]
    assert "exact_harmonic" in HOLE_PRIORS
    for prior in HOLE_PRIORS:
        assert train.parse_args([*common, "--hole_prior", prior]).hole_prior == prior


# --- validation through the pipeline -------------------------------------------------------------------------


def test_validation_is_the_pipeline_scored_with_the_evaluation_metrics():
    train = load_script(TRAIN)
    torch.manual_seed(0)
    generator = MEDModel(MEDConfig.from_preset("tiny")).train()
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    holes = np.zeros((2, 128, 128), dtype=bool)
    holes[0, 20:70, 30:90], holes[1, 60:120, 10:50] = True, True
    images = train.ValidationImages(targets=targets, holes=holes)
    accelerator = mock.Mock(trackers=[], unwrap_model=lambda model: model)

    metrics = train.run_validation(generator, images, accelerator, step=1)

    assert generator.training  # back to training mode
    results = PipelineInpainter(generator).batch(masked_input(targets, holes), holes)
    pairs = list(zip(keep_known(targets, results, holes), targets, strict=True))
    assert metrics == {
        "validation/psnr_composite": pytest.approx(np.mean([psnr(result, target) for result, target in pairs])),
        "validation/l1_percent_composite": pytest.approx(np.mean([l1_percent(r, t) for r, t in pairs])),
    }


# --- the training record of the model cards ------------------------------------------------------------------


def write_run(folder: Path, **arguments) -> Path:
    folder.mkdir(parents=True)
    (folder / TRAINING_ARGUMENTS_FILE).write_text(json.dumps(arguments))
    return folder


def write_tensorboard_log(folder: Path, *walltimes: float) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    for step, walltime in enumerate(walltimes):
        writer.add_scalar("loss/generator", 1.0, step, walltime=walltime)
    writer.close()


STAGE_1 = {
    "train_data_dir": "/home/someone/data/bsds500/train",
    "mask_dir": "/home/someone/data/masks/irregular",
    "model_config": "/home/someone/configs/small.json",
    "resolution": 256,
    "train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_train_steps": 100,
    "learning_rate": 0.001,
    "gan_weight": 0.0,
    "perceptual_weight": 0.0,
    "style_weight": 0.0,
    "weight_by_hole_area": False,
    "hole_prior": None,
    "output_dir": "/home/someone/runs/a",
    "logging_dir": "logs",
    "resume_from_checkpoint": "latest",
    "hub_token": SECRET,
    "num_processes": 1,
}


@pytest.fixture
def three_stages(tmp_path, monkeypatch) -> Path:
    """Runs a <- b <- c (`--init_from` relative to where training ran), the first two with TensorBoard logs."""
    runs = tmp_path / "runs"
    write_run(runs / "a", **STAGE_1)
    write_run(
        runs / "b", **{**STAGE_1, "init_from": "runs/a", "max_train_steps": 50, "learning_rate": 0.0003,
                       "weight_by_hole_area": True, "output_dir": "/home/someone/runs/b"},
    )  # fmt: skip
    write_run(
        runs / "c", **{**STAGE_1, "init_from": "runs/b", "max_train_steps": 25, "weight_by_hole_area": False,
                       "hole_prior": "harmonic", "train_batch_size": 2, "num_processes": 2,
                       "gradient_accumulation_steps": 2},
    )  # fmt: skip
    write_tensorboard_log(runs / "a" / "logs" / "med-train", 1000.0, 1000.0 + 3600)
    write_tensorboard_log(runs / "b" / "logs" / "med-train", 5000.0, 5000.0 + 900)  # started, then resumed:
    write_tensorboard_log(runs / "b" / "logs" / "med-train", 9000.0, 9000.0 + 900)  # the spans add up
    monkeypatch.chdir(tmp_path)
    return runs


def test_training_record_follows_the_init_from_stages(three_stages):
    record = training_record(three_stages / "c")
    assert list(record) == [
        "command", "stage 1 arguments", "stage 2 arguments (changes)", "stage 3 arguments (changes)", "data",
        "steps", "batch size",
    ]  # fmt: skip
    assert record["command"] == (
        "`training/train.py` in 3 stages, each initialised from the one before, with the arguments below"
    )
    assert record["stage 1 arguments"] == (
        "`--model_config configs/small.json`, `--resolution 256`, `--train_batch_size 4`, "
        "`--gradient_accumulation_steps 1`, `--max_train_steps 100`, `--learning_rate 0.001`, `--gan_weight 0.0`, "
        "`--perceptual_weight 0.0`, `--style_weight 0.0`"
    )
    assert record["stage 2 arguments (changes)"] == (
        "`--max_train_steps 50`, `--learning_rate 0.0003`, `--weight_by_hole_area`"
    )
    assert record["stage 3 arguments (changes)"] == (
        "`--train_batch_size 2`, `--gradient_accumulation_steps 2`, `--max_train_steps 25`, "
        "`--learning_rate 0.001`, without `--weight_by_hole_area`, `--hole_prior harmonic`"
    )
    assert record["data"] == "bsds500/train, masks from masks/irregular"
    assert record["steps"] == "175 (100 + 50 + 25)"
    assert record["batch size"] == "4 / 8 (2 per process x 2 processes x 2 accumulation steps)"
    # no time: the last stage has no TensorBoard log


def test_training_record_never_holds_secrets_or_local_paths(three_stages):
    text = json.dumps(training_record(three_stages / "c"))
    assert SECRET not in text and "hub_token" not in text
    assert "/home/someone" not in text and "runs/" not in text and "latest" not in text


def test_training_record_hours_from_tensorboard_and_init_from_beside_the_run(three_stages, monkeypatch):
    monkeypatch.chdir(three_stages / "a")  # "runs/b" is not found from here, but beside the run folder
    record = training_record(three_stages / "b")
    assert record["steps"] == "150 (100 + 50)"
    assert record["time"] == "1.5 h"  # 1 h, then 15 + 15 min
    assert training_record(three_stages / "a")["time"] == "1.0 h"


def test_training_record_of_a_single_run_and_of_a_model_from_the_hub(tmp_path):
    arguments = {**STAGE_1, "init_from": "med-org/medfe-base", "perceptual_weight": 0.2, "vgg16_weights": None}
    record = training_record(write_run(tmp_path / "run", **arguments))
    assert record["command"] == "`training/train.py` with the arguments below"
    assert record["initialised from"] == "`med-org/medfe-base`"
    assert "`--perceptual_weight 0.2`" in record["arguments"]
    assert record["perceptual and style losses"].startswith("off, no `--vgg16_weights` given")
    assert record["steps"] == "100" and record["batch size"] == "4"
    assert training_record(tmp_path / "nowhere") is None


def test_training_arguments_are_written_without_secrets(tmp_path):
    path = write_training_arguments(tmp_path, {"seed": 0, "hub_token": SECRET, "output_dir": "x"}, num_processes=2)
    assert json.loads(path.read_text()) == {"seed": 0, "output_dir": "x", "num_processes": 2}
    assert stat.S_IMODE(path.stat().st_mode) == umask_mode(path)


def test_default_model_record_names_its_script_data_and_machine(three_stages):
    write_tensorboard_log(three_stages / "c" / "logs" / "med-train", 0.0, 1800.0)
    record = load_script(EXPORT).default_model_record(three_stages / "c")
    assert record["command"] == (
        "`training/train_default_model.sh` (`training/train.py` in 3 stages, each initialised from the one before, "
        "with the arguments below)"
    )
    assert record["data"].startswith("BSDS500 train (200 photos)")
    assert record["time"] == "2.0 h on 2 CPU cores (torch 2.13.0)"
    assert record["steps"] == "175 (100 + 50 + 25)"


def test_export_refresh_rebuilds_the_card_and_pictures_and_keeps_the_weights(tmp_path, tiny_model):
    from med_hf.evaluation import evaluate_methods, protocol_mask_name, telea

    export = load_script(EXPORT)
    folder = tmp_path / "default_model"
    tiny_model.save_pretrained(folder)
    for code in folder.glob("*.py"):
        code.unlink()
    (folder / export.RECORD_NAME).write_text(json.dumps({"command": "`train.sh`", "steps": "42"}))
    (folder / "examples.png").write_bytes(b"an old grid")
    kept = {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}

    eval_dir, mask_dir = tmp_path / "eval", tmp_path / "masks"
    eval_dir.mkdir()
    mask_dir.mkdir()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(2)]
    for index in range(2):
        hole = np.zeros((256, 256), np.uint8)
        hole[100:120, 80 + index : 110] = 255
        Image.fromarray(hole).save(mask_dir / protocol_mask_name(index, 0))
    report = evaluate_methods({"telea": telea, "grey": lambda image, hole: np.full_like(image, 128)}, images, mask_dir,
                              buckets=[0], progress=False)  # fmt: skip
    (eval_dir / "report.json").write_text(json.dumps(report))
    for picture in ("metrics.png", "texture_examples.png", "texture_crops.png"):
        Image.new("RGB", (8, 8)).save(eval_dir / picture)

    assert export.refresh(eval_dir, folder) == folder
    assert {name: (folder / name).read_bytes() for name in kept} == kept
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "metrics.png",
        "model.safetensors",
        "texture_crops.png",
        "texture_examples.png",
        "training_record.json",
    ]  # fmt: skip  (examples.png was not in the new evaluation: a stale picture is dropped)
    card = (folder / "README.md").read_text()
    assert "- Steps: 42" in card and "| grey PSNR |" in card
    assert card.index("](texture_examples.png)") < card.index("](texture_crops.png)") < card.index("](metrics.png)")
    with pytest.raises(FileNotFoundError):
        export.refresh(eval_dir, tmp_path / "no-such-model")


def test_object_shapes_mask_source(tmp_path: Path):
    """--mask_ratios objects=... draws object shapes from --segmentation_dir, refuses without it, and the training
    record names where the shapes came from."""
    train = load_script(TRAIN)
    labels = np.ones((40, 60), np.uint16)
    labels[25:] = 2
    labels[10:18, 20:30] = 3
    segmentations = tmp_path / "segmentations" / "train"
    segmentations.mkdir(parents=True)
    Image.fromarray(labels).save(segmentations / "7_0.png")
    required = ["--output_dir", str(tmp_path / "out"), "--train_data_dir", str(tmp_path)]
    args = train.parse_args([*required, "--mask_ratios", "objects=1", "--segmentation_dir", str(segmentations)])
    mask, source = train.build_mask_sampler(args).sample_with_source(40, 60, np.random.default_rng(0))
    assert source == "objects" and (mask[14, 25] == 1 or mask[14, 34] == 1) and mask[35, 5] == 0  # maybe mirrored
    with pytest.raises(SystemExit, match="needs --segmentation_dir"):
        train.build_mask_sampler(train.parse_args([*required, "--mask_ratios", "objects=1"]))
    run = tmp_path / "run"
    run.mkdir()
    arguments = {"segmentation_dir": str(segmentations), "train_data_dir": "data/bsds500/train"}
    write_training_arguments(run, arguments, num_processes=1)
    assert training_record(run)["data"] == "bsds500/train, object shapes from segmentations/train"
