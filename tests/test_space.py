"""The Gradio Space (space/app.py): mask extraction, the inference function, and the app through gradio_client."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

gr = pytest.importorskip("gradio")

APP_PATH = Path(__file__).resolve().parents[1] / "space" / "app.py"
WIDTH, HEIGHT = 300, 200


@pytest.fixture(scope="module")
def app(space_app):
    return space_app


@pytest.fixture(scope="module")
def pipe():
    from med_hf import MEDConfig, MEDInpaintPipeline, MEDModel

    torch.manual_seed(0)
    return MEDInpaintPipeline(model=MEDModel(MEDConfig.from_preset("tiny", image_size=256)).eval())


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """An RGB photo stand-in: smooth colour ramps plus some texture, not a multiple of 64 in size."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([x * 255 / WIDTH, y * 255 / HEIGHT, (x + y) % 256], axis=-1) + rng.normal(0, 8, (HEIGHT, WIDTH, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def rgba(image: np.ndarray) -> np.ndarray:
    """What the editor gives in RGBA mode for an opaque upload."""
    return np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])


def stroke_layer(width: int = WIDTH, height: int = HEIGHT, box=(100, 60, 180, 120), alpha: int = 255) -> np.ndarray:
    """A layer as the canvas exports it: RGB 0 everywhere (black brush), alpha on the stroke only."""
    layer = np.zeros((height, width, 4), np.uint8)
    left, top, right, bottom = box
    layer[top:bottom, left:right, 3] = alpha
    return layer


def box_mask(box=(100, 60, 180, 120), width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = True
    return mask


# --- mask extraction -------------------------------------------------------------------------------------


def test_mask_is_the_union_of_the_layers_alpha(app, photo):
    first, second = stroke_layer(box=(10, 10, 50, 40)), stroke_layer(box=(200, 100, 260, 180), alpha=3)
    value = {"background": rgba(photo), "layers": [first, second], "composite": None}
    mask = app.extract_mask(value)
    assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == bool
    np.testing.assert_array_equal(mask, box_mask((10, 10, 50, 40)) | box_mask((200, 100, 260, 180)))


def test_alpha_only_strokes_count_and_rgb_is_ignored(app, photo):
    layer = stroke_layer()  # RGB 0 under the stroke: only the alpha marks it
    layer[0:5, 0:5, :3] = 255  # colour without alpha is not a stroke
    mask = app.extract_mask({"background": rgba(photo), "layers": [layer], "composite": None})
    np.testing.assert_array_equal(mask, box_mask())


def test_erased_stroke_is_not_masked(app, photo):
    layer = stroke_layer()
    layer[60:120, 140:180, 3] = 0  # the eraser leaves alpha 0 (its RGB does not matter)
    layer[60:120, 140:180, :3] = 17
    mask = app.extract_mask({"background": rgba(photo), "layers": [layer], "composite": None})
    np.testing.assert_array_equal(mask, box_mask((100, 60, 140, 120)))


def test_layers_of_another_size_are_resized_nearest(app, photo):
    half = stroke_layer(WIDTH // 2, HEIGHT // 2, box=(50, 30, 90, 60))
    mask = app.extract_mask({"background": rgba(photo), "layers": [half], "composite": None})
    assert mask.shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(mask, box_mask((100, 60, 180, 120)))


def test_pil_and_path_layers_are_accepted(app, photo, tmp_path):
    path = tmp_path / "layer.png"
    Image.fromarray(stroke_layer()).save(path)
    for layer in (Image.fromarray(stroke_layer()), str(path)):
        mask = app.extract_mask({"background": Image.fromarray(photo), "layers": [layer], "composite": None})
        np.testing.assert_array_equal(mask, box_mask())


@pytest.mark.parametrize("layers", [[], None, [np.zeros((HEIGHT, WIDTH, 4), np.uint8)]], ids=["none", "null", "empty"])
def test_nothing_painted_is_an_error(app, photo, layers):
    with pytest.raises(gr.Error, match="Nothing is painted"):
        app.extract_mask({"background": rgba(photo), "layers": layers, "composite": rgba(photo)})


@pytest.mark.parametrize("value", [None, {}, {"background": None, "layers": [stroke_layer()], "composite": None}])
def test_no_background_is_an_error(app, value):
    with pytest.raises(gr.Error, match="Upload a photo"):
        app.extract_mask(value)


# --- inference function ----------------------------------------------------------------------------------


def assert_inpainted(result: np.ndarray, photo: np.ndarray, mask: np.ndarray) -> None:
    """Same size, bit-identical outside the mask, changed inside it."""
    assert result.shape == photo.shape
    np.testing.assert_array_equal(result[~mask], photo[~mask])
    changed = (result != photo).any(axis=-1)
    assert changed[mask].mean() > 0.5


@pytest.mark.parametrize("strategy", ["auto", "crop", "original"])
def test_inpaint_changes_only_the_painted_area(app, pipe, photo, strategy):
    value = {"background": rgba(photo), "layers": [stroke_layer()], "composite": None}
    result, (before, after) = app.inpaint(value, strategy, 0, 0, pipeline=pipe)
    assert result.mode == "RGB" and result.size == (WIDTH, HEIGHT)
    assert_inpainted(np.asarray(result), photo, box_mask())
    np.testing.assert_array_equal(np.asarray(before), photo)
    assert after is result


def test_inpaint_dilation_grows_the_area(app, pipe, photo):
    value = {"background": rgba(photo), "layers": [stroke_layer()], "composite": None}
    result, _ = app.inpaint(value, "resize", 5, 0, pipeline=pipe)
    grown = box_mask((95, 55, 185, 125))
    assert_inpainted(np.asarray(result), photo, grown)
    ring = grown & ~box_mask((97, 57, 183, 123)) & ~box_mask((100, 0, 180, HEIGHT)) | box_mask((100, 57, 180, 60))
    assert (np.asarray(result) != photo).any(axis=-1)[ring].mean() > 0.5


def test_inpaint_keeps_transparency(app, pipe, photo):
    background = rgba(photo)
    background[:20, :20, 3] = 0
    result, _ = app.inpaint({"background": background, "layers": [stroke_layer()]}, pipeline=pipe)
    assert result.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(result)[..., 3], background[..., 3])


def test_inpaint_loads_the_pipeline_lazily(app, pipe, photo):
    calls = []

    def loader():
        calls.append(1)
        return pipe

    value = {"background": rgba(photo), "layers": [stroke_layer()], "composite": None}
    app.inpaint(value, pipeline=loader)
    assert calls == [1]


def test_too_large_image_is_an_error(app, pipe, photo):
    value = {"background": rgba(photo), "layers": [stroke_layer()], "composite": None}
    with pytest.raises(gr.Error, match="too large"):
        app.inpaint(value, pipeline=pipe, max_pixels=WIDTH * HEIGHT - 1)


def test_pipeline_errors_become_gradio_errors(app, pipe, photo):
    value = {"background": rgba(photo), "layers": [stroke_layer()], "composite": None}
    with pytest.raises(gr.Error, match="hd_strategy"):
        app.inpaint(value, "bogus", pipeline=pipe)


def test_examples_are_png_photos(app, tmp_path):
    paths = app.prepare_examples(tmp_path)
    assert len(paths) >= 2
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB" and min(image.size) >= 256
    assert app.prepare_examples(tmp_path) == paths  # a second start reuses them


def test_model_comes_from_the_environment_and_loads_once(app, pipe, tmp_path, monkeypatch):
    pipe.model.save_pretrained(tmp_path / "model")
    monkeypatch.setenv(app.MODEL_ENV_VAR, str(tmp_path / "model"))
    app._load_pipeline.cache_clear()
    try:
        loaded = app.default_pipeline()
        assert loaded is app.default_pipeline()
        assert loaded.model.config.image_size == 256
        monkeypatch.setenv(app.MODEL_ENV_VAR, str(tmp_path / "missing"))
        with pytest.raises(gr.Error, match="could not be loaded"):
            app.default_pipeline()
    finally:
        app._load_pipeline.cache_clear()


def test_space_metadata():
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(APP_PATH.parent / "README.md").data
    assert card.sdk == "gradio" and card.sdk_version == gr.__version__
    assert (APP_PATH.parent / card.app_file).resolve() == APP_PATH
    assert card.models and len(card.short_description) <= 60
    requirements = (APP_PATH.parent / "requirements.txt").read_text().lower().splitlines()
    names = [line.split("@")[0].split(">")[0].split("=")[0].strip() for line in requirements if line[:1].isalpha()]
    assert "med-hf" in names and "scikit-image" in names and "gradio" not in names


# --- the whole app through gradio_client ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(app, pipe):
    demo = app.build_demo(pipe)
    app.launch(demo, server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield demo
    demo.close()


def test_app_serves_the_inpaint_api(server, photo, tmp_path):
    from gradio_client import Client, handle_file

    background, layer = tmp_path / "photo.png", tmp_path / "layer.png"
    Image.fromarray(photo).save(background)
    Image.fromarray(stroke_layer()).save(layer)
    client = Client(server.local_url, verbose=False)
    result_path, comparison = client.predict(
        {"background": handle_file(str(background)), "layers": [handle_file(str(layer))], "composite": None},
        "auto",
        0,
        0,
        api_name="/inpaint",
    )
    with Image.open(result_path) as result:
        assert result.format == "PNG"
        assert_inpainted(np.asarray(result.convert("RGB")), photo, box_mask())
    assert len(comparison) == 2


def test_app_reports_missing_mask(server, photo, tmp_path):
    from gradio_client import Client, handle_file

    background = tmp_path / "photo.png"
    Image.fromarray(photo).save(background)
    client = Client(server.local_url, verbose=False)
    with pytest.raises(Exception, match="Nothing is painted"):
        client.predict(
            {"background": handle_file(str(background)), "layers": [], "composite": None},
            "auto",
            0,
            0,
            api_name="/inpaint",
        )


def test_app_config_has_stable_ids(server):
    elem_ids = {component.get("props", {}).get("elem_id") for component in server.config["components"]}
    assert {"image-editor", "inpaint-button", "result"} <= elem_ids
