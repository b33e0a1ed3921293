"""Scripted experts for CALVIN's 34 tasks in PlayTable: waypoint plans acting through relative actions.

`make_plan(task, env)` yields the expert's (7,) relative actions for a task from the env's current
state; `ExpertPolicy(env)` wraps the experts in CALVIN's policy interface so they run through the
evaluation protocol (`envs.protocol`) like a learned policy. Families: `articulated` (sliding door,
drawer, button, switch) and `blocks` (lift, place, push, rotate, stack, unstack, push into drawer);
`motion` turns TCP waypoints into actions, `workspace` is the privileged view of the scene.
"""

from envs.experts.policy import ExpertPolicy, make_plan

__all__ = ["ExpertPolicy", "make_plan"]
