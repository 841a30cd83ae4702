"""Helpers shared by the benchmark scripts: the fixed reference workload, timing and peak memory."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


def reference_workload() -> Callable[[], None]:
    """The 15 partial-convolution-sized convolutions (256->256 at 32x32, k = 3/5/7 x 5, batch 1), as plain convs.

    Timing it in the same run as the thing measured gives a figure that survives a noisy or different machine.
    """
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(256, 256, k, k, generator=generator) * 0.02 for k in (3, 5, 7) for _ in range(5)]
    hidden = torch.randn(1, 256, 32, 32, generator=generator)

    def run() -> None:
        for weight in weights:
            F.conv2d(hidden, weight, padding=weight.shape[-1] // 2)

    return run


def median_time(fn: Callable[[], object], runs: int, warmup: int = 2) -> tuple[float, list[float]]:
    """(median seconds, all timings) of `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def peak_rss() -> int:
    """Peak resident set size of this process in bytes.

    On Linux this is `VmHWM` of /proc/self/status, not `ru_maxrss`: a child started by `subprocess` inherits its
    parent's `ru_maxrss` across exec, so a fresh process would report the benchmark's own peak instead of its own.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def run_python(script: str, what: str) -> str:
    """stdout of `script` run by a fresh Python process (offline, quiet transformers); fails loudly with its
    stderr. A fresh process measures its own peak memory, without this one's."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"the {what} subprocess failed:\n{completed.stderr}")
    return completed.stdout
