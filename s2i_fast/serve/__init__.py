"""`s2i-fast serve`: the drawing page and the HTTP API over one Engine (FastAPI + uvicorn).

    app.py         the ASGI app factory (routes, errors, WebSocket), app_from_env for workers
    batcher.py     bounded queue + one worker thread that batches requests onto the engine
    validation.py  request parsing: every mistake is one 4xx RequestError
    settings.py    ServeConfig: limits and batching defaults
    static/        the page: plain HTML, CSS and JavaScript
The command itself is s2i_fast/cli/serve.py.
"""

from __future__ import annotations

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str):
    # lazy: importing the package does not pull in FastAPI
    if name == "create_app":
        from s2i_fast.serve.app import create_app

        return create_app
    if name == "ServeConfig":
        from s2i_fast.serve.settings import ServeConfig

        return ServeConfig
    raise AttributeError(f"module 's2i_fast.serve' has no attribute {name!r}")
