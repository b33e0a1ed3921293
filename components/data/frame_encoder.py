"""Frames (encoded image bytes) -> VQ codes and CLIP-sized scene images: the work of the `pretokenize` stage.

`EncodeFrames` is the Ray Data actor UDF (it loads the VQ tokenizer once per actor); `encode_blobs` is
the same encoding for one list of images, used by the input-pipeline benchmark's on-the-fly baseline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from components.data.tables import decode_image, encode_png
from model.batches import square_resize, vq_pixels
from model.config import ModelConfig
from model.vq import VQModel, load_vq


def encoder_settings(model_cfg: ModelConfig) -> dict[str, Any]:
    """The model settings the tokens depend on (part of the pretokenize manifest)."""
    return {"vq": dataclasses.asdict(model_cfg.vq), "num_views": model_cfg.num_views,
            "vision_image_size": model_cfg.vision_image_size}


def to_pixels(blobs: Sequence[bytes], size: int) -> torch.Tensor:
    """Image bytes (any sizes) -> (n, 3, size, size) VQ input in [-1, 1], in order."""
    images = [torch.from_numpy(decode_image(b)) for b in blobs]
    out = torch.empty(len(images), 3, size, size)
    shapes: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):  # same-size images resize together
        shapes.setdefault(tuple(image.shape), []).append(i)
    for rows in shapes.values():
        out[rows] = vq_pixels(torch.stack([images[i] for i in rows]), size)
    return out


def encode_blobs(tok: VQModel, blobs: Sequence[bytes]) -> np.ndarray:
    """Image bytes -> (n, tokens_per_image) int16 raw codes, encoded on the tokenizer's device."""
    if not blobs:
        return np.zeros((0, tok.grid**2), dtype=np.int16)
    device = next(tok.parameters()).device
    return tok.encode(to_pixels(blobs, tok.cfg.image_size).to(device)).cpu().numpy().astype(np.int16)


def scene_png(blob: bytes, size: int) -> bytes:
    """A frame resized (centre crop, bicubic) to the CLIP input size, as PNG."""
    x = square_resize(torch.from_numpy(decode_image(blob))[None], size)[0]
    return encode_png((x * 255).round().byte().permute(1, 2, 0).numpy())


def _codes_column(codes: np.ndarray, present: list[bool]) -> pa.Array:
    """(k, N) codes for the `present` rows -> a list column with nulls elsewhere."""
    values, it = [], iter(codes.tolist())
    for ok in present:
        values.append(next(it) if ok else None)
    return pa.array(values, type=pa.list_(pa.int16()))


class EncodeFrames:
    """Ray Data UDF: a pyarrow batch of frame rows -> rows of the tokens table (see `TOKENS_SCHEMA`)."""

    def __init__(self, vq_dir: str | Path, model_cfg: ModelConfig, threads: int = 1, device: str = "cpu") -> None:
        torch.set_num_threads(threads)
        self.tok = load_vq(vq_dir, map_location=device).eval()
        if self.tok.cfg != model_cfg.vq:
            raise ValueError(f"pretokenize: {vq_dir} holds {self.tok.cfg}, but model.vq is {model_cfg.vq}")
        self.cfg = model_cfg

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Encode the static (and, with num_views = 2, gripper) view; add scene images where described."""
        static = encode_blobs(self.tok, batch.column("rgb_static").to_pylist())
        gripper_blobs = batch.column("rgb_gripper").to_pylist()
        has_gripper = [b is not None and self.cfg.num_views == 2 for b in gripper_blobs]
        gripper = encode_blobs(self.tok, [b for b, ok in zip(gripper_blobs, has_gripper, strict=True) if ok])
        described = [d is not None for d in batch.column("description").to_pylist()]
        scenes = [scene_png(b, self.cfg.vision_image_size) if ok else None
                  for b, ok in zip(batch.column("rgb_static").to_pylist(), described, strict=True)]
        columns = {name: batch.column(name) for name in ("dataset", "split", "episode", "step", "shard", "position")}
        columns |= {"static_codes": pa.array(static.tolist(), type=pa.list_(pa.int16())),
                    "gripper_codes": _codes_column(gripper, has_gripper),
                    "actions": batch.column("actions"), "description": batch.column("description"),
                    "scene_image": pa.array(scenes, type=pa.binary())}
        return pa.table(columns)
