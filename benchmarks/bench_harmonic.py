"""Speed and accuracy of the harmonic (membrane) fill: `harmonic_fill` (the discrete Laplace equation solved) next to
`push_pull_fill` (the approximation it replaced, which the shipped default model still reads as its hole prior).

    python benchmarks/bench_harmonic.py [--runs 15] [--threads 1]

Prints, measured in this run on this machine with `--threads` torch threads:

(a) the time of both fills, fastest and median of `--runs` calls made in turn (so that a change in the machine's
    load affects both alike), and the ratio of the fastest, for
    - scikit-image's astronaut at 256x256 (3 channels) with an irregular hole of about 25 %: the object mask of
      `bench_pipeline.py` and free-form strokes (the training masks); target: the exact fill at most 2x the old
      one;
    - the same photo with strokes of 57 % spread over the whole image (the worst case: nothing to crop, the most
      boundary);
    - the astronaut at 512x512 with the 25 % blob;
    - a 4000x3000 single-channel alpha with a 3 % blob (fewer runs: the old fill takes seconds);
(b) the largest error of both against a direct solve of the same 5-point system (scipy's `spsolve`) on the 256x256
    cases, in 8-bit levels (the photo is on 0..255);
(c) the issue's alpha bar: a 512x512 alpha ramp 40..255 across the width with 80x70 and 30x90 holes, largest and
    mean error of both fills against the ramp (the exact fill must stay within 4 levels).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from bench_pipeline import blob_mask, photo

from med_hf.harmonic import harmonic_fill, push_pull_fill
from med_hf.training.masks import free_form_mask

SPEED_TARGET = 2.0
ALPHA_TARGET = 4.0
LARGE_RUNS = 3


def rgb(size: int) -> torch.Tensor:
    """The astronaut at `size` x `size` as float (1, 3, H, W) on 0..255."""
    return torch.from_numpy(np.array(photo((size, size)), dtype=np.float32)).permute(2, 0, 1)[None].contiguous()


def as_hole(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(mask) > 0)[None, None].float()


def direct_solve(image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """The exact solution of the discrete system (float64): each hole pixel the mean of its neighbours inside the
    image, the known pixels fixed. `image` (1, C, H, W), `hole` (1, 1, H, W)."""
    values, free = image[0].double().numpy(), hole[0, 0].numpy() > 0
    height, width = free.shape
    index = np.full((height, width), -1)
    index[free] = np.arange(free.sum())
    diagonal = np.zeros(free.sum())
    rows, columns, rhs = [], [], np.zeros((free.sum(), values.shape[0]))
    # Each of the 4 directions: the pixels whose neighbour that way is inside the image.
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        inside = np.zeros_like(free)
        inside[max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)] = True
        ys, xs = np.nonzero(free & inside)
        diagonal[index[ys, xs]] += 1
        neighbour_free = free[ys + dy, xs + dx]
        rows.append(index[ys, xs][neighbour_free])
        columns.append(index[ys + dy, xs + dx][neighbour_free])
        np.add.at(rhs, index[ys, xs][~neighbour_free], values[:, ys + dy, xs + dx][:, ~neighbour_free].T)
    rows, columns = np.concatenate(rows), np.concatenate(columns)
    matrix = scipy.sparse.csc_matrix(
        (
            np.concatenate([diagonal, -np.ones(len(rows))]),
            (np.r_[np.arange(len(diagonal)), rows], np.r_[np.arange(len(diagonal)), columns]),
        ),
        shape=(len(diagonal), len(diagonal)),
    )
    solved = values.copy()
    solved[:, free] = scipy.sparse.linalg.spsolve(matrix, rhs).reshape(len(diagonal), -1).T
    return torch.from_numpy(solved)[None]


def interleaved(
    first: Callable[[], object], second: Callable[[], object], runs: int
) -> tuple[list[float], list[float]]:
    """Seconds of `runs` calls of each, alternating, after one untimed call of each."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for function, record in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            function()
            record.append(time.perf_counter() - start)
    return times


def _ms(times: list[float]) -> str:
    return f"{min(times) * 1e3:7.1f} / {statistics.median(times) * 1e3:7.1f} ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    small, medium = rgb(256), rgb(512)
    strokes = np.maximum(
        free_form_mask(256, 256, np.random.default_rng(1)), free_form_mask(256, 256, np.random.default_rng(2))
    )
    large_hole = as_hole(blob_mask((4000, 3000), 0.03))
    large_alpha = torch.linspace(0, 255, 4000).expand(1, 1, 3000, 4000).contiguous()
    cases = [
        ("256x256 RGB, 25 % blob", small, as_hole(blob_mask((256, 256), 0.25)), args.runs),
        (
            "256x256 RGB, free-form strokes",
            small,
            as_hole(free_form_mask(256, 256, np.random.default_rng(25))),
            args.runs,
        ),
        ("256x256 RGB, strokes everywhere", small, as_hole(strokes), args.runs),
        ("512x512 RGB, 25 % blob", medium, as_hole(blob_mask((512, 512), 0.25)), args.runs),
        ("4000x3000 alpha, 3 % blob", large_alpha, large_hole, LARGE_RUNS),
    ]
    print(f"(a) time, {args.threads} thread(s); fastest / median of the runs")
    for index, (name, image, hole, runs) in enumerate(cases):
        old, new = interleaved(
            lambda i=image, h=hole: push_pull_fill(i, h), lambda i=image, h=hole: harmonic_fill(i, h), runs
        )
        ratio = min(new) / min(old)
        verdict = f"  target <= {SPEED_TARGET:g}x: {'PASS' if ratio <= SPEED_TARGET else 'FAIL'}" if index < 2 else ""
        print(
            f"    {name:32s} ({hole.mean().item():5.1%} hole): push-pull {_ms(old)}, exact {_ms(new)}, "
            f"ratio {ratio:4.2f}{verdict}"
        )

    print("(b) largest error against a direct sparse solve of the same system, 8-bit levels")
    for name, image, hole, _ in cases[:3]:
        reference = direct_solve(image, hole)
        old = (push_pull_fill(image, hole).double() - reference).abs().max().item()
        new = (harmonic_fill(image, hole).double() - reference).abs().max().item()
        exact64 = (harmonic_fill(image.double(), hole) - reference).abs().max().item()
        print(f"    {name:32s}: push-pull {old:6.2f}, exact {new:5.3f} (float32), {exact64:5.3f} (float64)")

    print("(c) alpha ramp 40..255 across a 512x512 image, error against the ramp, 8-bit levels (largest / mean)")
    ramp = torch.linspace(40, 255, 512).expand(1, 1, 512, 512).contiguous()
    for height, width in ((80, 70), (30, 90)):
        hole = torch.zeros_like(ramp)
        hole[..., 200 : 200 + height, 150 : 150 + width] = 1
        inside = hole > 0
        old = (push_pull_fill(ramp, hole) - ramp).abs()[inside]
        new = (harmonic_fill(ramp, hole) - ramp).abs()[inside]
        verdict = "PASS" if new.max() <= ALPHA_TARGET else "FAIL"
        print(
            f"    {height}x{width} hole: push-pull {old.max():5.2f} / {old.mean():4.2f}, exact {new.max():5.3f} / "
            f"{new.mean():5.3f}  target <= {ALPHA_TARGET:g}: {verdict}"
        )


if __name__ == "__main__":
    main()
