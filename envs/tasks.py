"""CALVIN's task oracle: which of the 34 tasks a change between two `env.get_info()` dicts achieved.

The rules are CALVIN's `calvin_env.envs.tasks.Tasks` (upstream HEAD), bound to the thresholds of
CALVIN's own `new_playtable_tasks.yaml` (shipped in `envs/playtable/data/calvin/`, MIT). They read
only the info structure of `get_info()`: contacts are pybullet contact tuples whose `c[2]` is the
other body's uid and `c[4]` its link index. The same oracle therefore judges our PlayTable and the
real `calvin_env`.

Example:
    oracle = TaskOracle()
    start = env.get_info(); env.step(action)
    oracle.get_task_info_for_set(start, env.get_info(), {"open_drawer"})  # -> {"open_drawer"} or set()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml

CALVIN_DATA = Path(__file__).resolve().parent / "playtable" / "data" / "calvin"
TASKS_YAML = CALVIN_DATA / "new_playtable_tasks.yaml"
VALIDATION_YAML = CALVIN_DATA / "new_playtable_validation.yaml"
Info = Mapping[str, Any]


def _quat_to_matrix(q: Iterable[float]) -> np.ndarray:
    """(3, 3) rotation matrix of a pybullet quaternion (x, y, z, w)."""
    x, y, z, w = np.asarray(q, dtype=float) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _matrix_to_euler_xyz(m: np.ndarray) -> np.ndarray:
    """Extrinsic x-y-z euler angles in degrees (scipy's `as_euler("xyz")`, pybullet's convention)."""
    return np.degrees([np.arctan2(m[2, 1], m[2, 2]), np.arctan2(-m[2, 0], np.hypot(m[2, 1], m[2, 2])),
                       np.arctan2(m[1, 0], m[0, 0])])


def _bodies(contacts: Iterable) -> set[int]:
    return {c[2] for c in contacts}


def _body_links(contacts: Iterable) -> set[tuple[int, int]]:
    return {(c[2], c[4]) for c in contacts}


def _fixed_link(info: Info, body: str, link: str) -> tuple[int, int]:
    fixed = info["scene_info"]["fixed_objects"][body]
    return fixed["uid"], fixed["links"][link]


def rotate_object(obj_name: str, z_degrees: float, x_y_threshold: float = 30, z_threshold: float = 180,
                  movement_threshold: float = 0.1, *, start_info: Info, end_info: Info) -> bool:
    """Block turned past `z_degrees` about world z (sign = direction) and stays put and supported.

    Also: < 30 deg about x and y, moved < 0.1 m, and at the end touching something besides the robot.
    """
    start = start_info["scene_info"]["movable_objects"][obj_name]
    end = end_info["scene_info"]["movable_objects"][obj_name]
    x, y, z = _matrix_to_euler_xyz(_quat_to_matrix(end["current_orn"]) @ _quat_to_matrix(start["current_orn"]).T)
    if np.linalg.norm(np.subtract(end["current_pos"], start["current_pos"])) > movement_threshold:
        return False
    if not _bodies(end["contacts"]) - {start_info["robot_info"]["uid"]}:
        return False
    tilt_ok = abs(x) < x_y_threshold and abs(y) < x_y_threshold
    if z_degrees > 0:
        return bool(z_degrees < z < z_threshold and tilt_ok)
    return bool(z_degrees > z > -z_threshold and tilt_ok)


def push_object(obj_name: str, x_direction: float, y_direction: float, *, start_info: Info, end_info: Info) -> bool:
    """Block slid past the signed x (or y) distance while keeping its non-robot (body, link) contacts."""
    start = start_info["scene_info"]["movable_objects"][obj_name]
    end = end_info["scene_info"]["movable_objects"][obj_name]
    robot = start_info["robot_info"]["uid"]
    start_contacts = {c for c in _body_links(start["contacts"]) if c[0] != robot}
    end_contacts = {c for c in _body_links(end["contacts"]) if c[0] != robot}
    if not (start_contacts and end_contacts and start_contacts <= end_contacts):
        return False
    axis, threshold = (0, x_direction) if x_direction != 0 else (1, y_direction)
    moved = end["current_pos"][axis] - start["current_pos"][axis]
    return bool(moved > threshold if threshold > 0 else moved < threshold)


def lift_object(obj_name: str, z_direction: float, surface_body: str | None = None, surface_link: str | None = None,
                *, start_info: Info, end_info: Info) -> bool:
    """Block rose more than `z_direction` and the robot is its only contact at the end.

    At the start it rested on `surface_link` of `surface_body` (CALVIN's HEAD no longer requires that
    the robot did not touch it then).
    """
    start = start_info["scene_info"]["movable_objects"][obj_name]
    end = end_info["scene_info"]["movable_objects"][obj_name]
    robot = start_info["robot_info"]["uid"]
    end_bodies = _bodies(end["contacts"])
    if surface_body and surface_link:
        on_surface = _fixed_link(start_info, surface_body, surface_link) in _body_links(start["contacts"])
    elif surface_body:
        on_surface = start_info["scene_info"]["fixed_objects"][surface_body]["uid"] in _bodies(start["contacts"])
    else:
        on_surface = True
    rise = end["current_pos"][2] - start["current_pos"][2]
    return bool(rise > z_direction and end_bodies == {robot} and on_surface)


def place_object(dest_body: str, dest_link: str | None = None, *, start_info: Info, end_info: Info) -> bool:
    """The one block the robot held (touching only the robot) is released onto `dest_link`."""
    robot = start_info["robot_info"]["uid"]
    held = _bodies(start_info["robot_info"]["contacts"])
    if len(held) != 1:
        return False
    obj_uid = next(iter(held))
    if obj_uid in _bodies(end_info["robot_info"]["contacts"]):
        return False
    names = [k for k, v in start_info["scene_info"]["movable_objects"].items() if v["uid"] == obj_uid]
    if len(names) != 1:
        return False
    start_bodies = _bodies(start_info["scene_info"]["movable_objects"][names[0]]["contacts"])
    end_contacts = end_info["scene_info"]["movable_objects"][names[0]]["contacts"]
    if dest_link is None:
        landed = end_info["scene_info"]["fixed_objects"][dest_body]["uid"] in _bodies(end_contacts)
    else:
        landed = _fixed_link(end_info, dest_body, dest_link) in _body_links(end_contacts)
    return bool(start_bodies == {robot} and landed)


def push_object_into(obj_name: str | list[str], src_body: str, src_link: str, dest_body: str, dest_link: str,
                     *, start_info: Info, end_info: Info) -> bool:
    """A block (any of a list) whose only contact was `src_link` now touches `dest_link`.

    CALVIN also tests `robot_uid not in start_contacts | end_contacts`, but on a set of (body, link)
    pairs, so that test is always true: the robot may touch the block at the end. Kept as CALVIN
    scores it; at the start the single-contact rule already excludes the robot.
    """
    if isinstance(obj_name, list):
        return any(push_object_into(name, src_body, src_link, dest_body, dest_link,
                                    start_info=start_info, end_info=end_info) for name in obj_name)
    start = _body_links(start_info["scene_info"]["movable_objects"][obj_name]["contacts"])
    end = _body_links(end_info["scene_info"]["movable_objects"][obj_name]["contacts"])
    return bool(len(start) == 1 and _fixed_link(start_info, src_body, src_link) in start
                and _fixed_link(end_info, dest_body, dest_link) in end)


def move_door_rel(joint_name: str, threshold: float, *, start_info: Info, end_info: Info) -> bool:
    """The door/drawer joint moved by more than `threshold` (signed) since the start."""
    delta = (end_info["scene_info"]["doors"][joint_name]["current_state"]
             - start_info["scene_info"]["doors"][joint_name]["current_state"])
    return bool(0 < threshold < delta or 0 > threshold > delta)


def toggle_light(light_name: str, start_state: int, end_state: int, *, start_info: Info, end_info: Info) -> bool:
    """The light's logical state went from `start_state` to `end_state`."""
    return bool(start_info["scene_info"]["lights"][light_name]["logical_state"] == start_state
                and end_info["scene_info"]["lights"][light_name]["logical_state"] == end_state)


def _block_contacts(start_info: Info, end_info: Info):
    blocks = start_info["scene_info"]["movable_objects"]
    uids = {b["uid"] for b in blocks.values()}
    for name, start in blocks.items():
        end = end_info["scene_info"]["movable_objects"][name]
        yield uids, start, end, _bodies(start["contacts"]), _bodies(end["contacts"])


def _slow(obj: Mapping, max_vel: float) -> bool:
    return bool(np.all(np.abs(obj["current_lin_vel"]) < max_vel) and np.all(np.abs(obj["current_ang_vel"]) < max_vel))


def stack_objects(max_vel: float = 1, *, start_info: Info, end_info: Info) -> bool:
    """A block that touched no block now rests, slow, on blocks only."""
    return any(not uids & s_c and uids & e_c and not e_c - uids and _slow(end, max_vel)
               for uids, _, end, s_c, e_c in _block_contacts(start_info, end_info))


def unstack_objects(max_vel: float = 1, *, start_info: Info, end_info: Info) -> bool:
    """A block that rested (slow) on blocks only now touches no block."""
    return any(uids & s_c and not s_c - uids and not uids & e_c and _slow(start, max_vel)
               for uids, start, _, s_c, e_c in _block_contacts(start_info, end_info))


RULES: dict[str, Callable[..., bool]] = {f.__name__: f for f in (
    rotate_object, push_object, lift_object, place_object, push_object_into, move_door_rel, toggle_light,
    stack_objects, unstack_objects)}


class TaskOracle:
    """CALVIN's `Tasks`: every task of a tasks YAML bound to its rule and thresholds."""

    def __init__(self, path: Path = TASKS_YAML) -> None:
        """Load `path` (CALVIN's `new_playtable_tasks.yaml` by default); unknown rules raise ValueError."""
        spec = yaml.safe_load(Path(path).read_text())
        self.tasks: dict[str, Callable[..., bool]] = {}
        for name, (rule, *args) in spec["tasks"].items():
            if rule not in RULES:
                raise ValueError(f"{path}: tasks.{name}: unknown rule {rule!r} (known: {sorted(RULES)})")
            self.tasks[name] = partial(RULES[rule], *args)

    @property
    def task_names(self) -> tuple[str, ...]:
        """The task names in the YAML's order."""
        return tuple(self.tasks)

    def get_task_info(self, start_info: Info, end_info: Info) -> set[str]:
        """Every task achieved between the two info dicts."""
        return {name for name, rule in self.tasks.items() if rule(start_info=start_info, end_info=end_info)}

    def get_task_info_for_set(self, start_info: Info, end_info: Info, task_filter: Iterable[str]) -> set[str]:
        """The tasks of `task_filter` achieved between the two info dicts; unknown names raise ValueError."""
        wanted = set(task_filter)
        unknown = wanted - self.tasks.keys()
        if unknown:
            raise ValueError(f"task_filter: unknown task(s) {sorted(unknown)}; known: {list(self.tasks)}")
        return {name for name in wanted if self.tasks[name](start_info=start_info, end_info=end_info)}


def load_eval_instructions(path: Path = VALIDATION_YAML) -> dict[str, str]:
    """CALVIN's evaluation sentence per task (the first of `new_playtable_validation.yaml`'s list)."""
    return {task: sentences[0] for task, sentences in yaml.safe_load(Path(path).read_text()).items()}
