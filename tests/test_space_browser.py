"""The Gradio Space driven by a real Chromium: upload a photo, paint a stroke, inpaint, check the result; and a
photo too large to upload, which must end in a message, not in a spinner that never stops.

Needs Debian's Chromium (`.ci/install_browser.sh` installs it; `CHROMIUM` overrides its path) and the playwright
Python package; Playwright's own browser download is not used.
"""

from __future__ import annotations

import io
import os
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
WIDTH, HEIGHT = 480, 320
# The stroke, in image pixels: a diagonal through the middle of the photo.
STROKE = ((0.3 * WIDTH, 0.35 * HEIGHT), (0.7 * WIDTH, 0.65 * HEIGHT))
# The brush's footprint is Gradio's choice ("auto" size): changes may reach this far from the stroke's centre line.
BAND = 0.2 * min(WIDTH, HEIGHT)
TIMEOUT_MS = 60_000
# The message for a refused photo comes back in about a second; this leaves room for a loaded machine, while a
# spinner that never stops (the bug) still fails fast.
MESSAGE_TIMEOUT_MS = 15_000
# The upload limit of the second server: the photo's PNG (about 370 KB as the editor sends it) is over it, the
# brush layer (a few KB) is not.
SMALL_UPLOAD_LIMIT = "32kb"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def pipe():
    from med_hf import MEDConfig, MEDInpaintPipeline, MEDModel

    torch.manual_seed(0)
    return MEDInpaintPipeline(model=MEDModel(MEDConfig.from_preset("tiny", image_size=256)).eval())


def serve(app, pipe, **launch_options):
    demo = app.build_demo(pipe, examples=False)
    app.launch(demo, server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_options)
    return demo


@pytest.fixture(scope="module")
def server(space_app, pipe):
    demo = serve(space_app, pipe)
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def small_upload_server(space_app, pipe):
    """The app with a small upload limit, so that an ordinary small photo is too large to upload."""
    demo = serve(space_app, pipe, max_file_size=SMALL_UPLOAD_LIMIT)
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium not found at {CHROMIUM}; install it with .ci/install_browser.sh")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def photo(tmp_path) -> tuple[np.ndarray, Path]:
    """A textured green photo, easy to tell apart from the editor's grey, indigo and pink (brush) pixels."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    red = 20 + 60 * x / WIDTH
    green = 180 + 50 * np.sin(x / 17) * np.cos(y / 23)
    blue = 20 + 70 * y / HEIGHT
    rgb = np.stack([red, green, blue], axis=-1) + rng.normal(0, 6, (HEIGHT, WIDTH, 3))
    pixels = np.clip(rgb, 0, 255).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    return pixels, path


def screenshot(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(int)


def find_photo(canvas) -> tuple[float, float, float] | None:
    """(left, top, scale) of the photo inside the canvas element, in CSS pixels, once it is drawn."""
    shot = screenshot(canvas)
    green = (shot[..., 1] - np.maximum(shot[..., 0], shot[..., 2])) > 50
    if green.sum() < 0.1 * WIDTH * HEIGHT * 0.25:
        return None
    # Rows and columns mostly covered by the photo; the editor's label and toolbar overlap it a little.
    cols = np.nonzero(green.sum(axis=0) > 0.5 * green.sum(axis=0).max())[0]
    rows = np.nonzero(green.sum(axis=1) > 0.5 * green.sum(axis=1).max())[0]
    width, height = cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1
    if abs(width / height - WIDTH / HEIGHT) > 0.03:  # still being laid out
        return None
    return cols[0], rows[0], width / WIDTH


def upload(page, canvas, path: Path, attempts: int = 3) -> tuple[float, float, float]:
    """Upload `path` into the editor and wait until it is drawn; returns where (see `find_photo`)."""
    for attempt in range(attempts):
        page.locator("#image-editor input[type=file]").set_input_files(str(path))
        try:
            return wait_for(lambda: find_photo(canvas), 20, "the photo to appear on the editor's canvas")
        except AssertionError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value is not None and value is not False:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def distance_to_stroke(width: int, height: int) -> np.ndarray:
    """Distance in pixels of every pixel centre to the stroke's centre line, shape (height, width)."""
    (x0, y0), (x1, y1) = STROKE
    y, x = np.mgrid[0:height, 0:width] + 0.5
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


def paint_stroke(page, canvas, placement: tuple[float, float, float], segments: int = 4) -> None:
    """Drag the mouse along `STROKE`; few events, as each one re-renders the (software-GL) canvas."""
    box = canvas.bounding_box()
    left, top, scale = placement
    (x0, y0), (x1, y1) = STROKE

    def to_page(x: float, y: float) -> tuple[float, float]:
        return box["x"] + left + x * scale, box["y"] + top + y * scale

    page.mouse.move(*to_page(x0, y0))
    page.mouse.down()
    for i in range(1, segments + 1):
        page.mouse.move(*to_page(x0 + (x1 - x0) * i / segments, y0 + (y1 - y0) * i / segments))
    page.mouse.up()


def open_app(browser, url: str):
    """A new page with the app loaded and its editor ready; returns (page, the editor's canvas)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.locator("#inpaint-button").wait_for(state="visible")
    page.wait_for_load_state("networkidle")
    canvas = page.locator("#image-editor canvas").first
    canvas.wait_for(state="visible")
    return page, canvas


def upload_and_paint(page, canvas, path: Path) -> None:
    placement = upload(page, canvas, path)
    before = screenshot(canvas)
    paint_stroke(page, canvas, placement)
    wait_for(lambda: (np.abs(screenshot(canvas) - before).sum(-1) > 60).sum() > 200, 10, "the stroke to show")


def test_paint_and_inpaint_in_the_browser(browser, server, photo, tmp_path):
    # `browser` comes first: without Chromium the test is skipped before the server starts.
    pixels, path = photo
    page, canvas = open_app(browser, server.local_url)
    try:
        upload_and_paint(page, canvas, path)
        page.locator("#inpaint-button").click()
        image = page.locator("#result img")
        image.wait_for(state="visible")
        response = page.request.get(image.get_attribute("src"))
        assert response.ok, response.status
        body = response.body()
        assert page.locator("#status").inner_text().strip() == ""
        page.screenshot(path=str(tmp_path / "app.png"))
    finally:
        page.close()

    result = Image.open(io.BytesIO(body))
    assert result.format == "PNG"
    assert result.size == (WIDTH, HEIGHT)
    changed = (np.asarray(result.convert("RGB")) != pixels).any(axis=-1)
    distance = distance_to_stroke(WIDTH, HEIGHT)
    far = distance > BAND
    assert far.mean() > 0.5
    assert not changed[far].any(), f"{changed[far].sum()} pixels far from the stroke changed"
    assert changed[distance <= 2].mean() > 0.9, "the stroke's centre line was not inpainted"


def fake_proxy(route, request) -> None:
    """A proxy in front of the app with a lower limit than the app's: uploads above 4 KB get HTTP 413."""
    if len(request.post_data_buffer or b"") > 4096:
        route.fulfill(status=413, body="Request Entity Too Large")
    else:
        route.continue_()


@pytest.mark.parametrize("refused_by", ["the-page", "a-proxy"])
def test_too_large_upload_ends_in_a_message(request, browser, photo, tmp_path, refused_by):
    """Gradio's editor uploads the photo when Inpaint is pressed; an upload the server refused (HTTP 413) used to
    leave the spinner turning forever.

    "the-page": the app's upload limit is below the photo's PNG; the page's guard sees it before sending and
    sends a note instead. The user painted a stroke first, so the editor exports and uploads its canvas.
    "a-proxy": a proxy answers 413 to the upload; the guard then sends the note. The user pressed Inpaint right
    after the upload (the editor uploads the file itself), and must learn that it is too large, not that nothing
    is painted. Either way the app answers with a message and the event ends.
    """
    expect = pytest.importorskip("playwright.sync_api").expect
    server = request.getfixturevalue("small_upload_server" if refused_by == "the-page" else "server")
    _, path = photo
    page, canvas = open_app(browser, server.local_url)
    statuses, page_errors = [], []
    page.on("response", lambda response: "/gradio_api/upload" in response.url and statuses.append(response.status))
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    try:
        if refused_by == "a-proxy":
            page.route("**/gradio_api/upload*", fake_proxy)
        placement = upload(page, canvas, path)
        if refused_by == "the-page":
            paint_stroke(page, canvas, placement, segments=1)  # where exactly does not matter here
        page.locator("#inpaint-button").click()

        status = page.locator("#status")
        expect(status).to_contain_text("This photo is too large for this Space", timeout=MESSAGE_TIMEOUT_MS)
        expect(status).to_contain_text(f"/ {WIDTH} x {HEIGHT} px")
        limit = "the limit is 32.0 KB per upload" if refused_by == "the-page" else "the server refused to receive it"
        expect(status).to_contain_text(limit)
        # The event has ended: the result's loading indicator is gone, and no "Error" badge shows instead.
        expect(page.locator("#result [data-testid=status-tracker]").first).to_have_class(re.compile(r"\bhide\b"))
        expect(page.locator("#result")).not_to_contain_text("Error")
        expect(page.locator("#result img")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "too-large.png"))
    finally:
        page.close()
    assert (413 in statuses) == (refused_by == "a-proxy"), statuses
    assert not page_errors, page_errors
