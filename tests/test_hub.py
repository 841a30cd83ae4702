"""`med-publish` (med_hf.publishing.hub): repo layouts, model cards, loading the published repos, uploads, errors."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, SpaceCard
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from med_hf import MEDConfig, MEDModel
from med_hf.evaluation import PROTOCOL, beats_summary, bucket_label
from med_hf.publishing import hub

REPO_ID = "med-org/medfe-tiny"
SPACE_ID = "med-org/medfe-tiny-demo"
# The remote-code files are exactly the top-level model modules (tests/test_layout.py checks that list).
MODEL_FILES = {"README.md", "config.json", "model.safetensors", *hub.REMOTE_CODE_FILES}


def make_report(learned=("medfe",)) -> dict:
    """A report in the format of `med_hf.evaluation.evaluate_methods`: two buckets, one baseline, learned models."""

    def entry(psnr: float, ssim: float, l1: float) -> dict:
        return {
            "psnr": {"mean": psnr, "std": 0.5},
            "ssim": {"mean": ssim, "std": 0.01},
            "l1": {"mean": l1, "std": 0.1},
            "lpips": None,
            "fid": None,
        }

    def method(kind: str, offset: float) -> dict:
        buckets = [entry(30.0 + offset, 0.95 + offset / 100, 1.0 - offset / 10), entry(25.0 + offset, 0.9, 2.0)]
        return {"kind": kind, "seconds": 1.0, "ms_per_inpainting": 250.0, "buckets": buckets}

    not_computed = {"computed": False, "reason": "no network given"}
    report = {
        "protocol": PROTOCOL,
        "num_images": 2,
        "buckets": [
            {"bucket": b, "label": bucket_label(b), "hole_ratio": {"mean": 0.05 + b / 10, "std": 0.01}} for b in (0, 1)
        ],
        "methods": {"telea": method("classical", 0.0)}
        | {name: method("learned", 1.0 + k) for k, name in enumerate(learned)},
        "perceptual": {"fid": not_computed, "lpips": not_computed},
    }
    report["beats"] = beats_summary(report)
    return report


def random_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 128, 128, generator=generator) * 2 - 1
    mask = torch.zeros(1, 1, 128, 128)
    mask[..., 32:80, 40:96] = 1
    return image, mask


def write_space_source(folder: Path) -> Path:
    """A minimal Space: an app that reads MED_MODEL, requirements and a README with front matter."""
    folder.mkdir()
    (folder / "app.py").write_text('import os\n\nMODEL = os.environ.get("MED_MODEL")\n')
    (folder / "requirements.txt").write_text("med-hf\n")
    (folder / "README.md").write_text(
        "---\ntitle: MEDFE inpainting\nemoji: 🖌️\nsdk: gradio\napp_file: app.py\nmodels:\n- someone/else\n---\n"
        "\n# Demo\n"
    )
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"stale")
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A saved tiny MEDModel with its expected output, a Space source folder and an evaluation report."""
    root = tmp_path_factory.mktemp("sources")
    torch.manual_seed(0)
    model = MEDModel(MEDConfig.from_preset("tiny")).eval()
    model.save_pretrained(root / "model")
    (root / "model" / "training_args.json").write_text(
        json.dumps({"train_data_dir": "/somewhere/bsds500/train", "max_train_steps": 10, "hub_token": "hf_secret"})
    )
    image, mask = random_inputs()
    with torch.inference_mode():
        torch.save({"image": image, "mask": mask, "expected": model(image, mask).reconstruction}, root / "io.pt")
    (root / "report.json").write_text(json.dumps(make_report()))
    return {
        "root": root,
        "model": root / "model",
        "space": write_space_source(root / "space"),
        "report": root / "report.json",
        "io": root / "io.pt",
    }


def publish_args(sources, *extra: str) -> list[str]:
    return ["--model", str(sources["model"]), "--repo-id", REPO_ID, "--space-dir", str(sources["space"]), *extra]


@pytest.fixture(scope="module")
def dry_run(sources):
    """The repos written by one dry run with a Space."""
    out = sources["root"] / "out"
    assert hub.main(publish_args(sources, "--space-id", SPACE_ID, "--dry-run", str(out))) == 0
    return out


def skip_unless_space_folder_is_complete() -> None:
    """The repository's space/ folder, the default source of the Space, is written separately."""
    if not all((hub.DEFAULT_SPACE_DIR / name).is_file() for name in hub.SPACE_FILES):
        pytest.skip(f"the Space sources are incomplete: {', '.join(hub.SPACE_FILES)} needed")


def files_in(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


# --- layouts and cards -----------------------------------------------------------------------------------


def test_dry_run_writes_the_model_repo(dry_run, sources):
    model = dry_run / "model"
    # Flat remote-code layout; no model_index.json, which would send MEDInpaintPipeline through remote code.
    assert files_in(model) == MODEL_FILES
    assert (model / "model.safetensors").read_bytes() == (sources["model"] / "model.safetensors").read_bytes()
    config = json.loads((model / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_med.MEDConfig", "AutoModel": "modeling_med.MEDModel"}
    assert config["model_type"] == "med" and config["base_channels"] == 4
    for name in hub.REMOTE_CODE_FILES:
        assert (model / name).read_text() == (hub.MODEL_CODE_DIR / name).read_text()
    assert sorted(p.name for p in dry_run.iterdir()) == ["model", "space"]  # no staging folder left


def test_model_card_has_metadata(dry_run):
    readme = dry_run / "model" / "README.md"
    card = ModelCard.load(readme)
    assert card.data.license == "cc-by-nc-sa-4.0"
    assert card.data.pipeline_tag == "image-to-image"
    assert card.data.library_name == "transformers"
    assert {"inpainting", "medfe"} <= set(card.data.tags)
    assert not card.data.eval_results and "model-index" not in readme.read_text()  # no report given
    assert f'from_pretrained("{REPO_ID}")' in card.text
    # The training record of training_args.json (med_hf.training.record): no full local path, never a token.
    assert "- Data: bsds500/train" in card.text and "- Steps: 10" in card.text
    assert "/somewhere" not in card.text and "hf_secret" not in card.text and "hub_token" not in card.text


def test_model_card_has_model_index_of_the_report(sources, tmp_path):
    assert hub.main(publish_args(sources, "--eval-report", str(sources["report"]), "--dry-run", str(tmp_path))) == 0
    card = ModelCard.load(tmp_path / "model" / "README.md")
    assert card.data.license == "cc-by-nc-sa-4.0" and card.data.pipeline_tag == "image-to-image"
    results = card.data.eval_results
    assert {r.metric_type for r in results} == {"psnr", "ssim", "l1"}
    assert len(results) == 2 * 3  # two buckets
    first = next(r for r in results if r.metric_type == "psnr" and "0-10" in r.dataset_name)
    assert first.metric_value == pytest.approx(31.0)  # the learned model's numbers, not the baseline's
    # one model-index entry per bucket survives the round trip through the YAML (not merged into the first)
    second = next(r for r in results if r.metric_type == "psnr" and "10-20" in r.dataset_name)
    assert second.metric_value == pytest.approx(26.0)
    assert "| hole ratio |" in card.text  # the report's table
    assert "`medfe` matches or beats telea in PSNR and SSIM in every bucket." in card.text


def test_space_repo_points_at_the_model(dry_run, sources):
    space = dry_run / "space"
    assert files_in(space) == {"app.py", "requirements.txt", "README.md"}  # caches are left out
    assert (space / "app.py").read_text() == (sources["space"] / "app.py").read_text()
    card = SpaceCard.load(space / "README.md")
    assert card.data.sdk == "gradio"
    assert card.data.app_file == "app.py"
    assert card.data.models == [REPO_ID]
    assert card.data.title == "MEDFE inpainting" and card.data.emoji == "🖌️"


def test_license_option_and_no_space_without_space_id(sources, tmp_path):
    assert hub.main(publish_args(sources, "--license", "apache-2.0", "--dry-run", str(tmp_path))) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # a Space only with --space-id
    assert ModelCard.load(tmp_path / "model" / "README.md").data.license == "apache-2.0"


def test_sharded_checkpoint_is_published_with_all_shards(tmp_path):
    torch.manual_seed(0)
    model = MEDModel(MEDConfig.from_preset("tiny")).eval()
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    shards = {p.name for p in (tmp_path / "sharded").glob("model-*.safetensors")}
    assert len(shards) > 1
    assert hub.main(["--model", str(tmp_path / "sharded"), "--repo-id", REPO_ID, "--dry-run", str(tmp_path)]) == 0
    published = files_in(tmp_path / "model")
    assert published == (MODEL_FILES - {"model.safetensors"}) | {"model.safetensors.index.json"} | shards
    loaded = MEDModel.from_pretrained(tmp_path / "model")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_report_with_several_models_needs_eval_method(sources, tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(make_report(learned=("first", "second"))))
    args = publish_args(sources, "--eval-report", str(report), "--dry-run", str(tmp_path / "out"))
    assert hub.main(args) == 1
    assert "--eval-method" in capsys.readouterr().err
    assert hub.main([*args, "--eval-method", "second"]) == 0
    card = ModelCard.load(tmp_path / "out" / "model" / "README.md")
    psnr = next(r for r in card.data.eval_results if r.metric_type == "psnr" and "0-10" in r.dataset_name)
    assert psnr.metric_value == pytest.approx(32.0)  # "second"


def test_publish_function_writes_what_the_command_writes(dry_run, sources, tmp_path):
    lines = hub.publish(sources["model"], REPO_ID, space_id=SPACE_ID, space_dir=sources["space"], dry_run=tmp_path)
    assert lines[:2] == [f"Wrote the {name} repo to {tmp_path / name}" for name in ("model", "space")]
    assert files_in(tmp_path) == files_in(dry_run)
    for name in files_in(dry_run):
        assert (tmp_path / name).read_bytes() == (dry_run / name).read_bytes(), name


def test_publish_takes_a_report_already_read(sources, tmp_path):
    report = make_report(learned=("a", "b"))
    hub.publish(sources["model"], REPO_ID, evaluation=report, eval_method="b", dry_run=tmp_path)
    card = ModelCard.load(tmp_path / "model" / "README.md")
    psnr = next(r for r in card.data.eval_results if r.metric_type == "psnr" and "0-10" in r.dataset_name)
    assert psnr.metric_value == pytest.approx(32.0)  # "b"
    with pytest.raises(hub.PublishError, match="--eval-method"):
        hub.publish(sources["model"], REPO_ID, evaluation=report, dry_run=tmp_path / "x")
    with pytest.raises(hub.PublishError, match="only evaluates classical baselines"):
        hub.publish(sources["model"], REPO_ID, evaluation=make_report(learned=()), dry_run=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_real_space_folder_is_publishable(sources, tmp_path):
    skip_unless_space_folder_is_complete()
    args = ["--model", str(sources["model"]), "--repo-id", REPO_ID, "--space-id", SPACE_ID]
    assert hub.main([*args, "--dry-run", str(tmp_path)]) == 0
    card = SpaceCard.load(tmp_path / "space" / "README.md")
    assert (card.data.sdk, card.data.app_file, card.data.models) == ("gradio", "app.py", [REPO_ID])


# --- the published repos load, offline, in fresh processes -----------------------------------------------


def run_python(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(cwd / "modules"), **env)
    environment.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


LOADERS = {
    "MEDModel": """
        from med_hf import MEDModel
        model = MEDModel.from_pretrained(REPO)
        assert type(model).__module__ == "med_hf.modeling_med"
    """,
    "AutoModel-remote-code": """
        import sys
        sys.modules["med_hf"] = None  # the published repo must not need med-hf
        from transformers import AutoModel
        model = AutoModel.from_pretrained(REPO, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    """,
    "MEDInpaintPipeline": """
        import numpy as np
        from med_hf import MEDInpaintPipeline
        pipe = MEDInpaintPipeline.from_pretrained(REPO)
        image = np.random.default_rng(0).integers(0, 256, (90, 150, 3), dtype=np.uint8)
        hole = np.zeros((90, 150), dtype=bool)
        hole[20:50, 30:80] = True
        result = np.asarray(pipe(image, hole).images[0])
        assert result.shape == image.shape and (result[~hole] == image[~hole]).all()
        model = pipe.model
    """,
}


@pytest.mark.slow
@pytest.mark.parametrize("loader", LOADERS)
def test_published_model_loads(dry_run, sources, tmp_path, loader):
    script = f"REPO = {str(dry_run / 'model')!r}\n" + textwrap.dedent(LOADERS[loader])
    script += textwrap.dedent(
        f"""
        import torch
        io = torch.load({str(sources["io"])!r})
        with torch.inference_mode():
            out = model.eval()(pixel_values=io["image"], mask=io["mask"]).reconstruction
        torch.testing.assert_close(out, io["expected"])
        print("loaded OK")
        """
    )
    result = run_python(script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded OK" in result.stdout


@pytest.mark.slow
def test_space_app_loads_the_model_named_by_its_variable(sources, tmp_path):
    skip_unless_space_folder_is_complete()
    args = ["--model", str(sources["model"]), "--repo-id", REPO_ID, "--space-id", SPACE_ID]
    assert hub.main([*args, "--dry-run", str(tmp_path / "out")]) == 0
    # On the Hub the variable holds REPO_ID (see the upload test); offline, point it at the published folder.
    script = """
        import app
        pipe = app.default_pipeline()
        assert pipe.model.config.base_channels == 4, pipe.model.config
        print("app OK")
    """
    result = run_python(
        script, cwd=tmp_path / "out" / "space", **{hub.SPACE_MODEL_VARIABLE: str(tmp_path / "out" / "model")}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "app OK" in result.stdout


# --- uploads ---------------------------------------------------------------------------------------------


@pytest.fixture
def hub_api():
    """HfApi's network methods replaced by mocks; `uploaded[repo_type]` lists the files of each upload."""
    uploaded: dict[str, set[str]] = {}

    def create_repo(self, repo_id, **kwargs):
        prefix = "spaces/" if kwargs.get("repo_type") == "space" else ""
        return f"https://huggingface.co/{prefix}{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, repo_type, **kwargs):
        uploaded[repo_type] = files_in(Path(folder_path))  # the staging folder is gone after the upload

    with (
        mock.patch.object(HfApi, "create_repo", autospec=True, side_effect=create_repo) as create,
        mock.patch.object(HfApi, "upload_folder", autospec=True, side_effect=upload_folder) as upload,
        mock.patch.object(HfApi, "add_space_variable", autospec=True) as variable,
    ):
        yield {"create_repo": create, "upload_folder": upload, "add_space_variable": variable, "uploaded": uploaded}


def test_publish_creates_and_uploads_both_repos(sources, hub_api, capsys):
    assert hub.main(publish_args(sources, "--space-id", SPACE_ID, "--private", "--token", "hf_dummy")) == 0

    model_call, space_call = hub_api["create_repo"].call_args_list
    assert model_call == mock.call(mock.ANY, REPO_ID, repo_type="model", private=True, exist_ok=True)
    variable = {"key": "MED_MODEL", "value": REPO_ID}
    assert space_call == mock.call(
        mock.ANY,
        SPACE_ID,
        repo_type="space",
        space_sdk="gradio",
        private=True,
        exist_ok=True,
        space_variables=[variable],
    )
    assert model_call.args[0].token == "hf_dummy"
    # Also for a Space that already exists, where create_repo ignores space_variables.
    hub_api["add_space_variable"].assert_called_once_with(
        mock.ANY, SPACE_ID, "MED_MODEL", REPO_ID, description=mock.ANY
    )

    model_upload, space_upload = hub_api["upload_folder"].call_args_list
    assert model_upload.kwargs["repo_id"] == REPO_ID and model_upload.kwargs["repo_type"] == "model"
    assert space_upload.kwargs["repo_id"] == SPACE_ID and space_upload.kwargs["repo_type"] == "space"
    assert hub_api["uploaded"] == {"model": MODEL_FILES, "space": {"app.py", "requirements.txt", "README.md"}}
    assert not Path(model_upload.kwargs["folder_path"]).exists()  # staging cleaned up
    assert not (sources["model"] / "README.md").exists()  # the source folder is never written to

    out = capsys.readouterr().out
    assert f"https://huggingface.co/{REPO_ID}" in out and f"https://huggingface.co/spaces/{SPACE_ID}" in out


def test_publish_function_uploads_like_the_command(sources, hub_api):
    lines = hub.publish(sources["model"], REPO_ID, private=True, token="hf_dummy")
    assert lines == [f"Published https://huggingface.co/{REPO_ID}"]
    (model_call,) = hub_api["create_repo"].call_args_list
    assert model_call == mock.call(mock.ANY, REPO_ID, repo_type="model", private=True, exist_ok=True)
    assert model_call.args[0].token == "hf_dummy"
    assert hub_api["uploaded"] == {"model": MODEL_FILES}


def test_publish_without_space_uploads_only_the_model(sources, hub_api):
    assert hub.main(publish_args(sources)) == 0
    assert hub_api["create_repo"].call_args_list == [
        mock.call(mock.ANY, REPO_ID, repo_type="model", private=False, exist_ok=True)
    ]
    assert [c.kwargs["repo_type"] for c in hub_api["upload_folder"].call_args_list] == ["model"]
    hub_api["add_space_variable"].assert_not_called()


@pytest.mark.parametrize(
    "error",
    [
        HfHubHTTPError("403 Forbidden: no write access to med-org\nRequest ID: 1", response=mock.Mock()),
        hub.HTTPError("[Errno -2] Name or service not known"),  # a connection error of the HTTP client
        OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled."),
    ],
    ids=lambda error: type(error).__name__,
)
def test_hub_failure_is_one_line(sources, capsys, error):
    with mock.patch.object(HfApi, "create_repo", autospec=True, side_effect=error):
        assert hub.main(publish_args(sources)) == 1
    err = capsys.readouterr().err
    assert err.startswith("med-publish: error: ") and err.count("\n") == 1, err
    assert str(error).splitlines()[0] in err


# --- errors ----------------------------------------------------------------------------------------------


def broken_model(kind: str, sources, folder: Path) -> Path:
    """A model folder with one thing wrong."""
    if kind == "missing":
        return folder / "nowhere"
    folder.mkdir()
    if kind == "no-config":
        (folder / "model.safetensors").write_bytes(b"")
        return folder
    config = json.loads((sources["model"] / "config.json").read_text())
    if kind == "wrong-type":
        config["model_type"] = "bert"
    if kind == "mismatched-weights":
        config["base_channels"] = 8
    (folder / "config.json").write_text(json.dumps(config))
    if kind == "damaged-weights":
        (folder / "model.safetensors").write_bytes(b"not safetensors")
    elif kind != "no-weights":
        (folder / "model.safetensors").write_bytes((sources["model"] / "model.safetensors").read_bytes())
    return folder


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "model folder not found"),
        ("no-config", "is not a MEDModel folder: it has no config.json"),
        ("wrong-type", "model_type 'bert', expected 'med'"),
        ("no-weights", "has no weights"),
        ("damaged-weights", "is not a readable safetensors file"),
        ("mismatched-weights", "do not match config.json"),
    ],
)
def test_bad_model_folder_is_a_one_line_error(sources, tmp_path, capsys, kind, message):
    model = broken_model(kind, sources, tmp_path / "model")
    args = ["--model", str(model), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "out")]
    assert hub.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("med-publish: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "out").exists()


def write_report(kind: str, folder: Path) -> Path:
    path = folder / "report.json"
    if kind == "invalid-json":
        path.write_text("{not json")
    elif kind == "not-a-report":
        path.write_text(json.dumps({"hello": 1}))
    elif kind == "baselines-only":
        report = make_report(learned=())
        path.write_text(json.dumps(report))
    elif kind == "bad-layout":
        report = make_report()
        report["methods"]["medfe"]["buckets"] = report["methods"]["medfe"]["buckets"][:1]
        path.write_text(json.dumps(report))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repo-id", "no-namespace"], "must have the form ORG/NAME"),
        (["--repo-id", "a/b/c"], "--repo-id"),
        (["--repo-id", "org/bad name"], "--repo-id"),
        (["--space-id", "org/bad--name"], "--space-id"),
        (["--eval-report", "missing"], "evaluation report not found"),
        (["--eval-report", "invalid-json"], "is not valid JSON"),
        (["--eval-report", "not-a-report"], "is not a report of training/evaluate.py"),
        (["--eval-report", "baselines-only"], "only evaluates classical baselines"),
        (["--eval-report", "bad-layout"], "does not have the layout"),
        (["--eval-method", "nobody", "--eval-report", "good"], "is not a model evaluated in"),
        (["--space-id", SPACE_ID, "--space-dir", "nowhere"], "Space source folder not found"),
        (["--eval-method", "medfe"], "--eval-method needs --eval-report"),
    ],
)
def test_bad_arguments_are_one_line_errors(sources, tmp_path, capsys, args, message):
    args = list(args)
    if "--eval-report" in args:
        kind = args[args.index("--eval-report") + 1]
        report = sources["report"] if kind == "good" else write_report(kind, tmp_path)
        args[args.index("--eval-report") + 1] = str(report)
    if "--space-dir" in args:
        args[args.index("--space-dir") + 1] = str(tmp_path / "nowhere")
    base = {"--model": str(sources["model"]), "--repo-id": REPO_ID, "--dry-run": str(tmp_path / "out")}
    base.update(zip(args[::2], args[1::2], strict=True))
    assert hub.main([item for pair in base.items() for item in pair]) == 1
    err = capsys.readouterr().err
    assert err.startswith("med-publish: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_space_app_must_read_the_model_variable(sources, tmp_path, capsys):
    space = write_space_source(tmp_path / "space")
    (space / "app.py").write_text('MODEL = "fixed/model"\n')
    args = publish_args(sources, "--space-id", SPACE_ID, "--dry-run", str(tmp_path / "out"))
    assert hub.main([*args, "--space-dir", str(space)]) == 1
    assert "does not read $MED_MODEL" in capsys.readouterr().err


def test_dry_run_never_overwrites_and_never_leaves_half_a_repo(sources, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = publish_args(sources, "--space-id", SPACE_ID, "--dry-run", str(out))

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(hub, "build_space_repo", fail)  # the model repo is complete by then
    assert hub.main(args) == 1
    assert "disk full" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # neither repo, nor the staging folder
    monkeypatch.undo()

    assert hub.main(args) == 0
    before = files_in(out)
    assert hub.main(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert files_in(out) == before


@pytest.mark.slow
def test_module_runs_as_a_script():
    result = subprocess.run(
        [sys.executable, "-m", "med_hf.publishing.hub", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--repo-id" in result.stdout and "--dry-run" in result.stdout
