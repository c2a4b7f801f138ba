"""What a batcher queues: n items as one tensor (n, ...), or `Items`: their tensor with named per-item extras
(each (n, ...)), which travel with them through the batches: sliced when a request is split, joined when
requests share a forward pass. A noise level per image (denoising told the noise level) is such an extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from app.errors import InvalidRequest, ServiceError

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
BatchOutput = torch.Tensor | tuple[torch.Tensor, ...]  # what a pass gives back: first dim = items


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


def first_dim(output: BatchOutput) -> int:
    return output[0].shape[0] if isinstance(output, tuple) else output.shape[0]


def slice_output(output: BatchOutput, start: int, stop: int) -> BatchOutput:
    if isinstance(output, tuple):
        return tuple(tensor[start:stop] for tensor in output)
    return output[start:stop]


def concatenate_outputs(pieces: list[BatchOutput]) -> BatchOutput:
    """The outputs of one request's passes (a large request may be split over several) as one."""
    if len(pieces) == 1:
        return pieces[0]
    if isinstance(pieces[0], tuple):
        tuples = [piece for piece in pieces if isinstance(piece, tuple)]
        return tuple(torch.cat(parts) for parts in zip(*tuples, strict=True))
    return torch.cat([piece for piece in pieces if isinstance(piece, torch.Tensor)])


class BatchOutputError(ServiceError):
    """The batch function returned something that cannot be split back into per-image outputs."""


def check_outputs(outputs: object, batch_size: int) -> None:
    tensors = outputs if isinstance(outputs, tuple) else (outputs,)
    if not tensors or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in tensors):
        raise BatchOutputError(f"batch function returned {type(outputs).__name__}, expected tensor(s)")
    sizes = [t.shape[0] for t in tensors]
    if any(size != batch_size for size in sizes):
        raise BatchOutputError(f"batch function returned first dims {sizes} for a batch of {batch_size}")
