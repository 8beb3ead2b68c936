"""`s2i-fast serve` as a user starts it: a real process on a loopback port, one-line errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi", reason="the serve tests need the serve extra")
httpx = pytest.importorskip("httpx")

import torch  # noqa: E402

from s2i_fast.assets import DEFAULT_MODEL  # noqa: E402
from s2i_fast.engine import default_cpu_backend  # noqa: E402
from s2i_fast.testing import save_test_checkpoint  # noqa: E402


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "s2i_fast", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(out) -> str:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path, _ = save_test_checkpoint(tmp_path_factory.mktemp("serve-cli") / "g.pt")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_shows_options_with_defaults():
    out = run_cli("serve", "--help")
    assert out.returncode == 0, out.stderr
    for text in ("--host", "127.0.0.1", "--port", "8000", "--backend", "--workers",
                 "--max-batch", "--max-wait-ms", "--queue-size", "[default: 16;"):
        assert text in out.stdout, text
    assert "serve" in run_cli("--help").stdout


def test_missing_artefact_is_one_line(tmp_path):
    msg = one_line_error(run_cli("serve", tmp_path / "nope.pt", "--port", free_port()))
    assert "nope.pt" in msg and "no such file" in msg


@pytest.mark.skipif(DEFAULT_MODEL.is_file(), reason="this build ships the demo model")
def test_no_artefact_without_the_demo_model_is_one_line():
    msg = one_line_error(run_cli("serve", "--port", free_port()))
    assert "demo model" in msg


def test_busy_port_is_one_line(ckpt):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        msg = one_line_error(run_cli("serve", ckpt, "--port", port))
    assert f"cannot listen on 127.0.0.1:{port}" in msg


def start_server(ckpt, *options) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "s2i_fast", "serve", str(ckpt), "--port", str(port),
         "--threads", "1", "--no-access-log", *options],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the server did not come up")
        time.sleep(0.2)


def stop_with_ctrl_c(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        output, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    return output


def test_serve_starts_answers_and_stops_on_ctrl_c(ckpt):
    proc, url = start_server(ckpt)
    try:
        assert '<canvas id="sketch"' in httpx.get(url + "/").text
        info = httpx.get(url + "/v1/info").json()
        auto = "torch" if torch.cuda.is_available() else default_cpu_backend()
        assert info["model"] == "g.pt" and info["backend"] == auto
    finally:
        output = stop_with_ctrl_c(proc)
    assert f"{url}/" in output


@pytest.mark.slow  # two worker processes import torch: 10-30 s on 2 shared cores
def test_more_workers_serve_one_port(ckpt, tmp_path):
    from s2i_fast.testing import draw_sketch

    draw_sketch(0).save(tmp_path / "s.png")
    proc, url = start_server(ckpt, "--workers", "2", "--max-batch", "4")
    try:
        sketch = (tmp_path / "s.png").read_bytes()
        for seed in range(4):
            r = httpx.post(url + "/v1/generate", files={"sketch": sketch},
                           data={"class": "cat", "seed": str(seed)}, timeout=30)
            assert r.status_code == 200 and r.headers["x-seeds"] == str(seed)
        assert httpx.get(url + "/v1/info").json()["batching"]["max_batch"] == 4
    finally:
        output = stop_with_ctrl_c(proc)
    assert "2 workers" in output and output.count("Application startup complete") == 2
