"""The ASGI application: the drawing page, the HTTP API and the page's WebSocket.

    GET  /               the drawing page (static/ in this package; no CDN, no build step)
    GET  /healthz        {"status": "ok", ...} while the inference worker runs, else 503
    GET  /v1/classes     {"classes": [{"id": 0, "name": "cat"}, ...]}
    GET  /v1/info        model, backend, device, precision, resolution, version, limits, batching
    POST /v1/generate    multipart (file `sketch`; fields `class`, `seed`, `n`) or JSON
                         {"sketch": "<base64>", "class": ..., "seed": 0, "n": 1} -> image/png
                         (n > 1: the n images side by side, seeds seed..seed+n-1)
    WS   /v1/ws          the page's live channel: JSON {"id", "sketch", "class", "seed", "n"}
                         in, {"id", "images": [base64 PNG], "seeds", "server_ms", ...} out
    GET  /docs           OpenAPI

Every bad request is a 4xx JSON error {"detail": "..."} (validation.py); a full queue is 503
with Retry-After. One process serves one Engine; more uvicorn workers (`s2i-fast serve
--workers N`, or `uvicorn --factory s2i_fast.serve.app:app_from_env`) scale it on one machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.websockets import WebSocketDisconnect

import s2i_fast
from s2i_fast.serve.batcher import Batcher, BatcherStopped, BatchResult, QueueFull
from s2i_fast.serve.settings import ServeConfig
from s2i_fast.serve.validation import (
    GenerateRequest,
    RequestError,
    build_request,
    check_fields,
    from_json_object,
    parse_json,
)

STATIC_DIR = Path(__file__).resolve().with_name("static")
ENV_ARTEFACT = "S2I_SERVE_ARTEFACT"  # the other S2I_SERVE_* variables: ServeConfig.from_env
ENV_BACKEND = "S2I_SERVE_BACKEND"
ENV_DEVICE = "S2I_SERVE_DEVICE"
ENV_PRECISION = "S2I_SERVE_PRECISION"
ENV_THREADS = "S2I_SERVE_THREADS"

_GENERATE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["sketch", "class"],
            "properties": {
                "sketch": {"type": "string", "format": "binary",
                           "description": "PNG, JPEG or WebP; black lines on white; any size"},
                "class": {"type": "string", "description": "class name or id (/v1/classes)"},
                "seed": {"type": "integer", "default": 0, "minimum": 0},
                "n": {"type": "integer", "default": 1, "minimum": 1,
                      "description": "images with seeds seed..seed+n-1, side by side"},
            }}},
        "application/json": {"schema": {
            "type": "object", "required": ["sketch", "class"],
            "properties": {
                "sketch": {"type": "string", "description": "base64 PNG/JPEG/WebP (a data: "
                           "URL is accepted)"},
                "class": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                "seed": {"type": "integer", "default": 0, "minimum": 0},
                "n": {"type": "integer", "default": 1, "minimum": 1},
            }}},
    },
}
_ERROR = {"content": {"application/json": {"example": {"detail": "unknown class 'dog'; ..."}}}}


GRAPH_BACKENDS = ("torch-compile", "triton", "openvino", "tensorrt")  # a graph per batch size


def batch_sizes(backend: str, max_batch: int) -> list[int] | None:
    """Batch sizes to pad to: powers of two up to max_batch for backends that compile per
    size (a few compiles at most), None (run every size as it comes) for the others."""
    if backend not in GRAPH_BACKENDS:
        return None
    sizes = [1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch]
    return sizes + [max_batch]


def create_app(engine: Any, config: ServeConfig | None = None, *,
               model_name: str = "model") -> FastAPI:
    """A FastAPI app serving `engine` (an s2i_fast.Engine); the batcher runs while it is up."""
    cfg = config or ServeConfig()
    batcher = Batcher(engine.run, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms,
                      queue_size=cfg.queue_size, engine_max_batch=engine.max_batch,
                      pad_to=batch_sizes(engine.backend, cfg.max_batch))
    class_names = list(engine.class_names)
    resolution = int(engine.resolution)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.stop)

    app = FastAPI(title="s2i-fast", version=s2i_fast.__version__, lifespan=lifespan,
                  description="Sketch to image with a Masked Residual Unit GAN. Draw at /.")
    app.state.engine, app.state.batcher, app.state.config = engine, batcher, cfg

    # ------------------------------------------------------------------ errors
    @app.exception_handler(RequestError)
    async def _bad_request(_request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(QueueFull)
    async def _busy(_request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse({"detail": f"the server is busy ({exc}); retry shortly"},
                            status_code=503, headers={"Retry-After": str(cfg.retry_after_s)})

    @app.exception_handler(BatcherStopped)
    async def _stopped(_request: Request, exc: BatcherStopped) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503,
                            headers={"Retry-After": str(cfg.retry_after_s)})

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"},
                            status_code=500)

    # ------------------------------------------------------------------ page and metadata
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", summary="Liveness: 200 while the inference worker runs")
    async def healthz() -> JSONResponse:
        ok = batcher.alive
        return JSONResponse({"status": "ok" if ok else "stopped", "queued": batcher.depth},
                            status_code=200 if ok else 503)

    @app.get("/v1/classes", summary="The model's classes; a class id is its index")
    async def classes() -> dict:
        return {"classes": [{"id": i, "name": n} for i, n in enumerate(class_names)]}

    @app.get("/v1/info", summary="Model, backend, resolution, version, limits and batching")
    async def info() -> dict:
        return {
            "model": model_name,
            "backend": engine.backend,
            "device": str(getattr(engine, "device", "")),
            "precision": engine.precision,
            "resolution": resolution,
            "num_classes": len(class_names),
            "version": s2i_fast.__version__,
            "limits": {"max_body_bytes": cfg.max_body_bytes, "max_pixels": cfg.max_pixels,
                       "max_variations": cfg.max_variations},
            "batching": {"max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms,
                         "queue_size": cfg.queue_size, **batcher.stats()},
        }

    # ------------------------------------------------------------------ generation
    async def run(req: GenerateRequest) -> BatchResult:
        k = len(req.seeds)
        sketch = np.repeat(req.sketch[None], k, axis=0)  # [k, R, R]
        labels = np.full(k, req.label, dtype=np.int64)  # [k]
        noise = np.concatenate([engine.make_noise(1, s) for s in req.seeds])  # [k, Z]
        return await batcher.submit(sketch, labels, noise)

    @app.post(
        "/v1/generate",
        summary="Sketch (+ class, seed, n) -> PNG",
        response_class=Response,
        responses={200: {"content": {"image/png": {}},
                         "description": "the image; n > 1: n images side by side"},
                   400: _ERROR, 413: _ERROR, 415: _ERROR, 422: _ERROR, 503: _ERROR},
        openapi_extra={"requestBody": _GENERATE_BODY},
    )
    async def generate(request: Request) -> Response:
        started = time.perf_counter()
        req = await _read_generate(request, cfg, class_names, resolution)
        result = await run(req)
        strip = np.concatenate(list(result.images), axis=1)  # [R, k*R, 3]
        png = await asyncio.to_thread(encode_png, strip)
        headers = {
            "X-Seeds": ",".join(map(str, req.seeds)),
            "X-Class": class_names[req.label].encode("ascii", "backslashreplace").decode(),
            "X-Batch-Size": str(result.batch_size),
            "X-Queue-Ms": f"{result.queue_ms:.2f}",
            "X-Compute-Ms": f"{result.compute_ms:.2f}",
            "X-Server-Ms": f"{(time.perf_counter() - started) * 1e3:.2f}",
            "Cache-Control": "no-store",
        }
        return Response(png, media_type="image/png", headers=headers)

    @app.websocket("/v1/ws")
    async def live(websocket: WebSocket) -> None:
        await _serve_websocket(websocket, cfg, class_names, resolution, run)

    return app


# ---------------------------------------------------------------------- HTTP body
async def _read_generate(request: Request, cfg: ServeConfig, class_names: list[str],
                         resolution: int) -> GenerateRequest:
    mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mime not in ("application/json", "multipart/form-data"):
        shown = f"'{mime[:60]}'" if mime else "no content type"
        raise RequestError(415, f"send multipart/form-data (file 'sketch') or application/json "
                                f"(base64 'sketch'), got {shown}")
    body = await _read_body(request, cfg.max_body_bytes)
    if mime == "application/json":
        return await asyncio.to_thread(  # image decoding stays off the event loop
            lambda: from_json_object(parse_json(body), class_names, resolution, cfg.max_pixels,
                                     cfg.max_variations))
    fields, sketch = await _parse_multipart(request, body, cfg)
    return await asyncio.to_thread(build_request, fields, sketch, class_names, resolution,
                                   cfg.max_pixels, cfg.max_variations)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    too_big = RequestError(413, f"the request is larger than {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse_multipart(request: Request, body: bytes,
                           cfg: ServeConfig) -> tuple[dict[str, str], bytes | None]:
    from starlette.formparsers import MultiPartException

    async def replay() -> dict:  # the body was read (and capped) already
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=1, max_fields=16, max_part_size=cfg.max_body_bytes)
    except StarletteHTTPException as e:
        raise RequestError(400, f"malformed multipart body: {e.detail}") from None
    except (MultiPartException, ValueError) as e:
        raise RequestError(400, f"malformed multipart body: {e}") from None
    try:
        check_fields(form.keys())
        for key in form.keys():
            if len(form.getlist(key)) > 1:
                raise RequestError(422, f"field {key!r} is given more than once")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = form.get("sketch")
        if isinstance(upload, str):
            raise RequestError(422, "'sketch' must be a file part (curl: -F sketch=@drawing.png)")
        sketch = None if upload is None else await upload.read()
        return fields, sketch
    finally:
        await form.close()


def encode_png(image: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# ---------------------------------------------------------------------- WebSocket
def same_origin(origin: str, host: str) -> bool:
    """True when a browser's Origin ("http://127.0.0.1:8000") names the Host it connected to."""
    from urllib.parse import urlsplit

    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host.lower()


async def _serve_websocket(websocket: WebSocket, cfg: ServeConfig, class_names: list[str],
                           resolution: int, run) -> None:
    """Latest drawing wins: while one message is being answered, a newer one replaces any
    older waiting one (that one is answered {"id", "stale": true}), so answers never queue up
    behind a fast drawer. The page itself also keeps at most one request in flight.

    A browser always sends an Origin header: one that is not this server's own host is refused
    before the handshake completes (a page elsewhere must not drive this server from a
    visitor's browser); clients without an Origin (scripts, tools) are let in."""
    origin = websocket.headers.get("origin")
    if origin is not None and not same_origin(origin, websocket.headers.get("host", "")):
        await websocket.close(code=1008)  # policy violation: the handshake answers 403
        return
    await websocket.accept()
    waiting: list[Any] = []  # parsed messages not yet answered; only the last one is run
    wake = asyncio.Event()

    async def read() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                item: Any = RequestError(400, "send JSON text frames, not binary")
            elif len(text) > cfg.ws_max_message_bytes:
                item = RequestError(413, f"the message is larger than "
                                         f"{cfg.ws_max_message_bytes} bytes")
            else:
                try:
                    item = parse_json(text)
                except RequestError as e:
                    item = e
            waiting.append(item)
            wake.set()

    async def answer() -> None:
        while True:
            await wake.wait()
            wake.clear()
            batch, waiting[:] = list(waiting), []
            for old in batch[:-1]:
                await websocket.send_text(json.dumps({"id": _message_id(old), "stale": True}))
            if batch:
                reply = await _answer(batch[-1], cfg, class_names, resolution, run)
                await websocket.send_text(json.dumps(reply))

    tasks = [asyncio.create_task(read()), asyncio.create_task(answer())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:  # a client that went away mid-send is not an error
            exc = t.exception()
            if exc is not None and not isinstance(exc, (WebSocketDisconnect, RuntimeError)):
                raise exc
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _message_id(item: Any) -> int | str | None:
    if isinstance(item, dict):
        mid = item.get("id")
        if isinstance(mid, int) and not isinstance(mid, bool) and abs(mid) < 2**53:
            return mid
        if isinstance(mid, str):
            return mid[:64]
    return None


async def _answer(item: Any, cfg: ServeConfig, class_names: list[str], resolution: int,
                  run) -> dict:
    started = time.perf_counter()
    mid = _message_id(item)
    try:
        if isinstance(item, RequestError):
            raise item
        req = await asyncio.to_thread(from_json_object, item, class_names, resolution,
                                      cfg.max_pixels, cfg.max_variations, ("id",))
        result = await run(req)
    except RequestError as e:
        return {"id": mid, "status": e.status, "error": e.message}
    except (QueueFull, BatcherStopped) as e:
        return {"id": mid, "status": 503, "error": f"the server is busy ({e}); retrying",
                "retry_after": cfg.retry_after_s}
    except Exception as e:  # noqa: BLE001 - an engine failure: say so, keep the connection
        return {"id": mid, "status": 500, "error": f"internal error: {type(e).__name__}: {e}"}
    pngs = await asyncio.to_thread(lambda: [encode_png(img) for img in result.images])
    images = [base64.b64encode(png).decode("ascii") for png in pngs]
    return {
        "id": mid,
        "images": images,
        "seeds": list(req.seeds),
        "class": class_names[req.label],
        "class_id": req.label,
        "batch_size": result.batch_size,
        "queue_ms": round(result.queue_ms, 2),
        "compute_ms": round(result.compute_ms, 2),
        "server_ms": round((time.perf_counter() - started) * 1e3, 2),
    }


# ---------------------------------------------------------------------- loading
def load_engine(artefact: str | os.PathLike | None, backend: str = "auto",
                device: str | None = None, precision: str | None = None,
                threads: int | None = None):
    """Engine.load on the artefact, or on the shipped demo model when none is named."""
    from s2i_fast.assets import default_model_path
    from s2i_fast.errors import EngineError

    path = Path(artefact) if artefact else default_model_path()
    if not path.is_file():  # say so before the seconds of importing torch
        raise EngineError(f"{path}: no such file")
    from s2i_fast import Engine

    if threads:
        import torch

        torch.set_num_threads(threads)
    engine = Engine.load(path, backend=backend, device=device, precision=precision,
                         threads=threads)
    warm_up(engine)
    return engine


def warm_up(engine: Any) -> None:
    """One batch-1 call, so the first visitor does not pay for lazy initialisation and a
    backend that cannot run fails here, as one EngineError, not on the first request."""
    from s2i_fast.errors import EngineError, S2IError

    r = engine.resolution
    blank = np.full((1, r, r), 255, dtype=np.uint8)  # [1, R, R] white page
    try:
        engine.run(blank, np.zeros(1, dtype=np.int64), engine.make_noise(1, 0))
    except S2IError:
        raise
    except Exception as e:  # noqa: BLE001 - a backend failure on its first run
        raise EngineError(f"the {engine.backend} engine failed its first run: "
                          f"{type(e).__name__}: {e}") from e


def app_from_env() -> FastAPI:
    """App factory for uvicorn worker processes (`uvicorn --factory ...:app_from_env`):
    S2I_SERVE_ARTEFACT (default: the demo model), S2I_SERVE_BACKEND, _DEVICE, _PRECISION,
    _THREADS, and ServeConfig's fields as S2I_SERVE_<FIELD> (e.g. S2I_SERVE_MAX_BATCH)."""
    env = os.environ
    threads = env.get(ENV_THREADS)
    artefact = env.get(ENV_ARTEFACT) or None
    engine = load_engine(artefact, env.get(ENV_BACKEND) or "auto", env.get(ENV_DEVICE) or None,
                         env.get(ENV_PRECISION) or None, int(threads) if threads else None)
    name = Path(artefact).name if artefact else "demo model"
    return create_app(engine, ServeConfig.from_env(), model_name=name)


def uvicorn_config(app: Any, host: str, port: int, cfg: ServeConfig, **kwargs: Any):
    """uvicorn settings the CLI, the tests and the benchmark share."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, ws_max_size=cfg.ws_max_message_bytes,
                          **kwargs)


__all__ = ["app_from_env", "create_app", "load_engine", "uvicorn_config"]
