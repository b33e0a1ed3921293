"""Proprioception input (`model.proprio`): the robot's own state conditions the action queries.

UP-VLA reads no robot state: its actions come from the images and the instruction alone, and the paper
profile keeps it so. This option adds the state many VLAs read (GR-1, Octo); the CPU default turns it on,
because at 64 px it raised the articulated single-task trials (benchmarks/README.md, "Levers"):
CALVIN's `robot_obs`, embedded by a small MLP and added to the input
embedding of every action query (`<|act|>`). Only the action path reads it; the image rows never see the
queries, so future-frame prediction is unchanged.

    robot_obs (15,)  TCP position (3), TCP euler xyz (3), gripper opening width (1), arm joints (7),
                     gripper action (1): CALVIN's layout, also what envs.franka measures on the robot
    features  (18,)  position, sin and cos of each euler angle (no jump where an angle wraps at +-pi),
                     width, joints, gripper action; standardised per feature with the training data's
                     mean and std (buffers saved with the weights, set by `ProprioEncoder.set_stats`)

`model.proprio_gripper: false` zeroes the two gripper features (width, last command) after standardising: the
encoder keeps its shape (a checkpoint's weights load either way) and reads the arm's pose and joints only. A
policy that reads its own last gripper command can learn to repeat it (right on nearly every training frame)
instead of learning when to close from the images.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ROBOT_OBS_DIM = 15
NUM_FEATURES = 18
GRIPPER_FEATURES = (9, 17)  # the opening width and the last gripper command, in `proprio_features`' order


def proprio_features(robot_obs: Tensor) -> Tensor:
    """(..., 15) CALVIN robot_obs -> (..., 18) features (see the module docstring), float32."""
    if robot_obs.shape[-1] != ROBOT_OBS_DIM:
        raise ValueError(f"robot_obs: expected {ROBOT_OBS_DIM} values per row (CALVIN's layout), "
                         f"got shape {tuple(robot_obs.shape)}")
    x = robot_obs.float()
    euler = x[..., 3:6]
    return torch.cat([x[..., :3], euler.sin(), euler.cos(), x[..., 6:]], dim=-1)


class ProprioEncoder(nn.Module):
    """robot_obs -> (B, D) embedding added to the action queries: standardise, then Linear-GELU-Linear.

    The last layer starts at zero, so a fresh encoder leaves the model exactly as it was without it.
    With `gripper=False` the gripper features are zeroed after standardising (`model.proprio_gripper`).
    """

    def __init__(self, dim: int, gripper: bool = True):
        super().__init__()
        self.register_buffer("mean", torch.zeros(NUM_FEATURES))
        self.register_buffer("std", torch.ones(NUM_FEATURES))
        keep = torch.ones(NUM_FEATURES)
        if not gripper:
            keep[list(GRIPPER_FEATURES)] = 0.0
        self.register_buffer("keep", keep, persistent=False)  # from the config, not saved with the weights
        self.mlp = nn.Sequential(nn.Linear(NUM_FEATURES, dim), nn.GELU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        """Store the training data's per-feature mean and std ((18,) each, finite, std > 0)."""
        shape = self.mean.shape
        if mean.shape != shape or std.shape != shape:
            raise ValueError(f"proprio stats: expected mean and std of shape {tuple(shape)}, got "
                             f"{tuple(mean.shape)} and {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError(f"proprio stats: need finite values and std > 0, got mean {mean.tolist()}, "
                             f"std {std.tolist()}")
        with torch.no_grad():
            self.mean.copy_(mean)
            self.std.copy_(std)

    def forward(self, robot_obs: Tensor) -> Tensor:
        """(B, 15) robot_obs -> (B, D) in the encoder's weight dtype."""
        x = (proprio_features(robot_obs) - self.mean.float()) / self.std.float() * self.keep
        return self.mlp(x.to(self.mlp[0].weight.dtype))
