"""Shared fixtures: offline, loopback-only settings and a session-wide local Ray.

Markers (pyproject.toml): `slow`, `gpu` (skipped without CUDA), `slurm`, `robot`, `browser`.
Under `CI=true` a missing system dependency that CI installs must fail a test, not skip it:
use `require(condition, reason)` instead of `pytest.skip`.
"""

from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path

import pytest

# No hub downloads, Ray bound to 127.0.0.1, no usage telemetry: set before anything imports them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip when `condition` is false, except in CI, where the dependency must be there: fail."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _sigint_handler_left_as_found(request):
    """Put back the SIGINT handler a test found, warning with the test's name if it changed.

    Libraries (Ray Train's fit, Ray Tune, mlflow's server) install SIGINT handlers; one left behind swallows
    Ctrl-C for every later test (the robot's stop-on-Ctrl-C test among them). CI's warnings summary names
    the test that leaked one.
    """
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)
        warnings.warn(f"{request.node.nodeid} left SIGINT handler {after!r} (restored {before!r})", stacklevel=1)


ROBOT_TEST_TIMEOUT_S = 240  # a robot test takes seconds; a hung simulator or libfranka call fails it in minutes


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    cuda, skip_gpu = torch.cuda.is_available(), pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
        if "robot" in item.keywords and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(ROBOT_TEST_TIMEOUT_S))


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs for the whole test session (shut down at the end)."""
    import ray

    if not ray.is_initialized():  # address="local": never join a cluster another process left on this machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture
def franky_sim_host():
    """The loopback address of a fresh franky-sim MuJoCo Franka for one `robot` test (~1.6 s to start).

    One server per test, not per session: a test that fails mid-motion (seen once in CI, on a 2-core
    runner) must not leave the next test a simulator in an unknown state.
    """
    import importlib.util

    found = importlib.util.find_spec("franky") is not None and importlib.util.find_spec("franky_sim") is not None
    require(found, "franky-control and franky-sim (pip install -e '.[robot]')")
    from tests.fixtures.sim_robot import franky_sim_command, running_sim

    with running_sim(franky_sim_command()) as host:
        yield host


@pytest.fixture(scope="session")
def local_slurm():
    """A real single-node SLURM (munged, slurmctld, slurmd) on localhost for the session.

    Partitions `main` (default) and `robot`; while it runs, `SLURM_CONF` in os.environ points at it,
    so sbatch/squeue/srun and submitit (cluster.slurm) use it. Setup: tests/fixtures/local_slurm.py.
    """
    from tests.fixtures.local_slurm import missing_tools, running_slurm

    missing = missing_tools()
    require(not missing, f"SLURM and munge ({', '.join(missing)} missing; `make test` installs them)")
    require(os.geteuid() == 0, "a local SLURM needs root: slurmd starts jobs as their user")
    with running_slurm() as slurm:
        yield slurm


@pytest.fixture(scope="session")
def local_ray_head():
    """A `ray start --head` on 127.0.0.1 with its job server, token auth and a private temp dir.

    Yields a LocalRayHead: `.address` (http://, for `ray job submit`), `.gcs_address`, and `.env`, the
    environment a client subprocess needs (a bare `ray job submit --working-dir . -- ...` works with it).
    """
    from tests.fixtures.local_ray import running_ray_head

    with running_ray_head(num_cpus=2) as head:
        yield head


@pytest.fixture
def tracking_target(tmp_path):
    """A fresh sqlite MLflow store + artifact folder under tmp_path."""
    from components.core.tracking import TrackingTarget

    return TrackingTarget(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "art").as_uri())


@pytest.fixture(scope="session")
def pipeline_data(tmp_path_factory, ray_session):
    """The data stages run once on small raw fixtures: raw -> ingested -> tokenizers -> tokens (PipelineData).

    See tests/fixtures/pipeline_data.py; used by the data, training and workflow tests.
    """
    from tests.fixtures.pipeline_data import build_pipeline_data

    return build_pipeline_data(tmp_path_factory.mktemp("pipeline"))
