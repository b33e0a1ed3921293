"""The stage-2 sweep on the smoke profile: Optuna through Ray Tune, real tune-stage trials, a study that a
re-run continues (not restarts), and one MLflow run per trial under a sweep parent."""

from __future__ import annotations

import optuna
import pytest

from components.core.config import load_config
from components.core.tracking import find_runs
from components.experiments.ablation_runs import AblationPaths
from components.experiments.sweep import run_sweep
from tests.conftest import PROJECT_ROOT
from tests.fixtures.training import tiny_inputs

# stage 2 from the backbone (no stage 1 to train) and the training-loss objective (no rollouts): 2 short trainings
OVERRIDES = {"tune.init_from": "backbone", "sweep.objective": "train_loss", "sweep.study": "test-study",
             "sweep.storage": "sweep/optuna.db"}


def sweep(root, target, pipeline_data, num_trials):
    cfg = load_config(PROJECT_ROOT / "params.yaml", profile="smoke",
                      overrides={**OVERRIDES, "sweep.num_trials": num_trials})
    return run_sweep(cfg, tiny_inputs(pipeline_data, None), AblationPaths(root / "out"), root=root, target=target,
                     experiment="upvla-sweep")


def trials(root):
    study = optuna.load_study(study_name="test-study", storage=f"sqlite:///{root / 'sweep' / 'optuna.db'}")
    return study.get_trials()


@pytest.mark.timeout(900)
def test_a_rerun_continues_the_study_and_every_trial_is_an_mlflow_run(pipeline_data, ray_session, tmp_path,
                                                                      tracking_target):
    first = sweep(tmp_path, tracking_target, pipeline_data, num_trials=1)
    assert (first.trials_before, first.trials_run, first.trials_failed) == (0, 1, 0)
    done = [(t.number, t.params, t.value) for t in trials(tmp_path)]
    assert len(done) == 1 and trials(tmp_path)[0].state.name == "COMPLETE"
    # a trial a killed sweep left RUNNING is failed on resume, not counted, not waited for
    optuna.load_study(study_name="test-study", storage=f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}").ask()

    second = sweep(tmp_path, tracking_target, pipeline_data, num_trials=2)
    assert (second.trials_before, second.trials_run, second.trials_failed) == (1, 1, 0)
    after = trials(tmp_path)
    assert [(t.number, t.params, t.value) for t in after[:1]] == done  # the first trial kept, not re-run
    assert [t.state.name for t in after] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert after[2].params != after[0].params  # the sampler's seed moved on: not the same start-up point
    best = min((t for t in after if t.value is not None), key=lambda t: t.value)
    assert (second.best_number, second.best_value) == (best.number, best.value)
    assert sweep(tmp_path, tracking_target, pipeline_data, num_trials=2).trials_run == 0

    parents = find_runs(tracking_target, "upvla-sweep", "attributes.run_name = 'sweep-test-study-s0'")
    assert len(parents) == 3
    children = [run for parent in parents for run in find_runs(
        tracking_target, "upvla-sweep", f"tags.mlflow.parentRunId = '{parent.info.run_id}'")]
    assert len(children) == 2 and all(run.info.status == "FINISHED" for run in children)
    objectives = sorted(run.data.metrics["objective"] for run in children)
    assert objectives == pytest.approx(sorted(t.value for t in after if t.value is not None))
    for run in children:
        assert {"tune.lambda_pre", "tune.lambda_mmu", "tune.lr"} <= set(run.data.params)
        assert "tune/loss" in run.data.metrics
