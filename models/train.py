"""`python -m models.train`: train one recipe, or a task on your own images, into `checkpoints/<name>/`.

The command line lives in `models.training.cli` (its docstring and `--help` describe it); the loop and
the pipelines in `models.training`. This module keeps the documented command working.
"""

from models.machine import cpu_description  # models.ffdnet_training imports it from here
from models.training.cli import main

__all__ = ["cpu_description", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
