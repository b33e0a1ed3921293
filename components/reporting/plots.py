"""Plots shared by the stages that make them and the report that collects them; each titled, axes labelled."""

from __future__ import annotations

from collections.abc import Mapping

from matplotlib.figure import Figure


def plot_task_success(task_info: Mapping[str, Mapping[str, int]], *, num_chains: int | None = None) -> Figure:
    """Horizontal bars of success / attempts per task (attempted tasks only, CALVIN's task order).

    Args:
        task_info: CALVIN's per-task counts, task -> {"success": n, "total": n}.
        num_chains: evaluated chains, named in the title when given.
    """
    tasks = list(task_info)
    rates = [task_info[t]["success"] / task_info[t]["total"] for t in tasks]
    figure = Figure(figsize=(7, 1.5 + 0.28 * len(tasks)))
    axes = figure.subplots()
    axes.barh(tasks, rates, color="tab:blue")
    for y, task in enumerate(tasks):
        axes.text(1.01, y, f"{task_info[task]['success']}/{task_info[task]['total']}", va="center", fontsize=8)
    axes.set_xlim(0, 1)
    axes.invert_yaxis()
    axes.set_xlabel("success rate (fraction of attempts; successes/attempts at the right)")
    axes.set_ylabel("CALVIN subtask")
    chains = "" if num_chains is None else f" over {num_chains} chains"
    axes.set_title(f"Per-task success in CALVIN long-horizon evaluation{chains}")
    figure.tight_layout()
    return figure
