"""CPU work started from the event loop: small jobs run inline, large ones in a worker thread.

A worker thread keeps the event loop answering other requests while a big image is decoded or
encoded, but the hop to the thread and back costs about as much as decoding a small PNG. So work on
at most `INLINE_PIXELS` pixels runs right here, and anything larger (or of unknown size) is offloaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from app.imaging.codecs import INLINE_PIXELS

T = TypeVar("T")


async def run_cpu_work(work: Callable[[], T], pixels: int | None) -> T:
    """work() inline when it touches at most INLINE_PIXELS pixels, else in a worker thread."""
    if pixels is not None and pixels <= INLINE_PIXELS:
        return work()
    return await asyncio.to_thread(work)
