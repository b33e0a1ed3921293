"""The instruction probe: chunks under each task's sentence at the same trial starts, compared.

Two engines that answer `PlanRequest`s by a known rule (one ignores the words, one acts on them) pin down what the
table means; a tiny random checkpoint (tests/fixtures/tiny_policy.py) runs it end to end, CLI included. ~15 s.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from components.evaluation.instruction_probe import probe_instructions
from components.evaluation.policy import PlanReply, PlanRequest, load_inference
from envs.playtable import PlayTableEnv
from envs.tasks import load_eval_instructions
from tests.fixtures.tiny_policy import write_tiny_checkpoint
from workflows import instruction_probe

TWINS = ("turn_on_lightbulb", "turn_off_lightbulb")


class Engine:
    """Chunks of 4 actions: 0 everywhere, plus `scale` x the goal's position in CALVIN's sentence list."""

    def __init__(self, scale: float) -> None:
        self.scale, self.order, self.requests = scale, list(load_eval_instructions().values()), []

    def plan(self, request: PlanRequest) -> PlanReply:
        self.requests.append(request)
        rows = len(request.goals)
        actions = np.zeros((rows, 4, 7), np.float32)
        actions[:, :, 2] = np.array([self.scale * self.order.index(goal) for goal in request.goals])[:, None]
        return PlanReply(actions, [None] * rows, [None] * rows)


@pytest.fixture(scope="module")
def env():
    with PlayTableEnv("D", cameras=True) as playtable:
        yield playtable


def test_a_policy_deaf_to_its_words_scores_zero_and_one_that_reads_them_does_not(env):
    deaf = probe_instructions(Engine(0.0), env, TWINS, starts=1)
    assert deaf.tasks == TWINS and deaf.starts == (1, 1)
    np.testing.assert_array_equal(deaf.distance, np.zeros((2, 2)))
    reader = Engine(0.5)
    probe = probe_instructions(reader, env, TWINS, starts=1)
    order = reader.order
    gap = 0.5 * abs(order.index(load_eval_instructions()[TWINS[0]]) - order.index(load_eval_instructions()[TWINS[1]]))
    expected = gap / 7  # one of 7 action dimensions differs, by `gap` in every action of the chunk
    np.testing.assert_allclose(probe.distance, [[0, expected], [expected, 0]], rtol=1e-6)
    # every plan shows one frame to all instructions: the same pixels and robot state in each row
    for request in reader.requests:
        assert request.goals == [load_eval_instructions()[t] for t in TWINS]
        assert (request.static == request.static[0]).all() and (request.robot_obs == request.robot_obs[0]).all()
    assert "| turn_off_lightbulb | " in probe.table() and f"{expected:.3f}" in probe.table()


def test_bad_arguments_fail_clearly(env):
    with pytest.raises(ValueError, match="starts: at least 1"):
        probe_instructions(Engine(0.0), env, TWINS, starts=0)
    with pytest.raises(ValueError, match=r"tasks: no CALVIN evaluation sentence for \['fly_away'\]"):
        probe_instructions(Engine(0.0), env, ("fly_away",), starts=1)
    with PlayTableEnv("D", cameras=False) as blind, pytest.raises(ValueError, match="needs an env built with cameras"):
        probe_instructions(Engine(0.0), blind, TWINS, starts=1)


def test_a_real_checkpoint_end_to_end_through_the_cli(tmp_path, env, capsys):
    folder = write_tiny_checkpoint(tmp_path / "model")
    probe = probe_instructions(load_inference(folder), env, TWINS, starts=1)
    assert probe.distance.shape == (2, 2) and np.all(np.diag(probe.distance) == 0) and np.all(probe.distance >= 0)
    out = tmp_path / "probe.json"
    assert instruction_probe.main(["--checkpoint", str(folder), "--tasks", ",".join(TWINS), "--starts", "1",
                                   "--out", str(out)]) == 0
    header = "| trial's task \\ instruction | turn_on_lightbulb | turn_off_lightbulb | starts |"
    assert header in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["starts"] == {"turn_on_lightbulb": 1, "turn_off_lightbulb": 1}
    assert written["distance"]["turn_off_lightbulb"]["turn_off_lightbulb"] == 0.0
    np.testing.assert_allclose(written["distance"]["turn_on_lightbulb"]["turn_off_lightbulb"],
                               probe.distance[0, 1], rtol=1e-5)


def test_the_module_runs_as_a_command():
    done = subprocess.run([sys.executable, "-m", "workflows.instruction_probe", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--starts" in done.stdout


def test_an_unknown_task_on_the_command_line_stops_before_the_model_loads(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        instruction_probe.main(["--checkpoint", str(tmp_path / "absent"), "--tasks", "open_drawer,fly_away"])
    assert stopped.value.code == 2
    assert "--tasks: no CALVIN evaluation sentence for ['fly_away']" in capsys.readouterr().err
