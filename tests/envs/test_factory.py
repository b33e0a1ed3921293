"""make_env's registry, the real-CALVIN adapter's absent path, and the shipped data files."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from envs.calvin import CALVIN_ENV_COMMIT, INSTALL_HINT, CalvinEnv, CalvinNotInstalledError
from envs.config import EnvConfig
from envs.factory import ENV_REGISTRY, make_env
from envs.playtable import SCENES, PlayTableEnv, load_layout
from envs.playtable.desk import desk_urdf
from envs.playtable.layout import DATA_DIR

PROJECT = Path(__file__).resolve().parents[2]
CALVIN_INSTALLED = importlib.util.find_spec("calvin_env") is not None


def test_make_env_builds_playtable_in_the_configured_or_given_scene():
    cfg = EnvConfig(name="playtable", scene="D", calvin_dataset_path=None)
    with make_env(cfg, cameras=False) as env:
        assert isinstance(env, PlayTableEnv) and env.layout.name == "D" and env.cameras == []
    with make_env(cfg, scene="A", cameras=False) as env:
        assert env.layout.name == "A"
    assert sorted(ENV_REGISTRY) == ["calvin", "playtable"]


def test_unknown_env_name_is_a_clear_error():
    cfg = EnvConfig(name="mujoco", scene="D", calvin_dataset_path=None)  # bypasses the loader's Literal check
    with pytest.raises(ValueError, match="unknown environment 'mujoco'"):
        make_env(cfg)


@pytest.mark.skipif(CALVIN_INSTALLED, reason="calvin_env is installed here; this checks the message when it is not")
def test_calvin_adapter_says_how_to_install_calvin_env(tmp_path):
    cfg = EnvConfig(name="calvin", scene="D", calvin_dataset_path=str(tmp_path))
    with pytest.raises(CalvinNotInstalledError) as error:
        make_env(cfg)
    assert "not on PyPI" in str(error.value) and "pip install -e calvin_env" in str(error.value)
    assert str(error.value) == INSTALL_HINT
    # pinned at the commit that fixes turn_off_led after a reset to LED on (the `calvin` repo pins an older one)
    assert f"git -C calvin_env checkout {CALVIN_ENV_COMMIT}" in INSTALL_HINT and len(CALVIN_ENV_COMMIT) == 40
    with pytest.raises(ImportError):
        CalvinEnv(tmp_path)


def test_committed_desk_urdfs_match_the_generator():
    for scene in SCENES:
        assert (DATA_DIR / f"desk_{scene}.urdf").read_text() == desk_urdf(load_layout(scene)), (
            f"desk_{scene}.urdf is stale: run `python -m envs.playtable.desk`")


def test_a_built_wheel_ships_the_data_files(tmp_path):
    """A non-editable install finds CALVIN's YAMLs, the desk URDFs and the licenses (package data)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT / name, source / name)
    for package in ("envs", "model", "components", "workflows", "cluster"):
        shutil.copytree(PROJECT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    names = set(zipfile.ZipFile(next((tmp_path / "dist").glob("*.whl"))).namelist())
    data = sorted(p.relative_to(PROJECT).as_posix() for p in DATA_DIR.rglob("*") if p.is_file())
    assert data and [p for p in data if p not in names] == []
    assert "envs/playtable/data/calvin/LICENSE-calvin_env" in names
