"""Plots shared by the stages that make them and the report that collects them."""

from __future__ import annotations

from collections.abc import Mapping

from matplotlib.figure import Figure


def plot_task_success(task_info: Mapping[str, Mapping[str, int]]) -> Figure:
    """Horizontal bars of success / attempts per task (attempted tasks only, CALVIN's task order)."""
    tasks = list(task_info)
    rates = [task_info[t]["success"] / task_info[t]["total"] for t in tasks]
    figure = Figure(figsize=(7, 1.2 + 0.28 * len(tasks)))
    axes = figure.subplots()
    axes.barh(tasks, rates, color="tab:blue")
    for y, task in enumerate(tasks):
        axes.text(1.01, y, f"{task_info[task]['success']}/{task_info[task]['total']}", va="center", fontsize=8)
    axes.set_xlim(0, 1)
    axes.invert_yaxis()
    axes.set_xlabel("success rate (CALVIN task_info)")
    axes.set_title("per-task success")
    figure.tight_layout()
    return figure
