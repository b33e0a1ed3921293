"""Connecting a stage's driver to Ray: the cluster at `RAY_ADDRESS`, or a fresh local Ray on 127.0.0.1.

Example::

    with ray_connection(cfg.cluster.num_cpus):
        summary = ingest_datasets(...)      # Ray tasks / Ray Data inside
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from components.core.entry import submitted_job_env_vars
from components.core.threads import thread_environment

# Ray Train's detached PlacementGroupCleaner asks the State API whether the train controller is alive, every
# second; the State API is served by the dashboard, which a local Ray here runs without (1 GB less), so it
# logs "Failed to query Ray Train Controller actor state" ~3000 times per training stage.
# The cleaner only matters when a controller dies ungracefully; a local Ray is shut down with its driver.
_PG_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def _quiet_placement_group_cleaner() -> None:
    """Worker setup hook of a local Ray: hide the cleaner's State-API warnings (its errors still show)."""
    logging.getLogger(_PG_CLEANER_LOGGER).setLevel(logging.ERROR)




@contextmanager
def ray_connection(num_cpus: int | None = None, *, log_to_driver: bool = False) -> Iterator[None]:
    """Use the Ray already initialised in this process, join `RAY_ADDRESS`, or start a local Ray.

    A local Ray is always a new one (`address="local"`) bound to loopback, with `num_cpus` CPUs (None =
    all of the machine); it is shut down on exit. A joined or pre-existing Ray is left running.
    `log_to_driver` forwards the workers' stdout/stderr to this terminal (training's progress bar).
    The job's workers (tasks, actors, Ray Train and Tune workers) start with the user's own OpenMP wait
    settings, if any (components.core.threads.thread_environment), on this machine or a cluster's nodes.
    """
    if ray.is_initialized():
        yield
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        # Ray refuses a driver's runtime_env that names a variable the submitted job's runtime_env already sets
        env_vars = {k: v for k, v in thread_environment().items() if k not in submitted_job_env_vars()}
        ray.init(address=address, log_to_driver=log_to_driver, runtime_env={"env_vars": env_vars})
    else:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver,
                 runtime_env={"worker_process_setup_hook": _quiet_placement_group_cleaner,
                              "env_vars": thread_environment()})
    try:
        yield
    finally:
        ray.shutdown()


def require_ray(stage: str) -> None:
    """Fail clearly when a stage that fans out over Ray runs without a connection."""
    if not ray.is_initialized():
        raise RuntimeError(f"{stage}: Ray is not initialised; call it inside "
                           "components.core.ray_runtime.ray_connection()")
