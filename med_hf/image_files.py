"""Image files for the command-line tools: which files count as images, and writing results faithfully.

The pipeline works on PIL images and arrays in any mode; a file format holds only some of them. This module is
the one place that decides what each output format can hold: a result is written unchanged where the format
allows, and otherwise converted in the one sensible way, with a note saying what changed, so that a tool can
tell its user. Reading goes through `image_processing_med.load_image` (EXIF orientation, 16-bit colour,
animations refused).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic_files import atomic_file, write_bytes

# Files the tools treat as images, in folders and as inputs.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
# What results can be written as: lossless or near-lossless still-image formats.
OUTPUT_FORMATS = {
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
}
# Modes each format stores as they are; anything else is converted by `_fit_mode`.
_NATIVE_MODES = {
    "PNG": {"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16", "I;16B"},
    "TIFF": {"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16", "I;16B", "F"},
    "WEBP": {"RGB", "RGBA"},
    "BMP": {"1", "L", "P", "RGB", "RGBA"},
    "JPEG": {"L", "RGB"},
}
_HIGH_DEPTH = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Input modes that the pipeline converts to RGB on the way in, changing the colour representation.
_COLOR_CONVERTED_MODES = {"CMYK", "LAB", "HSV", "YCbCr"}


class OutputFormatError(ValueError):
    """An output path whose extension names no format results can be written in."""


def is_image_file(path: Path) -> bool:
    """Whether `path` is a file with one of `IMAGE_EXTENSIONS` (any case)."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def output_format(path: str | os.PathLike) -> str:
    """The PIL format name for writing to `path`, from its extension.

    Raises:
        `OutputFormatError`: an extension that is missing or not one of `OUTPUT_FORMATS`.
    """
    extension = Path(path).suffix.lower()
    if extension not in OUTPUT_FORMATS:
        what = f"{extension!r} files" if extension else "a name without an extension"
        raise OutputFormatError(
            f"cannot write results as {what} ({os.fspath(path)}); use one of {', '.join(OUTPUT_FORMATS)}"
        )
    return OUTPUT_FORMATS[extension]


def reading_notes(image: Image.Image | np.ndarray) -> list[str]:
    """What the pipeline will change about `image` as read by `load_image`, beyond filling the hole."""
    if isinstance(image, Image.Image) and image.mode in _COLOR_CONVERTED_MODES:
        return [f"{image.mode} image converted to RGB"]
    return []


def write_result(
    result: Image.Image | np.ndarray, path: str | os.PathLike, icc_profile: bytes | None = None
) -> list[str]:
    """Write a pipeline result to `path` atomically, in the format its extension names.

    Args:
        result: the pipeline's output for a file read with `load_image`: a PIL image, or a uint16 array
            (H, W, 3 or 4) for 16-bit colour (`output_type="input"`).
        path: the output file (its folder must exist).
        icc_profile: the input's colour profile, kept where the format can hold one.

    Returns:
        notes on every change the format forced (empty when the file holds the result exactly as it is).
    """
    file_format = output_format(path)
    notes: list[str] = []
    if isinstance(result, np.ndarray):
        if file_format in ("PNG", "TIFF"):
            if icc_profile:
                notes.append("the colour profile (ICC) is not kept in 16-bit colour output")
            write_bytes(path, _encode_deep_color(result, file_format))
            return notes
        notes.append(f"{file_format} holds 8 bits per channel: the 16-bit colour result is saved as 8-bit")
        result = Image.fromarray(np.rint(result / 257.0).astype(np.uint8))
    image, conversion_notes = _fit_mode(result, file_format)
    notes += conversion_notes
    options: dict = {}
    if icc_profile:
        if file_format == "BMP":
            notes.append("BMP cannot hold the colour profile (ICC): it is dropped")
        else:
            options["icc_profile"] = icc_profile
    if file_format == "JPEG":
        options.update(quality=95, subsampling=0)
    elif file_format == "WEBP":
        options["lossless"] = True
    with atomic_file(path) as handle:
        image.save(handle, format=file_format, **options)
    return notes


def _encode_deep_color(pixels: np.ndarray, file_format: str) -> bytes:
    import cv2

    order = [2, 1, 0, 3][: pixels.shape[-1]]  # RGB(A) -> OpenCV's BGR(A)
    ok, encoded = cv2.imencode(".png" if file_format == "PNG" else ".tiff", np.ascontiguousarray(pixels[..., order]))
    if not ok:
        raise OSError(f"OpenCV could not encode a 16-bit {file_format} image")
    return encoded.tobytes()


def _fit_mode(image: Image.Image, file_format: str) -> tuple[Image.Image, list[str]]:
    """`image` in a mode `file_format` stores, and notes on what the conversion lost."""
    native = _NATIVE_MODES[file_format]
    if image.mode in native:
        return image, []
    notes = []
    if image.mode in _HIGH_DEPTH:
        if file_format in ("PNG", "TIFF"):  # only "F" gets here: PNG has no floating-point pixels
            notes.append("PNG holds no floating-point pixels: the result is saved as 16-bit")
            return Image.fromarray(np.rint(np.asarray(image) * 65535).clip(0, 65535).astype(np.uint16)), notes
        notes.append(f"{file_format} holds 8 bits per channel: the {_depth_name(image)} result is saved as 8-bit")
        image = Image.fromarray(_to_8bit(image))
        if image.mode in native:
            return image, notes
    if "A" in image.getbands():
        if "RGBA" in native:
            return image.convert("RGBA"), notes
        notes.append(f"{file_format} has no alpha channel: the transparency is dropped (use .png to keep it)")
        image = image.convert("L" if image.mode == "LA" else "RGB")
        return image, notes
    return image.convert("RGB"), notes


def _depth_name(image: Image.Image) -> str:
    return "floating-point" if image.mode == "F" else "16-bit"


def _to_8bit(image: Image.Image) -> np.ndarray:
    """A greyscale high-depth image (16-bit, 32-bit "I" read as 16-bit data, or float in [0, 1]) as uint8."""
    values = np.asarray(image).astype(np.float64)
    scale = 255.0 if image.mode == "F" else 255.0 / 65535.0
    return np.rint(values * scale).clip(0, 255).astype(np.uint8)


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside `folder` (see `IMAGE_EXTENSIONS`), sorted by name."""
    return sorted(path for path in folder.iterdir() if is_image_file(path))


__all__ = [
    "IMAGE_EXTENSIONS",
    "OUTPUT_FORMATS",
    "OutputFormatError",
    "image_files",
    "is_image_file",
    "output_format",
    "reading_notes",
    "write_result",
]
