"""Generated robot assets: CALVIN's Panda URDF with low-poly visuals, written to a per-user cache.

pybullet resolves mesh paths relative to the URDF file and only absolute paths survive a move, so
the Panda URDF is generated at run time from the installed `pybullet_data` (its `franka_panda`
meshes are byte-identical to CALVIN's) and written, named by a hash of its content, into
`$TMPDIR/upvla-playtable-<uid>/`; writes are atomic so parallel workers can share the folder.

CALVIN's fingers: CALVIN's dataset robot (`panda_longer_finger.urdf`) has fingers ~3.6 cm longer
than the stock Panda's and its TCP 0.14 m from the hand, which keeps the hand above the table top
when the fingertips reach the drawer handle. Its finger meshes are not in pybullet_data, so the
stock finger (mesh and collision) is stretched along its length by `FINGER_STRETCH`, and the TCP
sits at CALVIN's 0.14 m: at CALVIN's joint pose our `robot_obs` TCP equals CALVIN's.

Low-poly visuals: TinyRenderer pays ~0.5 us per triangle on top of the pixels it fills, and the
detailed Panda meshes (~200k triangles) cost ~20 ms per frame. Each link's visual becomes one convex
hull of its collision mesh with at most `HULL_VERTICES` vertices (pybullet's own V-HACD, computed
once per machine, ~0.5 s): ~900 triangles for the whole arm. Collision shapes are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import pybullet
import pybullet_data

from envs.playtable.bullet import quiet_stdout

HULL_VERTICES = 48
# Stock fingertip 0.112 m from the hand; stretched to 0.148 m, 8 mm beyond CALVIN's TCP (0.14 m).
FINGER_STRETCH = 1.67
TCP_OFFSET = 0.14  # m from the hand, CALVIN's `tcp_joint` in panda_longer_finger.urdf
PANDA_DIR = Path(pybullet_data.getDataPath()) / "franka_panda"
_EXTRA_LINKS = """
  <joint name="camera_joint" type="fixed"><parent link="panda_hand"/><child link="gripper_cam"/>
    <origin xyz="-0.1 0 0" rpy="1.3 0 -1.57"/></joint>
  <link name="gripper_cam">
    <contact><spinning_friction value="0.1"/><lateral_friction value="0.8"/></contact>
    <inertial><origin rpy="0 0 0" xyz="0 0 0"/><mass value="0.2"/>
      <inertia ixx="0.1" ixy="0" ixz="0" iyy="0.1" iyz="0" izz="0.1"/></inertial>
    <visual><geometry><box size=".08 .025 0.01"/></geometry><material name="panda_white"/></visual>
    <collision><geometry><box size=".08 .025 0.01"/></geometry></collision>
  </link>
  <joint name="tcp_joint" type="fixed"><parent link="panda_hand"/><child link="tcp"/>
    <origin xyz="0 0 {tcp}" rpy="0 0 0"/></joint>
  <link name="tcp"><inertial><origin rpy="0 0 0" xyz="0 0 0"/><mass value="0.00001"/>
    <inertia ixx="0.1" ixy="0" ixz="0" iyy="0.1" iyz="0" izz="0.1"/></inertial></link>
"""


def cache_dir() -> Path:
    """The per-user folder of generated assets."""
    folder = Path(tempfile.gettempdir()) / f"upvla-playtable-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_asset(text: str, stem: str) -> Path:
    """Write generated URDF text once per content into the cache folder; return its path."""
    path = cache_dir() / f"{stem}-{hashlib.sha1(text.encode()).hexdigest()[:12]}.urdf"
    if not path.exists():
        scratch = path.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(text)
        os.replace(scratch, path)
    return path


def hull_mesh(mesh: Path) -> Path:
    """A single convex hull of `mesh` with at most `HULL_VERTICES` vertices, cached by content."""
    key = hashlib.sha1(mesh.read_bytes() + f"{HULL_VERTICES}".encode()).hexdigest()[:12]
    path = cache_dir() / f"hull-{mesh.stem}-{key}.obj"
    if not path.exists():
        scratch = path.with_suffix(f".{os.getpid()}.obj")
        with quiet_stdout():
            pybullet.vhacd(str(mesh), str(scratch), str(scratch.with_suffix(".log")), resolution=50000,
                           depth=1, concavity=0.05, maxNumVerticesPerCH=HULL_VERTICES)
        scratch.with_suffix(".log").unlink(missing_ok=True)
        os.replace(scratch, path)
    return path


def _stretch_fingers(text: str) -> str:
    for link in ("panda_leftfinger", "panda_rightfinger"):
        start = text.index(f'<link name="{link}">')
        end = text.index("</link>", start)
        body = re.sub(r'(<mesh filename="[^"]+")/>', rf'\1 scale="1 1 {FINGER_STRETCH}"/>', text[start:end])
        text = text[:start] + body + text[end:]
    return text


def panda_urdf(low_poly: bool = True) -> str:
    """The URDF text: pybullet_data's Panda with CALVIN's longer fingers, gripper_cam and tcp links.

    Args:
        low_poly: visuals are convex hulls of the collision meshes instead of the detailed meshes.
    """
    text = _stretch_fingers((PANDA_DIR / "panda.urdf").read_text())
    if low_poly:
        def hull(match: re.Match) -> str:
            return hull_mesh(PANDA_DIR / "meshes" / "collision" / f"{match.group(1)}.obj").as_posix()

        visuals = re.findall(r"<visual>.*?</visual>", text, flags=re.S)
        for visual in visuals:
            text = text.replace(visual, re.sub(r"package://meshes/(?:visual|collision)/(\w+)\.obj", hull, visual))
    text = text.replace("package://", f"{PANDA_DIR.as_posix()}/")
    return text.replace("</robot>", f"{_EXTRA_LINKS.format(tcp=TCP_OFFSET)}</robot>")


