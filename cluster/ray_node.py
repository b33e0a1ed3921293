"""Start and stop Ray nodes as child processes: the Ray-on-SLURM head/workers and the local test head.

Each node is one `ray start --block` process. It owns the node's daemons (GCS, raylet, dashboard)
and takes them down when it gets SIGTERM, so a node is stopped by its own process id: never with
`ray stop`, which kills every Ray process on the machine, other users' and other sessions' included.

Facts about Ray 2.60 this module encodes:
* Ray 2.60 turns token authentication on for `ray start`; every process that talks to the cluster
  (workers, drivers, `ray job submit`) needs `RAY_AUTH_MODE=token` and the same token. Each cluster
  here gets its own token file, named by `RAY_AUTH_TOKEN_PATH`, instead of sharing `~/.ray/auth_token`.
* `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` binds a single-node Ray to 127.0.0.1, but then no second
  node may join; multi-node clusters run with it set to 1 and advertise the node's routable address.
* Every port is chosen free, and every node gets its own `--temp-dir`, so several clusters (test
  sessions, SLURM jobs of several users) can share a host. With the default /tmp/ray, `ray start`
  records its cluster in /tmp/ray/ray_current_cluster, and any later bare `ray.init()` on the
  machine joins that cluster instead of starting its own; /tmp/ray also belongs to its first user.

    token = write_auth_token(folder / "ray_auth_token")
    env = ray_env(token, loopback=True)
    head = start_head(node_ip="127.0.0.1", num_cpus=2, env=env, temp_dir=folder / "ray", log_path=folder / "head.log",
                      dashboard=True)
    ...  # RAY_ADDRESS=head.gcs_address python driver.py, or ray job submit --address head.dashboard_url
    stop_node(head)
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cluster.commands import VENV_BIN, project_env

RAY = str(VENV_BIN / "ray")
READY_LINE = "Ray runtime started."  # printed by `ray start` once the node's daemons are up
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


class RayNodeError(RuntimeError):
    """A Ray node did not start (or a cluster did not form); the message quotes the node's log."""


@dataclass(frozen=True)
class RayNode:
    """A running `ray start --block` process and how to reach its cluster."""

    process: subprocess.Popen
    # host:port of the cluster's GCS (RAY_ADDRESS for drivers, --address for workers)
    gcs_address: str
    # http://host:port of the job server (`ray job submit --address`); None when the head has no dashboard
    dashboard_url: str | None
    log_path: Path


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it from the ephemeral range)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def write_auth_token(path: Path) -> Path:
    """Write a fresh random cluster token, readable by its owner only; return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def ray_env(token_path: Path, *, loopback: bool, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for Ray nodes and their clients: token auth with `token_path`, no usage stats.

    Args:
        token_path: the cluster's token file (write_auth_token).
        loopback: a single-node cluster bound to 127.0.0.1 (True) or a multi-node one (False).
        extra: more variables, e.g. RAY_ADDRESS for a driver.
    """
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0" if loopback else "1",
           # a node stops only after its driver has finished, so there is nothing to drain; draining a worker
           # whose head is already gone would wait out the whole 30 s default
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    return project_env({**env, **(extra or {})})


def start_head(*, node_ip: str, num_cpus: int, env: Mapping[str, str], temp_dir: Path, log_path: Path,
               dashboard: bool = False, timeout_s: float = START_TIMEOUT_S) -> RayNode:
    """Start a head node and wait until it (and its job server, with `dashboard`) answers.

    Args:
        node_ip: the address the node binds to and advertises.
        num_cpus: CPUs the node offers to tasks.
        env: the node's environment (ray_env).
        temp_dir: the node's private Ray folder (sessions, sockets, logs); keep the path short, sockets live in it.
        log_path: where `ray start`'s own output goes.
        dashboard: run the dashboard and job server (needed by `ray job submit`; ~1 GB more memory).
        timeout_s: give up (and stop the node) after this long.
    """
    port, dashboard_port = free_port(), free_port()
    command = [RAY, "start", "--head", "--block", f"--node-ip-address={node_ip}", f"--port={port}",
               f"--temp-dir={temp_dir}",
               f"--num-cpus={num_cpus}", f"--ray-client-server-port={free_port()}",
               f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"]
    if dashboard:
        command += [f"--dashboard-host={node_ip}", f"--dashboard-port={dashboard_port}"]
    else:
        command += ["--include-dashboard=false"]
    node = RayNode(process=_spawn(command, env, log_path), gcs_address=f"{node_ip}:{port}",
                   dashboard_url=f"http://{node_ip}:{dashboard_port}" if dashboard else None, log_path=log_path)
    _wait_started(node, timeout_s)
    if dashboard:
        _wait_job_server(node, Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip(), timeout_s)
    return node


def start_worker(gcs_address: str, *, num_cpus: int, env: Mapping[str, str], temp_dir: Path, log_path: Path,
                 timeout_s: float = START_TIMEOUT_S) -> RayNode:
    """Start a worker node joining the cluster at `gcs_address`; return once its raylet runs (args as start_head)."""
    command = [RAY, "start", "--block", f"--address={gcs_address}", f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}",
               f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"]
    node = RayNode(process=_spawn(command, env, log_path), gcs_address=gcs_address, dashboard_url=None,
                   log_path=log_path)
    _wait_started(node, timeout_s)
    return node


def stop_node(node: RayNode, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the node (it stops its own daemons), then SIGKILL its process group if it lingers."""
    if node.process.poll() is None:
        node.process.terminate()
        try:
            node.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    try:  # daemons left behind by a node that died or hung: they share its process group
        os.killpg(node.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    node.process.wait()


def _spawn(command: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # a session of its own: stop_node can then reach every daemon through one process group
        return subprocess.Popen(command, env=dict(env), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_started(node: RayNode, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while READY_LINE not in node.log_path.read_text(errors="replace"):
        if node.process.poll() is not None:
            why = f"exited with status {node.process.returncode}"
        elif time.monotonic() > deadline:
            why = f"was not up after {timeout_s:.0f} s"
        else:
            time.sleep(0.5)
            continue
        stop_node(node)
        raise RayNodeError(f"ray start {why}; last lines of {node.log_path}:\n{_tail(node.log_path)}")


def _wait_job_server(node: RayNode, token: str, timeout_s: float) -> None:
    request = urllib.request.Request(f"{node.dashboard_url}/api/version", headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            if node.process.poll() is not None or time.monotonic() > deadline:
                stop_node(node)
                raise RayNodeError(f"the job server at {node.dashboard_url} never answered ({err}); "
                                   f"last lines of {node.log_path}:\n{_tail(node.log_path)}") from err
            time.sleep(0.5)


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
