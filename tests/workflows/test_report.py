"""`python -m workflows.report` on the outputs of real (tiny) training and evaluation: files, plots, MLflow.

The inputs are made by the real pieces in one process: the training loop (LocalSession, so no Ray Train
start-up) logging into MLflow runs named as the stages name them, and the evaluate stage's function on
the tuned model; the report stage then reads them exactly as after `dvc repro`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from components.core.config import TrackingConfig
from components.core.tracking import find_runs, list_run_artifacts, resolve_target, start_run
from components.evaluation.evaluate import evaluate_checkpoint
from components.evaluation.policy import PolicySettings, save_policy_settings
from components.reporting.report import CALVIN_TABLE_KEY, LOSS_TABLE_KEY
from components.training.loop import train_worker
from components.training.session import LocalSession, checkpoint_name
from components.training.state import MODEL_DIR
from tests.conftest import PROJECT_ROOT
from tests.fixtures.pictures import has_text
from tests.fixtures.training import tiny_config, tiny_inputs, tiny_job
from workflows.report import main

STEPS = 4


def train(pipeline_data, root, target, stage, init):
    """The real loop, logging into `<stage>-full-s0`; writes metrics/<stage>.json; returns the model folder."""
    cfg = tiny_config(stage, STEPS, **{f"{stage}.log_every": 1, f"{stage}.image_every": STEPS})
    session = LocalSession(root / "ckpt" / stage, keep=1)
    with start_run(target, "upvla-pipeline", f"{stage}-full-s0") as run:
        train_worker(tiny_job(cfg, stage, tiny_inputs(pipeline_data, init), log=run), session)
    final = {k: v for k, v in session.reports[-1].items() if k in ("loss", "mmu", "pre", "act")}
    (root / "metrics" / f"{stage}.json").write_text(json.dumps({"stage": stage, "final": final}))
    return root / "ckpt" / stage / checkpoint_name(STEPS) / MODEL_DIR, cfg


@pytest.fixture(scope="module")
def project(tmp_path_factory, pipeline_data, ray_session):
    root = tmp_path_factory.mktemp("project")
    (root / "metrics").mkdir()
    target = resolve_target(TrackingConfig("upvla", "mlflow.db", "mlartifacts"), root)
    pretrained, _ = train(pipeline_data, root, target, "pretrain", None)
    tuned, cfg = train(pipeline_data, root, target, "tune", pretrained)
    save_policy_settings(tuned, PolicySettings(mmu_condition=True))
    evaluate = replace(cfg.evaluate, num_sequences=2, num_workers=1, envs_per_worker=2, ep_len=4, num_videos=0)
    summary = evaluate_checkpoint(evaluate, cfg.env, tuned, root / "artifacts" / "eval", progress=False)
    (root / "metrics" / "eval.json").write_text(json.dumps(summary.metrics()))
    return root, target


def test_report_writes_tables_plots_frames_and_logs_them(project, monkeypatch, capsys):
    root, target = project
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", target.uri)
    assert main(["--params", str(PROJECT_ROOT / "params.yaml")]) == 0
    printed = capsys.readouterr().out
    assert "on 2 CALVIN chains: average length 0.00" in printed and "report: reports/pipeline/results.md" in printed
    out = root / "reports" / "pipeline"
    assert {p.name for p in out.iterdir()} == {"results.md", "summary.json", "task_success.png", "loss_curves.png",
                                               "frames"}
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{s}_step_{STEPS:06d}.png" for s in ("pretrain",
                                                                                                        "tune")]
    text = (out / "results.md").read_text()
    assert "| UP-VLA (full, seed 0) | 0.0% | 0.0% | 0.0% | 0.0% | 0.0% | 0.00 | 2 |" in text
    assert "| tune |" in text and "(frames/tune_step_000004.png)" in text
    assert CALVIN_TABLE_KEY in text and LOSS_TABLE_KEY in text  # the tables say what their columns are
    for grid in (out / "frames").iterdir():  # the training loop's grids carry a title band and row labels
        picture = np.asarray(Image.open(grid).convert("RGB"))
        assert has_text(picture[:14]) and has_text(picture[picture.shape[0] // 2:, :40])
    # per-task rows carry their counts: each of the 2 chains failed its first subtask (4 steps)
    task_rows = [line.split("|") for line in text.splitlines() if line.endswith(" / 1 |") or line.endswith(" / 2 |")]
    assert sum(int(row[3].split("/")[1]) for row in task_rows) == 2
    assert all(row[2].strip() == "0.0%" for row in task_rows)
    with (root / "reports" / "plots" / "loss_tune.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert {"loss", "mmu", "pre", "act"} <= set(rows[0])  # stage 2 logs every loss term
    [run] = find_runs(target, "upvla-pipeline", "attributes.run_name = 'report-full-s0'")
    assert {"results.md", "loss_curves.png", "frames"} <= {p for p, _ in list_run_artifacts(target, run.info.run_id)}
    assert main(["--summary"]) == 0
    assert capsys.readouterr().out == printed  # --summary prints the last report without recomputing


def test_a_missing_input_names_the_stage_that_writes_it(project, tmp_path, monkeypatch, capsys):
    root, target = project
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", target.uri)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "eval.json").write_text((root / "metrics" / "eval.json").read_text())
    assert main(["--params", str(PROJECT_ROOT / "params.yaml")]) == 2
    assert "artifacts/eval/results.json: missing; the `evaluate` stage writes it" in capsys.readouterr().err
    assert main(["--params", str(PROJECT_ROOT / "params.yaml"), "--eval", str(root / "artifacts" / "eval"),
                 "--set", "experiment.seed=7"]) == 2
    assert "metrics/pretrain.json: missing; the `pretrain` stage writes it" in capsys.readouterr().err


def test_summary_of_a_report_never_written_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--summary"]) == 2
    assert "reports/pipeline/summary.json: missing; the `report` stage writes it" in capsys.readouterr().err
