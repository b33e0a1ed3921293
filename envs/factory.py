"""`make_env(cfg)`: the environment named by the `env:` section of params.yaml.

A plain dict registry maps `EnvConfig.name` to a constructor; every constructor returns an object
with CALVIN's interface (`envs.base.SimEnv`). The real Franka lives in `envs/franka` and is built
by its own workflow, not here.

Example:
    env = make_env(cfg.env)                             # the evaluation scene (D)
    env = make_env(cfg.env, scene="A", cameras=False)   # a training scene, state only
"""

from __future__ import annotations

from collections.abc import Callable

from envs.base import SimEnv
from envs.config import EnvConfig


def _make_playtable(cfg: EnvConfig, scene: str, cameras: bool, seed: int) -> SimEnv:
    from envs.playtable import PlayTableEnv

    return PlayTableEnv(scene, cameras=cameras, seed=seed)


def _make_calvin(cfg: EnvConfig, scene: str, cameras: bool, seed: int) -> SimEnv:
    from envs.calvin import CalvinEnv

    return CalvinEnv(cfg.calvin_dataset_path, cameras=cameras)


ENV_REGISTRY: dict[str, Callable[[EnvConfig, str, bool, int], SimEnv]] = {
    "playtable": _make_playtable,
    "calvin": _make_calvin,
}


def make_env(cfg: EnvConfig, *, scene: str | None = None, cameras: bool = True, seed: int = 0) -> SimEnv:
    """Build the environment `cfg.name`.

    Args:
        cfg: the `env:` section.
        scene: PlayTable scene preset overriding `cfg.scene` (the real CALVIN env takes its scene
            from the dataset's config).
        cameras: render the static and gripper cameras (False: state-only).
        seed: seed of argument-less resets (PlayTable).
    """
    if cfg.name not in ENV_REGISTRY:
        raise ValueError(f"env.name: unknown environment {cfg.name!r} (known: {sorted(ENV_REGISTRY)})")
    return ENV_REGISTRY[cfg.name](cfg, scene or cfg.scene, cameras, seed)
