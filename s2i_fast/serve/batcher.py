"""Requests that arrive together share one engine call.

    handlers (event loop)          bounded queue            one worker thread
    submit(sketch, label, noise) -> [job, job, ...] -> take the first job, then more until
                                                       max_batch images or max_wait elapsed
                                                       -> engine.run(concatenated) -> futures

The queue holds at most `queue_size` requests; one more raises QueueFull at once (the app
answers 503 with Retry-After) instead of letting latency grow without bound. Engine calls are
serialised on the single worker thread, so the event loop never blocks on inference. A request
for k images (k seeds) is one job of size k; jobs are never split across batches, and a batch
larger than what the engine accepts (a static-batch graph) is run in chunks. Backends that
compile or capture one graph per batch size (torch-compile, triton, tensorrt) get `pad_to`
sizes: each chunk is padded with copies of its last sample up to the next of them, so a few
shapes are ever compiled instead of one per batch size.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

RunFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class QueueFull(Exception):
    """The batcher's queue is full: the caller should retry later."""


class BatcherStopped(Exception):
    """The batcher is not running (the server is starting up or shutting down)."""


@dataclass
class BatchResult:
    images: np.ndarray  # [k, R, R, 3] uint8
    queue_ms: float  # from submit until its batch started
    compute_ms: float  # the engine call(s) of its batch
    batch_size: int  # images in that batch


@dataclass
class _Job:
    sketch: np.ndarray  # [k, R, R] uint8
    labels: np.ndarray  # [k] int64
    noise: np.ndarray  # [k, Z] float32
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    submitted: float = field(default_factory=time.perf_counter)
    abandoned: bool = False  # the client went away: skip the work

    def __len__(self) -> int:
        return self.sketch.shape[0]


_STOP = object()


class Batcher:
    """Bounded queue + one worker thread that batches jobs onto `run`."""

    def __init__(
        self,
        run: RunFn,
        *,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        queue_size: int = 64,
        engine_max_batch: int | None = None,
        pad_to: Sequence[int] | None = None,
    ) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1e3
        self.queue_size = queue_size
        self.chunk = min(max_batch, engine_max_batch) if engine_max_batch else max_batch
        self.pad_to = sorted(set(pad_to)) if pad_to else None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._stats_lock = threading.Lock()
        self.batches = 0  # engine batches run
        self.images = 0  # images produced
        self.largest_batch = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._work, name="s2i-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new jobs, finish the queued ones, end the worker; jobs still queued after
        `timeout` fail with BatcherStopped."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        thread.join(timeout)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                _resolve(job, exception=BatcherStopped("the server is shutting down"))

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the batch being run)."""
        return self._queue.qsize()

    def stats(self) -> dict[str, float | int]:
        with self._stats_lock:
            return {
                "batches": self.batches,
                "images": self.images,
                "mean_batch": round(self.images / self.batches, 3) if self.batches else 0.0,
                "largest_batch": self.largest_batch,
                "queued": self.depth,
            }

    # ------------------------------------------------------------------ submit (event loop)
    async def submit(self, sketch: np.ndarray, labels: np.ndarray,
                     noise: np.ndarray) -> BatchResult:
        """Queue one request (k images) and wait for its images. QueueFull when full."""
        if not self.alive:
            raise BatcherStopped("the inference worker is not running")
        loop = asyncio.get_running_loop()
        job = _Job(sketch, labels, noise, loop, loop.create_future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self.queue_size} requests are already waiting") from None
        try:
            return await job.future
        except asyncio.CancelledError:
            job.abandoned = True
            raise

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        carry: object | None = None  # a job that did not fit the previous batch, or _STOP
        while True:
            job = carry if carry is not None else self._queue.get()
            carry = None
            if job is _STOP:
                return
            jobs, count = [job], len(job)
            deadline = time.perf_counter() + self.max_wait_s
            while count < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:  # past the deadline: still take what is already waiting, without waiting
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else (
                        self._queue.get_nowait())
                except queue.Empty:
                    break
                if nxt is _STOP or count + len(nxt) > self.max_batch:
                    carry = nxt
                    break
                jobs.append(nxt)
                count += len(nxt)
            self._run_batch(jobs)

    def _run_padded(self, sketch: np.ndarray, labels: np.ndarray,
                    noise: np.ndarray) -> np.ndarray:
        n = sketch.shape[0]
        pad = padded_size(n, self.pad_to) - n
        if pad:  # copies of the last sample, dropped after the call
            sketch = np.concatenate([sketch, np.repeat(sketch[-1:], pad, 0)])
            labels = np.concatenate([labels, np.repeat(labels[-1:], pad, 0)])
            noise = np.concatenate([noise, np.repeat(noise[-1:], pad, 0)])
        return self._run(sketch, labels, noise)[:n]

    def _run_batch(self, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if not j.abandoned]
        if not jobs:
            return
        started = time.perf_counter()
        sketch = np.concatenate([j.sketch for j in jobs])  # [N, R, R]
        labels = np.concatenate([j.labels for j in jobs])  # [N]
        noise = np.concatenate([j.noise for j in jobs])  # [N, Z]
        n = sketch.shape[0]
        try:
            parts = [self._run_padded(sketch[i : i + self.chunk], labels[i : i + self.chunk],
                                      noise[i : i + self.chunk])
                     for i in range(0, n, self.chunk)]
            images = np.concatenate(parts)  # [N, R, R, 3]
        except Exception as e:  # noqa: BLE001 - every waiting request must hear about it
            for j in jobs:
                _resolve(j, exception=e)
            return
        compute_ms = (time.perf_counter() - started) * 1e3
        with self._stats_lock:
            self.batches += 1
            self.images += n
            self.largest_batch = max(self.largest_batch, n)
        offset = 0
        for j in jobs:
            k = len(j)
            result = BatchResult(images[offset : offset + k], (started - j.submitted) * 1e3,
                                 compute_ms, n)
            offset += k
            _resolve(j, result=result)


def padded_size(n: int, sizes: Sequence[int] | None) -> int:
    """The smallest of `sizes` that holds n (n itself when none does or there are none)."""
    return next((s for s in sizes or () if s >= n), n)


def _resolve(job: _Job, result: BatchResult | None = None,
             exception: BaseException | None = None) -> None:
    """Complete a job's future from the worker thread (futures belong to the event loop)."""

    def complete() -> None:
        if job.future.done():  # cancelled meanwhile
            return
        if exception is not None:
            job.future.set_exception(exception)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(complete)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass
