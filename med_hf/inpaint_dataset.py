"""`med-inpaint-dataset`: inpaint every row of a 🤗 dataset, on one process or many, and resume after a crash.

    med-inpaint-dataset --dataset photos/ --mask-column mask --output-dir photos-clean/
    accelerate launch --num_processes 4 -m med_hf.inpaint_dataset --dataset org/corpus --streaming \
        --output-dir corpus-clean/ --push-to-hub org/corpus-clean

The result is a Parquet dataset: every original column kept, plus the inpainted photo (PNG, lossless) in an
`inpainted` image column; `load_dataset(output_dir)` opens it. Rows are cut into fixed shards of
`--rows-per-shard` input rows; each finished shard is one Parquet file, written atomically and named after the rows
it holds, so a rerun of the same command after a crash, Ctrl-C, SIGTERM or SIGKILL only does the missing shards,
and the dataset ends up exactly as an uninterrupted run would have made it, whatever the number of processes.

Several processes (GPUs, or CPU processes with gloo) share the shards; all must see the same `--output-dir`:

    accelerate launch --num_processes 8 -m med_hf.inpaint_dataset ...                       # 8 GPUs
    accelerate launch --multi_gpu --num_processes 2 -m med_hf.inpaint_dataset ...           # 2 CPU processes
    torchrun --nproc_per_node 2 -m med_hf.inpaint_dataset ...                               # the same
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import io
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic_files import PARTIAL_SUFFIX, atomic_file, write_text

if TYPE_CHECKING:
    import pyarrow as pa
    from accelerate import PartialState
    from datasets import Dataset, Features, IterableDataset

    from .pipeline_med import MEDInpaintPipeline

PROG = "med-inpaint-dataset"
JOB_FILE = "job.json"
DATA_DIR = "data"
ERRORS_FILE = "errors.jsonl"
CARD_FILE = "README.md"
HD_STRATEGIES = ("auto", "crop", "resize", "original")
TEXTURES = ("none", "exemplar")
# Key of each shard's own record (its rows, whether it ends its source shard, its bad rows) in the Parquet schema
# metadata: the record is written in the same atomic rename as the rows, so a shard file is finished or absent.
SHARD_METADATA_KEY = b"med_inpaint_dataset"
# Rows per Parquet row group, as `datasets` writes image datasets (keeps the dataset viewer's reads small).
ROW_GROUP_SIZE = 100
# A process that finished its shards waits at the final barrier while the slowest one works.
BARRIER_TIMEOUT = timedelta(days=7)
PROGRESS_INTERVAL_S = 0.5
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
RESUME_HINT = "finished shards are kept, rerun the same command to resume"

logger = logging.getLogger(PROG)


class UserError(Exception):
    """A problem with the command or its input, reported in one line without a traceback (exit status 1)."""


class RowError(Exception):
    """A row that cannot be inpainted; it is recorded in the errors file and the job goes on."""


# --------------------------------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from .image_processing_med import DEFAULT_MAX_PIXELS  # (imports torch: inside main, where Ctrl-C is one line)

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inpaint every row of a 🤗 dataset with MEDFE into a Parquet dataset (resumable, multi-process).",
    )
    data = parser.add_argument_group("input")
    data.add_argument("--dataset", required=True,
                      help="Hub dataset id, a local folder load_dataset reads (imagefolder, parquet, arrow), "
                           "a save_to_disk folder, or one .parquet/.arrow file")  # fmt: skip
    data.add_argument("--dataset-config", help="configuration (subset) name of the dataset")
    data.add_argument(
        "--split", default="train", help="split to inpaint (slices like train[:1000] work without --streaming)"
    )
    data.add_argument("--image-column", default="image", help="column of photos (an image column or file paths)")
    data.add_argument("--mask-column", default="mask",
                      help="column of masks, white = fill: an image column or a column of mask file paths")  # fmt: skip
    data.add_argument("--path-root",
                      help="folder that relative file paths in those columns start from (default: the dataset "
                           "folder when it is local, else the current folder)")  # fmt: skip
    data.add_argument("--streaming", action="store_true", help="read the dataset as a stream (nothing cached)")
    data.add_argument("--cache-dir", help="🤗 datasets cache folder")

    output = parser.add_argument_group("output")
    output.add_argument("--output-dir", required=True, help="new folder, or the folder of an earlier run to resume")
    output.add_argument("--output-column", default="inpainted", help="name of the added image column")
    output.add_argument("--rows-per-shard", type=int, default=250, help="input rows per output Parquet file")
    output.add_argument("--png-compress-level", type=int, default=1, choices=range(10), metavar="{0..9}",
                        help="zlib level of the PNG results (1: fast; 9: ~10%% smaller, 3x slower)")  # fmt: skip
    output.add_argument("--push-to-hub", metavar="REPO", help="upload the finished dataset to this Hub dataset repo")
    output.add_argument("--hub-private", action="store_true", help="create the Hub repo as private")

    model = parser.add_argument_group("model and pipeline")
    model.add_argument("--model", help="model folder or Hub repo id (default: the model shipped with med-hf)")
    model.add_argument("--batch-size", type=int, default=8, help="rows per pipeline call")
    model.add_argument("--hd-strategy", default="auto", choices=HD_STRATEGIES)
    model.add_argument("--hd-crop-margin", type=int, default=128, help="context pixels around masked regions")
    model.add_argument("--mask-dilation", type=int, default=0, help="grow each mask by this many pixels")
    model.add_argument("--mask-blur", type=float, default=0, help="feather the seam (changes pixels near the mask)")
    model.add_argument("--texture", choices=TEXTURES, help="texture synthesis in the hole (default: the pipeline's)")
    model.add_argument("--seed", type=int, default=0, help="each row's generator is seeded from (seed, its row)")
    model.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="larger photos are bad rows")
    model.add_argument("--threads", type=int, default=1,
                       help="torch CPU threads per process; results are bit-identical only for equal values, so "
                            "use processes, not threads, to use more cores")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings and errors only")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    for name in ("rows_per_shard", "batch_size", "threads", "max_pixels"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("hd_crop_margin", "mask_dilation", "mask_blur", "seed"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0")
    if args.image_column == args.mask_column:
        raise UserError("--image-column and --mask-column name the same column")
    output_split(args.split)


def output_split(split: str) -> str:
    """The split name of the result: `train[:1000]` -> `train`."""
    name = split.split("[", 1)[0].strip()
    if not re.fullmatch(r"\w+(\.\w+)*", name):
        raise UserError(f"--split {split!r} is not a split name")
    return name


# --------------------------------------------------------------------------------------------------- input


@dataclass
class SourceDataset:
    """The input: rows in a fixed order, cut into source shards (1 for a map-style dataset, `n_shards` for a stream).

    A row is identified by (source shard, row in it): for a map-style dataset that is (0, global index); for a
    stream the global index is only known once every source shard has been read.
    """

    dataset: Dataset | IterableDataset
    features: Features
    num_rows: int | None  # map-style only
    num_sources: int
    local_path: Path | None
    image_kind: str  # "image" (an Image feature) or "path" (a string column of file paths)
    mask_kind: str
    path_root: Path  # where relative file paths in the image and mask columns start

    @property
    def streaming(self) -> bool:
        return self.num_rows is None


def open_source(args: argparse.Namespace) -> SourceDataset:
    """Load `--dataset` as the command asks and check its columns; user mistakes become `UserError`s."""
    from datasets import Dataset, DatasetDict

    local = Path(args.dataset).expanduser()
    local_path = local.resolve() if local.exists() else None
    try:
        dataset = _load(args, local_path)
    except UserError:
        raise
    except (ValueError, KeyError, FileNotFoundError, ConnectionError, OSError, ImportError) as error:
        hint = "" if local_path else " (and there is no such local folder)"
        raise UserError(f"cannot load --dataset {args.dataset}{hint}: {_one_line(error)}") from None
    if isinstance(dataset, DatasetDict):  # a save_to_disk folder of several splits
        if args.split not in dataset:
            raise UserError(f"unknown --split {args.split!r}; {args.dataset} has {', '.join(dataset)}")
        dataset = dataset[args.split]
    if isinstance(dataset, Dataset) and args.streaming:
        dataset = dataset.to_iterable_dataset()
    features = dataset.features
    if features is None:
        raise UserError(f"{args.dataset} does not declare its columns' types (features); cannot keep them")
    for option, column in (("--image-column", args.image_column), ("--mask-column", args.mask_column)):
        if column not in features:
            raise UserError(f"{option} {column!r} is not a column of {args.dataset} (columns: {', '.join(features)})")
    if args.output_column in features:
        raise UserError(f"{args.dataset} already has a column {args.output_column!r}; choose another --output-column")
    if isinstance(dataset, Dataset):
        num_rows, num_sources = len(dataset), 1
        if num_rows == 0:
            raise UserError(f"split {args.split!r} of {args.dataset} has no rows")
    else:
        num_rows, num_sources = None, max(1, dataset.num_shards)
    if args.path_root:
        path_root = Path(args.path_root).expanduser().resolve()
        if not path_root.is_dir():
            raise UserError(f"--path-root {args.path_root} is not a folder")
    else:
        path_root = local_path if local_path is not None and local_path.is_dir() else Path.cwd()
    return SourceDataset(
        dataset=dataset,
        features=features,
        num_rows=num_rows,
        num_sources=num_sources,
        local_path=local_path,
        image_kind=_column_kind(features, args.image_column, "--image-column"),
        mask_kind=_column_kind(features, args.mask_column, "--mask-column"),
        path_root=path_root,
    )


def _load(args: argparse.Namespace, local_path: Path | None):
    from datasets import load_dataset, load_from_disk

    common = {"split": args.split, "streaming": args.streaming, "cache_dir": args.cache_dir}
    if local_path is None:
        return load_dataset(args.dataset, args.dataset_config, **common)
    if local_path.is_file():
        builder = {".parquet": "parquet", ".arrow": "arrow"}.get(local_path.suffix.lower())
        if builder is None:
            raise UserError(f"--dataset {args.dataset}: give a folder, or a .parquet or .arrow file")
        return load_dataset(builder, data_files=str(local_path), **common)
    if (local_path / "dataset_dict.json").is_file() or (local_path / "state.json").is_file():
        return load_from_disk(str(local_path))  # save_to_disk folders are memory-mapped: nothing to stream
    return load_dataset(str(local_path), args.dataset_config, **common)


def _column_kind(features: Features, column: str, option: str) -> str:
    from datasets import Image as ImageFeature
    from datasets import Value

    feature = features[column]
    if isinstance(feature, ImageFeature):
        return "image"
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return "path"
    raise UserError(f"{option} {column!r} holds {feature}, neither images nor file paths")


def input_signature(path: Path | None) -> str | None:
    """Names and sizes of a local dataset's files: a resumed run refuses an input that changed in between."""
    if path is None:
        return None
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        relative = file.relative_to(path).as_posix() if path.is_dir() else file.name
        if any(part.startswith(".") for part in Path(relative).parts):
            continue  # caches and editor files
        digest.update(f"{relative}\0{file.stat().st_size}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------- rows


def decode_image(value: Any, kind: str, root: Path, what: str, max_pixels: int) -> Image.Image:
    """A row's photo or mask as a decoded, upright PIL image; any problem is a `RowError` naming it."""
    from .image_processing_med import ImageTooLargeError, check_image_size

    if value is None:
        raise RowError(f"missing {what}")
    if kind == "image":
        data, path = value.get("bytes"), value.get("path")
        if data is None and not path:
            raise RowError(f"missing {what}")
    else:
        data, path = None, value
    if data is None:
        file = Path(path) if Path(path).is_absolute() else root / path
        if not file.is_file():
            raise RowError(f"missing {what}: no file {path}")
        source = file
    else:
        source = io.BytesIO(data)
    # A path stored in an image column is this machine's (imagefolder); a path column's value is the user's own.
    label = f"{what} {Path(path).name if kind == 'image' else path}" if path else what
    try:
        image = Image.open(source)
    except UnidentifiedImageError:
        # PIL's own message names the in-memory buffer by its address, which differs from run to run.
        raise RowError(f"unreadable {label}: not an image format PIL can read") from None
    except OSError as error:
        raise RowError(f"unreadable {label}: {_one_line(error)}") from None
    except Image.DecompressionBombError as error:
        raise RowError(f"{label} is too large: {_one_line(error)}") from None
    with image:
        if getattr(image, "n_frames", 1) > 1:
            raise RowError(f"{label} is an animated or multi-page image; only still images are inpainted")
        try:
            check_image_size(*image.size, max_pixels=max_pixels)
            image.load()
        except ImageTooLargeError as error:
            raise RowError(f"{label} is too large: {_one_line(error)}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise RowError(f"unreadable {label} (corrupt or truncated?): {_one_line(error)}") from None
        return ImageOps.exif_transpose(image)  # a new image that outlives the file


def load_row(image_value: Any, mask_value: Any, source: SourceDataset, max_pixels: int):
    image = decode_image(image_value, source.image_kind, source.path_root, "image", max_pixels)
    mask = decode_image(mask_value, source.mask_kind, source.path_root, "mask", max_pixels)
    if image.size != mask.size:
        raise RowError(f"mask is {mask.size[0]}x{mask.size[1]} but the image is {image.size[0]}x{image.size[1]}")
    return image, mask


def row_seed(seed: int, source: int, row: int) -> int:
    """The seed of one row's generator: a function of the row alone, not of the process or the batch it is in."""
    return int(np.random.SeedSequence([seed, source, row]).generate_state(1, dtype=np.uint64)[0])


def encode_png(image: Image.Image, level: int, icc_profile: bytes | None) -> bytes:
    buffer = io.BytesIO()
    options = {"icc_profile": icc_profile} if icc_profile else {}
    image.save(buffer, format="PNG", compress_level=level, **options)
    return buffer.getvalue()


def pipeline_options(args: argparse.Namespace, pipe: MEDInpaintPipeline) -> dict[str, Any]:
    """Keyword arguments of every pipeline call; `texture` only when given and only where the pipeline has it."""
    options = {
        "hd_strategy": args.hd_strategy,
        "hd_strategy_crop_margin": args.hd_crop_margin,
        "mask_dilation": args.mask_dilation,
        "mask_blur": args.mask_blur,
    }
    parameters = inspect.signature(pipe.__call__).parameters
    # Pipelines that batch network inputs across images and check sizes themselves get the job's values.
    options.update({name: getattr(args, name) for name in ("batch_size", "max_pixels") if name in parameters})
    if args.texture is not None:
        if "texture" in parameters:
            options["texture"] = args.texture
        elif args.texture != "none":  # "none" is what a pipeline without the option does
            raise UserError(f"--texture {args.texture}: the installed MEDInpaintPipeline has no texture option yet")
    return options


# --------------------------------------------------------------------------------------------------- shards


@dataclass(frozen=True, order=True)
class Shard:
    """One output file: rows [start, stop) of source shard `source` (for a map-style dataset: global rows)."""

    source: int
    start: int
    stop: int

    def file_name(self, split: str) -> str:
        return f"{split}-{self.source:05d}-{self.start:09d}-{self.stop:09d}.parquet"


@dataclass(frozen=True)
class FinishedShard:
    shard: Shard
    last: bool  # the last shard of its source shard
    errors: tuple[dict, ...] = ()


def shard_pattern(split: str) -> re.Pattern:
    return re.compile(rf"{re.escape(split)}-(\d{{5}})-(\d{{9}})-(\d{{9}})\.parquet")


def finished_shards(output_dir: Path, split: str) -> dict[tuple[int, int], FinishedShard]:
    """The shard files present, keyed by (source, start). Files are only ever complete (atomic renames)."""
    pattern = shard_pattern(split)
    folder = output_dir / DATA_DIR
    found = {}
    for name in sorted(entry.name for entry in os.scandir(folder)) if folder.is_dir() else ():
        match = pattern.fullmatch(name)
        if match:
            shard = Shard(*(int(group) for group in match.groups()))
            record = shard_record(folder / name)
            found[(shard.source, shard.start)] = FinishedShard(shard, record["last"], tuple(record["errors"]))
    return found


_records: dict[tuple[Path, int, int], dict] = {}


def shard_record(path: Path) -> dict:
    """A shard file's own record (read from its footer once; the progress loop asks again and again)."""
    import pyarrow.parquet as pq

    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _records:
        metadata = pq.read_schema(path).metadata or {}
        _records[key] = json.loads(metadata[SHARD_METADATA_KEY])
    return _records[key]


def map_style_shards(num_rows: int, rows_per_shard: int) -> list[Shard]:
    return [Shard(0, start, min(start + rows_per_shard, num_rows)) for start in range(0, num_rows, rows_per_shard)]


def source_complete(source: int, finished: dict[tuple[int, int], FinishedShard]) -> bool:
    """Whether every shard of a source shard is written: a gap-free chain from row 0 to a shard marked last."""
    start = 0
    while (source, start) in finished:
        done = finished[(source, start)]
        if done.last:
            return True
        start = done.shard.stop
    return False


def all_complete(source: SourceDataset, finished: dict, rows_per_shard: int) -> bool:
    if not source.streaming:
        return all((0, s.start) in finished for s in map_style_shards(source.num_rows, rows_per_shard))
    return all(source_complete(s, finished) for s in range(source.num_sources))


def my_map_style_shards(num_rows: int, rows_per_shard: int, finished: dict, rank: int, world: int) -> list[Shard]:
    """Pending shards dealt round-robin: balanced on a first run and on a resume alike."""
    pending = [s for s in map_style_shards(num_rows, rows_per_shard) if (0, s.start) not in finished]
    return pending[rank::world]


def my_stream_shards(
    dataset: IterableDataset,
    num_sources: int,
    rows_per_shard: int,
    finished: dict,
    rank: int,
    world: int,
) -> Iterator[tuple[Shard, pa.Table, bool]]:
    """(shard, its rows, whether it ends its source shard) for each shard of a stream this process writes.

    With at least as many source shards as processes, whole source shards are dealt round-robin, as
    `split_dataset_by_node` does, so each process reads only its own data. With fewer (a local image folder
    streams as one), every process reads every pending source shard, undecoded, and the pending shards are dealt
    round-robin in stream order. Either way the shards, their rows and their files do not depend on `world`.
    """
    pending = [s for s in range(num_sources) if not source_complete(s, finished)]
    if num_sources >= world:
        for source in pending[rank::world]:
            for start, table, last in source_chunks(dataset, num_sources, source, rows_per_shard):
                if (source, start) not in finished:
                    yield Shard(source, start, start + table.num_rows), table, last
                elif finished[(source, start)].last:
                    break
        return
    ordinal = 0
    for source in pending:
        for start, table, last in source_chunks(dataset, num_sources, source, rows_per_shard):
            if (source, start) in finished:
                if finished[(source, start)].last:
                    break
                continue
            if ordinal % world == rank:
                yield Shard(source, start, start + table.num_rows), table, last
            ordinal += 1


def source_chunks(
    dataset: IterableDataset, num_sources: int, source: int, rows_per_shard: int
) -> Iterator[tuple[int, pa.Table, bool]]:
    """Consecutive `rows_per_shard`-row pieces of one source shard as Arrow tables (raw, undecoded storage).

    A piece is yielded once the row after it has been seen, so it is known to be the source shard's last
    or not; an empty source shard yields one empty piece, so that its completion is on disk too.
    """
    import pyarrow as pa

    shard = dataset.shard(num_shards=num_sources, index=source, contiguous=True) if num_sources > 1 else dataset
    buffered, count, start = [], 0, 0
    for batch in shard.with_format("arrow").iter(batch_size=rows_per_shard):
        buffered.append(batch)
        count += batch.num_rows
        while count > rows_per_shard:
            table = pa.concat_tables(buffered)
            yield start, table.slice(0, rows_per_shard), False
            buffered, count, start = [table.slice(rows_per_shard)], count - rows_per_shard, start + rows_per_shard
    if buffered:
        yield start, pa.concat_tables(buffered), True
    else:
        yield start, dataset.features.arrow_schema.empty_table(), True


# --------------------------------------------------------------------------------------------------- one shard


@dataclass
class Job:
    """Everything a process needs to turn a shard of input rows into a shard file."""

    args: argparse.Namespace
    source: SourceDataset
    pipe: MEDInpaintPipeline
    options: dict[str, Any]
    split: str
    output_dir: Path
    output_features: Features
    on_batch: Callable[[int], None] = field(default=lambda rows: None)


def output_features(source: SourceDataset, column: str) -> Features:
    from datasets import Features
    from datasets import Image as ImageFeature

    return Features({**source.features, column: ImageFeature()})


def inpaint_shard(job: Job, shard: Shard, table: pa.Table, last: bool) -> tuple[int, int]:
    """Inpaint a shard's rows and write its file; returns (rows, bad rows)."""
    args = job.args
    images = table.column(args.image_column).to_pylist()
    masks = table.column(args.mask_column).to_pylist()
    results: list[bytes | None] = [None] * table.num_rows
    errors: list[dict] = []
    for first in range(0, table.num_rows, args.batch_size):
        rows = range(first, min(first + args.batch_size, table.num_rows))
        ready = []
        for row in rows:
            try:
                ready.append((row, *load_row(images[row], masks[row], job.source, args.max_pixels)))
            except RowError as error:
                errors.append(_row_error(shard, row, error, images[row]))
        for row, outcome in run_pipeline(job, shard, ready):
            if isinstance(outcome, RowError):
                errors.append(_row_error(shard, row, outcome, images[row]))
            else:
                results[row] = outcome
        job.on_batch(len(rows))
    errors.sort(key=lambda e: e["row"])
    for error in errors:
        where = f"source shard {shard.source} row" if job.source.streaming else "row"
        logger.warning("%s %d: %s", where, error["row"], error["reason"])
    write_shard(job, shard, shard_table(job, table, results, shard, last, errors))
    return table.num_rows, len(errors)


def run_pipeline(job: Job, shard: Shard, ready: list) -> Iterator[tuple[int, bytes | RowError]]:
    """PNG bytes of each ready row, or the `RowError` that row raised.

    A batch that fails is retried row by row, so that one bad row fails alone. Which rows share a batch is fixed
    by the shard and `--batch-size` (and the bad rows), never by the process, so reruns batch alike.
    """
    import torch

    if not ready:
        return
    row_failures = (ValueError, MemoryError, torch.OutOfMemoryError)
    try:
        images = _call_pipeline(job, shard, ready)
    except row_failures as error:
        if len(ready) == 1:
            yield ready[0][0], RowError(_failure_reason(error))
            return
        for item in ready:
            yield from run_pipeline(job, shard, [item])
        return
    for (row, image, _), result in zip(ready, images, strict=True):
        yield row, encode_png(result, job.args.png_compress_level, image.info.get("icc_profile"))


def _call_pipeline(job: Job, shard: Shard, ready: list) -> list[Image.Image]:
    import torch

    generators = [
        torch.Generator().manual_seed(row_seed(job.args.seed, shard.source, shard.start + r)) for r, *_ in ready
    ]
    return job.pipe(
        image=[image for _, image, _ in ready],
        mask_image=[mask for _, _, mask in ready],
        generator=generators,  # one per image, as diffusers pipelines take them for batches
        output_type="pil",
        **job.options,
    ).images


def _failure_reason(error: BaseException) -> str:
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return f"out of memory ({type(error).__name__}); lower --max-pixels or use --hd-strategy crop"
    return _one_line(error)


def _row_error(shard: Shard, row: int, error: RowError, image_value: Any) -> dict:
    record = {"source": shard.source, "row": shard.start + row, "reason": str(error)}
    path = image_value.get("path") if isinstance(image_value, dict) else image_value
    if path:
        record["image_path"] = Path(path).name
    return record


def shard_table(job: Job, table: pa.Table, results: list, shard: Shard, last: bool, errors: list[dict]) -> pa.Table:
    """The input rows as they are (local files embedded), the results as PNG, and the shard's own record."""
    import pyarrow as pa

    column = pa.array([None if r is None else {"bytes": r, "path": None} for r in results], type=_image_type())
    columns = [table.column(name) for name in job.source.features] + [column]
    schema = job.output_features.arrow_schema
    table = pa.Table.from_arrays([c.cast(f.type) for c, f in zip(columns, schema, strict=True)], schema=schema)
    table = embed_local_files(table)
    record = {"source": shard.source, "start": shard.start, "stop": shard.stop, "last": last, "errors": errors}
    return table.replace_schema_metadata({**schema.metadata, SHARD_METADATA_KEY: json.dumps(record)})


def _image_type():
    from datasets import Image as ImageFeature

    return ImageFeature().pa_type


def embed_local_files(table: pa.Table) -> pa.Table:
    """Store the bytes of images that are only referenced by a local path, so the result stands on its own.

    A reference that cannot be read (its row is then a bad row) is kept as it is, row by row.
    """
    import pyarrow as pa
    from datasets.table import embed_table_storage

    try:
        return embed_table_storage(table)
    except OSError:
        pieces = []
        for row in range(table.num_rows):
            piece = table.slice(row, 1)
            with contextlib.suppress(OSError):
                piece = embed_table_storage(piece)
            pieces.append(piece)
        return pa.concat_tables(pieces)


def write_shard(job: Job, shard: Shard, table: pa.Table) -> None:
    import pyarrow.parquet as pq

    path = job.output_dir / DATA_DIR / shard.file_name(job.split)
    with atomic_file(path) as handle:
        pq.write_table(table, handle, row_group_size=ROW_GROUP_SIZE)


# --------------------------------------------------------------------------------------------------- the job


def job_record(args: argparse.Namespace, source: SourceDataset, pipe: MEDInpaintPipeline) -> dict:
    """What determines the output; a rerun in the same folder must match it exactly to resume.

    `threads` and `batch_size` are here because the network's float32 arithmetic is not associative: oneDNN
    splits its sums differently with the thread count and the batch, which moves a rare pixel by one level.
    """
    settings = (
        "dataset_config", "split", "image_column", "mask_column", "streaming", "output_column", "rows_per_shard",
        "png_compress_level", "hd_strategy", "hd_crop_margin", "mask_dilation", "mask_blur", "texture", "seed",
        "max_pixels", "threads", "batch_size",
    )  # fmt: skip
    return {
        "tool": PROG,
        "format": 1,
        "settings": {
            "dataset": str(source.local_path) if source.local_path else args.dataset,
            "model": _model_name(args.model),
            "path_root": str(source.path_root) if "path" in (source.image_kind, source.mask_kind) else None,
            **{name: getattr(args, name) for name in settings},
        },
        "input": {
            "rows": source.num_rows,
            "source_shards": source.num_sources,
            "files": input_signature(source.local_path),
        },
        "model_sha256": model_fingerprint(pipe),
        "device": pipe.device.type,
    }


def _model_name(model: str | None) -> str:
    if model is None:
        return "default"
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def model_fingerprint(pipe: MEDInpaintPipeline) -> str:
    """SHA-256 of the model's weights and buffers: a folder whose weights changed is another model."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(pipe.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def prepare_output_dir(output_dir: Path, record: dict, source: SourceDataset) -> None:
    """Create the folder, or accept it as an earlier run of this same job; never touch the input or others' files."""
    resolved = output_dir.expanduser().resolve()
    if source.local_path is not None:
        if resolved == source.local_path or source.local_path in resolved.parents:
            raise UserError(f"--output-dir {output_dir} is inside the input dataset {source.local_path}")
        if resolved in source.local_path.parents:
            raise UserError(f"--output-dir {output_dir} contains the input dataset {source.local_path}")
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output-dir {output_dir} is a file")
    job_file = output_dir / JOB_FILE
    if job_file.is_file():
        try:
            earlier = json.loads(job_file.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"cannot read {job_file}: {_one_line(error)}") from None
        changed = _differences(earlier, record)
        if changed:
            raise UserError(
                f"--output-dir {output_dir} holds a run with other settings ({', '.join(changed)}); rerun it with "
                "its own settings to resume, or choose a new --output-dir"
            )
        remove_partial_files(output_dir)
        (output_dir / DATA_DIR).mkdir(exist_ok=True)
        return
    if output_dir.is_dir() and any(output_dir.iterdir()):
        raise UserError(f"--output-dir {output_dir} is not empty and holds no earlier run of {PROG}")
    (output_dir / DATA_DIR).mkdir(parents=True, exist_ok=True)
    write_text(job_file, json.dumps(record, indent=2, sort_keys=True) + "\n")


def _differences(earlier: dict, now: dict, prefix: str = "") -> list[str]:
    names = []
    for key in sorted(set(earlier) | set(now)):
        old, new = earlier.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            names += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            names.append(f"{prefix}{key}: {old!r} -> {new!r}" if not isinstance(old, dict) else f"{prefix}{key}")
    return [name.removeprefix("settings.") for name in names]


def remove_partial_files(output_dir: Path) -> None:
    """Delete what a killed run left half-written (hidden `*.partial` files; SIGKILL skips their clean-up)."""
    for folder in (output_dir, output_dir / DATA_DIR):
        if folder.is_dir():
            for path in folder.glob(f".*{PARTIAL_SUFFIX}"):
                path.unlink(missing_ok=True)


@dataclass
class Totals:
    rows: int = 0
    failed: int = 0


def finalize(
    output_dir: Path, split: str, source: SourceDataset, args: argparse.Namespace, features: Features
) -> Totals:
    """Merge the shards' bad rows into `errors.jsonl` (with global indices) and write the dataset card."""
    finished = finished_shards(output_dir, split)
    if not all_complete(source, finished, args.rows_per_shard):
        raise UserError(
            f"shards are missing from {output_dir / DATA_DIR} although every process is done: all processes must "
            "write to the same folder (on several machines, a shared file system)"
        )
    shards = sorted(finished.values(), key=lambda f: f.shard)
    offsets, total = {}, 0  # global index of each source shard's first row
    for source_index in range(source.num_sources):
        offsets[source_index] = total
        total += max((f.shard.stop for f in shards if f.shard.source == source_index), default=0)
    errors = []
    for done in shards:
        for error in done.errors:
            entry = {"index": offsets[error["source"]] + error["row"], **error}
            if not source.streaming:  # (source 0, row) adds nothing to the global index
                del entry["source"], entry["row"]
            errors.append(entry)
    write_text(output_dir / ERRORS_FILE, "".join(json.dumps(e, sort_keys=True) + "\n" for e in errors))
    size = sum((output_dir / DATA_DIR / f.shard.file_name(split)).stat().st_size for f in shards)
    write_text(output_dir / CARD_FILE, dataset_card(args, split, features, total, len(errors), size))
    return Totals(rows=total, failed=len(errors))


def dataset_card(args: argparse.Namespace, split: str, features: Features, rows: int, failed: int, size: int) -> str:
    """README.md with the `configs` and `dataset_info` YAML that `load_dataset(folder)` reads, and a short story."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    splits = SplitDict()
    splits.add(SplitInfo(name=split, num_bytes=size, num_examples=rows))
    info = DatasetInfo(features=features, splits=splits, download_size=size, dataset_size=size)
    card_data = DatasetCardData(tags=["image-inpainting", "med-hf"])
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    MetadataConfigs(
        {"default": {"data_files": [{"split": split, "path": f"{DATA_DIR}/{split}-*"}]}}
    ).to_dataset_card_data(card_data)
    name, model = _public_name(args.dataset), _public_name(args.model) or "the default model shipped with med-hf"
    where = args.push_to_hub or Path(args.output_dir).name
    options = ", ".join(
        f"{key}={getattr(args, key)}"
        for key in ("hd_strategy", "hd_crop_margin", "mask_dilation", "mask_blur", "texture", "seed")
        if getattr(args, key) is not None
    )
    body = f"""
# {name}, inpainted with MEDFE

Split `{split}` of `{name}` with one column added: `{args.output_column}`, the `{args.image_column}` image with the
white area of `{args.mask_column}` filled by MEDFE (`MEDInpaintPipeline` of med-hf, model: {model}; {options}).
Results are PNG-encoded, so nothing is lost; pixels outside the (dilated) mask are the original's.

- rows: {rows:,}, in input order, every original column kept
- failed rows: {failed:,}; their `{args.output_column}` is null and `errors.jsonl` gives each one's index and reason

```python
from datasets import load_dataset

dataset = load_dataset("{where}", split="{split}")
```

Made with `{PROG}`.
"""
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{body}").content


def _public_name(dataset_or_model: str | None) -> str | None:
    """A Hub id as it is; a local path by its last part (the card may be published)."""
    if dataset_or_model and Path(dataset_or_model).expanduser().exists():
        return Path(dataset_or_model).expanduser().resolve().name
    return dataset_or_model


def push_to_hub(output_dir: Path, repo_id: str, private: bool, rows: int) -> str:
    """Upload the finished folder (data, card, errors) to a Hub dataset repo; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=output_dir,
            allow_patterns=[CARD_FILE, ERRORS_FILE, f"{DATA_DIR}/*.parquet"],
            commit_message=f"Inpainted dataset ({rows:,} rows) made with {PROG}",
        )
    except Exception as error:  # network, authentication, repo name: all end the same way for the user
        raise UserError(
            f"the dataset is complete in {output_dir} but could not be pushed to {repo_id}: {_one_line(error)}"
        ) from None
    return getattr(commit, "commit_url", str(commit))


# --------------------------------------------------------------------------------------------------- processes


def init_processes() -> PartialState:
    """Accelerate's process state: a process group under `accelerate launch` / `torchrun`, else one process.

    Without a GPU the processes talk over gloo (so `torchrun` works without `ACCELERATE_USE_CPU=true`).
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import InitProcessGroupKwargs

    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    return PartialState(cpu=not has_accelerator, **InitProcessGroupKwargs(timeout=BARRIER_TIMEOUT).to_kwargs())


def configure_logging(state: PartialState, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s {PROG} [process {state.process_index}/{state.num_processes}] %(levelname)s: %(message)s",
            datefmt="%H:%M:%S",
        )
    )
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logging.getLogger("transformers").setLevel(logging.ERROR)  # as med-inpaint: loading notes are not errors


def on_main(state: PartialState, make: Callable[[], Any]) -> Any:
    """Run `make` on the main process and give its result (or its `UserError`) to every process."""
    from accelerate.utils import broadcast_object_list

    outcome: list = [None]
    if state.is_main_process:
        try:
            outcome = [("ok", make())]
        except UserError as error:
            outcome = [("error", str(error))]
    if state.num_processes > 1:
        broadcast_object_list(outcome)
    kind, value = outcome[0]
    if kind == "error":
        raise UserError(value)
    return value


def everywhere(state: PartialState, make: Callable[[], Any], main_first: bool = False) -> Any:
    """Run `make` on every process (the main one first if asked: it fills caches); any `UserError` stops all."""
    from accelerate.utils import gather_object

    value, error = None, None
    if main_first and not state.is_main_process:
        state.wait_for_everyone()
    try:
        value = make()
    except UserError as failure:
        error = str(failure)
    if main_first and state.is_main_process:
        state.wait_for_everyone()
    errors = gather_object([error]) if state.num_processes > 1 else [error]
    first = next((e for e in errors if e), None)
    if first is not None:
        raise UserError(first)
    return value


def load_pipeline(args: argparse.Namespace, device) -> MEDInpaintPipeline:
    from .pipeline_med import MEDInpaintPipeline

    try:
        with progress_bars_off("transformers", "diffusers"):  # one loading bar per process would bury the job's
            pipe = MEDInpaintPipeline.from_pretrained(args.model).to(device)
    except (OSError, ValueError) as error:
        hint = (
            " (and there is no such local folder)" if args.model and not Path(args.model).expanduser().exists() else ""
        )
        raise UserError(f"cannot load the model {args.model}{hint}: {_one_line(error)}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def progress_bars_off(*libraries: str, off: bool = True) -> Iterator[None]:
    """Turn the progress bars of 🤗 libraries off for a while (they are process-wide switches)."""
    import importlib

    switches = [importlib.import_module(f"{name}.utils.logging") for name in libraries] if off else []
    enabled = [switch for switch in switches if switch.is_progress_bar_enabled()]
    for switch in enabled:
        switch.disable_progress_bar()
    try:
        yield
    finally:
        for switch in enabled:
            switch.enable_progress_bar()


class Progress:
    """The main process's bar: rows in every finished shard file (all processes) plus its own shard in progress."""

    def __init__(self, state: PartialState, output_dir: Path, split: str, total: int | None, quiet: bool):
        from tqdm.auto import tqdm

        self.output_dir, self.split, self.enabled = output_dir, split, state.is_main_process and not quiet
        self.own_rows, self.last_refresh = 0, 0.0
        self.bar = tqdm(total=total, desc="inpainting", unit="row", disable=not self.enabled, dynamic_ncols=True)
        self.refresh(force=True)

    def rows_on_disk(self) -> int:
        pattern, folder = shard_pattern(self.split), self.output_dir / DATA_DIR
        rows = 0
        for entry in os.scandir(folder):
            match = pattern.fullmatch(entry.name)
            if match:
                rows += int(match.group(3)) - int(match.group(2))
        return rows

    def add(self, rows: int) -> None:
        self.own_rows += rows
        self.refresh()

    def shard_written(self) -> None:
        self.own_rows = 0
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last_refresh < PROGRESS_INTERVAL_S):
            return
        self.last_refresh = now
        self.bar.n = self.rows_on_disk() + self.own_rows
        self.bar.refresh()

    def close(self) -> None:
        self.refresh(force=True)
        self.bar.close()


def work(job: Job, state: PartialState, finished: dict, progress: Progress) -> Totals:
    """Inpaint this process's share of the pending shards."""
    source, args = job.source, job.args
    rank, world = state.process_index, state.num_processes
    if source.streaming:
        shards = my_stream_shards(source.dataset, source.num_sources, args.rows_per_shard, finished, rank, world)
    else:
        arrow = source.dataset.with_format("arrow")
        shards = (
            (shard, arrow[shard.start : shard.stop], shard.stop == source.num_rows)
            for shard in my_map_style_shards(source.num_rows, args.rows_per_shard, finished, rank, world)
        )
    totals, started = Totals(), time.perf_counter()
    for shard, table, last in shards:
        shard_started = time.perf_counter()
        rows, failed = inpaint_shard(job, shard, table, last)
        progress.shard_written()
        totals.rows, totals.failed = totals.rows + rows, totals.failed + failed
        logger.info(
            "wrote %s (%d rows, %d failed, %.2f rows/s)",
            shard.file_name(job.split), rows, failed, rows / max(time.perf_counter() - shard_started, 1e-9),
        )  # fmt: skip
    elapsed = time.perf_counter() - started
    logger.info(
        "done: %d rows (%d failed) in %.1f s, %.2f rows/s",
        totals.rows,
        totals.failed,
        elapsed,
        totals.rows / max(elapsed, 1e-9),
    )
    return totals


def wait_for_everyone(state: PartialState, progress: Progress) -> None:
    """The final barrier; the main process keeps its bar moving while the others finish their shards."""
    if state.num_processes == 1:
        return
    if not progress.enabled:
        state.wait_for_everyone()
        return
    import torch.distributed as dist

    barrier = dist.barrier(async_op=True)
    while not barrier.is_completed():
        progress.refresh(force=True)
        time.sleep(PROGRESS_INTERVAL_S)
    barrier.wait()


def run(args: argparse.Namespace, state: PartialState) -> int:
    import torch

    check_args(args)
    torch.set_num_threads(args.threads)
    with progress_bars_off("datasets", off=args.quiet or not state.is_main_process):
        return run_job(args, state)


def run_job(args: argparse.Namespace, state: PartialState) -> int:
    split = output_split(args.split)
    output_dir = Path(args.output_dir).expanduser()
    source = everywhere(state, lambda: open_source(args), main_first=not args.streaming)
    pipe = everywhere(state, lambda: load_pipeline(args, state.device))
    options = everywhere(state, lambda: pipeline_options(args, pipe))

    def plan() -> dict:
        prepare_output_dir(output_dir, job_record(args, source, pipe), source)
        return finished_shards(output_dir, split)

    finished = on_main(state, plan)
    features = output_features(source, args.output_column)
    progress = Progress(state, output_dir, split, source.num_rows, args.quiet)
    job = Job(args, source, pipe, options, split, output_dir, features, on_batch=progress.add)
    started = time.perf_counter()
    try:
        with _bar_safe_logging(progress.enabled):
            work(job, state, finished, progress)
            wait_for_everyone(state, progress)
    finally:
        progress.close()
    elapsed = time.perf_counter() - started
    totals = on_main(state, lambda: finalize(output_dir, split, source, args, features))
    if state.is_main_process:
        print(summary(output_dir, split, finished, totals, elapsed, state.num_processes))
    if args.push_to_hub:
        url = on_main(state, lambda: push_to_hub(output_dir, args.push_to_hub, args.hub_private, totals.rows))
        if state.is_main_process:
            print(f"pushed to {url}")
    # Every process leaves together: one that tears its process group down while a peer's last broadcast is still
    # in flight can abort the peer at exit ("terminate called without an active exception", seen once in CI).
    state.wait_for_everyone()
    return 0


def _bar_safe_logging(enabled: bool):
    """Log lines above the progress bar instead of through it."""
    from contextlib import nullcontext

    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm(loggers=[logger]) if enabled else nullcontext()


def summary(output_dir: Path, split: str, before: dict, totals: Totals, elapsed: float, processes: int) -> str:
    """One line: rows done and failed by this run, rows an earlier run had done, images/s over all processes."""
    new = [f for key, f in finished_shards(output_dir, split).items() if key not in before]
    rows = sum(f.shard.stop - f.shard.start for f in new)
    failed = sum(len(f.errors) for f in new)
    earlier = totals.rows - rows
    return (
        f"{rows - failed} rows inpainted, {failed} failed"
        + (f" (see {output_dir / ERRORS_FILE})" if failed else "")
        + (f", {earlier} done by an earlier run" if earlier else "")
        + f"; {rows / max(elapsed, 1e-9):.2f} images/s on {processes} process{'es' if processes > 1 else ''}"
        + f" in {elapsed:.1f} s -> {output_dir}"
    )


class Terminated(BaseException):
    """SIGTERM (a launcher stopping its processes, a scheduler's time limit), raised like Ctrl-C so that the shard
    being written is cleaned up on the way out."""


def _terminate(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    state = None
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        # torch and accelerate load from here on, where Ctrl-C and SIGTERM are answered in one line.
        args = parse_args(argv)
        state = init_processes()
        configure_logging(state, args.quiet)
        return run(args, state)
    except UserError as error:
        _tell(state, f"error: {error}")
        return 1
    except KeyboardInterrupt:
        _tell(state, f"interrupted; {RESUME_HINT}")
        return EXIT_INTERRUPTED
    except Terminated:
        _tell(state, f"terminated; {RESUME_HINT}")
        return EXIT_TERMINATED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if state is not None and state.num_processes > 1:
            state.destroy_process_group()


def _tell(state: PartialState | None, message: str) -> None:
    """One line on stderr, from the main process only (every process meets the same problem)."""
    is_main = state.is_main_process if state is not None else os.environ.get("RANK", "0") == "0"
    if is_main:
        print(f"{PROG}: {message}", file=sys.stderr)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
