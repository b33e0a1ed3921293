"""components/experiments/ablation_runs.py: what a re-run of the ablations reuses, and what it records."""

from __future__ import annotations

import json

from components.core.config import load_config
from components.experiments.ablation_runs import TRIALS_FILE, TrialSpec, task_trials_once
from tests.conftest import PROJECT_ROOT


class Recorder:
    """A MetricLogger that keeps what it was given."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics |= metrics


def test_reused_trials_are_logged_to_the_rerun_variants_run(tmp_path):
    spec = TrialSpec(tasks=("open_drawer", "turn_on_led"), trials=4)
    results = {"open_drawer": {"successes": 1, "trials": 4}, "turn_on_led": {"successes": 4, "trials": 4}}
    (tmp_path / TRIALS_FILE).write_text(json.dumps({"tasks": list(spec.tasks), "trials": 4, "results": results}))
    log = Recorder()
    # the model folder does not exist: the trials must come from the file, not from a rollout
    found = task_trials_once(load_config(PROJECT_ROOT / "params.yaml"), str(tmp_path / "no-model"), tmp_path, spec, log)
    assert found == results
    assert log.metrics == {"trials/open_drawer": 0.25, "trials/turn_on_led": 1.0, "trials/total_successes": 5,
                           "trials/total": 8}
