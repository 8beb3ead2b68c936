"""A real uvicorn server on a free loopback port, in a background thread, for the serve tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from s2i_fast.serve.app import create_app, uvicorn_config
from s2i_fast.serve.settings import ServeConfig


@contextlib.contextmanager
def running_server(engine, config: ServeConfig | None = None, *,
                   model_name: str = "test model") -> Iterator[str]:
    """Serve `engine` on 127.0.0.1:<free port>; yields the base URL, stops the server after."""
    import uvicorn

    cfg = config or ServeConfig()
    app = create_app(engine, cfg, model_name=model_name)
    sock = socket.create_server(("127.0.0.1", 0))  # bound here: no race for the port
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, cfg, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
