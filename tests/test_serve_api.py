"""The HTTP API and the WebSocket against a real uvicorn server on a loopback port: answers
match the Engine, every bad request is a 4xx JSON error and the server stays healthy after it,
concurrent requests are batched, a full queue answers 503 with Retry-After."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve tests need the serve extra")
httpx = pytest.importorskip("httpx", reason="the serve tests need httpx")

import torch  # noqa: E402
from _serve_server import running_server  # noqa: E402
from PIL import Image  # noqa: E402

import s2i_fast  # noqa: E402
from s2i_fast import Engine  # noqa: E402
from s2i_fast.engine import default_cpu_backend  # noqa: E402
from s2i_fast.serve.settings import ServeConfig  # noqa: E402
from s2i_fast.testing import CLASS_NAMES, draw_sketch, save_test_checkpoint  # noqa: E402

MAX_BODY = 256 * 1024
MAX_PIXELS = 1024 * 1024


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path, _ = save_test_checkpoint(tmp_path_factory.mktemp("serve") / "g.pt")
    return Engine.load(path, device="cpu")


@pytest.fixture(scope="module")
def base_url(engine):
    cfg = ServeConfig(max_body_bytes=MAX_BODY, max_pixels=MAX_PIXELS, max_variations=4)
    with running_server(engine, cfg) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


def png_bytes(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


SKETCH = draw_sketch(1)
SKETCH_PNG = png_bytes(SKETCH)


def decode(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))


def assert_close(a: np.ndarray, b: np.ndarray, levels: int = 1) -> None:
    """Same image up to conv rounding (a different batch composition may move a level)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= levels, f"max difference {diff.max()} at {np.argwhere(diff > levels)[:3]}"


def post_multipart(client, sketch=SKETCH_PNG, **fields):
    files = {"sketch": ("s.png", sketch, "image/png")} if sketch is not None else None
    return client.post("/v1/generate", files=files, data={k: str(v) for k, v in fields.items()})


def post_json(client, obj):
    return client.post("/v1/generate", json=obj)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------------- metadata and page
def test_healthz_classes_info_docs(client, engine):
    assert client.get("/healthz").json()["status"] == "ok"
    classes = client.get("/v1/classes").json()["classes"]
    assert [c["name"] for c in classes] == CLASS_NAMES
    assert [c["id"] for c in classes] == list(range(len(CLASS_NAMES)))
    info = client.get("/v1/info").json()
    assert info["backend"] == engine.backend and info["resolution"] == 64
    if not torch.cuda.is_available():  # backend "auto": the fastest CPU backend installed
        assert engine.backend == default_cpu_backend()
    assert info["version"] == s2i_fast.__version__ and info["num_classes"] == 3
    assert info["limits"]["max_pixels"] == MAX_PIXELS
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/generate"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_page_is_served_by_the_package_without_a_cdn(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<canvas id="sketch"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        r = client.get(asset)
        assert r.status_code == 200 and len(r.text) > 500
        assert "http://" not in r.text and "https://" not in r.text, asset
    assert "http://" not in page.text and "https://" not in page.text


# ---------------------------------------------------------------------- generation
def test_multipart_answer_is_the_engines_image(client, engine):
    r = post_multipart(client, **{"class": "cat", "seed": 5})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-seeds"] == "5" and r.headers["x-class"] == "cat"
    expected = engine.generate(SKETCH, "cat", seed=5)[0]  # [64, 64, 3]
    assert_close(decode(r.content), expected)


def test_json_base64_data_url_and_class_id_agree_with_multipart(client):
    ref = decode(post_multipart(client, **{"class": "car_(sedan)", "seed": 2}).content)
    plain = post_json(client, {"sketch": b64(SKETCH_PNG), "class": "car_(sedan)", "seed": 2})
    url = post_json(client, {"sketch": "data:image/png;base64," + b64(SKETCH_PNG), "class": 1,
                             "seed": 2, "n": 1})
    jpeg = post_json(client, {"sketch": b64(png_bytes(SKETCH.convert("RGB"), "JPEG")),
                              "class": "1", "seed": 2})
    for r in (plain, url, jpeg):
        assert r.status_code == 200, r.text
    assert_close(decode(plain.content), ref)
    assert_close(decode(url.content), ref)
    assert np.abs(decode(jpeg.content).astype(int) - ref).mean() < 3  # JPEG ringing only


def test_variations_are_the_single_seed_images_side_by_side(client):
    r = post_json(client, {"sketch": b64(SKETCH_PNG), "class": "cat", "seed": 7, "n": 3})
    assert r.status_code == 200, r.text
    assert r.headers["x-seeds"] == "7,8,9"
    strip = decode(r.content)
    assert strip.shape == (64, 3 * 64, 3)
    tiles = [strip[:, 64 * i : 64 * (i + 1)] for i in range(3)]
    for i, tile in enumerate(tiles):
        single = post_json(client, {"sketch": b64(SKETCH_PNG), "class": "cat", "seed": 7 + i})
        assert_close(tile, decode(single.content))
    assert not np.array_equal(tiles[0], tiles[1]), "different seeds gave the same image"


def test_class_and_seed_change_the_image(client):
    def image(**fields):
        r = post_multipart(client, **fields)
        assert r.status_code == 200, r.text
        return decode(r.content)

    base = image(**{"class": "cat", "seed": 0})
    assert np.array_equal(base, image(**{"class": "cat", "seed": 0})), "not deterministic"
    assert not np.array_equal(base, image(**{"class": "jack-o-lantern", "seed": 0}))
    assert not np.array_equal(base, image(**{"class": "cat", "seed": 1}))


# ---------------------------------------------------------------------- errors
WHITE_BIG = png_bytes(Image.new("L", (1100, 1000), 255))  # 1.1 M pixels, a few KB
GIF = png_bytes(SKETCH.convert("P"), "GIF")
JPEG = png_bytes(SKETCH.convert("RGB"), "JPEG")


def _json_raw(body: bytes):
    return {"content": body, "headers": {"content-type": "application/json"}}


def _multipart(files=None, data=None):
    return {"files": files, "data": data}


def _chunked_too_big():
    def chunks():
        for _ in range(8):
            yield b"x" * (MAX_BODY // 4)

    return {"content": chunks(), "headers": {"content-type": "application/json"}}


SK = {"sketch": ("s.png", SKETCH_PNG, "image/png")}
BAD_REQUESTS = {
    # name: (httpx keyword arguments, status, words in the message)
    "body over the size cap": (_json_raw(b"{" + b" " * (MAX_BODY + 10) + b"}"), 413, "larger"),
    "multipart over the size cap": (
        _multipart({"sketch": ("s.png", b"\0" * (MAX_BODY + 1), "image/png")}, {"class": "cat"}),
        413, "larger"),
    "chunked body over the size cap": (_chunked_too_big(), 413, "larger"),
    "sketch over the pixel cap": (
        _multipart({"sketch": ("s.png", WHITE_BIG, "image/png")}, {"class": "cat"}), 413,
        "pixels"),
    "text/plain": ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415,
                   "multipart/form-data"),
    "no content type": ({"content": b"hello"}, 415, "no content type"),
    "form-urlencoded": ({"data": {"class": "cat"}}, 415, "urlencoded"),
    "unknown class name": (_multipart(SK, {"class": "dog"}), 422, "unknown class 'dog'"),
    "class id out of range": (_multipart(SK, {"class": "7"}), 422, "out of range"),
    "class as a float": ({"json": {"sketch": b64(SKETCH_PNG), "class": 1.5}}, 422, "class"),
    "class as a bool": ({"json": {"sketch": b64(SKETCH_PNG), "class": True}}, 422, "class"),
    "undecodable image": (_multipart({"sketch": ("s.png", b"not an image at all", "image/png")},
                                     {"class": "cat"}), 400, "not an image"),
    "truncated PNG": (_multipart({"sketch": ("s.png", SKETCH_PNG[: len(SKETCH_PNG) // 2],
                                             "image/png")}, {"class": "cat"}), 400, "truncated"),
    "truncated JPEG": (_multipart({"sketch": ("s.jpg", JPEG[: len(JPEG) // 2], "image/jpeg")},
                                  {"class": "cat"}), 400, "truncated"),
    "GIF": (_multipart({"sketch": ("s.gif", GIF, "image/gif")}, {"class": "cat"}), 400, "GIF"),
    "empty sketch file": (_multipart({"sketch": ("s.png", b"", "image/png")}, {"class": "cat"}),
                          422, "empty"),
    "multipart without sketch": (_multipart({"other": ("o.txt", b"x", "text/plain")},
                                            {"class": "cat"}), 422, "unknown field"),
    "multipart missing sketch": ({"files": {"class": (None, "cat")}}, 422,
                                 "missing field 'sketch'"),
    "missing class": (_multipart(SK, {"seed": "1"}), 422, "missing field 'class'"),
    "sketch as a text field": ({"files": {"sketch": (None, "iVBORw0KGgo="),
                                          "class": (None, "cat")}}, 422, "file part"),
    "duplicate field": (_multipart(SK, {"class": ["cat", "cat"]}), 422, "more than once"),
    "two files": (_multipart([("sketch", ("a.png", SKETCH_PNG, "image/png")),
                              ("sketch", ("b.png", SKETCH_PNG, "image/png"))],
                             {"class": "cat"}), 400, "files"),
    "multipart without boundary": ({"content": b"--x\r\n", "headers": {
        "content-type": "multipart/form-data"}}, 400, "multipart"),
    "unknown JSON field": ({"json": {"sketch": b64(SKETCH_PNG), "class": "cat", "seeds": 1}},
                           422, "unknown field(s) 'seeds'"),
    "JSON missing sketch": ({"json": {"class": "cat"}}, 422, "missing field 'sketch'"),
    "JSON missing class": ({"json": {"sketch": b64(SKETCH_PNG)}}, 422, "missing field 'class'"),
    "malformed JSON": (_json_raw(b'{"sketch": '), 400, "malformed JSON"),
    "JSON array": (_json_raw(b"[1, 2]"), 400, "must be an object"),
    "JSON NaN": (_json_raw(b'{"class": "cat", "seed": NaN}'), 400, "NaN"),
    "JSON not UTF-8": (_json_raw(b'{"class": "\xff\xfe"}'), 400, "malformed JSON"),
    "bad base64": ({"json": {"sketch": "abc$", "class": "cat"}}, 400, "base64"),
    "sketch as a number": ({"json": {"sketch": 12, "class": "cat"}}, 422, "base64 string"),
    "negative seed": (_multipart(SK, {"class": "cat", "seed": "-1"}), 422, "seed"),
    "seed not a number": (_multipart(SK, {"class": "cat", "seed": "abc"}), 422, "seed"),
    "fractional seed": ({"json": {"sketch": b64(SKETCH_PNG), "class": "cat", "seed": 1.5}},
                        422, "seed"),
    "seed above 2^53": ({"json": {"sketch": b64(SKETCH_PNG), "class": "cat", "seed": 2**64}},
                        422, "18446744073709551616"),
    "seed with 5000 digits": (_json_raw(b'{"class": "cat", "seed": ' + b"9" * 5000 + b"}"),
                              400, "5000 digits is too large"),
    "seed 1e400": (_json_raw(b'{"sketch": "", "class": "cat", "seed": 1e400}'), 422, "inf"),
    "seed true": ({"json": {"sketch": b64(SKETCH_PNG), "class": "cat", "seed": True}}, 422,
                  "seed"),
    "seed of 30 digits in a form": (_multipart(SK, {"class": "cat", "seed": "9" * 30}), 422,
                                    "seed"),
    "n = 0": ({"json": {"sketch": b64(SKETCH_PNG), "class": "cat", "n": 0}}, 422, "'n'"),
    "n over the cap": ({"json": {"sketch": b64(SKETCH_PNG), "class": "cat", "n": 5}}, 422, "'n'"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_is_a_clear_4xx_and_the_server_stays_healthy(client, name):
    kwargs, status, needle = BAD_REQUESTS[name]
    r = client.post("/v1/generate", **kwargs)
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    assert isinstance(detail, str) and needle in detail, detail
    assert client.get("/healthz").json()["status"] == "ok"
    ok = post_multipart(client, **{"class": "cat", "seed": 0})
    assert ok.status_code == 200, ok.text


def test_wrong_method_and_path_are_json_errors(client):
    r = client.get("/v1/generate")
    assert r.status_code == 405 and r.json()["detail"]
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["detail"]


# ---------------------------------------------------------------------- concurrency
async def _burst(url: str, requests: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        return await asyncio.gather(*(c.post("/v1/generate", json=r) for r in requests))


def test_concurrent_requests_share_batches_and_get_their_own_images(engine):
    cfg = ServeConfig(max_batch=8, max_wait_ms=100, queue_size=16)
    seeds = list(range(10, 18))
    with running_server(engine, cfg) as url:
        replies = asyncio.run(_burst(url, [
            {"sketch": b64(SKETCH_PNG), "class": "cat", "seed": s} for s in seeds]))
        stats = httpx.get(url + "/v1/info").json()["batching"]
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    assert max(int(r.headers["x-batch-size"]) for r in replies) > 1, "nothing was batched"
    assert stats["mean_batch"] > 1 and stats["largest_batch"] <= 8
    for s, r in zip(seeds, replies, strict=True):
        assert r.headers["x-seeds"] == str(s)
        assert_close(decode(r.content), engine.generate(SKETCH, "cat", seed=s)[0])


def test_full_queue_answers_503_with_retry_after_then_recovers(engine):
    cfg = ServeConfig(max_batch=1, max_wait_ms=0, queue_size=1, max_variations=8,
                      retry_after_s=2)
    body = {"sketch": b64(SKETCH_PNG), "class": "cat", "seed": 0, "n": 8}  # ~8 images each
    with running_server(engine, cfg) as url:
        replies = asyncio.run(_burst(url, [body] * 12))
        codes = sorted(r.status_code for r in replies)
        busy = [r for r in replies if r.status_code == 503]
        assert set(codes) == {200, 503}, codes
        for r in busy:
            assert r.headers["retry-after"] == "2"
            assert "busy" in r.json()["detail"]
        assert httpx.get(url + "/healthz").json()["status"] == "ok"
        again = httpx.post(url + "/v1/generate", json=body, timeout=30)
        assert again.status_code == 200


# ---------------------------------------------------------------------- WebSocket
def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/v1/ws"


def test_websocket_answers_errors_and_keeps_the_connection(base_url, client):
    from websockets.sync.client import connect

    ref = decode(post_multipart(client, **{"class": "cat", "seed": 4}).content)
    with connect(ws_url(base_url), open_timeout=10) as ws:
        ws.send(json.dumps({"id": 1, "sketch": b64(SKETCH_PNG), "class": 0, "seed": 4}))
        reply = json.loads(ws.recv(timeout=30))
        assert reply["id"] == 1 and reply["seeds"] == [4] and reply["class"] == "cat"
        assert reply["server_ms"] > 0 and reply["batch_size"] >= 1
        assert_close(decode(base64.b64decode(reply["images"][0])), ref)

        ws.send(json.dumps({"id": 2, "sketch": b64(SKETCH_PNG), "class": "dog"}))
        reply = json.loads(ws.recv(timeout=30))
        assert reply["id"] == 2 and reply["status"] == 422 and "unknown class" in reply["error"]
        ws.send("{not json")
        reply = json.loads(ws.recv(timeout=30))
        assert reply["id"] is None and reply["status"] == 400 and "malformed" in reply["error"]
        ws.send(b"\x89PNG")
        reply = json.loads(ws.recv(timeout=30))
        assert reply["status"] == 400 and "text" in reply["error"]

        ws.send(json.dumps({"id": 3, "sketch": b64(SKETCH_PNG), "class": "cat", "seed": 4,
                            "n": 2}))
        reply = json.loads(ws.recv(timeout=30))
        assert reply["id"] == 3 and reply["seeds"] == [4, 5] and len(reply["images"]) == 2
    assert client.get("/healthz").json()["status"] == "ok"


def test_websocket_refuses_a_foreign_origin(base_url, client):
    """A page on another site cannot open the live socket from a visitor's browser; the page's
    own origin and clients without an Origin header can."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as e:
        with connect(ws_url(base_url), open_timeout=10, origin="http://evil.example"):
            pass
    assert e.value.response.status_code == 403
    with connect(ws_url(base_url), open_timeout=10, origin=base_url) as ws:
        ws.send(json.dumps({"id": 1, "sketch": b64(SKETCH_PNG), "class": 0, "seed": 1}))
        reply = json.loads(ws.recv(timeout=30))
        assert reply["id"] == 1 and len(reply["images"]) == 1
    assert client.get("/healthz").json()["status"] == "ok"


def test_websocket_latest_message_wins(base_url):
    """Messages sent while one is being answered: only the newest is run, the others are
    answered as stale, so a fast drawer never waits behind old drawings."""
    from websockets.sync.client import connect

    with connect(ws_url(base_url), open_timeout=10) as ws:
        ids = list(range(10, 16))
        for i in ids:
            ws.send(json.dumps({"id": i, "sketch": b64(SKETCH_PNG), "class": "cat", "seed": i,
                                "n": 4}))
        replies = {}
        while ids[-1] not in replies:
            reply = json.loads(ws.recv(timeout=30))
            replies[reply["id"]] = reply
    assert set(replies) == set(ids), "every message gets exactly one answer"
    assert replies[ids[-1]]["seeds"] == [15, 16, 17, 18], "the newest message was run"
    stale = [i for i in ids if replies[i].get("stale")]
    assert stale, "nothing was skipped although the messages arrived together"
    assert all(i < ids[-1] for i in stale)
