"""The batcher's inline path: a lone small request on an idle model thread runs on the event loop, and
nothing else does (not the first pass, not a crowded one, not while the model's thread is busy, not an input
expected to take longer than `inline_max_ms`, never with 0)."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from app.engine.scheduling.batching import Batcher, BatchingConfig, ThreadPasses


class ThreadRecorder:
    """A batch function that records on which thread each pass ran; it can be held at a gate."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.threads.append(threading.current_thread().name)
        self.started.set()
        if not self.gate.wait(timeout=10):
            raise RuntimeError("test gate was never opened")
        return images * 2

    def on_loop(self) -> list[bool]:
        return [name == threading.current_thread().name for name in self.threads]


def image(count: int = 1, side: int = 4) -> torch.Tensor:
    return torch.rand(count, 1, side, side)


async def test_a_lone_small_request_runs_on_the_loop_once_its_cost_is_known() -> None:
    model = ThreadRecorder()
    batcher = Batcher("m", model, BatchingConfig(adaptive_delay=True))
    for _ in range(3):
        inputs = image()
        assert torch.equal(await batcher.submit(inputs), inputs * 2)
    assert model.on_loop() == [False, True, True]  # the first pass measures the cost, on the thread
    await batcher.close()


async def test_zero_turns_the_inline_path_off() -> None:
    model = ThreadRecorder()
    batcher = Batcher("m", model, BatchingConfig(adaptive_delay=True, inline_max_ms=0))
    for _ in range(3):
        await batcher.submit(image())
    assert model.on_loop() == [False, False, False]
    await batcher.close()


async def test_a_pass_of_several_callers_runs_on_the_thread() -> None:
    model = ThreadRecorder()
    batcher = Batcher("m", model, BatchingConfig(max_delay_ms=50))
    await batcher.submit(image())
    await asyncio.gather(batcher.submit(image()), batcher.submit(image()))
    assert model.on_loop() == [False, False]
    await batcher.close()


async def test_an_input_expected_to_take_longer_than_the_limit_runs_on_the_thread() -> None:
    model = ThreadRecorder()
    batcher = Batcher("m", model, BatchingConfig(adaptive_delay=True))
    await batcher.submit(image())
    await batcher.submit(image())  # inline: its cost per value is now measured
    cost_per_value = batcher._seconds_per_value  # the estimate the decision reads
    side = int((0.01 / cost_per_value) ** 0.5) + 1  # an image expected to take 10 ms at the measured rate
    await batcher.submit(image(side=side))
    assert model.on_loop() == [False, True, False]
    await batcher.close()


async def test_not_while_another_batcher_has_a_pass_on_the_shared_thread() -> None:
    first, second = ThreadRecorder(), ThreadRecorder()
    passes = ThreadPasses()
    config = BatchingConfig(adaptive_delay=True)
    one, other = Batcher("a", first, config, passes=passes), Batcher("b", second, config, passes=passes)
    await other.submit(image())
    await other.submit(image())
    first.gate.clear()
    held = asyncio.create_task(one.submit(image()))  # one's pass holds its thread
    while not first.started.is_set():
        await asyncio.sleep(0.001)
    assert passes.in_flight == 1
    await other.submit(image())  # the thread is busy: this pass goes there too and waits its turn
    first.gate.set()
    await held
    assert second.on_loop() == [False, True, False] and passes.in_flight == 0
    await one.close()
    await other.close()


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="inline_max_ms"):
        BatchingConfig(inline_max_ms=-1)
