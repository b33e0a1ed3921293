"""The operator channel of robot trials (components/robot/operator.py) and the `robot:` config checks."""

from __future__ import annotations

import io
import threading
import time

import pytest

from components.core.config import ConfigError, RobotConfig, build, read_yaml
from components.robot.operator import FifoChannel, Operator, OperatorUnavailable, attach_console
from tests.conftest import PROJECT_ROOT


def scripted(*answers):
    queue = list(answers)

    def answer(prompt):
        if not queue:
            raise EOFError
        return queue.pop(0)

    return answer


def test_confirm_accepts_yes_and_no_and_asks_again_otherwise():
    said = []
    operator = Operator(scripted("maybe", " YES ", "n"), said.append)
    assert operator.confirm("Go?") is True
    assert said == ["please answer y or n (got 'maybe')"]
    assert operator.confirm("Again?") is False


def test_a_closed_input_stream_is_a_clear_error():
    with pytest.raises(OperatorUnavailable, match="input stream is closed.*--operator-fifo"):
        Operator(scripted(), print).confirm("Go?")


def answer_each_prompt(log, lines):
    """Type each line only once the job has shown its next prompt, as a person would."""
    for count, line in enumerate(lines, start=1):
        deadline = time.monotonic() + 10
        while not log.exists() or log.read_text().count("[y/n]") < count:
            assert time.monotonic() < deadline, "the job never asked"
            time.sleep(0.02)
        yield line


def test_a_job_without_terminal_talks_to_the_operator_through_its_fifo(tmp_path):
    channel = FifoChannel(tmp_path / "session")
    answers = []
    job = threading.Thread(target=lambda: answers.append(channel.operator().confirm("Start trial 1?")))
    job.start()
    console = io.StringIO()
    typed = answer_each_prompt(channel.log_path, ["maybe\n", "y\n"])
    attach_console(tmp_path / "session", stdin=typed, stdout=console, poll_s=0.02)
    job.join(timeout=10)
    channel.close()
    assert answers == [True]
    log = channel.log_path.read_text()
    assert log.count("Start trial 1? [y/n]") == 2 and "please answer y or n (got 'maybe')" in log
    assert "Start trial 1? [y/n]" in console.getvalue()
    assert FifoChannel(tmp_path / "session").fifo_path.is_fifo()  # a resumed job reuses it
    (tmp_path / "file" / "operator.in").parent.mkdir()
    (tmp_path / "file" / "operator.in").write_text("not a fifo")
    with pytest.raises(ValueError, match="operator.in: exists and is not a FIFO"):
        FifoChannel(tmp_path / "file")


@pytest.fixture
def robot_raw():
    return read_yaml(PROJECT_ROOT / "params.yaml")["robot"]


def task(name="pick", max_steps=5):
    return {"name": name, "instruction": "pick it up", "max_steps": max_steps}


@pytest.mark.parametrize("suites, message", [
    ({"seen": [task()] * 2}, r"robot.suites.seen\[1\].name: 'pick' appears twice"),
    ({"Seen": [task()]}, r"robot.suites.Seen: use lowercase"),
    ({"seen": [task("pick up")]}, r"robot.suites.seen\[0\].name: 'pick up'"),
    ({"seen": [task(max_steps=0)]}, r"robot.suites.seen\[0\].max_steps: must be >= 1"),
    ({"seen": []}, r"robot.suites.seen: has no tasks"),
])
def test_bad_task_suites_are_refused_naming_the_key(robot_raw, suites, message):
    with pytest.raises(ConfigError, match=message):
        build(RobotConfig, {**robot_raw, "suites": suites}, "robot")


def test_a_workspace_box_must_have_positive_extent(robot_raw):
    franka = {**robot_raw["franka"], "workspace_max": [0.75, 0.35, 0.0]}
    with pytest.raises(ConfigError, match=r"robot.franka.workspace_max: z must exceed workspace_min \(0.05\)"):
        build(RobotConfig, {**robot_raw, "franka": franka}, "robot")


def test_a_quoted_serial_number_stays_a_string_on_the_command_line():
    from components.core.config import parse_overrides

    assert parse_overrides(["a.serial='817612070001'", "b=3e-4", "c=12"]) == {"a.serial": "817612070001",
                                                                              "b": 3e-4, "c": 12}
