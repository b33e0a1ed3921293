"""CALVIN's desk rebuilt from boxes: a URDF with CALVIN's link/joint names, frames and limits.

The joint frames, axes, limits and link masses are read from CALVIN's `calvin_table_<S>.urdf`
(`layout.read_joint_frames`), so every joint moves exactly as in CALVIN (after the 0.8 global
scaling: slide 0-0.28 m in D, drawer 0-0.22 m, button 0-0.02 m, switch 0-0.088 m). Only the
geometry is ours: CALVIN's meshes are replaced by boxes sized from its link inertias (the plank,
LED, button and switch dimensions follow from CALVIN's inertia tensors at density 1000).

Geometry facts the scripted experts rely on (URDF units, x right, y away from the robot, z up):
the table top is at z 0.55 (0.44 m world) and ends at y -0.3 (the drawer front) and y 0.025 (the
cabinet front); the plank (`plank_link`) top is at z 0.55125 (CALVIN's blocks rest 1 mm higher on
the shelf than on the table); the cabinet's walls and top board start at y 0.15; the door leans 30
degrees back and covers the right half of the shelf at joint 0 (the door spans x in [0, 0.35] of its
frame, CALVIN's inertial origin of scene D's door says otherwise but contradicts its own
slider_left/slider_right semantics); the drawer opens toward -y.

Run (regenerates the committed `data/desk_<S>.urdf`; tests check the files match):
    python -m envs.playtable.desk
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from envs.playtable.layout import (
    DATA_DIR,
    DOOR_WIDTH,
    DRAWER_FRONT,
    SCENES,
    JointFrame,
    SceneLayout,
    load_layout,
)

Vec = tuple[float, float, float]
RGBA = tuple[float, float, float, float]
TABLE_X = (-0.6, 0.6)
TABLE_FRONT_Y, CABINET_FRONT_Y, CABINET_BACK_Y = -0.3, 0.025, 0.3
# The cabinet front leans back like the door: walls and top board start where the door's top edge
# is, so the arm can reach the door handle and the switch without hitting an overhang.
UPPER_FRONT_Y = 0.15
TABLE_TOP_Z, SLAB = 0.55, 0.05
CABINET_TOP_Z, BOARD = 0.81, 0.025
WALL = 0.025
DOOR_SPAN = (-0.137, 0.133)  # along the slope: from the plank's front edge to under the top board
SWITCH_HALF_WIDTH = 0.11
DRAWER_HALF_WIDTH, DRAWER_DEPTH, DRAWER_HEIGHT = 0.275, 0.4, 0.095
BLACK, WHITE, GRAY = (0.05, 0.05, 0.05, 1.0), (1.0, 1.0, 1.0, 1.0), (0.4, 0.4, 0.4, 1.0)


def _rotate_x(angle: float, v: Vec) -> Vec:
    c, s = math.cos(angle), math.sin(angle)
    return (v[0], c * v[1] - s * v[2], s * v[1] + c * v[2])


def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{v:.6g}" for v in values)


class _Link:
    """Geometry of one link: boxes and cylinders, each a visual and an identical collision."""

    def __init__(self, name: str) -> None:
        self.name, self.parts = name, []

    def box(self, center: Vec, size: Vec, rgba: RGBA, rpy: Vec = (0.0, 0.0, 0.0)) -> None:
        if min(size) > 1e-9:
            self.parts.append((f'<box size="{_fmt(size)}"/>', center, rpy, rgba))

    def aabb(self, lo: Vec, hi: Vec, rgba: RGBA) -> None:
        self.box(tuple((a + b) / 2 for a, b in zip(lo, hi, strict=True)),
                 tuple(b - a for a, b in zip(lo, hi, strict=True)), rgba)

    def framed_box(self, frame: JointFrame, center: Vec, size: Vec, rgba: RGBA) -> None:
        """A box given in `frame`'s joint coordinates, added to this (base) link."""
        offset = _rotate_x(frame.rpy[0], center)
        self.box(tuple(o + d for o, d in zip(frame.xyz, offset, strict=True)), size, rgba, rpy=frame.rpy)

    def cylinder_y(self, center: Vec, radius: float, length: float, rgba: RGBA) -> None:
        """A cylinder along the link's y axis (URDF cylinders run along z; turn it by -90 deg about x)."""
        self.parts.append((f'<cylinder radius="{radius:.6g}" length="{length:.6g}"/>', center,
                           (-math.pi / 2, 0.0, 0.0), rgba))

    def xml(self, colours: dict[RGBA, str], mass: float = 0.0, com: Vec = (0.0, 0.0, 0.0)) -> str:
        lines = [f'  <link name="{self.name}">',
                 f'    <inertial><origin xyz="{_fmt(com)}" rpy="0 0 0"/><mass value="{mass:.6g}"/>'
                 '<inertia ixx="1e-3" ixy="0" ixz="0" iyy="1e-3" iyz="0" izz="1e-3"/></inertial>']
        for geometry, center, rpy, rgba in self.parts:
            origin = f'<origin xyz="{_fmt(center)}" rpy="{_fmt(rpy)}"/>'
            lines.append(f'    <visual>{origin}<geometry>{geometry}</geometry>'
                         f'<material name="{colours.setdefault(rgba, f"c{len(colours)}")}">'
                         f'<color rgba="{_fmt(rgba)}"/></material></visual>')
            lines.append(f"    <collision>{origin}<geometry>{geometry}</geometry></collision>")
        lines.append("  </link>")
        return "\n".join(lines)


def _regions(layout: SceneLayout) -> tuple[tuple[float, float], tuple[float, float]]:
    """The x ranges of the shelf opening (the door's travel) and of the switch panel."""
    slide, switch = layout.joints["base__slide"], layout.joints["base__switch"]
    opening = (slide.xyz[0] - slide.upper, slide.xyz[0] + DOOR_WIDTH)
    return opening, (switch.xyz[0] - SWITCH_HALF_WIDTH, switch.xyz[0] + SWITCH_HALF_WIDTH)


def _table(base: _Link, layout: SceneLayout) -> None:
    """Table top in front of the cabinet, and the table body around the drawer cavity."""
    rgba, top = layout.palette.base, TABLE_TOP_Z
    drawer_x = layout.joints["base__drawer"].xyz[0]
    lo, hi = drawer_x - DRAWER_HALF_WIDTH - 0.01, drawer_x + DRAWER_HALF_WIDTH + 0.01
    drawer_z = layout.joints["base__drawer"].xyz[2]
    base.aabb((TABLE_X[0], TABLE_FRONT_Y, top - SLAB), (TABLE_X[1], CABINET_FRONT_Y, top), rgba)
    base.aabb((TABLE_X[0], TABLE_FRONT_Y, 0.0), (lo, CABINET_BACK_Y, top - SLAB), rgba)
    base.aabb((hi, TABLE_FRONT_Y, 0.0), (TABLE_X[1], CABINET_BACK_Y, top - SLAB), rgba)
    base.aabb((lo, TABLE_FRONT_Y, 0.0), (hi, CABINET_BACK_Y, drawer_z - 0.01), rgba)
    base.aabb((lo, DRAWER_DEPTH - DRAWER_FRONT + 0.02, drawer_z - 0.01), (hi, CABINET_BACK_Y, top - SLAB), rgba)


def _cabinet(base: _Link, layout: SceneLayout) -> None:
    """Cabinet on the back of the table: floor, walls, top board, back, inclined switch panel.

    The floor spans the cabinet's whole depth; walls and top board start at `UPPER_FRONT_Y`.
    """
    rgba, top = layout.palette.base, TABLE_TOP_Z
    plank = layout.joints["base__plank"]
    (open_lo, open_hi), (sw_lo, sw_hi) = _regions(layout)
    bounds = sorted([open_lo, open_hi, sw_lo, sw_hi])
    cab_lo, cab_hi = bounds[0] - WALL, bounds[3] + WALL
    front, back = CABINET_FRONT_Y, CABINET_BACK_Y
    for x_lo, x_hi in ((cab_lo, bounds[0]), (bounds[1], bounds[2]), (bounds[3], cab_hi)):
        base.aabb((x_lo, UPPER_FRONT_Y, top), (x_hi, back, CABINET_TOP_Z - BOARD), rgba)  # walls
    base.aabb((sw_lo, front, top - SLAB), (sw_hi, back, top), rgba)  # floor of the switch bay
    base.aabb((open_lo, front, top - SLAB), (open_hi, back, plank.xyz[2]), rgba)  # under the plank
    plank_lo, plank_hi = plank.xyz[0] - 0.325, plank.xyz[0] + 0.325
    base.aabb((open_lo, front, plank.xyz[2]), (plank_lo, back, top), rgba)  # beside and behind the plank
    base.aabb((plank_hi, front, plank.xyz[2]), (open_hi, back, top), rgba)
    base.aabb((plank_lo, 0.2, plank.xyz[2]), (plank_hi, back, top), rgba)
    base.aabb((TABLE_X[0], front, top - SLAB), (cab_lo, back, top), rgba)  # table top beside the cabinet
    base.aabb((cab_hi, front, top - SLAB), (TABLE_X[1], back, top), rgba)
    base.aabb((cab_lo, back - WALL, top), (cab_hi, back, CABINET_TOP_Z - BOARD), rgba)
    base.aabb((cab_lo, UPPER_FRONT_Y, CABINET_TOP_Z - BOARD), (cab_hi, back, CABINET_TOP_Z), rgba)
    switch = layout.joints["base__switch"]
    centre = (sw_lo + sw_hi) / 2 - switch.xyz[0]
    base.framed_box(switch, (centre, -0.01, -0.057), (sw_hi - sw_lo, 0.02, 0.272), rgba)


def _moving_links(layout: SceneLayout) -> dict[str, _Link]:
    """The child links of CALVIN's seven joints, in joint order, in their own joint frames."""
    palette = layout.palette
    links = {frame.child: _Link(frame.child) for frame in layout.joints.values()}
    links["button_link"].cylinder_y((0.0, 0.0025, 0.0), 0.04, 0.055, BLACK)
    links["switch_link"].box((0.0, 0.035, 0.0), (0.16, 0.07, 0.037), GRAY)
    door = links["slide_link"]
    door.box((DOOR_WIDTH / 2, sum(DOOR_SPAN) / 2, 0.005), (DOOR_WIDTH, DOOR_SPAN[1] - DOOR_SPAN[0], 0.01),
             palette.doors)
    door.box((DOOR_WIDTH / 2, 0.0, 0.025), (0.03, 0.12, 0.03), palette.handles)
    drawer, w, d = links["drawer_link"], DRAWER_HALF_WIDTH, DRAWER_DEPTH
    back_z = DRAWER_FRONT - d
    drawer.box((0.0, 0.005, back_z + d / 2), (2 * w, 0.01, d), palette.doors)
    drawer.box((0.0, DRAWER_HEIGHT / 2, DRAWER_FRONT - 0.01), (2 * w, DRAWER_HEIGHT, 0.02), palette.doors)
    drawer.box((0.0, 0.04, back_z + 0.01), (2 * w, 0.08, 0.02), palette.doors)
    for side in (-1, 1):
        drawer.box((side * (w - 0.01), 0.04, back_z + d / 2), (0.02, 0.08, d), palette.doors)
    # The handle sits at the top of the front so a gripper holding it keeps its hand above the table top.
    drawer.box((0.0, 0.08, DRAWER_FRONT + 0.02), (0.14, 0.02, 0.04), palette.handles)
    links["led_link"].box((0.0, 0.01, 0.0), (0.2, 0.02, 0.05), WHITE)
    links["light_link"].cylinder_y((0.0, 0.028, -0.035), 0.03, 0.056, WHITE)
    # CALVIN's blocks settle on the plank at z 0.46099 m, 1 mm above the table spots: plank top 0.441 m.
    links["plank_link"].box((0.0, 0.013125, 0.0), (0.65, 0.02625, 0.175), palette.base)
    return links


def _joint_xml(frame: JointFrame) -> str:
    limit = f'<limit lower="{frame.lower:.6g}" upper="{frame.upper:.6g}" effort="0" velocity="0"/>'
    return (f'  <joint name="{frame.name}" type="{frame.kind}"><origin xyz="{_fmt(frame.xyz)}" '
            f'rpy="{_fmt(frame.rpy)}"/><parent link="base_link"/><child link="{frame.child}"/>'
            f'<axis xyz="{_fmt(frame.axis)}"/>{limit if frame.kind == "prismatic" else ""}</joint>')


def desk_urdf(layout: SceneLayout) -> str:
    """The URDF text of scene `layout.name`'s desk (load it with globalScaling 0.8, fixed base)."""
    base = _Link("base_link")
    _table(base, layout)
    _cabinet(base, layout)
    links, colours = _moving_links(layout), {}
    parts = [f'<?xml version="1.0"?>\n<!-- Generated by envs/playtable/desk.py from calvin_table_{layout.name}.urdf; '
             'do not edit. -->', f'<robot name="calvin_table_{layout.name}">', base.xml(colours)]
    for frame in layout.joints.values():
        parts.append(links[frame.child].xml(colours, frame.mass, frame.com))
        parts.append(_joint_xml(frame))
    parts.append("</robot>\n")
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    """Write `data/desk_<S>.urdf` for every scene."""
    parser = argparse.ArgumentParser(description="Regenerate the PlayTable desk URDFs.")
    parser.add_argument("--scenes", nargs="*", default=list(SCENES), choices=SCENES)
    for scene in parser.parse_args(argv).scenes:
        path = DATA_DIR / f"desk_{scene}.urdf"
        path.write_text(desk_urdf(load_layout(scene)))
        print(path)


if __name__ == "__main__":
    main()
