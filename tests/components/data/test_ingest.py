"""The ingest stage: each reader on well-formed data, on corrupted copies (every corruption kind lands in the
quarantine report with its reason), the table schemas, and the bad-fraction limit."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.data.ingest import ingest_datasets, resolve_sources
from components.data.quarantine import IngestError
from components.data.sources import load_pickled
from components.data.sources.calvin import read_frame
from components.data.tables import FRAMES_SCHEMA, VQA_SCHEMA, WINDOWS_SCHEMA, decode_image, part_files, read_table
from tests.fixtures.pipeline_data import write_raw

BRIDGE_TRAJ = "toykitchen1/put_cup_in_sink/2024-05-01_10-00-00/raw/traj_group0/traj{}"
SYSTEM = f"{os.system.__module__}.system"  # how a pickle names os.system (posix.system on Linux)


def test_clean_data_is_ingested_whole(pipeline_data):
    s = pipeline_data.ingest
    assert (s.frames, s.windows, s.vqa, s.skipped) == (24 + 18 + 16 + 2 * 12, 4 + 2, 4, {"llava_without_image": 1})
    assert s.quarantined == {"frames": 0, "windows": 0, "vqa": 0}
    report = json.loads((pipeline_data.ingested / "quarantine.json").read_text())
    assert report["records"] == [] and report["tables"]["frames"]["total"] == 82
    assert "no records quarantined" in (pipeline_data.ingested / "quarantine.txt").read_text()


@pytest.mark.parametrize(("table", "schema"), [("frames", FRAMES_SCHEMA), ("windows", WINDOWS_SCHEMA),
                                               ("vqa", VQA_SCHEMA)])
def test_tables_have_their_documented_schema_and_are_partitioned(pipeline_data, table, schema):
    files = part_files(pipeline_data.ingested / table)
    for path in files:
        assert pq.read_schema(path).remove_metadata().equals(schema), path
        assert pq.ParquetFile(path).metadata.num_rows <= pipeline_data.cfg.ingest.rows_per_file
    if table == "frames":
        assert len(files) > 3  # rows_per_file=16 splits the frames into several parallel-readable files


def test_calvin_frames_keep_the_recorded_values(pipeline_data):
    frames = read_table(pipeline_data.ingested / "frames").to_pylist()
    row = next(r for r in frames if r["dataset"] == "calvin" and r["split"] == "training" and r["episode"] == 1
               and r["step"] == 5)
    episodes = np.load(pipeline_data.raw / "calvin" / "training" / "ep_start_end_ids.npy")
    assert row["frame_id"] == episodes[1][0] + 5 and row["scene"] == "calvin_scene_A"
    npz = np.load(pipeline_data.raw / "calvin" / "training" / f"episode_{row['frame_id']:07d}.npz")
    assert np.array_equal(decode_image(row["rgb_static"]), npz["rgb_static"])  # PNG: lossless
    assert np.array_equal(decode_image(row["rgb_gripper"]), npz["rgb_gripper"])
    np.testing.assert_allclose(row["actions"], npz["rel_actions"].astype(np.float32))
    np.testing.assert_allclose(row["abs_actions"], npz["actions"].astype(np.float32))
    np.testing.assert_allclose(row["scene_obs"], npz["scene_obs"].astype(np.float32))
    val = [r for r in frames if r["split"] == "validation"]
    assert len(val) == 16 and {r["scene"] for r in val} == {"calvin_scene_D"}


def test_bridge_frames_keep_their_jpeg_bytes_and_one_window_per_trajectory(pipeline_data):
    frames = [r for r in read_table(pipeline_data.ingested / "frames").to_pylist() if r["dataset"] == "bridge"]
    assert sorted({r["episode"] for r in frames}) == [0, 1]
    first = next(r for r in frames if r["episode"] == 1 and r["step"] == 3)
    traj = pipeline_data.raw / "bridge" / BRIDGE_TRAJ.format(1)
    assert first["rgb_static"] == (traj / "images0" / "im_3.jpg").read_bytes() and first["rgb_gripper"] is None
    last = next(r for r in frames if r["episode"] == 1 and r["step"] == 11)
    assert last["actions"] is None  # policy_out.pkl holds T-1 actions
    windows = [w for w in read_table(pipeline_data.ingested / "windows").to_pylist() if w["dataset"] == "bridge"]
    assert [(w["episode"], w["start_step"], w["end_step"]) for w in windows] == [(0, 0, 11), (1, 0, 11)]
    assert windows[1]["instruction"] == "put the cup number 1 in the sink"


def test_calvin_windows_are_episode_relative(pipeline_data):
    windows = [w for w in read_table(pipeline_data.ingested / "windows").to_pylist() if w["dataset"] == "calvin"]
    got = [(w["split"], w["episode"], w["start_step"], w["end_step"], w["task"]) for w in windows]
    assert got == [("training", 0, 0, 11, "open_drawer"), ("training", 0, 6, 23, "move_slider_left"),
                   ("training", 1, 2, 17, "turn_on_led"), ("validation", 0, 0, 15, "open_drawer")]


def test_vqa_rows_drop_the_placeholder_and_skip_text_only_samples(pipeline_data):
    rows = read_table(pipeline_data.ingested / "vqa").to_pylist()
    assert [r["id"] for r in rows] == [f"{i:09d}" for i in range(4)]
    assert rows[1]["questions"] == ["What colour is square 1?", "Where is it?"]
    assert rows[1]["answers"] == ["Square 1 is a bright colour.", "Near the top."]
    assert rows[0]["image"] == (pipeline_data.raw / "llava" / rows[0]["image_path"]).read_bytes()


# --------------------------------------------------------------------------- corruptions


def _edit_npz(path, **changes):
    data = dict(np.load(path))
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    np.savez_compressed(path, **data)


def _calvin_frame(raw, episode, step, split="training"):
    first = np.load(raw / "calvin" / split / "ep_start_end_ids.npy")[episode][0]
    return raw / "calvin" / split / f"episode_{first + step:07d}.npz"


def corrupt(raw):
    """Every corruption kind once; returns the expected (table, file, key, kind) records."""
    f = lambda e, s: _calvin_frame(raw, e, s)  # noqa: E731
    _edit_npz(f(0, 1), rgb_gripper=None)
    _edit_npz(f(0, 2), rgb_static=np.zeros((200, 199, 3), np.uint8))
    _edit_npz(f(0, 3), rgb_static=np.zeros((200, 200, 3), np.float32))
    robot = np.load(f(0, 4))["robot_obs"].copy()
    robot[3] = np.nan
    _edit_npz(f(0, 4), robot_obs=robot)
    rel = np.load(f(0, 20))["rel_actions"].copy()
    rel[6] = 0.5
    _edit_npz(f(0, 20), rel_actions=rel)
    f(0, 21).write_bytes(f(0, 21).read_bytes()[:300])  # truncated
    f(0, 22).unlink()
    ann_path = raw / "calvin" / "training" / "lang_annotations" / "auto_lang_ann.npy"
    ann = np.load(ann_path, allow_pickle=True).item()
    last = np.load(raw / "calvin" / "training" / "ep_start_end_ids.npy")[0][1]
    ann["info"]["indx"].append((last - 3, last + 5))  # runs past episode 0 into the gap
    ann["language"]["ann"].append("too long")
    ann["language"]["task"].append("open_drawer")
    np.save(ann_path, ann, allow_pickle=True)
    traj0, traj1 = (raw / "bridge" / BRIDGE_TRAJ.format(i) for i in (0, 1))
    (traj0 / "images0" / "im_4.jpg").unlink()
    (traj0 / "images0" / "im_5.jpg").write_bytes((traj0 / "images0" / "im_5.jpg").read_bytes()[:200])
    obs = pickle.loads((traj1 / "obs_dict.pkl").read_bytes())
    del obs["state"]
    (traj1 / "obs_dict.pkl").write_bytes(pickle.dumps(obs))
    samples = json.loads((raw / "llava" / "llava_v1_5_mix665k.json").read_text())
    (raw / "llava" / samples[0]["image"]).unlink()
    img = raw / "llava" / samples[1]["image"]
    img.write_bytes(img.read_bytes()[:150])
    samples[2]["conversations"][1]["from"] = "human"
    del samples[3]["conversations"]
    samples.append({"id": "escape", "image": "../../etc/passwd", "conversations": samples[0]["conversations"]})
    (raw / "llava" / "llava_v1_5_mix665k.json").write_text(json.dumps(samples))
    tr = lambda e, s: f"training/{f(e, s).name}"  # noqa: E731
    t0, t1 = (BRIDGE_TRAJ.format(i) for i in (0, 1))
    return [("frames", tr(0, 1), "rgb_gripper", "missing_key"), ("frames", tr(0, 2), "rgb_static", "bad_shape"),
            ("frames", tr(0, 3), "rgb_static", "bad_dtype"), ("frames", tr(0, 4), "robot_obs", "non_finite"),
            ("frames", tr(0, 20), "rel_actions", "bad_value"), ("frames", tr(0, 21), f(0, 21).name, "corrupt_file"),
            ("frames", tr(0, 22), f(0, 22).name, "missing_file"),
            ("windows", "training/lang_annotations/auto_lang_ann.npy", "info.indx[3]", "outside_episode"),
            ("windows", "training/lang_annotations/auto_lang_ann.npy", "info.indx[0]", "bad_frame"),
            ("frames", t0, "images0/im_4.jpg", "missing_image"), ("frames", t0, "images0/im_5.jpg", "corrupt_file"),
            ("frames", t1, "state", "missing_key"), ("windows", t0, "trajectory", "bad_frame"),
            ("vqa", "llava_v1_5_mix665k.json[0]", "image", "missing_image"),
            ("vqa", "llava_v1_5_mix665k.json[1]", "image", "corrupt_file"),
            ("vqa", "llava_v1_5_mix665k.json[2]", "conversations[1].from", "bad_value"),
            ("vqa", "llava_v1_5_mix665k.json[3]", "conversations", "missing_key"),
            ("vqa", "llava_v1_5_mix665k.json[5]", "image", "outside_dataset")]


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory, ray_session, pipeline_data):
    root = tmp_path_factory.mktemp("corrupt")
    sources = write_raw(root / "raw")
    expected = corrupt(root / "raw")
    cfg = dataclasses.replace(pipeline_data.cfg.ingest, max_bad_fraction=1.0)
    summary = ingest_datasets(cfg, sources, root / "out")
    return root, expected, summary, json.loads((root / "out" / "quarantine.json").read_text())


def test_every_corruption_is_quarantined_with_its_reason(corrupted):
    _, expected, _, report = corrupted
    got = {(r["table"], r["file"], r["key"], r["kind"]) for r in report["records"]}
    missing = [e for e in expected if e not in got]
    assert not missing, f"not in the report: {missing}"
    assert all(r["reason"] for r in report["records"])


def test_quarantined_records_are_left_out_not_replaced(corrupted):
    root, _, summary, report = corrupted
    frames = read_table(root / "out" / "frames", columns=["dataset", "split", "episode", "step"]).to_pylist()
    assert {"dataset": "calvin", "split": "training", "episode": 0, "step": 1} not in frames
    assert {"dataset": "calvin", "split": "training", "episode": 0, "step": 0} in frames
    assert {"dataset": "bridge", "split": "training", "episode": 1, "step": 0} not in frames  # no state: all out
    assert summary.frames == 82 - 7 - 2 - 12 and summary.vqa == 0
    windows = read_table(root / "out" / "windows").to_pylist()
    assert [w["instruction"] for w in windows if w["dataset"] == "calvin" and w["split"] == "training"] == [
        "please turn on led"]  # episode 0 has bad frames, episode 1 none
    text = (root / "out" / "quarantine.txt").read_text()
    assert "outside_episode" in text and "images0/im_4.jpg" in text


def test_too_many_bad_records_fail_the_stage_after_writing_the_report(corrupted, pipeline_data, tmp_path):
    root = corrupted[0]
    cfg = dataclasses.replace(pipeline_data.cfg.ingest, max_bad_fraction=0.05)
    with pytest.raises(IngestError, match=r"7 of 58 frames records .*ingest.max_bad_fraction.*out.failed"):
        ingest_datasets(cfg, {"calvin": root / "raw" / "calvin"}, tmp_path / "out")
    report = json.loads((tmp_path / "out.failed" / "quarantine.json").read_text())  # the output is not replaced
    assert report["tables"]["frames"]["quarantined"] == 7 and (tmp_path / "out.failed" / "quarantine.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.failed"]  # no output, no staging folder left


def test_pickles_are_only_loaded_from_inside_the_dataset_folder(tmp_path, pipeline_data, ray_session):
    outside = tmp_path / "outside.pkl"
    outside.write_bytes(pickle.dumps({"state": 1}))
    with pytest.raises(Exception, match="outside the dataset folder"):
        load_pickled(outside, pipeline_data.raw)
    raw = tmp_path / "raw"
    shutil.copytree(pipeline_data.raw / "bridge", raw / "bridge")
    link = raw / "bridge" / BRIDGE_TRAJ.format(0) / "obs_dict.pkl"
    link.unlink()
    os.symlink(outside, link)  # a symlink out of the folder is not followed into a pickle load
    cfg = dataclasses.replace(pipeline_data.cfg.ingest, max_bad_fraction=1.0)
    ingest_datasets(cfg, {"bridge": raw / "bridge"}, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "quarantine.json").read_text())
    assert any(r["kind"] == "outside_dataset" and "outside the dataset folder" in r["reason"]
               for r in report["records"])


class _RunsShell:
    """Unpickles as `os.system(command)`: the shape of a crafted dataset file."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_crafted_bridge_pickle_is_quarantined_and_never_run(tmp_path, pipeline_data, ray_session):
    shutil.copytree(pipeline_data.raw / "bridge", tmp_path / "bridge")
    path = tmp_path / "bridge" / BRIDGE_TRAJ.format(1) / "obs_dict.pkl"
    obs = pickle.loads(path.read_bytes())
    path.write_bytes(pickle.dumps(obs | {"calibration": _RunsShell(f"touch {tmp_path / 'pwned'}")}))
    cfg = dataclasses.replace(pipeline_data.cfg.ingest, max_bad_fraction=1.0)
    summary = ingest_datasets(cfg, {"bridge": tmp_path / "bridge"}, tmp_path / "out")
    assert not (tmp_path / "pwned").exists()
    assert (summary.frames, summary.windows) == (12, 1)  # trajectory 0 is whole, trajectory 1 is out
    report = json.loads((tmp_path / "out" / "quarantine.json").read_text())
    frames = [r for r in report["records"] if r["table"] == "frames"]
    assert len(frames) == 12 and {(r["file"], r["key"], r["kind"]) for r in frames} == {
        (BRIDGE_TRAJ.format(1), "obs_dict.pkl", "unsafe_pickle")}
    reason = frames[0]["reason"]
    assert f"refused global {SYSTEM}" in reason and "nothing in this file was executed" in reason


@pytest.mark.parametrize("name", ["training/lang_annotations/auto_lang_ann.npy", "validation/scene_info.npy"])
def test_a_crafted_calvin_index_stops_the_ingest_naming_it_and_never_runs(tmp_path, pipeline_data, ray_session,
                                                                           name):
    shutil.copytree(pipeline_data.raw / "calvin", tmp_path / "calvin")
    path = tmp_path / "calvin" / name
    data = np.load(path, allow_pickle=True).item()  # the fixture's own file: trusted here
    data["extra"] = _RunsShell(f"touch {tmp_path / 'pwned'}")
    np.save(path, np.array(data, dtype=object), allow_pickle=True)
    with pytest.raises(IngestError, match=rf"calvin/{name}: refused global {SYSTEM}.*\(unsafe_pickle\)"):
        ingest_datasets(pipeline_data.cfg.ingest, {"calvin": tmp_path / "calvin"}, tmp_path / "out")
    assert not (tmp_path / "pwned").exists()


def test_bridge_trajectories_without_language_keep_their_frames(tmp_path, pipeline_data, ray_session):
    shutil.copytree(pipeline_data.raw / "bridge", tmp_path / "bridge")
    (tmp_path / "bridge" / BRIDGE_TRAJ.format(0) / "lang.txt").unlink()  # BridgeData v2 labels only some
    (tmp_path / "bridge" / BRIDGE_TRAJ.format(1) / "lang.txt").write_text("\nconfidence: 1\n")
    summary = ingest_datasets(dataclasses.replace(pipeline_data.cfg.ingest, max_bad_fraction=1.0),
                              {"bridge": tmp_path / "bridge"}, tmp_path / "out")
    assert (summary.frames, summary.windows, summary.skipped) == (24, 0, {"bridge_without_lang": 1})
    report = json.loads((tmp_path / "out" / "quarantine.json").read_text())
    assert [(r["table"], r["key"], r["kind"]) for r in report["records"]] == [("windows", "lang.txt", "bad_value")]


def test_unusable_folders_fail_with_the_file_named(tmp_path, pipeline_data, ray_session):
    shutil.copytree(pipeline_data.raw / "calvin", tmp_path / "calvin")
    (tmp_path / "calvin" / "validation" / "ep_start_end_ids.npy").unlink()
    with pytest.raises(IngestError, match="validation/ep_start_end_ids.npy"):
        ingest_datasets(pipeline_data.cfg.ingest, {"calvin": tmp_path / "calvin"}, tmp_path / "out")
    with pytest.raises(IngestError, match=r"ingest.calvin_dir: .*nothing/calvin is not a folder .*collect"):
        resolve_sources(pipeline_data.cfg.ingest, tmp_path / "nothing")


def test_frame_reader_accepts_the_renderers_float64_and_casts(pipeline_data):
    path = _calvin_frame(pipeline_data.raw, 0, 0)
    assert np.load(path)["robot_obs"].dtype == np.float64
    assert read_frame(path)["robot_obs"].dtype == np.float32


def test_calvin_frames_carry_the_description_of_their_scene_state(pipeline_data):
    from tests.fixtures.pipeline_data import describe_fixture

    frames = read_table(pipeline_data.ingested / "frames").to_pylist()
    for row in frames:
        if row["dataset"] == "calvin":
            letter = row["scene"][-1]
            assert row["description"] == describe_fixture(np.array(row["scene_obs"]), letter)
        else:
            assert row["description"] is None
    assert pipeline_data.ingest.described_frames == 24 + 18 + 16


# --------------------------------------------------------------------------- hand-made bad inputs


def _records(out):
    return {(r["table"], r["file"], r["key"], r["kind"]) for r in json.loads((out / "quarantine.json").read_text())[
        "records"]}


def _lenient(pipeline_data):
    return dataclasses.replace(pipeline_data.cfg.ingest, max_bad_fraction=1.0)


def test_odd_llava_paths_and_texts_are_quarantined_while_the_rest_ingests(tmp_path, pipeline_data, ray_session):
    llava = tmp_path / "llava"
    shutil.copytree(pipeline_data.raw / "llava", llava)
    samples = json.loads((llava / "llava_v1_5_mix665k.json").read_text())
    good = samples[0]
    undecodable = os.fsdecode(b"coco/\xff.jpg")  # a real file whose name is not UTF-8 (surrogate-escaped)
    shutil.copy(llava / good["image"], llava / undecodable)
    os.symlink("loop.jpg", llava / "coco" / "loop.jpg")
    odd = {"nul": good | {"image": "coco/train2017/\x00.jpg"}, "int": good | {"image": 12},
           "surrogate": good | {"image": "coco/\ud800.jpg"}, "undecodable": good | {"image": undecodable},
           "loop": good | {"image": "coco/loop.jpg"},
           "value": good | {"conversations": [good["conversations"][0], {"from": "gpt", "value": 5}]},
           "text": good | {"conversations": [good["conversations"][0], {"from": "gpt", "value": "a\udcffb"}]},
           "id": good | {"id": "x\ud800"}}
    (llava / "llava_v1_5_mix665k.json").write_text(json.dumps(samples + list(odd.values())))
    summary = ingest_datasets(_lenient(pipeline_data), {"llava": llava}, tmp_path / "out")
    assert summary.vqa == 4 and summary.quarantined == {"vqa": len(odd)}
    where = {name: f"llava_v1_5_mix665k.json[{len(samples) + i}]" for i, name in enumerate(odd)}
    assert _records(tmp_path / "out") == {
        ("vqa", where["nul"], "image", "bad_path"), ("vqa", where["int"], "image", "bad_path"),
        ("vqa", where["surrogate"], "image", "bad_path"), ("vqa", where["undecodable"], "image", "bad_path"),
        ("vqa", where["loop"], "image", "bad_path"), ("vqa", where["value"], "conversations[1].value", "bad_value"),
        ("vqa", where["text"], "conversations[1].value", "bad_value"), ("vqa", where["id"], "id", "bad_value")}
    text = (tmp_path / "out" / "quarantine.txt").read_text(encoding="utf-8")  # odd characters written escaped
    assert r"\x00.jpg" in text and r"\ud800" in text and r"\udcff" in text


def test_calvin_frames_are_read_only_from_inside_the_dataset(tmp_path, pipeline_data, ray_session):
    calvin, elsewhere = tmp_path / "calvin", tmp_path / "elsewhere"
    shutil.copytree(pipeline_data.raw / "calvin", calvin)
    elsewhere.mkdir()
    out_frame, in_frame = _calvin_frame(tmp_path, 0, 5), _calvin_frame(tmp_path, 0, 6)
    shutil.move(out_frame, elsewhere / out_frame.name)
    os.symlink(elsewhere / out_frame.name, out_frame)  # the same bytes, but outside the dataset folder
    (calvin / "mirror").mkdir()
    shutil.move(in_frame, calvin / "mirror" / in_frame.name)
    os.symlink(calvin / "mirror" / in_frame.name, in_frame)  # a symlink inside the dataset is followed
    summary = ingest_datasets(_lenient(pipeline_data), {"calvin": calvin}, tmp_path / "out")
    assert _records(tmp_path / "out") >= {("frames", f"training/{out_frame.name}", out_frame.name, "outside_dataset")}
    assert summary.quarantined["frames"] == 1 and summary.frames == 24 + 18 + 16 - 1
    steps = {r["step"] for r in read_table(tmp_path / "out" / "frames").to_pylist()
             if r["split"] == "training" and r["episode"] == 0}
    assert 6 in steps and 5 not in steps


@pytest.mark.parametrize("name", ["training/ep_start_end_ids.npy", "validation/scene_info.npy",
                                  "training/lang_annotations/auto_lang_ann.npy"])
def test_a_calvin_index_file_outside_the_dataset_stops_the_ingest(tmp_path, pipeline_data, ray_session, name):
    calvin = tmp_path / "calvin"
    shutil.copytree(pipeline_data.raw / "calvin", calvin)
    shutil.move(calvin / name, tmp_path / "index.npy")
    os.symlink(tmp_path / "index.npy", calvin / name)
    with pytest.raises(IngestError, match=rf"calvin/{name}: .*outside the dataset folder.*\(outside_dataset\)"):
        ingest_datasets(pipeline_data.cfg.ingest, {"calvin": calvin}, tmp_path / "out")


def test_bridge_files_are_read_only_from_inside_the_dataset(tmp_path, pipeline_data, ray_session):
    bridge, elsewhere = tmp_path / "bridge", tmp_path / "elsewhere"
    shutil.copytree(pipeline_data.raw / "bridge", bridge)
    traj0, traj1 = (bridge / BRIDGE_TRAJ.format(i) for i in (0, 1))
    shutil.copytree(traj0, elsewhere / "traj2")
    os.symlink(elsewhere / "traj2", traj0.parent / "traj2")  # a whole trajectory outside
    (traj0 / "images0" / "im_3.jpg").rename(elsewhere / "im_3.jpg")
    os.symlink(elsewhere / "im_3.jpg", traj0 / "images0" / "im_3.jpg")
    (traj1 / "lang.txt").rename(elsewhere / "lang.txt")
    os.symlink(elsewhere / "lang.txt", traj1 / "lang.txt")
    (traj1 / "images0" / "im_3.jpg").unlink()
    os.symlink(traj0 / "images0" / "im_2.jpg", traj1 / "images0" / "im_3.jpg")  # inside the dataset: read
    summary = ingest_datasets(_lenient(pipeline_data), {"bridge": bridge}, tmp_path / "out")
    t0, t1, t2 = (BRIDGE_TRAJ.format(i) for i in range(3))
    assert _records(tmp_path / "out") == {
        ("frames", t0, "images0/im_3.jpg", "outside_dataset"), ("windows", t0, "trajectory", "bad_frame"),
        ("windows", t1, "lang.txt", "outside_dataset"), ("frames", t2, "trajectory", "outside_dataset"),
        ("windows", t2, "trajectory", "bad_frame")}
    assert summary.frames == 2 * 12 - 1 and summary.windows == 0
    row = next(r for r in read_table(tmp_path / "out" / "frames").to_pylist() if r["episode"] == 1 and r["step"] == 3)
    assert row["rgb_static"] == (traj0 / "images0" / "im_2.jpg").read_bytes()


@pytest.mark.parametrize("layout", ["empty", "empty_splits"])
def test_an_empty_calvin_folder_is_an_error_naming_it(tmp_path, pipeline_data, ray_session, layout):
    calvin = tmp_path / "calvin"
    calvin.mkdir()
    if layout == "empty_splits":
        (calvin / "training").mkdir()
        (calvin / "validation").mkdir()
    with pytest.raises(IngestError, match=rf"{calvin}: no frames found \(expected training/ and validation/ with "
                                          r"episode_\*\.npz\)"):
        ingest_datasets(pipeline_data.cfg.ingest, {"calvin": calvin}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_calvin_index_without_episodes_is_an_error(tmp_path, pipeline_data, ray_session):
    calvin = tmp_path / "calvin"
    shutil.copytree(pipeline_data.raw / "calvin", calvin)
    for split in ("training", "validation"):
        np.save(calvin / split / "ep_start_end_ids.npy", np.zeros((0, 2), np.int64))
    with pytest.raises(IngestError, match=rf"{calvin}: no frames found \(ep_start_end_ids.npy .* lists no episode"):
        ingest_datasets(pipeline_data.cfg.ingest, {"calvin": calvin}, tmp_path / "out")


@pytest.mark.parametrize(("samples", "message"), [
    (None, r"no LLaVA sample list \(expected llava_v1_5_mix665k.json"), ([], r"no samples found with an image"),
    ([{"id": "t", "conversations": []}], r"no samples found with an image \(1 samples, all text-only\)")])
def test_an_empty_llava_folder_is_an_error_naming_it(tmp_path, pipeline_data, ray_session, samples, message):
    llava = tmp_path / "llava"
    llava.mkdir()
    if samples is not None:
        (llava / "llava_v1_5_mix665k.json").write_text(json.dumps(samples))
    with pytest.raises(IngestError, match=rf"{llava}.*{message}"):
        ingest_datasets(pipeline_data.cfg.ingest, {"llava": llava}, tmp_path / "out")


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failed_ingest_leaves_the_previous_output_as_it_was(tmp_path, pipeline_data, ray_session):
    calvin, out = tmp_path / "calvin", tmp_path / "out"
    shutil.copytree(pipeline_data.raw / "calvin", calvin)
    ingest_datasets(pipeline_data.cfg.ingest, {"calvin": calvin}, out)
    before = _snapshot(out)
    ann = calvin / "validation" / "lang_annotations" / "auto_lang_ann.npy"
    ann.write_bytes(ann.read_bytes()[:100])  # a corrupt index file: the whole run fails
    with pytest.raises(IngestError, match="validation/lang_annotations/auto_lang_ann.npy"):
        ingest_datasets(pipeline_data.cfg.ingest, {"calvin": calvin}, out)
    assert _snapshot(out) == before
    shutil.copytree(pipeline_data.raw / "calvin" / "validation", calvin / "validation", dirs_exist_ok=True)
    for step in range(10):  # too many bad frames: fails after the Ray tasks wrote their part files
        _calvin_frame(tmp_path, 0, step).unlink()
    with pytest.raises(IngestError, match=rf"max_bad_fraction.*; {out} is left as it was"):
        ingest_datasets(pipeline_data.cfg.ingest, {"calvin": calvin}, out)
    assert _snapshot(out) == before and (tmp_path / "out.failed" / "quarantine.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calvin", "out", "out.failed"]  # no staging left


def test_a_successful_ingest_replaces_the_whole_output(tmp_path, pipeline_data, ray_session):
    out = tmp_path / "out"
    (out / "frames").mkdir(parents=True)
    (out / "frames" / "part-stale.parquet").write_bytes(b"from an older run")
    (tmp_path / "out.failed").mkdir()  # the report of an earlier failed run
    summary = ingest_datasets(pipeline_data.cfg.ingest, {"bridge": pipeline_data.raw / "bridge"}, out)
    assert not (out / "frames" / "part-stale.parquet").exists() and summary.report == str(out / "quarantine.json")
    assert read_table(out / "frames").num_rows == 24 and json.loads((out / "quarantine.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no backup, staging or stale report left


def test_an_undecodable_bridge_folder_and_a_ragged_pickle_array_are_quarantined(tmp_path, pipeline_data, ray_session):
    bridge = tmp_path / "bridge"
    shutil.copytree(pipeline_data.raw / "bridge", bridge)
    traj0, traj1 = (bridge / BRIDGE_TRAJ.format(i) for i in (0, 1))
    shutil.copytree(traj0, traj0.parent / os.fsdecode(b"traj\xff"))  # not UTF-8: cannot be a `source` string
    obs = pickle.loads((traj1 / "obs_dict.pkl").read_bytes())
    (traj1 / "obs_dict.pkl").write_bytes(pickle.dumps(obs | {"state": [[0.0] * 7, [0.0] * 6]}))  # ragged
    summary = ingest_datasets(_lenient(pipeline_data), {"bridge": bridge}, tmp_path / "out")
    odd = BRIDGE_TRAJ.format(r"\udcff")
    assert _records(tmp_path / "out") == {
        ("frames", odd, "trajectory", "bad_path"), ("windows", odd, "trajectory", "bad_frame"),
        ("frames", BRIDGE_TRAJ.format(1), "state", "bad_shape"), ("windows", BRIDGE_TRAJ.format(1), "trajectory",
                                                                   "bad_frame")}
    assert (summary.frames, summary.windows) == (12, 1)


def test_a_source_left_out_of_ingest_sources_is_absent_not_an_error(tmp_path):
    import dataclasses

    from components.core.config import load_config
    from components.data.ingest import resolve_sources

    raw = tmp_path / "raw"
    for name in ("calvin", "llava"):
        (raw / name).mkdir(parents=True)
    cfg = dataclasses.replace(load_config().ingest, sources=("calvin", "llava"))
    assert resolve_sources(cfg, raw) == {"calvin": raw / "calvin", "bridge": None, "llava": raw / "llava"}
    with pytest.raises(IngestError, match=r"ingest.bridge_dir: .* is not a folder"):
        resolve_sources(dataclasses.replace(cfg, sources=("calvin", "bridge")), raw)
