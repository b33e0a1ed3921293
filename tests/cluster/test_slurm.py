"""SLURM jobs through submitit on the real local SLURM (tests/fixtures/local_slurm.py): functions, commands,
DVC pipelines and stages, begin times, partitions, failures and the CLI."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from cluster.commands import CommandSummary
from cluster.resources import WorkerResources
from cluster.slurm import (
    SlurmSubmissionError,
    SlurmUnavailableError,
    format_begin,
    make_executor,
    submit_command,
    submit_function,
    submit_pipeline,
    submit_stage,
)
from components.core.config import load_config
from tests.conftest import PROJECT_ROOT
from tests.fixtures.local_slurm import wait_state

# a job that hangs must fail the test, not the whole session
pytestmark = pytest.mark.timeout(240)
ONE_CPU = WorkerResources(cpus_per_task=1, mem_gb=1, time_min=10)
PARAMS = PROJECT_ROOT / "params.yaml"


def test_without_slurm_the_error_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    with pytest.raises(SlurmUnavailableError, match="SLURM is not available here: sbatch, srun, squeue"):
        make_executor(ONE_CPU, tmp_path, name="x")


def test_begin_times_are_written_the_way_sbatch_reads_them():
    assert format_begin(datetime(2026, 12, 1, 2, 30)) == "2026-12-01T02:30:00"
    aware = datetime(2026, 12, 1, 2, 30, tzinfo=timezone(timedelta(hours=5)))
    # SLURM reads local time: the written value, read as local time, is the same instant
    assert datetime.fromisoformat(format_begin(aware)).timestamp() == aware.timestamp()
    assert format_begin(" now+2hours ") == "now+2hours"
    with pytest.raises(ValueError, match="begin: empty"):
        format_begin(" ")


@pytest.mark.slurm
def test_a_project_function_runs_as_a_job_and_returns_its_result(local_slurm, tmp_path):
    job = submit_function(load_config, PARAMS, resources=ONE_CPU, log_dir=tmp_path)
    assert job.result() == load_config(PARAMS)
    assert job.paths.folder == tmp_path / job.job_id  # the job folder is <log_dir>/<job id>
    wait_state(job, "COMPLETED")


@pytest.mark.slurm
def test_a_command_job_runs_a_project_module(local_slurm, tmp_path):
    out = tmp_path / "resolved.yaml"
    job = submit_command(["python", "-m", "components.core.config", "--preset", "no_mmu", "--write", str(out)],
                         resources=ONE_CPU, log_dir=tmp_path)
    summary = job.result()
    assert isinstance(summary, CommandSummary) and summary.returncode == 0
    assert load_config(out, preset="no_mmu") == load_config(PARAMS, preset="no_mmu")
    script = job.paths.submission_file.read_text()
    assert "#SBATCH --cpus-per-task=1" in script and "#SBATCH --mem=1024M" in script


@pytest.mark.slurm
def test_a_failing_command_fails_the_job_with_its_status(local_slurm, tmp_path):
    job = submit_command([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"],
                         resources=ONE_CPU, log_dir=tmp_path)
    with pytest.raises(Exception, match="CommandFailedError: .* exited with status 3"):
        job.result()
    wait_state(job, "FAILED")  # from squeue: this SLURM has no accounting
    assert "boom" in job.stderr()


@pytest.mark.slurm
def test_a_job_killed_before_its_result_is_reported_not_awaited_forever(local_slurm, tmp_path):
    job = submit_command([sys.executable, "-c", "import time; time.sleep(600)"], resources=ONE_CPU, log_dir=tmp_path)
    wait_state(job, "RUNNING", timeout_s=60)
    job.cancel(check=True)
    wait_state(job, "CANCELLED", timeout_s=60)
    assert job.done(force_check=True)


@pytest.mark.slurm
def test_a_begin_time_job_stays_pending_until_its_time(local_slurm, tmp_path):
    begin = (datetime.now() + timedelta(seconds=12)).replace(microsecond=0)
    stamp = tmp_path / "started"
    job = submit_command([sys.executable, "-c", f"import time; open({str(stamp)!r}, 'w').write(str(time.time()))"],
                         resources=ONE_CPU, log_dir=tmp_path, begin=begin)
    assert f"#SBATCH --begin={begin:%Y-%m-%dT%H:%M:%S}" in job.paths.submission_file.read_text()
    while datetime.now() < begin - timedelta(seconds=2):
        info = job.get_info(mode="force")
        assert (info["State"], info["Reason"]) == ("PENDING", "BeginTime")
        time.sleep(2)
    assert job.result().returncode == 0
    assert float(stamp.read_text()) >= begin.timestamp()


@pytest.mark.slurm
def test_a_job_runs_on_the_partition_it_names(local_slurm, tmp_path):
    res = WorkerResources(cpus_per_task=1, mem_gb=1, time_min=10, partition="robot")
    job = submit_command(["sh", "-c", "echo $SLURM_JOB_PARTITION"], resources=res, log_dir=tmp_path)
    job.result()
    assert "robot" in job.stdout().splitlines()


@pytest.mark.slurm
@pytest.mark.parametrize("change, begin, says", [({"partition": "gpu"}, None, "invalid partition"),
                                                 ({"mem_gb": 100_000}, None, "node configuration is not available"),
                                                 ({}, "not-a-time", "Invalid --begin specification")])
def test_a_job_sbatch_refuses_is_reported_with_sbatchs_reason(local_slurm, tmp_path, change, begin, says):
    with pytest.raises(SlurmSubmissionError, match=f"sbatch refused the job (?s:.*){says}"):
        submit_command(["true"], resources=dataclasses.replace(ONE_CPU, **change), log_dir=tmp_path, begin=begin)


@pytest.mark.slurm
def test_the_pipeline_and_a_single_stage_run_through_dvc(local_slurm, tmp_path):
    project = _dvc_project(tmp_path / "project")
    logs = tmp_path / "logs"
    submit_stage("first", resources=ONE_CPU, log_dir=logs, cwd=project).result()
    assert (project / "first.txt").read_text() == "1\n" and not (project / "second.txt").exists()
    submit_pipeline(resources=ONE_CPU, log_dir=logs, cwd=project).result()
    assert (project / "second.txt").read_text() == "1\n2\n"
    with pytest.raises(ValueError, match="stage 'third': not in dvc.yaml \\(stages: first, second\\)"):
        submit_stage("third", resources=ONE_CPU, log_dir=logs, cwd=project)


@pytest.mark.slurm
def test_the_cli_submits_waits_and_prints_the_result(local_slurm, tmp_path):
    out = subprocess.run([sys.executable, "-m", "cluster.slurm", "command", "--cpus", "1", "--mem", "1",
                          "--partition", "robot", "--log-dir", str(tmp_path), "--begin", "now", "--wait",
                          "--", "python", "-m", "components.core.config", "--write", str(tmp_path / "c.yaml")],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "submitted job" in out.stdout and "returncode=0" in out.stdout
    assert load_config(tmp_path / "c.yaml") == load_config(PARAMS)


def test_the_cli_refuses_bad_input_with_a_message(tmp_path):
    run = [sys.executable, "-m", "cluster.slurm"]
    out = subprocess.run([*run, "command", "--log-dir", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and "give the command after --" in out.stderr
    out = subprocess.run([*run, "pipeline", "--cpus", "0", "--log-dir", str(tmp_path)], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "cpus_per_task: must be an integer >= 1" in out.stderr
    assert subprocess.run([*run, "--help"], capture_output=True, text=True).returncode == 0


def _dvc_project(root):
    """A two-stage DVC project (git + dvc init): `first` writes first.txt, `second` appends to a copy."""
    root.mkdir()
    dvc = [str(PROJECT_ROOT / ".venv" / "bin" / "dvc")]
    for command in (["git", "init", "-q"], ["git", "config", "user.email", "t@t"], ["git", "config", "user.name", "t"],
                    [*dvc, "init", "-q"]):
        subprocess.run(command, cwd=root, check=True, capture_output=True)
    (root / "dvc.yaml").write_text(
        "stages:\n"
        "  first:\n    cmd: echo 1 > first.txt\n    outs: [first.txt]\n"
        "  second:\n    cmd: cp first.txt second.txt && echo 2 >> second.txt\n    deps: [first.txt]\n"
        "    outs: [second.txt]\n")
    return root
