"""Per-item extras travel with their items through the batcher: sliced when a request is split across
passes, joined when requests share a pass, and never mixed between items."""

from __future__ import annotations

import asyncio

import pytest
import torch

from app.engine.scheduling.batch_items import Items
from app.engine.scheduling.batching import Batcher, BatchingConfig
from app.errors import InvalidRequest


def scale_by_gain(batch: object) -> torch.Tensor:
    """A batch function that reads an extra: each item times its own `gain`; records the pass sizes."""
    assert isinstance(batch, Items)
    PASSES.append(batch.inputs.shape[0])
    return batch.inputs * batch.extras["gain"].view(-1, 1, 1, 1)


PASSES: list[int] = []


async def test_each_item_is_computed_with_its_own_extra_across_shared_and_split_passes() -> None:
    PASSES.clear()
    batcher = Batcher("m", scale_by_gain, BatchingConfig(max_batch_size=4, max_delay_ms=20))
    requests = [
        Items(torch.full((count, 1, 2, 2), float(caller)), {"gain": torch.arange(count, dtype=torch.float32) + caller})
        for caller, count in ((1, 3), (2, 6), (3, 1))  # 10 items: more than one pass, the 6 split
    ]
    outputs = await asyncio.gather(*(batcher.submit(items) for items in requests))
    for items, output in zip(requests, outputs, strict=True):
        assert isinstance(output, torch.Tensor)
        expected = items.inputs * items.extras["gain"].view(-1, 1, 1, 1)
        torch.testing.assert_close(output, expected)
    assert max(PASSES) <= 4 and sum(PASSES) == 10 and len(PASSES) >= 3
    await batcher.close()


async def test_items_with_other_extras_or_shapes_do_not_share_a_pass() -> None:
    seen: list[tuple[str, ...]] = []

    def record(batch: object) -> torch.Tensor:
        assert isinstance(batch, Items)
        seen.append(tuple(sorted(batch.extras)))
        return batch.inputs

    batcher = Batcher("m", record, BatchingConfig(max_batch_size=8, max_delay_ms=20))
    one = Items(torch.zeros(1, 1, 2, 2), {"gain": torch.ones(1)})
    other = Items(torch.zeros(1, 1, 2, 2), {"label": torch.ones(1)})
    await asyncio.gather(batcher.submit(one), batcher.submit(other))
    assert sorted(seen) == [("gain",), ("label",)]
    await batcher.close()


def test_an_extra_must_have_one_value_per_item() -> None:
    with pytest.raises(InvalidRequest):
        Items(torch.zeros(3, 1, 2, 2), {"gain": torch.ones(2)})


async def test_latents_travel_as_they_are() -> None:
    batcher = Batcher("m", lambda latents: latents * 2, BatchingConfig(max_batch_size=4, max_delay_ms=0))
    latents = torch.randn(5, 3)
    torch.testing.assert_close(await batcher.submit(latents), latents * 2)
    await batcher.close()
