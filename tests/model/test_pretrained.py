"""Checkpoint folders: save/load round trips, older versions, errors, loading transformers Phi and CLIP folders.

The Phi and CLIP folders are small random checkpoints written by transformers itself, in the format
of Phi-1.5 / clip-vit-large-patch14-336, so the loading code is exercised without any download.
`tests/fixtures/checkpoints/v1/` is a checkpoint written by the version-1 code (see make_v1.py there).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Literal

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, PhiConfig, PhiForCausalLM

from components.core.config import load_config
from model.batches import TrainBatch
from model.config import VQConfig
from model.losses import LossWeights
from model.pretrained import MIGRATIONS, VERSION, _typed, config_from_dict
from model.vla import VLAModel
from model.vocab import build_text_tokenizer
from tests.fixtures.checkpoints.make_v1 import EXPECTED, FOLDER, model_outputs
from tests.model.conftest import TINY, mmu_batch, robot_batch, tiny

WEIGHTS = LossWeights(mmu=0.1, pre=1.0, act=1.0)


@pytest.mark.parametrize("action_head", ["map", "tokens"])
def test_save_load_gives_identical_outputs(tmp_path, action_head):
    torch.manual_seed(0)
    cfg = tiny(action_head=action_head)
    tokenizer = build_text_tokenizer(["open the drawer", "push the red block left"], cfg.text_vocab_size)
    model = VLAModel.build(cfg, text_tokenizer=tokenizer).eval()
    model.set_action_stats(torch.linspace(-0.1, 0.1, 6), torch.linspace(0.1, 0.3, 6))
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["version"] == VERSION == 4 and meta["model"]["proprio"] is False
    loaded = VLAModel.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.cfg == cfg and loaded.layout == model.layout
    assert torch.equal(loaded.action_mean, model.action_mean) and torch.equal(loaded.action_std, model.action_std)
    assert loaded.text_tokenizer("open the drawer")["input_ids"] == tokenizer("open the drawer")["input_ids"]
    batch = TrainBatch(robot_batch(cfg, conditioned=True), mmu_batch(cfg))
    torch.testing.assert_close(loaded(batch, WEIGHTS)[0], model(batch, WEIGHTS)[0], rtol=0, atol=0)
    a, b = model.predict(batch.robot, bf16=False), loaded.predict(batch.robot, bf16=False)
    assert torch.equal(a.actions, b.actions) and torch.equal(a.future_codes, b.future_codes)


def test_loading_a_broken_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        VLAModel.from_pretrained(tmp_path)
    VLAModel(tiny()).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing model.safetensors"):
        VLAModel.from_pretrained(tmp_path)


# ----------------------------------------------------------------- the version-1 checkpoint


def test_v1_checkpoint_loads_and_computes_what_the_v1_code_computed():
    """The committed v1 checkpoint reproduces the outputs the v1 code wrote beside it (fp32, CPU).

    To regenerate (only ever with the v1 code, commit 4402957; see tests/fixtures/checkpoints/make_v1.py):
        mkdir -p /tmp/upvla-v1 && git archive 4402957 model | tar -x -C /tmp/upvla-v1
        PYTHONPATH=/tmp/upvla-v1 .venv/bin/python tests/fixtures/checkpoints/make_v1.py
    """
    meta = json.loads((FOLDER / "config.json").read_text())
    assert meta["version"] == 1 and "proprio" not in meta["model"]  # the fixture stays in the old form
    model = VLAModel.from_pretrained(FOLDER).eval()
    assert model.cfg.proprio is False and model.cfg.normalize_actions is True and model.proprio is None
    torch.testing.assert_close(model.action_std, torch.linspace(0.1, 0.3, 6))
    assert len(model.text_tokenizer) == model.cfg.text_vocab_size
    expected = load_file(str(EXPECTED))
    inputs = {k: v for k, v in expected.items() if k.startswith("input.")}
    got = model_outputs(model, inputs)
    for key in ("output.future_codes", "output.description_ids"):
        assert torch.equal(got[key], expected[key]), key
    for key in [k for k in expected if k.startswith("output.")]:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)


def test_v1_checkpoint_from_before_normalize_actions_loads_with_it_off(tmp_path):
    # v1 checkpoints written before 0fb21f5 have neither the field nor the pose statistics buffers
    folder = copy_checkpoint(FOLDER, tmp_path)
    edit_config(folder, lambda meta: meta["model"].pop("normalize_actions"))
    state = load_file(str(folder / "model.safetensors"))
    del state["action_mean"], state["action_std"]
    save_file(state, str(folder / "model.safetensors"))
    model = VLAModel.from_pretrained(folder).eval()
    assert model.cfg.normalize_actions is False and model.cfg.proprio is False
    assert torch.equal(model.action_mean, torch.zeros(6)) and torch.equal(model.action_std, torch.ones(6))
    expected = load_file(str(EXPECTED))
    got = model_outputs(model, {k: v for k, v in expected.items() if k.startswith("input.")})
    # everything but the action path is the same network
    assert torch.equal(got["output.future_codes"], expected["output.future_codes"])
    torch.testing.assert_close(got["output.metric.pre"], expected["output.metric.pre"])


def test_v1_checkpoint_with_proprio_keeps_it(tmp_path):
    # d17b79d added `proprio` but still wrote version 1: those checkpoints have the field, and its weights
    torch.manual_seed(0)
    model = VLAModel(tiny(num_layers=1, proprio=True)).eval()
    model.set_proprio_stats(torch.linspace(-1, 1, 18), torch.linspace(0.5, 2.0, 18))
    model.save_pretrained(tmp_path / "ckpt")
    edit_config(tmp_path / "ckpt", lambda meta: meta.update(version=1))
    loaded = VLAModel.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.cfg == model.cfg and torch.equal(loaded.proprio.std, model.proprio.std)
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_migrations_cover_every_earlier_version_in_order():
    assert [m.version for m in MIGRATIONS] == list(range(1, VERSION))
    v1_lacks = ("proprio", "normalize_actions", "proprio_gripper")
    v1 = {k: v for k, v in dataclasses.asdict(TINY).items() if k not in v1_lacks}
    assert config_from_dict(v1, version=1) == dataclasses.replace(TINY, normalize_actions=False)
    # v3 added the published architectures; a v2 checkpoint is ours: compact VQ, our MAP head and prompt layout
    v3_fields = ("qk_layernorm", "map_variant", "prompt_layout")
    v2 = {k: v for k, v in dataclasses.asdict(TINY).items() if k not in (*v3_fields, "proprio_gripper")}
    v2["vq"] = {k: v for k, v in v2["vq"].items() if k in ("image_size", "downsample", "codebook_bits", "base_channels",
                                                          "num_res_blocks")}
    assert config_from_dict(v2, version=2) == TINY
    # v4 added proprio_gripper: a v3 checkpoint's proprioception read the gripper too
    v3 = {k: v for k, v in dataclasses.asdict(TINY).items() if k != "proprio_gripper"}
    assert config_from_dict({**v3, "proprio": True}, version=3) == dataclasses.replace(TINY, proprio=True)
    assert config_from_dict(dataclasses.asdict(TINY)) == TINY


# ----------------------------------------------------------------- errors name the file and the key


def copy_checkpoint(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / "ckpt"))


def edit_config(folder: Path, change) -> None:
    meta = json.loads((folder / "config.json").read_text())
    change(meta)
    (folder / "config.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny") / "ckpt"
    VLAModel(tiny(num_layers=1)).save_pretrained(folder)
    return folder


def assert_names(err: pytest.ExceptionInfo, path: Path, *keys: str) -> None:
    message = str(err.value)
    assert str(path) in message and all(k in message for k in keys), message


def set_model(**fields):
    return lambda meta: meta["model"].update(fields)


def set_vq(**fields):
    return lambda meta: meta["model"]["vq"].update(fields)


@pytest.mark.parametrize(("change", "keys"), [
    (lambda meta: meta.pop("version"), ["missing key(s) ['version']"]),
    (lambda meta: meta.pop("eos_id"), ["missing key(s) ['eos_id']"]),
    (lambda meta: meta.pop("model"), ["missing key(s) ['model']"]),
    (lambda meta: meta.pop("format"), ["missing key(s) ['format']"]),
    (lambda meta: meta.update(step=3), ["unknown key(s) ['step']"]),
    (lambda meta: meta.update(format="pickle"), ["format: expected 'upvla', got 'pickle'"]),
    (lambda meta: meta.update(version=VERSION + 1),
     [f"version: {VERSION + 1}", "written by a newer version", "upgrade"]),
    (lambda meta: meta.update(version="1"), ["version: expected an integer"]),
    (lambda meta: meta.update(version=0), ["version: expected an integer >= 1"]),
    (lambda meta: meta.update(eos_id="x"), ["eos_id: expected null or an integer"]),
    (lambda meta: meta.update(eos_id=10**6), ["eos_id:", "1000000"]),
    (lambda meta: meta.update(model=[1, 2]), ["model: expected a JSON object"]),
    (set_model(dropout=0.1), ["model: unknown field(s) ['dropout']"]),
    (lambda meta: meta["model"].pop("hidden_size"), ["model: missing field(s) ['hidden_size']"]),
    (lambda meta: meta["model"].pop("proprio"), ["model: missing field(s) ['proprio']"]),  # v2 is not migrated
    (set_model(hidden_size="64"), ["model.hidden_size: expected int, got '64'"]),
    (set_model(hidden_size=[64]), ["model.hidden_size: expected int, got [64]"]),
    (set_model(hidden_size=64.0), ["model.hidden_size: expected int, got 64.0"]),
    (set_model(num_views=True), ["model.num_views: expected int, got True"]),
    (set_model(proprio="yes"), ["model.proprio: expected bool, got 'yes'"]),
    (set_model(proprio=0), ["model.proprio: expected bool, got 0"]),
    (set_model(partial_rotary_factor="0.5"), ["model.partial_rotary_factor: expected float"]),
    (set_model(backbone_path=3), ["model.backbone_path: expected str, got 3"]),
    (set_model(backbone_init="show-o"), ["model.backbone_init: expected one of ['unified', 'llm'], got 'show-o'"]),
    (set_model(vq=None), ["model.vq: expected a JSON object, got None"]),
    (set_vq(image_size="32"), ["model.vq.image_size: expected int, got '32'"]),
    (set_vq(codebook_bits=2, extra=1), ["model.vq: unknown field(s) ['extra']"]),
    (set_model(hidden_size=4), ["model.hidden_size: must be >= 8, got 4"]),
    (set_model(num_heads=3), ["model.hidden_size: must be divisible by num_heads (3)"]),
    (set_vq(downsample=6), ["model.vq.downsample: must be a power of two"]),
])
def test_a_bad_config_json_names_the_file_and_the_key(saved_tiny, tmp_path, change, keys):
    folder = copy_checkpoint(saved_tiny, tmp_path)
    edit_config(folder, change)
    with pytest.raises(ValueError) as err:
        VLAModel.from_pretrained(folder)
    assert_names(err, folder / "config.json", *keys)


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '"upvla"'])
def test_a_config_json_that_is_not_an_object_names_the_file(saved_tiny, tmp_path, text):
    folder = copy_checkpoint(saved_tiny, tmp_path)
    (folder / "config.json").write_text(text)
    with pytest.raises(ValueError, match="not valid JSON|expected a JSON object") as err:
        VLAModel.from_pretrained(folder)
    assert_names(err, folder / "config.json")


def test_an_integer_is_a_valid_float(saved_tiny, tmp_path):
    folder = copy_checkpoint(saved_tiny, tmp_path)
    edit_config(folder, set_model(partial_rotary_factor=1))
    cfg = VLAModel.from_pretrained(folder).cfg
    assert cfg.partial_rotary_factor == 1.0 and type(cfg.partial_rotary_factor) is float


@pytest.mark.parametrize(("tp", "value", "expected"), [
    (tuple[int, ...], [1, 2, 3], (1, 2, 3)),
    (tuple[int, str], [1, "a"], (1, "a")),
    (str | None, None, None),
    (Literal["a", "b"], "b", "b"),
    (VQConfig, dataclasses.asdict(TINY.vq), TINY.vq),
])
def test_each_annotation_form_reads_its_json(tp, value, expected):
    assert _typed(tp, value, "model.x", "f.json") == expected


@pytest.mark.parametrize(("tp", "value", "message"), [
    (tuple[int, ...], 3, "model.x: expected a list, got 3"),
    (tuple[int, ...], [1, "2"], "model.x[1]: expected int, got '2'"),
    (tuple[int, str], [1], "model.x: expected a list of 2 values"),
    (int | None, "1", "model.x: expected int"),
    (Literal[1, 2], True, "model.x: expected one of [1, 2], got True"),
])
def test_each_annotation_form_refuses_a_wrong_value(tp, value, message):
    with pytest.raises(ValueError, match=re.escape(f"f.json: {message}")):
        _typed(tp, value, "model.x", "f.json")


@pytest.mark.parametrize("damage", ["half", "empty", "garbage"])
def test_a_truncated_or_corrupt_weights_file_names_it(saved_tiny, tmp_path, damage):
    folder = copy_checkpoint(saved_tiny, tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"half": data[: len(data) // 2], "empty": b"", "garbage": b"\xff" * 64}[damage])
    with pytest.raises(ValueError, match="truncated or corrupt") as err:
        VLAModel.from_pretrained(folder)
    assert_names(err, weights)


def test_weights_that_do_not_fit_list_every_key(saved_tiny, tmp_path):
    folder = copy_checkpoint(saved_tiny, tmp_path)
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    gone = sorted(k for k in state if k.startswith("backbone.model.layers.0.self_attn."))
    assert len(gone) > 5  # more than the old message showed
    for key in gone:
        del state[key]
    state["extra.weight"] = torch.zeros(3)
    state["projector.0.weight"] = torch.zeros(5, 5)
    save_file(state, str(weights))
    with pytest.raises(ValueError) as err:
        VLAModel.from_pretrained(folder)
    assert_names(err, weights, *gone, "unexpected ['extra.weight']", "projector.0.weight: [5, 5] in the file")


def write_phi(folder, cfg, vocab_size):
    torch.manual_seed(1)
    phi = PhiForCausalLM(PhiConfig(vocab_size=vocab_size, hidden_size=cfg.hidden_size,
                                   intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
                                   num_attention_heads=cfg.num_heads, partial_rotary_factor=cfg.partial_rotary_factor,
                                   max_position_embeddings=cfg.max_position_embeddings))
    phi.save_pretrained(folder)
    return phi.eval()


def test_llm_checkpoint_keeps_text_rows_and_computes_the_same_function(tmp_path):
    cfg = tiny(backbone_init="llm", llm_path=str(tmp_path / "phi"))
    # like Phi-1.5: more embedding rows (51200) than tokenizer ids (50295)
    source = write_phi(tmp_path / "phi", cfg, vocab_size=cfg.text_vocab_size + 20)
    model = VLAModel.build(cfg).eval()
    layout, embed = model.layout, model.backbone.model.embed_tokens.weight
    assert embed.shape[0] == layout.vocab_size
    text = slice(0, cfg.text_vocab_size)
    torch.testing.assert_close(embed[text], source.model.embed_tokens.weight[text])
    torch.testing.assert_close(embed[layout.pad_id:], embed[text].mean(0).expand(layout.vocab_size - layout.pad_id, -1))
    ids = torch.randint(0, cfg.text_vocab_size, (2, 9))
    with torch.no_grad():
        ours = model.backbone(input_ids=ids).logits[..., text]
        theirs = source(input_ids=ids).logits[..., text]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)  # gelu_new vs fused tanh GELU: ~1e-7


def test_unified_checkpoint_keeps_special_and_code_rows(tmp_path):
    cfg = tiny(backbone_path=str(tmp_path / "showo"))
    layout = VLAModel(cfg).layout
    source = write_phi(tmp_path / "showo", cfg, vocab_size=layout.bin_offset)  # Show-o: text + specials + codes
    head = VLAModel.build(cfg).backbone.lm_head
    torch.testing.assert_close(head.weight[: layout.bin_offset], source.lm_head.weight)
    torch.testing.assert_close(head.bias[layout.bin_slice], source.lm_head.bias[: cfg.text_vocab_size].mean().expand(
        cfg.action_bins))


def test_checkpoint_with_other_sizes_names_the_key(tmp_path):
    cfg = tiny(llm_path=str(tmp_path / "phi"), backbone_init="llm")
    write_phi(tmp_path / "phi", dataclasses.replace(cfg, intermediate_size=96), vocab_size=cfg.text_vocab_size)
    with pytest.raises(ValueError, match=r"model.intermediate_size: 128, but the checkpoint .* has 96"):
        VLAModel.build(cfg)
    with pytest.raises(FileNotFoundError, match="model.vision_path"):
        VLAModel.build(tiny(vision_path=str(tmp_path / "nothing")))


@pytest.mark.parametrize("feature_layer", [-1, -2])
def test_clip_checkpoint_gives_the_chosen_layer_features(tmp_path, feature_layer):
    cfg = tiny(vision_path=str(tmp_path / "clip"), vision_feature_layer=feature_layer, freeze_vision=True)
    torch.manual_seed(2)
    source = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=cfg.vision_hidden_size, intermediate_size=4 * cfg.vision_hidden_size,
        num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
        image_size=cfg.vision_image_size, patch_size=cfg.vision_patch_size)).eval()
    source.save_pretrained(tmp_path / "clip")
    model = VLAModel.build(cfg).eval()
    assert not any(p.requires_grad for p in model.vision.parameters())
    pixels = torch.randn(2, 3, cfg.vision_image_size, cfg.vision_image_size)
    with torch.no_grad():
        expected = source(pixel_values=pixels, output_hidden_states=True).hidden_states[feature_layer][:, 1:]
        got = model.vision(pixel_values=pixels).last_hidden_state[:, 1:]
    torch.testing.assert_close(got, expected)


def test_paper_profile_builds_on_meta_with_phi_1_5_scale():
    cfg = load_config(profile="paper").model
    with torch.device("meta"):
        model = VLAModel(cfg)
    count = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    # Phi-1.5 ("1.3B"; 1.42B with its 51200-row vocabulary), here resized to 58754 rows
    assert 1.3e9 <= count["backbone"] <= 1.5e9
    assert model.layout.vocab_size == 58754 and model.layout.code_offset == 50305
    assert 60e6 <= count["action_head"] <= 80e6  # the reference MAP block: about 71M
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 1.4e9 <= trainable <= 1.6e9  # backbone + projector + MAP head; CLIP and the VQ are frozen
    assert all(p.device.type == "meta" for p in model.parameters())
