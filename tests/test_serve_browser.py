"""The drawing page in Debian's chromium (Playwright, headless) against a real server: strokes
drawn with the mouse and a finger, live answers, class, seed, undo/redo, upload, drop,
variations and downloads. Never downloads a browser: it launches /usr/bin/chromium."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (.ci/run installs it "
                "with apt-get install chromium)", allow_module_level=True)
pytest.importorskip("fastapi", reason="the serve tests need the serve extra")

import httpx  # noqa: E402
from _serve_server import running_server  # noqa: E402
from PIL import Image  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from s2i_fast import Engine  # noqa: E402
from s2i_fast.testing import draw_sketch, save_test_checkpoint  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    path, _ = save_test_checkpoint(tmp_path_factory.mktemp("browser") / "g.pt")
    with running_server(Engine.load(path, device="cpu")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, base_url):
    context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(base_url + "/")
    settle(pg, 1)
    yield pg
    context.close()
    assert not errors, errors


# ---------------------------------------------------------------------- page state
def shown(pg) -> int:
    return int(pg.eval_on_selector("#result", "e => e.dataset.shown"))


def settle(pg, at_least: int) -> None:
    """Wait until `at_least` answers were shown and nothing is in flight or pending."""
    pg.wait_for_function(
        "n => Number(document.querySelector('#result').dataset.shown) >= n"
        " && document.body.dataset.busy === 'false'", arg=at_least, timeout=TIMEOUT_MS)


def after(pg, action) -> np.ndarray:
    """Run action, wait for the page to show a newer answer and go idle; the image shown."""
    before = shown(pg)
    action()
    settle(pg, before + 1)
    return result_image(pg)


def decode_data_url(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def result_image(pg) -> np.ndarray:
    return decode_data_url(pg.eval_on_selector("#result", "e => e.src"))  # [64, 64, 3]


def canvas_image(pg) -> np.ndarray:
    url = pg.evaluate("document.getElementById('sketch').toDataURL('image/png')")
    return decode_data_url(url)[..., :3]  # [256, 256, 3]


def stroke(pg, points, hold=None) -> None:
    """Drag the mouse through canvas-relative points (fractions of its size)."""
    box = pg.locator("#sketch").bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    pg.mouse.move(*xy[0])
    pg.mouse.down()
    for x, y in xy[1:]:
        pg.mouse.move(x, y, steps=6)
    if hold:
        hold()
    pg.mouse.up()


def assert_close(a: np.ndarray, b: np.ndarray, levels: int = 1) -> None:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert a.shape == b.shape and diff.max() <= levels, (a.shape, b.shape, diff.max())


def png_file(tmp_path: Path, seed: int) -> tuple[Path, np.ndarray]:
    im = draw_sketch(seed)  # 256x256 black on white
    path = tmp_path / f"sketch{seed}.png"
    im.save(path)
    return path, np.asarray(im)


# ---------------------------------------------------------------------- tests
def test_drawing_is_live_and_follows_class_seed_undo_redo_clear(page):
    blank = result_image(page)
    assert blank.shape == (64, 64, 3)

    before_stroke = shown(page)

    def mid_stroke():  # the button is still down: an answer for the unfinished stroke arrives
        page.wait_for_function("n => Number(document.querySelector('#result').dataset.shown) > n",
                               arg=before_stroke, timeout=TIMEOUT_MS)

    img1 = after(page, lambda: stroke(page, [(0.15, 0.2), (0.5, 0.6), (0.85, 0.3)],
                                      hold=mid_stroke))
    canvas1 = canvas_image(page)
    assert (canvas1 < 100).any(axis=-1).sum() > 500, "the stroke is not on the canvas"
    assert not np.array_equal(img1, blank), "the image did not change with the drawing"
    server_ms = float(page.inner_text("#server-ms"))
    rtt_ms = float(page.inner_text("#rtt-ms"))
    assert 0 < server_ms <= rtt_ms + 0.5, (server_ms, rtt_ms)

    img2 = after(page, lambda: stroke(page, [(0.3, 0.85), (0.7, 0.8), (0.6, 0.15)]))
    canvas2 = canvas_image(page)
    assert not np.array_equal(img2, img1)

    img_undo = after(page, lambda: page.click("#undo"))
    assert np.array_equal(canvas_image(page), canvas1), "undo did not restore the drawing"
    assert_close(img_undo, img1)
    img_redo = after(page, lambda: page.keyboard.press("Control+Shift+Z"))
    assert np.array_equal(canvas_image(page), canvas2), "redo did not restore the stroke"
    assert_close(img_redo, img2)
    img_clear = after(page, lambda: page.keyboard.press("Delete"))
    assert (canvas_image(page) == 255).all(), "clear left ink"
    assert_close(img_clear, blank)
    after(page, lambda: page.keyboard.press("Control+z"))
    assert np.array_equal(canvas_image(page), canvas2), "clear is undoable"

    img_class = after(page, lambda: page.select_option("#class", label="jack-o-lantern"))
    assert page.eval_on_selector("#result", "e => e.dataset.class") == "jack-o-lantern"
    assert not np.array_equal(img_class, img2), "the class did not change the image"
    img_seed = after(page, lambda: page.fill("#seed", "7"))
    assert page.eval_on_selector("#result", "e => e.dataset.seed") == "7"
    assert not np.array_equal(img_seed, img_class), "the seed did not change the image"
    img_shuffled = after(page, lambda: page.click("#shuffle"))
    seed = page.input_value("#seed")
    assert seed != "7" and page.eval_on_selector("#result", "e => e.dataset.seed") == seed
    assert not np.array_equal(img_shuffled, img_seed)


def test_upload_drop_variations_and_downloads(page, base_url, tmp_path):
    path3, sketch3 = png_file(tmp_path, 3)
    shown_img = after(page, lambda: page.set_input_files("#upload", str(path3)))
    assert np.abs(canvas_image(page)[..., 0].astype(int) - sketch3).max() <= 2
    api = httpx.post(base_url + "/v1/generate", files={"sketch": path3.read_bytes()},
                     data={"class": "cat", "seed": "0"}, timeout=30)
    assert_close(shown_img, np.asarray(Image.open(io.BytesIO(api.content)).convert("RGB")))

    path4, sketch4 = png_file(tmp_path, 4)
    drop = """b64 => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], "drop.png", {type: "image/png"}));
        document.getElementById("drop-zone").dispatchEvent(
            new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
    }"""
    dropped_img = after(page, lambda: page.evaluate(drop, base64.b64encode(
        path4.read_bytes()).decode()))
    assert np.abs(canvas_image(page)[..., 0].astype(int) - sketch4).max() <= 2
    assert not np.array_equal(dropped_img, shown_img)
    after(page, lambda: page.click("#undo"))
    assert np.abs(canvas_image(page)[..., 0].astype(int) - sketch3).max() <= 2

    with page.expect_download() as dl:
        page.click("#download-sketch")
    saved = np.asarray(Image.open(dl.value.path()).convert("RGB"))
    assert dl.value.suggested_filename == "sketch.png"
    assert np.array_equal(saved, canvas_image(page))
    with page.expect_download() as dl:
        page.click("#download-image")
    assert dl.value.suggested_filename == "s2i-cat-seed0.png"
    assert np.array_equal(np.asarray(Image.open(dl.value.path()).convert("RGB")),
                          result_image(page))

    page.click("#variations")
    page.wait_for_function("document.querySelectorAll('#strip img').length === 6",
                           timeout=TIMEOUT_MS)
    seeds = page.eval_on_selector_all("#strip img", "els => els.map(e => e.dataset.seed)")
    assert seeds == [str(s) for s in range(6)]
    third = decode_data_url(page.eval_on_selector("#strip img:nth-child(3)", "e => e.src"))
    picked = after(page, lambda: page.click("#strip img:nth-child(3)"))
    assert page.input_value("#seed") == "2"
    assert_close(picked, third)


def test_phone_width_layout_and_finger_drawing(browser, base_url):
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True,
                                  is_mobile=True)
    pg = context.new_page()
    try:
        pg.goto(base_url + "/")
        settle(pg, 1)
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390, "sideways scroll"
        box = pg.locator("#sketch").bounding_box()
        assert 300 <= box["width"] <= 390
        blank = result_image(pg)
        cdp = context.new_cdp_session(pg)

        def finger():
            x0, y0 = box["x"] + 0.2 * box["width"], box["y"] + 0.3 * box["height"]
            pt = {"x": x0, "y": y0}
            cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [pt]})
            for i in range(1, 15):
                pt = {"x": x0 + 15 * i, "y": y0 + 10 * i}
                cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [pt]})
                time.sleep(0.01)
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

        img = after(pg, finger)
        assert (canvas_image(pg) < 100).any(axis=-1).sum() > 200, "the finger drew nothing"
        assert not np.array_equal(img, blank)
        assert pg.evaluate("window.scrollY") == 0, "drawing scrolled the page"
    finally:
        context.close()
