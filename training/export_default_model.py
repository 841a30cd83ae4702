#!/usr/bin/env python
"""Package a trained model as the default model shipped inside med-hf (`med_hf/default_model`).

    python training/export_default_model.py runs/default --eval_dir runs/default/eval

Writes, replacing the folder only once everything is ready: `config.json`, `model.safetensors` with fp16
weights (the model still computes in float32: `from_pretrained` upcasts them to the config's dtype),
`README.md` (the model card with the training record and the evaluation table), `metrics.png` and
`examples.png` from the evaluation.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from med_hf import MEDModel
from med_hf.atomic_files import atomic_folder
from med_hf.publishing.model_card import write_model_card

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "med_hf" / "default_model"
DESCRIPTION = (
    "The default model of med-hf: a quarter-width MEDFE (preset `small`, all three released bugs corrected, "
    "plus the full-resolution refinement head with its harmonic hole prior) "
    "trained from scratch on the 200 BSDS500 training photos on a 2-core CPU. It is small (fp16 weights) and "
    "meant to work out of the box on photos of any size; it is not one of the authors' released checkpoints."
)


def training_record(run_dir: Path) -> dict[str, str]:
    """Command, steps, wall time and data of the run, from `training_args.json` and the TensorBoard log.

    A run started with `--init_from` a local run folder is a later stage of that run: the stages are listed in
    order and their steps and hours add up.
    """
    stages = _stages(run_dir)
    record = {
        "command": "`training/train_default_model.sh` (`training/train.py`, in "
        f"{len(stages)} stage{'s' if len(stages) > 1 else ''} with the arguments below)",
    }
    for number, (_, args) in enumerate(stages, start=1):
        earlier = stages[number - 2][1] if number > 1 else {}
        name = "arguments" if len(stages) == 1 else f"stage {number} arguments" + (" (changes)" if earlier else "")
        record[name] = ", ".join(
            f"`--{key}`" if value is True else f"`--{key} {value}`"
            for key, value in args.items()
            if value not in (None, False) and "dir" not in key and key != "init_from"
            if not earlier or earlier.get(key) != value
        )
    record["data"] = (
        "BSDS500 train (200 photos); irregular masks of Liu et al. 2018 without the 600 the evaluation uses, "
        "plus generated free-form strokes and boxes"
    )
    record["steps"] = " + ".join(str(args["max_train_steps"]) for _, args in stages)
    record["batch size"] = " / ".join(sorted({str(args["train_batch_size"]) for _, args in stages}))
    hours = [_training_hours(folder / args.get("logging_dir", "logs")) for folder, args in stages]
    if all(hours):
        record["time"] = f"{sum(hours):.1f} h on 2 CPU cores (torch 2.13.0)"
    return record


def _stages(run_dir: Path) -> list[tuple[Path, dict]]:
    """The run and, before it, the local runs it was initialised from (`--init_from`), oldest first."""
    stages = []
    folder: Path | None = run_dir
    while folder is not None:
        args = json.loads((folder / "training_args.json").read_text())
        stages.insert(0, (folder, args))
        parent = Path(args["init_from"]) if args.get("init_from") else None
        folder = parent if parent and (parent / "training_args.json").is_file() else None
    return stages


def _training_hours(logging_dir: Path) -> float | None:
    """Hours the run was actually training: the span of each TensorBoard event file (one per start or resume)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    total = 0.0
    for event_file in logging_dir.rglob("events.out.tfevents.*"):
        events = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        events.Reload()
        times = [event.wall_time for tag in events.Tags()["scalars"] for event in events.Scalars(tag)]
        if times:
            total += max(times) - min(times)
    return total / 3600 or None


def export(run_dir: Path, eval_dir: Path, output: Path) -> Path:
    report = json.loads((eval_dir / "report.json").read_text())
    model = MEDModel.from_pretrained(run_dir)
    with atomic_folder(output, replace=True) as staging:
        model.save_pretrained(staging)
        for python_file in staging.glob("*.py"):  # the package itself provides the code
            python_file.unlink()
        weights = load_file(staging / "model.safetensors")
        save_file({k: v.half() for k, v in weights.items()}, staging / "model.safetensors", metadata={"format": "pt"})
        for picture in ("metrics.png", "examples.png"):
            if (eval_dir / picture).is_file():
                shutil.copy(eval_dir / picture, staging / picture)
        write_model_card(
            staging,
            repo_id="med-hf/medfe-default",
            model_name="MEDFE default model (med-hf)",
            description=DESCRIPTION,
            training=training_record(run_dir),
            evaluation=report,
        )
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="the training output_dir (a save_pretrained folder)")
    parser.add_argument("--eval_dir", type=Path, required=True, help="output_dir of training/evaluate.py")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    print(f"wrote {export(args.run_dir, args.eval_dir, args.output)}")


if __name__ == "__main__":
    main()
