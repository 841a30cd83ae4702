"""The Gradio Space (space/app.py): mask extraction, the inference function, and the app through gradio_client."""

from __future__ import annotations

import json
import logging
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


@pytest.mark.parametrize("texture", ["exemplar", "none"])
def test_both_textures_fill_only_the_painted_area(app, pipe, photo, texture):
    value = {"background": rgba(photo), "layers": [stroke_layer()], "composite": None}
    result, _ = app.inpaint(value, "auto", 0, 0, texture, pipeline=pipe)
    assert_inpainted(np.asarray(result), photo, box_mask())


def test_the_textures_differ_and_exemplar_has_the_photos_grain(app, pipe, photo):
    """Texture: the hole gets about as much fine detail as the photo has; smooth: the network's own fill."""
    value = {"background": rgba(photo), "layers": [stroke_layer()], "composite": None}
    exemplar, _ = app.inpaint(value, "original", 0, 0, "exemplar", pipeline=pipe)
    smooth, _ = app.inpaint(value, "original", 0, 0, "none", pipeline=pipe)
    assert not np.array_equal(np.asarray(exemplar), np.asarray(smooth))

    def detail(image: np.ndarray, where: np.ndarray) -> float:
        """Mean |4-neighbour Laplacian| over `where`."""
        pixels = image.astype(np.float64)
        laplacian = 4 * pixels[1:-1, 1:-1] - pixels[:-2, 1:-1] - pixels[2:, 1:-1] - pixels[1:-1, :-2] - pixels[1:-1, 2:]
        return float(np.abs(laplacian)[where[1:-1, 1:-1]].mean())

    inner = box_mask((104, 64, 176, 116))
    ratio = detail(np.asarray(exemplar), inner) / detail(photo, inner)
    assert 0.6 < ratio < 1.5, f"the texture fill has {ratio:.2f}x the photo's fine detail"
    assert app.TEXTURE_LABELS.keys() == {"exemplar", "none"}


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
    with pytest.raises(app.PhotoTooLargeError) as caught:
        app.inpaint(value, pipeline=pipe, max_pixels=WIDTH * HEIGHT - 1)
    assert isinstance(caught.value, gr.Error)
    assert caught.value.message == (
        "This photo is too large for this Space: 300 x 200 px (60,000 pixels); the limit is 59,999 pixels. "
        "Scale it down to at most 299 x 199 px and try again."
    )


def test_pipeline_errors_become_gradio_errors(app, pipe, photo):
    value = {"background": rgba(photo), "layers": [stroke_layer()], "composite": None}
    with pytest.raises(app.UserError, match="hd_strategy"):
        app.inpaint(value, "bogus", pipeline=pipe)
    with pytest.raises(app.UserError, match="must be numbers"):
        app.inpaint(value, "auto", "wide", pipeline=pipe)


# --- files as the app receives them (preprocess=False: Gradio's FileData as a dict) ---------------------


def file_data(path: Path) -> dict:
    return {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


@pytest.fixture
def photo_files(photo, tmp_path) -> tuple[Path, Path]:
    """The photo as the editor uploads it (an opaque RGBA PNG) and a stroke layer."""
    background, layer = tmp_path / "background.png", tmp_path / "layer_0.png"
    Image.fromarray(rgba(photo)).save(background)
    Image.fromarray(stroke_layer()).save(layer)
    return background, layer


def test_inpaint_reads_files(app, pipe, photo, photo_files):
    background, layer = photo_files
    for value in (
        {"background": file_data(background), "layers": [file_data(layer)], "composite": None, "id": None},
        {"background": str(background), "layers": [str(layer)]},
    ):
        result, (before, _) = app.inpaint(value, pipeline=pipe)
        assert result.mode == "RGB"  # the opaque alpha is dropped
        assert_inpainted(np.asarray(result), photo, box_mask())
        np.testing.assert_array_equal(np.asarray(before), photo)


def test_large_files_are_refused_before_decoding(app, pipe, photo_files, monkeypatch):
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("a too-large image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    background, layer = photo_files
    value = {"background": file_data(background), "layers": [file_data(layer)], "composite": None}
    with pytest.raises(app.PhotoTooLargeError) as caught:
        app.inpaint(value, pipeline=pipe, max_pixels=50_000)
    size = background.stat().st_size / 1024
    assert caught.value.message.startswith(f"This photo is too large for this Space: {size:.1f} KB / 300 x 200 px")
    assert "the limit is 50,000 pixels. Scale it down to at most 273 x 182 px" in caught.value.message
    assert caught.value.title == "Photo too large"


def test_large_mask_layers_are_refused(app, pipe, photo, tmp_path):
    layer = tmp_path / "layer.png"
    Image.fromarray(stroke_layer(2 * WIDTH, 2 * HEIGHT)).save(layer)
    value = {"background": rgba(photo), "layers": [file_data(layer)], "composite": None}
    with pytest.raises(app.PhotoTooLargeError, match="This mask layer is too large"):
        app.inpaint(value, pipeline=pipe, max_pixels=WIDTH * HEIGHT)


def test_files_that_are_not_images_are_user_errors(app, pipe, photo, tmp_path):
    garbage = tmp_path / "background.png"
    garbage.write_bytes(b"not a PNG at all")
    with pytest.raises(app.UserError, match="not an image file"):
        app.inpaint({"background": file_data(garbage), "layers": [stroke_layer()]}, pipeline=pipe)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(rgba(photo)).save(tmp_path / "whole.png")
    truncated.write_bytes((tmp_path / "whole.png").read_bytes()[:2000])
    with pytest.raises(app.UserError, match="could not be decoded"):
        app.inpaint({"background": file_data(truncated), "layers": [stroke_layer()]}, pipeline=pipe)


def write_note(path: Path, note: dict | str) -> Path:
    """What the page's upload guard sends in place of a file the server would refuse."""
    body = note if isinstance(note, str) else json.dumps(note)
    path.write_text("med-hf:refused-upload\n" + body)
    return path


@pytest.mark.parametrize(
    ("note", "expected"),
    [
        (
            {"bytes": 70 * 2**20, "width": 4000, "height": 3000, "limit": 64 * 2**20},
            "This photo is too large for this Space: 70.0 MB / 4000 x 3000 px (12.0 MP); the limit is 64.0 MB per "
            "upload (the editor sends the photo as a PNG). Scale it down to about 3442 x 2581 px and try again.",
        ),
        (
            {"bytes": 90 * 2**20, "width": 6000, "height": 4000, "limit": 64 * 2**20},
            "This photo is too large for this Space: 90.0 MB / 6000 x 4000 px (24.0 MP); the limit is 16.0 MP. "
            "Scale it down to at most 4898 x 3265 px and try again.",
        ),
        (
            {"bytes": 30 * 2**20, "width": 3000, "height": 3000, "status": 413},
            "This photo is too large for this Space: 30.0 MB / 3000 x 3000 px (9.0 MP); the server refused to "
            "receive it. Scale it down and try again.",
        ),
        (
            {"bytes": 30 * 2**20, "width": None, "height": None, "limit": 20 * 2**20},
            "This photo is too large for this Space: 30.0 MB; the limit is 20.0 MB per upload (the editor sends "
            "the photo as a PNG). Scale it down and try again.",
        ),
        (
            {"bytes": 30 * 2**20, "width": None, "height": None, "status": 413},
            "This photo is too large for this Space: 30.0 MB; the server refused to receive it. Scale it down and "
            "try again.",
        ),
        ("{broken", "This photo is too large for this Space; the limit is 16.0 MP. Scale it down and try again."),
    ],
    ids=["upload-limit", "pixel-limit", "http-413", "not-a-png", "http-413-not-a-png", "broken-note"],
)
def test_refused_uploads_become_messages(app, pipe, tmp_path, note, expected):
    value = {"background": file_data(write_note(tmp_path / "background.png", note)), "layers": [], "composite": None}
    with pytest.raises(app.PhotoTooLargeError) as caught:
        app.inpaint(value, pipeline=pipe, max_pixels=16_000_000)
    assert caught.value.message == expected


@pytest.mark.parametrize(
    ("status", "reason"), [(502, "the server answered HTTP 502"), (0, "the connection failed")], ids=["502", "dropped"]
)
def test_failed_uploads_become_messages(app, pipe, tmp_path, status, reason):
    note = {"bytes": 3 * 2**20, "width": 1200, "height": 800, "status": status}
    value = {"background": file_data(write_note(tmp_path / "background.png", note)), "layers": [], "composite": None}
    with pytest.raises(app.UserError) as caught:
        app.inpaint(value, pipeline=pipe)
    assert caught.value.title == "Upload failed"
    assert caught.value.message == (
        f"The photo (3.0 MB / 1200 x 800 px) could not be uploaded: {reason}. Try again; a smaller photo uploads "
        "faster."
    )


@pytest.mark.parametrize(
    ("pixels", "limit", "expected"),
    [
        (24_000_000, 16_000_000, "24.0 MP"),
        (16_004_000, 16_000_000, "16.004 MP"),
        (16_000_001, 16_000_000, "16,000,001 pixels"),
        (19_200, None, "19,200 pixels"),
        (16_000_000, 16_004_000, "16.000 MP"),
    ],
)
def test_megapixels_tell_the_size_from_the_limit(app, pixels, limit, expected):
    assert app._megapixels(pixels, limit) == expected


def test_status_markdown_escapes_the_message(app):
    assert (
        app.status_markdown("No mask", "a_b *c* [d](e) <b>\nnext")
        == "**⚠️ No mask.** a\\_b \\*c\\* \\[d\\](e) \\<b\\> next"
    )


# --- what the page gets: messages instead of errors, one log line per user error -------------------------


def space_records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "med_hf.space"]


USER_ERRORS = {
    "no-photo": (lambda photo: {"background": None, "layers": [], "composite": None}, {}, "No photo", "Upload a photo"),
    "nothing-painted": (
        lambda photo: {"background": rgba(photo), "layers": [], "composite": None},
        {},
        "No mask",
        "Nothing is painted",
    ),
    "too-large": (
        lambda photo: {"background": rgba(photo), "layers": [stroke_layer()], "composite": None},
        {"max_pixels": 1000},
        "Photo too large",
        "This photo is too large for this Space: 300 x 200 px",
    ),
    "bad-settings": (
        lambda photo: {"background": rgba(photo), "layers": [stroke_layer()], "composite": None},
        {"hd_strategy": "bogus"},
        "Cannot inpaint with these settings",
        "hd\\_strategy must be one of",
    ),
}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_user_errors_are_messages_and_one_log_line(app, pipe, photo, caplog, case):
    make_value, options, title, text = USER_ERRORS[case]
    caplog.set_level(logging.INFO, logger="med_hf.space")
    result, comparison, status = app.respond(make_value(photo), pipeline=pipe, **options)
    assert result is None and comparison is None
    assert status.startswith(f"**⚠️ {title}.** ") and text in status
    (record,) = space_records(caplog)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "\n" not in record.getMessage() and title in record.getMessage()


def test_unexpected_errors_are_messages_with_a_logged_traceback(app, photo, caplog):
    def broken_pipeline(**kwargs):
        raise RuntimeError("secret internals")

    caplog.set_level(logging.INFO, logger="med_hf.space")
    value = {"background": rgba(photo), "layers": [stroke_layer()], "composite": None}
    result, comparison, status = app.respond(value, pipeline=lambda: broken_pipeline)
    assert result is None and comparison is None
    assert status.startswith("**⚠️ Something went wrong.**") and "secret" not in status
    (record,) = space_records(caplog)
    assert record.levelno == logging.ERROR and record.exc_info[0] is RuntimeError


def test_success_has_an_empty_status(app, pipe, photo, caplog):
    caplog.set_level(logging.INFO, logger="med_hf.space")
    value = {"background": rgba(photo), "layers": [stroke_layer()], "composite": None}
    result, (before, after), status = app.respond(value, pipeline=pipe)
    assert status == "" and after is result and not space_records(caplog)


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
    # The photo (300 x 200) is just within the pixel limit, so one more column is too large.
    demo = app.build_demo(pipe, max_pixels=WIDTH * HEIGHT)
    app.launch(demo, server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield demo
    demo.close()


@pytest.fixture
def client(server):
    from gradio_client import Client

    return Client(server.local_url, verbose=False)


def predict(client, background: Path | None, layers: list[Path], hd_strategy: str = "auto", texture: str = "exemplar"):
    from gradio_client import handle_file

    value = {
        "background": handle_file(str(background)) if background else None,
        "layers": [handle_file(str(layer)) for layer in layers],
        "composite": None,
    }
    return client.predict(value, hd_strategy, 0, 0, texture, api_name="/inpaint")


@pytest.mark.parametrize("texture", ["exemplar", "none"])
def test_app_serves_the_inpaint_api(client, photo, tmp_path, texture):
    background, layer = tmp_path / "photo.png", tmp_path / "layer.png"
    Image.fromarray(photo).save(background)
    Image.fromarray(stroke_layer()).save(layer)
    result_path, comparison, status = predict(client, background, [layer], texture=texture)
    with Image.open(result_path) as result:
        assert result.format == "PNG"
        assert_inpainted(np.asarray(result.convert("RGB")), photo, box_mask())
    assert len(comparison) == 2
    assert status == ""


# (case, title, text of the message)
APP_USER_ERRORS = [
    ("no-photo", "No photo", "Upload a photo first"),
    ("nothing-painted", "No mask", "Nothing is painted"),
    ("too-large", "Photo too large", "/ 301 x 200 px (60,200 pixels); the limit is 60,000 pixels"),
    ("refused-upload", "Photo too large", "30.0 MB / 300 x 200 px (60,000 pixels); the limit is 20.0 MB per upload"),
    ("not-an-image", "Not an image", "The photo is not an image file that can be read."),
    ("bad-settings", "Cannot inpaint with these settings", "hd\\_strategy must be one of"),
]


@pytest.mark.parametrize(("case", "title", "text"), APP_USER_ERRORS, ids=[case for case, _, _ in APP_USER_ERRORS])
def test_app_reports_user_errors_in_the_status(client, photo, tmp_path, caplog, capfd, case, title, text):
    caplog.set_level(logging.INFO, logger="med_hf.space")
    background, layer = tmp_path / "background.png", tmp_path / "layer.png"
    Image.fromarray(stroke_layer()).save(layer)
    layers, hd_strategy = [layer], "auto"
    if case == "no-photo":
        background = None
    elif case == "nothing-painted":
        Image.fromarray(photo).save(background)
        layers = []
    elif case == "too-large":
        Image.fromarray(np.pad(photo, ((0, 0), (0, 1), (0, 0)))).save(background)
    elif case == "refused-upload":
        write_note(background, {"bytes": 30 * 2**20, "width": WIDTH, "height": HEIGHT, "limit": 20 * 2**20})
    elif case == "not-an-image":
        background.write_text("hello")
    else:
        Image.fromarray(photo).save(background)
        hd_strategy = "bogus"
    result, comparison, status = predict(client, background, layers, hd_strategy)
    assert result is None and comparison is None
    assert status.startswith(f"**⚠️ {title}.** ") and text in status, status
    (record,) = space_records(caplog)
    assert record.levelno == logging.WARNING and record.exc_info is None and "\n" not in record.getMessage()
    assert "Traceback" not in capfd.readouterr().err


def test_app_reads_only_uploaded_files(server, caplog):
    """The event reads the editor's files itself (preprocess=False); Gradio still refuses paths it did not receive."""
    import httpx

    caplog.set_level(logging.INFO, logger="med_hf.space")
    url = server.local_url.rstrip("/")
    secret = {"path": str(APP_PATH), "meta": {"_type": "gradio.FileData"}}
    data = [{"background": secret, "layers": [], "composite": None}, "auto", 0, 0, "exemplar"]
    event = httpx.post(f"{url}/gradio_api/call/inpaint", json={"data": data}, timeout=30).json()["event_id"]
    stream = httpx.get(f"{url}/gradio_api/call/inpaint/{event}", timeout=30).text
    assert "event: error" in stream and "app.py" not in stream
    assert not space_records(caplog)


def test_app_config_has_stable_ids(server):
    elem_ids = {component.get("props", {}).get("elem_id") for component in server.config["components"]}
    assert {"image-editor", "inpaint-button", "status", "result", "texture"} <= elem_ids


def test_app_serves_the_upload_guard_and_limits(server, app):
    import httpx

    page = httpx.get(server.local_url, timeout=30).text
    assert "window.__medHfUploadGuard" in page and app.REFUSED_UPLOAD_MARKER in page
    assert f"const LIMIT = {server.max_file_size};" in page
    # The editor sends an RGBA PNG: 4 bytes a pixel at worst (a noisy photo), plus a little.
    assert server.max_file_size == 64 * 2**20 >= 4 * app.MAX_PIXELS + 1_000_000


@pytest.mark.parametrize(
    ("size", "expected"),
    [("64mb", 64 * 2**20), ("32 KB", 32 * 2**10), ("100b", 100), ("1gb", 2**30), (12345, 12345), (None, None)],
)
def test_file_sizes_parse_as_gradio_does(app, size, expected):
    assert app.parse_file_size(size) == expected


def test_bad_file_sizes_are_refused(app):
    with pytest.raises(ValueError, match="max_file_size"):
        app.parse_file_size("64 megabytes")
