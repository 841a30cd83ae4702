"""The record of a training run, for its model card: the options `training/train.py` ran with, the data, the
steps, the batch and the hours, read from the `training_args.json` it leaves in its output folder.

This module owns that file: train.py writes it with :func:`write_training_arguments`, and its own model card,
`med-publish` and the export of the default model all read it through :func:`training_record`. The record is
meant to be published: it never holds a secret (a Hub token is never written to the file, and is dropped if an
older file holds one) nor a local path (a folder is named by its last two parts, e.g. `bsds500/train`).

A run started with `--init_from` another local run folder is a later stage of that run: the record follows the
chain, lists each stage's options (the later ones as changes) and adds up their steps and hours.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..atomic_files import write_text

TRAINING_ARGUMENTS_FILE = "training_args.json"
# Written beside the options: facts of the run that are not options of train.py.
RUN_FACTS = ("num_processes",)
# Option names holding credentials: never written, never published.
SECRET_MARKERS = ("token", "secret", "password")
# Where the run kept its files and how it reported them: nothing about the model trained, and mostly local paths.
BOOKKEEPING_OPTIONS = frozenset(
    {
        "output_dir",
        "logging_dir",
        "cache_dir",
        "structure_cache_dir",
        "resume_from_checkpoint",
        "report_to",
        "logging_steps",
        "checkpointing_steps",
        "checkpoints_total_limit",
        "validation_steps",
        "validation_data_dir",
        "num_validation_images",
        "push_to_hub",
        "hub_model_id",
        "hub_private_repo",
        "init_from",  # the stages say it
    }
)
# Named by the record's "data" line instead.
DATA_OPTIONS = frozenset({"dataset_name", "dataset_config_name", "train_data_dir", "mask_dir", "segmentation_dir"})


def is_secret(option: str) -> bool:
    """Whether the option `option` (e.g. `hub_token`) holds a credential."""
    return any(marker in option.lower() for marker in SECRET_MARKERS)


def write_training_arguments(folder: str | os.PathLike, arguments: Mapping[str, Any], *, num_processes: int) -> Path:
    """Write `folder/training_args.json`: the options of the run without its secrets, and the number of processes.

    Written atomically (complete or not at all, with the umask's file mode).
    """
    record = {name: value for name, value in arguments.items() if not is_secret(name)}
    record["num_processes"] = num_processes
    path = Path(folder) / TRAINING_ARGUMENTS_FILE
    write_text(path, json.dumps(record, indent=2, default=str) + "\n")
    return path


def public_name(value: str) -> str:
    """A path named by its last two parts (`/home/me/data/bsds500/train` -> `bsds500/train`); a Hub id
    (`org/name`) or a plain name is unchanged."""
    parts = [part for part in re.split(r"[\\/]+", value) if part not in ("", ".", "~")]
    return "/".join(parts[-2:]) if parts else value


def training_stages(run_dir: str | os.PathLike) -> list[tuple[Path, dict[str, Any]]]:
    """`(folder, options)` of the run in `run_dir` and, before it, of the local runs it was initialised from
    (`--init_from`), oldest first; empty if `run_dir` has no readable `training_args.json`."""
    stages: list[tuple[Path, dict[str, Any]]] = []
    seen: set[Path] = set()
    folder: Path | None = Path(run_dir)
    while folder is not None and folder.resolve() not in seen:
        seen.add(folder.resolve())
        arguments = _read_arguments(folder)
        if arguments is None:
            break
        stages.insert(0, (folder, arguments))
        folder = _local_run(arguments.get("init_from"), folder)
    return stages


def training_record(run_dir: str | os.PathLike) -> dict[str, str] | None:
    """The Training section of the model card of the run in `run_dir`, as `{label: text}` in reading order.

    Labels: `command`, `initialised from` (a model that is not a local run), `arguments` (or one entry per
    stage), `perceptual and style losses` (only to say they were off for want of VGG16 weights), `data`,
    `steps`, `batch size` and `time` (the hours the TensorBoard logs span, when every stage has them). None when
    `run_dir` holds no readable `training_args.json`.
    """
    stages = training_stages(run_dir)
    if not stages:
        return None
    first = stages[0][1]
    how = f"in {len(stages)} stages, each initialised from the one before, " if len(stages) > 1 else ""
    record = {"command": f"`training/train.py` {how}with the arguments below"}
    if first.get("init_from"):
        record["initialised from"] = f"`{public_name(str(first['init_from']))}`"
    for number, (_, arguments) in enumerate(stages, start=1):
        earlier = stages[number - 2][1] if number > 1 else None
        label = "arguments" if len(stages) == 1 else f"stage {number} arguments" + (" (changes)" if earlier else "")
        record[label] = _options_text(arguments, earlier) or "none"
    if off := [str(number) for number, (_, arguments) in enumerate(stages, start=1) if _vgg_losses_off(arguments)]:
        where = f" (stage {', '.join(off)})" if len(stages) > 1 else ""
        record["perceptual and style losses"] = f"off{where}, no `--vgg16_weights` given (their weights went unused)"
    if data := _unique(_data_text(arguments) for _, arguments in stages):
        record["data"] = "; then ".join(data)
    steps = [arguments.get("max_train_steps") for _, arguments in stages]
    if all(isinstance(value, int) for value in steps):
        record["steps"] = str(sum(steps)) + (f" ({' + '.join(map(str, steps))})" if len(steps) > 1 else "")
    if batches := _unique(_batch_text(arguments) for _, arguments in stages):
        record["batch size"] = " / ".join(batches)
    hours = [_training_hours(folder / str(arguments.get("logging_dir") or "logs")) for folder, arguments in stages]
    if all(value is not None for value in hours):
        record["time"] = _duration(sum(hours))
    return record


# --- helpers -----------------------------------------------------------------------------------------------


def _read_arguments(folder: Path) -> dict[str, Any] | None:
    try:
        arguments = json.loads((folder / TRAINING_ARGUMENTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return arguments if isinstance(arguments, dict) else None


def _local_run(init_from: Any, run_dir: Path) -> Path | None:
    """The local run folder `init_from` names: as written (relative to where training ran) or beside `run_dir`."""
    if not init_from:
        return None
    for candidate in (Path(str(init_from)), run_dir.parent / Path(str(init_from)).name):
        if (candidate / TRAINING_ARGUMENTS_FILE).is_file():
            return candidate
    return None


def _publishable(option: str) -> bool:
    return not (
        is_secret(option)
        or option in BOOKKEEPING_OPTIONS
        or option in DATA_OPTIONS
        or option in RUN_FACTS
        or option.endswith("_dir")
    )


def _value_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(_value_text(item) for item in value)
    return public_name(value) if isinstance(value, str) else str(value)


def _options_text(arguments: Mapping[str, Any], earlier: Mapping[str, Any] | None) -> str:
    """The options as on the command line (all of them, or those that changed since `earlier`)."""
    options = []
    for option, value in arguments.items():
        if not _publishable(option) or (earlier is not None and earlier.get(option) == value):
            continue
        if value is True:
            options.append(f"`--{option}`")
        elif value is False:
            if earlier is not None and earlier.get(option) is True:
                options.append(f"without `--{option}`")
        elif value is not None:  # None: the default, or as the initial model is configured
            options.append(f"`--{option} {_value_text(value)}`")
    return ", ".join(options)


def _vgg_losses_off(arguments: Mapping[str, Any]) -> bool:
    """train.py trains without perceptual and style losses when it has no VGG16 weights, whatever their weights."""
    weights = [arguments.get(option) for option in ("perceptual_weight", "style_weight")]
    return not arguments.get("vgg16_weights") and any(isinstance(w, int | float) and w > 0 for w in weights)


def _data_text(arguments: Mapping[str, Any]) -> str | None:
    photos = None
    if arguments.get("dataset_name"):
        photos = public_name(str(arguments["dataset_name"]))
        if arguments.get("dataset_config_name"):
            photos += f" ({arguments['dataset_config_name']})"
        if arguments.get("train_data_dir"):
            photos += f" of {public_name(str(arguments['train_data_dir']))}"
    elif arguments.get("train_data_dir"):
        photos = public_name(str(arguments["train_data_dir"]))
    sources = [
        f"{what} from {public_name(str(arguments[option]))}"
        for option, what in (("mask_dir", "masks"), ("segmentation_dir", "object shapes"))
        if arguments.get(option)
    ]
    return ", ".join(filter(None, [photos, *sources])) or None


def _batch_text(arguments: Mapping[str, Any]) -> str | None:
    """Images per optimisation step (files written before `num_processes` was recorded count one process)."""
    per_process = arguments.get("train_batch_size")
    if not isinstance(per_process, int):
        return None
    processes = arguments.get("num_processes") or 1
    accumulation = arguments.get("gradient_accumulation_steps") or 1
    total = per_process * processes * accumulation
    if processes == 1 and accumulation == 1:
        return str(total)
    factors = [f"{per_process} per process"]
    if processes > 1:
        factors.append(f"{processes} processes")
    if accumulation > 1:
        factors.append(f"{accumulation} accumulation steps")
    return f"{total} ({' x '.join(factors)})"


def _unique(items) -> list[str]:
    found: list[str] = []
    for item in items:
        if item and item not in found:
            found.append(item)
    return found


def _training_hours(logging_dir: Path) -> float | None:
    """Hours the run was training: the span of the scalars of each TensorBoard event file (one per start or
    resume), added up; None without event files (or without TensorBoard)."""
    event_files = sorted(logging_dir.rglob("events.out.tfevents.*")) if logging_dir.is_dir() else []
    if not event_files:
        return None
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return None
    spans = []
    for event_file in event_files:
        events = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        events.Reload()
        times = [event.wall_time for tag in events.Tags()["scalars"] for event in events.Scalars(tag)]
        if times:
            spans.append(max(times) - min(times))
    return sum(spans) / 3600 if spans else None


def _duration(hours: float) -> str:
    if hours >= 1:
        return f"{hours:.1f} h"
    minutes = round(hours * 60)
    return f"{minutes} min" if minutes >= 1 else "under a minute"
