"""CALVIN's annotator over a recorded episode: which spans become language windows."""

from __future__ import annotations

import numpy as np
import pytest

from components.collection.calvin_recorder import label_windows
from envs.playtable import PlayTableEnv
from envs.tasks import TaskOracle

DRAWER, LED = 1, 5  # indices in CALVIN's scene_obs (sliding door, drawer, button, switch, lightbulb, LED, ...)


@pytest.fixture(scope="module")
def episode_infos():
    """200 frames: the drawer opens at frame 70 and the LED turns on at frame 110 (oracle infos per frame)."""
    with PlayTableEnv("D", cameras=False) as env:
        obs = env.reset()
        robot, scene = obs["robot_obs"].copy(), obs["scene_obs"].copy()
        scene[DRAWER], scene[LED] = 0.0, 0.0

        def info(drawer: float, led: float) -> dict:
            state = scene.copy()
            state[DRAWER], state[LED] = drawer, led
            env.reset(robot, state)
            return env.get_info()

        closed, opened, lit = info(0.0, 0.0), info(0.2, 0.0), info(0.2, 1.0)
    return [closed] * 70 + [opened] * 40 + [lit] * 90


def test_windows_end_within_15_frames_of_their_tasks_success(episode_infos):
    windows = label_windows(episode_infos, 64, 1, np.random.default_rng(0), TaskOracle())
    ends = {task: sorted(end for _, end, t, _ in windows if t == task) for task in ("open_drawer", "turn_on_led")}
    # a window holds the approach to a success, never the next task's approach (frames 71-109 for the LED)
    assert ends["open_drawer"] == list(range(70, 85))
    assert ends["turn_on_led"] and set(ends["turn_on_led"]) <= set(range(110, 125))
    assert {t for _, _, t, _ in windows} == {"open_drawer", "turn_on_led"}


def test_windows_are_cut_at_the_episode_start_and_skip_a_previous_task(episode_infos):
    windows = label_windows(episode_infos, 64, 1, np.random.default_rng(0), TaskOracle())
    for start, end, task, _ in windows:
        assert 33 <= end - start + 1 <= 64
        if task == "open_drawer":  # the first task: spans reach back to the episode's first frame
            assert start == max(0, end - 63)
        else:  # a window reaching back to the drawer's success starts 16-31 frames later (CALVIN's prior_steps)
            assert start == end - 63 or (start > 70 and 16 <= start - (end - 63) <= 31)
    led = [(start, end) for start, end, task, _ in windows if task == "turn_on_led"]
    assert min(start for start, _ in led) > 70 and any(start > end - 63 for start, end in led)


def test_stride_spaces_the_window_ends(episode_infos):
    windows = label_windows(episode_infos, 64, 3, np.random.default_rng(0), TaskOracle())
    assert [end for _, end, task, _ in windows if task == "open_drawer"] == [71, 74, 77, 80, 83]
