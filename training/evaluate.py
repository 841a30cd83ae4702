"""Evaluate inpainting models against the classical OpenCV baselines with the project's protocol.

The protocol (image preprocessing, one mask per image and hole-ratio bucket, composite, PSNR / SSIM / L1 and
the texture metrics HF / SWD) is implemented in :mod:`med_hf.evaluation`. Run from the repository root with the
project installed (``pip install -e ".[train]"``), the data beside the checkout in ``../shared/data``:

    # The classical baselines only (reproduces the reference table of the protocol):
    python training/evaluate.py \\
        --val_dir ../shared/data/bsds500/val --mask_dir ../shared/data/masks/irregular \\
        --output_dir outputs/evaluation/baselines

    # One or more models (a local folder or a Hub repo id, optionally named NAME=PATH):
    python training/evaluate.py \\
        --val_dir ../shared/data/bsds500/val --mask_dir ../shared/data/masks/irregular \\
        --model medfe=outputs/medfe-bsds --output_dir outputs/evaluation/medfe --save_images 8

    # Object-shaped holes (shapes of the train photos' human segmentations on the val photos, 3 buckets):
    python training/evaluate.py \\
        --val_dir ../shared/data/bsds500/val --masks objects \\
        --segmentation_dir ../shared/data/bsds500/segmentations/train \\
        --model default=med_hf/default_model --baselines telea,pypatchmatch --output_dir outputs/evaluation/objects

Outputs in ``--output_dir``: ``report.json`` (everything), ``report.md`` (the Markdown table, ready for the
README), ``metrics.png`` (metrics against hole ratio) and, with ``--save_images``, ``examples.png``. Every
file is written to a temporary file first and renamed, so an interrupted run never leaves a half-written one.

The texture metrics HF (fine detail in the hole, 1 = the photo's own) and SWD (sliced Wasserstein distance of
7x7 patch statistics, lower is better) need no network and are always computed. FID and LPIPS need network
weights that are never downloaded: pass local TorchScript files with
``--fid_extractor`` ((B, 3, 299, 299) in [0, 1] -> (B, 2048) features) and ``--lpips_model`` (two
(B, 3, H, W) batches in [-1, 1] -> B distances).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import skimage
import torch

from med_hf.atomic_files import write_bytes, write_text
from med_hf.evaluation import (
    CLASSICAL_BASELINES,
    NUM_BUCKETS,
    InpaintFn,
    IrregularMasks,
    MaskSet,
    PipelineInpainter,
    evaluate_methods,
    list_images,
    load_torchscript,
    protocol_image,
)
from med_hf.evaluation.figures import comparison_grid, figure_png, plot_metrics
from med_hf.evaluation.object_masks import ObjectMasks
from med_hf.evaluation.report import markdown_report
from med_hf.pipeline_med import DEFAULT_TEXTURE, TEXTURES, MEDInpaintPipeline

MASK_SETS = ("irregular", "objects")
MASK_SET_BUCKETS = {"irregular": IrregularMasks.buckets, "objects": ObjectMasks.buckets}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val_dir", type=Path, required=True, help="Folder of validation images.")
    parser.add_argument(
        "--masks",
        choices=MASK_SETS,
        default="irregular",
        help="Hole set: the protocol's irregular masks (--mask_dir, 6 buckets) or object shapes from human "
        "segmentations (--segmentation_dir, buckets 0-10/10-20/20-30 %%).",
    )
    parser.add_argument("--mask_dir", type=Path, help="Folder of the irregular test masks 00000.png … 11999.png.")
    parser.add_argument(
        "--segmentation_dir",
        type=Path,
        help="Folder of the train human segmentations <photo id>_<annotator>.png (16-bit label maps) that the "
        "object-hole set takes its shapes from.",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[NAME=]PATH_OR_REPO",
        help="Model folder or Hub repo id to evaluate; repeatable. Omit to evaluate the baselines only.",
    )
    parser.add_argument(
        "--textures",
        default=DEFAULT_TEXTURE,
        help=f"Comma-separated texture modes of the pipeline ({', '.join(TEXTURES)}) to evaluate every model with; "
        "with several, each model is reported once per mode as NAME-MODE.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seeds the texture stage (image k gets seed + k).")
    parser.add_argument(
        "--baselines",
        default="telea,ns",
        help=f"Comma-separated classical baselines among {sorted(CLASSICAL_BASELINES)}, or 'none'. The protocol's "
        "reference table has telea and ns; harmonic is the exact membrane fill (the default model's prior is its "
        "push-pull approximation); patchmatch is the "
        "texture stage with the guidance off (plain PatchMatch); pypatchmatch is the compiled pypatchmatch package.",
    )
    parser.add_argument(
        "--buckets",
        type=int,
        nargs="+",
        choices=range(NUM_BUCKETS),
        default=None,
        help="Hole-ratio buckets (0 = 0-10 %% holes … 5 = 50-60 %%); default: all of the hole set's.",
    )
    parser.add_argument("--max_images", type=int, default=None, help="Evaluate only the first N images.")
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/evaluation"))
    parser.add_argument("--batch_size", type=int, default=8, help="Images per model forward pass.")
    parser.add_argument("--device", default=None, help="Device for the networks (default: cuda if available).")
    parser.add_argument("--fid_extractor", type=Path, default=None, help="TorchScript FID feature extractor.")
    parser.add_argument("--lpips_model", type=Path, default=None, help="TorchScript LPIPS network.")
    parser.add_argument(
        "--save_images",
        type=int,
        default=0,
        metavar="N",
        help="Save a comparison grid of the first N images.",
    )
    parser.add_argument(
        "--image_bucket",
        type=int,
        choices=range(NUM_BUCKETS),
        default=None,
        help="Bucket of the comparison grid (default: the hole set's largest, at most 30-40 %%).",
    )
    args = parser.parse_args(argv)

    baselines = [] if args.baselines.strip().lower() == "none" else args.baselines.split(",")
    args.baselines = [name.strip() for name in baselines if name.strip()]
    unknown = sorted(set(args.baselines) - set(CLASSICAL_BASELINES))
    if unknown:
        parser.error(f"unknown baseline(s) {unknown}; choose among {sorted(CLASSICAL_BASELINES)} or 'none'.")
    args.textures = [mode.strip() for mode in args.textures.split(",") if mode.strip()]
    if not args.textures or set(args.textures) - set(TEXTURES):
        parser.error(f"--textures takes a comma-separated list of {', '.join(TEXTURES)}.")
    models = [parse_model_spec(spec) for spec in args.model]
    args.model = dict(models)
    if len(args.model) != len(models):
        parser.error("two --model arguments have the same name; name them with NAME=PATH.")
    clashes = sorted(set(args.model) & set(args.baselines))
    if clashes:
        parser.error(f"model name(s) {clashes} clash with baseline names; name them with NAME=PATH.")
    if not args.model and not args.baselines:
        parser.error("nothing to evaluate: give --model and/or --baselines.")
    folder = "mask_dir" if args.masks == "irregular" else "segmentation_dir"
    for name in ("val_dir", folder):
        if getattr(args, name) is None:
            parser.error(f"--masks {args.masks} needs --{name}.")
        if not getattr(args, name).is_dir():
            parser.error(f"--{name} {str(getattr(args, name))!r} does not exist or is not a folder.")
    set_buckets = MASK_SET_BUCKETS[args.masks]
    args.buckets = list(set_buckets) if args.buckets is None else args.buckets
    if args.image_bucket is None:
        args.image_bucket = min(set_buckets[-1], 3)
    outside = sorted((set(args.buckets) | {args.image_bucket}) - set(set_buckets))
    if outside:
        parser.error(f"--masks {args.masks} has buckets {list(set_buckets)}, not {outside}.")
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max_images must be at least 1.")
    return args


def parse_model_spec(spec: str) -> tuple[str, str]:
    """``"NAME=PATH"`` or ``"PATH"`` (named after its last path component) -> ``(name, path)``."""
    name, sep, path = spec.partition("=")
    # A path may contain "=", a name never contains a path separator.
    if sep and name and "/" not in name and os.sep not in name:
        return name, path
    return Path(spec.rstrip("/")).name, spec


def warn_perceptual_skipped(args: argparse.Namespace) -> None:
    missing = [
        f"{metric} (pass {flag})"
        for metric, flag, value in (
            ("FID", "--fid_extractor", args.fid_extractor),
            ("LPIPS", "--lpips_model", args.lpips_model),
        )
        if value is None
    ]
    if missing:
        bar = "!" * 100
        print(
            f"{bar}\nWARNING: {' and '.join(missing)} SKIPPED. Their network weights are never downloaded by "
            "this script;\nexport them as TorchScript files and pass the local paths to compute them.\n"
            f"{bar}",
            file=sys.stderr,
        )


def mask_set(args: argparse.Namespace) -> MaskSet:
    """The hole set that ``--masks`` names."""
    if args.masks == "objects":
        return ObjectMasks(args.segmentation_dir)
    return IrregularMasks(args.mask_dir)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warn_perceptual_skipped(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()

    try:
        paths = list_images(args.val_dir)[: args.max_images]
        masks = mask_set(args)
        if isinstance(masks, IrregularMasks):
            grid_buckets = [args.image_bucket] if args.save_images > 0 else []
            masks.check(len(paths), {*args.buckets, *grid_buckets})
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    images = [protocol_image(path) for path in paths]

    methods: dict[str, InpaintFn] = {name: CLASSICAL_BASELINES[name] for name in args.baselines}
    for name, model in args.model.items():
        pipeline = MEDInpaintPipeline.from_pretrained(model).to(device)  # loaded once, shared by the texture modes
        for texture in args.textures:
            method = name if len(args.textures) == 1 else f"{name}-{texture}"
            methods[method] = PipelineInpainter(pipeline, batch_size=args.batch_size, seed=args.seed, texture=texture)
    fid_extractor = load_torchscript(args.fid_extractor, device) if args.fid_extractor else None
    lpips_model = load_torchscript(args.lpips_model, device) if args.lpips_model else None

    report = evaluate_methods(
        methods, images, masks, args.buckets, fid_extractor=fid_extractor, lpips_model=lpips_model
    )
    report["data"] = {
        "val_dir": str(args.val_dir),
        "val_dir_name": args.val_dir.name,
        **({"mask_dir": str(args.mask_dir)} if args.masks == "irregular" else {}),
        **({"segmentation_dir": str(args.segmentation_dir)} if args.masks == "objects" else {}),
        "images": [path.name for path in paths],
    }
    report["models"] = args.model
    report["timing"] = {"total_seconds": time.perf_counter() - start, "device": device}
    report["versions"] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "scikit-image": skimage.__version__,
        "torch": torch.__version__,
    }

    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.save_images > 0:
        count = min(args.save_images, len(images))
        grid = comparison_grid(methods, images[:count], masks, args.image_bucket)
        write_bytes(args.output_dir / "examples.png", figure_png(grid))
    else:
        # A grid left by an earlier run would not match this report.
        (args.output_dir / "examples.png").unlink(missing_ok=True)
    write_bytes(args.output_dir / "metrics.png", figure_png(plot_metrics(report)))
    markdown = markdown_report(report)
    write_text(args.output_dir / "report.md", markdown)
    write_text(args.output_dir / "report.json", json.dumps(report, indent=2))
    print(markdown)
    print(f"Wrote {args.output_dir / 'report.json'} in {report['timing']['total_seconds']:.1f} s.")
    return report


if __name__ == "__main__":
    main()
