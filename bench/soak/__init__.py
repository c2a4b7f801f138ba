"""The soak run (`python -m bench.soak`, docs/soak.md): many mixed requests, valid and hostile, against a real
server, watching its memory. `schedule` builds the requests; `run` sends them, samples the memory and reports."""

from bench.soak.run import main, run_schedule
from bench.soak.schedule import build_schedule

__all__ = ["build_schedule", "main", "run_schedule"]
