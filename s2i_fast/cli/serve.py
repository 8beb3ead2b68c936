"""`s2i-fast serve [ARTEFACT]`: the drawing page and the HTTP API on one machine."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import click

from s2i_fast.errors import MissingDependency
from s2i_fast.serve.settings import ServeConfig

_DEFAULTS = ServeConfig()
_MIB = 1024 * 1024


@click.command("serve")
@click.argument("artefact", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port (0: any free port, printed at start).")
@click.option("--backend", default="auto", show_default=True,
              help="torch, torch-compile, triton, onnxruntime or tensorrt; auto: torch for a "
                   "checkpoint, onnxruntime for .onnx, tensorrt for .plan.")
@click.option("--device", default=None, help="cpu or cuda[:N] [default: cuda if available]")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="Compute precision [default: the backend's, or an .onnx/.plan's own].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Intra-op threads per worker [default: library default]; with N workers, "
                   "cores / N.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="uvicorn worker processes, each with its own engine and batcher.")
@click.option("--max-batch", type=click.IntRange(min=1), default=_DEFAULTS.max_batch,
              show_default=True, help="Images per engine call (1: no batching).")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=_DEFAULTS.max_wait_ms,
              show_default=True, help="How long a batch waits for more requests.")
@click.option("--queue-size", type=click.IntRange(min=1), default=_DEFAULTS.queue_size,
              show_default=True, help="Requests waiting for the engine before 503.")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001),
              default=_DEFAULTS.max_body_bytes / _MIB, show_default=True,
              help="Largest request (MiB).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=_DEFAULTS.max_pixels,
              show_default=True, help="Largest sketch (width * height).")
@click.option("--access-log/--no-access-log", default=True, show_default=True)
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True)
def serve(artefact: Path | None, host: str, port: int, backend: str, device: str | None,
          precision: str | None, threads: int | None, workers: int, max_batch: int,
          max_wait_ms: float, queue_size: int, max_body_mb: float, max_pixels: int,
          access_log: bool, log_level: str) -> None:
    """Serve the drawing page at / and the API at /v1 (OpenAPI at /docs) for ARTEFACT
    (checkpoint, .onnx or .plan; the shipped demo model when none is named)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise MissingDependency(f"serve needs {e.name}: pip install 's2i-fast[serve]'") from None

    from s2i_fast.serve.app import ENV_ARTEFACT, create_app, load_engine, uvicorn_config

    cfg = ServeConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, queue_size=queue_size,
                      max_body_bytes=int(max_body_mb * _MIB), max_pixels=max_pixels)
    # one process binds before loading the model, so a busy port fails at once
    sock = _listen(host, port) if workers == 1 else None
    engine = load_engine(artefact, backend, device, precision, threads)  # clear errors here
    name = artefact.name if artefact else "demo model"
    bound_port = sock.getsockname()[1] if sock is not None else port
    _announce(engine, name, cfg, host, bound_port, workers)
    if sock is not None:
        app = create_app(engine, cfg, model_name=name)
        config = uvicorn_config(app, host, bound_port, cfg, log_level=log_level,
                                access_log=access_log)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn shut down cleanly, then re-raised the Ctrl-C
            pass
        return
    del engine  # each worker process loads its own
    os.environ.update(cfg.to_env())
    os.environ.update({ENV_ARTEFACT: str(artefact.resolve()) if artefact else "",
                       "S2I_SERVE_BACKEND": backend, "S2I_SERVE_DEVICE": device or "",
                       "S2I_SERVE_PRECISION": precision or "",
                       "S2I_SERVE_THREADS": str(threads or "")})
    try:
        uvicorn.run("s2i_fast.serve.app:app_from_env", factory=True, host=host, port=port,
                    workers=workers, ws_max_size=cfg.ws_max_message_bytes, log_level=log_level,
                    access_log=access_log)
    except KeyboardInterrupt:
        pass


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _announce(engine, name: str, cfg: ServeConfig, host: str, port: int, workers: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"s2i-fast serve: {name} on {engine.backend} ({engine.device}, {engine.precision}), "
        f"{engine.resolution}x{engine.resolution}, {len(engine.class_names)} classes; "
        f"batches of up to {cfg.max_batch} within {cfg.max_wait_ms:g} ms, queue "
        f"{cfg.queue_size}" + (f"; {workers} workers" if workers > 1 else "")
    )
    click.echo(f"  page  http://{shown}:{port}/\n  API   http://{shown}:{port}/docs")
