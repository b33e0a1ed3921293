"""The collect stage's folders: CALVIN's format key by key, oracle-true language windows, and Bridge / LLaVA
folders the ingest readers accept. One tiny collection (scenes A and D, two tasks an episode) serves all."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import yaml

import components.collection.collect as collect_stage
from components.collection.calvin_recorder import to_relative_action
from components.collection.collect import collect_datasets, sample_grid
from components.core.config import load_config
from components.data.sources.bridge import find_trajectories, read_instruction, read_trajectory
from components.data.sources.calvin import load_episodes, read_frame
from components.data.sources.llava import load_samples, parse_conversation, read_image
from envs.annotations import load_evaluation_sentences, load_training_sentences
from envs.playtable import PlayTableEnv
from envs.playtable.scene import BUTTON, DOORS, SWITCH
from envs.tasks import TaskOracle
from tests.fixtures.pictures import has_text, label_bands

# CALVIN's per-frame npz keys -> (shape, dtype kind); tactile is not written (no tacto sensor here)
SPEC = {"rgb_static": ((200, 200, 3), np.uint8), "rgb_gripper": ((84, 84, 3), np.uint8),
        "depth_static": ((200, 200), np.float32), "depth_gripper": ((84, 84), np.float32),
        "actions": ((7,), np.floating), "rel_actions": ((7,), np.floating), "robot_obs": ((15,), np.floating),
        "scene_obs": ((24,), np.floating)}


def tiny_config(**changes):
    """Scenes A (training) and D (validation), one 2-task episode each, depth on, a few videos and images."""
    base = dict(train_scenes=("A",), val_scenes=("D",), episodes_per_scene=1, val_episodes_per_scene=1,
                tasks_per_episode=2, bridge_videos=2, llava_images=3, llava_questions=2, depth=True, num_workers=2)
    return dataclasses.replace(load_config().collect, **(base | changes))


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw")
    return out, collect_datasets(tiny_config(), out)


def frames_of(split_dir):
    for lo, hi in load_episodes(split_dir).tolist():
        yield [np.load(split_dir / f"episode_{i:07d}.npz") for i in range(lo, hi + 1)]


def test_calvin_frames_have_every_key_shape_and_dtype_of_the_spec(collected):
    out, summary = collected
    for split in ("training", "validation"):
        for episode in frames_of(out / "calvin" / split):
            for t, frame in enumerate(episode):
                assert set(frame.files) == set(SPEC)
                for key, (shape, dtype) in SPEC.items():
                    assert frame[key].shape == shape and np.issubdtype(frame[key].dtype, dtype), key
                # actions: the absolute TCP pose of the next frame; rel_actions as calvin_env computes them
                if t + 1 < len(episode):
                    np.testing.assert_allclose(frame["actions"][:6], episode[t + 1]["robot_obs"][:6])
                relative = to_relative_action(frame["actions"], frame["robot_obs"])
                np.testing.assert_allclose(frame["rel_actions"], relative)
                assert frame["actions"][6] in (-1.0, 1.0)
    assert summary.frames["training"] > 0 and summary.frames["validation"] > 0
    first = out / "calvin" / "training" / "episode_0000000.npz"
    assert set(read_frame(first)) == {"rgb_static", "rgb_gripper", "actions", "rel_actions", "robot_obs", "scene_obs"}


def test_calvin_index_files(collected):
    out, summary = collected
    train, val = out / "calvin" / "training", out / "calvin" / "validation"
    episodes = load_episodes(train)
    assert episodes.tolist() == [[0, summary.frames["training"] - 1]]
    assert load_episodes(val)[0, 0] == summary.frames["training"]  # global frame ids continue in validation
    assert np.load(train / "ep_lens.npy").tolist() == [summary.frames["training"]]
    assert np.load(train / "scene_info.npy", allow_pickle=True).item() == {"calvin_scene_A": episodes[0].tolist()}
    stats = yaml.safe_load((train / "statistics.yaml").read_text())
    assert len(stats["robot_obs"][0]["mean"]) == 15 and len(stats["scene_obs"][0]["std"]) == 24
    assert len(stats["act_min_bound"]) == len(stats["act_max_bound"]) == 7
    assert yaml.safe_load((train / ".hydra" / "merged_config.yaml").read_text())["env"]["scenes"] == ["A"]
    embeddings = np.load(val / "lang_annotations" / "embeddings.npy", allow_pickle=True).item()
    assert len(embeddings) == 34 and all(e["emb"].shape == (1, 1, 384) for e in embeddings.values())


def test_every_language_window_ends_just_after_its_task_fires_and_uses_training_sentences(collected):
    out, summary = collected
    oracle, training = TaskOracle(), load_training_sentences()
    evaluation = {s for texts in load_evaluation_sentences().values() for s in texts}
    checked = 0
    for split, scene in (("training", "A"), ("validation", "D")):
        ann = np.load(out / "calvin" / split / "lang_annotations" / "auto_lang_ann.npy", allow_pickle=True).item()
        assert ann["language"]["emb"].shape == (len(ann["language"]["ann"]), 1, 384)
        with PlayTableEnv(scene, cameras=False) as env:
            for (start, end), task, text in zip(ann["info"]["indx"], ann["language"]["task"], ann["language"]["ann"],
                                                strict=True):
                assert 64 - 31 <= end - start + 1 <= 64 and text in training[task] and text not in evaluation
                start_info, late, end_info = (info_at(env, out / "calvin" / split / f"episode_{i:07d}.npz")
                                              for i in (start, end - 15, end))
                # CALVIN's annotator: exactly this task fires in the window, and only in its last 15 frames
                assert oracle.get_task_info(start_info, end_info) == {task}
                assert not oracle.get_task_info_for_set(start_info, late, {task})
                checked += 1
    assert checked == sum(summary.windows.values()) > 0


def info_at(env, path):
    """The oracle's info of a recorded frame, by resetting the simulator to its state."""
    frame = np.load(path)
    scene_obs = frame["scene_obs"].copy()
    # joints may overshoot their limits by a fraction of a millimetre in simulation; reset rejects that
    for i, joint in enumerate((*DOORS, BUTTON, SWITCH)):
        scene_obs[i] = np.clip(scene_obs[i], *env.scene.joint_range(joint))
    env.reset(frame["robot_obs"], scene_obs)
    return env.get_info()


def test_bridge_folders_pass_the_bridge_reader(collected):
    out, summary = collected
    trajectories = find_trajectories(out / "bridge")
    assert len(trajectories) == summary.bridge_videos == 2
    for traj in trajectories:
        assert traj.parent.parent.name == "raw"  # <env>/<task>/<date>/raw/traj_group0/traj<k>
        state, actions = read_trajectory(out / "bridge", traj)
        assert state.shape[1] == 7 and len(list((traj / "images0").glob("im_*.jpg"))) == len(state)
        assert actions[-1] is None and all(a.shape == (7,) for a in actions[:-1])
        assert read_instruction(traj) and (traj / "lang.txt").read_text().splitlines()[1] == "confidence: 1"
        assert {"camera", "colours", "task"} <= set(pickle.loads((traj / "agent_data.pkl").read_bytes()))


def test_llava_samples_pass_the_llava_reader_and_describe_the_scene(collected):
    out, summary = collected
    samples = load_samples(out / "llava")
    assert len(samples) == summary.llava_images == 3
    for sample in samples:
        questions, answers = parse_conversation(sample["conversations"])
        assert questions[0] == "Describe the scene." and len(questions) == 3
        assert answers[0].endswith(".") and "drawer" in answers[0]
        assert read_image(out / "llava", sample["image"])


def test_the_logged_sample_grid_labels_each_scene_row_and_frame_column(collected, monkeypatch):
    out, _ = collected
    picture = sample_grid(out / "calvin", tiny_config(), per_scene=3)
    header, left, grid = label_bands(picture, (2 * 200, 3 * 200, 3))  # scenes A and D, 200 px static frames
    first_a = np.load(out / "calvin" / "training" / "episode_0000000.npz")["rgb_static"]
    assert np.array_equal(grid[:200, :200], first_a)
    assert has_text(header) and has_text(left[:200]) and has_text(left[200:])
    seen = {}
    monkeypatch.setattr(collect_stage, "label_grid", lambda grid, **labels: seen.update(labels) or grid)
    sample_grid(out / "calvin", tiny_config(), per_scene=3)
    assert "static-camera frames" in seen["title"]
    assert [t for _, t in seen["columns"]] == ["first frame", "frame 2 of 3", "last frame"]
    assert [t.split("\n")[0] for _, t in seen["rows"]] == ["scene A (training)", "scene D (validation)"]
