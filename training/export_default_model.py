#!/usr/bin/env python
"""Package a trained model as the default model shipped inside med-hf (`med_hf/default_model`).

    python training/export_default_model.py runs/default --eval_dir runs/default/eval
    python training/export_default_model.py --refresh --eval_dir outputs/evaluation/default

Writes, replacing the folder only once everything is ready: `config.json`, `model.safetensors` with fp16
weights (the model still computes in float32: `from_pretrained` upcasts them to the config's dtype),
`training_record.json`, `README.md` (the model card with the training record and the evaluation tables) and the
pictures found in the evaluation folder (`metrics.png`, `examples.png`, `texture_examples.png` /
`texture_crops.png` from `training/texture_figures.py`, `removal_examples.png` from `training/removal_figures.py`).
The object-hole evaluation (`training/evaluate.py --masks objects`) is read from `OBJECTS_SUBFOLDER` of the
evaluation folder when it is there. `--refresh` keeps the shipped weights and training record
and rebuilds only the card and pictures from a new evaluation (e.g. after the pipeline changed).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from med_hf import MEDModel
from med_hf.atomic_files import atomic_folder, write_text
from med_hf.publishing.model_card import CARD_PICTURES, write_model_card
from med_hf.training.record import training_record

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "med_hf" / "default_model"
DESCRIPTION = (
    "The default model of med-hf: a quarter-width MEDFE (preset `small`, all three released bugs corrected, "
    "plus the full-resolution refinement head with its harmonic hole prior) "
    "trained from scratch on the 200 BSDS500 training photos on a 2-core CPU. It is small (fp16 weights) and "
    "meant to work out of the box on photos of any size; it is not one of the authors' released checkpoints."
)


# The default model's record names its script, data and machine, which its training_args.json cannot.
COMMAND = "`training/train_default_model.sh` ({})"
DATA = (
    "BSDS500 train (200 photos); irregular masks of Liu et al. 2018 without the 600 the evaluation uses, "
    "plus generated free-form strokes and boxes"
)
MACHINE = "on 2 CPU cores (torch 2.13.0)"
RECORD_NAME = "training_record.json"
PICTURES = (*CARD_PICTURES, "examples.png")
# Where the object-hole evaluation's report lies inside the evaluation folder.
OBJECTS_SUBFOLDER = "objects"


def default_model_record(run_dir: Path) -> dict[str, str]:
    """`training_record` of the run, with the wording of the default model's script, data and machine."""
    record = training_record(run_dir)
    if record is None:
        raise FileNotFoundError(f"{run_dir} has no training_args.json: is it an output_dir of training/train.py?")
    record["command"] = COMMAND.format(record["command"])
    record["data"] = DATA
    if "time" in record:
        record["time"] += f" {MACHINE}"
    return record


def export(run_dir: Path, eval_dir: Path, output: Path) -> Path:
    model = MEDModel.from_pretrained(run_dir)
    with atomic_folder(output, replace=True) as staging:
        model.save_pretrained(staging)
        for python_file in staging.glob("*.py"):  # the package itself provides the code
            python_file.unlink()
        weights = load_file(staging / "model.safetensors")
        save_file({k: v.half() for k, v in weights.items()}, staging / "model.safetensors", metadata={"format": "pt"})
        _write_card(staging, eval_dir, default_model_record(run_dir))
    return output


def refresh(eval_dir: Path, output: Path) -> Path:
    """Rebuild the card and pictures of the exported folder `output` from a new evaluation; weights and training
    record stay as they are."""
    record = json.loads((output / RECORD_NAME).read_text())
    with atomic_folder(output, replace=True) as staging:
        for name in ("config.json", "model.safetensors"):
            shutil.copy(output / name, staging / name)
        _write_card(staging, eval_dir, record)
    return output


def _write_card(folder: Path, eval_dir: Path, record: dict[str, str]) -> None:
    write_text(folder / RECORD_NAME, json.dumps(record, indent=2) + "\n")
    for picture in PICTURES:
        if (eval_dir / picture).is_file():
            shutil.copy(eval_dir / picture, folder / picture)
    objects = eval_dir / OBJECTS_SUBFOLDER / "report.json"
    write_model_card(
        folder,
        repo_id="med-hf/medfe-default",
        model_name="MEDFE default model (med-hf)",
        description=DESCRIPTION,
        training=record,
        evaluation=json.loads((eval_dir / "report.json").read_text()),
        object_evaluation=json.loads(objects.read_text()) if objects.is_file() else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, nargs="?", help="the training output_dir (a save_pretrained folder)")
    parser.add_argument("--eval_dir", type=Path, required=True, help="output_dir of training/evaluate.py")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--refresh", action="store_true", help="keep --output's weights, rebuild card and pictures")
    args = parser.parse_args()
    if args.refresh == (args.run_dir is not None):
        parser.error("give either a run_dir or --refresh")
    written = refresh(args.eval_dir, args.output) if args.refresh else export(args.run_dir, args.eval_dir, args.output)
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
