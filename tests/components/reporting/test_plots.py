"""The report's and the evaluate stage's matplotlib figures say what they show: titles, axis labels, legends."""

from __future__ import annotations

from components.reporting.plots import plot_task_success
from components.reporting.report import CALVIN_TABLE_KEY, LOSS_TABLE_KEY, calvin_table, loss_table, plot_losses

TASK_INFO = {"open_drawer": {"success": 3, "total": 4}, "lift_red_block_table": {"success": 0, "total": 2}}


def test_task_success_has_a_title_naming_the_chains_and_labelled_axes():
    [axes] = plot_task_success(TASK_INFO, num_chains=8).axes
    assert "success" in axes.get_title().lower() and "8 chains" in axes.get_title()
    assert "success rate" in axes.get_xlabel() and "fraction" in axes.get_xlabel()
    assert axes.get_ylabel() and [t.get_text() for t in axes.get_yticklabels()] == list(TASK_INFO)
    assert {t.get_text() for t in axes.texts} == {"3/4", "0/2"}
    [axes] = plot_task_success(TASK_INFO).axes  # the existing call without the chain count still works
    assert axes.get_title() and "chains" not in axes.get_title()


def test_loss_curves_have_one_titled_labelled_panel_per_stage_and_a_legend_with_units():
    curves = {stage: {"loss": [(1, 2.0), (2, 1.5)], "pre": [(1, 5.0), (2, 4.0)]} for stage in ("pretrain", "tune")}
    figure = plot_losses(curves)
    assert [axes.get_title() for axes in figure.axes] == ["pretrain: training losses", "tune: training losses"]
    for axes in figure.axes:
        assert axes.get_xlabel() == "optimiser step" and "loss" in axes.get_ylabel()
        legend = [t.get_text() for t in axes.get_legend().get_texts()]
        assert legend[0].startswith("loss:") and "nats/token" in legend[1]


def test_tables_explain_their_columns():
    row = {"chain_sr": {str(i): 0.5 for i in range(1, 6)}, "avg_seq_len": 2.5, "num_chains": 4}
    assert calvin_table({"UP-VLA": row}).rstrip().endswith(CALVIN_TABLE_KEY)
    assert loss_table({"tune": {"loss": 1.0}}).rstrip().endswith(LOSS_TABLE_KEY)
