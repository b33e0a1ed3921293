"""Batch types the model consumes and the helpers that build them from raw data.

The data pipeline (components/data/) pre-tokenizes frames to VQ codes and collates `RobotBatch` / `MMUBatch`;
the policy (components/evaluation/policy.py) builds a `RobotBatch` without targets from camera frames every
chunk_len steps.
Text ids are raw text-tokenizer ids right-padded with the layout's `[PAD]` id (`TokenLayout.pad_id`);
codes are raw codebook indices in [0, codebook_size) (the model adds the vocabulary offset).

    frames (B, 200, 200, 3) uint8 --vq_pixels--> (B, 3, 64, 64) in [-1, 1] --VQTokenizer.encode--> codes
    frames (B, 200, 200, 3) uint8 --clip_pixels--> (B, 3, 64, 64) CLIP-normalised (scene_pixels, MMU)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# OpenAI CLIP's input normalisation (the CLIP checkpoints at paper scale expect it)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IGNORE = -100


def _to_device(obj, device: torch.device | str):
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return type(obj)(**{k: v.to(device) if isinstance(v, Tensor) else v for k, v in values.items()})


@dataclass
class RobotBatch:
    """Prediction/action samples (PRE + ACT terms), or policy inputs when the targets are None.

    Attributes:
        instruction_ids: (B, Li) long instruction tokens, [PAD]-padded.
        current_codes: (B, V*N) long codes of the current frame (views concatenated: static, gripper).
        future_codes: (B, V*N) long codes delta_t steps ahead; needed only when λ_PRE > 0.
        actions: (B, k, 7) float chunk a_t..a_{t+k-1}; needed only when λ_ACT > 0.
        action_mask: (B, k) bool, False past the end of the demonstration; None = all valid.
        scene_pixels: (B, 3, s, s) CLIP-normalised current static frame; with `description_ids`, turns on
            the MMU-conditioned prompt (the paper's L'). None = the plain prompt L.
        description_ids: (B, Ld) long scene description, [PAD]-padded (no eos): the ground truth in
            training, `VLAModel.generate_description` at inference.
        robot_obs: (B, 15) float CALVIN robot_obs of the current frame; needed for actions when the model
            reads proprioception (`model.proprio`).
    """

    instruction_ids: Tensor
    current_codes: Tensor
    future_codes: Tensor | None = None
    actions: Tensor | None = None
    action_mask: Tensor | None = None
    scene_pixels: Tensor | None = None
    description_ids: Tensor | None = None
    robot_obs: Tensor | None = None

    def __post_init__(self) -> None:
        if (self.scene_pixels is None) != (self.description_ids is None):
            raise ValueError("RobotBatch: scene_pixels and description_ids go together (the MMU-conditioned prompt)")

    @property
    def conditioned(self) -> bool:
        """Whether the prompt carries the CLIP tokens and the scene description."""
        return self.scene_pixels is not None

    def to(self, device: torch.device | str) -> RobotBatch:
        """A copy with every tensor on `device`."""
        return _to_device(self, device)


@dataclass
class MMUBatch:
    """Understanding samples (L_MMU): an image and a right-padded conversation.

    Attributes:
        pixel_values: (B, 3, s, s) CLIP-normalised images.
        input_ids: (B, Lt) long text (prompt + answer + eos), [PAD]-padded on the right.
        labels: (B, Lt) long, the answer tokens (and eos) where trained, -100 elsewhere.
    """

    pixel_values: Tensor
    input_ids: Tensor
    labels: Tensor

    def to(self, device: torch.device | str) -> MMUBatch:
        """A copy with every tensor on `device`."""
        return _to_device(self, device)


@dataclass
class TrainBatch:
    """One training micro-batch: robot samples and/or understanding samples (separate forwards)."""

    robot: RobotBatch | None = None
    mmu: MMUBatch | None = None

    def to(self, device: torch.device | str) -> TrainBatch:
        """A copy with every tensor on `device`."""
        return TrainBatch(None if self.robot is None else self.robot.to(device),
                          None if self.mmu is None else self.mmu.to(device))


@dataclass
class Prediction:
    """One replan for a batch of environments.

    Attributes:
        actions: (B, k, 7) CALVIN relative actions: pose in [-1, 1], gripper in {-1, 1}; None when
            only the future frame was asked for.
        future_codes: (B, V*N) long predicted codes of the frame delta_t ahead.
        future_images: (B, V, 3, S, S) in [-1, 1], only when decoding was asked for.
    """

    actions: Tensor | None
    future_codes: Tensor
    future_images: Tensor | None = None


def square_resize(frames: Tensor, size: int) -> Tensor:
    """(B, H, W, 3) uint8 camera frames -> (B, 3, size, size) float in [0, 1]: centre crop, bicubic resize."""
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames (B, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[..., top:top + side, left:left + side]
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp(0.0, 1.0)


def vq_pixels(frames: Tensor, size: int) -> Tensor:
    """Camera frames -> VQ tokenizer input (B, 3, size, size) in [-1, 1] (size = vq.image_size)."""
    return square_resize(frames, size) * 2 - 1


def clip_pixels(frames: Tensor, size: int) -> Tensor:
    """Camera frames -> CLIP input (B, 3, size, size), CLIP-normalised (size = vision_image_size)."""
    x = square_resize(frames, size)
    mean = x.new_tensor(CLIP_MEAN)[:, None, None]
    std = x.new_tensor(CLIP_STD)[:, None, None]
    return (x - mean) / std


def pad_ids(seqs: Sequence[Sequence[int]], pad_id: int, length: int | None = None) -> Tensor:
    """Right-pad id lists into a (B, length) long tensor (length defaults to the longest)."""
    length = max((len(s) for s in seqs), default=0) if length is None else length
    out = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s) > length:
            raise ValueError(f"sequence {i} has {len(s)} tokens, more than the padded length {length}")
        out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out


def mmu_example(prompt_ids: Sequence[int], answer_ids: Sequence[int], eos_id: int) -> tuple[list[int], list[int]]:
    """One understanding sample: ids = prompt + answer + eos; labels train the answer and the eos only."""
    ids = [*prompt_ids, *answer_ids, eos_id]
    labels = [IGNORE] * len(prompt_ids) + [*answer_ids, eos_id]
    return ids, labels
