"""Speed of the shipped default model on a 512x512 photo with a 20 % hole, on this CPU.

    python benchmarks/bench_default_model.py [--runs 7] [--threads 2]

Times `MEDInpaintPipeline.from_pretrained()` (the model inside the package) inpainting scikit-image's 512x512
astronaut with a blob mask covering 20 % of the photo, with the default strategy (the photo is below the crop
trigger, so it is resized to the 256-pixel working size and only the hole is pasted back at full size), and the
network's forward alone at 256x256. Both are also given as multiples of the fixed reference workload (the 15
convolutions 256->256 at 32x32 of `bench_forward.py`) timed in the same run.
"""

from __future__ import annotations

import argparse

import numpy as np
import skimage.data
import torch
from common import median_time, reference_workload
from PIL import Image, ImageDraw

from med_hf import MEDInpaintPipeline


def hole_mask(size: int, coverage: float) -> Image.Image:
    """A few overlapping ellipses grown until they cover `coverage` of the image."""
    rng = np.random.default_rng(0)
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    while np.asarray(mask).mean() / 255 < coverage:
        x, y = rng.integers(size // 5, 4 * size // 5, 2)
        rx, ry = rng.integers(size // 20, size // 7, 2)
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=255)
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = MEDInpaintPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    photo = Image.fromarray(skimage.data.astronaut())
    mask = hole_mask(512, 0.20)
    coverage = np.asarray(mask).mean() / 255

    reference, _ = median_time(reference_workload(), args.runs)
    pipeline, times = median_time(lambda: pipe(image=photo, mask_image=mask), args.runs)
    pixel_values = torch.rand(1, 3, 256, 256) * 2 - 1
    hole = torch.from_numpy(np.asarray(mask.resize((256, 256))) > 127)[None, None].float()
    with torch.inference_mode():
        forward, _ = median_time(lambda: pipe.model(pixel_values=pixel_values, mask=hole), args.runs)

    parameters = sum(p.numel() for p in pipe.model.parameters())
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.runs} runs")
    print(f"default model: {parameters / 1e6:.2f} M parameters, base width {pipe.model.config.base_channels}")
    print(f"reference workload (15 convs 256->256 @32x32): {reference * 1000:.0f} ms")
    print(
        f"512x512 photo, {coverage:.1%} hole, default strategy: {pipeline * 1000:.0f} ms = "
        f"{pipeline / reference:.2f} x reference (range {min(times) * 1000:.0f}-{max(times) * 1000:.0f} ms)"
    )
    print(f"network forward alone, 256x256: {forward * 1000:.0f} ms = {forward / reference:.2f} x reference")


if __name__ == "__main__":
    main()
