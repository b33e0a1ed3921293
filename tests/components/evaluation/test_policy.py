"""The UP-VLA policy wrapper on a tiny real checkpoint (random weights): batching, chunks, descriptions, loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.collection.llava_recorder import conversation
from components.core.checkpoint_refs import resolve_checkpoint
from components.core.tracking import start_run
from components.data.conversation import DESCRIBE_PROMPT, conversation_ids, encode_text
from components.data.sources.llava import parse_conversation
from components.evaluation.policy import (
    ChunkedPolicy,
    PlanRequest,
    PolicySettings,
    UPVLAPolicy,
    VLAInference,
    checkpoint_digest,
    load_inference,
    load_policy,
    read_policy_settings,
    save_policy_settings,
)
from envs.playtable import PlayTableEnv
from envs.protocol import run_chain
from envs.sequences import get_sequences, initial_condition_to_obs
from envs.tasks import load_eval_instructions
from tests.conftest import PROJECT_ROOT
from tests.fixtures.tiny_policy import write_tiny_checkpoint

CHUNK = 4  # TINY.chunk_len


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="module")
def observations():
    """Real camera observations of scene D at the first 4 chains' initial states, with their first goals."""
    chains = get_sequences(1000)[:4]
    sentences = load_eval_instructions()
    with PlayTableEnv("D") as env:
        obs = [env.reset(*initial_condition_to_obs(state)) for state, _ in chains]
    return obs, [sentences[tasks[0]] for _, tasks in chains]


class CountingEngine:
    """Records every request an engine receives."""

    def __init__(self, engine):
        self.engine, self.requests = engine, []

    def plan(self, request: PlanRequest):
        self.requests.append(request)
        return self.engine.plan(request)


def test_batched_actions_equal_one_policy_per_env(checkpoint, observations):
    obs, goals = observations
    engine = load_inference(checkpoint)
    batched = ChunkedPolicy(engine, 4)
    singles = [UPVLAPolicy(engine) for _ in obs]
    for slot, single in enumerate(singles):  # predicted frames too (they go into the rollout videos)
        batched.watch(slot, True)
        single.chunked.watch(0, True)
    for step in range(2 * CHUNK + 1):  # crosses two replans
        live = [0, 1, 2, 3] if step % 3 else [2, 0]  # batch composition changes from step to step
        together = batched.act(live, [obs[i] for i in live], [goals[i] for i in live])
        for slot, action in zip(live, together, strict=True):
            alone = singles[slot].step(obs[slot], goals[slot])
            assert np.array_equal(action, alone), f"slot {slot} step {step}: a row depends on its batch"
            assert np.array_equal(batched.preview(slot), singles[slot].chunked.preview(0))
            assert action.shape == (7,) and action[-1] in (-1.0, 1.0) and np.all(np.abs(action[:6]) <= 1)


def test_every_forward_runs_on_the_fixed_batch_size(checkpoint, observations, monkeypatch):
    """CPU kernels round differently with the number of rows (a trained checkpoint's actions moved by 2e-3
    between 1 and 2 rows), so with batch_size=B every forward sees B rows, whatever the request holds."""
    obs, goals = observations
    engine = load_inference(checkpoint, batch_size=3)
    rows, decoded = [], []
    for name, log in (("predict", rows), ("generate_description", rows), ("decode_codes", decoded)):
        original = getattr(engine.model, name)

        def spy(tensor, *args, _original=original, _log=log, **kwargs):
            _log.append(len(tensor.instruction_ids) if hasattr(tensor, "instruction_ids") else tensor.shape[0])
            return _original(tensor, *args, **kwargs)
        monkeypatch.setattr(engine.model, name, spy)

    def request(count, previews):
        picked = [i % 3 for i in range(count)]  # 4 rows: obs 0, 1, 2, 0
        return PlanRequest([goals[i] for i in picked], np.stack([obs[i]["rgb_obs"]["rgb_static"] for i in picked]),
                           None, [None] * count, [previews] * count)

    replies = {count: engine.plan(request(count, previews=count == 4)) for count in (1, 2, 3, 4)}
    assert set(rows) == {3}  # 1, 2 and 3 rows padded to 3; 4 rows split into 3 + 1 padded
    assert decoded == [1] * 4  # previews decoded for the requested rows only, not the padding
    for count, reply in replies.items():
        assert reply.actions.shape == (count, CHUNK, 7) and len(reply.descriptions) == len(reply.previews) == count
        assert np.array_equal(reply.actions[0], replies[1].actions[0]) and reply.descriptions[0] == \
            replies[1].descriptions[0]
    assert np.array_equal(replies[4].actions[3], replies[1].actions[0])  # row 3 is obs 0 again, in the 2nd block
    with pytest.raises(ValueError, match="batch_size"):
        load_inference(checkpoint, batch_size=0)


def test_description_once_per_subtask_and_a_replan_every_chunk(checkpoint, observations):
    obs, goals = observations
    engine = CountingEngine(load_inference(checkpoint))
    policy = UPVLAPolicy(engine)
    for _ in range(2 * CHUNK):
        policy.step(obs[0], goals[0])
    assert len(engine.requests) == 2  # one replan per chunk
    assert engine.requests[0].descriptions == [None]  # generated at the subtask's first step ...
    assert engine.requests[1].descriptions[0] is not None  # ... and reused after
    policy.reset()
    policy.step(obs[0], goals[0])
    assert len(engine.requests) == 3 and engine.requests[2].descriptions == [None]


def test_action_steps_executes_the_chunks_first_actions_then_replans(checkpoint, observations):
    obs, goals = observations
    whole = UPVLAPolicy(load_inference(checkpoint))
    engine = CountingEngine(load_inference(checkpoint))
    partial = UPVLAPolicy(engine, action_steps=3)
    first = [whole.step(obs[0], goals[0]) for _ in range(3)]
    assert np.array_equal([partial.step(obs[0], goals[0]) for _ in range(3)], first)  # the chunk's first 3
    assert len(engine.requests) == 1
    for _ in range(2 * CHUNK - 3):
        partial.step(obs[0], goals[0])
    assert len(engine.requests) == -(-2 * CHUNK // 3)  # a replan every 3 steps
    with pytest.raises(ValueError, match="action_steps"):
        UPVLAPolicy(engine, action_steps=0)
    with pytest.raises(ValueError, match="chunk"):
        UPVLAPolicy(engine, action_steps=CHUNK + 1).step(obs[0], goals[0])


def test_unconditioned_checkpoint_generates_no_description(tmp_path, observations):
    obs, goals = observations
    engine = load_inference(write_tiny_checkpoint(tmp_path / "plain", mmu_condition=False))
    reply = engine.plan(PlanRequest([goals[0]], obs[0]["rgb_obs"]["rgb_static"][None], None, [None], [True]))
    assert reply.descriptions == [None] and reply.actions.shape == (1, CHUNK, 7)
    assert reply.previews[0].shape == (32, 32, 3) and reply.previews[0].dtype == np.uint8  # decoded future frame


def test_a_proprio_checkpoint_reads_the_observations_robot_obs(tmp_path, observations):
    obs, goals = observations
    folder = write_tiny_checkpoint(tmp_path / "proprio", proprio=True)
    engine = CountingEngine(load_inference(folder))
    UPVLAPolicy(engine).step(obs[0], goals[0])
    np.testing.assert_array_equal(engine.requests[0].robot_obs, obs[0]["robot_obs"][None])
    frame = obs[0]["rgb_obs"]["rgb_static"][None]
    with pytest.raises(ValueError, match="model.proprio = true"):
        engine.plan(PlanRequest([goals[0]], frame, None, [None], [False]))


def test_policy_runs_calvins_loop_on_the_simulator(checkpoint):
    chain = get_sequences(1000)[0]
    with PlayTableEnv("D") as env:
        result = run_chain(env, load_policy(checkpoint), chain, ep_len=6)
    assert result.tasks == chain[1] and result.subtasks[0].steps <= 6


def test_load_from_an_mlflow_run(checkpoint, tracking_target, observations, tmp_path, monkeypatch):
    monkeypatch.setattr("components.core.checkpoint_refs.cache_root", lambda: tmp_path / "cache")
    obs, goals = observations
    with start_run(tracking_target, "upvla-test", "tune") as run:
        run.log_artifact(checkpoint, "model")
    expected = load_policy(checkpoint).step(obs[0], goals[0])
    for ref in (f"runs:/{run.run_id}/model", run.run_id):
        folder = resolve_checkpoint(ref, tracking_target)
        assert folder.is_relative_to(tmp_path / "cache")
        assert checkpoint_digest(folder) == checkpoint_digest(checkpoint)
        assert np.array_equal(load_policy(ref, target=tracking_target).step(obs[0], goals[0]), expected)
    with pytest.raises(ValueError, match="needs the MLflow store"):
        load_policy(run.run_id)
    cached = tmp_path / "cache" / run.run_id / "model"
    (cached / "model.safetensors").write_bytes(b"tampered")  # a cached folder is verified before it is trusted
    with pytest.warns(UserWarning, match="differs from its manifest"):
        assert checkpoint_digest(resolve_checkpoint(f"runs:/{run.run_id}/model", tracking_target)) == \
            checkpoint_digest(checkpoint)
    for bad in (f"runs:/{run.run_id}/../..", f"runs:/{run.run_id}/model/../../x", f"runs:/{run.run_id}/a\x00b"):
        with pytest.raises(ValueError, match="artifact path"):
            resolve_checkpoint(bad, tracking_target)


def test_the_run_cache_is_private(tmp_path, monkeypatch):
    from components.core.checkpoint_refs import cache_root, private_dir

    monkeypatch.setenv("UPVLA_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine" / "checkpoints"
    assert private_dir(cache_root()).stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="owned by you and writable only by you"):
        private_dir(shared)


def test_bad_checkpoints_are_named(tmp_path, checkpoint):
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        load_policy(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_policy(tmp_path / "nowhere")
    bare = write_tiny_checkpoint(tmp_path / "bare")
    (bare / "policy.json").unlink()
    with pytest.raises(FileNotFoundError, match="policy.json: missing"):
        load_policy(bare)
    (bare / "policy.json").write_text('{"mmu_condition": "yes"}')
    with pytest.raises(ValueError, match="policy.json"):
        read_policy_settings(bare)
    engine = load_inference(checkpoint)
    with pytest.raises(ValueError, match="max_text_len"):
        engine.tokenize("open the drawer " * 20)
    with pytest.raises(ValueError, match="cameras"):
        ChunkedPolicy(engine, 1).act([0], [{"rgb_obs": {}, "robot_obs": np.zeros(15)}], ["open the drawer"])
    assert isinstance(engine, VLAInference)


def test_the_description_prompt_at_inference_is_the_one_trained(checkpoint, observations):
    engine = load_inference(checkpoint)
    tok, eos = engine.model.text_tokenizer, engine.layout.eos_id
    # a describe sample as collect writes it and ingest reads it, turned into training ids
    turns = conversation(np.zeros(24), np.zeros(15), "A", 0, np.random.default_rng(0))
    questions, answers = parse_conversation(turns)
    ids, labels = conversation_ids(tok, questions, answers, eos, 200)
    prompt = ids[: labels.index(next(label for label in labels if label >= 0))]
    assert engine._prompt == prompt == list(read_policy_settings(checkpoint).description_prompt_ids)
    assert tok.decode(prompt) == DESCRIBE_PROMPT == "USER: Describe the scene. ASSISTANT:"


def test_version_1_policy_files_are_read_as_the_trained_prompt(tmp_path, observations):
    old = write_tiny_checkpoint(tmp_path / "v1")
    new = read_policy_settings(old)
    (old / "policy.json").write_text('{"mmu_condition": true, "description_prompt": "Describe the scene."}')
    migrated = read_policy_settings(old)
    assert migrated.description_prompt == DESCRIBE_PROMPT and migrated.description_prompt_ids is None
    assert load_inference(old)._prompt == list(new.description_prompt_ids)


def test_policy_settings_that_disagree_with_the_tokenizer_are_refused(tmp_path):
    folder = write_tiny_checkpoint(tmp_path / "model")
    raw = json.loads((folder / "policy.json").read_text())
    assert raw["version"] == 2 and raw["description_prompt"] == DESCRIBE_PROMPT
    (folder / "policy.json").write_text(json.dumps({**raw, "description_prompt_ids": [1, 2, 3]}))
    with pytest.raises(ValueError, match="description_prompt_ids"):
        load_inference(folder)
    for key, value in (("version", 9), ("description_prompt_ids", "1 2"), ("description_prompt", None)):
        (folder / "policy.json").write_text(json.dumps({**raw, key: value}))
        with pytest.raises(ValueError, match=f"policy.json.*{key}"):
            read_policy_settings(folder)
    (folder / "policy.json").write_text("{not json")
    with pytest.raises(ValueError, match="policy.json: not JSON"):
        read_policy_settings(folder)
    save_policy_settings(folder, PolicySettings(mmu_condition=False))  # the folder's own tokenizer
    assert read_policy_settings(folder).mmu_condition is False


def test_the_committed_version_1_checkpoint_still_runs_as_a_policy(observations):
    folder = PROJECT_ROOT / "tests/fixtures/checkpoints/v1"  # written by the code before policy.json v2
    engine = load_inference(folder)
    assert tuple(engine._prompt) == tuple(encode_text(engine.model.text_tokenizer, DESCRIBE_PROMPT))
    obs, _ = observations
    action = UPVLAPolicy(engine).step(obs[0], "open the drawer")  # a sentence its 10-token text budget holds
    assert action.shape == (7,) and np.isfinite(action).all()
