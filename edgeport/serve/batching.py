"""Dynamic micro-batching: requests queue per model and run together, at most `max_batch` rows a run.

A batch starts when a worker is free and either `max_batch` rows of one key are queued or the oldest
request has waited `max_wait_ms`; while every worker is busy the queue grows, so batches grow with
load (the scheme Triton's dynamic batcher and Ray Serve's @serve.batch use). The queue is bounded in
rows: past `max_queue` a request is refused at once (QueueFull -> 503 + Retry-After) instead of
waiting for a timeout.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from edgeport.errors import EdgeportError

log = logging.getLogger("edgeport.serve")


class QueueFull(Exception):
    """The model's queue holds `max_queue` rows already; retry later (HTTP 503)."""


class BatchingFailed(Exception):
    """The batching loop itself failed (a bug, not the request's doing): the queued requests get this
    (HTTP 503 with the message) instead of waiting for their timeout while the loop spins."""


@dataclass
class _Job:
    key: tuple
    payload: dict
    rows: int
    future: asyncio.Future
    queued_at: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """Queues `submit(key, payload, rows)` calls and runs them through `run(key, payloads) -> results`.

    `run` is called in a worker thread (`workers` of them) with payloads that share one key and hold
    at most `max_batch` rows together (a single request larger than that runs alone). If a batched
    run raises EdgeportError, each request is retried alone so only the bad one fails.
    `on_batch(rows, seconds)` and `on_depth(rows)` report batch sizes and queue depth (metrics).
    """

    def __init__(self, run, max_batch: int, max_wait_ms: float, max_queue: int, workers: int,
                 on_batch=None, on_depth=None, name: str = "model"):
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.max_queue, self.workers = max_queue, workers
        self.on_batch, self.on_depth = on_batch or (lambda n, s: None), on_depth or (lambda n: None)
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix=f"edgeport-{name}")
        self.jobs: collections.deque = collections.deque()
        self.depth = 0  # queued rows
        self._wakeup = asyncio.Event()
        self._free = asyncio.Semaphore(workers)
        self._running: set = set()
        self._loop_task = None
        self.draining = False  # shutdown has begun: queued rows run now, without waiting out max_wait

    def start(self):
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, key: tuple, payload: dict, rows: int = 1):
        """Await the result for one request; raises QueueFull, or what `run` raised for it."""
        if self.depth + rows > self.max_queue and self.depth > 0:
            raise QueueFull(f"queue full ({self.depth} rows waiting)")
        job = _Job(key, payload, rows, asyncio.get_running_loop().create_future())
        self.jobs.append(job)
        self._add_depth(rows)
        self._wakeup.set()
        return await job.future

    def _add_depth(self, rows: int):
        self.depth += rows
        self.on_depth(self.depth)

    async def _loop(self):
        while True:
            while not self.jobs:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._free.acquire()  # while all workers are busy, requests pile up into bigger batches
            try:
                await self._wait_for_rows()
                batch = self._take()
            except Exception as e:  # never let the loop die or spin: fail the queued requests instead
                log.exception("batching loop")
                self._fail_queued(BatchingFailed(f"the batching loop failed ({type(e).__name__}: {e})"))
                batch = []
            if not batch:
                self._free.release()
                continue
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _fail_queued(self, error: Exception):
        """Every queued job gets `error` (the ones still waiting); the queue is left empty."""
        while self.jobs:
            j = self.jobs.popleft()
            self._add_depth(-j.rows)
            if not j.future.done():
                j.future.set_exception(error)

    async def _wait_for_rows(self):
        """Until max_batch rows of the oldest job's key are queued or it has waited max_wait."""
        while self.jobs:
            head = self.jobs[0]
            if head.future.done():  # timed out or cancelled while queued
                self.jobs.popleft()
                self._add_depth(-head.rows)
                continue
            left = head.queued_at + self.max_wait - time.monotonic()
            rows = sum(j.rows for j in self.jobs if j.key == head.key)
            if left <= 0 or rows >= self.max_batch or self.draining:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list:
        """Pop the oldest job and the next jobs of its key that fit in max_batch rows."""
        if not self.jobs:
            return []
        key, batch, rows, keep = self.jobs[0].key, [], 0, collections.deque()
        while self.jobs:
            j = self.jobs.popleft()
            if j.future.done():
                self._add_depth(-j.rows)
            elif j.key == key and (not batch or rows + j.rows <= self.max_batch):
                batch.append(j)
                rows += j.rows
                self._add_depth(-j.rows)
            else:
                keep.append(j)
        self.jobs.extendleft(reversed(keep))
        return batch

    async def _execute(self, batch: list):
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            results = await loop.run_in_executor(self.executor, self._run_each, batch)
        finally:
            self._free.release()
        self.on_batch(sum(j.rows for j in batch), time.perf_counter() - t0)
        for job, (ok, value) in zip(batch, results):
            if job.future.done():
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def _run_each(self, batch: list) -> list:
        return run_jobs(self.run, batch[0].key, [j.payload for j in batch])

    def drain(self):
        """Shutdown has begun: run the queued rows at once (a batch waiting out max_wait starts now), so
        they finish within the server's graceful timeout. Call on the event loop's thread."""
        self.draining = True
        self._wakeup.set()

    async def close(self):
        """Finish queued and running batches (without waiting out max_wait), then stop the loop and the
        worker threads."""
        self.drain()
        while self.jobs or self._running:
            await asyncio.sleep(0.01)
        if self._loop_task:
            self._loop_task.cancel()
        self.executor.shutdown(wait=True)


def run_jobs(run, key: tuple, payloads: list) -> list:
    """[(ok, result or exception)] per payload: one `run(key, payloads)` for all, or one run each if
    that raised EdgeportError (so only the bad request fails). Exceptions are returned, not raised."""
    try:
        return [(True, r) for r in run(key, payloads)]
    except EdgeportError as e:
        if len(payloads) == 1:
            return [(False, e)]
    except Exception as e:  # noqa: BLE001 - handed to the request, which answers 500 with a message
        return [(False, e)] * len(payloads)
    out = []
    for p in payloads:
        try:
            out.append((True, run(key, [p])[0]))
        except Exception as e:  # noqa: BLE001 - same as above, per request
            out.append((False, e))
    return out
