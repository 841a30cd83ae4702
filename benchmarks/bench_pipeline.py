"""Overhead and memory of `MEDInpaintPipeline` on big photos, with the released architecture (random weights).

    python benchmarks/bench_pipeline.py [--runs 3] [--threads 2] [--memory-only]

Prints, all measured in this run on this machine with the full-size network (`MEDModel(MEDConfig())`,
130M parameters, randomly initialised; the weights do not change the cost):

(a) the median time of one 256x256 batch-1 forward of the model, after a warm-up run;
(b) the median time of `pipe(image=photo, mask_image=mask)` with the default `hd_strategy="auto"` on a
    2048x1536 photo (scikit-image's astronaut scaled up) with one blob-shaped object mask covering ~3 % of it,
    after a warm-up call, with `texture="none"` (the texture stage's cost is `bench_default_model.py`'s); then the
    ratio (b) / (a), target <= 2. The runs of (a) and (b) alternate, so that
    a change in the machine's load affects both alike;
(c) the peak RSS (`VmHWM`, see `peak_rss`) of a fresh Python process that loads the full model with
    `from_pretrained` from a folder written here and inpaints a 4000x3000 photo with a small blob mask (1 %,
    default strategy), target <= 2 GB (2e9 bytes).

Each number is printed with its target and PASS/FAIL. Timings depend on how busy the machine is: the load
average is printed too.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from common import run_python
from PIL import Image, ImageDraw
from transformers.utils import logging as transformers_logging

from med_hf import MEDConfig, MEDModel
from med_hf.pipeline_med import MEDInpaintPipeline

RATIO_TARGET = 2.0
RSS_TARGET_BYTES = 2e9
PHOTO_SIZE = (2048, 1536)
PHOTO_COVERAGE = 0.03
LARGE_SIZE = (4000, 3000)
LARGE_COVERAGE = 0.01


def photo(size: tuple[int, int]) -> Image.Image:
    """scikit-image's astronaut, a real 512x512 photo, scaled to `size` (width, height)."""
    return Image.fromarray(skimage.data.astronaut()).resize(size, Image.Resampling.LANCZOS)


def blob_mask(size: tuple[int, int], coverage: float, centre: tuple[float, float] = (0.62, 0.4)) -> Image.Image:
    """Mode L mask with one irregular, object-like blob (white) covering about `coverage` of the image."""
    width, height = size
    cx, cy = centre[0] * width, centre[1] * height
    angles = np.linspace(0, 2 * math.pi, 180, endpoint=False)
    shape = 1 + 0.22 * np.sin(3 * angles + 0.4) + 0.12 * np.cos(5 * angles) + 0.06 * np.sin(9 * angles)
    radius = math.sqrt(coverage * width * height / math.pi)
    for _ in range(3):  # rescale until the drawn area matches the wanted coverage
        mask = Image.new("L", size, 0)
        points = [
            (cx + radius * r * math.cos(a), cy + 0.8 * radius * r * math.sin(a))
            for a, r in zip(angles, shape, strict=True)
        ]
        ImageDraw.Draw(mask).polygon(points, fill=255)
        drawn = np.count_nonzero(np.asarray(mask)) / (width * height)
        radius *= math.sqrt(coverage / drawn)
    return mask


def seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


RSS_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads({threads})
    sys.path.insert(0, {bench_dir!r})
    from bench_pipeline import blob_mask, photo
    from common import peak_rss
    from med_hf.pipeline_med import MEDInpaintPipeline

    started = time.perf_counter()
    pipe = MEDInpaintPipeline.from_pretrained({model_dir!r})
    pipe.set_progress_bar_config(disable=True)
    image, mask = photo({size}), blob_mask({size}, {coverage})
    result = pipe(image=image, mask_image=mask).images[0]
    assert result.size == image.size
    print(peak_rss(), time.perf_counter() - started)
    """
)


def peak_rss_of_large_photo(model: MEDModel, threads: int) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of a fresh process loading `model` and inpainting a 4000x3000 photo."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        script = RSS_SCRIPT.format(
            threads=threads,
            bench_dir=str(Path(__file__).resolve().parent),
            model_dir=folder,
            size=LARGE_SIZE,
            coverage=LARGE_COVERAGE,
        )
        stdout = run_python(script, "memory")
    peak, elapsed = stdout.split()[-2:]
    return int(peak), float(elapsed)


def time_forward_and_pipeline(model: MEDModel, runs: int) -> None:
    """Print (a), (b) and their ratio."""
    pipe = MEDInpaintPipeline(model=model)
    pipe.set_progress_bar_config(disable=True)

    pixel_values = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    hole = torch.zeros(1, 1, 256, 256)
    hole[..., 90:150, 100:170] = 1
    image, mask = photo(PHOTO_SIZE), blob_mask(PHOTO_SIZE, PHOTO_COVERAGE)
    coverage = np.count_nonzero(np.asarray(mask)) / (PHOTO_SIZE[0] * PHOTO_SIZE[1])

    shapes: list[tuple[int, ...]] = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["pixel_values"].shape)), with_kwargs=True
    )

    def forward() -> None:
        with torch.inference_mode():
            model(pixel_values=pixel_values, mask=hole)

    def inpaint() -> None:
        pipe(image=image, mask_image=mask, texture="none")

    forward()  # warm-up
    shapes.clear()
    inpaint()  # warm-up
    pipeline_shapes = list(shapes)
    handle.remove()
    forward_times, pipeline_times = [], []
    for _ in range(runs):
        forward_times.append(seconds(forward))
        pipeline_times.append(seconds(inpaint))
    forward_median, pipeline_median = statistics.median(forward_times), statistics.median(pipeline_times)
    ratio = pipeline_median / forward_median

    print(
        f"(a) model forward, 256x256, batch 1: median {forward_median:.3f} s "
        f"(runs: {', '.join(f'{t:.3f}' for t in forward_times)})"
    )
    print(
        f"(b) pipe, {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} photo, blob mask {coverage:.1%}, hd_strategy='auto', "
        "texture='none': "
        f"median {pipeline_median:.3f} s (runs: {', '.join(f'{t:.3f}' for t in pipeline_times)}); "
        f"network inputs {pipeline_shapes}"
    )
    print(f"    (b)/(a) = {ratio:.2f}, target <= {RATIO_TARGET:g}: {verdict(ratio <= RATIO_TARGET)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of (a) and (b) each, after a warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--memory-only", action="store_true", help="measure (c) only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()

    print(
        f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average "
        + ", ".join(f"{load:.2f}" for load in os.getloadavg())
    )
    torch.manual_seed(0)
    model = MEDModel(MEDConfig()).eval()
    print(f"model: MEDConfig() (released architecture), {sum(p.numel() for p in model.parameters()):,} parameters")
    if not args.memory_only:
        time_forward_and_pipeline(model, args.runs)

    peak, elapsed = peak_rss_of_large_photo(model, args.threads)
    print(
        f"(c) peak RSS, fresh process, from_pretrained + {LARGE_SIZE[0]}x{LARGE_SIZE[1]} photo, "
        f"{LARGE_COVERAGE:.0%} blob mask, hd_strategy='auto': {peak / 1e9:.2f} GB ({peak / 2**30:.2f} GiB) "
        f"in {elapsed:.1f} s, target <= {RSS_TARGET_BYTES / 1e9:g} GB: {verdict(peak <= RSS_TARGET_BYTES)}"
    )


if __name__ == "__main__":
    main()
