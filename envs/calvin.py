"""Adapter to the real CALVIN simulator (`calvin_env`, github.com/mees/calvin_env), when installed.

`CalvinEnv(dataset_path)` builds CALVIN's own `PlayTableSimEnv` from a CALVIN dataset's
`.hydra/merged_config.yaml` (as CALVIN's `get_env` does) and exposes the interface of
`envs/base.py`, so `envs.protocol` evaluates a policy on the real benchmark with the same code as
on PlayTable. Two of CALVIN's traps are avoided: only the static and gripper cameras are built
(CALVIN's `make_env` also builds the tactile camera, which needs `tacto`), and actions are copied
before CALVIN's robot scales them in place. `calvin_env` is not on PyPI; importing it lazily keeps
this module importable without it, and constructing a `CalvinEnv` then says how to install it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from envs.playtable.env import parse_action

INSTALL_HINT = (
    "the real CALVIN simulator (`calvin_env`) is not installed; it is not on PyPI. Install it from a git "
    "checkout, editable (it finds its data/ and conf/ through the source tree, and needs to be a git repo):\n"
    "    git clone --recursive https://github.com/mees/calvin_env && pip install -e calvin_env\n"
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


class CalvinEnv:
    """CALVIN's `PlayTableSimEnv` behind `envs.base.SimEnv`."""

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
        self.env = hydra.utils.instantiate(config.env, show_gui=False, use_vr=False, use_scene_info=True)

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
        """Disconnect CALVIN's physics client."""
        self.env.close()
