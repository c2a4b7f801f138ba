"""What a batcher queues: n items as one tensor (n, ...), or `Items`: their tensor with named per-item extras
(each (n, ...)), which travel with them through the batches: sliced when a request is split, joined when
requests share a forward pass. A noise level per image (denoising told the noise level) is such an extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from app.errors import InvalidRequest

Shape = tuple[object, ...]  # of one item (and of its extras): only items of one shape share a forward pass


@dataclass(frozen=True)
class Items:
    """n items: their inputs (n, ...) and named per-item extras, each (n, ...) (a noise level: (n,))."""

    inputs: torch.Tensor
    extras: Mapping[str, torch.Tensor]

    def __post_init__(self) -> None:
        for name, extra in self.extras.items():
            if extra.dim() < 1 or extra.shape[0] != self.inputs.shape[0]:
                raise InvalidRequest(f"extra {name!r} has shape {tuple(extra.shape)} for {self.inputs.shape[0]} items")


BatchInput = torch.Tensor | Items


def queued(inputs: torch.Tensor, extras: Mapping[str, torch.Tensor] | None = None) -> BatchInput:
    """What a batcher queues for n items: their tensor, with their per-item extras when the task has some."""
    return Items(inputs, extras) if extras else inputs


def inputs_of(items: BatchInput) -> torch.Tensor:
    return items.inputs if isinstance(items, Items) else items


def shape_of(items: BatchInput) -> Shape:
    """What items must share to be one batch: the shape of one item, and the names and shapes of its extras."""
    if isinstance(items, Items):
        extras = tuple((name, tuple(extra.shape[1:])) for name, extra in sorted(items.extras.items()))
        return (tuple(items.inputs.shape[1:]), extras)
    return tuple(items.shape[1:])


def part_of(items: BatchInput, start: int, stop: int) -> BatchInput:
    if isinstance(items, Items):
        return Items(items.inputs[start:stop], {name: extra[start:stop] for name, extra in items.extras.items()})
    return items[start:stop]


def join(parts: list[BatchInput]) -> BatchInput:
    """Items of several requests as one batch: their tensors joined, and each extra joined likewise."""
    items = [part for part in parts if isinstance(part, Items)]
    if len(parts) == 1 or not items:
        return parts[0] if len(parts) == 1 else torch.cat([part for part in parts if isinstance(part, torch.Tensor)])
    extras = {name: torch.cat([each.extras[name] for each in items]) for name in items[0].extras}
    return Items(torch.cat([each.inputs for each in items]), extras)
