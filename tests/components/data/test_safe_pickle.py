"""components/data/safe_pickle.py: crafted pickles (code execution, numpy memory-corruption tricks) are refused
unrun; the files CALVIN, Bridge and our writers produce load exactly as `np.load`/`pickle.load` load them."""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import re
import subprocess

import numpy as np
import pytest

from components.data.safe_pickle import UnsafePickleError, load_npy, load_pickle

PROTOCOLS = (2, 3, 4, 5)


class Reduce:
    """Pickles as whatever `__reduce__` tuple it is given: how an attacker writes a crafted file."""

    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def payloads(marker):
    """(refused global, object whose unpickling would create `marker`) for three ways of running code."""
    return {"system": (f"{os.system.__module__}.system", Reduce(os.system, (f"touch {marker}",))),
            "exec": ("builtins.exec", Reduce(exec, (f"open({str(marker)!r}, 'w').close()",))),
            "subprocess": ("subprocess.call", Reduce(subprocess.call, (["touch", str(marker)],)))}


def obs_dict(steps=5, seed=0):
    """A BridgeData v2 `obs_dict.pkl` as its recorder writes it: numpy arrays, lists, strings."""
    rng = np.random.default_rng(seed)
    state = rng.uniform(-1, 1, (steps, 7))
    return {"full_state": state.copy(), "state": state, "qpos": rng.uniform(-1, 1, (steps, 6)).astype(np.float32),
            "eef_transform": np.tile(np.eye(4), (steps, 1, 1)), "env_done": np.zeros(steps, dtype=bool),
            "time_stamp": list(np.arange(steps) * 0.2), "t_get_obs": [float(t) for t in range(steps)],
            "task_stage": np.arange(steps, dtype=np.int64), "high_bound": np.float64(0.4)}


def policy_out(steps=5, seed=0):
    """A Bridge `policy_out.pkl`: one dict per step with `actions` (7,) and some bookkeeping."""
    rng = np.random.default_rng(seed)
    return [{"actions": rng.uniform(-0.05, 0.05, 7), "new_robot_transform": np.eye(4), "policy_type": "VRTeleopPolicy",
             "done": np.bool_(t == steps - 2)} for t in range(steps - 1)]


def calvin_annotations(n=3):
    """CALVIN's `auto_lang_ann.npy` dict (numpy scalars in `indx`, as numpy-built windows give them)."""
    indx = [(np.int64(10 * i), np.int64(10 * i + 64)) for i in range(n - 1)] + [(100, 163)]
    return {"info": {"episodes": [], "indx": indx},
            "language": {"ann": [f"open the drawer {i}" for i in range(n)], "task": ["open_drawer"] * n,
                         "emb": np.random.default_rng(0).standard_normal((n, 1, 384)).astype(np.float32)}}


def write_npy(path, value, protocol, numpy1_names=False):
    """A `.npy` holding `value` as a 0-d object array, pickled with `protocol` (numpy 1.x names if asked)."""
    array = np.empty((), dtype=object)
    array[()] = value
    payload = pickle.dumps(array, protocol=protocol)
    if numpy1_names:  # what numpy 1.x (which wrote the real CALVIN files) names; protocols 2-3 only (no frames)
        payload = payload.replace(b"numpy._core.", b"numpy.core.")
        assert b"numpy.core.multiarray" in payload
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
        f.write(payload)
    return path


def assert_same(got, want, where="value"):
    """Deep equality that also checks types and dtypes (numpy's `==` would let float32 pass for float64)."""
    assert type(got) is type(want), f"{where}: {type(got)} != {type(want)}"
    if isinstance(want, np.ndarray):
        assert (got.dtype, got.shape) == (want.dtype, want.shape), where
        if want.dtype == object:
            for i, (g, w) in enumerate(zip(got.ravel(), want.ravel(), strict=True)):
                assert_same(g, w, f"{where}[{i}]")
        else:
            assert np.array_equal(got, want), where
    elif isinstance(want, dict):
        assert list(got) == list(want), where
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, np.generic):
        assert got.dtype == want.dtype and got == want, where
    else:
        assert got == want, where


# --------------------------------------------------------------------------- crafted files


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", ["system", "exec", "subprocess"])
def test_a_crafted_pkl_is_refused_naming_file_and_global_and_runs_nothing(tmp_path, kind, protocol):
    marker = tmp_path / "pwned"
    refused, evil = payloads(marker)[kind]
    path = tmp_path / "obs_dict.pkl"
    path.write_bytes(pickle.dumps(obs_dict() | {"note": evil}, protocol=protocol))  # hidden among real arrays
    with pytest.raises(UnsafePickleError) as info:
        load_pickle(path)
    assert str(path) in str(info.value) and f"global {refused}" in str(info.value)
    assert "nothing in this file was executed" in str(info.value) and info.value.refused == f"global {refused}"
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["system", "exec", "subprocess"])
def test_a_crafted_object_npy_is_refused_and_runs_nothing(tmp_path, kind):
    marker = tmp_path / "pwned"
    refused, evil = payloads(marker)[kind]
    path = tmp_path / "auto_lang_ann.npy"
    ann = calvin_annotations()
    ann["language"]["task"].append(evil)
    np.save(path, np.array(ann, dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError, match=rf"{re.escape(str(path))}: refused global {refused}.*nothing in this"):
        load_npy(path)
    assert not marker.exists()


def test_the_crafted_files_do_run_code_under_plain_pickle(tmp_path):
    """The crafted files above are live: `pickle.load` and `np.load(allow_pickle=True)` run them."""
    for i, (_, evil) in enumerate(payloads(tmp_path / "pwned").values()):
        pickle.loads(pickle.dumps({"x": evil}))
        assert (tmp_path / "pwned").exists(), i
        (tmp_path / "pwned").unlink()
    np.save(tmp_path / "ann.npy", np.array({"x": payloads(tmp_path / "pwned")["system"][1]}, dtype=object))
    np.load(tmp_path / "ann.npy", allow_pickle=True)
    assert (tmp_path / "pwned").exists()


def _reused_dtype_pickle():
    """Protocol 2 by hand: an array uses dtype U1, then the same dtype object is rebuilt as U3 (12 bytes per item
    over the array's 4-byte items: out-of-bounds reads and writes)."""
    dtype = b"cnumpy\ndtype\nX\x02\x00\x00\x00U1\x89\x88\x87Rq\x00"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
    build_array = b"(K\x01K\x02\x85h\x00\x89C\x08" + b"a\0\0\0b\0\0\0" + b"tb"
    rebuild_dtype = b"h\x00(K\x03X\x01\x00\x00\x00<NNNK\x0cK\x04K\x08tb"
    return b"\x80\x02" + dtype + array + build_array + rebuild_dtype + b"\x86."


CRAFTED = {
    # numpy: a dtype whose object field lies 100000 bytes past its 8-byte items (segfaults under pickle.load)
    "field_past_itemsize": (lambda: pickle.dumps(Reduce(np.dtype, ("O8", False, True), (
        3, "|", None, ("a",), {"a": (np.dtype("O"), 100000)}, 8, 1, 63))), "numpy dtype state with fields"),
    "object_dtype_without_refcount": (lambda: pickle.dumps(Reduce(np.dtype, ("O8", False, True), (
        3, "|", None, None, None, -1, -1, 0))), "numpy dtype dtype('O')"),
    "structured_dtype": (lambda: pickle.dumps(np.zeros(2, dtype=[("a", "O")])), "numpy dtype dtype('V8')"),
    # numpy: ndarray(shape, object, buffer=bytes) turns raw bytes into object pointers
    "ndarray_over_bytes": (lambda: pickle.dumps(Reduce(np.ndarray, ((2,), np.dtype(object), b"\0" * 16))),
                           "call of numpy.ndarray"),
    "reconstruct_large": (lambda: pickle.dumps(Reduce(np.empty(0).__reduce__()[0], (np.ndarray, (10**9,), b"b"))),
                          "numpy _reconstruct with arguments other than numpy's own"),
    "dtype_rebuilt_after_use": (_reused_dtype_pickle, "state update (BUILD) of a numpy dtype"),
    "newobj": (lambda: b"\x80\x02c__builtin__\ncomplex\nK\x01K\x02\x86\x81.", "opcode NEWOBJ"),
    "inst": (lambda: b"(i__builtin__\nset\n.", "opcode INST"),
    "extension": (lambda: b"\x80\x02\x82\x01.", "opcode EXT1"),
    "other_codec": (lambda: pickle.dumps(Reduce(__import__("_codecs").encode, ("x", "rot13"))),
                    "call of _codecs.encode with encoding 'rot13'"),
    "copyreg_reconstructor": (lambda: pickle.dumps(Reduce(copyreg._reconstructor, (object, object, None))),
                              "global copyreg._reconstructor"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_numpy_and_pickle_machinery_cannot_be_abused(tmp_path, name):
    make, refused = CRAFTED[name]
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(make())
    with pytest.raises(UnsafePickleError) as info:
        load_pickle(path)
    assert f"{path}: refused {refused}" in str(info.value)


def test_the_reused_dtype_trick_is_live_under_plain_pickle():
    array, dtype = pickle.loads(_reused_dtype_pickle())
    assert dtype == np.dtype("<U3") and array.dtype is dtype and array.nbytes == 24  # its buffer holds 8 bytes


# --------------------------------------------------------------------------- real formats load unchanged


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bridge_pickles_load_as_pickle_loads_them(tmp_path, protocol):
    for name, value in (("obs_dict.pkl", obs_dict()), ("policy_out.pkl", policy_out()),
                        ("agent_data.pkl", {"camera_info": {}, "cams": {1, 2}, "f": frozenset("a"), "z": 1j})):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        assert_same(load_pickle(path), pickle.loads(path.read_bytes()), name)


def test_the_bridge_recorders_files_load_as_pickle_loads_them(tmp_path):
    from components.collection.bridge_recorder import write_trajectory

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(4)]
    meta = {"scene": "A", "task": "open_drawer", "success": True, "camera": {"fov": 40.0}, "colours": [0.1, 0.2],
            "control_hz": 15.0}
    write_trajectory(tmp_path, frames, rng.uniform(-1, 1, (4, 15)), np.array([1.0, 0.0, 1.0, 1.0]), "open", meta)
    for name in ("obs_dict.pkl", "policy_out.pkl", "agent_data.pkl"):
        assert_same(load_pickle(tmp_path / name), pickle.loads((tmp_path / name).read_bytes()), name)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_calvin_index_files_load_as_np_load_loads_them(tmp_path, protocol):
    files = {"auto_lang_ann.npy": calvin_annotations(),
             "scene_info.npy": {"calvin_scene_B": [0, 598909], "calvin_scene_C": [598910, 1191338]},
             "embeddings.npy": {"open_drawer": {"emb": np.ones((1, 1, 384), np.float32), "ann": ["open the drawer"]}}}
    for name, value in files.items():
        for numpy1 in (False, True) if protocol <= 3 else (False,):
            path = write_npy(tmp_path / name, value, protocol, numpy1_names=numpy1)
            assert_same(load_npy(path), np.load(path, allow_pickle=True), f"{name} numpy1={numpy1}")


def test_the_calvin_writers_files_load_as_np_load_loads_them(tmp_path):
    from components.collection.calvin_recorder import EpisodeJob, EpisodeResult
    from components.collection.calvin_writer import write_annotations, write_index

    split = tmp_path / "validation"
    split.mkdir()
    job = EpisodeJob(scene="D", split="validation", seed=0, num_tasks=2, window=10, stride=5, depth=False)
    results = [EpisodeResult(job, frames=30, windows=[(0, 9, "open_drawer", "open the drawer"),
                                                      (12, 29, "turn_on_led", "turn on the led")]),
               EpisodeResult(job, frames=20, windows=[(5, 19, "move_slider_left", "push the door to the left")])]
    bounds = np.array([[0, 29], [30, 49]], dtype=np.int64)
    write_index(split, bounds, results)
    write_annotations(split, bounds, results)
    names = ["scene_info.npy", "ep_start_end_ids.npy", "ep_lens.npy", "lang_annotations/auto_lang_ann.npy",
             "lang_annotations/embeddings.npy"]
    for name in names:
        assert_same(load_npy(split / name), np.load(split / name, allow_pickle=True), name)
    assert load_npy(split / "scene_info.npy").item() == {"calvin_scene_D": [0, 49]}


def test_plain_npy_files_never_reach_the_unpickler_and_non_npy_files_fail(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([[0, 5], [9, 20]], dtype=np.int64))
    assert_same(load_npy(tmp_path / "ids.npy"), np.load(tmp_path / "ids.npy"))
    (tmp_path / "fake.npy").write_bytes(pickle.dumps({"a": 1}))  # np.load(allow_pickle=True) would unpickle it
    with pytest.raises(ValueError):
        load_npy(tmp_path / "fake.npy")
    path = tmp_path / "not_an_array.npy"
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="payload is a dict"):
        load_npy(path)


def test_numpy_scalars_and_protocol_5_buffers_round_trip():
    from components.data.safe_pickle import SafeUnpickler

    values = [np.float16(1.5), np.int8(-3), np.uint64(7), np.complex64(1j), np.bool_(False), np.str_("é"),
              np.bytes_(b"x"), np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.arange(10)[::3],
              np.array(["ab", "c"]), np.zeros((0, 1, 384), np.float32), np.arange(4, dtype=">i4"), b"", None]
    for protocol in (0, 1, *PROTOCOLS):
        data = pickle.dumps(values, protocol=protocol)
        assert_same(SafeUnpickler(io.BytesIO(data), "memory").load(), pickle.loads(data), f"protocol {protocol}")
