"""`med-inpaint`: inpaint one photo or whole folders from the command line.

    med-inpaint --image photo.jpg --mask mask.png --output result.png
    med-inpaint --image photos/ --mask masks/ --output results/      # masks matched by file name

Masks: white = area to fill. Every pixel outside the (dilated) mask is written back unchanged; choose a
lossless output format (PNG, the default for folders) to keep it so on disk.

A user's files are never replaced: an output that is one of the inputs, however its path is spelled, is refused
before anything runs, and two inputs that would write the same output fail instead of overwriting each other.
Results are written completely or not at all. Errors are one line on stderr; the exit code is 1 when anything
failed, 130 after Ctrl-C and 143 after SIGTERM (finished results are kept, no partial file is left).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .image_files import (
    IMAGE_EXTENSIONS,
    OUTPUT_FORMATS,
    OutputFormatError,
    image_files,
    output_format,
    reading_notes,
    write_result,
)

PROG = "med-inpaint"
# Masks may be named like their photo ("a.png" for "a.jpg") or with this suffix ("a_mask.png").
MASK_SUFFIX = "_mask"
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what shells report for a terminated command


class InputError(Exception):
    """A problem with the command's inputs, reported in one line without a traceback."""


@dataclass
class Job:
    """One photo to inpaint: its mask and output, or why it cannot be done (`problem`)."""

    image: Path
    mask: Path | None
    output: Path
    problem: str | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from .image_processing_med import DEFAULT_MAX_PIXELS
    from .patchmatch import DEFAULT_GUIDANCE_WEIGHT, DEFAULT_PATCH_SIZE, DEFAULT_TEXTURE, TEXTURES

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fill the white area of a mask in a photo with MEDFE (file or folder mode).",
    )
    parser.add_argument("--image", required=True, help="photo, or folder of photos")
    parser.add_argument("--mask", required=True, help="mask (white = hole), or folder of masks with matching names")
    parser.add_argument(
        "--output",
        required=True,
        help=f"output file ({', '.join(OUTPUT_FORMATS)}), or output folder in folder mode "
        "(PNG files); never one of the inputs",
    )
    parser.add_argument("--model", help="model folder or Hub repo id (default: the model shipped with med-hf)")
    parser.add_argument("--hd-strategy", default="auto", choices=["auto", "crop", "resize", "original"])
    parser.add_argument("--hd-crop-margin", type=_at_least(0), default=128, help="context pixels around masked regions")
    parser.add_argument("--mask-dilation", type=_at_least(0), default=0, help="grow the mask by this many pixels")
    parser.add_argument(
        "--mask-blur", type=_at_least(0, float), default=0, help="feather the seam (changes pixels near the mask)"
    )
    parser.add_argument(
        "--texture",
        default=DEFAULT_TEXTURE,
        choices=TEXTURES,
        help="exemplar: re-synthesise the hole from the photo's own patches, steered by the network; "
        "none: the network's smooth fill",
    )
    parser.add_argument(
        "--texture-patch-size", type=_patch_side, default=DEFAULT_PATCH_SIZE, help="patch side of the texture"
    )
    parser.add_argument(
        "--texture-guidance",
        type=_at_least(0, float),
        default=DEFAULT_GUIDANCE_WEIGHT,
        help="how strongly patches and colours follow the network's structure (0 = only their neighbours)",
    )
    parser.add_argument(
        "--seed", type=_at_least(0), default=0, help="seed of the texture stage (same seed, same pixels)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--max-pixels", type=_at_least(1), default=DEFAULT_MAX_PIXELS, help="refuse larger photos")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.mask_blur > args.hd_crop_margin:  # the feather must fit in the context around the hole
        parser.error(f"--mask-blur ({args.mask_blur:g}) cannot exceed --hd-crop-margin ({args.hd_crop_margin})")
    return args


def _at_least(low: int, kind: type = int):
    """An argparse type: a finite number of `kind` >= `low`, so that a wrong value is a usage error up front
    rather than the same failure repeated for every photo."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"must be a number >= {low}, got {text}")
        return value

    return parse


def _patch_side(text: str) -> int:
    """An argparse type for the texture's patch side (the rule is `patchmatch.check_patch_size`'s)."""
    from .patchmatch import MIN_COARSE_PATCH, check_patch_size

    value = _at_least(MIN_COARSE_PATCH)(text)
    try:
        check_patch_size(value)
    except ValueError:  # large enough, so even: a patch needs a centre pixel
        raise argparse.ArgumentTypeError(f"must be odd, got {text}") from None
    return value


class _Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that every partial file is cleaned up on the way out."""


def _terminate(signum, frame) -> None:
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    progress = _Progress()
    previous = (
        signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        # Heavy libraries (torch, transformers) load from here on, where Ctrl-C is answered in one line.
        return _run(parse_args(argv), progress)
    except InputError as error:
        _error(str(error))
        return 1
    except KeyboardInterrupt:
        _error(f"interrupted; {progress.summary()}")
        return EXIT_INTERRUPTED
    except _Terminated:
        _error(f"terminated; {progress.summary()}")
        return EXIT_TERMINATED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, progress: _Progress) -> int:
    image_path, mask_path, output_path = Path(args.image), Path(args.mask), Path(args.output)
    jobs = plan_jobs(image_path, mask_path, output_path)
    progress.total = len(jobs)  # before the model loads, which Ctrl-C may interrupt too
    refuse_overwriting_inputs(jobs, image_path, mask_path, output_path)
    for folder in {job.output.parent for job in jobs if job.problem is None}:
        _check_output_folder(folder)

    pipe = _load_pipeline(args)
    folder_mode = image_path.is_dir()
    started = time.perf_counter()
    failed: list[str] = []

    from tqdm.auto import tqdm

    bar = tqdm(jobs, desc="inpainting", unit="photo", disable=True if args.quiet or not folder_mode else None)
    for job in bar:
        try:
            if job.problem is not None:
                raise InputError(job.problem)
            for note in _inpaint_file(pipe, job, args):
                _warn(f"{job.image}: {note}", bar)
            progress.done += 1
        except Exception as error:  # every failure of one photo is reported and the run goes on
            message = _describe(error, job)
            failed.append(message)
            _error(message, bar)
    elapsed = time.perf_counter() - started
    if folder_mode or failed:
        target = f" -> {output_path}" if progress.done else ""
        print(_printable(f"{progress.done} inpainted, {len(failed)} failed, in {elapsed:.1f} s{target}"))
    elif progress.done:
        print(_printable(f"wrote {jobs[0].output} in {elapsed:.1f} s"))
    return 1 if failed else 0


@dataclass
class _Progress:
    done: int = 0
    total: int = 0

    def summary(self) -> str:
        return f"{self.done} of {self.total} photos done, finished results are kept"


# --- planning --------------------------------------------------------------------------------------------


def plan_jobs(image: Path, mask: Path, output: Path) -> list[Job]:
    """The photos to inpaint: one `Job` per file pair, or per photo of a folder (masks matched by name).

    Photos that cannot be done (no or ambiguous mask, an output shared with another photo) get a `problem` and
    fail on their own; problems with the command as a whole raise `InputError`.
    """
    for path, option in ((image, "--image"), (mask, "--mask")):
        if not path.exists():
            raise InputError(f"{option}: no such file or folder: {path}")
        if not (path.is_file() or path.is_dir()):  # a pipe or device would be read forever, or block
            raise InputError(f"{option}: {path} is not a file or folder")
    if image.is_file():
        if mask.is_dir():
            raise InputError(f"--image is a file but --mask {mask} is a folder")
        if output.is_dir():
            output = output / f"{image.stem}.png"
        _check_output_format(output)
        return [Job(image, mask, output)]
    if not mask.is_dir():
        raise InputError(f"--image is a folder, so --mask must be a folder too (got the file {mask})")
    if output.exists() and not output.is_dir():
        raise InputError(f"--image is a folder, so --output must be a folder (got the file {output})")
    photos = image_files(image)
    masks = image_files(mask)
    if _same_path(image, mask):
        # One folder for both: "a_mask.png" is the mask of "a.jpg", not a photo of its own.
        masks = [path for path in photos if path.stem.endswith(MASK_SUFFIX)]
        photos = [path for path in photos if not path.stem.endswith(MASK_SUFFIX)]
    if not photos:
        raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {image}")
    jobs = [_match_mask(photo, masks, mask, output / f"{photo.stem}.png") for photo in photos]
    _mark_shared_outputs(jobs)
    return jobs


def _match_mask(photo: Path, masks: list[Path], mask_folder: Path, output: Path) -> Job:
    candidates = [path for path in masks if path.stem in (photo.stem, f"{photo.stem}{MASK_SUFFIX}")]
    if not candidates:
        return Job(photo, None, output, f"{photo}: no mask with a matching name in {mask_folder}")
    if len(candidates) > 1:
        names = " and ".join(path.name for path in candidates)
        return Job(photo, None, output, f"{photo}: ambiguous mask, both {names} in {mask_folder} match")
    return Job(photo, candidates[0], output)


def _mark_shared_outputs(jobs: list[Job]) -> None:
    """Photos that would write the same output file (a.jpg and a.png -> a.png) all fail: none replaces another."""
    by_output: dict[str, list[Job]] = {}
    for job in jobs:
        # Compared ignoring case: A.png and a.png are one file on macOS, Windows and memory cards.
        by_output.setdefault(os.path.abspath(job.output).casefold(), []).append(job)
    for sharing in by_output.values():
        if len(sharing) > 1:
            names = " and ".join(job.image.name for job in sharing)
            for job in sharing:
                if job.problem is None:
                    job.problem = f"{job.image}: {names} would both be written to {job.output}; rename one of them"


def refuse_overwriting_inputs(jobs: list[Job], image: Path, mask: Path, output: Path) -> None:
    """Raise `InputError` if any output would replace an input file, however the paths are spelled.

    Compares files, not spellings: relative and absolute paths, `..`, symbolic and hard links and, on file
    systems that ignore case, letter case all resolve to the same file. An output folder that is the photo or
    mask folder is refused outright.
    """
    if image.is_dir() and output.is_dir():
        for folder, what in ((image, "photo"), (mask, "mask")):
            if _same_path(output, folder):
                raise InputError(
                    f"--output {output} is the {what} folder: results would replace the {what}s there; "
                    "choose another folder"
                )
    inputs = [path for job in jobs for path in (job.image, job.mask) if path is not None]
    for job in jobs:
        for source in inputs:
            if _same_path(job.output, source):
                raise InputError(
                    f"--output {job.output} is the input {source}: the result would replace it; "
                    "choose another output path"
                )


def _same_path(first: Path, second: Path) -> bool:
    """Whether two paths name the same file or folder (both must exist to be the same)."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def _check_output_format(output: Path) -> None:
    try:
        output_format(output)
    except OutputFormatError as error:
        raise InputError(f"--output: {error}") from None


def _check_output_folder(folder: Path) -> None:
    """Make sure results can be written into `folder`, before any work is done.

    A missing folder is only created with the first result (`_inpaint_file`), so that a run that writes nothing
    (a model that cannot be loaded, every photo failing) leaves nothing behind either.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot create the output folder {folder}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "write into" if existing == folder else f"create (in {existing})"
        raise InputError(f"cannot {what} the output folder {folder}: permission denied")


# --- running ---------------------------------------------------------------------------------------------


def _load_pipeline(args: argparse.Namespace):
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from .pipeline_med import MEDInpaintPipeline

    try:
        with _no_loading_bars(), warnings.catch_warnings():
            # torch's weights_only unpickler warns about pickle protocols before refusing a file; the refusal
            # itself is the one line the user sees.
            warnings.simplefilter("ignore")
            pipe = MEDInpaintPipeline.from_pretrained(args.model).to(args.device)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # any unreadable model is one line, not a traceback
        raise InputError(f"cannot load the model {args.model or '(default)'}: {_first_line(error)}") from None
    pipe.set_progress_bar_config(disable=True if args.quiet or Path(args.image).is_dir() else None)
    return pipe


@contextmanager
def _no_loading_bars() -> Iterator[None]:
    """Hide transformers' "Loading weights" and diffusers' "Loading pipeline components" bars.

    They would land on stderr before every run, so an error would no longer be the one line there. Hub download
    bars stay as they were: a first download can take a while.
    """
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    hub_bars = not are_progress_bars_disabled()
    enabled = [lib for lib in (transformers_logging, diffusers_logging) if lib.is_progress_bar_enabled()]
    for lib in enabled:
        lib.disable_progress_bar()
    if hub_bars:  # transformers' switch also turns the Hub's off
        enable_progress_bars()
    try:
        yield
    finally:
        for lib in enabled:
            lib.enable_progress_bar()


def _inpaint_file(pipe, job: Job, args: argparse.Namespace) -> list[str]:
    """Inpaint one photo and write its result; returns notes on what changed beyond the hole."""
    import torch

    from .image_processing_med import load_image, read_icc_profile

    image = load_image(job.image, max_pixels=args.max_pixels)
    mask = load_image(job.mask, max_pixels=args.max_pixels)
    image_size, mask_size = _size(image), _size(mask)
    if image_size != mask_size:
        raise InputError(
            f"{job.image}: mask {job.mask} is {mask_size[0]}x{mask_size[1]} but the image is "
            f"{image_size[0]}x{image_size[1]}"
        )
    notes = reading_notes(image)
    output = pipe(
        image=image,
        mask_image=mask,
        mask_dilation=args.mask_dilation,
        mask_blur=args.mask_blur,
        hd_strategy=args.hd_strategy,
        hd_strategy_crop_margin=args.hd_crop_margin,
        texture=args.texture,
        texture_patch_size=args.texture_patch_size,
        texture_guidance=args.texture_guidance,
        generator=torch.Generator().manual_seed(args.seed),
        max_pixels=args.max_pixels,
        output_type="input",
    )
    if output.filled_pixels[0] == 0:
        notes.append(f"the mask {job.mask} has no white pixel (> 127): nothing to fill, the result is the photo")
    job.output.parent.mkdir(parents=True, exist_ok=True)
    # Arrays (16-bit colour) carry no metadata: their profile is read from the file's header.
    icc_profile = read_icc_profile(job.image) if isinstance(image, np.ndarray) else image.info.get("icc_profile")
    return notes + write_result(output.images[0], job.output, icc_profile=icc_profile)


def _size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """(width, height) of a PIL image or an (H, W, ...) array."""
    return (image.shape[1], image.shape[0]) if isinstance(image, np.ndarray) else image.size


def _describe(error: Exception, job: Job) -> str:
    """One line for a failed photo, naming the file."""
    import torch

    from .image_processing_med import ImageLoadError, ImageTooLargeError, UnsupportedImageError

    if isinstance(error, ImageTooLargeError):
        return error.describe("--max-pixels")
    if isinstance(error, MemoryError | torch.OutOfMemoryError):
        # One photo too large for this machine must not end a folder run (and MemoryError has no text).
        message = f"out of memory ({type(error).__name__}); lower --max-pixels or use --hd-strategy crop"
    elif isinstance(error, InputError | ImageLoadError | UnsupportedImageError):
        message = str(error)  # one line by construction, even where a file name holds a newline
    elif isinstance(error, ValueError | OSError):
        message = _first_line(error)
    else:
        message = f"{type(error).__name__}: {_first_line(error)}"
    return message if str(job.image) in message else f"{job.image}: {message}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _error(message: str, bar=None) -> None:
    _write(f"{PROG}: error: {message}", bar)


def _warn(message: str, bar=None) -> None:
    _write(f"{PROG}: warning: {message}", bar)


def _write(line: str, bar=None) -> None:
    line = _printable(line)
    if bar is not None:
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


def _printable(line: str) -> str:
    """`line` as one line that any terminal shows and any stream accepts.

    File names may hold a newline (which would split a message) or bytes that are not UTF-8 (which Python keeps
    as lone surrogates, and printing those to a strict UTF-8 stream fails after the work is done): both are
    shown escaped, like `\\n` and `\\xff`.
    """
    line = line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in line)


if __name__ == "__main__":
    sys.exit(main())
