"""Training datasets: robot samples (future codes really Δt later, clamped to the window; padded action chunks),
MMU samples (labels on answers only), the mixing sampler, and presets that must not load unused data."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch

from components.data.collate import RobotCollator
from components.data.conversation import prompt_text
from components.data.datasets import MMUDataset, RobotDataset, RobotSpec, frame_keys, mmu_text_budget
from components.data.sampling import MixingSampler, make_train_batches
from components.data.tables import decode_image, read_table
from model.batches import IGNORE
from model.vocab import TokenLayout, load_text_tokenizer


@pytest.fixture(scope="module")
def tok(pipeline_data):
    return load_text_tokenizer(pipeline_data.text_dir, pipeline_data.cfg.model.text_vocab_size)


def spec(data, **changes):
    base = RobotSpec.of(data.cfg.model, lambda_pre=1.0, lambda_act=1.0, mmu_condition=False)
    return dataclasses.replace(base, **changes)


def frame_table(data):
    """(dataset, split, episode, step) -> static codes and actions, read independently of the datasets."""
    rows = read_table(data.tokens / "frames").to_pylist()
    return {(r["dataset"], r["split"], r["episode"], r["step"]): r for r in rows}


def views(frame) -> list[int]:
    """A frame's codes as the default model reads them: static, then gripper (num_views = 2)."""
    return frame["static_codes"] + frame["gripper_codes"]


def test_future_codes_are_the_frame_delta_t_later_clamped_to_the_window(pipeline_data):
    assert pipeline_data.cfg.model.num_views == 2
    ds = RobotDataset(pipeline_data.tokens, pipeline_data.ingested, spec(pipeline_data), sources=("calvin",))
    frames, dt = frame_table(pipeline_data), pipeline_data.cfg.model.delta_t
    windows = read_table(pipeline_data.ingested / "windows").to_pylist()
    windows = [w for w in windows if w["dataset"] == "calvin" and w["split"] == "training"]
    assert len(ds) == sum(w["end_step"] - w["start_step"] + 1 for w in windows)
    i = 0
    for w in windows:
        for t in range(w["start_step"], w["end_step"] + 1):
            sample = ds[i]
            key = ("calvin", "training", w["episode"], t)
            future = ("calvin", "training", w["episode"], min(t + dt, w["end_step"]))
            assert sample["instruction"] == w["instruction"]
            assert sample["current_codes"].tolist() == views(frames[key])
            assert sample["future_codes"].tolist() == views(frames[future]), (w, t)
            i += 1


def test_action_chunks_are_padded_like_the_reference(pipeline_data):
    ds = RobotDataset(pipeline_data.tokens, pipeline_data.ingested, spec(pipeline_data), sources=("calvin",))
    frames, k = frame_table(pipeline_data), pipeline_data.cfg.model.chunk_len
    end = ds.window_rows[0, 1] - ds.window_rows[0, 0]  # first window: episode 0, steps 0..11
    t = end - 3  # three real actions left, then padding
    sample = ds[int(t)]
    real = [frames[("calvin", "training", 0, s)]["actions"] for s in range(t, end + 1)]
    np.testing.assert_allclose(sample["actions"][:4], real)
    assert sample["action_mask"].tolist() == [True] * 4 + [False] * (k - 4)
    assert (sample["actions"][4:, :6] == 0).all()  # zero pose ...
    assert (sample["actions"][4:, 6] == real[-1][6]).all()  # ... and the last gripper repeated


def test_bridge_frames_without_an_action_do_not_start_chunks(pipeline_data):
    with_actions = RobotDataset(pipeline_data.tokens, pipeline_data.ingested, spec(pipeline_data), sources=("bridge",))
    prediction = RobotDataset(pipeline_data.tokens, pipeline_data.ingested,
                              spec(pipeline_data, with_actions=False), sources=("bridge",))
    assert (len(with_actions), len(prediction)) == (2 * 11, 2 * 12)
    assert "actions" not in prediction[0]


def test_two_views_concatenate_static_then_gripper(pipeline_data, ray_session, tmp_path):
    from components.data.pretokenize import pretokenize_frames

    model = dataclasses.replace(pipeline_data.cfg.model, num_views=2)
    pretokenize_frames(pipeline_data.cfg.pretokenize, model, pipeline_data.vq_dir, pipeline_data.ingested, tmp_path)
    rows = {(r["dataset"], r["episode"], r["step"], r["split"]): r for r in read_table(tmp_path / "frames").to_pylist()}
    assert rows[("bridge", 0, 0, "training")]["gripper_codes"] is None
    calvin = rows[("calvin", 0, 3, "training")]
    assert len(calvin["gripper_codes"]) == model.vq.tokens_per_image
    two = dataclasses.replace(spec(pipeline_data), num_views=2)
    ds = RobotDataset(tmp_path, pipeline_data.ingested, two, sources=("calvin", "bridge"))
    got = {(int(ds.keys[r] >> 48), tuple(ds.codes[r])) for r in range(len(ds.keys))}
    assert (0, tuple(calvin["static_codes"] + calvin["gripper_codes"])) in got
    bridge = rows[("bridge", 0, 0, "training")]["static_codes"]
    assert (1, tuple(bridge + bridge)) in got  # one camera: the static view stands in for the gripper view


def test_robot_obs_come_from_the_ingested_frames_and_reach_the_batch(pipeline_data, tok):
    ds = RobotDataset(pipeline_data.tokens, pipeline_data.ingested, spec(pipeline_data, with_proprio=True),
                      sources=("calvin",))
    ingested = {(r["dataset"], r["split"], r["episode"], r["step"]): r["robot_obs"]
                for r in read_table(pipeline_data.ingested / "frames").to_pylist()}
    for i in (0, len(ds) // 2, len(ds) - 1):
        row = int(ds.sample_row[i])
        key = ("calvin", "training", int((ds.keys[row] >> 24) & 0xFFFFFF), int(ds.keys[row] & 0xFFFFFF))
        np.testing.assert_allclose(ds[i]["robot_obs"], ingested[key])
    layout = TokenLayout.from_config(pipeline_data.cfg.model, tok.eos_token_id)
    batch = RobotCollator(tok, layout, pipeline_data.cfg.model)([ds[0], ds[1]])
    assert batch.robot_obs.shape == (2, 15) and batch.robot_obs.dtype == torch.float32
    assert "robot_obs" not in RobotDataset(pipeline_data.tokens, pipeline_data.ingested, spec(pipeline_data),
                                           sources=("calvin",))[0]


def test_proprio_refuses_bridges_other_state_layout(pipeline_data):
    with pytest.raises(ValueError, match=r"robot_obs of \('bridge',\) has \[7\] values"):
        RobotDataset(pipeline_data.tokens, pipeline_data.ingested, spec(pipeline_data, with_proprio=True),
                     sources=("bridge",))


def test_proprio_is_read_only_when_actions_are_trained(pipeline_data):
    model = dataclasses.replace(pipeline_data.cfg.model, proprio=True)
    assert RobotSpec.of(model, lambda_pre=1.0, lambda_act=1.0, mmu_condition=False).with_proprio
    assert not RobotSpec.of(model, lambda_pre=1.0, lambda_act=0.0, mmu_condition=False).with_proprio
    assert not spec(pipeline_data).with_proprio  # model.proprio off


def test_mmu_labels_train_the_answers_only(pipeline_data, tok):
    layout = TokenLayout.from_config(pipeline_data.cfg.model, tok.eos_token_id)
    ds = MMUDataset(pipeline_data.ingested, tok, eos_id=layout.eos_id,
                    max_text_len=mmu_text_budget(pipeline_data.cfg.model), image_size=64)
    sample = ds[1]  # two turns
    ids, labels = sample["input_ids"], sample["labels"]
    assert sample["pixel_values"].shape == (3, 64, 64) and len(ids) == len(labels)
    trained = [i for i, label in zip(ids, labels, strict=True) if label != IGNORE]
    assert tok.decode(trained) == " Square 1 is a bright colour.<|endoftext|> Near the top.<|endoftext|>"
    first_prompt = tok(prompt_text("What colour is square 1?"), add_special_tokens=False).input_ids
    assert ids[: len(first_prompt)] == first_prompt and set(labels[: len(first_prompt)]) == {IGNORE}
    assert [label for label in labels if label != IGNORE] == trained


def test_mixing_sampler_is_distributed_epoch_aware_and_mixes_by_weight():
    def make(rank):
        return MixingSampler([100, 50], [3.0, 1.0], samples_per_epoch=400, rank=rank, world_size=2, seed=7)

    a, b = list(make(0)), list(make(1))
    assert len(a) == len(b) == 200
    together = np.array(a + b)
    assert 0.70 < np.mean(together < 100) < 0.80  # ~3:1
    assert set(together[together < 100].tolist()) == set(range(100))  # a permutation, not draws with replacement
    assert list(make(0)) == a  # same seed and epoch: the same order on a restarted worker
    sampler = make(0)
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != a  # a new epoch reshuffles
    sampler.set_epoch(1, start=150)
    assert list(sampler) == second[150:] and len(sampler) == 50  # resume mid-epoch


def test_ranks_see_disjoint_positions_of_one_order():
    full = MixingSampler([10], [1.0], seed=3)
    order = full.epoch_order()
    assert sorted(order.tolist()) == list(range(10))
    parts = [list(MixingSampler([10], [1.0], rank=r, world_size=3, seed=3)) for r in range(3)]
    assert parts == [order[r::3][:3].tolist() for r in range(3)]


def test_train_batches_resume_where_they_stopped(pipeline_data, tok):
    cfg = dataclasses.replace(pipeline_data.cfg.tune, batch_size=4, mmu_batch_size=2, mmu_condition=False,
                              task_repeats={})
    kwargs = {"tokens_dir": pipeline_data.tokens, "ingested_dir": pipeline_data.ingested, "text_tokenizer": tok}
    first = make_train_batches(cfg, pipeline_data.cfg.model, **kwargs)
    stream = iter(first)
    for _ in range(12):  # past an epoch of robot batches (43 samples -> 10 batches; no task drawn twice)
        next(stream)
    state = first.state_dict()
    expected = next(stream)
    resumed = make_train_batches(cfg, pipeline_data.cfg.model, **kwargs)
    resumed.load_state_dict(state)
    got = next(iter(resumed))
    assert state["robot"][0] == 1
    assert torch.equal(got.robot.current_codes, expected.robot.current_codes)
    assert torch.equal(got.mmu.input_ids, expected.mmu.input_ids)


def test_presets_do_not_load_the_data_of_a_zero_weight(pipeline_data, tok, tmp_path):
    ingested = tmp_path / "ingested"
    shutil.copytree(pipeline_data.ingested, ingested, ignore=shutil.ignore_patterns("vqa"))  # no VQA table at all
    kwargs = {"tokens_dir": pipeline_data.tokens, "ingested_dir": ingested, "text_tokenizer": tok}
    no_mmu = pipeline_data.cfg.presets["no_mmu"]
    tune = dataclasses.replace(pipeline_data.cfg.tune, batch_size=4, mmu_condition=False,
                               lambda_mmu=no_mmu["tune.lambda_mmu"], mmu_batch_size=no_mmu["tune.mmu_batch_size"])
    batch = next(iter(make_train_batches(tune, pipeline_data.cfg.model, **kwargs)))
    assert batch.mmu is None and batch.robot.actions is not None
    no_pred = dataclasses.replace(tune, lambda_pre=pipeline_data.cfg.presets["no_prediction"]["tune.lambda_pre"])
    batches = make_train_batches(no_pred, pipeline_data.cfg.model, **kwargs)
    assert batches.loaders["robot"].dataset.datasets[0].spec.with_future is False
    assert next(iter(batches)).robot.future_codes is None
    with pytest.raises(FileNotFoundError, match="vqa"):  # with λ_MMU > 0 the missing table is an error
        make_train_batches(dataclasses.replace(tune, lambda_mmu=0.1, mmu_batch_size=2), pipeline_data.cfg.model,
                           **kwargs)


def test_collated_batches_train_the_model(pipeline_data, tok):
    from model.losses import LossWeights
    from model.vla import VLAModel

    cfg = dataclasses.replace(pipeline_data.cfg.tune, batch_size=2, mmu_batch_size=2, mmu_condition=False)
    batch = next(iter(make_train_batches(cfg, pipeline_data.cfg.model, tokens_dir=pipeline_data.tokens,
                                         ingested_dir=pipeline_data.ingested, text_tokenizer=tok)))
    torch.manual_seed(0)
    model = VLAModel(pipeline_data.cfg.model, eos_id=tok.eos_token_id)
    loss, metrics = model(batch, LossWeights(mmu=0.1, pre=1.0, act=1.0))
    loss.backward()
    assert torch.isfinite(loss) and {"mmu", "pre", "act"} <= set(metrics)


def test_overlong_instructions_are_an_error_not_truncated(pipeline_data, tok):
    layout = TokenLayout.from_config(pipeline_data.cfg.model, tok.eos_token_id)
    collate = RobotCollator(tok, layout, dataclasses.replace(pipeline_data.cfg.model, max_text_len=3))
    sample = {"instruction": "please open the drawer now", "current_codes": np.zeros(64, np.int16)}
    with pytest.raises(ValueError, match="model.max_text_len"):
        collate([sample])


def test_the_mmu_conditioned_prompt_gets_descriptions_and_scene_images(pipeline_data, tok):
    tokens = read_table(pipeline_data.tokens / "frames").to_pylist()
    described = [t for t in tokens if t["description"] is not None]
    assert {t["dataset"] for t in described} == {"calvin"} and len(described) == 24 + 18 + 16
    assert all(t["scene_image"] is None for t in tokens if t["dataset"] == "bridge")
    size = pipeline_data.cfg.model.vision_image_size
    assert decode_image(described[0]["scene_image"]).shape == (size, size, 3)
    cfg = dataclasses.replace(pipeline_data.cfg.tune, batch_size=3, mmu_batch_size=2)
    assert cfg.mmu_condition
    batch = next(iter(make_train_batches(cfg, pipeline_data.cfg.model, tokens_dir=pipeline_data.tokens,
                                         ingested_dir=pipeline_data.ingested, text_tokenizer=tok)))
    assert batch.robot.conditioned and batch.robot.scene_pixels.shape == (3, 3, size, size)
    text = tok.decode([i for i in batch.robot.description_ids[0].tolist() if i < len(tok)])
    assert text.startswith(" In scene A the drawer is")  # as generated after "ASSISTANT:"


def test_images_are_read_lazily_and_the_same_in_loader_workers(pipeline_data, tok):
    from itertools import islice

    from components.data.tables import LazyBlobs

    blobs = LazyBlobs(pipeline_data.tokens / "frames", "scene_image")
    column = read_table(pipeline_data.tokens / "frames", columns=["scene_image"]).column("scene_image").to_pylist()
    order = [70, 3, 41, 3, 0, 81]
    assert [blobs[i] for i in order] == [column[i] for i in order] and len(blobs) == 82
    cfg = dataclasses.replace(pipeline_data.cfg.tune, batch_size=4, mmu_batch_size=2)
    kwargs = {"tokens_dir": pipeline_data.tokens, "ingested_dir": pipeline_data.ingested, "text_tokenizer": tok}
    serial = make_train_batches(cfg, pipeline_data.cfg.model, **kwargs)
    forked = make_train_batches(cfg, pipeline_data.cfg.model, num_workers=2, **kwargs)
    for a, b in zip(islice(serial, 3), islice(forked, 3), strict=True):
        assert torch.equal(a.robot.scene_pixels, b.robot.scene_pixels)
        assert torch.equal(a.mmu.pixel_values, b.mmu.pixel_values)


def test_frame_keys_order_by_dataset_episode_step_and_refuse_unlisted_datasets():
    table = pa.table({"dataset": ["bridge", "calvin", "calvin"], "episode": [0, 3, 2], "step": [5, 1, 9]})
    keys = frame_keys(table, ["calvin", "bridge"])
    assert np.argsort(keys).tolist() == [2, 1, 0]
    with pytest.raises(ValueError, match=r"\['bridge'\] not among \['calvin'\]"):
        frame_keys(table, ["calvin"])


def test_pose_stats_are_the_moments_of_the_mixed_sources_actions(pipeline_data, tok):
    cfg = dataclasses.replace(pipeline_data.cfg.tune, batch_size=2, lambda_pre=0.0, lambda_mmu=0.0,
                              mmu_condition=False, robot_mix={"calvin": 3.0, "bridge": 1.0})
    batches = make_train_batches(cfg, pipeline_data.cfg.model, tokens_dir=pipeline_data.tokens,
                                 ingested_dir=pipeline_data.ingested, text_tokenizer=tok)
    calvin, bridge = batches.loaders["robot"].dataset.datasets
    # the poses a sample can start from, read from the tokens table directly
    frames = frame_table(pipeline_data)
    poses = {}
    for name, ds in (("calvin", calvin), ("bridge", bridge)):
        rows = [frames[k] for k in sorted(frames) if k[0] == name and k[1] == "training"]
        starts = np.unique(ds.sample_row)
        poses[name] = np.array([rows[i]["actions"][:6] for i in starts], dtype=np.float64)
    # a 3:1 mixture: moments weighted by the sampling weights, not by the sources' sizes
    mean = 0.75 * poses["calvin"].mean(0) + 0.25 * poses["bridge"].mean(0)
    square = 0.75 * (poses["calvin"] ** 2).mean(0) + 0.25 * (poses["bridge"] ** 2).mean(0)
    got_mean, got_std = batches.pose_stats()
    assert got_mean.shape == got_std.shape == (6,) and got_mean.dtype == np.float32
    np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_std, np.maximum(np.sqrt(square - mean**2), 1e-2), rtol=1e-5, atol=1e-6)
    # a constant dimension keeps a usable std instead of 0
    _, floored = batches.pose_stats(min_std=10.0)
    assert (floored == 10.0).all()


def test_pose_stats_need_robot_actions(pipeline_data, tok):
    cfg = dataclasses.replace(pipeline_data.cfg.pretrain, batch_size=2, mmu_batch_size=2)
    batches = make_train_batches(cfg, pipeline_data.cfg.model, tokens_dir=pipeline_data.tokens,
                                 ingested_dir=pipeline_data.ingested, text_tokenizer=tok)
    with pytest.raises(ValueError, match="without actions"):
        batches.pose_stats()


def test_task_repeats_draw_a_tasks_frames_that_many_times_per_epoch(pipeline_data, tok, capsys):
    plain = RobotDataset(pipeline_data.tokens, pipeline_data.ingested, spec(pipeline_data), sources=("calvin",))
    tasks = [t for t in plain.tasks if t is not None]
    task = tasks[0]
    repeated = RobotDataset(pipeline_data.tokens, pipeline_data.ingested, spec(pipeline_data), sources=("calvin",),
                            task_repeats={task: 3})
    of_task = np.array([plain.tasks[w] == task for w in plain.sample_window])
    assert of_task.any() and not of_task.all()
    assert len(repeated) == len(plain) + 2 * of_task.sum()
    pairs = list(zip(plain.sample_window.tolist(), plain.sample_row.tolist(), strict=True))
    expected = sorted(pairs + 2 * [(w, r) for w, r in pairs if plain.tasks[w] == task])
    assert sorted(zip(repeated.sample_window.tolist(), repeated.sample_row.tolist(), strict=True)) == expected
    # the normalisation statistics describe the data, not how often it is drawn
    np.testing.assert_array_equal(repeated.pose_moments()[0], plain.pose_moments()[0])
    # a CALVIN task this data has no window of (a small dataset) changes nothing
    absent = RobotDataset(pipeline_data.tokens, pipeline_data.ingested, spec(pipeline_data), sources=("calvin",),
                          task_repeats={"a_task_of_another_source": 2})
    assert len(absent) == len(plain)
    cfg = dataclasses.replace(pipeline_data.cfg.tune, batch_size=2, lambda_mmu=0.0, mmu_condition=False,
                              task_repeats={"opne_drawer": 2})
    make_train_batches(cfg, pipeline_data.cfg.model, tokens_dir=pipeline_data.tokens,
                       ingested_dir=pipeline_data.ingested, text_tokenizer=tok)
    assert "task_repeats.opne_drawer: no training language window of that task" in capsys.readouterr().out
