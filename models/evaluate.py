"""Evaluate the trained checkpoints on the MNIST test set and write `docs/model-report.md`.

    python -m models.evaluate --data-dir ../shared/datasets/mnist [--checkpoints checkpoints]
        [--only NAME ...] [--report docs/model-report.md]

Metrics go into each checkpoint's `config.json` ("metrics"; the weights are untouched), figures next
to the report. The protocol (noise levels, seeds, subsets) is `EvaluationSettings`' defaults.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import torch

from models.evaluation import EvaluationContext, EvaluationSettings, evaluate_checkpoints


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="folder of checkpoint folders")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="evaluate only these checkpoints")
    parser.add_argument("--report", type=Path, default=Path("docs/model-report.md"), help="report to (re)write")
    parser.add_argument("--no-report", action="store_true", help="update the cards only")
    parser.add_argument("--device", default="cpu", help="torch device for the models (default cpu)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads and BM3D processes (default: all cores)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
    report = None if arguments.no_report else arguments.report
    context = EvaluationContext(
        data_dir=arguments.data_dir,
        figures_dir=(report or arguments.report).parent,
        settings=EvaluationSettings(bm3d_workers=arguments.threads or os.cpu_count() or 1),
        device=torch.device(arguments.device),
    )
    command = "python -m models.evaluate " + shlex.join(sys.argv[1:] if argv is None else argv)
    cards = evaluate_checkpoints(arguments.checkpoints, context, report, command, arguments.only)
    print(f"evaluated {len(cards)} checkpoint(s): {', '.join(cards)}" + (f"; report: {report}" if report else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
