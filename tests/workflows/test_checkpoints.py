"""`python -m workflows.checkpoints`: `inspect` names each published folder; `convert` turns the authors'
UP-VLA-Calvin checkpoint into ours, whose actions equal a plain-functional forward of their model on the
original weights, and which `evaluate` runs on PlayTable chains on Ray actors with the `upvla_release` preset.

Every published folder here is a tiny random one in the exact published layout (tests/fixtures/published/):
Show-o, UP-VLA-Calvin (`unwrapped_model/pytorch_model.bin`), MagVIT-v2, a full CLIP folder, and a
tokenizer standing in for Phi-1.5's (same files; our small BPE, as Phi-1.5's cannot be downloaded here).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from transformers import PhiConfig, PhiForCausalLM

from components.core.config import load_config, parse_overrides
from components.data.conversation import encode_text
from components.evaluation.policy import PlanRequest, load_inference, read_policy_settings
from envs.playtable.env import PlayTableEnv
from envs.tasks import load_eval_instructions
from model.batches import vq_pixels
from model.config import VQConfig
from model.pretrained import VERSION
from model.vla import VLAModel
from model.vocab import build_text_tokenizer
from tests.conftest import PROJECT_ROOT
from tests.fixtures.published.clip import write_tiny_clip
from tests.fixtures.published.magvit2 import write_tiny_magvitv2
from tests.fixtures.published.reference import (
    reference_codes,
    reference_encoder,
    reference_map,
    their_ids,
    their_mask,
)
from tests.fixtures.published.showo import write_tiny_showo
from tests.fixtures.published.upvla import write_tiny_upvla
from tests.model.conftest import tiny
from workflows.checkpoints import main

MAGVIT = VQConfig(arch="magvitv2", image_size=16, downsample=4, codebook_bits=5, base_channels=32, num_res_blocks=None,
                  channel_mult=(1, 2, 2), res_blocks=(1, 1, 1), decoder_channel_mult=(1, 1, 2),
                  decoder_res_blocks=(1, 1, 1))
HEAD_PREFIXES = ("token_learner.", "to_logits.")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The tiny published folders, the original UP-VLA and MagVIT-v2 state dicts, and their sizes."""
    root = tmp_path_factory.mktemp("checkpoints")
    cfg = tiny(qk_layernorm=True, vq=MAGVIT, num_views=1)
    upvla = write_tiny_upvla(root / "UP-VLA-Calvin", cfg)
    write_tiny_showo(root / "show-o", cfg)
    magvit = write_tiny_magvitv2(root / "magvitv2", MAGVIT)
    write_tiny_clip(root / "clip", cfg)
    build_text_tokenizer(load_eval_instructions().values(), cfg.text_vocab_size).save_pretrained(root / "phi-1_5")
    return root, cfg, upvla, magvit


def convert_args(root, out, *extra: str) -> list[str]:
    return ["convert", str(root / "UP-VLA-Calvin"), str(out), "--vq", str(root / "magvitv2"), "--clip",
            str(root / "clip"), "--tokenizer", str(root / "phi-1_5"), "--no-progress", *extra]


@pytest.fixture(scope="module")
def converted(published):
    root = published[0]
    assert main(convert_args(root, root / "ours")) == 0
    return root / "ours"


def test_inspect_names_every_published_folder(published, converted, capsys):
    root, _, upvla, _ = published
    kinds = {"show-o": "showo", "UP-VLA-Calvin": "upvla", "magvitv2": "magvitv2", "clip": "clip",
             "phi-1_5": "tokenizer", "ours": "ours"}
    assert main(["inspect", *(str(root / name) for name in kinds)]) == 0
    out = capsys.readouterr().out
    for name, kind in kinds.items():
        assert f"{root / name}: {kind} " in out
    assert f"parameters: {sum(t.numel() for t in upvla.values()):,} " in out  # counted from the .bin, all fp32
    assert "chunk_len: 4" in out and "num_heads: 4" in out


def test_the_converted_folder_is_the_authors_policy_with_every_weight_theirs(published, converted):
    _, cfg, upvla, magvit = published
    meta = json.loads((converted / "config.json").read_text())
    assert meta["version"] == VERSION
    model_cfg = meta["model"]
    assert (model_cfg["qk_layernorm"], model_cfg["prompt_layout"], model_cfg["map_variant"]) == (True, "reference",
                                                                                                 "reference")
    assert (model_cfg["num_views"], model_cfg["normalize_actions"], model_cfg["max_text_len"]) == (1, False, 576)
    assert model_cfg["proprio"] is False  # the authors' policy reads no robot state
    assert model_cfg["vq"]["arch"] == "magvitv2" and model_cfg["map_heads"] == 8
    assert read_policy_settings(converted).mmu_condition is False
    model = VLAModel.from_pretrained(converted)
    state = model.state_dict()
    rows = cfg.text_vocab_size + 11 + cfg.vq.codebook_size
    for key, value in upvla.items():
        if key.startswith(HEAD_PREFIXES):
            ours = state[f"action_head.{key}"]
        elif key.startswith("mm_projector."):
            ours = state[key.replace("mm_projector.", "projector.")]
        else:
            ours = state["backbone." + key.removeprefix("showo.")]
            ours = ours[:rows] if ours.shape[0] > rows else ours  # our RT-2 bin rows come after Show-o's
        assert torch.equal(ours, value), key
    for key, value in magvit.items():
        assert torch.equal(state[f"vq.{key}"], value), key


def test_convert_writes_nothing_when_it_fails_and_never_overwrites(published, converted, tmp_path, capsys):
    root = published[0]
    assert main(convert_args(root, converted)) == 2
    assert "already exists" in capsys.readouterr().err
    broken = tmp_path / "broken"
    write_tiny_upvla(broken, published[1], drop="token_learner.attn.kv.weight")
    args = convert_args(root, tmp_path / "out")
    args[1] = str(broken)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "token_learner.attn.kv.weight" in err and str(broken / "unwrapped_model" / "pytorch_model.bin") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]  # no output, no staging folder left
    with pytest.raises(SystemExit):
        main(["convert", str(root / "UP-VLA-Calvin"), str(tmp_path / "x")])  # --vq, --clip, --tokenizer missing


@torch.no_grad()
def test_actions_equal_a_plain_forward_of_their_model_on_the_same_observation(published, converted):
    _, cfg, upvla, magvit = published
    engine = load_inference(converted, precision="fp32")
    goal = next(iter(load_eval_instructions().values()))
    with PlayTableEnv("D", cameras=True) as env:
        static = env.reset()["rgb_obs"]["rgb_static"]
    reply = engine.plan(PlanRequest(goals=[goal], static=static[None], gripper=None, descriptions=[None],
                                    previews=[False]))
    # theirs: MagVIT-v2 codes, their prompt and mask, transformers' Phi with qk LayerNorm, their MAP block
    pixels = vq_pixels(torch.from_numpy(np.ascontiguousarray(static[None])), MAGVIT.image_size)
    codes = reference_codes(reference_encoder(magvit, MAGVIT, pixels))[0]
    layout = engine.model.layout
    ids = torch.tensor(their_ids(encode_text(engine.model.text_tokenizer, goal), codes.tolist(), slot=577,
                                 layout=layout, chunk=cfg.chunk_len))
    rows = cfg.text_vocab_size + 11 + cfg.vq.codebook_size
    phi = PhiForCausalLM(PhiConfig(
        vocab_size=rows, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, partial_rotary_factor=0.5,
        qk_layernorm=True, max_position_embeddings=2048, tie_word_embeddings=False)).eval()
    phi.load_state_dict({k.removeprefix("showo."): v for k, v in upvla.items() if k.startswith("showo.")})
    hidden = phi.model(input_ids=ids[None], attention_mask=their_mask(ids, layout)[None, None]).last_hidden_state
    raw = reference_map({k: v for k, v in upvla.items() if k.startswith(HEAD_PREFIXES)}, hidden[:, -cfg.chunk_len:])
    expected = torch.cat([raw[..., :6], torch.where(raw[..., 6:] > 0, 1.0, -1.0)], dim=-1)
    np.testing.assert_allclose(reply.actions, expected.numpy(), atol=1e-4)


def test_evaluate_runs_the_converted_checkpoint_with_the_release_preset(ray_session, converted, tmp_path,
                                                                       monkeypatch):
    from workflows.evaluate import main as evaluate

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    settings = {"num_sequences": 2, "ep_len": 12, "num_videos": 0, "num_workers": 1}
    assert evaluate(["--params", str(PROJECT_ROOT / "params.yaml"), "--preset", "upvla_release", "--checkpoint",
                     str(converted), "--out", "eval", "--metrics", "eval/eval.json",
                     *(f"--set=evaluate.{k}={v}" for k, v in settings.items())]) == 0
    metrics = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert metrics["num_chains"] == 2
    assert list(json.loads((tmp_path / "eval" / "results.json").read_text())) == [str(converted)]


# ----------------------------------------------------------------- check: the folders a config names


@pytest.fixture(scope="module")
def paper_like(tmp_path_factory):
    """Published-layout folders at the default model's sizes, and the --set flags that point the config at them."""
    root = tmp_path_factory.mktemp("paper_like")
    flags = ["model.qk_layernorm=true", f"model.backbone_path={root / 'show-o-w-clip-vit-512x512'}",
             f"model.vision_path={root / 'clip-vit-large-patch14-336'}", "model.vq.arch=magvitv2",
             "model.vq.num_res_blocks=null", "model.vq.base_channels=32", "model.vq.channel_mult=[1,1,2,2]",
             "model.vq.res_blocks=[1,1,1,1]", "model.vq.decoder_channel_mult=[1,1,2,2]",
             "model.vq.decoder_res_blocks=[1,1,1,1]", f"tokenizer.pretrained={root / 'magvitv2'}",
             f"tokenizer.text_pretrained={root / 'phi-1_5'}"]
    cfg = load_config(PROJECT_ROOT / "params.yaml", overrides=parse_overrides(flags)).model
    write_tiny_showo(root / "show-o-w-clip-vit-512x512", cfg)
    write_tiny_clip(root / "clip-vit-large-patch14-336", cfg)
    write_tiny_magvitv2(root / "magvitv2", cfg.vq)
    build_text_tokenizer(load_eval_instructions().values(), cfg.text_vocab_size).save_pretrained(root / "phi-1_5")
    return root, cfg, flags


def check(flags: list[str]) -> int:
    return main(["check", "--params", str(PROJECT_ROOT / "params.yaml"), *(f"--set={f}" for f in flags)])


def test_check_passes_when_every_folder_is_there_and_fits(paper_like, capsys):
    assert check(paper_like[2]) == 0
    out = capsys.readouterr().out
    for key, kind in [("model.backbone_path", "showo"), ("model.vision_path", "clip"),
                      ("tokenizer.pretrained", "magvitv2"), ("tokenizer.text_pretrained", "tokenizer")]:
        assert f"ok       {key}: " in out and f"({kind})" in out
    assert "unused   " not in out and "model.llm_path: none" in out


def test_check_names_a_missing_folder_with_its_download_and_a_folder_that_does_not_fit(paper_like, tmp_path,
                                                                                       capsys):
    root, cfg, flags = paper_like
    missing = tmp_path / "nowhere" / "show-o-w-clip-vit-512x512"
    wider = tmp_path / "wider"
    write_tiny_showo(wider, dataclasses.replace(cfg, hidden_size=2 * cfg.hidden_size))
    for folder, expected in [(missing, "huggingface-cli download showlab/show-o-w-clip-vit-512x512"),
                             (wider, "model.hidden_size"), (root / "clip-vit-large-patch14-336", "takes showo or phi")]:
        changed = [f"model.backbone_path={folder}" if f.startswith("model.backbone_path=") else f for f in flags]
        assert check(changed) == 1
        out = capsys.readouterr().out
        assert expected in out and "1 folder(s) missing or not fitting" in out
