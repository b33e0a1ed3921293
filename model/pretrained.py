"""Checkpoint folders of `VLAModel`: safetensors + JSON config (never pickle), and the initial build.

A folder written by `save_pretrained`:

    config.json          {"format": "upvla", "version": 2, "eos_id": ..., "model": <ModelConfig as JSON>}
    model.safetensors    every parameter and persistent buffer (frozen VQ tokenizer and vision tower included)
    tokenizer/           the text tokenizer (transformers fast-tokenizer files), when the model carries one

`from_pretrained` reads every version up to `VERSION`: an older folder goes through `MIGRATIONS` in order
(v1 -> v2, ...), each of which rewrites the `model` fields of config.json and fills what the old weights lack
with the values the old code ran with, so the model computes what it computed when it was saved. A folder of
a newer version is refused ("upgrade"). Everything is checked before any tensor is copied: config.json's keys,
every `model` field against its annotation and bounds in model/config.py, then the weights' names and shapes;
each error names the file and the key.

The rule for a change to the saved form (a new `ModelConfig` field, a renamed or new weight): bump `VERSION`
and append a `Migration` from the previous version that gives old checkpoints the value reproducing their
behaviour (a new option: the setting that keeps it off). `tests/fixtures/checkpoints/v1/` is a checkpoint
written by the v1 code with its outputs; every later version must keep loading it and reproduce them.

`VLAModel.build(cfg, ...)` is the start of training: random init at the config's sizes, then the local
Phi folder (`backbone_path` for `backbone_init: unified`, `llm_path` for `llm`) and CLIP folder
(`vision_path`) when they are set, and the trained VQ tokenizer when given.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from model.backbone import load_phi, load_vision_tower
from model.config import COMPACT_VQ, ModelConfig
from model.vocab import load_text_tokenizer
from model.weights_io import check_keys

if TYPE_CHECKING:  # model/vq.py does not import this module: no cycle
    from model.vq import VQModel

FORMAT, VERSION = "upvla", 4
CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_DIR = "config.json", "model.safetensors", "tokenizer"
META_KEYS = ("format", "version", "eos_id", "model")


@dataclasses.dataclass(frozen=True)
class Migration:
    """One step of the format, from `version` to `version + 1`.

    Attributes:
        version: the version this step reads.
        config: the `model` fields of config.json at `version` -> those at `version + 1` (a new dict).
        weights: fills in place what a state dict of `version` lacks, given the loaded (current) config.
    """

    version: int
    config: Callable[[dict[str, Any]], dict[str, Any]]
    weights: Callable[[dict[str, Tensor], ModelConfig], None]


def _v1_config(model: dict[str, Any]) -> dict[str, Any]:
    # v1 covered three ModelConfig generations: fields added without a version bump get the value the
    # code ran with before them. normalize_actions (0fb21f5): the MAP head regressed raw actions;
    # proprio (d17b79d): the action queries read no robot state
    return {"normalize_actions": False, "proprio": False, **model}


def _v1_weights(state: dict[str, Tensor], cfg: ModelConfig) -> None:
    # the pose statistics buffers came with normalize_actions; identity ones are what the older code
    # computed (and are unused while normalize_actions is false)
    state.setdefault("action_mean", torch.zeros(cfg.action_dim - 1))
    state.setdefault("action_std", torch.ones(cfg.action_dim - 1))


def _v2_config(model: dict[str, Any]) -> dict[str, Any]:
    # v3 added the published architectures (Show-o's qk LayerNorm, MagVIT-v2, the reference MAP block and
    # prompt layout); every v2 checkpoint is our own architecture
    vq = model.get("vq")
    if isinstance(vq, dict):
        vq = {**COMPACT_VQ, **vq}
    return {"qk_layernorm": False, "map_variant": "ours", "prompt_layout": "packed", **model, "vq": vq}


def _no_new_weights(state: dict[str, Tensor], cfg: ModelConfig) -> None:
    """A step whose defaults add no parameters (the old architecture is selected)."""


def _v3_config(model: dict[str, Any]) -> dict[str, Any]:
    # v4 added proprio_gripper; every v3 checkpoint that reads proprioception reads the gripper too
    return {"proprio_gripper": True, **model}


# ordered: MIGRATIONS[i] reads version i + 1; a folder of version v goes through MIGRATIONS[v - 1:]
MIGRATIONS: tuple[Migration, ...] = (Migration(1, _v1_config, _v1_weights), Migration(2, _v2_config, _no_new_weights),
                                     Migration(3, _v3_config, _no_new_weights))


def config_from_dict(raw: Any, *, version: int = VERSION, source: str | Path = CONFIG_NAME) -> ModelConfig:
    """Rebuild a `ModelConfig` from its JSON form (`model` in config.json) as saved at `version`.

    Args:
        raw: the `model` object of config.json.
        version: the format version it was written at; older ones are migrated first.
        source: the file it came from, named in errors.

    Raises:
        ValueError: naming `source` and the key, for a newer version, an unknown or missing field, a value
            of the wrong type or out of its bounds, or a failed `validate()`.
    """
    _check_version(version, source)
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: model: expected a JSON object, got {type(raw).__name__}")
    for step in MIGRATIONS[version - 1:]:
        raw = step.config(raw)
    return _build(ModelConfig, raw, "model", source)


def _check_version(version: Any, source: str | Path) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{source}: version: expected an integer >= 1, got {version!r}")
    if version > VERSION:
        raise ValueError(f"{source}: version: {version}, written by a newer version of this code (it reads "
                         f"{FORMAT} v1-v{VERSION}); upgrade to load it")


def _build(cls: type, raw: Any, key: str, source: str | Path) -> Any:
    """Dataclass `cls` from a JSON object: exactly its fields, each checked against its annotation and bounds."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: {key}: expected a JSON object, got {raw!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown, missing = sorted(set(raw) - set(names)), [n for n in names if n not in raw]
    if unknown:
        raise ValueError(f"{source}: {key}: unknown field(s) {unknown} (expected {names})")
    if missing:
        raise ValueError(f"{source}: {key}: missing field(s) {missing}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        values[f.name] = _typed(hints[f.name], raw[f.name], f"{key}.{f.name}", source)
        _check_bounds(f.metadata, values[f.name], f"{key}.{f.name}", source)
    obj = cls(**values)
    try:
        obj.validate()
    except ValueError as err:  # validate() says "field: reason"
        raise ValueError(f"{source}: {key}.{err}") from err
    return obj


def _typed(tp: Any, value: Any, key: str, source: str | Path) -> Any:
    """`value` as annotation `tp` (a JSON list becomes a tuple, an object a nested config); ValueError if not."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # only `X | None` is used
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(inner, value, key, source)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, source)
    if origin is Literal:
        if not any(type(value) is type(a) and value == a for a in args):
            raise ValueError(f"{source}: {key}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ValueError(f"{source}: {key}: expected a list, got {value!r}")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(value) != len(items):
            raise ValueError(f"{source}: {key}: expected a list of {len(items)} values, got {value!r}")
        return tuple(_typed(t, v, f"{key}[{i}]", source) for i, (t, v) in enumerate(zip(items, value, strict=True)))
    # bool is not a number here (JSON true is not 1); an integer is a valid float
    expected = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(tp)
    if expected is None:
        raise TypeError(f"{key}: unsupported annotation {tp} (extend model.pretrained._typed)")
    if isinstance(value, bool) != (tp is bool) or not isinstance(value, expected):
        raise ValueError(f"{source}: {key}: expected {tp.__name__}, got {value!r}")
    return float(value) if tp is float else value


def _check_bounds(bounds: Any, value: Any, key: str, source: str | Path) -> None:
    checks = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
              "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}
    for name, (ok, sign) in checks.items():
        if name in bounds and value is not None and not ok(value, bounds[name]):
            raise ValueError(f"{source}: {key}: must be {sign} {bounds[name]}, got {value}")


def read_config(path: Path) -> tuple[ModelConfig, int | None, int]:
    """Read and check a checkpoint's config.json (migrating an older version).

    Returns:
        The model config, the eos id (None: the layout's default) and the version the file was written at.

    Raises:
        ValueError: naming `path` and the key, for anything but a valid config.json of version <= VERSION.
    """
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    missing, unknown = [k for k in META_KEYS if k not in meta], sorted(set(meta) - set(META_KEYS))
    if missing or unknown:
        raise ValueError(f"{path}: missing key(s) {missing}, unknown key(s) {unknown} (expected {list(META_KEYS)})")
    if meta["format"] != FORMAT:
        raise ValueError(f"{path}: format: expected {FORMAT!r}, got {meta['format']!r} (not a VLAModel checkpoint)")
    cfg = config_from_dict(meta["model"], version=meta["version"], source=path)
    eos_id = meta["eos_id"]
    if eos_id is not None and (isinstance(eos_id, bool) or not isinstance(eos_id, int)
                               or not 0 <= eos_id < cfg.text_vocab_size):
        raise ValueError(f"{path}: eos_id: expected null or an integer in [0, model.text_vocab_size = "
                         f"{cfg.text_vocab_size}), got {eos_id!r}")
    return cfg, eos_id, meta["version"]


def read_weights(path: Path, version: int, cfg: ModelConfig, expected: dict[str, Tensor]) -> dict[str, Tensor]:
    """Read model.safetensors written at `version`, migrate it, and check its names and shapes.

    Args:
        path: the weights file.
        version: the format version of its folder (config.json's).
        cfg: the (migrated) model config.
        expected: the state dict of the model to load into (names and shapes only are read).

    Raises:
        ValueError: naming `path`, for a truncated or corrupt file, or listing every missing, unexpected and
            mis-shaped key.
    """
    try:
        state = load_file(str(path))
    except SafetensorError as err:
        raise ValueError(f"{path}: not a readable safetensors file, truncated or corrupt ({err})") from err
    for step in MIGRATIONS[version - 1:]:
        step.weights(state, cfg)
    check_keys(path, {k: tuple(v.shape) for k, v in state.items()}, {k: tuple(v.shape) for k, v in expected.items()},
               "the config.json beside them")
    return state


class PretrainedMixin:
    """save_pretrained / from_pretrained / build for `VLAModel`."""

    def save_pretrained(self, folder: str | Path) -> None:
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
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> Self:
        """Load a folder written by `save_pretrained` at any version up to `VERSION` (see the module docstring).

        Weights load strictly (after migration); the tokenizer when the folder has one.

        Raises:
            FileNotFoundError: config.json or model.safetensors is missing.
            ValueError: naming the file and the key, for anything else that does not fit.
        """
        folder = Path(folder)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder}: missing {name} (not a VLAModel checkpoint folder)")
        cfg, eos_id, version = read_config(folder / CONFIG_NAME)
        model = cls(cfg, eos_id=eos_id)
        model.load_state_dict(read_weights(folder / WEIGHTS_NAME, version, cfg, model.state_dict()))
        if (folder / TOKENIZER_DIR).is_dir():
            model.text_tokenizer = load_text_tokenizer(folder / TOKENIZER_DIR, cfg.text_vocab_size)
        return model.to(map_location)

    @classmethod
    def build(cls, cfg: ModelConfig, *, vq: VQModel | None = None, text_tokenizer=None) -> Self:
        """The model at the start of training (see the module docstring).

        A `backbone_path` folder written by Show-o (`show-o-w-clip-vit-512x512`) loads through model/showo.py,
        its CLIP projector included; a transformers Phi folder through `load_phi`.

        Args:
            cfg: the model config; local folder paths in it are loaded, null ones stay random.
            vq: the trained VQ tokenizer (the `tokenizer` stage's output); None keeps a random one.
            text_tokenizer: the text tokenizer (its eos id is used); saved with every checkpoint.
        """
        from model.showo import is_showo_folder, load_showo

        eos = None if text_tokenizer is None else text_tokenizer.eos_token_id
        if text_tokenizer is not None and len(text_tokenizer) != cfg.text_vocab_size:
            raise ValueError(f"model.text_vocab_size: {cfg.text_vocab_size}, but the tokenizer has "
                             f"{len(text_tokenizer)} ids")
        model = cls(cfg, eos_id=eos)
        path = cfg.backbone_path if cfg.backbone_init == "unified" else cfg.llm_path
        if path is not None:
            # a unified checkpoint shares our layout up to the action bins; an LLM only its text rows
            keep = model.layout.bin_offset if cfg.backbone_init == "unified" else cfg.text_vocab_size
            if cfg.backbone_init == "unified" and is_showo_folder(path):
                # the weights go into model.backbone in place; the projector's were shape-checked against cfg
                showo = load_showo(path, cfg, model.layout.vocab_size, keep, into=model.backbone)
                if showo.projector:
                    model.projector.load_state_dict(showo.projector)
            else:
                model.backbone = load_phi(path, cfg, model.layout.vocab_size, keep)
        if cfg.vision_path is not None:
            model.vision = load_vision_tower(cfg.vision_path, cfg).requires_grad_(not cfg.freeze_vision)
        if vq is not None:
            if vq.cfg != cfg.vq:
                raise ValueError(f"model.vq: {cfg.vq}, but the given VQ tokenizer has {vq.cfg}")
            model.vq.load_state_dict(vq.state_dict())
        model.text_tokenizer = text_tokenizer
        return model

