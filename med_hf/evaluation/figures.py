"""Pictures of an evaluation: metrics against the hole ratio, and side-by-side examples of every method."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from .protocol import MaskSet, as_mask_set, bucket_label, keep_known, masked_input
from .report import DISPLAY_NAMES, bucket_metric

if TYPE_CHECKING:
    from pathlib import Path

    from .protocol import InpaintFn

METRIC_TITLES = {
    "psnr": "PSNR (dB, higher is better)",
    "ssim": "SSIM (higher is better)",
    "l1": "L1 error (%, lower is better)",
    "hf": "HF: fine detail in the hole (1 = the photo's)",
    "swd": "SWD: patch statistics (lower is better)",
    "lpips": "LPIPS (lower is better)",
    "fid": "FID (lower is better)",
}


def figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def plotted_metrics(report: dict[str, Any]) -> list[str]:
    """The metrics of ``report`` to plot: PSNR, SSIM, L1, HF and SWD if the report has them, FID/LPIPS if computed."""
    entries = [bucket for method in report["methods"].values() for bucket in method["buckets"]]
    return [
        metric
        for metric in METRIC_TITLES
        if metric in ("psnr", "ssim", "l1")
        or (metric in ("hf", "swd") and all(metric in entry for entry in entries))
        or (metric in report["perceptual"] and report["perceptual"][metric]["computed"])
    ]


def plot_metrics(report: dict[str, Any]) -> Figure:
    """One subplot per metric against the hole-ratio bucket, one line per method (baselines dashed).

    At most three subplots per row (PSNR, SSIM, L1 on the first; HF, SWD and LPIPS / FID below).
    """
    metrics = plotted_metrics(report)
    labels = [bucket["label"] for bucket in report["buckets"]]
    columns = min(len(metrics), 3)
    rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(5 * columns, 4.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    for ax, metric in zip(axes, metrics, strict=False):
        for name, method in report["methods"].items():
            values = [bucket_metric(bucket, metric) for bucket in method["buckets"]]
            values = [math.nan if value is None else value for value in values]
            style = "--" if method["kind"] == "classical" else "-"
            ax.plot(range(len(labels)), values, style, marker="o", label=DISPLAY_NAMES.get(name, (name,))[0])
        ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_xlabel("hole ratio (mask bucket)")
        ax.set_title(METRIC_TITLES[metric])
        ax.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle(f"{report['num_images']} images, protocol v{report['protocol']['version']}")
    return figure


def comparison_grid(
    methods: dict[str, InpaintFn], images: list[np.ndarray], masks: MaskSet | Path, bucket: int
) -> Figure:
    """Rows of (input with the hole in white, each method's composite, ground truth) for ``images``."""
    masks = as_mask_set(masks)
    columns = ["input (hole in white)", *methods, "ground truth"]
    figure = Figure(figsize=(2.6 * len(columns), 2.6 * len(images) + 0.4), layout="constrained")
    axes = figure.subplots(len(images), len(columns), squeeze=False)
    for index, (row, image) in enumerate(zip(axes, images, strict=True)):
        hole = masks.hole(index, bucket)
        tiles = [np.where(hole[..., None], np.uint8(255), image)]
        tiles += [keep_known(image, fn(masked_input(image, hole), hole), hole) for fn in methods.values()]
        tiles.append(image)
        for ax, tile in zip(row, tiles, strict=True):
            ax.imshow(tile)
            ax.set_axis_off()
    for ax, title in zip(axes[0], columns, strict=True):
        ax.set_title(title, fontsize=10)
    figure.suptitle(f"hole ratio {bucket_label(bucket)}")
    return figure
