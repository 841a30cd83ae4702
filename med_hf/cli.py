"""`med-inpaint`: inpaint one photo or whole folders from the command line.

    med-inpaint --image photo.jpg --mask mask.png --output result.png
    med-inpaint --image photos/ --mask masks/ --output results/      # masks matched by file name

Masks: white = area to fill. Every pixel outside the (dilated) mask is written back unchanged; choose a
lossless output format (PNG, the default for folders) to keep it so on disk.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .image_processing_med import DEFAULT_MAX_PIXELS, ImageLoadError, ImageTooLargeError, load_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class InputError(Exception):
    """A problem with one input pair, reported in one line without a traceback."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="med-inpaint",
        description="Fill the white area of a mask in a photo with MEDFE (file or folder mode).",
    )
    parser.add_argument("--image", required=True, help="photo, or folder of photos")
    parser.add_argument("--mask", required=True, help="mask (white = hole), or folder of masks with matching names")
    parser.add_argument("--output", required=True, help="output file, or output folder in folder mode")
    parser.add_argument("--model", help="model folder or Hub repo id (default: the model shipped with med-hf)")
    parser.add_argument("--hd-strategy", default="auto", choices=["auto", "crop", "resize", "original"])
    parser.add_argument("--hd-crop-margin", type=int, default=128, help="context pixels around masked regions")
    parser.add_argument("--mask-dilation", type=int, default=0, help="grow the mask by this many pixels")
    parser.add_argument("--mask-blur", type=float, default=0, help="feather the seam (changes pixels near the mask)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger photos")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    image_path, mask_path, output_path = Path(args.image), Path(args.mask), Path(args.output)
    try:
        jobs = list(_jobs(image_path, mask_path, output_path))
    except InputError as error:
        print(f"med-inpaint: error: {error}", file=sys.stderr)
        return 1

    try:
        pipe = _load_pipeline(args)
    except (OSError, ValueError) as error:
        print(f"med-inpaint: error: cannot load the model: {error}", file=sys.stderr)
        return 1

    import torch
    from tqdm.auto import tqdm

    out_of_memory = (MemoryError, torch.cuda.OutOfMemoryError)  # the latter is torch.OutOfMemoryError in torch 2.5+

    started = time.perf_counter()
    done, failed = 0, []
    folder_mode = image_path.is_dir()
    for image_file, mask_file, output_file in tqdm(jobs, desc="inpainting", disable=args.quiet or not folder_mode):
        try:
            if mask_file is None:
                raise InputError(f"{image_file}: no mask with a matching name in {mask_path}")
            _inpaint_file(pipe, image_file, mask_file, output_file, args)
            done += 1
        except (InputError, ImageLoadError, ImageTooLargeError, ValueError, OSError, *out_of_memory) as error:
            if isinstance(error, out_of_memory):
                # One photo too large for this machine must not end a folder run (and MemoryError has no text).
                error = f"out of memory ({type(error).__name__}); lower --max-pixels or use --hd-strategy crop"
            message = str(error) if str(image_file) in str(error) else f"{image_file}: {error}"
            failed.append(message)
            tqdm.write(f"med-inpaint: error: {message}", file=sys.stderr)
    elapsed = time.perf_counter() - started
    if folder_mode or failed:
        print(f"{done} inpainted, {len(failed)} failed, in {elapsed:.1f} s" + (f" -> {output_path}" if done else ""))
    elif done:
        print(f"wrote {output_path} in {elapsed:.1f} s")
    return 1 if failed else 0


def _jobs(image: Path, mask: Path, output: Path) -> Iterator[tuple[Path, Path | None, Path]]:
    """(image, mask or None when unmatched, output) for a file pair or for every photo of a folder."""
    if not image.exists():
        raise InputError(f"no such file or folder: {image}")
    if not mask.exists():
        raise InputError(f"no such file or folder: {mask}")
    if image.is_file():
        if mask.is_dir():
            raise InputError(f"--image is a file but --mask {mask} is a folder")
        if output.is_dir():
            output = output / f"{image.stem}.png"
        yield image, mask, output
        return
    if not mask.is_dir():
        raise InputError(f"--image is a folder, so --mask must be a folder too (got the file {mask})")
    if output.exists() and not output.is_dir():
        raise InputError(f"--image is a folder, so --output must be a folder (got the file {output})")
    photos = sorted(p for p in image.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not photos:
        raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {image}")
    masks = {p.stem: p for p in mask.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}
    for photo in photos:
        matched = masks.get(photo.stem) or masks.get(f"{photo.stem}_mask")
        yield photo, matched, output / f"{photo.stem}.png"


def _load_pipeline(args: argparse.Namespace):
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from .pipeline_med import MEDInpaintPipeline

    with _no_loading_bars():
        pipe = MEDInpaintPipeline.from_pretrained(args.model).to(args.device)
    pipe.image_processor.max_pixels = args.max_pixels
    pipe.set_progress_bar_config(disable=True)
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


def _inpaint_file(pipe, image_file: Path, mask_file: Path, output_file: Path, args: argparse.Namespace) -> None:
    image = load_image(image_file, max_pixels=args.max_pixels)
    mask = load_image(mask_file, max_pixels=args.max_pixels)
    if image.size != mask.size:
        raise InputError(
            f"{image_file}: mask {mask_file} is {mask.size[0]}x{mask.size[1]} but the image is "
            f"{image.size[0]}x{image.size[1]}"
        )
    result = pipe(
        image=image,
        mask_image=mask,
        mask_dilation=args.mask_dilation,
        mask_blur=args.mask_blur,
        hd_strategy=args.hd_strategy,
        hd_strategy_crop_margin=args.hd_crop_margin,
    ).images[0]
    save_atomically(result, output_file, icc_profile=image.info.get("icc_profile"))


def save_atomically(image, path: Path, icc_profile: bytes | None = None) -> None:
    """Write `image` to `path` completely or not at all: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"icc_profile": icc_profile} if icc_profile else {}
    if path.suffix.lower() in (".jpg", ".jpeg"):
        options["quality"] = 95
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            image.save(handle, format=_format_for(path), **options)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _format_for(path: Path) -> str:
    from PIL import Image

    extension = path.suffix.lower()
    formats = Image.registered_extensions()
    if extension not in formats:
        raise InputError(f"cannot tell the image format of the output {path}; use e.g. .png")
    return formats[extension]


if __name__ == "__main__":
    sys.exit(main())
