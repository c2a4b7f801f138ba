"""What a plan does to a model's graph before it serves: batch norms folded into the convolutions before them,
a memory format for every 4-D weight, torch.compile of its top-level blocks (models.runtime.execution decides
which, by measurement)."""

from __future__ import annotations

import itertools
from typing import Literal

import torch
from torch import nn

MemoryFormat = Literal["channels_last", "contiguous"]


# -- BatchNorm folding -----------------------------------------------------------------------------


def fold_batch_norm(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d in an nn.Sequential into that
    convolution (its weights and bias absorb the norm's fixed affine map); the norm becomes Identity.
    In place; -> how many were folded.

    y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta = conv'(x) with
    W' = W * s, b' = (b - mean) * s + beta, s = gamma / sqrt(var + eps) per output channel.
    """
    folded = 0
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (_, conv), (norm_name, norm) in itertools.pairwise(children):
            if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)):
                continue
            if norm.running_mean is None or norm.running_var is None or norm.training:
                continue  # batch statistics, not a fixed map: nothing to fold
            with torch.no_grad():
                scale = torch.rsqrt(norm.running_var.double() + norm.eps)
                if norm.weight is not None:
                    scale = scale * norm.weight.double()
                bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
                shift = norm.bias.double() if norm.bias is not None else torch.zeros_like(scale)
                new_bias = (bias - norm.running_mean.double()) * scale + shift
                conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
                if conv.bias is None:
                    conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype), requires_grad=False)
                else:
                    conv.bias.copy_(new_bias.to(conv.bias.dtype))
            setattr(module, norm_name, nn.Identity())
            folded += 1
    return folded


def apply_memory_format(model: nn.Module, memory_format: MemoryFormat) -> nn.Module:
    # Module.to takes memory_format (it converts 4-D parameters); torch's type stubs do not list it.
    if memory_format == "channels_last":
        return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]


def compile_blocks(model: nn.Module, dynamic: bool | None = None, backend: str = "inductor") -> int:
    """torch.compile each top-level block of the model (its direct children with parameters), in place.

    The task methods (denoise, embed, tiled inference ...) are Python around these blocks; compiling the
    blocks keeps that Python as it is and lets inductor fuse what runs inside them. -> blocks compiled.
    """
    compiled = 0
    for child in model.children():
        if any(True for _ in child.parameters()):
            child.compile(dynamic=dynamic, backend=backend)
            compiled += 1
    return compiled
