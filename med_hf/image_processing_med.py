"""Pre- and post-processing for MEDFE inpainting of real photos of any size and format.

The network sees RGB in [0, 1] at a small working size whose sides are multiples of 64. Users bring photos of
any size, mode and bit depth and expect them back with exactly the input's size and every pixel outside the
(dilated) mask bit-identical. This module bridges the two:

- :func:`normalize_image` turns a PIL / numpy / torch image into a :class:`NormalizedImage`: the float RGB the
  network needs plus the untouched input pixels needed to rebuild the output in the input's own format.
- :func:`prepare_mask` turns a mask of any mode or dtype into a boolean hole map; :func:`dilate_mask`
  grows it.
- :func:`erase_holes` blanks what the mask hides before anything else reads the photo;
  :func:`mask_crop_boxes`, :func:`network_size`, :func:`resize_image` and :func:`resize_mask` cut large photos
  into crops around the holes and scale them to and from the network's size, a resized pixel counting as known
  only if every pixel it is made from is known.
- :func:`composite` pastes the prediction into the original pixels and :func:`convert_output` returns the
  result as PIL, numpy or torch.
- :func:`check_image_size` and :func:`load_image` guard against images too large to process and against
  unreadable files.

:class:`MEDImageProcessor` bundles the settings for a pipeline. This file depends only on numpy, PIL, scipy,
torch (OpenCV for 16-bit colour files) and the harmonic fill of ``med_hf.harmonic``: it is also shipped flat
next to the weights as remote code.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from .harmonic import harmonic_fill

ImageInput = Image.Image | np.ndarray | torch.Tensor | str | os.PathLike
OutputType = Literal["pil", "np", "pt", "input"]

DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_WORKING_SIZE = 256
DEFAULT_CROP_MARGIN = 128
SIZE_MULTIPLE = 64
# Grey levels above this (8-bit scale) are holes, so 128 and up is a hole and 127 is not.
MASK_THRESHOLD = 127

_EXIF_ORIENTATION = 0x0112
# `load_image` lifts PIL's decompression-bomb limit (a process-wide setting) while it opens a file, its own
# `max_pixels` check taking its place.
_PIL_LIMIT_LOCK = threading.Lock()
# ITU-R 601-2 luma, the weights of PIL's convert("L").
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
# Modes whose pixels are kept as they are, paired with the numpy dtype PIL uses for their raw bytes.
_HIGH_DEPTH_MODES = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "I": "=i4", "F": "=f4"}
_KEPT_MODES = {"L", "LA", "RGB", "RGBA", *_HIGH_DEPTH_MODES}
# Modes the network cannot use directly are converted once, on input; any other mode becomes RGB.
_CONVERTED_MODES = {"1": "L", "La": "LA", "RGBa": "RGBA", "PA": "RGBA"}
_MODES_BY_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
# Half-width of PIL's resampling filters in target pixels (libImaging/Resample.c), scaled by the shrink factor.
_FILTER_SUPPORT = {
    Image.Resampling.NEAREST: 0.5,
    Image.Resampling.BOX: 0.5,
    Image.Resampling.BILINEAR: 1.0,
    Image.Resampling.HAMMING: 1.0,
    Image.Resampling.BICUBIC: 2.0,
    Image.Resampling.LANCZOS: 3.0,
}
# A Gaussian is close enough to zero three sigmas out that the feather can stop there.
_FEATHER_SIGMAS = 3.0
# Worst case (16-bit RGBA) peak bytes per pixel: input and output pixels (2 x 8), float32 working RGB (12),
# full-size float32 prediction (12), masks (2) and the float64 temporaries of a feathered composite (48).
_BYTES_PER_PIXEL = 90


class ImageTooLargeError(ValueError):
    """An image has more pixels than the configured limit.

    Attributes:
        width, height: the image's size.
        max_pixels: the limit it exceeds.
        source: the file it was read from, if any.
    """

    def __init__(self, width: int, height: int, max_pixels: int, source: str | None = None):
        self.width, self.height, self.max_pixels, self.source = width, height, max_pixels, source
        super().__init__(self.describe("max_pixels"))

    def describe(self, option: str) -> str:
        """The message, telling how to raise the limit with `option` (e.g. a CLI's `--max-pixels`)."""
        prefix = f"{self.source}: " if self.source else ""
        return (
            f"{prefix}image of {self.width}x{self.height} pixels ({self.width * self.height / 1e6:.1f} MP) exceeds "
            f"the limit of {self.max_pixels / 1e6:.1f} MP; processing it would need about "
            f"{estimate_memory_bytes(self.width, self.height) / 2**30:.1f} GiB of memory. Downscale it first, or "
            f"raise {option} if this machine has the memory."
        )


class ImageLoadError(ValueError):
    """A file is not an image, or is corrupt or truncated so that it cannot be decoded."""


class UnsupportedImageError(ValueError):
    """An image that cannot be processed faithfully, such as an animation (only still images are inpainted)."""


@dataclass(frozen=True)
class NormalizedImage:
    """An input image in the network's working representation plus what is needed to give it back.

    Attributes:
        rgb (`np.ndarray`):
            float32 array of shape (H, W, 3) in [0, 1], what the network sees. Values are on the same scale
            an 8-bit image has (value / 255 for 8-bit, value / 65535 for 16-bit input, not quantised);
            greyscale is repeated over the three channels and alpha is left out.
        pixels (`np.ndarray`):
            The input's own pixels, shape (H, W, C), in its own dtype: uint8, uint16 (either byte order),
            int32 (PIL mode "I", read as 16-bit data) or float in [0, 1]. C is 1 (grey), 2 (grey + alpha),
            3 (RGB) or 4 (RGBA); alpha is always last. Never modified.
        mode (`str`):
            PIL mode of the `"pil"` output: the input's own mode for L, LA, RGB, RGBA, I;16 (any byte
            order), I and F; L for 1-bit, RGB or RGBA for palette and other colour modes; for arrays the mode
            matching the channels (I;16 for 16-bit greyscale, 8-bit otherwise).
        input_type (`str`):
            `"pil"`, `"np"` or `"pt"`: what `output_type="input"` gives back.
        squeezed (`bool`):
            Whether the input array had no channel axis, shape (H, W); `output_type="input"` drops it again.
    """

    rgb: np.ndarray
    pixels: np.ndarray
    mode: str
    input_type: Literal["pil", "np", "pt"]
    squeezed: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the convention of PIL's `Image.size`."""
        return self.pixels.shape[1], self.pixels.shape[0]

    @property
    def is_grayscale(self) -> bool:
        return self.pixels.shape[-1] in (1, 2)

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[-1] in (2, 4)


class CropBox(NamedTuple):
    """A half-open pixel box (left, top, right, bottom), the convention of PIL's `Image.crop`."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def slices(self) -> tuple[slice, slice]:
        """(rows, columns) slices that cut this box out of an (H, W, ...) array."""
        return slice(self.top, self.bottom), slice(self.left, self.right)


# --- memory guard and file loading ---------------------------------------------------------------------


def estimate_memory_bytes(width: int, height: int) -> int:
    """Worst-case peak memory in bytes that processing a `width` x `height` image here needs."""
    return width * height * _BYTES_PER_PIXEL


def check_image_size(
    width: int, height: int, max_pixels: int | None = DEFAULT_MAX_PIXELS, source: str | None = None
) -> None:
    """Raise `ImageTooLargeError` if a `width` x `height` image has more than `max_pixels` pixels.

    `max_pixels=None` disables the check; `source` names the file in the message.
    """
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(width, height, max_pixels, source)


def load_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image | np.ndarray:
    """Open an image file, decode it fully and apply its EXIF orientation.

    The size is checked against `max_pixels` from the header, before any pixel is decoded; that check replaces
    PIL's own decompression-bomb limit, so `max_pixels` alone decides. Decoding happens here so that a corrupt
    or truncated file fails now, with its name, rather than later inside the pipeline.

    Returns:
        `PIL.Image.Image` in the file's own mode, upright, detached from the file; for files with 16 bits per
        channel and several channels (RGB, RGBA, grey + alpha, which PIL would cut to 8 bits) a uint16 array
        (H, W, 3, 4 or 2) instead, decoded with OpenCV. `read_icc_profile` gives such a file's colour profile.

    Raises:
        `FileNotFoundError`: no such file.
        `ImageLoadError`: the file is not an image that can be read, or cannot be decoded.
        `ImageTooLargeError`: the image exceeds `max_pixels`.
        `UnsupportedImageError`: an animated or multi-page image (only still images are inpainted).
    """
    name = os.fspath(path)
    with _open(path) as image:
        check_image_size(*image.size, max_pixels=max_pixels, source=name)
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            raise UnsupportedImageError(
                f"{name} is an animated or multi-page image ({frames} frames); only still images can be "
                "inpainted: save the frame to fill as an image of its own"
            )
        if _is_deep_color(image):
            pixels = _read_deep_color(name, grey_alpha=_rawmode(image).startswith("LA"))
            return _orient(pixels, image.getexif().get(_EXIF_ORIENTATION, 1))
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageLoadError(f"Could not decode {name} (corrupt or truncated?): {err}") from err
        # exif_transpose always returns a new image, which survives the file being closed.
        return ImageOps.exif_transpose(image)


def read_icc_profile(path: str | os.PathLike) -> bytes | None:
    """The colour profile (ICC) in an image file's header, if any: what `load_image`'s arrays do not carry."""
    with _open(path) as image:
        return image.info.get("icc_profile")


def _open(path: str | os.PathLike) -> Image.Image:
    """`Image.open` without PIL's decompression-bomb limit (`check_image_size` takes its place), TIFFs via libtiff.

    Pillow's own TIFF reader scrambles uncompressed files whose orientation tag turns them by 90 degrees
    (tags 5-8); its libtiff reader, used for every compressed TIFF anyway, turns them correctly.
    """
    from PIL import TiffImagePlugin, features

    try:
        with _PIL_LIMIT_LOCK:
            saved = Image.MAX_IMAGE_PIXELS, TiffImagePlugin.READ_LIBTIFF
            Image.MAX_IMAGE_PIXELS = None
            TiffImagePlugin.READ_LIBTIFF = features.check_codec("libtiff")
            try:
                return Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS, TiffImagePlugin.READ_LIBTIFF = saved
    except UnidentifiedImageError as err:
        raise ImageLoadError(f"{os.fspath(path)} is not an image file PIL can read.") from err


def _rawmode(image: Image.Image) -> str:
    """How the file lays out its pixels' bytes (PIL's raw mode of the first tile, e.g. "RGB;16B"), or ""."""
    if not image.tile:
        return ""
    args = image.tile[0].args
    rawmode = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else "")
    return rawmode if isinstance(rawmode, str) else ""


def _is_deep_color(image: Image.Image) -> bool:
    """Whether the file holds 16 bits per channel in several channels, which PIL decodes to 8-bit RGB / RGBA.

    (PIL opens 16-bit grey + alpha as RGBA too, with a raw mode "LA;16...".)
    """
    return image.mode in ("RGB", "RGBA") and ";16" in _rawmode(image)


def _read_deep_color(name: str, grey_alpha: bool = False) -> np.ndarray:
    """A 16-bit file's pixels as stored (not turned upright): uint16 (H, W, 3 or 4), or (H, W, 2) for grey + alpha."""
    try:
        import cv2
    except ImportError as err:
        raise UnsupportedImageError(
            f"{name} has 16 bits per colour channel; reading it without losing them needs OpenCV "
            "(pip install opencv-python-headless)"
        ) from err
    from cv2.utils import logging as cv2_logging

    data = _without_tiff_orientation(np.fromfile(name, dtype=np.uint8))
    # OpenCV prints libtiff's warnings about harmless quirks (its own RGBA TIFFs lack ExtraSamples) on stderr,
    # where a command's only line should be its result or its error.
    level = cv2_logging.getLogLevel()
    cv2_logging.setLogLevel(cv2_logging.LOG_LEVEL_ERROR)
    try:
        pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    finally:
        cv2_logging.setLogLevel(level)
    if pixels is None or pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[-1] not in (3, 4):
        raise ImageLoadError(f"Could not decode {name} as a 16-bit colour image (corrupt or truncated?)")
    if grey_alpha:  # OpenCV expands grey + alpha to BGRA
        return np.ascontiguousarray(pixels[..., [0, 3]])
    order = [2, 1, 0, 3][: pixels.shape[-1]]  # OpenCV's BGR(A) -> RGB(A)
    return np.ascontiguousarray(pixels[..., order])


def _without_tiff_orientation(data: np.ndarray) -> np.ndarray:
    """A file's bytes with, if it is a TIFF, its first image's orientation tag set to 1 (as stored).

    OpenCV 5 turns TIFFs upright itself when decoding (OpenCV 4 does not, nor either one PNGs): decoding the
    stored order whatever the version, `load_image` applies the orientation exactly once, with `_orient`.
    """
    import struct

    raw = bytearray(data.tobytes())
    order = {b"II": "<", b"MM": ">"}.get(bytes(raw[:2]))
    if order is None:
        return data
    try:
        big = struct.unpack_from(order + "H", raw, 2)[0] == 43  # BigTIFF: 8-byte offsets and counts
        offset_format, count_format, entry_size, value_at = ("Q", "Q", 20, 12) if big else ("I", "H", 12, 8)
        directory = struct.unpack_from(order + offset_format, raw, 8 if big else 4)[0]
        count = struct.unpack_from(order + count_format, raw, directory)[0]
        first = directory + struct.calcsize(count_format)
        for entry in range(first, min(first + count * entry_size, len(raw)), entry_size):
            tag, kind = struct.unpack_from(order + "HH", raw, entry)
            if tag == _EXIF_ORIENTATION and kind == 3:  # one SHORT, stored in the entry itself
                struct.pack_into(order + "H", raw, entry + value_at, 1)
    except struct.error:  # not a TIFF after all, or a damaged one: the decoder says so
        return data
    return np.frombuffer(raw, dtype=np.uint8)


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W, C) array, as `ImageOps.exif_transpose` does to an image."""
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    transform = transforms.get(orientation)
    return np.ascontiguousarray(transform(pixels)) if transform else pixels


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    # Checking the tag first avoids exif_transpose's copy of the (usually upright) image.
    if image.getexif().get(_EXIF_ORIENTATION, 1) in range(2, 9):
        return ImageOps.exif_transpose(image)
    return image


# --- input images ----------------------------------------------------------------------------------------


def normalize_image(image: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> NormalizedImage:
    """Turn one input image into the network's working representation, keeping its own pixels.

    Args:
        image: a PIL image of any mode (EXIF orientation applied), a file path (read with `load_image`), a
            numpy array (H, W) or (H, W, C) or a torch tensor (H, W) or (C, H, W), with C in 1..4 (grey,
            grey + alpha, RGB, RGBA) and dtype uint8, uint16 or float in [0, 1].
        max_pixels: size limit, see `check_image_size`.

    Returns:
        `NormalizedImage`.
    """
    if isinstance(image, str | os.PathLike):
        image = load_image(image, max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        check_image_size(*image.size, max_pixels=max_pixels)
        pixels, mode = _pil_to_pixels(image)
        input_type, squeezed = "pil", False
    elif isinstance(image, np.ndarray | torch.Tensor):
        input_type = "pt" if isinstance(image, torch.Tensor) else "np"
        array = _tensor_to_hwc(image) if input_type == "pt" else image
        squeezed = array.ndim == 2
        pixels = _validate_pixel_array(array)
        check_image_size(pixels.shape[1], pixels.shape[0], max_pixels=max_pixels)
        mode = "I;16" if _is_uint16(pixels.dtype) and pixels.shape[-1] == 1 else _mode_for(pixels)
    else:
        raise TypeError(f"Expected a PIL image, numpy array, torch tensor or path, got {type(image).__name__}.")
    return NormalizedImage(
        rgb=_pixels_to_rgb(pixels), pixels=pixels, mode=mode, input_type=input_type, squeezed=squeezed
    )


def _pil_to_pixels(image: Image.Image) -> tuple[np.ndarray, str]:
    image = _apply_exif_orientation(image)
    if image.mode in _KEPT_MODES:
        mode = image.mode
    elif image.mode == "P":
        mode = "RGBA" if image.has_transparency_data else "RGB"
    else:
        mode = _CONVERTED_MODES.get(image.mode, "RGB")
    if mode != image.mode:
        try:
            image = image.convert(mode)
        except ValueError as err:
            raise ValueError(f"Unsupported image mode {image.mode!r}: PIL cannot convert it to {mode}.") from err
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if mode == "F":
        _check_unit_range(pixels, "Mode F images")
    return pixels, mode


def _tensor_to_hwc(tensor: torch.Tensor) -> np.ndarray:
    """(H, W) or (C, H, W) tensor -> (H, W) or (H, W, C) numpy array."""
    if tensor.ndim not in (2, 3) or (tensor.ndim == 3 and tensor.shape[0] > 4):
        raise ValueError(
            f"Expected a tensor of shape (H, W) or (C, H, W) with C <= 4, got {tuple(tensor.shape)}; pass "
            "batches as a list of images."
        )
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
        tensor = tensor.float()
    return tensor.permute(1, 2, 0).numpy() if tensor.ndim == 3 else tensor.numpy()


def _validate_pixel_array(array: np.ndarray) -> np.ndarray:
    """Check an image array's shape, dtype and range; returns it as (H, W, C) without copying."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"Expected an image array of shape (H, W) or (H, W, C) with C in 1..4, got {array.shape}; pass "
            "batches as a list of images."
        )
    if np.issubdtype(array.dtype, np.floating):
        _check_unit_range(array, "Float images")
    elif array.dtype != np.uint8 and not _is_uint16(array.dtype):
        raise TypeError(f"Image arrays must be uint8, uint16 or float in [0, 1], got {array.dtype}.")
    return array


def _check_unit_range(array: np.ndarray, what: str) -> None:
    if array.size and not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
        raise ValueError(f"{what} must hold finite values in [0, 1], got [{array.min()}, {array.max()}].")


def _is_uint16(dtype: np.dtype) -> bool:
    # Either byte order: big-endian uint16 (PIL's "I;16B") does not compare equal to np.uint16.
    return dtype.kind == "u" and dtype.itemsize == 2


def _mode_for(pixels: np.ndarray) -> str:
    return _MODES_BY_CHANNELS[pixels.shape[-1]]


def _max_value(dtype: np.dtype) -> float:
    """Full intensity for `dtype`; PIL's 32-bit mode "I" counts as 16-bit, what it holds in practice."""
    if np.issubdtype(dtype, np.floating):
        return 1.0
    return 255.0 if dtype == np.uint8 else 65535.0


def _to_unit_float(pixels: np.ndarray) -> np.ndarray:
    """Pixels in their own dtype -> float32 in [0, 1], same shape."""
    # One pass (the same values as converting, then dividing); a 12 MP photo is read in a fraction of the time.
    unit = np.divide(pixels, np.float32(_max_value(pixels.dtype)), dtype=np.float32)
    # 8- and 16-bit values cannot exceed their maximum, and float input was checked to be in [0, 1]; only 32-bit
    # integers (PIL's mode "I") can.
    return unit if pixels.dtype.kind == "f" or pixels.dtype.itemsize <= 2 else np.clip(unit, 0, 1)


def _pixels_to_rgb(pixels: np.ndarray) -> np.ndarray:
    color = _to_unit_float(pixels[..., :3] if pixels.shape[-1] >= 3 else pixels[..., :1])
    return np.repeat(color, 3, axis=-1) if color.shape[-1] == 1 else color


# --- masks -----------------------------------------------------------------------------------------------


def prepare_mask(
    mask: ImageInput,
    image_size: tuple[int, int] | None = None,
    dilation: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Turn a mask of any mode or dtype into a boolean hole map.

    White is a hole. PIL masks of any mode are converted to greyscale the way PIL's `convert("L")` does and
    are holes above 127; 16-bit ones above 127 * 257. Masks with an alpha channel (or palette / colour-key
    transparency) are composited over black first, so transparent pixels are not holes. Arrays and tensors:
    bool; uint8 (or other integers) on the 0..255 scale, uint16 on the 0..65535 scale; float in [0, 1], a hole
    above 0.5. Colour arrays (H, W, C) must be uint8 and go through the PIL conversion; tensors are (H, W) or
    (C, H, W). EXIF orientation is applied like for images.

    Args:
        mask: the mask, or a file path (read with `load_image`).
        image_size: (width, height) the mask must have, normally the image's `NormalizedImage.size`.
        dilation: radius in pixels of the disk the holes are grown by (see `dilate_mask`).
        max_pixels: size limit for masks read from a file, see `check_image_size`.

    Returns:
        bool array of shape (H, W), True on holes.

    Raises:
        `ValueError`: the size differs from `image_size`, or the values are ambiguous or out of range.
    """
    if isinstance(mask, str | os.PathLike):
        mask = load_image(mask, max_pixels=max_pixels)
    if isinstance(mask, Image.Image):
        holes = _pil_mask_to_bool(mask)
    elif isinstance(mask, np.ndarray | torch.Tensor):
        holes = _array_mask_to_bool(_tensor_to_hwc(mask) if isinstance(mask, torch.Tensor) else mask)
    else:
        raise TypeError(f"Expected a PIL image, numpy array, torch tensor or path, got {type(mask).__name__}.")
    mask_size = (holes.shape[1], holes.shape[0])
    if image_size is not None and mask_size != tuple(image_size):
        raise ValueError(
            f"Mask size {mask_size[0]}x{mask_size[1]} does not match image size "
            f"{image_size[0]}x{image_size[1]} (width x height)."
        )
    return dilate_mask(holes, dilation) if dilation > 0 else holes


def _pil_mask_to_bool(mask: Image.Image) -> np.ndarray:
    mask = _apply_exif_orientation(mask)
    if mask.mode in _HIGH_DEPTH_MODES:
        values = np.asarray(mask)
        return _binarize(values, 1.0 if mask.mode == "F" else 65535.0)
    if mask.has_transparency_data:
        # Transparent pixels are "not drawn on", whatever colour they hold: composite them over black.
        mask = Image.alpha_composite(Image.new("RGBA", mask.size, (0, 0, 0, 255)), mask.convert("RGBA"))
    return _binarize(np.asarray(mask.convert("L")), 255.0)


def _array_mask_to_bool(mask: np.ndarray) -> np.ndarray:
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim == 3:
        if mask.dtype != np.uint8 or mask.shape[-1] not in (2, 3, 4):
            raise ValueError(
                f"Colour mask arrays must be uint8 with 2 to 4 channels, got {mask.dtype} {mask.shape}; pass "
                "a single-channel mask instead."
            )
        return _pil_mask_to_bool(Image.fromarray(mask))
    if mask.ndim != 2:
        raise ValueError(f"Expected a mask of shape (H, W) or (H, W, C), got {mask.shape}.")
    return _binarize(mask, 65535.0 if _is_uint16(mask.dtype) else 255.0)


def _binarize(values: np.ndarray, max_value: float) -> np.ndarray:
    """Threshold a single-channel mask whose full white is `max_value`; bool is copied as it is."""
    if values.dtype == bool:
        return values.copy()  # never hand back (a view of) the caller's own array
    if np.issubdtype(values.dtype, np.floating):
        _check_unit_range(values, "Float masks")
        return values > 0.5
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"Masks must be bool, integer or float, got {values.dtype}.")
    if values.size and (values.min() < 0 or values.max() > max_value):
        raise ValueError(f"Integer mask values must lie in [0, {max_value:.0f}], got [{values.min()}, {values.max()}].")
    if values.size and values.max() == 1:
        # On the 0..255 scale a 0/1 mask has no hole at all, which is never what was meant.
        raise ValueError(
            f"Integer mask holds only 0 and 1, which on its 0..{max_value:.0f} scale means no hole at all; "
            "pass `mask.astype(bool)`, or scale it so that holes are white."
        )
    return values > MASK_THRESHOLD * (max_value / 255)


def dilate_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow the holes by a disk of `radius` pixels (elliptical structuring element, like IOPaint's).

    A pixel becomes a hole when a hole pixel lies within Euclidean distance `radius` of it.

    Args:
        mask: bool (H, W), True on holes.
        radius: disk radius in pixels; 0 returns a copy.

    Returns:
        bool (H, W).
    """
    if radius < 0:
        raise ValueError(f"Dilation radius must be >= 0, got {radius}.")
    grown = mask.copy()
    region = _hole_region(mask, math.ceil(radius))
    if region is not None and radius > 0:
        # A distance transform costs the same for any radius, unlike a morphological dilation.
        grown[region] = ndimage.distance_transform_edt(~mask[region]) <= radius
    return grown


def _hole_region(mask: np.ndarray, pad: int) -> tuple[slice, slice] | None:
    """Slices of the holes' bounding box grown by `pad` (clipped to the image), None without holes.

    Work that only reaches `pad` pixels from the holes is done inside it, not over the whole photo.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return (
        slice(max(rows[0] - pad, 0), rows[-1] + pad + 1),
        slice(max(cols[0] - pad, 0), cols[-1] + pad + 1),
    )


# --- crops and resizing for high-resolution photos -------------------------------------------------------


def mask_crop_boxes(
    mask: np.ndarray,
    margin: int = DEFAULT_CROP_MARGIN,
    min_size: int = DEFAULT_WORKING_SIZE,
    relative_margin: float = 0.0,
) -> list[CropBox]:
    """Boxes to inpaint a large photo crop by crop, one around each group of nearby holes.

    Each connected hole region (8-connected) gets its bounding box grown by `margin` pixels of context (or by
    `relative_margin` times the box's longer side, if more). Boxes are clipped to the image, boxes that overlap
    or touch are merged, and each box is grown around its centre to a square with sides of at least `min_size`,
    as far as the image allows. Every hole pixel, and every pixel within `margin` of it (per axis), lies in
    exactly one box, so `margin` should be at least the `blur` later given to `composite`.

    Args:
        mask: bool (H, W), True on holes.
        margin: context in pixels around each hole region.
        min_size: smallest box side, normally the network's working size.
        relative_margin: context as a fraction of each region's longer side, where that is more than `margin`.

    Returns:
        list of non-overlapping `CropBox`, sorted; empty without holes.
    """
    height, width = mask.shape
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    boxes = []
    for rows, cols in ndimage.find_objects(labels):
        grow = max(margin, math.ceil(relative_margin * max(rows.stop - rows.start, cols.stop - cols.start)))
        boxes.append(
            CropBox(
                max(cols.start - grow, 0),
                max(rows.start - grow, 0),
                min(cols.stop + grow, width),
                min(rows.stop + grow, height),
            )
        )
    # Growing can make boxes touch again, and merging can make them oblong again: repeat until stable.
    while True:
        boxes = _merge_touching(boxes)
        grown = [_grow_to_square(box, min_size, width, height) for box in boxes]
        if grown == boxes:
            return boxes
        boxes = grown


def _touching(a: CropBox, b: CropBox) -> bool:
    return a.left <= b.right and b.left <= a.right and a.top <= b.bottom and b.top <= a.bottom


def _merge_touching(boxes: list[CropBox]) -> list[CropBox]:
    pending = sorted(boxes)
    merged: list[CropBox] = []  # pairwise non-touching
    while pending:
        box = pending.pop()
        touching = [other for other in merged if _touching(box, other)]
        if not touching:
            merged.append(box)
            continue
        group = [box, *touching]
        merged = [other for other in merged if other not in touching]
        # The union may now touch boxes that neither part touched, so it is checked again.
        pending.append(
            CropBox(
                min(b.left for b in group),
                min(b.top for b in group),
                max(b.right for b in group),
                max(b.bottom for b in group),
            )
        )
    return sorted(merged)


def _grow_to_square(box: CropBox, min_size: int, width: int, height: int) -> CropBox:
    side = max(box.width, box.height, min_size)
    left, right = _grow_span(box.left, box.right, min(side, width), width)
    top, bottom = _grow_span(box.top, box.bottom, min(side, height), height)
    return CropBox(left, top, right, bottom)


def _grow_span(start: int, stop: int, length: int, limit: int) -> tuple[int, int]:
    """Grow [start, stop) around its centre to `length`, shifted to stay within [0, limit)."""
    start = min(max(start - (length - (stop - start)) // 2, 0), limit - length)
    return start, start + length


def network_size(
    width: int, height: int, working_size: int = DEFAULT_WORKING_SIZE, multiple: int = SIZE_MULTIPLE
) -> tuple[int, int]:
    """The (width, height) to feed the network a `width` x `height` crop at.

    The longer side is scaled to `working_size` (up or down) and both sides are rounded to the nearest
    multiple of `multiple` (at least one multiple), which the network's down-sampling needs.
    """
    scale = working_size / max(width, height)
    new_width, new_height = (max(multiple, round(side * scale / multiple) * multiple) for side in (width, height))
    return new_width, new_height


def resize_image(
    image: np.ndarray,
    size: tuple[int, int],
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> np.ndarray:
    """Resize a float image to `size` = (width, height) with PIL, keeping float precision.

    Args:
        image: float array (H, W, C) in [0, 1].
        size: target (width, height).
        resample: PIL filter, e.g. LANCZOS or BICUBIC.

    Returns:
        float32 array (height, width, C) in [0, 1] (the filters' overshoot is clipped).
    """
    # PIL resizes float data only as single-channel mode "F" images, so each channel goes on its own.
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32)).resize(size, resample))
        for c in range(image.shape[-1])
    ]
    return np.clip(np.stack(channels, axis=-1), 0, 1)


def resize_mask(
    mask: np.ndarray,
    size: tuple[int, int],
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> np.ndarray:
    """Resize a boolean hole map to `size` = (width, height) for an image resized with `resample`.

    A resized pixel is a hole when any pixel its filter reads (the footprint `resize_image` uses, from PIL's
    filter support) is a hole, so a pixel counts as known only if everything it is made from is known: resized
    known pixels never carry what the holes held, nor the blank they were erased to.

    Args:
        mask: bool (H, W), True on holes.
        size: target (width, height).
        resample: the PIL filter the image is resized with.

    Returns:
        bool (height, width).
    """
    height, width = mask.shape
    if (width, height) == tuple(size):
        return mask.copy()  # PIL returns an image of its own size unfiltered: every pixel is made of itself
    grown = mask.astype(np.uint8)
    for axis, (old, new) in enumerate(((height, size[1]), (width, size[0]))):
        # PIL reads `support * max(scale, 1)` source pixels either side of a target pixel's centre; one more
        # covers the rounding of that window's bounds.
        reach = math.ceil(_FILTER_SUPPORT[resample] * max(old / new, 1.0)) + 1
        grown = ndimage.maximum_filter1d(grown, 2 * reach + 1, axis=axis, mode="constant")
    # A box filter with threshold 0 marks every target pixel whose area touches the grown holes.
    coverage = Image.fromarray(grown.astype(np.float32)).resize(size, Image.Resampling.BOX)
    return np.asarray(coverage) > 0


def erase_holes(rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """`rgb` (H, W, 3) with its hole pixels set to 0: what every later step may read of the photo.

    Everything downstream of the mask (resampling, the network, the texture search, compositing) starts from
    this, so the result depends on the known pixels and the mask alone, never on what the mask hides.
    """
    return np.where(hole[..., None], np.float32(0), rgb)


# --- compositing and output ------------------------------------------------------------------------------


def composite(original: np.ndarray, prediction: np.ndarray, mask: np.ndarray, blur: float = 0) -> np.ndarray:
    """Paste the network's prediction into the original pixels.

    Outside the mask the result is the original, bit for bit: those pixels are taken from `original` as they
    are, never through a float round trip. Inside it the prediction is converted to the original's own format:
    rounded and clipped for integers (16-bit and mode "I" on the 0..65535 scale, i.e. 8-bit values times 257),
    reduced to ITU-R 601-2 luma for greyscale like PIL's `convert("L")`. An alpha channel is kept outside the
    mask; inside it, where the old alpha would carry what the mask hides, it is filled smoothly from the known
    alpha around the hole (the membrane of `harmonic_fill`, which continues a ramp exactly; fully opaque when nothing
    around it is known).

    With `blur > 0` the prediction also blends into the surroundings: pixels up to `blur` pixels (rounded up)
    from the mask, per axis, so within a square of that half-width, then change as well, weighted by a
    Gaussian feather (sigma = blur / 3) that falls from 1 at the mask edge to 0 at that distance. Hole pixels
    always take the full prediction, so nothing of what was masked shows through.

    Args:
        original: `NormalizedImage.pixels`, shape (H, W, C) (or (H, W)), in its own dtype.
        prediction: float array (H, W, 3) in [0, 1]; only read inside the mask and the feather band.
        mask: bool (H, W), True on holes (already dilated if wanted).
        blur: feather width in pixels.

    Returns:
        array of the shape and dtype of `original`.
    """
    if blur < 0:
        raise ValueError(f"blur must be >= 0, got {blur}.")
    height, width = mask.shape
    if original.shape[:2] != (height, width) or prediction.shape != (height, width, 3):
        raise ValueError(
            f"Shapes do not match: original {original.shape}, prediction {prediction.shape} (expected "
            f"({height}, {width}, 3)), mask {mask.shape}."
        )
    result = original.copy()
    region = _hole_region(mask, math.ceil(blur))
    if region is None:
        return result
    pixels = result if result.ndim == 3 else result[..., None]
    color_channels = 1 if pixels.shape[-1] in (1, 2) else 3
    target = region + (slice(0, color_channels),)
    color = pixels[target]
    predicted = prediction[region].astype(np.float64)
    if color_channels == 1:
        predicted = (predicted @ _LUMA_WEIGHTS)[..., None]
    predicted *= _max_value(color.dtype)
    if blur > 0:
        weight = _feather(mask[region], blur)[..., None]
        blended = color * (1 - weight) + predicted * weight
        pixels[target] = np.where(weight > 0, _from_float(blended, color.dtype), color)
    else:
        pixels[target] = np.where(mask[region][..., None], _from_float(predicted, color.dtype), color)
    if pixels.shape[-1] in (2, 4):
        # The membrane's boundary values are the known alpha around the hole: its box grown by a pixel holds them.
        around = _hole_region(mask, 1)
        pixels[around + (-1,)] = _fill_alpha(pixels[around + (-1,)], mask[around])
    return result


def _fill_alpha(alpha: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """`alpha` (h, w) with its hole pixels replaced by the harmonic fill of the known ones (`harmonic_fill`, exact
    to a fraction of a level), in its own dtype; fully opaque when no pixel of `alpha` is known."""
    if hole.all():
        return np.full_like(alpha, _max_value(alpha.dtype))
    filled = harmonic_fill(
        torch.from_numpy(alpha.astype(np.float32))[None, None], torch.from_numpy(hole)[None, None].float()
    )[0, 0].numpy()
    return np.where(hole, _from_float(filled.astype(np.float64), alpha.dtype), alpha)


def _feather(mask: np.ndarray, blur: float) -> np.ndarray:
    """Blend weights in [0, 1] of the prediction: 1 on holes, fading to exactly 0 at `blur` pixels out."""
    smooth = ndimage.gaussian_filter(mask.astype(np.float64), blur / _FEATHER_SIGMAS, radius=math.ceil(blur))
    # Doubling brings the weight to about 1 at the mask edge, so the feather fades outwards from there
    # instead of letting the original show through inside the hole.
    return np.maximum(mask, np.minimum(2 * smooth, 1))


def _from_float(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Values on `dtype`'s own scale (0..255, 0..65535 or 0..1) as float -> `dtype`, rounded and clipped."""
    if np.issubdtype(dtype, np.floating):
        return np.clip(values, 0, 1).astype(dtype)
    return np.clip(np.rint(values), 0, _max_value(dtype)).astype(dtype)


def convert_output(
    pixels: np.ndarray, reference: NormalizedImage, output_type: OutputType = "pil"
) -> Image.Image | np.ndarray | torch.Tensor:
    """Return composited pixels in the caller's format.

    Args:
        pixels: array shaped and typed like `reference.pixels`, e.g. the result of `composite`.
        reference: the `NormalizedImage` of the input the pixels belong to.
        output_type:
            - `"pil"`: PIL image of mode `reference.mode` (L, LA, RGB, RGBA, I;16 (any byte order), I or F).
              16-bit colour and float arrays become 8-bit, PIL having no such modes.
            - `"np"`: float32 array (H, W, C) in [0, 1], like diffusers' `output_type="np"`.
            - `"pt"`: float32 tensor (C, H, W) in [0, 1].
            - `"input"`: the input's own type, dtype and layout: PIL as for `"pil"`, numpy and torch arrays
              with the input's dtype and shape (bfloat16 tensors come back as float32).

    Returns:
        the image; its size is always the input's.
    """
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape != reference.pixels.shape or pixels.dtype != reference.pixels.dtype:
        raise ValueError(
            f"Pixels {pixels.shape} {pixels.dtype} do not match the input's "
            f"{reference.pixels.shape} {reference.pixels.dtype}."
        )
    if output_type == "input":
        if reference.input_type == "pil":
            return _pixels_to_pil(pixels, reference.mode)
        native = pixels[..., 0] if reference.squeezed else pixels
        if reference.input_type == "np":
            return native
        tensor = torch.from_numpy(np.ascontiguousarray(native))
        return tensor if reference.squeezed else tensor.permute(2, 0, 1).contiguous()
    if output_type == "pil":
        return _pixels_to_pil(pixels, reference.mode)
    if output_type == "np":
        return _to_unit_float(pixels)
    if output_type == "pt":
        return torch.from_numpy(_to_unit_float(pixels).transpose(2, 0, 1).copy())
    raise ValueError(f"Unknown output_type {output_type!r}; use 'pil', 'np', 'pt' or 'input'.")


def _pixels_to_pil(pixels: np.ndarray, mode: str) -> Image.Image:
    height, width = pixels.shape[:2]
    if mode in _HIGH_DEPTH_MODES:
        # Image.fromarray cannot build every byte order, frombytes with the mode's own layout can.
        raw = np.ascontiguousarray(pixels[..., 0], dtype=_HIGH_DEPTH_MODES[mode])
        return Image.frombytes(mode, (width, height), raw.tobytes())
    if pixels.dtype != np.uint8:
        pixels = np.rint(_to_unit_float(pixels) * 255).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


# --- settings bundle -------------------------------------------------------------------------------------


class NetworkTile(NamedTuple):
    """One network input of a pipeline call: `box` of the photo, brought to the network's `size`.

    `size` is (width, height), multiples of the processor's `size_multiple`. The box is resized to it, or, when
    `padded`, kept at its own scale and padded up to it.
    """

    box: CropBox
    size: tuple[int, int]
    padded: bool = False


@dataclass(frozen=True)
class MEDImageProcessor:
    """Pre- and post-processing of the MEDFE inpainting pipeline, in the spirit of diffusers' `VaeImageProcessor`,
    for photos of any size: the pipeline's only door to pixels.

    A pipeline call goes: `preprocess` the image and `preprocess_mask` the mask; `tiles` plans the network
    inputs for a high-resolution strategy; for each tile `tile_input` gives what the network sees (hidden pixels
    erased, scaled or padded to the network's size) and `tile_output` brings the network's prediction back to
    the tile's box at full resolution; `composite` pastes it into the photo and `postprocess` returns the result.

    Args:
        working_size: side the network works at; crops are scaled so their longer side has it.
        size_multiple: the network needs both sides to be multiples of this.
        resample: PIL filter for images (hole maps follow its footprint, see `resize_mask`).
    """

    working_size: int = DEFAULT_WORKING_SIZE
    size_multiple: int = SIZE_MULTIPLE
    resample: Image.Resampling = Image.Resampling.LANCZOS

    def preprocess(self, image: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> NormalizedImage:
        """See `normalize_image`."""
        return normalize_image(image, max_pixels=max_pixels)

    def preprocess_mask(
        self,
        mask: ImageInput,
        image: NormalizedImage,
        dilation: int = 0,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> np.ndarray:
        """Bool (H, W) hole map checked against `image`'s size, see `prepare_mask`."""
        return prepare_mask(mask, image_size=image.size, dilation=dilation, max_pixels=max_pixels)

    def crop_boxes(self, mask: np.ndarray, margin: int = DEFAULT_CROP_MARGIN) -> list[CropBox]:
        """See `mask_crop_boxes`."""
        return mask_crop_boxes(mask, margin=margin, min_size=self.working_size)

    def texture_regions(self, mask: np.ndarray, margin: int, relative_margin: float) -> list[CropBox]:
        """Boxes around each group of nearby holes of `mask` for the texture stage, with the context its patches
        come from (`mask_crop_boxes` without a minimum size): distant holes are synthesised separately instead of
        in one box spanning them all."""
        return mask_crop_boxes(mask, margin=margin, min_size=0, relative_margin=relative_margin)

    def tiles(
        self, mask: np.ndarray, strategy: Literal["crop", "resize", "original"], crop_margin: int = DEFAULT_CROP_MARGIN
    ) -> list[NetworkTile]:
        """The network inputs that fill every hole of `mask` (bool (H, W)) with a high-resolution strategy.

        `"crop"`: one tile per group of nearby holes (see `crop_boxes`), scaled to the working size; `"resize"`:
        the whole photo scaled to the working size; `"original"`: the whole photo padded to a multiple of
        `size_multiple`. Without holes there is nothing to run: an empty list.
        """
        if not mask.any():
            return []
        height, width = mask.shape
        if strategy == "crop":
            boxes = self.crop_boxes(mask, crop_margin)
        elif strategy in ("resize", "original"):
            boxes = [CropBox(0, 0, width, height)]
        else:
            raise ValueError(f"Unknown strategy {strategy!r}; use 'crop', 'resize' or 'original'.")
        if strategy == "original":
            multiple = self.size_multiple
            return [NetworkTile(boxes[0], (-(-width // multiple) * multiple, -(-height // multiple) * multiple), True)]
        return [
            NetworkTile(box, network_size(box.width, box.height, self.working_size, self.size_multiple))
            for box in boxes
        ]

    def tile_input(self, rgb: np.ndarray, mask: np.ndarray, tile: NetworkTile) -> tuple[np.ndarray, np.ndarray]:
        """What the network sees of `tile`: float32 RGB (h, w, 3) in [0, 1] with its holes erased and bool holes
        (h, w), with (w, h) = `tile.size`.

        Hidden pixels are erased before any resampling (`erase_holes`), and a resampled pixel is a hole unless
        every pixel it is made from is known (`resize_mask`); padding reflects pixels and holes alike.
        """
        rows, cols = tile.box.slices
        hole = mask[rows, cols]
        known = erase_holes(rgb[rows, cols], hole)
        if not tile.padded:
            return resize_image(known, tile.size, self.resample), resize_mask(hole, tile.size, self.resample)
        width, height = tile.size
        padding = ((0, height - hole.shape[0]), (0, width - hole.shape[1]))
        mode = "reflect" if min(hole.shape) > 1 else "edge"
        return np.pad(known, (*padding, (0, 0)), mode=mode), np.pad(hole, padding, mode=mode)

    def tile_output(self, prediction: np.ndarray, tile: NetworkTile) -> np.ndarray:
        """The network's float (h, w, 3) prediction in [0, 1] for `tile` -> float32 (box height, box width, 3)."""
        box = tile.box
        if tile.padded:
            return prediction[: box.height, : box.width]
        return resize_image(prediction, (box.width, box.height), self.resample)

    def known_pixels(self, image: NormalizedImage, mask: np.ndarray, box: CropBox) -> np.ndarray:
        """Float32 RGB (box height, box width, 3) in [0, 1] of `box` with the holes erased (see `erase_holes`)."""
        rows, cols = box.slices
        return erase_holes(image.rgb[rows, cols], mask[rows, cols])

    def composite(
        self,
        image: NormalizedImage,
        prediction: np.ndarray,
        mask: np.ndarray,
        blur: float = 0,
        box: CropBox | None = None,
    ) -> np.ndarray:
        """`composite` of `prediction` into the input's own pixels, within `box` (default: the whole image)."""
        if box is None:
            return composite(image.pixels, prediction, mask, blur)
        rows, cols = box.slices
        return composite(image.pixels[rows, cols], prediction, mask[rows, cols], blur)

    def postprocess(
        self, pixels: np.ndarray, image: NormalizedImage, output_type: OutputType = "pil"
    ) -> Image.Image | np.ndarray | torch.Tensor:
        """See `convert_output`."""
        return convert_output(pixels, image, output_type)
