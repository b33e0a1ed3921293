"""Load the published Show-o transformer folder (`show-o-w-clip-vit-512x512`, `show-o-w-clip-vit`, `show-o`) unchanged.

The folder is Show-o's own (`Showo.save_pretrained`), not a transformers one:

    config.json                {"_class_name": "Showo", "vocab_size": 58498, "llm_vocab_size": 50295,
                                "codebook_size": 8192, "num_vq_tokens": 1024, "mask_token_id": 58497,
                                "w_clip_vit": true, "llm_model_path": "microsoft/phi-1_5", ...}
    pytorch_model.safetensors  fp32 (or pytorch_model.bin, read with torch.load(weights_only=True))

`showo.model.*` and `showo.lm_head.{weight,bias}` are a transformers `PhiForCausalLM` with `qk_layernorm`
(Show-o's Phi forces it: a LayerNorm over each head's queries and keys in every layer); with `w_clip_vit`,
`mm_projector.{0,2}.{weight,bias}` is the CLIP projector Linear -> exact GELU -> Linear, i.e.
`VLAModel.projector.{0,2}`. Rotary tables are not stored. The Phi architecture is not in the folder (it is
`llm_model_path`'s, Phi-1.5's): it comes from `ModelConfig`, and the hidden size, layer count, heads (from the
q_layernorm width), MLP width and CLIP width are checked against the weight shapes, so a wrong config fails with
the key that disagrees (the rotary fraction, norm eps and rope base leave no trace in the weights).

Show-o's vocabulary is ours up to the action bins (model/vocab.py): T text rows, 10 special tokens, C codes and
the mask token, T + 11 + C rows (58498 at paper scale). All of them are kept; the RT-2 action bins appended after
them start at the mean of the text rows, and nothing else is initialised. Every key of the file is accounted
for (missing, unexpected and mis-shaped keys fail together, naming the file), and tensors are streamed from the
safetensors file one at a time into the model (the published file is 5.8 GB).

    VLAModel.build(cfg)  # cfg.backbone_path = the folder, backbone_init unified, qk_layernorm true
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import PhiForCausalLM

from model.backbone import build_phi, phi_config, reset_rows
from model.config import ModelConfig
from model.vocab import SPECIAL_TOKENS, TokenLayout
from model.weights_io import Shapes, check_keys, open_state

CONFIG_NAME = "config.json"
# searched in this order; Show-o's ModelMixin writes the first, older exports the second
WEIGHT_NAMES = ("pytorch_model.safetensors", "pytorch_model.bin")
SHOWO_CLASS, PHI_PREFIX, PROJECTOR_PREFIX = "Showo", "showo.", "mm_projector."
# Phi parameters indexed by token id: Show-o's rows are copied, our appended rows start at the text-row mean
VOCAB_KEYS = ("model.embed_tokens.weight", "lm_head.weight", "lm_head.bias")
LAYER_KEY = re.compile(r"showo\.model\.layers\.(\d+)\.")


@dataclasses.dataclass(frozen=True)
class ShowoConfig:
    """The fields of a Show-o config.json the weights depend on (other fields are Show-o's and ignored)."""

    # rows of embed_tokens and lm_head: llm_vocab_size + 10 special tokens + codebook_size + 1 mask
    vocab_size: int
    # text tokens of the Phi-1.5 tokenizer (50295)
    llm_vocab_size: int
    # VQ codes (MagVIT-v2: 8192)
    codebook_size: int
    # VQ codes per image (512 px: 1024); not a weight shape
    num_vq_tokens: int
    # Show-o's mask token, the last row
    mask_token_id: int
    # the folder carries the CLIP projector (`mm_projector.*`)
    w_clip_vit: bool
    # the LLM whose architecture the weights have (not read: ModelConfig holds it)
    llm_model_path: str


@dataclasses.dataclass(frozen=True)
class ShowoWeights:
    """A loaded Show-o folder.

    Attributes:
        backbone: the Phi LM resized to the unified vocabulary.
        projector: `VLAModel.projector`'s state dict ("0.weight", "0.bias", "2.weight", "2.bias"); empty
            without `w_clip_vit`.
        config: the folder's config.json.
    """

    backbone: PhiForCausalLM
    projector: dict[str, Tensor]
    config: ShowoConfig


def is_showo_folder(folder: str | Path) -> bool:
    """Whether `folder` has a config.json written by Show-o (`_class_name: "Showo"`)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return False
    raw = _read_json(path)
    return isinstance(raw, dict) and raw.get("_class_name") == SHOWO_CLASS


def read_showo_config(folder: str | Path) -> ShowoConfig:
    """Read and type-check a Show-o folder's config.json.

    Raises:
        FileNotFoundError: the folder has no config.json.
        ValueError: naming the file and the keys, when it is not Show-o's or a field is missing or mistyped.
    """
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"model.backbone_path: {folder} has no {CONFIG_NAME} (not a Show-o folder)")
    raw = _read_json(path)
    if not isinstance(raw, dict) or raw.get("_class_name") != SHOWO_CLASS:
        found = raw.get("_class_name") if isinstance(raw, dict) else raw
        raise ValueError(f"{path}: _class_name: expected {SHOWO_CLASS!r}, got {found!r} (not a Show-o folder)")
    kinds = {"int": int, "bool": bool, "str": str}
    bad = [f"{f.name} (expected {f.type}, got {raw.get(f.name, 'nothing')!r})" for f in dataclasses.fields(ShowoConfig)
           if type(raw.get(f.name)) is not kinds[f.type]]
    if raw.get("num_new_special_tokens", len(SPECIAL_TOKENS)) != len(SPECIAL_TOKENS):
        bad.append(f"num_new_special_tokens (expected {len(SPECIAL_TOKENS)}, as model/vocab.py, got "
                   f"{raw['num_new_special_tokens']!r})")
    if bad:
        raise ValueError(f"{path}: missing or mistyped field(s): {', '.join(bad)}")
    return ShowoConfig(**{f.name: raw[f.name] for f in dataclasses.fields(ShowoConfig)})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def check_showo_config(path: Path, showo: ShowoConfig, cfg: ModelConfig) -> None:
    """Check that a Show-o config.json (at `path`) fits the model config's vocabulary and attention.

    Raises:
        ValueError: naming the file and the key that disagrees.
    """
    if not cfg.qk_layernorm:
        raise ValueError(f"model.qk_layernorm: false, but {path.parent} is a Show-o folder, whose Phi has a "
                         f"LayerNorm on queries and keys in every layer; set model.qk_layernorm: true")
    layout = TokenLayout.from_config(cfg)
    if showo.llm_vocab_size != cfg.text_vocab_size:
        raise ValueError(f"model.text_vocab_size: {cfg.text_vocab_size}, but {path} has llm_vocab_size "
                         f"{showo.llm_vocab_size}")
    if showo.codebook_size != cfg.vq.codebook_size:
        raise ValueError(f"model.vq.codebook_bits: {cfg.vq.codebook_bits} ({cfg.vq.codebook_size} codes), but {path} "
                         f"has codebook_size {showo.codebook_size}")
    if showo.vocab_size != layout.bin_offset:
        raise ValueError(f"{path}: vocab_size: {showo.vocab_size}, but Show-o's layout (model/vocab.py) has "
                         f"llm_vocab_size + {len(SPECIAL_TOKENS) + 1} + codebook_size = {layout.bin_offset} rows")
    if showo.mask_token_id != layout.mask_id:
        raise ValueError(f"{path}: mask_token_id: {showo.mask_token_id}, but the mask token is the last row, "
                         f"{layout.mask_id}")


def showo_weights_file(folder: str | Path) -> Path:
    """The weights file of a Show-o folder (safetensors preferred over .bin)."""
    for name in WEIGHT_NAMES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise FileNotFoundError(f"model.backbone_path: {folder} has none of {list(WEIGHT_NAMES)}")


def expected_shapes(cfg: ModelConfig, showo: ShowoConfig) -> Shapes:
    """Every key of a Show-o weights file at the model config's sizes, with its shape."""
    with torch.device("meta"):  # names and shapes only: nothing is allocated
        phi = PhiForCausalLM(phi_config(cfg, showo.vocab_size))
    shapes = {PHI_PREFIX + k: tuple(v.shape) for k, v in phi.state_dict().items()}
    if showo.w_clip_vit:
        hidden, vision = cfg.hidden_size, cfg.vision_hidden_size
        shapes.update({f"{PROJECTOR_PREFIX}0.weight": (hidden, vision), f"{PROJECTOR_PREFIX}0.bias": (hidden,),
                       f"{PROJECTOR_PREFIX}2.weight": (hidden, hidden), f"{PROJECTOR_PREFIX}2.bias": (hidden,)})
    return shapes


def load_showo(folder: str | Path, cfg: ModelConfig, vocab_size: int, keep_rows: int, *,
               into: PhiForCausalLM | None = None) -> ShowoWeights:
    """Load a published Show-o folder into a Phi LM of the unified vocabulary, and its CLIP projector.

    Args:
        folder: the Show-o folder (config.json + pytorch_model.safetensors or .bin).
        cfg: the model config; `qk_layernorm` must be true and the sizes must match the weights.
        vocab_size: rows of the unified vocabulary (at least Show-o's).
        keep_rows: leading rows kept from the checkpoint (ours: all of Show-o's); the rest start at the
            mean of the text rows.
        into: a `build_phi(cfg, vocab_size)` backbone to overwrite in place (every parameter is written),
            so a second 1.4 B model is never allocated; None builds one.

    Raises:
        FileNotFoundError: config.json or the weights file is missing.
        ValueError: naming the file and the key, for a config that does not fit, or listing every missing,
            unexpected and mis-shaped key of the weights.
    """
    folder = Path(folder)
    showo = read_showo_config(folder)
    check_showo_config(folder / CONFIG_NAME, showo, cfg)
    path = showo_weights_file(folder)
    shapes, read = open_state(path)
    return load_showo_state(path, shapes, read, showo, cfg, vocab_size, keep_rows, into=into)


def load_showo_state(path: Path, shapes: Shapes, read: Callable[[str], Tensor], showo: ShowoConfig,
                     cfg: ModelConfig, vocab_size: int, keep_rows: int, *,
                     into: PhiForCausalLM | None = None) -> ShowoWeights:
    """`load_showo` on an opened weights file (`model.weights_io.open_state`) holding exactly Show-o's keys.

    UP-VLA's tuned checkpoint is such a file plus its action head: its loader passes the Show-o part here.
    `showo` must already be checked against `cfg` (`check_showo_config`).
    """
    if vocab_size < showo.vocab_size:
        raise ValueError(f"vocab_size: {vocab_size} rows, fewer than the {showo.vocab_size} of {path}")
    check_sizes(path, shapes, cfg)
    expected = expected_shapes(cfg, showo)
    check_keys(path, shapes, expected, "a Show-o model at model's sizes")
    phi = build_phi(cfg, vocab_size) if into is None else into
    if phi.config.vocab_size != vocab_size:
        raise ValueError(f"vocab_size: {vocab_size}, but the backbone to load into has {phi.config.vocab_size} rows")
    keep = min(keep_rows, showo.vocab_size)
    projector = _copy_weights(phi, read, list(expected), keep)
    reset_rows(phi, start=keep, text_rows=cfg.text_vocab_size)
    return ShowoWeights(backbone=phi, projector=projector, config=showo)


def check_sizes(path: Path, shapes: Shapes, cfg: ModelConfig) -> None:
    """Compare the architecture the weights imply with the config's (a key too broken to read: `check_keys`)."""
    found: dict[str, tuple[int, int, str]] = {}  # config key -> (ours, the file's, where it was read)
    embed = shapes.get("showo.model.embed_tokens.weight", ())
    if len(embed) == 2:
        found["hidden_size"] = (cfg.hidden_size, embed[1], "showo.model.embed_tokens.weight")
    layers = {int(m.group(1)) for k in shapes if (m := LAYER_KEY.match(k))}
    if layers:
        found["num_layers"] = (cfg.num_layers, max(layers) + 1, "the layer indices of showo.model.layers.N")
    q_norm = shapes.get("showo.model.layers.0.self_attn.q_layernorm.weight", ())
    if len(embed) == 2 and len(q_norm) == 1 and q_norm[0] and embed[1] % q_norm[0] == 0:
        found["num_heads"] = (cfg.num_heads, embed[1] // q_norm[0],
                              f"head dim {q_norm[0]} of showo.model.layers.0.self_attn.q_layernorm.weight")
    fc1 = shapes.get("showo.model.layers.0.mlp.fc1.weight", ())
    if len(fc1) == 2:
        found["intermediate_size"] = (cfg.intermediate_size, fc1[0], "showo.model.layers.0.mlp.fc1.weight")
    projector = shapes.get(f"{PROJECTOR_PREFIX}0.weight", ())
    if len(projector) == 2:
        found["vision_hidden_size"] = (cfg.vision_hidden_size, projector[1], f"{PROJECTOR_PREFIX}0.weight")
    for key, (ours, theirs, where) in found.items():
        if ours != theirs:
            raise ValueError(f"model.{key}: {ours}, but the checkpoint {path} has {theirs} ({where})")


@torch.no_grad()
def _copy_weights(phi: PhiForCausalLM, read: Callable[[str], Tensor], keys: list[str], keep: int) -> dict[str, Tensor]:
    """Copy every key into `phi` (vocabulary rows [0, keep) only); return the projector's tensors."""
    targets, projector = phi.state_dict(), {}  # the state dict's tensors share the parameters' storage
    names = {k.removeprefix(PHI_PREFIX) for k in keys if k.startswith(PHI_PREFIX)}
    if names != set(targets):  # only a backbone of another architecture passed as `into` gets here
        raise ValueError(f"the backbone to load into does not have Show-o's parameters: it lacks "
                         f"{sorted(names - set(targets))} and has {sorted(set(targets) - names)} besides")
    for key in keys:
        tensor = read(key)
        if key.startswith(PROJECTOR_PREFIX):
            projector[key.removeprefix(PROJECTOR_PREFIX)] = tensor.to(torch.float32).contiguous()
            continue
        name = key.removeprefix(PHI_PREFIX)
        if name in VOCAB_KEYS:
            targets[name][:keep].copy_(tensor[:keep])
        else:
            targets[name].copy_(tensor)
    return projector
