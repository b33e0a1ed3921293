"""`report` stage entry point: results tables, per-task success, loss curves and frame grids -> reports/.

    python -m workflows.report                 # the DVC stage: writes reports/pipeline/ and reports/plots/
    python -m workflows.report --summary       # print the summary of the last report (what `make run` ends with)

Reads artifacts/eval/results.json, metrics/{eval,pretrain,tune}.json and the pretrain/tune MLflow runs
of the configured preset and seed; logs the MLflow run `report-<preset>-s<seed>` with the report as
artifacts. See components/reporting/report.py for the files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components.core.config import add_config_args, config_from_args
from components.core.entry import cli_main
from components.core.tracking import experiment_name, resolve_target, run_name, start_run
from components.reporting.report import ReportError, format_summary, read_summary, write_report


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Write the report, or with --summary print the last one; exit 2 naming a missing input."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--eval", default="artifacts/eval", help="the evaluate stage's output folder")
    parser.add_argument("--metrics", default="metrics", help="folder of the stages' metrics JSON files")
    parser.add_argument("--out", default="reports/pipeline", help="report folder")
    parser.add_argument("--plots", default="reports/plots", help="CSV files for `dvc plots`")
    parser.add_argument("--summary", action="store_true", help="only print the summary of the last report")
    args = parser.parse_args(argv)
    try:
        if args.summary:
            print(format_summary(read_summary(Path(args.out))))
            return 0
        cfg = config_from_args(args)
        target = resolve_target(cfg.tracking)
        experiment = experiment_name(cfg.tracking, "pipeline")
        name = run_name("report", cfg.experiment.preset, cfg.experiment.seed)
        with start_run(target, experiment, name) as run:
            summary = write_report(Path(args.eval), Path(args.metrics), Path(args.out), Path(args.plots),
                                   target=target, experiment=experiment, preset=cfg.experiment.preset,
                                   seed=cfg.experiment.seed, log=run)
    except ReportError as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
