"""Cost of the texture stage (`texture="exemplar"`) with the shipped default model, as multiples of the reference
workload timed in the same run.

    python benchmarks/bench_texture.py [--runs 3] [--threads 2]

Prints, measured in this run on this machine:

(r) the median time of the fixed reference workload (`common.reference_workload`);
(a) `pipe(image=photo, mask_image=mask)` with every default (texture "exemplar") on a 512x512 photo with one
    blob-shaped hole covering ~20 % of it: median seconds and the ratio (a) / (r), target <= 3; the same call
    with `texture="none"` is timed too, so the texture stage's own share shows;
(b) a fresh Python process that loads the default model and inpaints a 4000x3000 photo with a ~3 % object mask
    (default settings: `hd_strategy="auto"` crops around the object, the texture runs at full resolution there):
    the call's seconds as a ratio to (r), target <= 15, and the process's peak RSS (`VmHWM`), target <= 2 GB.

The photo is scikit-image's astronaut (a real photo) scaled to size; the masks are `bench_pipeline.blob_mask`.
Each line ends in PASS/FAIL. Timings follow the machine's load: the load average is printed, and (r) is timed
between the runs of (a), so that a change in load affects both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import textwrap
from pathlib import Path

import numpy as np
import torch
from bench_pipeline import blob_mask, photo, seconds, verdict
from common import reference_workload, run_python
from transformers.utils import logging as transformers_logging

from med_hf.pipeline_med import MEDInpaintPipeline

SMALL_SIZE = (512, 512)
SMALL_COVERAGE = 0.20
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


def large_photo(threads: int) -> tuple[int, float]:
    """(peak RSS in bytes, seconds of the pipeline call) of a fresh process inpainting the 4000x3000 photo."""
    script = LARGE_SCRIPT.format(
        threads=threads, bench_dir=str(Path(__file__).resolve().parent), size=LARGE_SIZE, coverage=LARGE_COVERAGE
    )
    peak, elapsed = run_python(script, "large-photo").split()[-2:]
    return int(peak), float(elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each measurement, after a warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    print(
        f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average "
        + ", ".join(f"{load:.2f}" for load in os.getloadavg())
    )

    pipe = MEDInpaintPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    image, mask = photo(SMALL_SIZE), blob_mask(SMALL_SIZE, SMALL_COVERAGE)
    coverage = np.count_nonzero(np.asarray(mask)) / (SMALL_SIZE[0] * SMALL_SIZE[1])
    reference = reference_workload()
    runs = {"reference": reference, "exemplar": lambda: pipe(image=image, mask_image=mask)}
    runs["none"] = lambda: pipe(image=image, mask_image=mask, texture="none")
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(args.runs):
        for name, fn in runs.items():
            times[name].append(seconds(fn))
    median = {name: statistics.median(values) for name, values in times.items()}

    def listed(name: str) -> str:
        return ", ".join(f"{t:.3f}" for t in times[name])

    ratio = median["exemplar"] / median["reference"]
    print(
        f"(r) reference workload (15 convs 256->256 @32x32): median {median['reference']:.3f} s ({listed('reference')})"
    )
    print(
        f"(a) pipe, {SMALL_SIZE[0]}x{SMALL_SIZE[1]} photo, blob hole {coverage:.1%}, defaults (texture='exemplar'): "
        f"median {median['exemplar']:.3f} s ({listed('exemplar')}) = {ratio:.2f}x (r), target <= {SMALL_TARGET:g}: "
        f"{verdict(ratio <= SMALL_TARGET)}"
    )
    print(
        f"    the same with texture='none': median {median['none']:.3f} s ({listed('none')}); texture stage "
        f"~{median['exemplar'] - median['none']:.3f} s"
    )

    peak, elapsed = large_photo(args.threads)
    reference_after = statistics.median(seconds(reference) for _ in range(args.runs))
    large_ratio = elapsed / reference_after
    print(
        f"(b) fresh process, default model, {LARGE_SIZE[0]}x{LARGE_SIZE[1]} photo, {LARGE_COVERAGE:.0%} object mask, "
        f"defaults: {elapsed:.2f} s = {large_ratio:.1f}x (r) (re-timed after: {reference_after:.3f} s), target <= "
        f"{LARGE_TARGET:g}: {verdict(large_ratio <= LARGE_TARGET)}"
    )
    print(
        f"    peak RSS {peak / 1e9:.2f} GB ({peak / 2**30:.2f} GiB), target <= {RSS_TARGET_BYTES / 1e9:g} GB: "
        f"{verdict(peak <= RSS_TARGET_BYTES)}"
    )


if __name__ == "__main__":
    main()
