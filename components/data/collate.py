"""Collate dataset samples into the model's batch types (`RobotBatch`, `MMUBatch`), tokenising text.

Instructions and descriptions are the text tokenizer's ids without special tokens, right-padded with
`[PAD]`; a text longer than its budget (model.max_text_len / max_description_len) is an error naming
it, never silently cut. The policy tokenises instructions the same way (`conversation.encode_text`). A
description is tokenised as the MMU path generates it after "... ASSISTANT:" (`answer_text`: with its
leading space), so the ground truth of training and the generated text of inference are the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from components.data.conversation import answer_text, encode_text
from components.data.tables import decode_images
from model.batches import IGNORE, MMUBatch, RobotBatch, clip_pixels, pad_ids
from model.config import ModelConfig
from model.vocab import TokenLayout


def text_ids(tokenizer: Any, texts: Sequence[str], max_len: int, pad_id: int, key: str) -> torch.Tensor:
    """(B, L) long ids of `texts`, [PAD]-padded to the longest (L <= max_len).

    Raises:
        ValueError: a text needs more than `max_len` tokens (`key` names the budget).
    """
    ids = [encode_text(tokenizer, text) for text in texts]
    for text, seq in zip(texts, ids, strict=True):
        if len(seq) > max_len:
            raise ValueError(f"{key}: {text[:80]!r} has {len(seq)} tokens, more than {max_len}")
    return pad_ids(ids, pad_id)


class RobotCollator:
    """`RobotDataset` samples -> `RobotBatch` (fields the samples lack stay None)."""

    def __init__(self, tokenizer: Any, layout: TokenLayout, model: ModelConfig) -> None:
        self.tokenizer, self.pad_id, self.model = tokenizer, layout.pad_id, model

    def __call__(self, samples: Sequence[dict[str, Any]]) -> RobotBatch:
        """Stack, tokenise and pad a list of samples."""
        first = samples[0]
        batch = RobotBatch(
            instruction_ids=text_ids(self.tokenizer, [s["instruction"] for s in samples], self.model.max_text_len,
                                     self.pad_id, "model.max_text_len"),
            current_codes=_stack(samples, "current_codes", torch.long))
        if "future_codes" in first:
            batch.future_codes = _stack(samples, "future_codes", torch.long)
        if "actions" in first:
            batch.actions = _stack(samples, "actions", torch.float32)
            batch.action_mask = _stack(samples, "action_mask", torch.bool)
        if "robot_obs" in first:
            batch.robot_obs = _stack(samples, "robot_obs", torch.float32)
        if "scene_image" in first:
            frames = torch.from_numpy(decode_images(s["scene_image"] for s in samples))
            batch.scene_pixels = clip_pixels(frames, self.model.vision_image_size)
            batch.description_ids = text_ids(self.tokenizer, [answer_text(s["description"]) for s in samples],
                                             self.model.max_description_len, self.pad_id, "model.max_description_len")
        return batch


def _stack(samples: Sequence[dict[str, Any]], key: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.stack([s[key] for s in samples])).to(dtype)


class MMUCollator:
    """`MMUDataset` samples -> `MMUBatch`, text right-padded ([PAD] ids, -100 labels)."""

    def __init__(self, layout: TokenLayout) -> None:
        self.pad_id = layout.pad_id

    def __call__(self, samples: Sequence[dict[str, Any]]) -> MMUBatch:
        """Stack images, pad ids and labels to the longest text."""
        return MMUBatch(pixel_values=torch.stack([s["pixel_values"] for s in samples]),
                        input_ids=pad_ids([s["input_ids"] for s in samples], self.pad_id),
                        labels=pad_ids([s["labels"] for s in samples], IGNORE))
