"""The request batcher on its own: batch limits, chunking for static engines, a full queue,
errors reaching every waiting request, shutdown. The run function here records what it is given
(the server tests run the real engine through the same batcher)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from s2i_fast.serve.batcher import Batcher, BatcherStopped, QueueFull

R, Z = 4, 3


class Recorder:
    """run(sketch, labels, noise) -> images whose pixels hold each sample's label; can block."""

    def __init__(self, limit: int | None = None) -> None:
        self.calls: list[int] = []
        self.limit = limit
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, sketch, labels, noise):
        self.entered.set()
        self.gate.wait(10)
        assert self.limit is None or sketch.shape[0] <= self.limit
        self.calls.append(sketch.shape[0])
        return np.broadcast_to(labels[:, None, None, None], (len(labels), R, R, 3)).astype(np.uint8)


def job(label: int, k: int = 1):
    return (np.zeros((k, R, R), np.uint8), np.full(k, label, np.int64),
            np.zeros((k, Z), np.float32))


async def submit_all(batcher: Batcher, jobs):
    return await asyncio.gather(*(batcher.submit(*j) for j in jobs), return_exceptions=True)


def test_requests_arriving_together_share_a_batch_up_to_max_batch():
    run = Recorder()
    b = Batcher(run, max_batch=4, max_wait_ms=200, queue_size=32)
    b.start()
    try:
        results = asyncio.run(submit_all(b, [job(i) for i in range(10)]))
    finally:
        b.stop()
    assert sum(run.calls) == 10 and max(run.calls) <= 4 and len(run.calls) < 10, run.calls
    for i, res in enumerate(results):
        assert res.images.shape == (1, R, R, 3) and (res.images == i).all(), "answers mixed up"
        assert res.batch_size in run.calls
    assert b.stats()["images"] == 10 and b.stats()["largest_batch"] <= 4


def test_max_batch_one_runs_one_at_a_time():
    run = Recorder()
    b = Batcher(run, max_batch=1, max_wait_ms=50, queue_size=32)
    b.start()
    try:
        asyncio.run(submit_all(b, [job(i) for i in range(5)]))
    finally:
        b.stop()
    assert run.calls == [1] * 5


def test_multi_image_jobs_are_not_split_and_static_engines_get_chunks():
    run = Recorder(limit=2)  # an engine exported with batch 2
    b = Batcher(run, max_batch=8, max_wait_ms=100, queue_size=8, engine_max_batch=2)
    b.start()
    try:
        results = asyncio.run(submit_all(b, [job(1, 3), job(2, 3), job(3, 3)]))
    finally:
        b.stop()
    for label, res in zip((1, 2, 3), results, strict=True):
        assert res.images.shape[0] == 3 and (res.images == label).all()
        assert res.batch_size <= 8
    assert max(run.calls) <= 2 and sum(run.calls) == 9


def test_full_queue_raises_at_once():
    run = Recorder()
    run.gate.clear()  # the worker blocks inside the first batch
    b = Batcher(run, max_batch=1, max_wait_ms=0, queue_size=2)
    b.start()

    async def scenario():
        first = asyncio.ensure_future(b.submit(*job(0)))
        await asyncio.to_thread(run.entered.wait, 10)  # job 0 is running
        queued = [asyncio.ensure_future(b.submit(*job(i))) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await b.submit(*job(3))
        run.gate.set()
        return await asyncio.gather(first, *queued)

    try:
        results = asyncio.run(scenario())
    finally:
        b.stop()
    assert [int(r.images[0, 0, 0, 0]) for r in results] == [0, 1, 2]


def test_engine_error_reaches_every_request_of_the_batch_and_the_worker_survives():
    calls = []

    def run(sketch, labels, noise):
        calls.append(len(labels))
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return np.zeros((len(labels), R, R, 3), np.uint8)

    b = Batcher(run, max_batch=4, max_wait_ms=100, queue_size=8)
    b.start()
    try:
        failed = asyncio.run(submit_all(b, [job(i) for i in range(3)]))
        assert b.alive, "the worker died with the batch"
        ok = asyncio.run(submit_all(b, [job(0)]))
    finally:
        b.stop()
    assert all(isinstance(r, RuntimeError) for r in failed), failed
    assert ok[0].images.shape == (1, R, R, 3)


def test_stop_finishes_accepted_requests_and_refuses_new_ones():
    run = Recorder()
    run.gate.clear()
    b = Batcher(run, max_batch=1, max_wait_ms=0, queue_size=4)
    b.start()

    async def scenario():
        running = asyncio.ensure_future(b.submit(*job(0)))
        await asyncio.to_thread(run.entered.wait, 10)
        waiting = asyncio.ensure_future(b.submit(*job(1)))
        await asyncio.sleep(0)
        stopper = asyncio.ensure_future(asyncio.to_thread(b.stop))
        await asyncio.sleep(0.05)
        run.gate.set()
        await stopper
        return await asyncio.gather(running, waiting, return_exceptions=True)

    done, queued = asyncio.run(scenario())
    assert done.images.shape == (1, R, R, 3), "the batch in progress finishes"
    assert int(queued.images[0, 0, 0, 0]) == 1, "an accepted request is answered"
    assert not b.alive
    with pytest.raises(BatcherStopped):
        asyncio.run(b.submit(*job(2)))


def test_graph_backends_get_padded_batches_and_trimmed_answers():
    from s2i_fast.serve.app import batch_sizes

    assert batch_sizes("torch", 16) is None and batch_sizes("onnxruntime", 16) is None
    assert batch_sizes("triton", 16) == [1, 2, 4, 8, 16]
    assert batch_sizes("torch-compile", 12) == [1, 2, 4, 8, 12]
    assert batch_sizes("tensorrt", 1) == [1]

    run = Recorder()
    b = Batcher(run, max_batch=8, max_wait_ms=200, queue_size=8, pad_to=[1, 2, 4, 8])
    b.start()
    try:
        results = asyncio.run(submit_all(b, [job(1), job(2, 2)]))  # 3 images -> one call of 4
    finally:
        b.stop()
    assert run.calls == [4]
    assert results[0].images.shape[0] == 1 and (results[0].images == 1).all()
    assert results[1].images.shape[0] == 2 and (results[1].images == 2).all()
    assert b.stats()["images"] == 3, "padding is not counted as work"
