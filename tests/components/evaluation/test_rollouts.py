"""CALVIN chains on real Ray actors and PlayTable envs: same results whatever the actors, crashes survived.

The policy is the privileged goal-writing test policy (tests/fixtures/rollout_policies.py), so the
8 chains end with 0-3 subtasks done (not trivially all zero), in state-only envs to stay fast; one
test drives the scripted experts (envs/experts/) through the controller instead.
"""

from __future__ import annotations

import pytest

from components.evaluation.rollout import ChainOutcome, ChainStarted, drive_chains, run_sequential
from components.evaluation.rollout_workers import WorkerSpec, run_rollouts
from envs.config import EnvConfig
from envs.factory import make_env
from envs.sequences import get_sequences
from envs.tasks import load_eval_instructions
from tests.fixtures.rollout_policies import CrashOnceFactory, ExpertFactory, GoalWritingFactory

ENV = EnvConfig(name="playtable", scene="D", calvin_dataset_path=None)
EP_LEN = 5


@pytest.fixture(scope="module")
def chains():
    return list(enumerate(get_sequences(1000)[:8]))


@pytest.fixture(scope="module")
def reference(chains):
    """CALVIN's single-process loop: one env, the chains one after another."""
    env = make_env(ENV, cameras=False)
    try:
        outcomes = run_sequential(env, GoalWritingFactory()([env]), chains, ep_len=EP_LEN)
    finally:
        env.close()
    return [o.result for o in outcomes]


def spec(policy=None, envs_per_worker=1, batched=True) -> WorkerSpec:
    return WorkerSpec(ENV, policy or GoalWritingFactory(), envs_per_worker=envs_per_worker, ep_len=EP_LEN,
                      batched=batched, cameras=False)


def collect(**kwargs):
    outcomes = []
    stats = run_rollouts(on_outcome=outcomes.append, **kwargs)
    return sorted((o.result for o in outcomes), key=lambda r: r.index), stats, outcomes


def test_reference_is_not_trivial(reference, chains):
    assert [r.index for r in reference] == [i for i, _ in chains]
    completed = [r.completed for r in reference]
    assert 0 in completed and max(completed) >= 2, completed


def test_several_envs_in_one_loop_equal_the_sequential_loop(chains, reference):
    envs = [make_env(ENV, cameras=False) for _ in range(3)]
    try:
        events = list(drive_chains(envs, GoalWritingFactory()(envs), chains, ep_len=EP_LEN))
    finally:
        for env in envs:
            env.close()
    started = [e.index for e in events if isinstance(e, ChainStarted)]
    finished = sorted((e.result for e in events if isinstance(e, ChainOutcome)), key=lambda r: r.index)
    assert started[:3] == [0, 1, 2] and sorted(started) == [i for i, _ in chains]
    assert finished == reference


@pytest.mark.parametrize(("workers", "envs_per_worker", "batched"), [(1, 1, True), (2, 2, True), (2, 2, False)])
def test_same_chains_give_the_same_results_with_one_and_two_actors(ray_session, chains, reference, workers,
                                                                   envs_per_worker, batched):
    results, stats, _ = collect(spec=spec(envs_per_worker=envs_per_worker, batched=batched), chains=chains,
                                num_workers=workers)
    assert results == reference
    assert stats.chains == len(chains) and stats.worker_failures == 0 and len(set(stats.pids)) == workers
    assert stats.env_steps == sum(s.steps for r in reference for s in r.subtasks)


def test_scripted_experts_give_the_same_results_on_two_actors(ray_session):
    """Real control: the experts move the arm through the controller; 120 steps leave some subtasks unfinished."""
    chains = [(i, get_sequences(1000)[i]) for i in (0, 2, 4)]
    env = make_env(ENV, cameras=False)
    try:
        reference = [o.result for o in run_sequential(env, ExpertFactory()([env]), chains, ep_len=120)]
    finally:
        env.close()
    assert [r.completed for r in reference] == [5, 2, 4]
    experts = WorkerSpec(ENV, ExpertFactory(), ep_len=120, cameras=False)
    results, stats, _ = collect(spec=experts, chains=chains, num_workers=2)
    assert results == reference and len(set(stats.pids)) == 2


def test_a_killed_actor_still_yields_every_chain_exactly_once(ray_session, chains, reference, tmp_path):
    first_failing = next(r for r in reference if r.completed == 0)  # its first subtask runs all EP_LEN steps
    goal = load_eval_instructions()[first_failing.tasks[0]]
    crash = CrashOnceFactory(GoalWritingFactory(), goal=goal, at_step=3, marker=str(tmp_path / "crashed"))
    results, stats, outcomes = collect(spec=spec(crash), chains=chains, num_workers=2, max_restarts=1)
    assert (tmp_path / "crashed").exists() and stats.worker_failures == 1
    assert sorted(o.result.index for o in outcomes) == [i for i, _ in chains]  # each chain once
    assert results == reference


def test_an_actor_that_keeps_dying_is_given_up_with_a_clear_error(ray_session, chains, tmp_path):
    goal = load_eval_instructions()[chains[2][1][1][0]]
    always = CrashOnceFactory(GoalWritingFactory(), goal=goal, at_step=1, marker=str(tmp_path / "m"), once=False)
    with pytest.raises(RuntimeError, match="every rollout actor died"):
        collect(spec=spec(always), chains=chains[2:3], num_workers=1, max_restarts=1)


def test_too_many_actors_for_the_cluster_fail_before_starting(ray_session, chains):
    with pytest.raises(RuntimeError, match="need 6 CPUs but the Ray cluster has 2"):
        collect(spec=spec(), chains=chains, num_workers=3, cpus_per_worker=2.0)
