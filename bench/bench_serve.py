"""Load benchmark of `s2i-fast serve`: concurrent clients in this process, the server in a
second one (the real CLI), loopback only, bounded in time and in request count.

    python bench/bench_serve.py                                # torch, batching on and off
    python bench/bench_serve.py model.onnx --backend onnxruntime --clients 32 --duration 5
    python bench/bench_serve.py --modes on,off,nowait --threads 2

Per mode the server is started fresh (`s2i-fast serve ... --max-batch B --max-wait-ms W`):
    on      --max-batch 16 --max-wait-ms 5   (the serve defaults)
    nowait  --max-batch 16 --max-wait-ms 0   (batches only what queued while the engine ran)
    off     --max-batch 1                    (one request per engine call)
then warmed up (discarded), then `--clients` coroutines each send POST /v1/generate (JSON,
base64 PNG sketch, a different seed each time) back to back until `--duration` seconds or
`--max-requests` requests. Every answer must be a 200 PNG: any error fails the run (exit 1,
after the rows are written). Reported: p50/p99/mean latency as the client sees it, images/s,
the server's mean batch size. Rows are appended to bench/results/serve.csv with the CPU model,
core count, load average before and after, and the git commit. The client shares the CPU with
the server: on a small machine that is part of what is measured.

Without ARTEFACT a random-weights tiny checkpoint (3 classes, 64x64) is written to a temp dir;
random weights cost the same arithmetic as trained ones.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from s2i_fast.bench.harness import append_csv, context, percentile, print_table

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CSV = ROOT / "bench" / "results" / "serve.csv"
MODES = {  # name: serve options
    "on": ["--max-batch", "16", "--max-wait-ms", "5"],
    "nowait": ["--max-batch", "16", "--max-wait-ms", "0"],
    "off": ["--max-batch", "1", "--max-wait-ms", "0"],
}
HOST = "127.0.0.1"  # loopback only, by design
MAX_DURATION_S = 60.0
MAX_REQUESTS = 100_000


def load_avg() -> str:
    """1, 5 and 15 minute load averages."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """`python -m s2i_fast serve` in a subprocess, up until close()."""

    def __init__(self, artefact: Path, backend: str, threads: int, options: list[str]) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "s2i_fast", "serve", str(artefact), "--host", HOST,
             "--port", str(self.port), "--backend", backend, "--threads", str(threads),
             "--device", "cpu", "--no-access-log", "--log-level", "warning", "--queue-size",
             "256", *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench_serve: the server exited:\n{self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise SystemExit("bench_serve: the server did not start within 120 s")
            time.sleep(0.2)
        self.info = httpx.get(self.url + "/v1/info", timeout=5).json()

    def batching(self) -> dict:
        import httpx

        return httpx.get(self.url + "/v1/info", timeout=5).json()["batching"]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def load(url: str, body_for, clients: int, duration_s: float,
               max_requests: int) -> tuple[list[float], list[str], float]:
    """`clients` concurrent request loops; (latencies in ms, errors, elapsed seconds)."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        start = time.perf_counter()
        deadline = start + duration_s

        async def one_client() -> None:
            nonlocal sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                content = body_for(sent)
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/generate", content=content,
                                          headers={"content-type": "application/json"})
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    continue
                ms = (time.perf_counter() - t0) * 1e3
                if r.status_code != 200 or r.headers.get("content-type") != "image/png":
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                latencies.append(ms)

        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return latencies, errors, elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("artefact", nargs="?", type=Path, default=None,
                    help="checkpoint, .onnx or .plan [default: a random tiny checkpoint]")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--modes", default="on,off", help=f"comma-separated: {', '.join(MODES)}")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of load per mode")
    ap.add_argument("--max-requests", type=int, default=20_000, help="per mode")
    ap.add_argument("--warmup", type=float, default=1.5, help="seconds, discarded")
    ap.add_argument("--threads", type=int, default=2, help="server intra-op threads")
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        ap.error(f"unknown mode(s) {bad}; choose from {', '.join(MODES)}")
    if not 0 < args.duration <= MAX_DURATION_S or not 0 < args.max_requests <= MAX_REQUESTS:
        ap.error(f"--duration must be in (0, {MAX_DURATION_S:g}] s and --max-requests in "
                 f"(0, {MAX_REQUESTS}]")
    if args.clients < 1 or args.clients > 256:
        ap.error("--clients must be from 1 to 256")

    from s2i_fast.testing import draw_sketch

    buf = io.BytesIO()
    draw_sketch(1).save(buf, format="PNG")  # 256x256, as the page sends
    sketch_b64 = base64.b64encode(buf.getvalue()).decode()

    def body_for(i: int) -> bytes:
        return (f'{{"sketch": "{sketch_b64}", "class": 0, "seed": {i}}}').encode()

    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        artefact = args.artefact
        model = str(artefact.name) if artefact else "tiny@64 (random)"
        if artefact is None:
            from s2i_fast.testing import save_test_checkpoint

            artefact, _ = save_test_checkpoint(Path(tmp) / "tiny.pt")
        for mode in modes:
            server = Server(artefact, args.backend, args.threads, MODES[mode])
            try:
                asyncio.run(load(server.url, body_for, args.clients, args.warmup,
                                 args.max_requests))
                before, load_before = server.batching(), load_avg()
                lat, errors, elapsed = asyncio.run(load(server.url, body_for, args.clients,
                                                        args.duration, args.max_requests))
                after, load_after = server.batching(), load_avg()
            finally:
                server.close()
            images = after["images"] - before["images"]
            batches = after["batches"] - before["batches"]
            row = {
                **context("cpu"),  # timestamp, commit, CPU model and count, load, versions
                "cores": os.cpu_count(),
                "load_avg_before": load_before,
                "load_avg_after": load_after,
                "backend": server.info["backend"],
                "precision": server.info["precision"],
                "model": model,
                "resolution": server.info["resolution"],
                "threads": args.threads,
                "mode": mode,
                "max_batch": server.info["batching"]["max_batch"],
                "max_wait_ms": server.info["batching"]["max_wait_ms"],
                "clients": args.clients,
                "duration_s": round(elapsed, 2),
                "requests": len(lat),
                "errors": len(errors),
                "p50_ms": round(percentile(lat, 50), 2) if lat else float("nan"),
                "p99_ms": round(percentile(lat, 99), 2) if lat else float("nan"),
                "mean_ms": round(sum(lat) / len(lat), 2) if lat else float("nan"),
                "images_per_s": round(len(lat) / elapsed, 1),
                "mean_batch": round(images / batches, 2) if batches else 0.0,
            }
            rows.append(row)
            print(f"{mode:>6}: {row['requests']} requests in {row['duration_s']} s, "
                  f"{row['errors']} errors, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                  f"{row['images_per_s']} images/s, mean batch {row['mean_batch']} "
                  f"(load {load_before} -> {load_after})", flush=True)
            if errors:
                failed = True
                print(f"  first errors: {errors[:3]}", file=sys.stderr)
    append_csv(args.csv, rows)
    print_table(rows, ["mode", "backend", "threads", "clients", "requests", "errors", "p50_ms",
                       "p99_ms", "images_per_s", "mean_batch", "load_avg_before"])
    print(f"rows appended to {args.csv}")
    if failed:
        print("bench_serve: some requests failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
