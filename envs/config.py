"""Environment configuration (the `env:` section of params.yaml).

Plain frozen dataclass; `components.core.config` loads it from YAML and checks types, and
`validate()` raises ``ValueError("field: reason")`` for rules a type cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SCENES = ("A", "B", "C", "D")


@dataclass(frozen=True)
class EnvConfig:
    """Which simulator or robot the evaluation and collection talk to."""

    # `playtable`: our pybullet re-creation of CALVIN; `calvin`: the real calvin_env, if installed
    name: Literal["playtable", "calvin"]
    # scene preset used for evaluation (CALVIN ABC->D evaluates in D)
    scene: Literal["A", "B", "C", "D"]
    # real CALVIN dataset folder holding .hydra/merged_config.yaml (only for name: calvin)
    calvin_dataset_path: str | None

    def validate(self) -> None:
        """Cross-field checks."""
        if self.name == "calvin" and not self.calvin_dataset_path:
            raise ValueError("calvin_dataset_path: required when name is 'calvin'")
