"""The VQ image tokenizer `VQConfig.arch` selects, built or loaded: our `compact` one or Show-o's `magvitv2`.

    vq = build_vq(cfg.vq)                               # random weights (VLAModel; the tokenizer stage fits compact)
    vq = load_vq("artifacts/vq")                        # our folder (vq_config.json + vq.safetensors), either arch
    vq = load_magvitv2("checkpoints/magvitv2", cfg.vq)  # Show-o's published folder (specs/published-weights.md §2)

A published folder is config.json (`_class_name` MAGVITv2, no arguments: its sizes are fixed) beside
pytorch_model.safetensors or pytorch_model.bin, as Show-o's ModelMixin writes them. Its sizes are read from
X
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model.config import VQConfig
from model.magvit2 import MagvitV2Tokenizer
from model.vq_tokenizer import CONFIG_NAME, VQTokenizer
from model.weights_io import read_state

VQModel = VQTokenizer | MagvitV2Tokenizer
ARCHS: dict[str, type[VQModel]] = {"compact": VQTokenizer, "magvitv2": MagvitV2Tokenizer}
# the files Show-o's ModelMixin writes (models/modeling_utils.py)
PUBLISHED_CONFIG, PUBLISHED_SAFETENSORS, PUBLISHED_BIN = "config.json", "pytorch_model.safetensors", "pytorch_model.bin"
PUBLISHED_CLASS = "MAGVITv2"
# the VQConfig fields a published state dict determines (image_size it does not: the convolutions take any size)
SIZE_FIELDS = ("base_channels", "codebook_bits", "channel_mult", "res_blocks", "decoder_channel_mult",
               "decoder_res_blocks")


def build_vq(cfg: VQConfig) -> VQModel:
    """A randomly initialised tokenizer of `cfg.arch`."""
    return ARCHS[cfg.arch](cfg)


def load_vq(folder: str | Path, map_location: str | torch.device = "cpu") -> VQModel:
    """Load our folder format (written by either class's `save_pretrained`), dispatching on `vq.arch`.

    Folders written before `arch` existed are compact tokenizers.
    """
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        hint = (f"; {folder / PUBLISHED_CONFIG} looks like a published MagVIT-v2 folder: set tokenizer.pretrained "
                "to it and the tokenizer stage converts it") if (folder / PUBLISHED_CONFIG).is_file() else ""
        raise FileNotFoundError(f"{folder}: missing {CONFIG_NAME} (not a VQ tokenizer folder){hint}")
    raw = json.loads(path.read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("vq"), dict):
        raise ValueError(f"{path}: vq: expected a JSON object")
    arch = raw["vq"].get("arch", "compact")
    if arch not in ARCHS:
        raise ValueError(f"{path}: vq.arch: expected one of {list(ARCHS)}, got {arch!r}")
    return ARCHS[arch].from_pretrained(folder, map_location=map_location)


def is_published_magvitv2(folder: str | Path) -> bool:
    """Whether `folder` is in Show-o's layout (config.json, no vq_config.json) rather than ours."""
    return (Path(folder) / PUBLISHED_CONFIG).is_file() and not (Path(folder) / CONFIG_NAME).is_file()


def load_magvitv2(folder: str | Path, cfg: VQConfig) -> MagvitV2Tokenizer:
    """Show-o's published MagVIT-v2 folder -> the tokenizer, on the CPU.

    Args:
        folder: config.json + pytorch_model.safetensors (read first when both exist) or pytorch_model.bin.
        cfg: `model.vq`, arch magvitv2; the sizes the weights hold must equal its sizes.

    Raises:
        FileNotFoundError: no config.json, or neither weights file.
        ValueError: naming the file and the key: a class other than MAGVITv2, a size that disagrees with
            model.vq (naming each model.vq.<field>), missing / unexpected / mis-shaped keys (all in one error),
            or quantiser tables that are not the MSB-first code order.
    """
    folder = Path(folder)
    if cfg.arch != "magvitv2":
        raise ValueError(f"model.vq.arch: {folder} is a published MagVIT-v2 folder, which needs arch magvitv2, "
                         f"got {cfg.arch!r}")
    path = published_weights(folder)
    state = read_state(path)
    found = published_sizes(state)
    wrong = [f"model.vq.{name}: {_shown(getattr(cfg, name))} in the config, but {path} holds {_shown(found[name])}"
             for name in SIZE_FIELDS if name in found and _shown(found[name]) != _shown(getattr(cfg, name))]
    if wrong:
        raise ValueError("; ".join(wrong))
    return MagvitV2Tokenizer(cfg).load_checked(state, path)


def published_sizes(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """The `SIZE_FIELDS` a MagVIT-v2 state dict holds (tuples per level); those it cannot tell are left out.

    A level's width is its first block's conv1 output; its block count, one more than its highest block index.
    """
    found: dict[str, Any] = {}
    if (conv := state.get("encoder.conv_in.weight")) is not None:
        found["base_channels"] = conv.shape[0]
    if (table := state.get("quantize.embedding")) is not None and table.dim() == 2:
        found["codebook_bits"] = table.shape[1]
    if "base_channels" not in found:
        return found
    for side, prefix in (("", "encoder.down"), ("decoder_", "decoder.up")):
        blocks: dict[int, int] = {}
        for key in state:
            if match := re.match(rf"{re.escape(prefix)}\.(\d+)\.(?:block\.(\d+)\.)?", key):
                count = 0 if match[2] is None else int(match[2]) + 1
                blocks[int(match[1])] = max(blocks.get(int(match[1]), 0), count)
        found[f"{side}res_blocks"] = tuple(blocks.get(i, 0) for i in range(max(blocks, default=-1) + 1))
        convs = [state.get(f"{prefix}.{i}.block.0.conv1.weight") for i in range(len(found[f"{side}res_blocks"]))]
        if all(conv is not None for conv in convs):
            ratios = [conv.shape[0] / found["base_channels"] for conv in convs]
            found[f"{side}channel_mult"] = tuple(int(r) if r.is_integer() else r for r in ratios)
    return found


def published_weights(folder: Path) -> Path:
    """Check config.json and return the weights file beside it."""
    config = folder / PUBLISHED_CONFIG
    if not config.is_file():
        raise FileNotFoundError(f"{folder}: missing {PUBLISHED_CONFIG} (not a published MagVIT-v2 folder)")
    raw = json.loads(config.read_text())
    name = raw.get("_class_name") if isinstance(raw, dict) else None
    if not isinstance(name, str) or name.lower() != PUBLISHED_CLASS.lower():
        raise ValueError(f"{config}: _class_name: expected {PUBLISHED_CLASS!r} (Show-o's MagVIT-v2), got {name!r}")
    arguments = sorted(k for k in raw if not k.startswith("_"))
    if arguments:
        raise ValueError(f"{config}: unexpected key(s) {arguments}; {PUBLISHED_CLASS}() takes no arguments")
    for weights in (PUBLISHED_SAFETENSORS, PUBLISHED_BIN):
        if (folder / weights).is_file():
            return folder / weights
    raise FileNotFoundError(f"{folder}: missing {PUBLISHED_SAFETENSORS} or {PUBLISHED_BIN}")


def _shown(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value
