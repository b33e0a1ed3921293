"""The real Franka Panda/FR3 (franky) with RealSense cameras, behind CALVIN's environment interface.

`FrankaEnv` (env.py) is the entry point; `FrankaConfig` (config.py) its configuration; geometry.py
holds the action -> safe target math, robot.py the franky connection, camera.py the RealSense streams.
franky and pyrealsense2 are imported lazily, so this package imports without the robot extra.
"""

from envs.franka.camera import CameraError, CameraFrame, RealSenseCamera, list_cameras, square_resize
from envs.franka.config import CameraConfig, FrankaConfig
from envs.franka.env import FrankaEnv, OperatorAbort, SafetyError
from envs.franka.geometry import Pose, StepPlan, check_action, plan_step
from envs.franka.robot import RobotConnectionError, RobotFaultError, probe_fci

__all__ = [
    "CameraConfig", "CameraError", "CameraFrame", "FrankaConfig", "FrankaEnv", "OperatorAbort", "Pose",
    "RealSenseCamera", "RobotConnectionError", "RobotFaultError", "SafetyError", "StepPlan", "check_action",
    "list_cameras", "plan_step", "probe_fci", "square_resize",
]
