"""The real Franka Panda/FR3 (franky) with RealSense cameras, behind CALVIN's environment interface.

`FrankaEnv` (env.py) is the entry point; `FrankaConfig` (config.py) its configuration; geometry.py
holds the action -> safe target math, robot.py the franky connection, camera.py the RealSense streams.
franky and pyrealsense2 are imported lazily, so this package imports without the robot extra.

Import from the modules (`from envs.franka.env import FrankaEnv`): this file imports nothing, so the
project config, which reads `envs.franka.config`, does not pull the robot code into every pipeline stage.
"""
