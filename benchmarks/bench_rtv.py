"""Time RTV structure smoothing (med_hf.training.rtv.rtv_smooth) on RGB images of training sizes.

Usage::

    python benchmarks/bench_rtv.py [--repeats 7]

Prints the median and the fastest of ``--repeats`` runs for a 256x256 and a 481x321 (BSDS500) RGB image,
and, measured in the same run, the per-call times of two fixed references: a 512x512 float64 matrix
product (numpy, multi-threaded BLAS) and a sparse LU factorisation of a 128x128-grid Poisson matrix
(SuperLU, single-threaded, the same kind of work as RTV). Dividing by a reference makes numbers from a
busy or a different machine comparable; the sparse one tracks RTV more closely when other processes
compete for the cores, because BLAS threads suffer more from that than a single-threaded solver.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

try:
    from med_hf.training.rtv import rtv_smooth
except ImportError:  # a checkout that was not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from med_hf.training.rtv import rtv_smooth

# (height, width): the MEDFE training crop and a landscape BSDS500 image.
SIZES = ((256, 256), (321, 481))


def synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic ``(height, width, 3)`` uint8 test image: flat regions, a ramp, stripes and noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices((height, width))
    image = np.empty((height, width, 3))
    image[:] = rng.uniform(0.2, 0.8, 3)
    image[rows < height // 2] = rng.uniform(0.2, 0.8, 3)
    disc = (rows - 0.6 * height) ** 2 + (cols - 0.3 * width) ** 2 < (0.2 * min(height, width)) ** 2
    image[disc] = rng.uniform(0.2, 0.8, 3)
    image[:, :, 0] += 0.1 * cols / width
    stripes = np.where((cols // 2) % 2 == 0, 1.0, -1.0) * (cols > width // 2)
    image += 0.05 * stripes[:, :, np.newaxis]
    image += rng.normal(0.0, 0.03, image.shape)
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def poisson_matrix(side: int) -> sp.csc_array:
    """``Id + L`` for the 5-point Laplacian ``L`` of a ``side x side`` grid (the sparse reference)."""
    path = sp.diags_array([-np.ones(side - 1), 2 * np.ones(side), -np.ones(side - 1)], offsets=[-1, 0, 1])
    identity = sp.eye_array(side)
    return (sp.eye_array(side * side) + sp.kron(path, identity) + sp.kron(identity, path)).tocsc()


def time_call(function: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls, after one untimed warm-up call (caches, lazy imports)."""
    function()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        durations.append(time.perf_counter() - start)
    return durations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (default 7)")
    args = parser.parse_args(argv)

    dense = np.random.default_rng(0).standard_normal((512, 512))
    sparse = poisson_matrix(128)
    matmul = statistics.median(time_call(lambda: dense @ dense, max(args.repeats, 20)))
    sparse_lu = statistics.median(time_call(lambda: splu(sparse), args.repeats))
    print(f"reference  512x512 float64 matmul:        median {matmul * 1e3:8.2f} ms per call")
    print(f"reference  splu, 128x128 Poisson matrix:  median {sparse_lu * 1e3:8.2f} ms per call")

    for height, width in SIZES:
        image = synthetic_photo(height, width)
        durations = time_call(lambda image=image: rtv_smooth(image), args.repeats)
        median = statistics.median(durations)
        print(
            f"rtv_smooth {width}x{height} RGB: median {median * 1e3:7.1f} ms, "
            f"fastest {min(durations) * 1e3:7.1f} ms = {median / matmul:6.1f} x matmul "
            f"= {median / sparse_lu:5.2f} x splu"
        )


if __name__ == "__main__":
    main()
