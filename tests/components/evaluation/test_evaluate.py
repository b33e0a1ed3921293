"""The evaluate stage on real Ray actors: resume from the results log, CALVIN's results.json, the outputs.

The policy is the privileged goal-writing test policy (tests/fixtures/rollout_policies.py) in
state-only envs, so the metrics are not trivially zero and the run stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest

from components.core.config import load_config
from components.evaluation.evaluate import evaluate_policy
from components.evaluation.results_log import ResultsLog
from components.evaluation.rollout import run_sequential
from envs.config import EnvConfig
from envs.factory import make_env
from envs.protocol import summarize
from envs.sequences import get_sequences
from tests.fixtures.rollout_policies import GoalWritingFactory

ENV = EnvConfig(name="playtable", scene="D", calvin_dataset_path=None)
IDENTITY = {"policy": "goal-writing"}


def config(**changes):
    base = dict(num_sequences=6, num_workers=2, envs_per_worker=1, cpus_per_worker=1.0, ep_len=5,
                batched_inference=True, num_videos=0)
    return dataclasses.replace(load_config().evaluate, **{**base, **changes})


def evaluate(out_dir, **changes):
    return evaluate_policy(config(**changes), ENV, GoalWritingFactory(), out_dir, name="goal-writing",
                           identity=IDENTITY, cameras=False, progress=False)


@pytest.fixture(scope="module")
def reference():
    env = make_env(ENV, cameras=False)
    try:
        outcomes = run_sequential(env, GoalWritingFactory()([env]), enumerate(get_sequences(1000)[:6]), ep_len=5)
    finally:
        env.close()
    return summarize(o.result for o in outcomes)


@pytest.fixture(scope="module")
def resumed(ray_session, tmp_path_factory):
    """Three evaluations into one folder: chains 0-2, then 0-5 on one actor (unbatched), then 0-5 again."""
    out = tmp_path_factory.mktemp("eval")
    runs = [evaluate(out, num_sequences=3), evaluate(out, num_workers=1, envs_per_worker=2, batched_inference=False),
            evaluate(out)]
    return out, runs


def test_resume_skips_finished_chains_and_metrics_match_one_sequential_run(resumed, reference):
    out, (first, second, third) = resumed
    assert (first.chains_run, first.chains_resumed, first.calvin.num_chains) == (3, 0, 3)
    assert (second.chains_run, second.chains_resumed) == (3, 3)
    assert second.calvin == reference and reference.avg_seq_len > 0
    assert (third.chains_run, third.env_steps) == (0, 0) and third.calvin == reference
    lines = next((out / "logs").glob("chains-*.jsonl")).read_text().splitlines()
    assert sorted(json.loads(line)["index"] for line in lines) == list(range(6))  # each chain logged once


def test_results_json_and_metrics_follow_calvin(resumed, reference):
    out, runs = resumed
    data = json.loads((out / "results.json").read_text())
    assert list(data) == ["goal-writing"]
    entry = data["goal-writing"]
    assert set(entry) == {"avg_seq_len", "chain_sr", "task_info"}
    assert list(entry["chain_sr"]) == ["1", "2", "3", "4", "5"]
    assert entry["avg_seq_len"] == pytest.approx(reference.avg_seq_len)
    assert all(set(v) == {"success", "total"} and 0 <= v["success"] <= v["total"] for v in entry["task_info"].values())
    metrics = runs[-1].metrics()
    assert metrics["num_chains"] == 6 and set(metrics["chain_sr"]) == {"1", "2", "3", "4", "5"}
    assert set(metrics["task_success"]) == set(entry["task_info"])
    assert (out / "task_success.png").stat().st_size > 1000


def test_a_new_policy_or_setting_starts_a_new_log(resumed):
    out, _ = resumed
    other = evaluate_policy(config(num_sequences=2, ep_len=4), ENV, GoalWritingFactory(), out, name="x",
                            identity=IDENTITY, cameras=False, progress=False)
    assert other.chains_run == 2 and len(list((out / "logs").glob("chains-*.jsonl"))) == 2
    assert list(json.loads((out / "results.json").read_text())) == ["goal-writing", "x"]  # CALVIN keeps entries


def test_results_log_survives_a_torn_line_and_rejects_corruption(tmp_path):
    chains = get_sequences(1000)
    env = make_env(ENV, cameras=False)
    try:
        outcomes = run_sequential(env, GoalWritingFactory()([env]), enumerate(chains[:3]), ep_len=3)
    finally:
        env.close()
    log = ResultsLog(tmp_path, IDENTITY)
    for outcome in outcomes:
        log.append(outcome.result, outcome.seconds)
    with log.path.open("a") as f:
        f.write('{"index": 3, "initial')  # a crash in the middle of a write
    with pytest.warns(UserWarning, match="torn last line"):
        loaded = log.load(chains)
    assert list(loaded) == [0, 1, 2] and loaded[1] == outcomes[1].result
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert log.load(chains) == loaded  # the torn line was cut off the file
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0], lines[1].replace('"tasks": ["', '"tasks": ["x'), lines[2]]) + "\n")
    with pytest.raises(ValueError, match=r"chains-.*\.jsonl:2: chain 1 does not match"):
        log.load(chains)
    log.path.write_text("\n".join([lines[0], "{not json", lines[2]]) + "\n")
    with pytest.raises(ValueError, match=r"\.jsonl:2: malformed"):
        log.load(chains)
    log.path.write_text("\n".join([lines[0], lines[0]]) + "\n")
    with pytest.raises(ValueError, match="appears twice"):
        log.load(chains)
    false_success = lines[1].replace('"success": false', '"success": "false"').replace('"success": true',
                                                                                       '"success": "true"')
    assert false_success != lines[1]
    log.path.write_text("\n".join([lines[0], false_success, lines[2]]) + "\n")
    with pytest.raises(ValueError, match=r"\.jsonl:2: malformed chain entry \(subtasks\[0\]\.success: expected bool"):
        log.load(chains)
    for field, value in (("index", "1"), ("steps", 1.5), ("tasks", "abc")):
        entry = json.loads(lines[1])
        if field == "steps":
            entry["subtasks"][0]["steps"] = value
        else:
            entry[field] = value
        log.path.write_text("\n".join([lines[0], json.dumps(entry)]) + "\n")
        with pytest.raises(ValueError, match=r"\.jsonl:2: malformed chain entry"):
            log.load(chains)


def test_a_torn_last_line_is_dropped_even_when_a_newline_follows_it(tmp_path):
    chains = get_sequences(1000)
    env = make_env(ENV, cameras=False)
    try:
        outcomes = run_sequential(env, GoalWritingFactory()([env]), enumerate(chains[:2]), ep_len=3)
    finally:
        env.close()
    log = ResultsLog(tmp_path, IDENTITY)
    for outcome in outcomes:
        log.append(outcome.result, outcome.seconds)
    whole = log.path.read_bytes()
    with log.path.open("a") as f:
        f.write('{"index": 2, "initial_st\n')
    with pytest.warns(UserWarning, match="torn last line"):
        assert list(log.load(chains)) == [0, 1]
    assert log.path.read_bytes() == whole
