"""The `report` stage: the pipeline's results as markdown, plots and frame grids, under reports/ and in MLflow.

    summary = write_report(ReportInputs.of(...), Path("reports/pipeline"), Path("reports/plots"), target=t,
                           experiment="upvla-pipeline", preset="full", seed=0, log=run)
    print(format_summary(summary))

Reads what the earlier stages wrote: the evaluate stage's CALVIN `results.json` and `metrics/eval.json`,
the training stages' `metrics/{pretrain,tune}.json`, and, from their MLflow runs (`pretrain-<preset>-s<seed>`,
`tune-<preset>-s<seed>`, the newest finished one of each), the per-step losses and the predicted-frame
grids the training loop logged. Writes to `out_dir`:

    results.md          CALVIN table (avg len, chain success 1..5), per-task success, final training losses
    summary.json        the numbers of results.md (what `python -m workflows.report --summary` prints)
    task_success.png    per-task success bars
    loss_curves.png     pretrain and tune losses (total and per term) over optimiser steps
    frames/             the predicted-vs-true future-frame grids of both stages

and, for `dvc plots`, to `plots_dir`: loss_pretrain.csv, loss_tune.csv (step + one column per loss
term) and task_success.csv (task, success). The markdown table code is shared with the ablations.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from components.core.tracking import (
    NULL_LOGGER,
    MetricLogger,
    TrackingTarget,
    download_run_artifacts,
    find_runs,
    list_run_artifacts,
    metric_history,
)
from components.reporting.plots import plot_task_success

TRAIN_STAGES = ("pretrain", "tune")
# loss terms the training loop logs as `<stage>/<term>` (those a stage does not compute are absent)
LOSS_TERMS = ("loss", "mmu", "pre", "act")
CHAIN_LEN = 5


class ReportError(RuntimeError):
    """An input of the report is missing; the message names it and the stage that writes it."""


@dataclass(frozen=True)
class ReportSummary:
    """What the report shows, in numbers (also `summary.json`)."""

    preset: str
    seed: int
    num_chains: int
    avg_seq_len: float
    # chains with at least i subtasks completed, i = 1..5
    chain_sr: dict[str, float]
    task_success: dict[str, float]
    # stage -> its last logged loss terms (metrics/<stage>.json `final`)
    final_losses: dict[str, dict[str, float]]
    out_dir: str


def read_json(path: Path, stage: str) -> dict[str, Any]:
    """A stage's JSON output, with an error naming the stage that writes it."""
    if not path.is_file():
        raise ReportError(f"{path}: missing; the `{stage}` stage writes it (dvc repro {stage})")
    return json.loads(path.read_text())


def stage_run(target: TrackingTarget, experiment: str, stage: str, preset: str, seed: int) -> Any:
    """The newest finished MLflow run `<stage>-<preset>-s<seed>` of `experiment`."""
    name = f"{stage}-{preset}-s{seed}"
    runs = find_runs(target, experiment, f"attributes.run_name = '{name}' and attributes.status = 'FINISHED'")
    if not runs:
        raise ReportError(f"no finished MLflow run {name!r} in experiment {experiment!r} of {target.display_uri}; "
                          f"the `{stage}` stage logs it")
    return runs[0]


def loss_curves(target: TrackingTarget, run: Any, stage: str) -> dict[str, list[tuple[int, float]]]:
    """Loss term -> `(step, value)` history of a training run (terms it logged only)."""
    keys = [term for term in LOSS_TERMS if f"{stage}/{term}" in run.data.metrics]
    return {term: metric_history(target, run.info.run_id, f"{stage}/{term}") for term in keys}


def write_loss_csv(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path) -> Path:
    """`step,<term>,...` rows (one per logged step) for `dvc plots`."""
    steps = sorted({step for history in curves.values() for step, _ in history})
    by_term = {term: dict(history) for term, history in curves.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", *curves])
        for step in steps:
            writer.writerow([step, *(by_term[term].get(step, "") for term in curves)])
    return path


# legend entries: what each logged term is, and its unit
TERM_LEGEND = {
    "loss": "loss: λ-weighted total",
    "mmu": "mmu: answer-token CE (nats/token)",
    "pre": "pre: future VQ-code CE (nats/token)",
    "act": "act: pose MSE + gripper BCE (or action-bin CE)",
}


def plot_losses(curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]]) -> Figure:
    """One panel per training stage: every loss term over optimiser steps (log scale), titled and labelled."""
    figure = Figure(figsize=(6 * len(curves), 3.8))
    for axes, (stage, terms) in zip(figure.subplots(1, len(curves), squeeze=False)[0], curves.items(), strict=True):
        for term, history in terms.items():
            steps, values = zip(*history, strict=True) if history else ((), ())
            axes.plot(steps, values, label=TERM_LEGEND.get(term, term), linewidth=2 if term == "loss" else 1)
        axes.set_yscale("log")
        axes.set_xlabel("optimiser step")
        axes.set_ylabel("loss per logging window (mean, log scale)")
        axes.set_title(f"{stage}: training losses")
        axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def copy_frame_grids(target: TrackingTarget, run_id: str, dst: Path) -> list[Path]:
    """Download the run's `frames/*.png` grids into `dst`; returns the files."""
    dst.mkdir(parents=True, exist_ok=True)
    names = [path for path, is_dir in list_run_artifacts(target, run_id, "frames") if not is_dir]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            shutil.copy(download_run_artifacts(target, run_id, name, tmp), dst / Path(name).name)
    return sorted(dst / Path(name).name for name in names)


CALVIN_TABLE_KEY = ("1-5: share of chains that completed at least that many subtasks in a row; Avg. Len.: mean "
                    "subtasks completed per chain (0-5); chains: chains evaluated.")
LOSS_TABLE_KEY = ("Last logged value of each term (mean over the last logging window). loss: λ-weighted total; mmu: "
                  "answer-token cross-entropy and pre: future VQ-code cross-entropy, both nats/token; act: pose MSE + "
                  "gripper BCE (map head) or action-bin cross-entropy (tokens head); –: term not trained.")


def calvin_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown in the paper's Table 1/3 layout: success of 1..5 tasks in a row and the average length.

    Args:
        rows: row label -> metrics with `chain_sr` ({"1".."5": rate}), `avg_seq_len` and `num_chains`.
    """
    head = "| Method | " + " | ".join(str(i) for i in range(1, CHAIN_LEN + 1)) + " | Avg. Len. | chains |"
    lines = [head, "|---" * (CHAIN_LEN + 3) + "|"]
    for label, m in rows.items():
        rates = " | ".join(f"{100 * m['chain_sr'][str(i)]:.1f}%" for i in range(1, CHAIN_LEN + 1))
        lines.append(f"| {label} | {rates} | {m['avg_seq_len']:.2f} | {m['num_chains']} |")
    return "\n".join(lines) + "\n\n" + CALVIN_TABLE_KEY + "\n"


def task_table(task_success: Mapping[str, float], task_info: Mapping[str, Mapping[str, int]] | None = None) -> str:
    """Markdown table of per-task success rates (the tasks attempted).

    With CALVIN's `task_info`, a `successes / attempts` column too: a rate alone hides that 100% can be 1 of 1.
    """
    if task_info is None:
        lines = ["| task | success |", "|---|---|"]
        lines += [f"| {task} | {100 * rate:.1f}% |" for task, rate in task_success.items()]
    else:
        lines = ["| task | success | successes / attempts |", "|---|---|---|"]
        lines += [f"| {task} | {100 * rate:.1f}% | {task_info[task]['success']} / {task_info[task]['total']} |"
                  for task, rate in task_success.items()]
    return "\n".join(lines) + "\n"


def loss_table(final: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table of each training stage's last logged loss terms."""
    lines = ["| stage | " + " | ".join(LOSS_TERMS) + " |", "|---" * (len(LOSS_TERMS) + 1) + "|"]
    for stage, values in final.items():
        cells = " | ".join(f"{values[t]:.4f}" if t in values else "–" for t in LOSS_TERMS)
        lines.append(f"| {stage} | {cells} |")
    return "\n".join(lines) + "\n\n" + LOSS_TABLE_KEY + "\n"


def results_markdown(summary: ReportSummary, frames: Sequence[Path],
                     task_info: Mapping[str, Mapping[str, int]] | None = None) -> str:
    """results.md: the tables, then the figures by relative path; `task_info`: CALVIN's per-task counts."""
    label = f"UP-VLA ({summary.preset}, seed {summary.seed})"
    parts = ["# UP-VLA results\n", "## CALVIN long-horizon evaluation\n", calvin_table({label: asdict(summary)}),
             "## Per-task success\n", task_table(summary.task_success, task_info),
             "## Final training losses\n", loss_table(summary.final_losses),
             "![per-task success](task_success.png)\n", "![losses](loss_curves.png)\n"]
    parts += [f"![{path.stem}](frames/{path.name})\n" for path in frames]
    return "\n".join(parts)


def write_report(eval_dir: Path, metrics_dir: Path, out_dir: Path, plots_dir: Path, *, target: TrackingTarget,
                 experiment: str, preset: str, seed: int, log: MetricLogger = NULL_LOGGER) -> ReportSummary:
    """Write the report (see the module docstring) and log `out_dir` to `log` as artifacts.

    Raises:
        ReportError: an input is missing (names it and the stage that writes it).
    """
    metrics = read_json(metrics_dir / "eval.json", "evaluate")
    results = read_json(eval_dir / "results.json", "evaluate")
    final = {stage: read_json(metrics_dir / f"{stage}.json", stage)["final"] for stage in TRAIN_STAGES}
    runs = {stage: stage_run(target, experiment, stage, preset, seed) for stage in TRAIN_STAGES}
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    curves = {stage: loss_curves(target, run, stage) for stage, run in runs.items()}
    for stage, terms in curves.items():
        write_loss_csv(terms, plots_dir / f"loss_{stage}.csv")
    plot_losses(curves).savefig(out_dir / "loss_curves.png", dpi=100)
    [calvin] = results.values()  # the evaluate stage writes one checkpoint's entry
    task_plot = plot_task_success(calvin["task_info"], num_chains=metrics["num_chains"])
    task_plot.savefig(out_dir / "task_success.png", dpi=100)
    _write_task_csv(metrics["task_success"], plots_dir / "task_success.csv")
    frames = [p for run in runs.values() for p in copy_frame_grids(target, run.info.run_id, out_dir / "frames")]
    summary = ReportSummary(preset, seed, metrics["num_chains"], metrics["avg_seq_len"], metrics["chain_sr"],
                            metrics["task_success"], final, str(out_dir))
    (out_dir / "results.md").write_text(results_markdown(summary, frames, calvin["task_info"]))
    (out_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    log.log_metrics({"avg_seq_len": summary.avg_seq_len})
    log.log_artifact(out_dir)
    return summary


def _write_task_csv(task_success: Mapping[str, float], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "success"])
        writer.writerows(task_success.items())


def read_summary(out_dir: Path) -> ReportSummary:
    """The summary a previous `write_report` left in `out_dir`."""
    return ReportSummary(**read_json(out_dir / "summary.json", "report"))


def format_summary(summary: ReportSummary) -> str:
    """A few lines for the terminal: the CALVIN numbers, the final losses, where the report is."""
    rates = "  ".join(f"{i}: {100 * summary.chain_sr[str(i)]:.1f}%" for i in range(1, CHAIN_LEN + 1))
    losses = "; ".join(f"{stage} loss {values['loss']:.4f}" for stage, values in summary.final_losses.items()
                       if "loss" in values)
    return (f"UP-VLA ({summary.preset}, seed {summary.seed}) on {summary.num_chains} CALVIN chains: "
            f"average length {summary.avg_seq_len:.2f}\n  tasks in a row: {rates}\n  {losses}\n"
            f"  report: {Path(summary.out_dir) / 'results.md'}")
