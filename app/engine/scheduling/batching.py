"""Dynamic batching: many small requests for one model become few large forward passes.

A model runs a batch of 64 images several times faster than 64 passes of one image, so each model
gets a `Batcher`. Callers `await batcher.submit(images)`; one worker task per batcher gathers queued
images of the same shape until it has `max_batch_size` of them or the oldest has waited
`max_delay_ms`, runs the (synchronous) batch function once in an executor thread (a lone small request
on an idle thread: on the event loop itself, see `inline_max_ms`), and hands every caller back exactly its
own slice of the outputs. Items may carry named per-item extras beside their
tensor (`Items`: each image's noise level, say): they are sliced and joined with the items, and the
batch function gets them the same way.

Bounded by design: a full queue refuses new requests at once (`Overloaded`, 503 + Retry-After), a
request that waits past `timeout_s` gets `RequestTimeout` (504), and a caller that goes away
(task cancelled) has its images that have not started yet removed from the queue.

All queue state is touched only on the event loop; the batch function runs in the executor (or, inline, on the
loop itself, between two awaits: never beside another pass of the same model).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.engine.scheduling.batch_items import (
    BatchInput,
    BatchOutput,
    Shape,
    check_outputs,
    concatenate_outputs,
    first_dim,
    inputs_of,
    join,
    part_of,
    shape_of,
    slice_output,
)
from app.errors import InvalidRequest, NotReady, Overloaded, PayloadTooLarge, RequestTimeout

BatchFunction = Callable[[Any], BatchOutput]
# A synchronous function run in a worker thread: a batch as submitted (B, ...) tensor, or Items of B
# -> tensor(s) whose first dim is B.

FINISH_POLL_S = 0.005  # how often finish() looks whether the queue is empty


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 64  # images per forward pass
    max_delay_ms: float = 2.0  # how long the first queued request waits for company
    max_queue_images: int = 2048  # images waiting before new requests are refused (Overloaded -> 503)
    timeout_s: float = 30.0  # a request that waits longer gets RequestTimeout (504)
    # Adaptive: wait for company only when the previous pass had some (requests of several callers).
    # A lone client then never pays the delay, while concurrent callers, whose requests queue up
    # during each pass anyway, are still gathered into full batches.
    adaptive_delay: bool = False
    # A lone request on an idle model thread, expected to take at most this long, runs on the event loop:
    # for a small input the hand-off to the thread and back is a good part of its wait. 0: never.
    inline_max_ms: float = 1.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must not be negative, got {self.max_delay_ms}")
        if self.max_queue_images < 1:
            raise ValueError(f"max_queue_images must be at least 1, got {self.max_queue_images}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.inline_max_ms < 0:
            raise ValueError(f"inline_max_ms must not be negative, got {self.inline_max_ms}")


@dataclass(eq=False)
class ThreadPasses:
    """Passes handed to one model thread and not back yet. The batchers of a model's tasks share its thread
    and this count (touched only on the event loop), so any of them can tell that the thread is idle."""

    in_flight: int = 0


class BatchObserver(Protocol):
    """What the service measures (with Prometheus); the batcher itself never imports a metrics library."""

    def observe_queue_wait(self, model: str, seconds: float) -> None:
        """Once per request, when its first images enter a forward pass."""

    def observe_batch(self, model: str, batch_size: int, seconds: float) -> None:
        """Once per forward pass: how many images it ran and how long the batch function took."""

    def observe_queue_depth(self, model: str, images: int) -> None:
        """Whenever the number of images waiting changes."""


@dataclass(eq=False)  # identity equality: requests are removed from queues by identity
class _Request:
    images: BatchInput  # (n, C, H, W) images, (n, D) latents, or Items of n
    future: asyncio.Future[BatchOutput]
    enqueued_at: float
    next_index: int = 0  # images before this one have been taken into a forward pass
    started: bool = False
    pieces: list[BatchOutput] = field(default_factory=list)  # outputs of the passes so far, in order
    delivered: int = 0

    @property
    def size(self) -> int:
        return inputs_of(self.images).shape[0]

    @property
    def waiting(self) -> int:
        """Images not yet taken into a forward pass."""
        return self.size - self.next_index

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def deliver(self, piece: BatchOutput) -> None:
        """Add the outputs of one pass; once all images are back, resolve the caller's future."""
        self.pieces.append(piece)
        self.delivered += first_dim(piece)
        if self.delivered == self.size and not self.future.done():
            self.future.set_result(concatenate_outputs(self.pieces))


@dataclass
class _ShapeQueue:
    requests: deque[_Request] = field(default_factory=deque)
    images: int = 0  # images waiting in this queue


@dataclass
class _Part:
    """A contiguous run of one request's images inside a forward pass."""

    request: _Request
    start: int
    stop: int


class Batcher:
    def __init__(
        self,
        name: str,
        fn: BatchFunction,
        config: BatchingConfig | None = None,
        executor: concurrent.futures.Executor | None = None,
        observer: BatchObserver | None = None,
        passes: ThreadPasses | None = None,
    ) -> None:
        self.name = name
        self.config = config or BatchingConfig()
        self._fn = fn
        self._observer = observer
        # One thread per model by default: passes of one model never fight each other for cores.
        self._owns_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"batcher-{name}")
        self._passes = passes or ThreadPasses()  # shared with the other batchers of a shared executor
        self._queues: dict[Shape, _ShapeQueue] = {}  # insertion order = order of first arrival
        self._queued_images = 0
        self._seconds_per_image = 0.0  # moving average of model time, for Retry-After
        self._seconds_per_value = 0.0  # the same per input value, for the inline decision (any image size)
        self._previous_pass_callers = 0  # requests in the last forward pass (for adaptive_delay)
        self._closed = False
        self._accepting = True  # False once finish() began: queued work runs, new work is refused
        self._worker: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def queue_depth(self) -> int:
        """Images waiting for a forward pass (not counting the one running)."""
        return self._queued_images

    async def submit(self, images: BatchInput) -> BatchOutput:
        """images (n, C, H, W), latents (n, D), or `Items` of n -> this request's own outputs (first dim n), in order.

        Raises Overloaded when the queue is full, RequestTimeout past timeout_s, NotReady once
        closed, and re-raises any exception of the batch function to the callers of that pass only.
        """
        if self._closed or not self._accepting:
            raise NotReady(f"model {self.name!r} is shutting down")
        if inputs_of(images).dim() < 2:
            raise InvalidRequest(f"expected inputs shaped (n, ...), got {tuple(inputs_of(images).shape)}")
        count = inputs_of(images).shape[0]
        if count == 0:
            raise InvalidRequest("no images in the request")
        if count > self.config.max_queue_images:
            raise PayloadTooLarge(
                f"{count} images in one request; model {self.name!r} accepts at most {self.config.max_queue_images}"
            )
        if self._queued_images + count > self.config.max_queue_images:
            retry_after = self._queued_images * self._seconds_per_image
            raise Overloaded(f"model {self.name!r} is busy: {self._queued_images} images are waiting", retry_after)

        loop = asyncio.get_running_loop()
        self._ensure_worker(loop)
        request = _Request(images=images, future=loop.create_future(), enqueued_at=time.monotonic())
        self._enqueue(request)
        try:
            async with asyncio.timeout(self.config.timeout_s):
                return await request.future
        except TimeoutError:
            self._drop(request)
            raise RequestTimeout(f"model {self.name!r} did not answer within {self.config.timeout_s:g} s") from None
        except asyncio.CancelledError:  # the client went away: free the queue of its work
            self._drop(request)
            raise

    async def finish(self) -> None:
        """Refuse new work, run every request already queued, then stop (a model being replaced)."""
        self._accepting = False
        while self._queued_images and self._worker is not None and not self._worker.done():
            await asyncio.sleep(FINISH_POLL_S)
        await self.close()  # nothing is queued any more: close waits for the running pass

    async def close(self) -> None:
        """Refuse new work, fail what is queued with NotReady, and wait for the running pass to finish."""
        self._closed = True
        for queue in self._queues.values():
            for request in queue.requests:
                request.fail(NotReady(f"model {self.name!r} is shutting down"))
        self._queues.clear()
        self._set_queued(0)
        if self._wakeup is not None:
            self._wakeup.set()
        if self._worker is not None and self._loop is asyncio.get_running_loop():
            await self._worker
        if self._owns_executor:
            self._executor.shutdown(wait=True)

    # -- the queue -----------------------------------------------------------------------------

    def _ensure_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the worker lazily, in the loop that submits (tests run a fresh loop per test)."""
        if self._worker is not None and not self._worker.done() and self._loop is loop:
            return
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._worker = loop.create_task(self._run(), name=f"batcher-{self.name}")

    def _enqueue(self, request: _Request) -> None:
        shape = shape_of(request.images)
        queue = self._queues.setdefault(shape, _ShapeQueue())
        queue.requests.append(request)
        queue.images += request.size
        self._set_queued(self._queued_images + request.size)
        assert self._wakeup is not None
        self._wakeup.set()

    def _drop(self, request: _Request) -> None:
        """Remove a request's images that have not started; parts already running finish unseen."""
        if request.waiting == 0:
            return
        shape = shape_of(request.images)
        queue = self._queues.get(shape)
        if queue is None or request not in queue.requests:
            return
        queue.requests.remove(request)
        queue.images -= request.waiting
        self._set_queued(self._queued_images - request.waiting)
        request.next_index = request.size
        if not queue.requests:
            del self._queues[shape]

    def _set_queued(self, images: int) -> None:
        self._queued_images = images
        if self._observer is not None:
            self._observer.observe_queue_depth(self.name, images)

    def _oldest_shape(self) -> Shape | None:
        """The shape whose first request has waited longest: no shape can starve the others."""
        if not self._queues:
            return None
        return min(self._queues, key=lambda shape: self._queues[shape].requests[0].enqueued_at)

    def _take(self, shape: Shape) -> list[_Part]:
        """Pop up to max_batch_size images of one shape, oldest first; a large request may be split."""
        queue = self._queues[shape]
        parts: list[_Part] = []
        room = self.config.max_batch_size
        now = time.monotonic()
        while room > 0 and queue.requests:
            request = queue.requests[0]
            take = min(room, request.waiting)
            parts.append(_Part(request, request.next_index, request.next_index + take))
            request.next_index += take
            room -= take
            queue.images -= take
            if not request.started:
                request.started = True
                if self._observer is not None:
                    self._observer.observe_queue_wait(self.name, now - request.enqueued_at)
            if request.waiting == 0:
                queue.requests.popleft()
        if not queue.requests:
            del self._queues[shape]
        self._set_queued(self._queued_images - sum(part.stop - part.start for part in parts))
        return parts

    # -- the worker ----------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._closed:
                shape = self._oldest_shape()
                if shape is None:
                    await self._wait_for_work(timeout=None)
                    continue
                await self._wait_for_company(shape)
                if self._closed or shape not in self._queues:  # closed, or every request gave up meanwhile
                    continue
                await self._execute(self._take(shape))
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            for queue in self._queues.values():
                for request in queue.requests:
                    request.fail(NotReady(f"model {self.name!r} batch worker stopped: {exc!r}"))
            self._queues.clear()
            self._set_queued(0)
            raise

    async def _wait_for_work(self, timeout: float | None) -> None:
        assert self._wakeup is not None
        self._wakeup.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    async def _wait_for_company(self, shape: Shape) -> None:
        """Wait until a full batch of this shape is queued or its oldest request has waited max_delay_ms
        (with adaptive_delay, only when the previous pass had several callers)."""
        if self.config.adaptive_delay and self._previous_pass_callers < 2:
            return
        queue = self._queues[shape]
        deadline = queue.requests[0].enqueued_at + self.config.max_delay_ms / 1000
        while not self._closed and shape in self._queues and queue.images < self.config.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await self._wait_for_work(timeout=remaining)

    async def _execute(self, parts: list[_Part]) -> None:
        self._previous_pass_callers = len(parts)
        inputs = join([part_of(part.request.images, part.start, part.stop) for part in parts])  # B items
        started = time.perf_counter()
        try:
            outputs = self._fn(inputs) if self._runs_inline(parts, inputs) else await self._on_thread(inputs)
            check_outputs(outputs, inputs_of(inputs).shape[0])
        except Exception as exc:
            for part in parts:
                part.request.fail(exc)
                self._drop(part.request)  # the rest of a split request cannot succeed any more
            return
        seconds = time.perf_counter() - started
        batch_size = inputs_of(inputs).shape[0]
        self._seconds_per_image = 0.8 * self._seconds_per_image + 0.2 * seconds / batch_size
        self._seconds_per_value = 0.8 * self._seconds_per_value + 0.2 * seconds / inputs_of(inputs).numel()
        if self._observer is not None:
            self._observer.observe_batch(self.name, batch_size, seconds)
        offset = 0
        for part in parts:
            count = part.stop - part.start
            part.request.deliver(slice_output(outputs, offset, offset + count))
            offset += count

    def _runs_inline(self, parts: list[_Part], inputs: BatchInput) -> bool:
        """A lone request, nothing else queued, the model thread idle, and a pass expected (from the measured
        cost per input value) within inline_max_ms: the event loop runs it, sparing two thread switches.
        Never the first pass of a batcher (no cost measured yet), so a large input never blocks the loop."""
        if self.config.inline_max_ms <= 0 or len(parts) > 1 or self._queues or self._passes.in_flight:
            return False
        expected_s = self._seconds_per_value * inputs_of(inputs).numel()
        return 0.0 < expected_s <= self.config.inline_max_ms / 1000

    async def _on_thread(self, inputs: BatchInput) -> BatchOutput:
        self._passes.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._fn, inputs)
        finally:
            self._passes.in_flight -= 1
