"""Speed and memory of the shipped default model with the pipeline's default settings (texture included).

    python benchmarks/bench_default_model.py [--runs 5] [--threads 2]

Prints, measured in this run on this machine, each also as a multiple of the fixed reference workload (the 15
convolutions 256->256 at 32x32 of `bench_forward.py`), which is timed between the other runs so that a change in
the machine's load affects all alike:

(a) `MEDInpaintPipeline.from_pretrained()` (the model inside the package) inpainting scikit-image's 512x512
    astronaut with a hole of ellipses covering 20 % of it, default settings: the strategy resizes the photo to the
    network's 256-pixel working size, and the texture stage (`texture="exemplar"`) re-synthesises the hole at
    512x512. Target <= 3x the reference workload. The same with `texture="none"` (the network's smooth fill
    upscaled), and the network's forward alone at 256x256, show where the time goes.
(b) a fresh Python process that loads the default model and inpaints a 4000x3000 photo (the astronaut scaled up)
    with a ~3 % object mask, default settings (`"auto"` crops around the object; the texture runs at full
    resolution in the crop): the first call's seconds (one-off set-up included), target <= 15x the reference
    workload, and the process's peak RSS (`VmHWM`), target <= 2 GB. It runs before anything else, while this
    process is idle.

Each target line ends in PASS/FAIL, with the load average for context.
"""

from __future__ import annotations

import argparse
import os
import statistics
import textwrap
from pathlib import Path

import numpy as np
import skimage.data
import torch
from bench_pipeline import seconds, verdict
from common import reference_workload, run_python
from PIL import Image, ImageDraw

from med_hf import MEDInpaintPipeline

SMALL_TARGET = 3.0
LARGE_SIZE = (4000, 3000)
LARGE_COVERAGE = 0.03
LARGE_TARGET = 15.0
RSS_TARGET_BYTES = 2e9

LARGE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads({threads})
    sys.path.insert(0, {bench_dir!r})
    from bench_pipeline import blob_mask, photo
    from common import peak_rss
    from med_hf.pipeline_med import MEDInpaintPipeline

    pipe = MEDInpaintPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    image, mask = photo({size}), blob_mask({size}, {coverage})
    started = time.perf_counter()
    result = pipe(image=image, mask_image=mask).images[0]
    elapsed = time.perf_counter() - started
    assert result.size == image.size
    print(peak_rss(), elapsed)
    """
)


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


def large_photo(threads: int) -> tuple[int, float]:
    """(peak RSS in bytes, seconds of the pipeline call) of a fresh process inpainting the 4000x3000 photo."""
    script = LARGE_SCRIPT.format(
        threads=threads, bench_dir=str(Path(__file__).resolve().parent), size=LARGE_SIZE, coverage=LARGE_COVERAGE
    )
    peak, elapsed = run_python(script, "large-photo").split()[-2:]
    return int(peak), float(elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each measurement, after a warm-up")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average "
        + ", ".join(f"{load:.2f}" for load in os.getloadavg())
    )

    # First, while this process is idle: its own idle OpenMP threads would otherwise spin beside the child's.
    peak, elapsed = large_photo(args.threads)

    pipe = MEDInpaintPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    parameters = sum(p.numel() for p in pipe.model.parameters())
    print(f"default model: {parameters / 1e6:.2f} M parameters, base width {pipe.model.config.base_channels}")
    photo = Image.fromarray(skimage.data.astronaut())
    mask = hole_mask(512, 0.20)
    coverage = np.asarray(mask).mean() / 255
    pixel_values = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    hole = torch.from_numpy(np.asarray(mask.resize((256, 256))) > 127)[None, None].float()

    def forward() -> None:
        with torch.inference_mode():
            pipe.model(pixel_values=pixel_values, mask=hole)

    runs = {
        "reference": reference_workload(),
        "default": lambda: pipe(image=photo, mask_image=mask),
        "smooth": lambda: pipe(image=photo, mask_image=mask, texture="none"),
        "forward": forward,
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(args.runs):
        for name, fn in runs.items():
            times[name].append(seconds(fn))
    median = {name: statistics.median(values) for name, values in times.items()}
    reference = median["reference"]

    def line(name: str) -> str:
        values = times[name]
        return (
            f"{median[name] * 1000:.0f} ms = {median[name] / reference:.2f}x ref "
            f"(range {min(values) * 1000:.0f}-{max(values) * 1000:.0f} ms)"
        )

    ratio = median["default"] / reference
    print(f"(r) reference workload (15 convs 256->256 @32x32): {line('reference')}")
    print(
        f"(a) 512x512 photo, {coverage:.1%} hole, default settings (texture='exemplar'): {line('default')}, "
        f"target <= {SMALL_TARGET:g}x: {verdict(ratio <= SMALL_TARGET)}"
    )
    print(f"    the same with texture='none': {line('smooth')}")
    print(f"    network forward alone, 256x256: {line('forward')}")
    large_ratio = elapsed / reference
    print(
        f"(b) fresh process (run first, alone), {LARGE_SIZE[0]}x{LARGE_SIZE[1]} photo, {LARGE_COVERAGE:.0%} object "
        f"mask, default settings, first call: {elapsed:.2f} s = {large_ratio:.1f}x ref, target <= {LARGE_TARGET:g}x: "
        f"{verdict(large_ratio <= LARGE_TARGET)}"
    )
    print(
        f"    peak RSS {peak / 1e9:.2f} GB ({peak / 2**30:.2f} GiB), target <= {RSS_TARGET_BYTES / 1e9:g} GB: "
        f"{verdict(peak <= RSS_TARGET_BYTES)}"
    )


if __name__ == "__main__":
    main()
