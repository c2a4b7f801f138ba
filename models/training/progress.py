"""A minimal progress line on stderr: step count, running loss and throughput (no tqdm needed)."""

from __future__ import annotations

import time
from typing import TextIO

BAR_WIDTH = 24


class Progress:
    """One epoch's progress. On a terminal the line redraws in place; in a log it prints ~5 lines per epoch."""

    def __init__(self, label: str, total: int, stream: TextIO, min_interval_s: float = 0.25) -> None:
        self.label, self.total, self.stream = label, max(1, total), stream
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())
        self.min_interval_s = min_interval_s
        self.last_draw = 0.0
        self.next_logged_fraction = 0.2
        self.line = ""

    def _render(self, step: int, loss: float, images_per_second: float) -> str:
        filled = BAR_WIDTH * step // self.total
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        return f"{self.label} [{bar}] {step}/{self.total}  loss {loss:.5g}  {images_per_second:,.0f} img/s"

    def update(self, step: int, loss: float, images_per_second: float) -> None:
        self.line = self._render(step, loss, images_per_second)
        if self.interactive:
            now = time.monotonic()
            if now - self.last_draw >= self.min_interval_s or step == self.total:
                self.stream.write("\r" + self.line)
                self.stream.flush()
                self.last_draw = now
        elif step / self.total >= self.next_logged_fraction and step < self.total:
            self.stream.write(self.line + "\n")
            self.stream.flush()
            self.next_logged_fraction += 0.2

    def finish(self, summary: str) -> None:
        """End the epoch's line with a summary (e.g. the validation loss)."""
        prefix = "\r" if self.interactive else ""
        self.stream.write(f"{prefix}{self.line}  {summary}\n")
        self.stream.flush()
