"""Evaluate the trained checkpoints on the MNIST test set and write `docs/model-report.md`.

    python -m models.evaluate --data-dir ../shared/datasets/mnist [--checkpoints checkpoints]
        [--only NAME ...] [--report docs/model-report.md] [--natural-dir ../shared/datasets] [--bm3d-subset N]
        [--precision-only]

Models of photographs (card domain "natural") are measured on BSD68/Set12 (denoising) and Set5/Set14
(super-resolution) with the literature's protocols (models/evaluation/photo/natural.py), read from
--natural-dir, by default the parent of --data-dir.

Metrics go into each checkpoint's `config.json` ("metrics"; the weights are untouched), figures next
to the report. Every evaluation also measures what serving the model in each reduced precision the
device runs natively costs in quality and gains in speed (models/evaluation/precision.py), into the
card's `serving.precision`: the quality guard the service consults under AE_PRECISION=auto.
`--precision-only` measures only that (seconds to a minute per model). The protocol (noise levels,
seeds, subsets) is `EvaluationSettings`' defaults.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import torch

from models.evaluation import (
    EvaluationContext,
    EvaluationSettings,
    evaluate_checkpoints,
    evaluate_serving_precision,
    machine_description,
    write_report,
)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with the MNIST IDX files")
    parser.add_argument(
        "--natural-dir",
        type=Path,
        help="folder holding BSD68/, Set12/, Set5/, Set14/ for the natural-image models (default: --data-dir's parent)",
    )
    parser.add_argument(
        "--bm3d-subset",
        type=int,
        default=EvaluationSettings.natural_bm3d_images,
        metavar="N",
        help="natural-image denoising: BM3D on the first N images of BSD68 and Set12 in name order (0: all; "
        "default %(default)s: BM3D takes seconds per 481x321 image)",
    )
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="folder of checkpoint folders")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="evaluate only these checkpoints")
    parser.add_argument("--report", type=Path, default=Path("docs/model-report.md"), help="report to (re)write")
    parser.add_argument("--no-report", action="store_true", help="update the cards only")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="evaluate nothing: rewrite the report from the metrics the cards already hold (e.g. after "
        "evaluating models one by one with --only NAME --no-report)",
    )
    parser.add_argument(
        "--precision-only",
        action="store_true",
        help="measure only the quality guard of reduced precision (serving.precision in the cards); no report",
    )
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
        settings=EvaluationSettings(
            bm3d_workers=arguments.threads or os.cpu_count() or 1,
            natural_bm3d_images=arguments.bm3d_subset or None,
        ),
        device=torch.device(arguments.device),
        natural_dir=arguments.natural_dir,
    )
    command = "python -m models.evaluate " + shlex.join(sys.argv[1:] if argv is None else argv)
    if arguments.report_only:
        write_report(arguments.checkpoints, arguments.report, command, machine_description(context.device))
        print(f"wrote {arguments.report} from the cards in {arguments.checkpoints}")
        return 0
    if arguments.precision_only:
        guarded = evaluate_serving_precision(arguments.checkpoints, context, command, arguments.only)
        print(f"measured the serving precision of {len(guarded)} checkpoint(s): {', '.join(guarded)}")
        return 0
    cards = evaluate_checkpoints(arguments.checkpoints, context, report, command, arguments.only)
    print(f"evaluated {len(cards)} checkpoint(s): {', '.join(cards)}" + (f"; report: {report}" if report else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
