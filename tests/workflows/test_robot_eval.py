"""workflows/robot_eval.py: `run` with a real (tiny, untrained) UP-VLA checkpoint against franky-sim, recorded
cameras and a FIFO operator; `schedule` on the local SLURM's robot partition; `cron` lines; errors.

Budget: about 20 s on an idle CPU (most of it importing torch/transformers and the first MMU-conditioned
forward), plus the session's SLURM start when no other test started it.
"""

from __future__ import annotations

import json
import pickle
import shlex
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from components.core.config import PROJECT_ROOT
from components.core.tracking import TrackingTarget, make_client
from tests.fixtures.realsense import GRIPPER_SERIAL, STATIC_SERIAL, require_realsense, write_camera_pair
from workflows import robot_eval

CHECKPOINT = "artifacts/tune/model"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from tests.fixtures.tiny_policy import write_tiny_checkpoint

    return str(write_tiny_checkpoint(tmp_path_factory.mktemp("checkpoint") / "model"))


@pytest.fixture
def cell_params(tmp_path):
    """params.yaml with one 2-step task; MLflow store, results and SLURM folders under tmp_path; cameras unset."""
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    raw["robot"].update(trials_per_task=1, suites={"seen": [{"name": "pick_carrot", "instruction": "pick up the carrot",
                                                             "max_steps": 2}]})
    raw["tracking"].update(db=str(tmp_path / "mlflow.db"), artifacts=str(tmp_path / "mlartifacts"))
    raw["slurm"]["log_dir"] = str(tmp_path / "slurm")
    raw["robot"]["results_dir"] = str(tmp_path / "results")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def answer_prompts(folder, answers, stop):
    """Operator at a terminal attached to the job's FIFO: one answer per new prompt."""
    log, fifo = folder / "operator.log", folder / "operator.in"
    for count, answer in enumerate(answers, start=1):
        while not log.exists() or log.read_text().count("[y/n]") < count:
            if stop.is_set():
                return
            time.sleep(0.02)
        with fifo.open("w") as pipe:
            pipe.write(answer + "\n")


@pytest.mark.robot
def test_run_evaluates_a_checkpoint_on_the_robot_with_prompts_through_the_fifo(
        franky_sim_host, cell_params, tiny_checkpoint, tmp_path, capsys):
    require_realsense()
    cams = write_camera_pair(tmp_path / "cams", 50)
    out = tmp_path / "results"
    out.mkdir()
    stop = threading.Event()
    operator = threading.Thread(target=answer_prompts, args=(out, ["y", "y", "y"], stop), daemon=True)
    operator.start()  # homing, scene ready, success
    argv = ["run", "--params", str(cell_params), "--checkpoint", tiny_checkpoint, "--out", str(out), "--operator-fifo",
            "--set", f"robot.franka.hostname={franky_sim_host}", "--set", "robot.franka.dynamics_factor=0.3",
            "--set", f"robot.franka.static_camera.serial='{STATIC_SERIAL}'",  # quoted: YAML reads digits as a number
            "--set", f"robot.franka.static_camera.recording={cams['static']}",
            "--set", f"robot.franka.gripper_camera.serial='{GRIPPER_SERIAL}'",
            "--set", f"robot.franka.gripper_camera.recording={cams['gripper']}"]
    try:
        assert robot_eval.main(argv) == 0
    finally:
        stop.set()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["success_rate"] == 1.0 and summary["complete"]
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.rindex("\n{") + 1:]) == summary  # the CLI prints the summary last
    record = json.loads((out / "trials.jsonl").read_text())
    assert record["checkpoint"] == tiny_checkpoint and record["steps"] == 2
    client = make_client(TrackingTarget(uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                        artifact_root=(tmp_path / "mlartifacts").as_uri()))
    run = client.search_runs([client.get_experiment_by_name("upvla-robot").experiment_id])[0]
    assert run.info.run_name == "robot-full-s0" and run.info.status == "FINISHED"
    assert run.data.metrics["success/seen/pick_carrot"] == 1.0
    assert run.data.params["checkpoint"] == tiny_checkpoint and run.data.tags["dry_run"] == "False"
    assert "Scene ready for \"pick up the carrot\"?" in (out / "operator.log").read_text()


def test_a_bad_checkpoint_or_an_unset_camera_fails_with_the_reason(cell_params, tiny_checkpoint, tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    assert robot_eval.main(["run", "--params", str(cell_params), "--checkpoint", str(missing)]) == 2
    assert f"{missing}: not a checkpoint folder" in capsys.readouterr().err
    start = time.monotonic()  # the shipped params.yaml leaves the camera serials to the user
    assert robot_eval.main(["run", "--params", str(cell_params), "--checkpoint", tiny_checkpoint]) == 2
    assert "robot.franka.static_camera.serial: not set" in capsys.readouterr().err
    assert time.monotonic() - start < 5


def test_cron_prints_a_line_that_runs_the_same_evaluation_without_a_terminal(cell_params, capsys):
    assert robot_eval.main(["cron", "--when", "30 8 * * 1-5", "--params", str(cell_params), "--checkpoint",
                            CHECKPOINT, "--dry-run", "--set", "robot.franka.hostname=10.0.0.2"]) == 0
    line = capsys.readouterr().out.strip()
    fields, _, rest = line.partition(" cd ")
    assert fields == "30 8 * * 1-5"
    folder, _, command = rest.partition(" && ")
    assert shlex.split(folder) == [str(PROJECT_ROOT)]
    argv = shlex.split(command.rpartition(" >> ")[0])
    assert argv[1:5] == ["-m", "workflows.robot_eval", "run", "--checkpoint"] and "--operator-fifo" in argv
    assert "robot.franka.dry_run=true" in argv and "robot.franka.hostname=10.0.0.2" in argv
    out_dir = argv[argv.index("--out") + 1]
    assert out_dir == str(cell_params.parent / "results" / "artifacts-tune-model-dry-run")
    assert robot_eval.main(["cron", "--when", "daily", "--checkpoint", CHECKPOINT]) == 2
    assert "expected five cron fields" in capsys.readouterr().err


@pytest.mark.slurm
def test_schedule_submits_a_job_that_waits_for_its_time_on_the_robot_partition(local_slurm, cell_params, capsys):
    one_cpu = ["--set", "robot.slurm_cpus_per_task=1", "--set", "robot.slurm_gpus=0"]  # this node's size
    assert robot_eval.main(["schedule", "--at", "now+1hour", "--params", str(cell_params),
                            "--checkpoint", CHECKPOINT, *one_cpu]) == 0
    job_id = capsys.readouterr().out.split()[2]
    try:
        state = subprocess.run(["squeue", "--noheader", "--jobs", job_id, "--format", "%T %P %r"],
                               capture_output=True, text=True, check=True).stdout.split()
        assert state == ["PENDING", "robot", "BeginTime"]
        folder = Path(yaml.safe_load(cell_params.read_text())["slurm"]["log_dir"]) / job_id
        script = next(folder.glob("*submission.sh")).read_text()
        assert "#SBATCH --begin=now+1hour" in script and "#SBATCH --partition=robot" in script
        call = pickle.loads(next(folder.glob("*submitted.pkl")).read_bytes())  # submitit's pickled call
        command = call.args[0]
        assert command[1:5] == ["-m", "workflows.robot_eval", "run", "--checkpoint"] and "--operator-fifo" in command
    finally:
        subprocess.run(["scancel", job_id], check=True)
