"""The MLflow UI in headless Chromium on the ablation experiment the `ray job submit` test wrote: the
compare view lists every variant's run. A screenshot is kept in reports/browser/ and in the parent run.

Chromium is Debian's (`make test` installs it); under CI=true its absence fails the test.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from components.core.tracking import attach_run, find_runs
from tests.conftest import PROJECT_ROOT, require

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]
# flags that work headless in a container (no sandbox, GPU, network extras or first-run UI)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=20000", "--window-size=1400,900")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_ui(ablation_job, tmp_path):
    """`mlflow ui` on the ablation job's store; yields its URL; stopped by its process id."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", ablation_job.target.uri,
               "--default-artifact-root", ablation_job.target.artifact_root, "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    with (tmp_path / "mlflow_ui.log").open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, timeout_s=240)  # the first start migrates the sqlite schema (~60 s here)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def wait_healthy(url: str, server: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, "mlflow ui exited; see mlflow_ui.log in the test's tmp folder"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    pytest.fail(f"mlflow ui not healthy at {url} after {timeout_s} s")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("chromium"), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


def test_the_mlflow_ui_compares_every_ablation_variant(ablation_job, mlflow_ui, tmp_path):
    require(shutil.which("chromium") is not None, "chromium (Debian package; `make test` installs it)")
    [parent] = find_runs(ablation_job.target, "upvla-ablations", "attributes.run_name = 'ablations-all-s0'")
    children = find_runs(ablation_job.target, "upvla-ablations",
                         f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`upvla.role` = 'variant'")
    assert len(children) == 3
    ids = json.dumps([run.info.run_id for run in children])
    url = (f"{mlflow_ui}/#/compare-runs?runs={quote(ids)}"
           f"&experiments={quote(json.dumps([parent.info.experiment_id]))}")
    dom = chromium("--dump-dom", url, profile=tmp_path / "chromium-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for run in children:
        assert run.info.run_name in dom.stdout  # e.g. ablation-no_mmu_condition-s0, a column of the compare view
    assert "avg_seq_len" in dom.stdout  # the metric the variants are compared on
    shot = tmp_path / "mlflow_compare.png"
    result = chromium(f"--screenshot={shot}", url, profile=tmp_path / "chromium-shot")
    assert result.returncode == 0 and shot.stat().st_size > 10_000, result.stderr[-2000:]
    kept = PROJECT_ROOT / "reports" / "browser"
    kept.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, kept / shot.name)
    attach_run(ablation_job.target, parent.info.run_id).log_artifact(shot, "screenshots")
