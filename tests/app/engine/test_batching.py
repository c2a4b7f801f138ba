"""The dynamic batcher's semantics, with plain functions as the "model".

Every caller's images carry values that identify the caller and the image's position, so a test can
check that each caller got back exactly its own outputs, in order. Batch composition is controlled
with a gate (a threading.Event the batch function waits on) instead of timing, so no assertion
depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable

import pytest
import torch

from app.engine.scheduling.batch_items import BatchOutputError
from app.engine.scheduling.batching import Batcher, BatchingConfig
from app.errors import NotReady, Overloaded, PayloadTooLarge, RequestTimeout

LONG_DELAY_MS = 60_000.0  # "wait for a full batch": long enough that only a full batch can start a pass


def caller_images(caller: int, count: int, shape: tuple[int, int, int] = (1, 4, 4)) -> torch.Tensor:
    """(count, *shape) images whose every pixel is caller + index/1000: unique per caller and position."""
    values = caller + torch.arange(count, dtype=torch.float32) / 1000
    return values.view(count, 1, 1, 1).expand(count, *shape).clone()


def expected(images: torch.Tensor) -> torch.Tensor:
    return images * 2 + 1


class RecordingModel:
    """A batch function that records every batch and can be held at a gate until the test opens it."""

    def __init__(self, gated: bool = False, fail_if: Callable[[torch.Tensor], bool] | None = None) -> None:
        self.batches: list[torch.Tensor] = []
        self.threads: set[str] = set()
        self.started = threading.Event()
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.fail_if = fail_if

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.batches.append(images.clone())
        self.threads.add(threading.current_thread().name)
        self.started.set()
        if not self.gate.wait(timeout=10):
            raise RuntimeError("test gate was never opened")
        if self.fail_if is not None and self.fail_if(images):
            raise ValueError("poisoned batch")
        return expected(images)

    @property
    def batch_sizes(self) -> list[int]:
        return [batch.shape[0] for batch in self.batches]


async def wait_until(condition: Callable[[], bool]) -> None:
    """Yield to the event loop until `condition` holds (fails the test after 10 s rather than hanging)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never became true")


async def test_each_caller_gets_exactly_its_own_outputs_in_order() -> None:
    model = RecordingModel()
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=8, max_delay_ms=5))
    rng = random.Random(0)
    requests = [caller_images(caller, rng.randint(1, 6)) for caller in range(1, 41)]

    outputs = await asyncio.gather(*(batcher.submit(images) for images in requests))

    for images, output in zip(requests, outputs, strict=True):
        assert isinstance(output, torch.Tensor)
        torch.testing.assert_close(output, expected(images), rtol=0, atol=0)
    assert sum(model.batch_sizes) == sum(len(images) for images in requests)
    assert max(model.batch_sizes) <= 8
    assert len(model.batches) < len(requests)  # concurrent requests really shared passes
    await batcher.close()


async def test_max_batch_size_is_never_exceeded() -> None:
    model = RecordingModel()
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=5, max_delay_ms=1))
    rng = random.Random(1)
    requests = [caller_images(caller, rng.randint(1, 12)) for caller in range(1, 61)]

    outputs = await asyncio.gather(*(batcher.submit(images) for images in requests))

    assert all(size <= 5 for size in model.batch_sizes)
    assert sum(model.batch_sizes) == sum(len(images) for images in requests)
    for images, output in zip(requests, outputs, strict=True):
        torch.testing.assert_close(output, expected(images), rtol=0, atol=0)
    await batcher.close()


async def test_queued_requests_fill_one_pass_while_the_model_is_busy() -> None:
    model = RecordingModel(gated=True)
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=4, max_delay_ms=LONG_DELAY_MS))
    first = asyncio.create_task(batcher.submit(caller_images(1, 4)))  # a full batch: starts at once
    await wait_until(model.started.is_set)
    waiting = [asyncio.create_task(batcher.submit(caller_images(caller, 1))) for caller in range(2, 6)]
    await wait_until(lambda: batcher.queue_depth == 4)

    model.gate.set()
    await asyncio.gather(first, *waiting)

    assert model.batch_sizes == [4, 4]
    # The second pass holds callers 2..5 in arrival order.
    torch.testing.assert_close(model.batches[1][:, 0, 0, 0], torch.tensor([2.0, 3.0, 4.0, 5.0]))
    await batcher.close()


async def test_first_request_waits_for_company_up_to_the_delay() -> None:
    model = RecordingModel()
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=2, max_delay_ms=LONG_DELAY_MS))
    lonely = asyncio.create_task(batcher.submit(caller_images(1, 1)))
    await asyncio.sleep(0.05)  # plenty of time for a batcher that does not wait to run it alone
    assert not model.batches
    company = asyncio.create_task(batcher.submit(caller_images(2, 1)))

    await asyncio.gather(lonely, company)

    assert model.batch_sizes == [2]  # served by the full batch, not before it
    await batcher.close()


async def test_without_delay_a_lone_request_runs_alone() -> None:
    model = RecordingModel()
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=2, max_delay_ms=0))
    lonely = asyncio.create_task(batcher.submit(caller_images(1, 1)))
    await wait_until(model.started.is_set)
    await batcher.submit(caller_images(2, 1))
    await lonely

    assert model.batch_sizes == [1, 1]
    await batcher.close()


async def test_a_lone_request_is_served_once_the_delay_has_passed() -> None:
    model = RecordingModel()
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=64, max_delay_ms=20))
    images = caller_images(7, 3)

    output = await batcher.submit(images)  # no company ever comes: must not wait for a full batch

    torch.testing.assert_close(output, expected(images), rtol=0, atol=0)
    assert model.batch_sizes == [3]
    await batcher.close()


async def test_adaptive_delay_runs_a_lone_request_at_once() -> None:
    model = RecordingModel()
    config = BatchingConfig(max_batch_size=64, max_delay_ms=LONG_DELAY_MS, adaptive_delay=True)
    batcher = Batcher("m", model, config)

    # Without the adaptive rule this would wait a minute for company; the test's 10 s limit would fail it.
    for caller in range(3):
        await asyncio.wait_for(batcher.submit(caller_images(caller, 1)), timeout=10)

    assert model.batch_sizes == [1, 1, 1]
    await batcher.close()


async def test_adaptive_delay_still_gathers_requests_that_queue_during_a_pass() -> None:
    model = RecordingModel(gated=True)
    config = BatchingConfig(max_batch_size=4, max_delay_ms=LONG_DELAY_MS, adaptive_delay=True)
    batcher = Batcher("m", model, config)
    first = asyncio.create_task(batcher.submit(caller_images(1, 1)))  # alone: starts without waiting
    await wait_until(model.started.is_set)
    crowd = [asyncio.create_task(batcher.submit(caller_images(caller, 1))) for caller in range(2, 5)]
    await wait_until(lambda: batcher.queue_depth == 3)

    model.gate.set()
    await asyncio.gather(first, *crowd)

    assert model.batch_sizes == [1, 3]  # the three that queued meanwhile share the next pass
    torch.testing.assert_close(model.batches[1][:, 0, 0, 0], torch.tensor([2.0, 3.0, 4.0]))
    await batcher.close()


async def test_adaptive_delay_waits_for_company_after_a_crowded_pass() -> None:
    model = RecordingModel()
    config = BatchingConfig(max_batch_size=2, max_delay_ms=LONG_DELAY_MS, adaptive_delay=True)
    batcher = Batcher("m", model, config)
    await asyncio.gather(*(batcher.submit(caller_images(caller, 1)) for caller in (1, 2)))  # one pass of 2
    assert model.batch_sizes == [2]

    lonely = asyncio.create_task(batcher.submit(caller_images(3, 1)))
    await asyncio.sleep(0.05)  # plenty of time for a batcher that does not wait to run it alone
    assert model.batch_sizes == [2]
    company = asyncio.create_task(batcher.submit(caller_images(4, 1)))
    await asyncio.gather(lonely, company)

    assert model.batch_sizes == [2, 2]  # the lone request waited for the next caller
    await batcher.close()


async def test_a_request_larger_than_a_batch_is_split_and_reassembled() -> None:
    model = RecordingModel()
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=8, max_delay_ms=1))
    images = caller_images(3, 23)

    output = await batcher.submit(images)

    assert model.batch_sizes == [8, 8, 7]
    torch.testing.assert_close(output, expected(images), rtol=0, atol=0)
    await batcher.close()


async def test_split_requests_and_small_ones_interleave_without_mixing_outputs() -> None:
    model = RecordingModel()
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=8, max_delay_ms=2))
    requests = [caller_images(1, 20), caller_images(2, 3), caller_images(3, 17), caller_images(4, 1)]

    outputs = await asyncio.gather(*(batcher.submit(images) for images in requests))

    assert max(model.batch_sizes) <= 8
    for images, output in zip(requests, outputs, strict=True):
        torch.testing.assert_close(output, expected(images), rtol=0, atol=0)
    await batcher.close()


async def test_images_of_different_shapes_never_share_a_pass() -> None:
    model = RecordingModel()
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=16, max_delay_ms=2))
    shapes = [(1, 4, 4), (1, 6, 6), (3, 4, 4), (1, 4, 6)]
    requests = [caller_images(caller, 2, shapes[caller % len(shapes)]) for caller in range(1, 25)]

    outputs = await asyncio.gather(*(batcher.submit(images) for images in requests))

    for images, output in zip(requests, outputs, strict=True):
        torch.testing.assert_close(output, expected(images), rtol=0, atol=0)
    # Each batch is one tensor (B, C, H, W): had two shapes been mixed, torch.cat would have failed;
    # check also that every batch only holds callers of its own shape.
    for batch in model.batches:
        callers = {int(value) for value in batch[:, 0, 0, 0].tolist()}
        assert {shapes[caller % len(shapes)] for caller in callers} == {tuple(batch.shape[1:])}
    await batcher.close()


async def test_an_error_reaches_every_caller_of_its_batch_and_only_them() -> None:
    model = RecordingModel(fail_if=lambda images: bool((images[:, 0, 0, 0] == 1).any()))
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=2, max_delay_ms=LONG_DELAY_MS))
    # Queued in this order before the worker runs, so the passes are (1, 2) and (3, 4).
    results = await asyncio.gather(
        *(batcher.submit(caller_images(caller, 1)) for caller in (1, 2, 3, 4)), return_exceptions=True
    )

    assert model.batch_sizes == [2, 2]
    assert isinstance(results[0], ValueError) and isinstance(results[1], ValueError)
    torch.testing.assert_close(results[2], expected(caller_images(3, 1)))
    torch.testing.assert_close(results[3], expected(caller_images(4, 1)))
    # The batcher keeps working after a failed pass.
    torch.testing.assert_close(await batcher.submit(caller_images(5, 2)), expected(caller_images(5, 2)))
    await batcher.close()


async def test_a_failed_part_of_a_split_request_drops_the_rest() -> None:
    model = RecordingModel(fail_if=lambda images: bool((images[:, 0, 0, 0] == 1).any()))
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=4, max_delay_ms=1))

    with pytest.raises(ValueError, match="poisoned"):
        await batcher.submit(caller_images(1, 12))

    assert model.batch_sizes == [4]  # the remaining 8 images were not run for nothing
    assert batcher.queue_depth == 0
    await batcher.close()


async def test_tuple_outputs_are_sliced_per_caller() -> None:
    def mean_and_log_variance(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = images.flatten(1)  # (B, C*H*W)
        return flat[:, :2] * 10, flat.sum(dim=1)  # (B, 2), (B,)

    batcher = Batcher("vae", mean_and_log_variance, BatchingConfig(max_batch_size=4, max_delay_ms=2))
    requests = [caller_images(caller, count) for caller, count in ((1, 3), (2, 6), (3, 1))]

    outputs = await asyncio.gather(*(batcher.submit(images) for images in requests))

    for images, output in zip(requests, outputs, strict=True):
        assert isinstance(output, tuple) and len(output) == 2
        mean, log_variance = mean_and_log_variance(images)
        torch.testing.assert_close(output[0], mean, rtol=0, atol=0)
        torch.testing.assert_close(output[1], log_variance, rtol=0, atol=0)
    await batcher.close()


async def test_outputs_with_the_wrong_batch_size_are_a_clear_error() -> None:
    batcher = Batcher("m", lambda images: images[:1], BatchingConfig(max_batch_size=4, max_delay_ms=1))

    with pytest.raises(BatchOutputError, match="first dims"):
        await batcher.submit(caller_images(1, 3))
    await batcher.close()


async def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    model = RecordingModel(gated=True)
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=2, max_delay_ms=1, max_queue_images=4))
    running = asyncio.create_task(batcher.submit(caller_images(1, 2)))
    await wait_until(model.started.is_set)
    queued = [asyncio.create_task(batcher.submit(caller_images(caller, 2))) for caller in (2, 3)]
    await wait_until(lambda: batcher.queue_depth == 4)

    with pytest.raises(Overloaded) as refused:
        await batcher.submit(caller_images(4, 1))
    assert refused.value.status_code == 503
    assert int(refused.value.headers["Retry-After"]) >= 1

    model.gate.set()
    await asyncio.gather(running, *queued)
    # Once the queue drains, requests are accepted again.
    torch.testing.assert_close(await batcher.submit(caller_images(5, 1)), expected(caller_images(5, 1)))
    await batcher.close()


async def test_a_request_larger_than_the_whole_queue_is_refused() -> None:
    batcher = Batcher("m", RecordingModel(), BatchingConfig(max_queue_images=8))
    with pytest.raises(PayloadTooLarge):
        await batcher.submit(caller_images(1, 9))
    await batcher.close()


async def test_a_request_that_waits_too_long_times_out_and_leaves_the_queue() -> None:
    model = RecordingModel(gated=True)
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=2, max_delay_ms=1, timeout_s=0.2))
    running = asyncio.create_task(batcher.submit(caller_images(1, 2)))
    await wait_until(model.started.is_set)

    with pytest.raises(RequestTimeout) as timed_out:
        await batcher.submit(caller_images(2, 2))  # stuck behind the gated pass
    assert timed_out.value.status_code == 504
    assert batcher.queue_depth == 0

    with pytest.raises(RequestTimeout):
        await running  # the gated pass itself also exceeds the deadline
    model.gate.set()
    await wait_until(lambda: len(model.batches) == 1 and batcher.queue_depth == 0)
    await batcher.close()
    assert model.batch_sizes == [2]  # caller 2's images never ran


async def test_a_cancelled_request_is_dropped_from_the_queue() -> None:
    model = RecordingModel(gated=True)
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=4, max_delay_ms=1))
    running = asyncio.create_task(batcher.submit(caller_images(1, 4)))
    await wait_until(model.started.is_set)
    gone = asyncio.create_task(batcher.submit(caller_images(2, 3)))
    stays = asyncio.create_task(batcher.submit(caller_images(3, 1)))
    await wait_until(lambda: batcher.queue_depth == 4)

    gone.cancel()  # the client disconnected
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert batcher.queue_depth == 1

    model.gate.set()
    await asyncio.gather(running, stays)
    assert model.batch_sizes == [4, 1]
    assert not any((batch[:, 0, 0, 0].floor() == 2).any() for batch in model.batches)
    await batcher.close()


async def test_the_batch_function_runs_off_the_event_loop() -> None:
    model = RecordingModel()
    batcher = Batcher("m", model, BatchingConfig(max_delay_ms=1))
    await batcher.submit(caller_images(1, 1))
    assert threading.current_thread().name not in model.threads
    assert all(name.startswith("batcher-m") for name in model.threads)
    await batcher.close()


async def test_close_fails_queued_work_and_refuses_new_work() -> None:
    model = RecordingModel(gated=True)
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=2, max_delay_ms=1))
    running = asyncio.create_task(batcher.submit(caller_images(1, 2)))
    await wait_until(model.started.is_set)
    queued = asyncio.create_task(batcher.submit(caller_images(2, 1)))
    await wait_until(lambda: batcher.queue_depth == 1)

    closing = asyncio.create_task(batcher.close())
    with pytest.raises(NotReady):
        await queued
    model.gate.set()
    await closing
    # The pass that was running finishes and its caller gets its outputs.
    torch.testing.assert_close(await running, expected(caller_images(1, 2)))
    with pytest.raises(NotReady):
        await batcher.submit(caller_images(3, 1))


class CountingObserver:
    def __init__(self) -> None:
        self.queue_waits: list[float] = []
        self.batches: list[tuple[int, float]] = []
        self.depths: list[int] = []

    def observe_queue_wait(self, model: str, seconds: float) -> None:
        self.queue_waits.append(seconds)

    def observe_batch(self, model: str, batch_size: int, seconds: float) -> None:
        self.batches.append((batch_size, seconds))

    def observe_queue_depth(self, model: str, images: int) -> None:
        self.depths.append(images)


async def test_the_observer_sees_every_request_and_every_pass() -> None:
    observer = CountingObserver()
    model = RecordingModel()
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=4, max_delay_ms=2), observer=observer)
    requests = [caller_images(caller, count) for caller, count in ((1, 3), (2, 6), (3, 1))]

    await asyncio.gather(*(batcher.submit(images) for images in requests))

    assert len(observer.queue_waits) == 3  # once per request, even when it is split
    assert all(wait >= 0 for wait in observer.queue_waits)
    assert [size for size, _ in observer.batches] == model.batch_sizes
    assert sum(size for size, _ in observer.batches) == 10
    assert max(observer.depths) == 10 and observer.depths[-1] == 0
    await batcher.close()


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        BatchingConfig(max_batch_size=0)
    with pytest.raises(ValueError):
        BatchingConfig(timeout_s=0)


async def test_finish_serves_every_queued_request_and_refuses_new_ones() -> None:
    model = RecordingModel(gated=True)
    batcher = Batcher("m", model, BatchingConfig(max_batch_size=2, max_delay_ms=0))
    running = asyncio.create_task(batcher.submit(caller_images(1, 2)))  # a full pass, held at the gate
    await wait_until(model.started.is_set)
    queued = [asyncio.create_task(batcher.submit(caller_images(caller, 1))) for caller in range(2, 7)]
    await wait_until(lambda: batcher.queue_depth == 5)

    finishing = asyncio.create_task(batcher.finish())
    await asyncio.sleep(0.01)
    with pytest.raises(NotReady):  # a model being replaced takes no new work
        await batcher.submit(caller_images(9, 1))
    model.gate.set()
    await finishing

    for caller, task in zip(range(2, 7), queued, strict=True):  # none of the queued requests failed
        torch.testing.assert_close(task.result(), expected(caller_images(caller, 1)), rtol=0, atol=0)
    assert running.done() and not running.exception()
    assert batcher.queue_depth == 0
