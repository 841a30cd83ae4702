"""Gradio demo of MEDFE image inpainting: paint over what should disappear and let the network fill it in.

Run it with `python app.py` (serves on 127.0.0.1, port `GRADIO_SERVER_PORT`, default 7860). The model comes
from the `MED_MODEL` environment variable (a local folder or a Hub repo id), else from the default model shipped
inside the `med_hf` package; it is loaded once, on the first request.

Tests import this module and build the interface around a pipeline of their own with `build_demo(pipe)`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, UnidentifiedImageError

from med_hf.atomic_files import atomic_file
from med_hf.image_processing_med import ImageTooLargeError
from med_hf.patchmatch import DEFAULT_TEXTURE, TEXTURES
from med_hf.pipeline_med import HD_STRATEGIES, MEDInpaintPipeline

TITLE = "MEDFE inpainting"
DESCRIPTION = """\
Upload a photo, **paint over what should disappear** with the brush (the eraser takes strokes back), then press
**Inpaint**. [MEDFE](https://github.com/KumapowerLIU/Rethinking-Inpainting-MEDFE) (Mutual Encoder-Decoder with
Feature Equalizations, ECCV 2020) fills the painted area; every other pixel of the photo comes back unchanged, at
the photo's own size, as a lossless PNG. Photos of up to 16 megapixels are accepted.
"""
MODEL_ENV_VAR = "MED_MODEL"
# Larger photos are refused: they would take long on a CPU Space, and a browser canvas struggles with them.
MAX_PIXELS = 16_000_000
# The server's limit per uploaded file. When Inpaint is pressed the editor uploads the photo as an RGBA PNG drawn
# from its canvas, which for a noisy photo is as large as its raw pixels (4 bytes each): this lets every photo
# within MAX_PIXELS reach the app, which answers larger ones with a message. Larger uploads never leave the page
# (see UPLOAD_GUARD).
MAX_FILE_SIZE = "64mb"
CONCURRENCY_LIMIT = 1
QUEUE_MAX_SIZE = 20
EXAMPLES_DIR = Path(tempfile.gettempdir()) / "med-hf-space-examples"
# The status line (`build_demo`) stands out while it holds a message.
CSS = """
#status:has(p) {
  border: 1px solid var(--error-border-color);
  background: var(--error-background-fill);
  border-radius: var(--radius-lg);
  padding: var(--spacing-md) var(--spacing-lg);
}
"""
# Brush strokes are exported with the brush's opacity as their alpha; a see-through brush shows what it covers.
BRUSH = gr.Brush(colors=[("#ff2d7a", 0.6)], color_mode="fixed", default_size="auto")
# The Space's names of the pipeline's texture modes.
TEXTURE_LABELS = {"exemplar": "Texture from the photo", "none": "Smooth"}

LOGGER = logging.getLogger("med_hf.space")

EditorValue = Mapping[str, Any]
PipelineSource = MEDInpaintPipeline | Callable[[], MEDInpaintPipeline]


# --- model -----------------------------------------------------------------------------------------------

_pipeline_lock = threading.Lock()


@functools.cache
def _load_pipeline(model: str | None) -> MEDInpaintPipeline:
    return MEDInpaintPipeline.from_pretrained(model) if model else MEDInpaintPipeline.from_pretrained()


def default_pipeline() -> MEDInpaintPipeline:
    """The pipeline of `$MED_MODEL` (path or Hub repo id), else of the package's default model; loaded once."""
    model = os.environ.get(MODEL_ENV_VAR) or None
    with _pipeline_lock:
        try:
            return _load_pipeline(model)
        except Exception as err:  # missing files, bad repo ids, no network: all end up in the UI
            raise gr.Error(f"The model {model or '(default)'} could not be loaded: {err}") from err


def _resolve(pipeline: PipelineSource) -> MEDInpaintPipeline:
    return pipeline if isinstance(pipeline, MEDInpaintPipeline) else pipeline()


# --- user errors -----------------------------------------------------------------------------------------


class UserError(gr.Error):
    """A problem with what the user sent (no photo, nothing painted, too large, bad settings).

    The app shows it in the page's status line and logs it as one line, without a traceback; it stays a
    `gr.Error`, so `inpaint` raises what any Gradio app can show.
    """

    def __init__(self, message: str, title: str):
        super().__init__(message, title=title, print_exception=False)


def _file_size(size: int) -> str:
    # Gradio's "mb" and "kb" in `max_file_size` are 2**20 and 2**10 bytes; messages use the same units.
    if size >= 2**20:
        return f"{size / 2**20:.1f} MB"
    return f"{size / 2**10:.1f} KB" if size >= 2**10 else f"{size} bytes"


def _megapixels(pixels: int, limit: int | None = None) -> str:
    """`pixels` in MP with one decimal, or with as many more as it takes to tell it apart from `limit`'s."""
    if pixels < 100_000:
        return f"{pixels:,} pixels"
    for digits in (1, 2, 3):
        text = f"{pixels / 1e6:.{digits}f}"
        if limit is None or pixels == limit or text != f"{limit / 1e6:.{digits}f}":
            return f"{text} MP"
    return f"{pixels:,} pixels"


def too_large_message(
    width: int | None,
    height: int | None,
    *,
    max_pixels: int | None,
    upload_bytes: int | None = None,
    upload_limit: int | None = None,
    refused: bool = False,
    what: str = "photo",
) -> str:
    """The message for a photo that is too large: what it is, the limit it exceeds, and what to do.

    Args:
        width, height: the image's size, `None` when unknown.
        max_pixels: the app's pixel limit (`None`: none).
        upload_bytes: the size of the upload (the editor sends a PNG), if known.
        upload_limit: the server's limit per upload (`max_file_size`) when that is what refused the photo.
        refused: the upload was refused for its size (HTTP 413) by a limit that is not known.
        what: `"photo"` or `"mask layer"`.
    """
    sized = width is not None and height is not None
    facts = [_file_size(upload_bytes)] if upload_bytes is not None else []
    if sized:
        facts.append(f"{width} x {height} px ({_megapixels(width * height, max_pixels)})")
    scale, target = None, "at most"
    if sized and max_pixels is not None and width * height > max_pixels:
        limit = f"the limit is {_megapixels(max_pixels, width * height)}"
        scale = math.sqrt(max_pixels / (width * height))
    elif upload_limit is not None:
        limit = f"the limit is {_file_size(upload_limit)} per upload (the editor sends the photo as a PNG)"
        if upload_bytes:
            # A PNG grows about with the pixel count; aim a little below the limit.
            scale, target = min(1.0, 0.9 * math.sqrt(upload_limit / upload_bytes)), "about"
    elif refused or max_pixels is None:  # by a proxy in front of the server, say
        limit = "the server refused to receive it"
    else:  # of unknown size: PIL refused to open it (larger than its decompression-bomb limit)
        limit = f"the limit is {_megapixels(max_pixels)}"
    advice = "Scale it down and try again."
    if sized and scale is not None:
        smaller = f"{max(1, math.floor(width * scale))} x {max(1, math.floor(height * scale))} px"
        advice = f"Scale it down to {target} {smaller} and try again."
    described = f": {' / '.join(facts)}" if facts else ""
    return f"This {what} is too large for this Space{described}; {limit}. {advice}"


class PhotoTooLargeError(UserError):
    """A photo (or mask layer) above the app's pixel limit, or one whose upload the server refused."""

    def __init__(self, width: int | None, height: int | None, **details: Any):
        super().__init__(too_large_message(width, height, **details), title="Photo too large")


# --- mask and image from the editor ----------------------------------------------------------------------

# The first line of what the page's upload guard (`UPLOAD_GUARD`) sends instead of a file the server would refuse,
# followed by a JSON object: {"bytes": size of the refused file, "width", "height" (from its PNG header, or null),
# and either "limit": the server's max_file_size in bytes, or "status": the HTTP status of the failed upload, 0
# when there was no answer}.
REFUSED_UPLOAD_MARKER = "med-hf:refused-upload"
_NOTE_MAX_BYTES = 4096


def _refused_upload_note(path: str) -> dict[str, int | None] | None:
    """The upload guard's note if the file at `path` is one, else `None`."""
    marker = REFUSED_UPLOAD_MARKER.encode() + b"\n"
    with open(path, "rb") as file:
        head = file.read(len(marker) + _NOTE_MAX_BYTES)
    if not head.startswith(marker):
        return None
    try:
        note = json.loads(head[len(marker) :])
    except ValueError:
        note = {}

    def number(key: str) -> int | None:
        value = note.get(key) if isinstance(note, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    return {key: number(key) for key in ("bytes", "width", "height", "limit", "status")}


def upload_failed_message(note: Mapping[str, int | None], what: str = "photo") -> str:
    """The message for an upload that failed for another reason than its size (the upload guard's note)."""
    facts = [_file_size(note["bytes"])] if note.get("bytes") is not None else []
    if note.get("width") is not None and note.get("height") is not None:
        facts.append(f"{note['width']} x {note['height']} px")
    described = f" ({' / '.join(facts)})" if facts else ""
    status = note.get("status")
    reason = "the connection failed" if not status else f"the server answered HTTP {status}"
    return f"The {what}{described} could not be uploaded: {reason}. Try again; a smaller photo uploads faster."


def _file_path(image: Any) -> str | None:
    """The path of a file-like editor image: a path, or Gradio's `FileData` (as a model or as a dict)."""
    if isinstance(image, str | os.PathLike):
        return os.fspath(image)
    path = image.get("path") if isinstance(image, Mapping) else getattr(image, "path", None)
    return path if isinstance(path, str) else None


def _check_pixels(width: int, height: int, max_pixels: int | None, what: str, upload_bytes: int | None = None):
    if max_pixels is not None and width * height > max_pixels:
        raise PhotoTooLargeError(width, height, max_pixels=max_pixels, upload_bytes=upload_bytes, what=what)


def _as_array(image: Any, max_pixels: int | None = None, what: str = "photo") -> np.ndarray:
    """A numpy array from the editor's numpy / PIL / file-path / `FileData` image, at most `max_pixels` large.

    Files are checked from their header, before any pixel is decoded; modes other than L, LA, RGB and RGBA
    become RGB(A).

    Raises:
        `PhotoTooLargeError`: the image exceeds `max_pixels`, or is the upload guard's note for a refused upload.
        `UserError`: the file is not an image that can be read.
    """
    path = _file_path(image)
    if path is None:
        array = np.asarray(image)
        _check_pixels(array.shape[1], array.shape[0], max_pixels, what)
        return array
    note = _refused_upload_note(path)
    if note is not None and note["limit"] is None and note["status"] not in (None, 413):
        raise UserError(upload_failed_message(note, what), title="Upload failed")
    if note is not None:
        raise PhotoTooLargeError(
            note["width"],
            note["height"],
            max_pixels=max_pixels,
            upload_bytes=note["bytes"],
            upload_limit=note["limit"],
            refused=note["status"] == 413,
            what=what,
        )
    upload_bytes = os.path.getsize(path)
    try:
        with warnings.catch_warnings():
            # Between PIL's warning and error limits; `max_pixels` decides below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
    except Image.DecompressionBombError as err:
        raise PhotoTooLargeError(None, None, max_pixels=max_pixels, upload_bytes=upload_bytes, what=what) from err
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"The {what} is not an image file that can be read.", title="Not an image") from err
    with opened:
        _check_pixels(*opened.size, max_pixels, what, upload_bytes)
        try:
            opened.load()
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise UserError(f"The {what} could not be decoded (corrupt or truncated?).", title="Not an image") from err
        if opened.mode not in ("L", "LA", "RGB", "RGBA"):
            alpha = "A" in opened.getbands() or "transparency" in opened.info
            return np.asarray(opened.convert("RGBA" if alpha else "RGB"))
        return np.asarray(opened)


def _painted(layer: np.ndarray) -> np.ndarray:
    """Bool (H, W) map of the painted pixels of one layer.

    In RGBA mode a stroke is whatever is not fully transparent: the canvas exports RGB 0 under alpha 0 and the
    brush colour can be black, so only the alpha tells strokes apart. Layers without alpha count as painted
    where they are not black.
    """
    if layer.ndim == 3 and layer.shape[-1] in (2, 4):
        return layer[..., -1] > 0
    return (layer.reshape(*layer.shape[:2], -1) > 0).any(axis=-1)


def _resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a bool (H, W) mask to `size` = (width, height) without inventing grey levels."""
    if mask.shape[::-1] == size:
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize(size, Image.Resampling.NEAREST)) > 0


def _layers_mask(layers: Any, size: tuple[int, int], max_pixels: int | None) -> np.ndarray:
    width, height = size
    mask = np.zeros((height, width), dtype=bool)
    for layer in layers or []:
        if layer is not None:
            mask |= _resize_nearest(_painted(_as_array(layer, max_pixels, "mask layer")), size)
    if not mask.any():
        raise UserError("Nothing is painted: paint over the area to fill with the brush first.", title="No mask")
    return mask


def extract_mask(editor_value: EditorValue | None, max_pixels: int | None = None) -> np.ndarray:
    """The hole to fill: bool (H, W) at the background's size, True wherever any layer was painted.

    Args:
        editor_value: the value of `gr.ImageMask` in RGBA mode, `{"background": ..., "layers": [...],
            "composite": ...}` with numpy, PIL, file-path or `FileData` images (the composite is not used).
            Layers of another size than the background are resized to it (nearest neighbour).
        max_pixels: larger images are refused, `None` for no limit.

    Raises:
        `UserError`: no photo was uploaded, or nothing was painted (no layer, or only transparent ones), or an
            image is too large (`PhotoTooLargeError`) or not an image.
    """
    height, width = _background(editor_value, max_pixels).shape[:2]
    return _layers_mask(editor_value.get("layers"), (width, height), max_pixels)


def _background(editor_value: EditorValue | None, max_pixels: int | None = None) -> np.ndarray:
    if not editor_value or editor_value.get("background") is None:
        raise UserError(
            "Upload a photo first (or pick one of the examples). If you did, your browser could not open it: it "
            "may be too large or not an image.",
            title="No photo",
        )
    return _as_array(editor_value["background"], max_pixels)


def _drop_opaque_alpha(image: np.ndarray) -> np.ndarray:
    """RGBA / LA -> RGB / L when the alpha is fully opaque, as it is for every JPEG or opaque PNG upload."""
    if image.ndim != 3 or image.shape[-1] not in (2, 4) or not np.issubdtype(image.dtype, np.integer):
        return image
    return image[..., :-1] if (image[..., -1] == np.iinfo(image.dtype).max).all() else image


# --- inference -------------------------------------------------------------------------------------------


def inpaint(
    editor_value: EditorValue | None,
    hd_strategy: str = "auto",
    mask_dilation: int = 0,
    mask_blur: float = 0,
    texture: str = DEFAULT_TEXTURE,
    *,
    pipeline: PipelineSource = default_pipeline,
    max_pixels: int | None = MAX_PIXELS,
) -> tuple[Image.Image, tuple[Image.Image, Image.Image]]:
    """Fill the painted area of the editor's photo.

    Args:
        editor_value: the value of the `gr.ImageMask`, see `extract_mask`.
        hd_strategy: `"auto"`, `"crop"`, `"resize"` or `"original"` (see `MEDInpaintPipeline`).
        mask_dilation: grow the painted area by this many pixels first.
        mask_blur: feather the seam over this many pixels (then pixels next to the area change too).
        texture: `"exemplar"` (texture from the photo's own pixels) or `"none"` (the network's smooth fill).
        pipeline: the pipeline, or a function returning it (called on each request, so it may load lazily).
        max_pixels: larger photos are refused, `None` for no limit.

    Returns:
        the result at the photo's own size, and the (photo, result) pair for the before/after slider.

    Raises:
        `UserError` (a `gr.Error`): no photo, nothing painted, a photo too large (`PhotoTooLargeError`) or not an
            image, or settings the pipeline rejects.
    """
    background = _drop_opaque_alpha(_background(editor_value, max_pixels))
    height, width = background.shape[:2]
    mask = _layers_mask(editor_value.get("layers"), (width, height), max_pixels)
    try:
        dilation, blur = int(mask_dilation), float(mask_blur)
    except (TypeError, ValueError) as err:
        raise UserError(
            f"Mask dilation and blur must be numbers, not {mask_dilation!r} and {mask_blur!r}.",
            title="Cannot inpaint with these settings",
        ) from err
    try:
        result = _resolve(pipeline)(
            image=background,
            mask_image=mask,
            mask_dilation=dilation,
            mask_blur=blur,
            hd_strategy=hd_strategy,
            texture=texture,
            max_pixels=max_pixels,
            output_type="pil",
        ).images[0]
    except ImageTooLargeError as err:
        raise PhotoTooLargeError(err.width, err.height, max_pixels=err.max_pixels) from err
    except ValueError as err:
        raise UserError(str(err), title="Cannot inpaint with these settings") from err
    original = Image.fromarray(background)
    return result, (original, result)


def status_markdown(title: str, message: str) -> str:
    """The status line for a message: its title in bold, then the message (Markdown characters escaped)."""
    escaped = "".join(f"\\{char}" if char in "\\`*_[]<>#|~" else char for char in " ".join(message.split()))
    return f"**⚠️ {title}.** {escaped}"


def respond(
    editor_value: EditorValue | None,
    hd_strategy: str = "auto",
    mask_dilation: int = 0,
    mask_blur: float = 0,
    texture: str = DEFAULT_TEXTURE,
    *,
    pipeline: PipelineSource = default_pipeline,
    max_pixels: int | None = MAX_PIXELS,
) -> tuple[Image.Image | None, tuple[Image.Image, Image.Image] | None, str]:
    """`inpaint` for the page: (result, (photo, result), "") on success, else (None, None, a status message).

    User errors (`UserError`) are logged as one line; anything else is a bug or a server problem and is logged
    with its traceback. No exception leaves, so the page never shows Gradio's bare error state.
    """
    try:
        result, comparison = inpaint(
            editor_value, hd_strategy, mask_dilation, mask_blur, texture, pipeline=pipeline, max_pixels=max_pixels
        )
    except UserError as err:
        LOGGER.warning("Inpaint refused: %s: %s", err.title, " ".join(str(err.message).split()))
        return None, None, status_markdown(err.title, str(err.message))
    except Exception as err:
        LOGGER.exception("Inpaint failed")
        # A gr.Error (the model could not be loaded) is meant for the user; other messages may expose internals.
        message = err.message if isinstance(err, gr.Error) else "The server could not inpaint this photo."
        return None, None, status_markdown("Something went wrong", str(message))
    return result, comparison, ""


# --- examples --------------------------------------------------------------------------------------------

# Photos that ship with scikit-image (no download needed).
EXAMPLE_PHOTOS = ("coffee", "astronaut", "rocket", "chelsea")


def prepare_examples(folder: Path = EXAMPLES_DIR) -> list[str]:
    """Save the example photos as PNG into `folder` (once) and return their paths.

    Only photos: the editor of Gradio 6.31 misplaces brush layers that come with an example's value, so the
    user paints the mask.
    """
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in EXAMPLE_PHOTOS:
        path = folder / f"{name}.png"
        if not path.is_file():
            with atomic_file(path) as handle:
                Image.fromarray(getattr(data, name)()).save(handle, format="PNG")
        paths.append(str(path))
    return paths


# --- interface -------------------------------------------------------------------------------------------

# The upload guard, put into the page's <head> by `launch` (see `upload_guard`). Gradio 6.31's ImageEditor
# uploads its photo, layers and composite when Inpaint is pressed, while the page gathers the event's inputs. That
# happens after the outputs are set to pending but outside the dispatcher's error handling: if the server refuses
# an upload (HTTP 413 above `max_file_size`), the rejection escapes, the event never reaches the server and its
# spinner turns forever, with no message. This wrapper around `fetch` sends a short note in place of each file the
# server would refuse (larger than `max_file_size`), and in place of an upload that failed anyway (HTTP 413 from a
# proxy with a lower limit, any other error status, or no answer): the event then runs, and the app answers the
# note with a message (see `_refused_upload_note`).
UPLOAD_GUARD = r"""<script>
(() => {
  if (window.__medHfUploadGuard) return;
  window.__medHfUploadGuard = true;
  const MARKER = "__MARKER__";
  const LIMIT = __LIMIT__; // the server's max_file_size, for pages without Gradio's config (server-side rendering)
  const send = window.fetch.bind(window);
  const isUpload = (input, init) => {
    if (!init || String(init.method).toUpperCase() !== "POST" || !(init.body instanceof FormData)) return false;
    try {
      return new URL(String(input), window.location.href).pathname.endsWith("/gradio_api/upload");
    } catch (error) {
      return false;
    }
  };
  const pngSize = async (file) => {
    try {
      const head = new DataView(await file.slice(0, 24).arrayBuffer());
      if (head.byteLength === 24 && head.getUint32(0) === 0x89504e47 && head.getUint32(12) === 0x49484452) {
        return { width: head.getUint32(16), height: head.getUint32(20) };
      }
    } catch (error) {}
    return { width: null, height: null };
  };
  const withNotes = async (form, refuse, details) => {
    const notes = new FormData();
    let replaced = false;
    for (const [key, value] of form.entries()) {
      if (value instanceof File && refuse(value)) {
        const note = JSON.stringify({ bytes: value.size, ...(await pngSize(value)), ...details });
        notes.append(key, new File([MARKER + "\n" + note], value.name, { type: "text/plain" }), value.name);
        replaced = true;
      } else {
        notes.append(key, value);
      }
    }
    return replaced ? notes : null;
  };
  window.fetch = async (input, init) => {
    if (!isUpload(input, init)) return send(input, init);
    const limit = window.gradio_config?.max_file_size ?? LIMIT;
    if (Number.isFinite(limit)) {
      const notes = await withNotes(init.body, (file) => file.size > limit, { limit });
      if (notes) return send(input, { ...init, body: notes });
    }
    let failure, details;
    try {
      failure = await send(input, init);
      if (failure.ok) return failure;
      // Gradio's own 413 names its limit; a proxy's may not.
      const refusal = /allowed size of (\d+) bytes/.exec(await failure.clone().text());
      details = refusal ? { limit: Number(refusal[1]) } : { status: failure.status };
    } catch (error) {
      failure = error;
      details = { status: 0 }; // no answer at all, as when a proxy drops a large upload
    }
    try {
      const notes = await withNotes(init.body, () => true, details);
      if (notes) return await send(input, { ...init, body: notes });
    } catch (error) {}
    if (failure instanceof Response) return failure;
    throw failure;
  };
})();
</script>"""


def upload_guard(max_file_size: str | int | None) -> str:
    """`UPLOAD_GUARD` for a server whose `max_file_size` (as `Blocks.launch` takes it) is `max_file_size`."""
    return UPLOAD_GUARD.replace("__MARKER__", REFUSED_UPLOAD_MARKER).replace(
        "__LIMIT__", json.dumps(parse_file_size(max_file_size))
    )


def parse_file_size(size: str | int | None) -> int | None:
    """Bytes in a `max_file_size` of `Blocks.launch`: an int, `None`, or "<value><unit>" with unit b, kb, mb, gb
    or tb (powers of 1024)."""
    if size is None or isinstance(size, int):
        return size
    text = size.replace(" ", "").lower()
    for power, unit in reversed(list(enumerate(("b", "kb", "mb", "gb", "tb")))):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * 1024**power
    raise ValueError(f"max_file_size must be an int or like '64mb', not {size!r}")


def build_demo(
    pipeline: PipelineSource = default_pipeline,
    max_pixels: int | None = MAX_PIXELS,
    examples: bool = True,
) -> gr.Blocks:
    """The Gradio interface around `pipeline` (a pipeline, or a function returning it), queued.

    Element ids for tests: `image-editor` (the `gr.ImageMask`), `inpaint-button`, `status` (the message line),
    `result`. The event is exposed in the API as `/inpaint`; it reads the editor's files itself
    (`preprocess=False`), so a photo's size is checked before it is decoded.
    """

    def run(
        editor_value: EditorValue | None, hd_strategy: str, mask_dilation: int, mask_blur: float, texture: str
    ) -> tuple[Image.Image | None, tuple[Image.Image, Image.Image] | None, str]:
        """Fill the painted area of the photo; returns the result, the (photo, result) pair and a message.

        The message is empty on success; otherwise it says what is wrong (no photo, nothing painted, photo too
        large, settings rejected) and the two images are empty.
        """
        return respond(
            editor_value, hd_strategy, mask_dilation, mask_blur, texture, pipeline=pipeline, max_pixels=max_pixels
        )

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}")
        with gr.Row(equal_height=False):
            with gr.Column():
                editor = gr.ImageMask(
                    label="Photo: paint the area to fill",
                    type="numpy",
                    image_mode="RGBA",
                    format="png",
                    brush=BRUSH,
                    eraser=gr.Eraser(default_size="auto"),
                    transforms=(),
                    sources=("upload", "clipboard"),
                    elem_id="image-editor",
                )
                texture = gr.Radio(
                    [(TEXTURE_LABELS[mode], mode) for mode in TEXTURES],
                    value=DEFAULT_TEXTURE,
                    label="Fill",
                    info="Texture: the hole is rebuilt from patches of the photo itself, following the network's "
                    "structure and colours. Smooth: the network's own fill, softer.",
                    elem_id="texture",
                )
                with gr.Accordion("Advanced settings", open=False):
                    hd_strategy = gr.Radio(
                        list(HD_STRATEGIES),
                        value="auto",
                        label="High-resolution strategy",
                        info="crop: inpaint a crop around each painted area; resize: the whole photo at 256 px, "
                        "pasting back only the filled area; original: the photo at full size; auto: resize up "
                        "to 800 px, crop above.",
                    )
                    dilation = gr.Slider(
                        0, 64, value=0, step=1, label="Mask dilation (px)", info="Grows the painted area first."
                    )
                    blur = gr.Slider(0, 32, value=0, step=1, label="Mask blur (px)", info="Feathers the seam.")
                button = gr.Button("Inpaint", variant="primary", elem_id="inpaint-button")
                status = gr.Markdown(elem_id="status")
            with gr.Column(), gr.Tabs():
                with gr.Tab("Result"):
                    result = gr.Image(
                        label="Result (PNG, the photo's own size)",
                        type="pil",
                        format="png",
                        interactive=False,
                        buttons=["download", "fullscreen"],
                        elem_id="result",
                    )
                with gr.Tab("Before / after"):
                    comparison = gr.ImageSlider(
                        label="Before / after", type="pil", format="png", interactive=False, elem_id="comparison"
                    )
        if examples:
            gr.Examples(prepare_examples(), inputs=[editor], label="Example photos", cache_examples=False)
        button.click(
            run,
            inputs=[editor, hd_strategy, dilation, blur, texture],
            outputs=[result, comparison, status],
            api_name="inpaint",
            preprocess=False,
            concurrency_limit=CONCURRENCY_LIMIT,
        )
    return demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=CONCURRENCY_LIMIT)


def launch(demo: gr.Blocks, **kwargs: Any) -> Any:
    """Serve `demo` with the app's limits and upload guard; `kwargs` override `Blocks.launch` arguments (a
    `head` is added after the guard)."""
    options: dict[str, Any] = {
        # Spaces set GRADIO_SERVER_NAME=0.0.0.0; locally the app stays private to this machine.
        "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        "max_file_size": MAX_FILE_SIZE,
        "allowed_paths": [str(EXAMPLES_DIR)],
        "theme": gr.themes.Soft(),
        "css": CSS,
    }
    options.update(kwargs)
    options["head"] = "\n".join(part for part in (upload_guard(options["max_file_size"]), kwargs.get("head")) if part)
    return demo.launch(**options)


if __name__ == "__main__":
    launch(build_demo())
