"""Gradio demo of MEDFE image inpainting: paint over what should disappear and let the network fill it in.

Run it with `python app.py` (serves on 127.0.0.1, port `GRADIO_SERVER_PORT`, default 7860). The model comes
from the `MED_MODEL` environment variable (a local folder or a Hub repo id), else from the default model shipped
inside the `med_hf` package; it is loaded once, on the first request.

Tests import this module and build the interface around a pipeline of their own with `build_demo(pipe)`.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from med_hf.image_processing_med import ImageTooLargeError, check_image_size
from med_hf.pipeline_med import HD_STRATEGIES, MEDInpaintPipeline

TITLE = "MEDFE inpainting"
DESCRIPTION = """\
Upload a photo, **paint over what should disappear** with the brush (the eraser takes strokes back), then press
**Inpaint**. [MEDFE](https://github.com/KumapowerLIU/Rethinking-Inpainting-MEDFE) (Mutual Encoder-Decoder with
Feature Equalizations, ECCV 2020) fills the painted area; every other pixel of the photo comes back unchanged, at
the photo's own size, as a lossless PNG.
"""
MODEL_ENV_VAR = "MED_MODEL"
# Larger photos are refused: they would take long on a CPU Space, and a browser canvas struggles with them.
MAX_PIXELS = 16_000_000
MAX_FILE_SIZE = "20mb"
CONCURRENCY_LIMIT = 1
QUEUE_MAX_SIZE = 20
EXAMPLES_DIR = Path(tempfile.gettempdir()) / "med-hf-space-examples"
# Brush strokes are exported with the brush's opacity as their alpha; a see-through brush shows what it covers.
BRUSH = gr.Brush(colors=[("#ff2d7a", 0.6)], color_mode="fixed", default_size="auto")

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


# --- mask and image from the editor ----------------------------------------------------------------------


def _as_array(image: Any) -> np.ndarray:
    """A numpy array from the editor's numpy / PIL / file-path image."""
    if isinstance(image, str | os.PathLike):
        with Image.open(image) as opened:
            return np.asarray(opened.convert("RGBA") if "A" in opened.getbands() else opened)
    return np.asarray(image)


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


def extract_mask(editor_value: EditorValue | None) -> np.ndarray:
    """The hole to fill: bool (H, W) at the background's size, True wherever any layer was painted.

    Args:
        editor_value: the value of `gr.ImageMask` in RGBA mode, `{"background": ..., "layers": [...],
            "composite": ...}` with numpy (or PIL / file-path) images. Layers of another size than the
            background are resized to it (nearest neighbour).

    Raises:
        `gr.Error`: no photo was uploaded, or nothing was painted (no layer, or only transparent ones).
    """
    background = _background(editor_value)
    height, width = background.shape[:2]
    mask = np.zeros((height, width), dtype=bool)
    for layer in editor_value.get("layers") or []:
        if layer is not None:
            mask |= _resize_nearest(_painted(_as_array(layer)), (width, height))
    if not mask.any():
        raise gr.Error("Nothing is painted: paint over the area to fill with the brush first.", title="No mask")
    return mask


def _background(editor_value: EditorValue | None) -> np.ndarray:
    if not editor_value or editor_value.get("background") is None:
        raise gr.Error("Upload a photo first (or pick one of the examples).", title="No image")
    return _as_array(editor_value["background"])


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
        pipeline: the pipeline, or a function returning it (called on each request, so it may load lazily).
        max_pixels: larger photos are refused, `None` for no limit.

    Returns:
        the result at the photo's own size, and the (photo, result) pair for the before/after slider.

    Raises:
        `gr.Error`: no photo, nothing painted, a photo too large, or settings the pipeline rejects.
    """
    background = _drop_opaque_alpha(_background(editor_value))
    height, width = background.shape[:2]
    try:
        check_image_size(width, height, max_pixels=max_pixels)
    except ImageTooLargeError as err:
        raise gr.Error(f"This photo is too large: {err}", title="Image too large") from err
    mask = extract_mask(editor_value)
    try:
        result = _resolve(pipeline)(
            image=background,
            mask_image=mask,
            mask_dilation=int(mask_dilation),
            mask_blur=float(mask_blur),
            hd_strategy=hd_strategy,
            output_type="pil",
        ).images[0]
    except ImageTooLargeError as err:
        raise gr.Error(f"This photo is too large: {err}", title="Image too large") from err
    except ValueError as err:
        raise gr.Error(str(err), title="Cannot inpaint with these settings") from err
    original = Image.fromarray(background)
    return result, (original, result)


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
            # Written under a temporary name first, so that another process starting now never reads half a file.
            partial = path.with_name(f".{name}.{os.getpid()}.png")
            Image.fromarray(getattr(data, name)()).save(partial)
            partial.replace(path)
        paths.append(str(path))
    return paths


# --- interface -------------------------------------------------------------------------------------------


def build_demo(
    pipeline: PipelineSource = default_pipeline,
    max_pixels: int | None = MAX_PIXELS,
    examples: bool = True,
) -> gr.Blocks:
    """The Gradio interface around `pipeline` (a pipeline, or a function returning it), queued.

    Element ids for tests: `image-editor` (the `gr.ImageMask`), `inpaint-button`, `result`.
    The event is exposed in the API as `/inpaint`.
    """

    def run(
        editor_value: EditorValue | None, hd_strategy: str, mask_dilation: int, mask_blur: float
    ) -> tuple[Image.Image, tuple[Image.Image, Image.Image]]:
        """Fill the painted area of the photo; returns the result and the (photo, result) pair."""
        return inpaint(editor_value, hd_strategy, mask_dilation, mask_blur, pipeline=pipeline, max_pixels=max_pixels)

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
            inputs=[editor, hd_strategy, dilation, blur],
            outputs=[result, comparison],
            api_name="inpaint",
            concurrency_limit=CONCURRENCY_LIMIT,
        )
    return demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=CONCURRENCY_LIMIT)


def launch(demo: gr.Blocks, **kwargs: Any) -> Any:
    """Serve `demo` with the app's limits; `kwargs` override `Blocks.launch` arguments."""
    options: dict[str, Any] = {
        # Spaces set GRADIO_SERVER_NAME=0.0.0.0; locally the app stays private to this machine.
        "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        "max_file_size": MAX_FILE_SIZE,
        "allowed_paths": [str(EXAMPLES_DIR)],
        "theme": gr.themes.Soft(),
    }
    return demo.launch(**{**options, **kwargs})


if __name__ == "__main__":
    launch(build_demo())
