"""Throughput of `med-inpaint-dataset` on this machine: 1 and 2 processes, against the folder CLI `med-inpaint`.

    python benchmarks/bench_inpaint_dataset.py [--images 48] [--keep DIR]

Makes an image folder of 512x512 photos (BSDS500 validation photos from ../shared/data when present, else crops
of scikit-image's photos) with a mask of about 10 % each (the irregular masks of Liu et al. 2018 from
../shared/data/masks/irregular when present, else generated blobs), then times, each as a fresh command with the
default model shipped with med-hf:

- `med-inpaint-dataset` on 1 process with 1 thread (the tool's default), and with 2 threads;
- `accelerate launch --multi_gpu --num_processes 2 -m med_hf.inpaint_dataset` (2 CPU processes over gloo, 1 thread
  each);
- `med-inpaint --image photos/ --mask masks/ --output results/`, the folder CLI, with torch's default threads
  and with `OMP_NUM_THREADS=1`.

The dataset tool's images/s come from its own summary line (inpainting only, model loading excluded); the CLI's
per-image time from its own "in T s" (also after loading). Wall times include Python start-up and model loading.
The fixed reference workload of the other benchmarks (15 convolutions 256->256 at 32x32) is timed in the same run,
so the figures can be read on a busy or different machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import median_time, reference_workload
from PIL import Image, ImageDraw

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIZE = 512
COVERAGE = (0.08, 0.12)

# Rows per shard file: 48 photos make 6 shards, 3 for each of 2 processes.
ROWS_PER_SHARD = 8


def photos(count: int) -> tuple[list[Image.Image], str]:
    """`count` 512x512 RGB photos and where they come from."""
    folder = SHARED / "bsds500" / "val"
    files = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if len(files) >= count:
        return [square(Image.open(f).convert("RGB")) for f in files[:count]], "BSDS500 validation photos"
    import skimage.data

    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    crops = []
    for i in range(count):
        image = Image.fromarray(sources[i % len(sources)])
        scale = 1.0 + 0.15 * (i // len(sources) % 4)  # different crops of the same photos
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        crops.append(square(image, shift=(i * 37) % 64))
    return crops, "crops of scikit-image photos"


def square(image: Image.Image, shift: int = 0) -> Image.Image:
    """Shorter side scaled to 512, then a 512x512 crop near the centre."""
    ratio = SIZE / min(image.size)
    image = image.resize((max(SIZE, round(image.width * ratio)), max(SIZE, round(image.height * ratio))), Image.LANCZOS)
    left = min((image.width - SIZE) // 2 + shift, image.width - SIZE)
    top = min((image.height - SIZE) // 2 + shift, image.height - SIZE)
    return image.crop((left, top, left + SIZE, top + SIZE))


def masks(count: int) -> tuple[list[Image.Image], str]:
    """`count` 512x512 masks (white = fill) covering 8-12 % of the photo."""
    folder = SHARED / "masks" / "irregular"
    chosen = []
    for file in sorted(folder.glob("*.png")) if folder.is_dir() else []:
        mask = Image.open(file).convert("L").resize((SIZE, SIZE), Image.NEAREST)
        if COVERAGE[0] <= (np.asarray(mask) > 127).mean() <= COVERAGE[1]:
            chosen.append(mask)
            if len(chosen) == count:
                return chosen, "irregular masks of Liu et al. (2018)"
    rng = np.random.default_rng(0)
    generated = []
    for _ in range(count):
        mask = Image.new("L", (SIZE, SIZE), 0)
        draw = ImageDraw.Draw(mask)
        while (np.asarray(mask) > 127).mean() < sum(COVERAGE) / 2:
            x, y = rng.integers(SIZE // 6, 5 * SIZE // 6, 2)
            rx, ry = rng.integers(SIZE // 30, SIZE // 10, 2)
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=255)
        generated.append(mask)
    return generated, "generated blobs"


def make_data(folder: Path, count: int) -> str:
    """An image folder (`metadata.csv` pairs each photo with its mask) that is also the CLI's photo folder."""
    pictures, picture_source = photos(count)
    holes, hole_source = masks(count)
    (folder / "masks").mkdir(parents=True)
    lines = ["file_name,mask_file_name"]
    for i, (picture, hole) in enumerate(zip(pictures, holes, strict=True)):
        picture.save(folder / f"{i:04d}.png")
        hole.save(folder / "masks" / f"{i:04d}.png")
        lines.append(f"{i:04d}.png,masks/{i:04d}.png")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
    coverage = np.mean([(np.asarray(h) > 127).mean() for h in holes])
    return f"{count} photos {SIZE}x{SIZE} ({picture_source}), masks {coverage:.1%} on average ({hole_source})"


def run(command: list[str], environment: dict) -> tuple[str, float]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return result.stdout, wall


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--keep", help="build the data and outputs in this folder and keep them")
    args = parser.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-inpaint-dataset-"))
    try:
        description = make_data(work / "photos", args.images)
        environment = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(work / "hf"))
        environment.pop("OMP_NUM_THREADS", None)  # each command sets its own threads, or takes torch's default
        tool = ["-m", "med_hf.inpaint_dataset", "--dataset", str(work / "photos"), "--quiet"]
        # Shards are the unit of work a process takes: with the default 250 rows a shard, the whole benchmark set
        # would be one shard and a second process would have nothing to do.
        tool += ["--cache-dir", str(work / "hf" / "datasets"), "--rows-per-shard", str(ROWS_PER_SHARD)]
        launcher = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()),
        ]  # fmt: skip
        runs = [
            ("med-inpaint-dataset, 1 process x 1 thread", [sys.executable, *tool, "--threads", "1"]),
            ("med-inpaint-dataset, 1 process x 2 threads", [sys.executable, *tool, "--threads", "2"]),
            ("med-inpaint-dataset, 2 processes x 1 thread", [*launcher, *tool, "--threads", "1"]),
        ]
        torch.set_num_threads(2)
        workload = reference_workload()
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; {description}; default model")
        print(f"load average at the start: {', '.join(f'{load:.1f}' for load in os.getloadavg())}")
        print(f"{'':46} {'images/s':>9} {'ms/image':>9} {'x ref':>6} {'ref ms':>7} {'wall s':>7}")

        def timed(command: list[str], threads: int | None = None) -> tuple[str, float, float]:
            """stdout, wall seconds, and the reference workload's time around the command (a busy machine shows)."""
            before, _ = median_time(workload, runs=3, warmup=1)
            stdout, wall = run(
                command, environment if threads is None else {**environment, "OMP_NUM_THREADS": str(threads)}
            )
            after, _ = median_time(workload, runs=3, warmup=1)
            return stdout, wall, (before + after) / 2

        def report(name: str, rate: float, wall: float, reference: float) -> None:
            ratio = 1 / rate / reference
            print(f"{name:46} {rate:9.2f} {1000 / rate:9.0f} {ratio:6.2f} {reference * 1000:7.0f} {wall:7.1f}")

        for index, (name, command) in enumerate(runs):
            stdout, wall, reference = timed([*command, "--output-dir", str(work / f"out-{index}")])
            report(name, float(re.search(r"([\d.]+) images/s", stdout).group(1)), wall, reference)
        cli = [sys.executable, "-m", "med_hf.cli", "--image", str(work / "photos")]
        cli += ["--mask", str(work / "photos" / "masks"), "--quiet", "--output"]
        for threads in (None, 1):
            name = "med-inpaint folder CLI, " + ("torch's default threads" if threads is None else "OMP_NUM_THREADS=1")
            stdout, wall, reference = timed([*cli, str(work / f"out-cli-{threads}")], threads)
            seconds = float(re.search(r"in ([\d.]+) s", stdout).group(1))
            report(name, args.images / seconds, wall, reference)
        print(f"load average at the end: {', '.join(f'{load:.1f}' for load in os.getloadavg())}")
        print(
            "(images/s, ms/image: inpainting after the model is loaded; x ref: ms/image over the reference workload "
            "(15 convs 256->256 @32x32, 2 threads) timed around that command; wall s: the whole command)"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
