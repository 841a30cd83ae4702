"""Image files for the command-line tools: which files count as images, and writing results faithfully.

The pipeline works on PIL images and arrays in any mode; a file format holds only some of them. This module is
the one place that decides what each output format can hold: a result is written unchanged where the format
allows, and otherwise converted in the one sensible way, with a note saying what changed, so that a tool can
tell its user. Reading goes through `image_processing_med.load_image` (EXIF orientation, 16-bit colour,
animations refused).
"""

from __future__ import annotations

import os
import struct
import zlib
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
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
            (H, W, 2, 3 or 4) for 16-bit grey + alpha or colour (`output_type="input"`).
        path: the output file (its folder must exist).
        icc_profile: the input's colour profile, kept where the format can hold one.

    Returns:
        notes on every change the format forced (empty when the file holds the result exactly as it is).
    """
    file_format = output_format(path)
    notes: list[str] = []
    if isinstance(result, np.ndarray):
        if file_format in ("PNG", "TIFF"):
            return _write_deep(result, path, file_format, icc_profile)
        kind = "grey + alpha" if result.shape[-1] == 2 else "colour"
        notes.append(f"{file_format} holds 8 bits per channel: the 16-bit {kind} result is saved as 8-bit")
        result = Image.fromarray(np.rint(result / 257.0).astype(np.uint8))
    image, conversion_notes = _fit_mode(result, file_format)
    notes += conversion_notes
    options: dict = {}
    if icc_profile:
        dropped = _profile_problem(icc_profile, image.mode, file_format)
        if dropped:
            notes.append(dropped)
        else:
            options["icc_profile"] = icc_profile
    if file_format == "JPEG":
        options.update(quality=95, subsampling=0)
    elif file_format == "WEBP":
        # `exact` keeps the colour of fully transparent pixels, which lossless WebP would otherwise rewrite.
        options.update(lossless=True, exact=True)
    with atomic_file(path) as handle:
        image.save(handle, format=file_format, **options)
    return notes


def _profile_problem(icc_profile: bytes, mode: str, file_format: str) -> str | None:
    """Why `icc_profile` cannot go with a `mode` image in `file_format` (a note), or None when it can."""
    if file_format == "BMP":
        return "BMP cannot hold the colour profile (ICC): it is dropped"
    # A profile describes one colour space (header bytes 16-20): a CMYK photo's profile on the RGB result, or an
    # RGB profile on grey pixels, would make viewers misread every colour.
    space = icc_profile[16:20].decode("latin-1").strip() or "unknown"
    result_space = "GRAY" if Image.getmodebase(mode) == "L" else "RGB"
    if space != result_space:
        return f"the colour profile (ICC) describes {space} colours, not the {result_space} result: it is dropped"
    return None


def _write_deep(pixels: np.ndarray, path: str | os.PathLike, file_format: str, icc_profile: bytes | None) -> list[str]:
    """Write a 16-bit grey + alpha or colour array as PNG or TIFF; returns notes like `write_result`."""
    notes = []
    grey = pixels.shape[-1] == 2
    if file_format == "PNG":
        encoded = _encode_grey_alpha_png(pixels) if grey else _encode_with_opencv(pixels, ".png")
        if icc_profile:
            dropped = _profile_problem(icc_profile, "LA" if grey else "RGB", file_format)
            if dropped:
                notes.append(dropped)
            else:
                encoded = _with_icc_profile(encoded, icc_profile)
    else:
        if grey:  # OpenCV writes no grey + alpha TIFF, and PIL no 16-bit one
            notes.append("TIFF: the 16-bit grey + alpha result is saved as RGBA (grey in all three colour channels)")
            pixels = pixels[..., [0, 0, 0, 1]]
        encoded = _encode_with_opencv(pixels, ".tiff")
        if icc_profile:
            notes.append("the colour profile (ICC) is not kept in 16-bit TIFF output; use .png to keep it")
    write_bytes(path, encoded)
    return notes


def _encode_with_opencv(pixels: np.ndarray, extension: str) -> bytes:
    import cv2

    order = [2, 1, 0, 3][: pixels.shape[-1]]  # RGB(A) -> OpenCV's BGR(A)
    ok, encoded = cv2.imencode(extension, np.ascontiguousarray(pixels[..., order]))
    if not ok:
        raise OSError(f"OpenCV could not encode a 16-bit {extension} image")
    return encoded.tobytes()


def _encode_grey_alpha_png(pixels: np.ndarray) -> bytes:
    """A 16-bit grey + alpha PNG of `pixels` (H, W, 2): OpenCV writes only grey, colour and colour + alpha."""
    height, width, _ = pixels.shape
    rows = pixels.astype(">u2").reshape(height, -1).view(np.uint8)
    scanlines = np.hstack([np.zeros((height, 1), np.uint8), rows])  # each row starts with filter type 0 (none)
    header = struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0)  # 16 bits, colour type 4: grey + alpha
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(scanlines.tobytes()))
        + _png_chunk(b"IEND", b"")
    )


def _with_icc_profile(png: bytes, icc_profile: bytes) -> bytes:
    """`png` with an iCCP chunk holding `icc_profile`, right after the header chunk (which is always 25 bytes)."""
    end_of_header = len(_PNG_SIGNATURE) + 25
    chunk = _png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile))  # name, NUL, method 0 (zlib)
    return png[:end_of_header] + chunk + png[end_of_header:]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _fit_mode(image: Image.Image, file_format: str) -> tuple[Image.Image, list[str]]:
    """`image` in a mode `file_format` stores, and notes on what the conversion lost."""
    native = _NATIVE_MODES[file_format]
    if image.mode in native:
        return image, []
    notes = []
    if image.mode in _HIGH_DEPTH:
        if file_format in ("PNG", "TIFF"):  # "F" in PNG, or a 16-bit byte order the format has no mode for
            values = np.asarray(image)
            if image.mode == "F":
                notes.append("PNG holds no floating-point pixels: the result is saved as 16-bit")
                values = np.rint(values * 65535)
            return Image.fromarray(values.clip(0, 65535).astype(np.uint16)), notes
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
