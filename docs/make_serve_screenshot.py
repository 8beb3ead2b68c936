"""Take docs/serve.png: the drawing page with a mouse-drawn house, its image and variations.

    python docs/make_serve_screenshot.py MODEL.pt --class house --out docs/serve.png

Starts the app on a free loopback port in this process, drives Debian's chromium
(/usr/bin/chromium) through Playwright, draws the strokes with the mouse like a person would,
asks for variations and saves a screenshot of the page.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

HOUSE = [  # strokes in canvas fractions: walls, roof, door, window
    [(0.25, 0.85), (0.25, 0.45), (0.75, 0.45), (0.75, 0.85), (0.25, 0.85)],
    [(0.2, 0.47), (0.5, 0.18), (0.8, 0.47)],
    [(0.44, 0.85), (0.44, 0.64), (0.56, 0.64), (0.56, 0.85)],
    [(0.31, 0.53), (0.4, 0.53), (0.4, 0.61), (0.31, 0.61), (0.31, 0.53)],
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artefact", type=Path, nargs="?", default=None,
                    help="checkpoint, .onnx or .plan [default: the shipped demo model]")
    ap.add_argument("--class", dest="class_name", default="house")
    ap.add_argument("--seed", default="3")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("serve.png"))
    args = ap.parse_args()

    import uvicorn
    from playwright.sync_api import sync_playwright

    from s2i_fast.serve.app import create_app, load_engine, uvicorn_config
    from s2i_fast.serve.settings import ServeConfig

    engine = load_engine(args.artefact, device="cpu")
    cfg = ServeConfig()
    name = args.artefact.name if args.artefact else "demo model"
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(create_app(engine, cfg, model_name=name),
                                           "127.0.0.1", port, cfg, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    idle = "document.body.dataset.busy === 'false'"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update"])
            page = browser.new_page(viewport={"width": 1100, "height": 820})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("Number(document.querySelector('#result').dataset.shown) > 0")
            page.select_option("#class", label=args.class_name)
            page.fill("#seed", args.seed)
            box = page.locator("#sketch").bounding_box()
            for stroke in HOUSE:
                xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
                      for fx, fy in stroke]
                page.mouse.move(*xy[0])
                page.mouse.down()
                for x, y in xy[1:]:
                    page.mouse.move(x, y, steps=12)
                page.mouse.up()
            page.wait_for_function(idle)
            page.click("#variations")
            page.wait_for_function("document.querySelectorAll('#strip img').length > 0")
            page.wait_for_function(idle)
            page.mouse.move(0, 0)
            page.screenshot(path=str(args.out))
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
