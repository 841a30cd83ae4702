"""`med-publish`: publish a saved `MEDModel` to the Hugging Face Hub, with a Gradio Space that demos it.

    med-publish --model runs/default --repo-id ORG/NAME --space-id ORG/NAME-demo --eval-report report.json
    med-publish --model runs/default --repo-id ORG/NAME --space-id ORG/NAME-demo --dry-run out/

The model repo is flat, so that it loads with `MEDModel.from_pretrained(repo)`,
`MEDInpaintPipeline.from_pretrained(repo)` and, without med-hf installed,
`AutoModel.from_pretrained(repo, trust_remote_code=True)`:

    config.json                      the model's config, with `auto_map` pointing at the files below
    model.safetensors                the weights (or model.safetensors.index.json and its shards)
    configuration_med.py, modeling_med.py, winograd.py, harmonic.py,
    image_processing_med.py, patchmatch.py, pipeline_med.py      the model's code (`REMOTE_CODE_FILES`)
    README.md                        model card: licence, pipeline tag, tags, the training record (from the
                                     folder's training_args.json), `model-index` from an evaluation report

It has no `model_index.json` on purpose: with one, `MEDInpaintPipeline.from_pretrained(repo)` would go through
diffusers' custom-pipeline loading and demand `trust_remote_code=True`.

The Space repo is the project's `space/` folder (app.py, requirements.txt, README.md, ...) with the README's
front matter pointing at the model (`models: [ORG/NAME]`). The app loads the model named by the `MED_MODEL`
environment variable, which is set as a variable of the Space.

From Python, `publish(folder, repo_id, ...)` does the same; `training/train.py --push_to_hub` publishes its
output folder through it.

`--dry-run OUT` writes the two repos to `OUT/model` and `OUT/space` and uploads nothing. Both are assembled in a
staging folder first and renamed into place, so a failure never leaves a half-written repo behind.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, SpaceCard
from huggingface_hub.utils import HFValidationError, validate_repo_id

try:  # the HTTP library of huggingface_hub: its connection errors are not OSErrors
    from httpx2 import HTTPError
except ImportError:  # huggingface_hub 1.x
    from httpx import HTTPError

from ..configuration_med import MEDConfig
from ..training.record import training_record
from .model_card import ORIGINAL_WEIGHTS_LICENSE, card_pictures, eval_results, render_model_card

# The model's own source files, shipped as remote code, are the top level of the package.
MODEL_CODE_DIR = Path(__file__).resolve().parents[1]
# The Space's sources ship inside the package (links to the repository's space/ folder, copied into wheels),
# so that `med-publish` works from any installation.
DEFAULT_SPACE_DIR = Path(__file__).parent / "space"
# Shipped flat next to the weights; each may import the others relatively, nothing else from med_hf.
REMOTE_CODE_FILES = (
    "configuration_med.py",
    "modeling_med.py",
    "winograd.py",
    "harmonic.py",
    "image_processing_med.py",
    "patchmatch.py",
    "pipeline_med.py",
)
AUTO_MAP = {"AutoConfig": "configuration_med.MEDConfig", "AutoModel": "modeling_med.MEDModel"}
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
SPACE_FILES = ("app.py", "requirements.txt", "README.md")
# The environment variable through which space/app.py learns which model to load.
SPACE_MODEL_VARIABLE = "MED_MODEL"
SPACE_IGNORE = shutil.ignore_patterns(".*", "__pycache__", "*.pyc", "flagged")
REPORT_KEYS = ("protocol", "num_images", "buckets", "methods", "perceptual")


class PublishError(Exception):
    """A problem with the inputs of `med-publish`, reported in one line without a traceback."""


@dataclass(frozen=True)
class ModelSource:
    """A validated `MEDModel` folder: its parsed config.json and the weight files to publish."""

    folder: Path
    config: dict[str, Any]
    med_config: MEDConfig
    weight_files: tuple[Path, ...]


# --- inputs ----------------------------------------------------------------------------------------------


def check_repo_id(repo_id: str, option: str = "--repo-id") -> str:
    """`repo_id` if it is a valid `ORG/NAME` Hub id, else a `PublishError` naming `option`."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(f"{option}: {error}") from None
    if repo_id.count("/") != 1:
        raise PublishError(f"{option} {repo_id!r} must have the form ORG/NAME (an organisation or user, then a name)")
    return repo_id


def load_model_source(folder: str | os.PathLike) -> ModelSource:
    """Check that `folder` holds a saved `MEDModel` (config.json of model_type "med" and safetensors weights
    matching its architecture) and return what to publish from it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"model folder not found: {folder}")
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise PublishError(f"{folder} is not a MEDModel folder: it has no {CONFIG_NAME}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PublishError(f"{config_path} is not valid JSON: {error}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != MEDConfig.model_type:
        raise PublishError(
            f"{folder} is not a MEDModel folder: {CONFIG_NAME} has model_type {model_type!r}, "
            f"expected {MEDConfig.model_type!r}"
        )
    med_config = _med_config(folder)
    weight_files = _weight_files(folder)
    _check_weights(weight_files, med_config)
    return ModelSource(folder=folder, config=config, med_config=med_config, weight_files=weight_files)


def _weight_files(folder: Path) -> tuple[Path, ...]:
    """model.safetensors, or the index of a sharded checkpoint followed by its shards."""
    if (folder / WEIGHTS_NAME).is_file():
        return (folder / WEIGHTS_NAME,)
    index = folder / WEIGHTS_INDEX_NAME
    if not index.is_file():
        raise PublishError(f"{folder} has no weights: neither {WEIGHTS_NAME} nor {WEIGHTS_INDEX_NAME}")
    try:
        shard_names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise PublishError(f"{index} is not a valid safetensors index: {error!r}") from None
    shards = [folder / name for name in shard_names]
    if missing := [shard.name for shard in shards if not shard.is_file()]:
        raise PublishError(f"{folder} lacks weight shards listed in {WEIGHTS_INDEX_NAME}: {', '.join(missing)}")
    return (index, *shards)


def _med_config(folder: Path) -> MEDConfig:
    try:
        return MEDConfig.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as error:
        raise PublishError(f"{folder / CONFIG_NAME} is not a valid MEDConfig: {error}") from None


def _check_weights(weight_files: tuple[Path, ...], config: MEDConfig) -> None:
    """Compare the tensor names and shapes in the safetensors headers with the architecture of `config`.

    Only the headers are read, and the reference model is built on the meta device, so this is cheap even for
    the released 500 MB model; it stops a repo whose weights cannot load from being published.
    """
    import torch
    from safetensors import SafetensorError, safe_open

    from ..modeling_med import MEDModel

    found: dict[str, tuple[int, ...]] = {}
    for path in weight_files:
        if path.name == WEIGHTS_INDEX_NAME:
            continue
        try:
            with safe_open(path, framework="pt") as weights:
                found.update({key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()})  # noqa: SIM118
        except (OSError, SafetensorError) as error:
            raise PublishError(f"{path} is not a readable safetensors file: {error}") from None
    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in MEDModel(config).state_dict().items()}
    if missing := sorted(expected.keys() - found.keys()):
        raise PublishError(
            f"the weights in {weight_files[0].parent} lack {len(missing)} tensors of the configured model "
            f"(e.g. {missing[0]}); they do not belong to this config.json"
        )
    if wrong := [key for key in sorted(expected) if found[key] != expected[key]]:
        key = wrong[0]
        raise PublishError(
            f"the weights in {weight_files[0].parent} do not match config.json: {key} has shape {found[key]}, "
            f"the config needs {expected[key]}"
        )


def load_eval_report(path: str | os.PathLike, method: str | None = None) -> dict[str, Any]:
    """Read a report.json of training/evaluate.py for the model card.

    `method` names the learned method of the report that is the published model (needed only when the report
    has several); it is moved first, which is where the card's `model-index` takes its numbers from.
    """
    path = Path(path)
    if not path.is_file():
        raise PublishError(f"evaluation report not found: {path}")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PublishError(f"evaluation report {path} is not valid JSON: {error}") from None
    return check_eval_report(report, method, path)


def check_eval_report(report: Any, method: str | None = None, path: str | os.PathLike = "the report") -> dict[str, Any]:
    """`load_eval_report` for a report already read (`path` names it in errors)."""
    if not isinstance(report, dict) or not isinstance(report.get("methods"), dict):
        raise PublishError(f"{path} is not a report of training/evaluate.py: it has no 'methods'")
    if missing := [key for key in REPORT_KEYS if key not in report]:
        raise PublishError(f"{path} is not a report of training/evaluate.py: it lacks {', '.join(missing)}")
    learned = [name for name, entry in report["methods"].items() if _kind(entry) != "classical"]
    if not learned:
        raise PublishError(f"{path} only evaluates classical baselines: it has no results of a model")
    if method is None and len(learned) > 1:
        raise PublishError(f"{path} evaluates several models ({', '.join(learned)}); choose one with --eval-method")
    method = method or learned[0]
    if method not in learned:
        raise PublishError(f"--eval-method {method!r} is not a model evaluated in {path} ({', '.join(learned)})")
    report = {**report, "methods": {method: report["methods"][method], **report["methods"]}}
    _check_report_renders(report, path)
    return report


def _kind(entry: Any) -> str | None:
    return entry.get("kind") if isinstance(entry, Mapping) else None


def _check_report_renders(report: dict[str, Any], path: str | os.PathLike) -> None:
    """Fail now, in one line, rather than in the middle of rendering the card."""
    try:
        from ..evaluation import markdown_table
    except ImportError as error:
        raise PublishError(
            f"the evaluation table of the model card needs the training extras ({error}): pip install 'med-hf[train]'"
        ) from None
    try:
        eval_results(report)
        markdown_table(report)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise PublishError(f"{path} does not have the layout of a training/evaluate.py report ({error!r})") from None


def check_space_source(space_dir: str | os.PathLike) -> Path:
    """The Space source folder, checked to hold the files a Gradio Space needs and to read `MED_MODEL`."""
    space_dir = Path(space_dir)
    if not space_dir.is_dir():
        raise PublishError(f"Space source folder not found: {space_dir} (pass --space-dir)")
    if missing := [name for name in SPACE_FILES if not (space_dir / name).is_file()]:
        raise PublishError(f"Space source folder {space_dir} lacks {', '.join(missing)}")
    # The Space learns its model only through this variable; an app that ignores it would demo another model.
    if SPACE_MODEL_VARIABLE not in (space_dir / "app.py").read_text(encoding="utf-8"):
        raise PublishError(
            f"{space_dir / 'app.py'} does not read ${SPACE_MODEL_VARIABLE}, so it would not load the model"
        )
    return space_dir


# --- repo folders ----------------------------------------------------------------------------------------


def build_model_repo(
    source: ModelSource,
    target: Path,
    *,
    repo_id: str,
    evaluation: Mapping[str, Any] | None = None,
    weights_license: str = ORIGINAL_WEIGHTS_LICENSE,
    link_weights: bool = False,
) -> None:
    """Write the model repo of `source` into the new folder `target` (see the module docstring for the layout).

    `link_weights` hard-links the weight files where possible instead of copying them: for a throw-away
    upload folder only, since a link would change with the original.
    """
    target.mkdir(parents=True)
    config = {**source.config, "auto_map": AUTO_MAP}
    (target / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for path in source.weight_files:
        (_link_or_copy if link_weights else shutil.copyfile)(path, target / path.name)
    for name in REMOTE_CODE_FILES:
        shutil.copyfile(MODEL_CODE_DIR / name, target / name)
    _check_flat_imports(target)
    pictures = card_pictures(source.folder)
    for name in pictures:
        shutil.copyfile(source.folder / name, target / name)
    card = render_model_card(
        source.med_config,
        repo_id=repo_id,
        evaluation=evaluation,
        # Read from the folder's training_args.json (left by training/train.py): no secret, no local path.
        training=training_record(source.folder),
        weights_license=weights_license,
        pictures=pictures,
    )
    (target / "README.md").write_text(str(card), encoding="utf-8")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not supported
        shutil.copyfile(source, target)


def _check_flat_imports(folder: Path) -> None:
    """Remote code is loaded from one flat folder: every relative import must be one of the shipped files."""
    shipped = {Path(name).stem for name in REMOTE_CODE_FILES}
    for name in REMOTE_CODE_FILES:
        text = (folder / name).read_text(encoding="utf-8")
        imported = set(re.findall(r"^\s*from\s+\.(\w+)\s+import", text, flags=re.MULTILINE))
        if unknown := sorted(imported - shipped):
            raise PublishError(f"{name} imports .{unknown[0]}, which is not shipped as remote code")


def build_space_repo(space_dir: Path, target: Path, *, model_id: str) -> None:
    """Copy the Space sources into the new folder `target`, with the README front matter naming `model_id`."""
    shutil.copytree(space_dir, target, ignore=SPACE_IGNORE)
    readme = target / "README.md"
    card = SpaceCard.load(readme)
    if card.data.sdk not in (None, "gradio"):
        raise PublishError(
            f"{space_dir / 'README.md'} declares sdk {card.data.sdk!r}; med-publish publishes Gradio Spaces"
        )
    card.data.sdk = "gradio"
    card.data.app_file = card.data.app_file or "app.py"
    if not (target / card.data.app_file).is_file():
        raise PublishError(f"{space_dir / 'README.md'} names app_file {card.data.app_file!r}, which does not exist")
    card.data.title = card.data.title or model_id.split("/")[-1]
    # Links the Space and the model on the Hub, both ways.
    card.data.models = [model_id]
    readme.write_text(str(card), encoding="utf-8")


@contextmanager
def staged_repos(
    source: ModelSource,
    *,
    repo_id: str,
    space_dir: Path | None,
    evaluation: Mapping[str, Any] | None,
    weights_license: str,
    parent: Path | None = None,
    link_weights: bool = False,
) -> Iterator[dict[str, Path]]:
    """Build the repos in a temporary folder (inside `parent`, if given) and yield {"model": ..., "space": ...};
    everything left in the temporary folder is deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix=".med-publish-", dir=parent) as staging:
        folders = {"model": Path(staging) / "model"}
        build_model_repo(
            source,
            folders["model"],
            repo_id=repo_id,
            evaluation=evaluation,
            weights_license=weights_license,
            link_weights=link_weights,
        )
        if space_dir is not None:
            folders["space"] = Path(staging) / "space"
            build_space_repo(space_dir, folders["space"], model_id=repo_id)
        yield folders


def write_dry_run(output: Path, source: ModelSource, *, space_dir: Path | None, **build: Any) -> dict[str, Path]:
    """Write the repos as `output/model` (and `output/space`), each complete or not at all."""
    targets = {"model": output / "model", **({"space": output / "space"} if space_dir is not None else {})}
    if output.exists() and not output.is_dir():
        raise PublishError(f"--dry-run {output} is a file, not a folder")
    if existing := [str(path) for path in targets.values() if path.exists()]:
        raise PublishError(f"{', '.join(existing)} already exists; remove it or choose another --dry-run folder")
    output.mkdir(parents=True, exist_ok=True)
    # Staging inside `output` keeps the final renames on one file system, where they are atomic.
    with staged_repos(source, space_dir=space_dir, parent=output, **build) as staged:
        moved: list[str] = []
        try:
            for name, target in targets.items():
                staged[name].rename(target)
                moved.append(name)
        except OSError:
            for name in moved:  # all or nothing: the staging folder and what it holds are deleted
                targets[name].rename(staged[name])
            raise
    return targets


# --- upload ----------------------------------------------------------------------------------------------


def upload(
    folders: Mapping[str, Path],
    *,
    repo_id: str,
    space_id: str | None,
    private: bool,
    token: str | None = None,
) -> list[str]:
    """Create the repos (if needed) and upload the folders of `staged_repos`; returns the repo URLs."""
    api = HfApi(token=token)
    urls = [str(api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True))]
    api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=folders["model"],
        commit_message="Upload MEDFE model with med-publish",
        # Weights of an earlier upload in another layout (single file vs shards) would shadow the new ones.
        delete_patterns=["*.safetensors", WEIGHTS_INDEX_NAME],
    )
    if space_id is None:
        return urls
    variable = {"key": SPACE_MODEL_VARIABLE, "value": repo_id}
    urls.append(
        str(
            api.create_repo(
                space_id,
                repo_type="space",
                space_sdk="gradio",
                private=private,
                exist_ok=True,
                space_variables=[variable],
            )
        )
    )
    # create_repo ignores `space_variables` when the Space already exists; this sets it in both cases.
    api.add_space_variable(space_id, variable["key"], variable["value"], description="Model shown by the demo")
    api.upload_folder(
        repo_id=space_id,
        repo_type="space",
        folder_path=folders["space"],
        commit_message=f"Demo of {repo_id}, uploaded with med-publish",
    )
    return urls


# --- command line ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="med-publish",
        description="Publish a saved MEDModel folder to the Hugging Face Hub as a model repo (remote code, model "
        "card) and, with --space-id, a Gradio Space that demos it.",
    )
    parser.add_argument(
        "--model", required=True, type=Path, metavar="DIR", help="folder written by MEDModel.save_pretrained"
    )
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="model repo to create or update, ORG/NAME")
    parser.add_argument("--space-id", metavar="ORG/NAME", help="also publish the demo Space as this repo, ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repos as private")
    parser.add_argument(
        "--dry-run",
        metavar="OUT",
        type=Path,
        help="write the repos to OUT/model (and OUT/space) instead of uploading them",
    )
    parser.add_argument(
        "--eval-report", type=Path, metavar="JSON", help="report.json of training/evaluate.py, for the model card"
    )
    parser.add_argument(
        "--eval-method", metavar="NAME", help="the model's name in a report that evaluates several models"
    )
    parser.add_argument(
        "--license",
        metavar="ID",
        default=ORIGINAL_WEIGHTS_LICENSE,
        help=f"Hub licence id of the weights (default: {ORIGINAL_WEIGHTS_LICENSE}, the licence of the training data)",
    )
    parser.add_argument(
        "--space-dir",
        type=Path,
        metavar="DIR",
        default=DEFAULT_SPACE_DIR,
        help="sources of the Space (default: the space/ folder of the med-hf repository)",
    )
    parser.add_argument("--token", help="Hub token with write access (default: $HF_TOKEN or the cached login)")
    return parser.parse_args(argv)


def publish(
    model: str | os.PathLike,
    repo_id: str,
    *,
    space_id: str | None = None,
    space_dir: str | os.PathLike = DEFAULT_SPACE_DIR,
    evaluation: str | os.PathLike | Mapping[str, Any] | None = None,
    eval_method: str | None = None,
    weights_license: str = ORIGINAL_WEIGHTS_LICENSE,
    private: bool = False,
    token: str | None = None,
    dry_run: str | os.PathLike | None = None,
) -> list[str]:
    """Publish the `MEDModel` saved in `model` as `repo_id` (and its demo Space as `space_id`): what
    `med-publish` does, and what `training/train.py --push_to_hub` calls.

    Every input is validated first (repo ids, the model folder and its weights, the evaluation report, the Space
    sources), then the repos are built in a staging folder (see the module docstring for the layout; the model
    card's Training section comes from the folder's `training_args.json`) and uploaded, or written to
    `dry_run/model` (and `dry_run/space`) without uploading anything.

    Args:
        evaluation: a report.json of training/evaluate.py (a path, or the report itself) for the model card.
        eval_method: the published model's name in a report that evaluates several models.
        weights_license: Hub licence id of the weights.
        private: create the repos as private.
        token: Hub token with write access (default: $HF_TOKEN or the cached login).

    Returns:
        Lines for the user: the URLs published, or the folders written.

    Raises:
        PublishError: an input is not valid (nothing was written or uploaded).
        OSError, HTTPError: writing failed, or the Hub refused or could not be reached.
    """
    repo_id = check_repo_id(repo_id)
    space_id = check_repo_id(space_id, "--space-id") if space_id else None
    if eval_method and evaluation is None:
        raise PublishError("--eval-method needs --eval-report")
    source = load_model_source(model)
    if isinstance(evaluation, Mapping):
        evaluation = check_eval_report(dict(evaluation), eval_method)
    elif evaluation is not None:
        evaluation = load_eval_report(evaluation, eval_method)
    space_dir = check_space_source(space_dir) if space_id else None
    build = {"repo_id": repo_id, "evaluation": evaluation, "weights_license": weights_license}

    if dry_run is not None:
        written = write_dry_run(Path(dry_run), source, space_dir=space_dir, **build)
        lines = [f"Wrote the {name} repo to {path}" for name, path in written.items()]
        if space_dir is not None:
            model_path, space_path = written["model"].resolve(), written["space"].resolve()
            lines.append(f"Try the Space: cd {space_path} && {SPACE_MODEL_VARIABLE}={model_path} python app.py")
        return lines

    with staged_repos(source, space_dir=space_dir, link_weights=True, **build) as folders:
        urls = upload(folders, repo_id=repo_id, space_id=space_id, private=private, token=token)
    lines = [f"Published {url}" for url in urls]
    if space_id and private:
        lines.append(f"note: the Space needs an HF_TOKEN secret that can read the private model {repo_id}")
    return lines


def run(args: argparse.Namespace) -> list[str]:
    """`publish` with the options of the command line."""
    return publish(
        args.model,
        args.repo_id,
        space_id=args.space_id,
        space_dir=args.space_dir,
        evaluation=args.eval_report,
        eval_method=args.eval_method,
        weights_license=args.license,
        private=args.private,
        token=args.token,
        dry_run=args.dry_run,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        lines = run(args)
    except PublishError as error:
        print(f"med-publish: error: {error}", file=sys.stderr)
        return 1
    except (OSError, HTTPError) as error:  # the Hub refused, no network, offline mode, a full disk
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"med-publish: error: {message}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
