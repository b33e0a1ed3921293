"""Published checkpoint folders: what a folder is, and the authors' UP-VLA-Calvin as one of our models.

`inspect_folder` tells a folder's kind from its files (nothing is loaded but headers and config.json):

| kind       | files                                                                 | used as                      |
|------------|-----------------------------------------------------------------------|------------------------------|
| showo      | config.json (`_class_name: Showo`) + pytorch_model.safetensors/.bin   | model.backbone_path, as is   |
| upvla      | unwrapped_model/pytorch_model.bin (Show-o + MAP head), config.json    | `convert` -> our folder      |
| magvitv2   | config.json (`_class_name: MAGVITv2`) + pytorch_model.safetensors/.bin | tokenizer.pretrained, as is |
| clip       | transformers CLIP folder (config.json `model_type` clip / clip_vision_model) | model.vision_path, as is |
| phi        | transformers Phi folder (config.json `model_type: phi`)               | model.llm_path, as is        |
| tokenizer  | transformers fast tokenizer (tokenizer.json)                          | tokenizer.text_pretrained    |
| ours       | our checkpoint (config.json `format: upvla`) + model.safetensors      | evaluate.checkpoint          |
| ours-vq    | our VQ folder (vq_config.json + vq.safetensors)                       | the tokenizer stage's output |

`load_upvla` assembles the authors' tuned policy (specs: ../shared/specs/published-weights.md §3) from the
folders it was built from, into a `VLAModel` whose config is theirs (`release_config`: Show-o's qk LayerNorm,
their prompt layout and MAP block, one static view, raw actions). Every key of every file is placed or refused
by name; the only rows that are not theirs are the RT-2 action-bin rows our vocabulary appends after Show-o's
(never read by a MAP head), which start at the mean of the text rows.

    model = load_upvla("checkpoints/UP-VLA-Calvin", vq="checkpoints/magvitv2",
                       clip="checkpoints/clip-vit-large-patch14-336", tokenizer="checkpoints/phi-1_5")
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from torch import Tensor
from tqdm.auto import tqdm
from transformers import CLIPVisionConfig

from model.backbone import load_vision_tower
from model.config import ModelConfig, VQConfig
from model.showo import (
    CONFIG_NAME,
    LAYER_KEY,
    PHI_PREFIX,
    PROJECTOR_PREFIX,
    ShowoConfig,
    check_showo_config,
    check_sizes,
    expected_shapes,
    is_showo_folder,
    load_showo_state,
    read_showo_config,
)
from model.vla import VLAModel
from model.vocab import load_text_tokenizer
from model.vq import is_published_magvitv2, load_magvitv2, published_sizes, published_weights
from model.weights_io import Shapes, check_keys, open_state, read_state

UPVLA_WEIGHTS = Path("unwrapped_model") / "pytorch_model.bin"
HEAD_PREFIXES = ("token_learner.", "to_logits.")
# facts of the authors' model that leave no trace in the weights (specs/published-weights.md, upvla-reference.md)
PHI_CONTEXT, PHI_ROTARY = 2048, 0.5  # Phi-1.5's trained context and partial rotary factor
REFERENCE_MAP_HEADS = 8  # MAPBlock(n_heads=4) attends with 2 * n_heads heads
REFERENCE_MAX_TEXT_LEN = 576  # their max_seq_length: the text slot is 577 columns
ACTION_DIM = 7  # CALVIN rel_actions
# ModelConfig fields their policy never reads (no RT-2 bins, no scene description): our defaults
UNUSED_BY_THE_RELEASE = {"action_bins": 256, "max_description_len": 96, "proprio_gripper": True}
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclasses.dataclass
class FolderReport:
    """What `inspect_folder` found.

    Attributes:
        folder: the folder.
        kind: one of the module table's kinds.
        description: one line for people.
        files: the weights files, relative to the folder, with their sizes in bytes.
        parameters: the tensors' total element count.
        dtypes: element count per dtype.
        sizes: architecture facts read from config.json and the weight shapes.
    """

    folder: Path
    kind: str
    description: str
    files: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    parameters: int = 0
    dtypes: dict[str, int] = dataclasses.field(default_factory=dict)
    sizes: dict[str, Any] = dataclasses.field(default_factory=dict)

    def format(self) -> str:
        """A few lines for the terminal."""
        lines = [f"{self.folder}: {self.kind} — {self.description}"]
        for name, size in self.files:
            lines.append(f"  {name}: {size / 1e9:.2f} GB" if size >= 1e8 else f"  {name}: {size / 1e6:.2f} MB")
        if self.files:
            dtypes = ", ".join(f"{d} {n / 1e6:.1f}M" for d, n in sorted(self.dtypes.items()))
            lines.append(f"  parameters: {self.parameters:,} ({self.parameters / 1e9:.3f} B; {dtypes})")
        lines += [f"  {key}: {value}" for key, value in self.sizes.items()]
        return "\n".join(lines)


def inspect_folder(folder: str | Path) -> FolderReport:
    """Tell what a checkpoint folder is (module table), with its files, parameter count, dtypes and sizes.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: naming the folder, when it is none of the known kinds.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    config = _json(folder / CONFIG_NAME) if (folder / CONFIG_NAME).is_file() else None
    if (folder / UPVLA_WEIGHTS).is_file():
        report = FolderReport(folder, "upvla", "UP-VLA tuned checkpoint (Show-o + MAP action head); convert it")
        _add_weights(report, [UPVLA_WEIGHTS])
        report.sizes.update(_phi_sizes(_shapes(folder / UPVLA_WEIGHTS)))
        report.sizes.update(_head_sizes(_shapes(folder / UPVLA_WEIGHTS)))
        return report
    if is_showo_folder(folder):
        showo = read_showo_config(folder)
        report = FolderReport(folder, "showo", "Show-o transformer; loads as is as model.backbone_path")
        weights = _weight_files(folder)
        _add_weights(report, weights)
        report.sizes.update(_phi_sizes(_shapes(folder / weights[0])) if weights else {})
        report.sizes.update(vocab_size=showo.vocab_size, llm_vocab_size=showo.llm_vocab_size,
                            codebook_size=showo.codebook_size, w_clip_vit=showo.w_clip_vit)
        return report
    if is_published_magvitv2(folder) and isinstance(config, dict) and "_class_name" in config:
        report = FolderReport(folder, "magvitv2", "Show-o's MagVIT-v2 tokenizer; loads as is as tokenizer.pretrained")
        weights = _weight_files(folder)
        _add_weights(report, weights)
        if weights:
            report.sizes.update(published_sizes(read_state(folder / weights[0])))
        return report
    if isinstance(config, dict) and config.get("format") == "upvla":
        report = FolderReport(folder, "ours", f"our checkpoint, format v{config.get('version')}; evaluate.checkpoint")
        _add_weights(report, _weight_files(folder))
        return report
    if (folder / "vq_config.json").is_file():
        report = FolderReport(folder, "ours-vq", "our VQ tokenizer folder")
        _add_weights(report, _weight_files(folder))
        return report
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type in ("clip", "clip_vision_model"):
        vision = CLIPVisionConfig.from_pretrained(str(folder))
        report = FolderReport(folder, "clip", "transformers CLIP; loads as is as model.vision_path")
        _add_weights(report, _weight_files(folder))
        report.sizes.update(vision_hidden_size=vision.hidden_size, vision_layers=vision.num_hidden_layers,
                            vision_heads=vision.num_attention_heads, vision_image_size=vision.image_size,
                            vision_patch_size=vision.patch_size)
        return report
    if model_type == "phi":
        report = FolderReport(folder, "phi", "transformers Phi; loads as is as model.llm_path")
        _add_weights(report, _weight_files(folder))
        report.sizes.update({k: config[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                    "intermediate_size", "vocab_size") if k in config})
        return report
    if (folder / "tokenizer.json").is_file():
        return FolderReport(folder, "tokenizer", "transformers fast tokenizer; tokenizer.text_pretrained")
    raise ValueError(f"{folder}: not a checkpoint folder this project knows (Show-o, UP-VLA, MagVIT-v2, CLIP, Phi, "
                     f"a tokenizer or our own): found {sorted(p.name for p in folder.iterdir())}")


# the config keys naming checkpoint folders, and the kinds each accepts
FOLDER_KEYS = {
    "model.backbone_path": ("showo", "phi"),
    "model.llm_path": ("phi",),
    "model.vision_path": ("clip",),
    "tokenizer.pretrained": ("magvitv2", "ours-vq"),
    "tokenizer.text_pretrained": ("tokenizer", "phi"),
}


def check_folder(key: str, folder: str | Path, cfg: ModelConfig) -> FolderReport:
    """Check that the folder a config key names is of a kind that key takes and fits `cfg` (model.*).

    Reads config.json, the tokenizer, and the weights' names and shapes (the MagVIT-v2 tensors, which are
    small); nothing of the backbone is loaded.

    Raises:
        FileNotFoundError: the folder (or a file in it) is missing.
        ValueError: naming the key, the folder and what disagrees.
    """
    report = inspect_folder(folder)
    if report.kind not in FOLDER_KEYS[key]:
        raise ValueError(f"{key}: {folder} is a {report.kind} folder ({report.description}); {key} takes "
                         f"{' or '.join(FOLDER_KEYS[key])}")
    folder = Path(folder)
    if report.kind == "showo":
        showo = read_showo_config(folder)
        check_showo_config(folder / CONFIG_NAME, showo, cfg)
        path = folder / _weight_files(folder)[0]
        shapes = _shapes(path)
        check_sizes(path, shapes, cfg)
        check_keys(path, shapes, expected_shapes(cfg, showo), "a Show-o model at model's sizes")
    elif report.kind == "phi":
        if key == "tokenizer.text_pretrained":
            load_text_tokenizer(folder, cfg.text_vocab_size)
        else:
            _check_phi_config(key, folder, cfg)
    elif report.kind == "tokenizer":
        load_text_tokenizer(folder, cfg.text_vocab_size)
    elif report.kind == "clip":
        wrong = {name: (getattr(cfg, name), value) for name, value in report.sizes.items()
                 if getattr(cfg, name) != value}
        if wrong:
            raise ValueError(f"{key}: {folder} does not fit model: " + ", ".join(
                f"model.{name} is {ours}, the folder has {theirs}" for name, (ours, theirs) in wrong.items()))
    elif report.kind == "magvitv2":
        load_magvitv2(folder, cfg.vq)
    return report


def _check_phi_config(key: str, folder: Path, cfg: ModelConfig) -> None:
    raw = _json(folder / CONFIG_NAME)
    pairs = {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
             "intermediate_size": "intermediate_size", "qk_layernorm": "qk_layernorm"}
    wrong = [f"model.{ours} is {getattr(cfg, ours)}, the folder has {raw.get(theirs, False)}"
             for ours, theirs in pairs.items() if raw.get(theirs, False if ours == "qk_layernorm" else None)
             != getattr(cfg, ours)]
    if wrong:
        raise ValueError(f"{key}: {folder / CONFIG_NAME} does not fit model: {', '.join(wrong)}")


def release_config(showo: ShowoConfig, shapes: Shapes, clip: CLIPVisionConfig, vq_sizes: dict[str, Any], *,
                   max_text_len: int = REFERENCE_MAX_TEXT_LEN, source: str | Path = UPVLA_WEIGHTS) -> ModelConfig:
    """The authors' policy as a `ModelConfig`: sizes read from their files, the rest their code's constants.

    Args:
        showo: the Show-o config.json the checkpoint was built from.
        shapes: the UP-VLA weights file's keys and shapes.
        clip: the CLIP folder's vision config.
        vq_sizes: `model.vq.published_sizes` of the MagVIT-v2 weights.
        max_text_len: the instruction budget; the text slot is max_text_len + 1 columns (theirs: 576).
        source: the weights file, named in errors.
    """
    phi = _phi_sizes(shapes)
    head = _head_sizes(shapes)
    missing = [k for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size") if k not in phi]
    if missing or "chunk_len" not in head:
        raise ValueError(f"{source}: cannot read {missing + ([] if 'chunk_len' in head else ['chunk_len'])} from the "
                         f"weights (showo.model.*, to_logits.0.weight): not an UP-VLA checkpoint")
    levels = len(vq_sizes.get("channel_mult", ()))
    grid = math.isqrt(showo.num_vq_tokens)
    if grid * grid != showo.num_vq_tokens or levels < 2:
        raise ValueError(f"num_vq_tokens {showo.num_vq_tokens} (Show-o config.json) and {levels} MagVIT-v2 levels do "
                         "not make a square code grid")
    downsample = 2 ** (levels - 1)
    levels_of = {k: vq_sizes[k] for k in ("channel_mult", "res_blocks", "decoder_channel_mult", "decoder_res_blocks")}
    vq = VQConfig(arch="magvitv2", image_size=grid * downsample, downsample=downsample,
                  codebook_bits=vq_sizes["codebook_bits"], base_channels=vq_sizes["base_channels"], num_res_blocks=None,
                  **levels_of)
    cfg = ModelConfig(
        backbone_path=None, llm_path=None, backbone_init="unified", vision_path=None, qk_layernorm=True,
        text_vocab_size=showo.llm_vocab_size, hidden_size=phi["hidden_size"], num_layers=phi["num_layers"],
        num_heads=phi["num_heads"], intermediate_size=phi["intermediate_size"], max_position_embeddings=PHI_CONTEXT,
        partial_rotary_factor=PHI_ROTARY, vision_hidden_size=clip.hidden_size, vision_layers=clip.num_hidden_layers,
        vision_heads=clip.num_attention_heads, vision_image_size=clip.image_size, vision_patch_size=clip.patch_size,
        vision_feature_layer=-2, freeze_vision=True, vq=vq, num_views=1, chunk_len=head["chunk_len"],
        delta_t=head["chunk_len"], action_dim=ACTION_DIM, action_head="map", map_heads=REFERENCE_MAP_HEADS,
        map_variant="reference", normalize_actions=False, proprio=False, prompt_layout="reference",
        max_text_len=max_text_len, **UNUSED_BY_THE_RELEASE)
    cfg.validate()
    return cfg


def load_upvla(folder: str | Path, *, vq: str | Path, clip: str | Path, tokenizer: str | Path,
               showo: str | Path | None = None, max_text_len: int = REFERENCE_MAX_TEXT_LEN,
               progress: bool = True) -> VLAModel:
    """The authors' UP-VLA-Calvin checkpoint as a `VLAModel` (module docstring), on the CPU, in fp32.

    Args:
        folder: the checkpoint folder (unwrapped_model/pytorch_model.bin).
        vq: Show-o's MagVIT-v2 folder (`magvitv2`).
        clip: the CLIP folder (`clip-vit-large-patch14-336`); the release never reads it (no MMU prompt), but
            our checkpoint carries the whole model.
        tokenizer: the Phi-1.5 tokenizer folder (`phi-1_5`).
        showo: the Show-o folder whose config.json the checkpoint was trained from; default: config.json in
            `folder` itself.
        max_text_len: see `release_config`.
        progress: show a progress bar while the weights are copied.

    Raises:
        FileNotFoundError: a folder or file is missing.
        ValueError: naming the file and the key, for anything that does not fit.
    """
    folder = Path(folder)
    weights = folder / UPVLA_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: missing {UPVLA_WEIGHTS} (not an UP-VLA checkpoint folder)")
    showo_folder = Path(showo) if showo is not None else folder
    if not (showo_folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{showo_folder}: no Show-o {CONFIG_NAME}; pass the Show-o folder the checkpoint was "
                                f"trained from (--showo checkpoints/show-o-w-clip-vit-512x512)")
    showo_cfg = read_showo_config(showo_folder)
    shapes, read = open_state(weights)
    text_tokenizer = load_text_tokenizer(tokenizer, showo_cfg.llm_vocab_size)
    vq_state = read_state(published_weights(Path(vq)))
    cfg = release_config(showo_cfg, shapes, CLIPVisionConfig.from_pretrained(str(clip)), published_sizes(vq_state),
                         max_text_len=max_text_len, source=weights)
    check_showo_config(showo_folder / CONFIG_NAME, showo_cfg, cfg)
    model = VLAModel(cfg, eos_id=text_tokenizer.eos_token_id)
    model.text_tokenizer = text_tokenizer
    head_keys = {k: v for k, v in shapes.items() if k.startswith(HEAD_PREFIXES)}
    body_keys = {k: v for k, v in shapes.items() if k not in head_keys}
    with tqdm(total=sum(math.prod(s) for s in shapes.values()) * 4, unit="B", unit_scale=True,
              desc=f"copying {weights.name}", disable=not progress) as bar:
        read = _counted(read, shapes, bar)
        body = load_showo_state(weights, body_keys, read, showo_cfg, cfg, model.layout.vocab_size,
                                model.layout.bin_offset, into=model.backbone)
        if body.projector:
            model.projector.load_state_dict(body.projector)
        expected = {k: tuple(v.shape) for k, v in model.action_head.state_dict().items()}
        check_keys(weights, head_keys, expected, "the authors' MAP head (model.map_variant: reference) at its sizes")
        model.action_head.load_state_dict({k: read(k) for k in head_keys})
    model.vq.load_state_dict(load_magvitv2(vq, cfg.vq).state_dict())
    model.vision = load_vision_tower(clip, cfg).requires_grad_(False)
    return model.eval()


def _counted(read: Callable[[str], Tensor], shapes: Shapes, bar: tqdm) -> Callable[[str], Tensor]:
    def counted(key: str) -> Tensor:
        tensor = read(key)
        bar.update(math.prod(shapes[key]) * tensor.element_size())
        return tensor
    return counted


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())


def _shapes(path: Path) -> Shapes:
    return open_state(path)[0]


def _add_weights(report: FolderReport, files: list[Path]) -> None:
    for name in files:
        path = report.folder / name
        report.files.append((str(name), path.stat().st_size))
        for dtype, count in _dtype_counts(path).items():
            report.dtypes[dtype] = report.dtypes.get(dtype, 0) + count
            report.parameters += count


def _dtype_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    piece = handle.get_slice(key)
                    dtype = str(piece.get_dtype()).lower()
                    counts[dtype] = counts.get(dtype, 0) + math.prod(piece.get_shape())
        except SafetensorError as err:
            raise ValueError(f"{path}: not a readable safetensors file, truncated or corrupt ({err})") from err
        return counts
    shapes, read = open_state(path)
    for key in shapes:
        tensor = read(key)
        dtype = str(tensor.dtype).removeprefix("torch.")
        counts[dtype] = counts.get(dtype, 0) + tensor.numel()
    return counts


def _phi_sizes(shapes: Shapes) -> dict[str, int]:
    """hidden_size, num_layers, num_heads, intermediate_size of a Show-o state (the keys it has)."""
    sizes: dict[str, int] = {}
    if len(embed := shapes.get(f"{PHI_PREFIX}model.embed_tokens.weight", ())) == 2:
        sizes["vocab_rows"], sizes["hidden_size"] = embed
    if layers := {int(m.group(1)) for k in shapes if (m := LAYER_KEY.match(k))}:
        sizes["num_layers"] = max(layers) + 1
    q_norm = shapes.get(f"{PHI_PREFIX}model.layers.0.self_attn.q_layernorm.weight", ())
    if "hidden_size" in sizes and len(q_norm) == 1 and q_norm[0] and sizes["hidden_size"] % q_norm[0] == 0:
        sizes["num_heads"] = sizes["hidden_size"] // q_norm[0]
    if len(fc1 := shapes.get(f"{PHI_PREFIX}model.layers.0.mlp.fc1.weight", ())) == 2:
        sizes["intermediate_size"] = fc1[0]
    if len(projector := shapes.get(f"{PROJECTOR_PREFIX}0.weight", ())) == 2:
        sizes["vision_hidden_size"] = projector[1]
    return sizes


def _head_sizes(shapes: Shapes) -> dict[str, int]:
    """chunk_len of the MAP head's output layer (rows = chunk_len x 7, step-major)."""
    logits = shapes.get("to_logits.0.weight", ())
    if len(logits) == 2 and logits[0] % ACTION_DIM == 0:
        return {"chunk_len": logits[0] // ACTION_DIM}
    return {}

