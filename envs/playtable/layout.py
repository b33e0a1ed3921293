"""Scene presets A-D: CALVIN's scene YAMLs and table joint frames, plus our colour palettes.

Everything that differs between CALVIN's four scenes comes from CALVIN's own files in
`data/calvin/` (MIT, see the LICENSE files there): the block sizes and the `movable_objects`
order (which is the block order of `scene_obs`), the block-sampling surfaces, the robot pose, and
every joint frame and limit of the desk (`calvin_table_<S>.urdf`; its meshes are not shipped, our
desk is rebuilt from boxes in `desk.py`). Only the colours are ours (CALVIN uses wood textures).
Lengths are URDF units unless they say "world": the desk and blocks load at `GLOBAL_SCALING`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import yaml

DATA_DIR = Path(__file__).resolve().parent / "data"
CALVIN_DIR = DATA_DIR / "calvin"
SCENES = ("A", "B", "C", "D")
GLOBAL_SCALING = 0.8  # CALVIN loads the table and the blocks at 0.8x their URDF size
BLOCK_SIZES = {"small": (0.05, 0.05, 0.05), "middle": (0.07, 0.05, 0.05), "big": (0.10, 0.05, 0.05)}
BLOCK_COLOURS = {"red": (1.0, 0.0, 0.0, 1.0), "blue": (0.0, 0.0, 1.0, 1.0), "pink": (1.0, 0.41, 0.71, 1.0)}
BLOCK_MASS = 1.0  # kg
BLOCK_LATERAL_FRICTION = 0.7
BLOCK_SPINNING_FRICTION = 0.001
# Desk geometry shared by the generator and the scene (URDF units; see desk.py).
DOOR_WIDTH = 0.35  # x extent of the sliding door, in its joint frame from 0 to DOOR_WIDTH
DRAWER_FRONT = 0.3  # drawer front face along the drawer frame's z (toward the robot)
# The joints of CALVIN's table, in its URDF order: pybullet link indices 0..6 follow it.
DESK_JOINTS = ("base__button", "base__switch", "base__slide", "base__drawer", "base__led", "base__light",
               "base__plank")


@dataclass(frozen=True)
class JointFrame:
    """One joint of CALVIN's table URDF: its frame in the table frame, axis, limits and child inertial."""

    name: str
    child: str
    kind: str
    xyz: tuple[float, float, float]
    rpy: tuple[float, float, float]
    axis: tuple[float, float, float]
    lower: float
    upper: float
    mass: float
    com: tuple[float, float, float]


@dataclass(frozen=True)
class BlockSpec:
    """A movable block: name as in CALVIN (`block_red`), URDF size (m, before scaling) and colour."""

    name: str
    size: tuple[float, float, float]
    rgba: tuple[float, float, float, float]


@dataclass(frozen=True)
class Palette:
    """Desk colours of a scene (RGBA): CALVIN's texture names, as flat colours."""

    base: tuple[float, float, float, float]
    doors: tuple[float, float, float, float]
    handles: tuple[float, float, float, float]
    floor: tuple[float, float, float, float]


# Texture pairs (base / doors with handles) from CALVIN: A dark_wood / dark_wood, B light_wood /
# light_wood, C wood / dark_wood, D dark_wood / dark_wood. A and D use different PNGs under the
# same name; D's tint differs from A's so that no scene is a recolouring of a training scene.
_GRAY = (0.55, 0.55, 0.55, 1.0)
PALETTES = {
    "A": Palette((0.40, 0.26, 0.16, 1.0), (0.36, 0.23, 0.14, 1.0), _GRAY, (0.62, 0.62, 0.60, 1.0)),
    "B": Palette((0.80, 0.66, 0.47, 1.0), (0.76, 0.62, 0.44, 1.0), _GRAY, (0.58, 0.60, 0.62, 1.0)),
    "C": Palette((0.62, 0.44, 0.27, 1.0), (0.38, 0.25, 0.15, 1.0), _GRAY, (0.60, 0.58, 0.55, 1.0)),
    "D": Palette((0.31, 0.21, 0.15, 1.0), (0.29, 0.19, 0.13, 1.0), (0.45, 0.45, 0.47, 1.0), (0.55, 0.55, 0.55, 1.0)),
}


@dataclass(frozen=True)
class SceneLayout:
    """Everything scene-specific: desk joints, blocks, sampling surfaces (world m), robot pose, colours."""

    name: str
    joints: dict[str, JointFrame]
    blocks: tuple[BlockSpec, ...]
    surfaces: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]]
    robot_base_position: tuple[float, float, float]
    robot_base_orientation: tuple[float, float, float]
    robot_initial_joint_positions: tuple[float, ...]
    palette: Palette


def _floats(text: str | None, default: str = "0 0 0") -> tuple[float, ...]:
    return tuple(float(v) for v in (text or default).split())


def read_joint_frames(urdf_path: Path) -> dict[str, JointFrame]:
    """The joints of a CALVIN table URDF, with the mass and COM of each child link."""
    root = ET.parse(urdf_path).getroot()
    inertials = {}
    for link in root.iter("link"):
        inertial = link.find("inertial")
        mass = float(inertial.find("mass").get("value")) if inertial is not None else 0.0
        com = _floats(inertial.find("origin").get("xyz")) if inertial is not None else (0.0, 0.0, 0.0)
        inertials[link.get("name")] = (mass, com)
    frames = {}
    for joint in root.iter("joint"):
        origin, limit, child = joint.find("origin"), joint.find("limit"), joint.find("child").get("link")
        axis = joint.find("axis")
        frames[joint.get("name")] = JointFrame(
            name=joint.get("name"), child=child, kind=joint.get("type"),
            xyz=_floats(origin.get("xyz")), rpy=_floats(origin.get("rpy")),
            axis=_floats(axis.get("xyz") if axis is not None else None),
            lower=float(limit.get("lower")) if limit is not None else 0.0,
            upper=float(limit.get("upper")) if limit is not None else 0.0,
            mass=inertials[child][0], com=inertials[child][1])
    missing = [name for name in DESK_JOINTS if name not in frames]
    if missing:
        raise ValueError(f"{urdf_path}: missing joints {missing}")
    return {name: frames[name] for name in DESK_JOINTS}


def _block_spec(name: str, file: str) -> BlockSpec:
    colour, size = Path(file).stem.split("_")[1:3]  # blocks/block_<colour>_<size>.urdf
    return BlockSpec(name=name, size=BLOCK_SIZES[size], rgba=BLOCK_COLOURS[colour])


def load_layout(scene: str) -> SceneLayout:
    """The preset of CALVIN scene `scene` ("A", "B", "C" or "D")."""
    if scene not in SCENES:
        raise ValueError(f"scene: must be one of {list(SCENES)}, got {scene!r}")
    config = yaml.safe_load((CALVIN_DIR / f"calvin_scene_{scene}.yaml").read_text())
    blocks = tuple(_block_spec(name, spec["file"]) for name, spec in config["objects"]["movable_objects"].items())
    return SceneLayout(
        name=scene,
        joints=read_joint_frames(CALVIN_DIR / f"calvin_table_{scene}.urdf"),
        blocks=blocks,
        surfaces={k: (tuple(v[0]), tuple(v[1])) for k, v in config["surfaces"].items()},
        robot_base_position=tuple(config["robot_base_position"]),
        robot_base_orientation=tuple(config["robot_base_orientation"]),
        robot_initial_joint_positions=tuple(config["robot_initial_joint_positions"]),
        palette=PALETTES[scene],
    )
