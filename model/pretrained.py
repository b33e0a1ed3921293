"""Checkpoint folders of `VLAModel`: safetensors + JSON config (never pickle), and the initial build.

A folder written by `save_pretrained`:

    config.json          {"format": "upvla", "version": 1, "eos_id": ..., "model": <ModelConfig as JSON>}
    model.safetensors    every parameter and persistent buffer (frozen VQ tokenizer and vision tower included)
    tokenizer/           the text tokenizer (transformers fast-tokenizer files), when the model carries one

`VLAModel.build(cfg, ...)` is the start of training: random init at the config's sizes, then the local
Phi folder (`backbone_path` for `backbone_init: unified`, `llm_path` for `llm`) and CLIP folder
(`vision_path`) when they are set, and the trained VQ tokenizer when given.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from model.backbone import load_phi, load_vision_tower
from model.config import ModelConfig, VQConfig
from model.vocab import load_text_tokenizer

if TYPE_CHECKING:
    from model.vla import VLAModel
    from model.vq_tokenizer import VQTokenizer

FORMAT, VERSION = "upvla", 1
CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_DIR = "config.json", "model.safetensors", "tokenizer"


def config_from_dict(raw: dict) -> ModelConfig:
    """Rebuild a `ModelConfig` from its JSON form (unknown or missing fields raise TypeError)."""
    fields = dict(raw)
    fields["vq"] = VQConfig(**fields["vq"])
    cfg = ModelConfig(**fields)
    cfg.validate()
    return cfg


class PretrainedMixin:
    """save_pretrained / from_pretrained / build for `VLAModel`."""

    def save_pretrained(self: VLAModel, folder: str | Path) -> None:
        """Write the checkpoint folder described in the module docstring."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "version": VERSION, "eos_id": self.layout.eos_id,
                "model": dataclasses.asdict(self.cfg)}
        (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": FORMAT})
        if self.text_tokenizer is not None:
            self.text_tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> VLAModel:
        """Load a folder written by `save_pretrained` (weights strictly; the tokenizer when present)."""
        folder = Path(folder)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder}: missing {name} (not a VLAModel checkpoint folder)")
        meta = json.loads((folder / CONFIG_NAME).read_text())
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"{folder / CONFIG_NAME}: not a {FORMAT} v{VERSION} checkpoint")
        cfg = config_from_dict(meta["model"])
        model = cls(cfg, eos_id=meta["eos_id"])
        missing, unexpected = model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)), strict=False)
        if missing or unexpected:
            raise ValueError(f"{folder / WEIGHTS_NAME}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        if (folder / TOKENIZER_DIR).is_dir():
            model.text_tokenizer = load_text_tokenizer(folder / TOKENIZER_DIR, cfg.text_vocab_size)
        return model.to(map_location)

    @classmethod
    def build(cls, cfg: ModelConfig, *, vq: VQTokenizer | None = None, text_tokenizer=None) -> VLAModel:
        """The model at the start of training (see the module docstring).

        Args:
            cfg: the model config; local folder paths in it are loaded, null ones stay random.
            vq: the trained VQ tokenizer (the `tokenizer` stage's output); None keeps a random one.
            text_tokenizer: the text tokenizer (its eos id is used); saved with every checkpoint.
        """
        eos = None if text_tokenizer is None else text_tokenizer.eos_token_id
        if text_tokenizer is not None and len(text_tokenizer) != cfg.text_vocab_size:
            raise ValueError(f"model.text_vocab_size: {cfg.text_vocab_size}, but the tokenizer has "
                             f"{len(text_tokenizer)} ids")
        model = cls(cfg, eos_id=eos)
        path = cfg.backbone_path if cfg.backbone_init == "unified" else cfg.llm_path
        if path is not None:
            # a unified checkpoint shares our layout up to the action bins; an LLM only its text rows
            keep = model.layout.bin_offset if cfg.backbone_init == "unified" else cfg.text_vocab_size
            model.backbone = load_phi(path, cfg, model.layout.vocab_size, keep)
        if cfg.vision_path is not None:
            model.vision = load_vision_tower(cfg.vision_path, cfg).requires_grad_(not cfg.freeze_vision)
        if vq is not None:
            if vq.cfg != cfg.vq:
                raise ValueError(f"model.vq: {cfg.vq}, but the given VQ tokenizer has {vq.cfg}")
            model.vq.load_state_dict(vq.state_dict())
        model.text_tokenizer = text_tokenizer
        return model

