"""Adapter to the real CALVIN simulator (`calvin_env`, github.com/mees/calvin_env), when installed.

`CalvinEnv(dataset_path)` builds CALVIN's own `PlayTableSimEnv` from a CALVIN dataset's
`.hydra/merged_config.yaml` (as CALVIN's `get_env` does) and exposes the interface of
`envs/base.py`, so `envs.protocol` evaluates a policy on the real benchmark with the same code as
on PlayTable; `CalvinEnv.wrap(sim)` adopts a `PlayTableSimEnv` built elsewhere. It also exposes the
privileged view the scripted experts plan from (`envs/experts/workspace.py`), read from calvin_env's
own objects: `scene` (desk joints, blocks, lights), `robot` (commanded TCP target, gripper),
`layout` (block sizes, sampling surfaces, desk joint frames) and `p` (pybullet bound to CALVIN's
client), so `ExpertPolicy(env)` drives both simulators.

Traps avoided: only the static and gripper cameras are built (CALVIN's `make_env` also builds the
tactile camera, which needs `tacto`); actions are copied before CALVIN's robot scales them in
place; and `close()` leaves the closed `PlayTableSimEnv` unable to disconnect anything later (its
`__del__` calls `close()`, which disconnects the client id it still holds: pybullet reuses ids, so
that would cut off the next env's client). `calvin_env` is not on PyPI; importing it lazily keeps
this module importable without it, and constructing a `CalvinEnv` then says how to install it.
"""

from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path
from typing import Any

import numpy as np
import pybullet

from envs.playtable.env import parse_action
from envs.playtable.layout import GLOBAL_SCALING, PALETTES, BlockSpec, SceneLayout, read_joint_frames
from envs.playtable.scene import BUTTON, DOORS, LIGHTS, SWITCH, TABLE_LINKS, PlayTableScene

# calvin_env's commit 797142c fixes the LED button (a reset to an LED-on state left the button "off", so the
# next press lit the LED again and turn_off_led never succeeded); the `calvin` repository pins 1431a46, before it.
CALVIN_ENV_COMMIT = "797142c588c21e76717268b7b430958dbd13bf48"
INSTALL_HINT = (
    "the real CALVIN simulator (`calvin_env`) is not installed; it is not on PyPI. Install it from a git "
    "checkout, editable (it finds its data/ and conf/ through the source tree, and needs to be a git repo), "
    f"at commit {CALVIN_ENV_COMMIT[:7]} or later (earlier ones never turn the LED off after a reset to LED on):\n"
    "    git clone --recursive https://github.com/mees/calvin_env && "
    f"git -C calvin_env checkout {CALVIN_ENV_COMMIT} && pip install -e calvin_env\n"
    "On a machine without a GPU, CalvinEnv(..., use_egl=False) renders on the CPU."
)
CAMERAS = ("static", "gripper")


class CalvinNotInstalledError(ImportError):
    """`calvin_env` cannot be imported; the message says how to install it."""


def require_calvin_env() -> Any:
    """Import `calvin_env` (and the hydra it is configured with), or raise `CalvinNotInstalledError`."""
    try:
        import calvin_env
        import hydra  # noqa: F401
        import omegaconf  # noqa: F401
    except ImportError as err:
        raise CalvinNotInstalledError(INSTALL_HINT) from err
    return calvin_env


class BoundClient:
    """pybullet's functions with `physicsClientId` bound to a client this object does not own.

    CALVIN's `PlayTableSimEnv.p` is the bare `pybullet` module when it renders through EGL, whose calls
    without a client id go to client 0; the experts call `p.getAABB(uid)` and the like without one.
    """

    def __init__(self, cid: int) -> None:
        self.cid = cid

    def __getattr__(self, name: str) -> Any:
        if name in ("connect", "disconnect", "resetSimulation"):
            raise AttributeError(f"BoundClient.{name}: the client belongs to CALVIN's env; use CalvinEnv.close()")
        attribute = getattr(pybullet, name)
        return functools.partial(attribute, physicsClientId=self.cid) if inspect.isbuiltin(attribute) else attribute


class CalvinRobotView:
    """CALVIN's `Robot` (calvin_env `robot/robot.py`) under the names the experts read on PlayTable's `PandaRobot`."""

    def __init__(self, robot: Any, client: BoundClient) -> None:
        """Bind to CALVIN's robot; raises ValueError if its targets are quaternions (`euler_obs: false`)."""
        if not robot.euler_obs:
            raise ValueError(f"{robot.filename}: robot.euler_obs is false; the experts need euler TCP targets")
        self._robot, self.p = robot, client

    @property
    def uid(self) -> int:
        """The arm's body id."""
        return self._robot.robot_uid

    @property
    def target_pos(self) -> np.ndarray:
        """The commanded TCP position (3,) that relative actions are added to."""
        return self._robot.target_pos

    @property
    def target_orn(self) -> np.ndarray:
        """The commanded TCP euler xyz (3,)."""
        return self._robot.target_orn

    @property
    def gripper_action(self) -> float:
        """The last gripper command (-1 close, 1 open); CALVIN keeps it across resets."""
        return float(self._robot.gripper_action)

    def tcp_pose(self) -> tuple[np.ndarray, tuple[float, ...]]:
        """TCP world position (3,) and quaternion xyzw now: the link frame that CALVIN's IK moves to the target.

        (CALVIN's `robot_obs` reads the link's centre of mass: the same point, the `tcp` link's inertial
        origin is zero.)
        """
        state = self.p.getLinkState(self._robot.robot_uid, self._robot.tcp_link_id, computeForwardKinematics=True)
        return np.array(state[4]), state[5]


class CalvinSceneView:
    """CALVIN's `PlayTableScene` (calvin_env `scene/play_table_scene.py`) as the experts read PlayTable's scene.

    The geometry reads are `PlayTableScene`'s own methods: they need only the table's body and joint
    ids, the block ids and `p`, which here come from calvin_env's scene objects.
    """

    joint_state = PlayTableScene.joint_state
    joint_range = PlayTableScene.joint_range
    block_pose = PlayTableScene.block_pose
    link_pose = PlayTableScene.link_pose
    handle_position = PlayTableScene.handle_position
    joint_direction = PlayTableScene.joint_direction

    def __init__(self, scene: Any, client: BoundClient) -> None:
        """Bind to CALVIN's scene; raises ValueError (naming the table URDF) if its desk is not CALVIN's."""
        self._scene, self.p = scene, client
        tables = [obj for obj in scene.fixed_objects if obj.name == "table"]
        if len(tables) != 1:
            raise ValueError(f"calvin_env scene: expected one fixed object 'table', got "
                             f"{[obj.name for obj in scene.fixed_objects]}")
        self.table = tables[0]
        self.table_uid = self.table.uid
        self.block_names = tuple(obj.name for obj in scene.movable_objects)
        self.block_uids = {obj.name: obj.uid for obj in scene.movable_objects}
        self.joint_ids = {obj.name: obj.joint_index for obj in (*scene.doors, *scene.buttons, *scene.switches)}
        problems = []
        if self.table.info_dict.get("links") != TABLE_LINKS:
            problems.append(f"links {self.table.info_dict.get('links')} != {TABLE_LINKS}")
        if missing := sorted({*DOORS, BUTTON, SWITCH} - set(self.joint_ids)):
            problems.append(f"no doors/buttons/switches {missing}")
        if sorted(light.name for light in scene.lights) != sorted(LIGHTS):
            problems.append(f"lights {[light.name for light in scene.lights]}, expected {sorted(LIGHTS)}")
        if scene.global_scaling != GLOBAL_SCALING:
            problems.append(f"global_scaling {scene.global_scaling}, expected {GLOBAL_SCALING}")
        if problems:
            raise ValueError(f"{self.table.file}: not a CALVIN desk the experts know: {'; '.join(problems)}")

    @property
    def lights(self) -> dict[str, int]:
        """Logical state (0/1) of the "lightbulb" and the "led"."""
        return {light.name: int(light.get_state()) for light in self._scene.lights}


def calvin_layout(scene: Any, robot: Any, client: BoundClient) -> SceneLayout:
    """The `SceneLayout` of CALVIN's scene, read from calvin_env's objects and its table URDF.

    Block sizes and colours are read off the loaded bodies; the desk joint frames from the table's URDF.
    The palette (our flat colours, unused by CALVIN's renderer) is that of the scene letter.

    Raises:
        ValueError: the table is not one of CALVIN's `calvin_table_<A-D>.urdf`, or a block is not a box.
    """
    table = next(obj for obj in scene.fixed_objects if obj.name == "table")
    letter = re.fullmatch(r"calvin_table_([A-D])\.urdf", Path(table.file).name)
    if letter is None:
        raise ValueError(f"{table.file}: not one of CALVIN's tables calvin_table_<A-D>.urdf")
    blocks = []
    for obj in scene.movable_objects:
        shape = client.getVisualShapeData(obj.uid)
        if len(shape) != 1 or shape[0][2] != pybullet.GEOM_BOX:
            raise ValueError(f"{obj.file}: movable object {obj.name!r} is not one box")
        size = tuple(float(d) / scene.global_scaling for d in shape[0][3])
        blocks.append(BlockSpec(name=obj.name, size=size, rgba=tuple(shape[0][7])))
    return SceneLayout(
        name=letter[1], joints=read_joint_frames(Path(table.file)), blocks=tuple(blocks),
        surfaces={name: (tuple(low), tuple(high)) for name, (low, high) in scene.surfaces.items()},
        robot_base_position=tuple(float(v) for v in robot.base_position),
        robot_base_orientation=tuple(client.getEulerFromQuaternion(robot.base_orientation)),
        robot_initial_joint_positions=tuple(float(v) for v in robot.initial_joint_positions),
        palette=PALETTES[letter[1]])


def build_calvin_sim(dataset_path: str | Path, *, cameras: bool = True, use_egl: bool = False) -> Any:
    """CALVIN's `PlayTableSimEnv` of a dataset, as CALVIN's `get_env` builds it (without the tactile camera).

    Raises:
        CalvinNotInstalledError: `calvin_env` is not importable.
        FileNotFoundError: the folder has no `.hydra/merged_config.yaml`.
    """
    require_calvin_env()
    import hydra
    from omegaconf import OmegaConf

    folder = Path(dataset_path)
    folder = folder / "validation" if (folder / "validation" / ".hydra").is_dir() else folder
    config_path = folder / ".hydra" / "merged_config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing; point calvin_dataset_path at a CALVIN dataset folder")
    config = OmegaConf.load(config_path)
    for name in list(config.cameras.keys()):
        if not cameras or name not in CAMERAS:
            del config.cameras[name]
    config.env.use_egl = use_egl
    return hydra.utils.instantiate(config.env, show_gui=False, use_vr=False, use_scene_info=True)


class CalvinEnv:
    """CALVIN's `PlayTableSimEnv` behind `envs.base.SimEnv`, with the experts' view of its scene."""

    def __init__(self, dataset_path: str | Path, *, cameras: bool = True, use_egl: bool = False) -> None:
        """Build the env of a CALVIN dataset (its `validation/` split when present, as CALVIN evaluates).

        Args:
            dataset_path: a CALVIN dataset folder (e.g. `task_ABC_D`) or one of its splits.
            cameras: build the static and gripper cameras (False: state-only, much faster).
            use_egl: render through the EGL plugin (needs a GPU and a working EGL driver).

        Raises:
            CalvinNotInstalledError: `calvin_env` is not importable.
            FileNotFoundError: the folder has no `.hydra/merged_config.yaml`.
        """
        self._bind(build_calvin_sim(dataset_path, cameras=cameras, use_egl=use_egl))

    @classmethod
    def wrap(cls, sim: Any) -> CalvinEnv:
        """Adopt a `PlayTableSimEnv` built elsewhere (e.g. by CALVIN's `get_env`); `close()` then closes it."""
        env = cls.__new__(cls)
        env._bind(sim)
        return env

    def _bind(self, sim: Any) -> None:
        self.env = sim
        self.p = BoundClient(sim.cid)
        self.robot = CalvinRobotView(sim.robot, self.p)
        self.scene = CalvinSceneView(sim.scene, self.p)
        self.layout = calvin_layout(sim.scene, sim.robot, self.p)
        self._closed = False

    def reset(self, robot_obs: np.ndarray | None = None, scene_obs: np.ndarray | None = None) -> dict:
        """CALVIN's reset (one physics step after writing the state)."""
        return self.env.reset(robot_obs=robot_obs, scene_obs=scene_obs)

    def step(self, action: Any) -> tuple[dict, int, bool, dict]:
        """Validate like PlayTable, then hand CALVIN a fresh copy (it scales relative actions in place)."""
        kind, first, second, gripper = parse_action(action)
        if kind == "relative":
            return self.env.step(np.append(first, float(gripper)))
        return self.env.step((first.copy(), second.copy(), gripper))

    def get_obs(self) -> dict:
        """CALVIN's observation dict."""
        return self.env.get_obs()

    def get_info(self) -> dict:
        """CALVIN's info dict (the oracle's input)."""
        return self.env.get_info()

    def close(self) -> None:
        """Disconnect CALVIN's physics client, and keep the closed env from disconnecting any later (idempotent).

        CALVIN's `close()` disconnects `cid` whenever `cid >= 0`, and its `__del__` calls it again when
        the object is collected; by then a new env may have been given the same id. A closed env's
        `cid` is therefore set to -1, which CALVIN's `close()` skips.
        """
        if self._closed:
            return
        self._closed = True
        self.env.close()
        self.env.cid = -1

    def __enter__(self) -> CalvinEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
