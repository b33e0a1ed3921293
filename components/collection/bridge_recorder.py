"""Prediction-only videos in BridgeData v2's raw layout, from PlayTable settings the evaluation never sees.

Each video is one expert task in a training scene whose blocks and desk get random colours, filmed
by a camera at a random pose around the desk (never CALVIN's static or gripper camera). Frames are
kept every `frame_stride` control steps (30 Hz / 3 = 10 Hz by default; Bridge records at 5 Hz).

    <root>/playtable_<scene>_rand/<task>/<DATE>/raw/traj_group0/traj<k>/
        images0/im_<t>.jpg      256x256 JPEG (quality 95)
        obs_dict.pkl            full_state (T, 15) robot_obs, state (T, 7) TCP xyz + euler + gripper opening
                                (0..1), time_stamp (T,) s
        policy_out.pkl          T-1 dicts: actions (7,) = TCP pose change to the next kept frame (xyz m, euler
                                rad, wrapped) + gripper command (1 open, 0 closed, Bridge's convention)
        agent_data.pkl          dict: camera pose, colours, scene, task, control rate
        lang.txt                the instruction (Bridge's style, not CALVIN's sentences), then `confidence: 1`
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from envs.experts.play import PlaySession
from envs.playtable import PlayTableEnv

SIZE = 256  # px, square frames
DATE = "2024-01-01_00-00-00"  # Bridge's date folder; fixed so a seed gives the same paths
CONTROL_HZ = 30
COLOURS = ("red", "blue", "pink")
# instruction templates per task family, Bridge's plain imperative style; {c} = block colour
PHRASES = {
    "move_slider_left": ("slide the door to the left", "move the sliding door left"),
    "move_slider_right": ("slide the door to the right", "move the sliding door right"),
    "open_drawer": ("open the drawer", "pull the drawer open"),
    "close_drawer": ("close the drawer", "push the drawer closed"),
    "turn_on_lightbulb": ("flip the switch up", "turn the lamp on"),
    "turn_off_lightbulb": ("flip the switch down", "turn the lamp off"),
    "turn_on_led": ("press the button", "push the button to light the led"),
    "turn_off_led": ("press the button", "push the button to switch the led off"),
    "place_in_slider": ("put the block on the shelf", "place the block in the cupboard"),
    "place_in_drawer": ("put the block in the drawer", "drop the block into the drawer"),
    "stack_block": ("put the block on top of the other block", "stack the blocks"),
    "unstack_block": ("take the top block off the stack", "unstack the blocks"),
    "push_into_drawer": ("push the block into the drawer", "sweep the block into the open drawer"),
}
FAMILY_PHRASES = {
    "rotate": ("turn the {c} block", "rotate the {c} block"),
    "push": ("push the {c} block {d}", "move the {c} block to the {d}"),
    "lift": ("pick up the {c} block", "grab the {c} block"),
}


def bridge_instruction(task: str, rng: np.random.Generator) -> str:
    """An instruction for `task` in BridgeData's style."""
    if task in PHRASES:
        options = PHRASES[task]
        return options[rng.integers(len(options))]
    family, colour = task.split("_")[:2]
    options = FAMILY_PHRASES[family]
    return options[rng.integers(len(options))].format(c=colour, d=task.rsplit("_", 1)[-1])


@dataclass(frozen=True)
class BridgeJob:
    """One Bridge-format video to record."""

    index: int
    scene: str
    seed: int
    frame_stride: int


def randomise_look(env: PlayTableEnv, rng: np.random.Generator) -> dict:
    """Random block and desk colours; returns them (for agent_data.pkl)."""
    p, colours = env.p, {}
    for name, uid in env.scene.block_uids.items():
        colours[name] = [*rng.uniform(0.05, 1.0, 3).round(3).tolist(), 1.0]
        p.changeVisualShape(uid, -1, rgbaColor=colours[name])
    desk = [*rng.uniform(0.2, 0.9, 3).round(3).tolist(), 1.0]
    for link in range(-1, p.getNumJoints(env.scene.table_uid)):
        p.changeVisualShape(env.scene.table_uid, link, rgbaColor=desk)
    return {"blocks": colours, "desk": desk}


def random_camera(rng: np.random.Generator) -> dict:
    """A camera 1.2-1.8 m from the desk centre, 25-60 deg above it, in front of or beside the desk."""
    distance, elevation = rng.uniform(1.2, 1.8), np.radians(rng.uniform(25, 60))
    azimuth = np.radians(rng.uniform(-150, -30))
    target = np.array([0.0, -0.05, 0.45]) + rng.uniform(-0.05, 0.05, 3)
    eye = target + distance * np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                        np.sin(elevation)])
    return {"eye": eye.round(4).tolist(), "target": target.round(4).tolist(), "fov": float(rng.uniform(25, 40))}


def render(env: PlayTableEnv, camera: dict) -> np.ndarray:
    """(SIZE, SIZE, 3) uint8 from `camera` (TinyRenderer)."""
    p = env.p
    view = p.computeViewMatrix(camera["eye"], camera["target"], [0, 0, 1])
    projection = p.computeProjectionMatrixFOV(camera["fov"], 1.0, 0.01, 10.0)
    _, _, rgba, _, _ = p.getCameraImage(SIZE, SIZE, view, projection, renderer=p.ER_TINY_RENDERER,
                                        flags=p.ER_NO_SEGMENTATION_MASK)
    return np.asarray(rgba, dtype=np.uint8).reshape(SIZE, SIZE, 4)[:, :, :3].copy()


def record_video(job: BridgeJob, root: Path) -> tuple[str, int]:
    """Record one video under `root`; returns (task, number of frames). Deterministic for `job`."""
    rng = np.random.default_rng(job.seed)
    frames, robot_obs, commands = [], [], []
    with PlayTableEnv(job.scene, cameras=False, seed=job.seed) as env:
        look, camera = randomise_look(env, rng), random_camera(rng)
        session, step = PlaySession(env, rng), [0]

        def on_step(obs: dict, action: np.ndarray | None) -> None:
            if step[0] % job.frame_stride == 0:
                frames.append(render(env, camera))
                robot_obs.append(obs["robot_obs"].copy())
                commands.append(1.0 if env.robot.gripper_action > 0 else 0.0)
            step[0] += 1

        attempts = session.run(1, on_step)
    task = attempts[0].task
    folder = root / f"playtable_{job.scene}_rand" / task / DATE / "raw" / "traj_group0" / f"traj{job.index}"
    meta = {"scene": job.scene, "task": task, "success": attempts[0].success, "camera": camera, "colours": look,
            "control_hz": CONTROL_HZ / job.frame_stride}
    write_trajectory(folder, frames, np.array(robot_obs), np.array(commands), bridge_instruction(task, rng), meta)
    return task, len(frames)


def write_trajectory(folder: Path, frames: list[np.ndarray], robot_obs: np.ndarray, commands: np.ndarray,
                     instruction: str, meta: dict) -> None:
    """Write one trajectory folder (layout in the module docstring); robot_obs (T, 15), commands (T,)."""
    (folder / "images0").mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
        (folder / "images0" / f"im_{t}.jpg").write_bytes(buffer.getvalue())
    state = np.concatenate([robot_obs[:, :6], robot_obs[:, 6:7] / 0.08], axis=1)
    steps = len(frames)
    obs = {"full_state": robot_obs, "state": state, "time_stamp": np.arange(steps) / meta["control_hz"]}
    turn = (np.diff(robot_obs[:, 3:6], axis=0) + np.pi) % (2 * np.pi) - np.pi
    deltas = np.concatenate([np.diff(robot_obs[:, :3], axis=0), turn, commands[:-1, None]], axis=1)
    policy = [{"actions": delta} for delta in deltas]
    for name, data in (("obs_dict.pkl", obs), ("policy_out.pkl", policy), ("agent_data.pkl", meta)):
        (folder / name).write_bytes(pickle.dumps(data, protocol=4))
    (folder / "lang.txt").write_text(f"{instruction}\nconfidence: 1\n")
