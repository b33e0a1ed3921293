"""Runs logged through components/core/tracking.py from this process, a subprocess and a Ray task,
read back through MLflow's own client."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest
from mlflow.tracking import MlflowClient

from components.core import tracking
from components.core.config import PROJECT_ROOT, TrackingConfig
from components.core.tracking import (
    SOURCE_CHECKOUT_VARIABLE,
    attach_run,
    experiment_name,
    find_runs,
    folder_dataset,
    git_state,
    resolve_target,
    run_name,
    start_run,
)


def test_default_store_is_sqlite_in_the_project_and_env_overrides(tmp_path, monkeypatch):
    cfg = TrackingConfig(experiment_prefix="upvla", db="mlflow.db", artifacts="mlartifacts")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    target = resolve_target(cfg, root=tmp_path)
    assert target.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert target.artifact_root == (tmp_path / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5055")
    assert resolve_target(cfg, root=tmp_path).uri == "http://127.0.0.1:5055"
    assert experiment_name(cfg, "ablations") == "upvla-ablations"
    assert run_name("tune", "no_mmu", 3) == "tune-no_mmu-s3"


def test_run_in_process_logs_params_metrics_artifacts(tracking_target, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("hello")
    with start_run(tracking_target, "upvla-test", "tune-full-s0", params={"tune.lr": 3e-4}) as run:
        run.log_metrics({"loss": 2.0}, step=0)
        run.log_metrics({"loss": 1.0}, step=1)
        run.log_artifact(note, "notes")
        run.log_dict({"a": 1}, "summary.json")
    client = MlflowClient(tracking_target.uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "tune-full-s0"
    assert got.data.params["tune.lr"] == "0.0003"
    assert [m.value for m in client.get_metric_history(run.run_id, "loss")] == [2.0, 1.0]
    assert {a.path for a in client.list_artifacts(run.run_id)} == {"notes", "summary.json"}
    assert got.info.artifact_uri.startswith(tracking_target.artifact_root)


def test_runs_record_their_source_commit_and_the_data_they_read(tracking_target, tmp_path):
    """The UI's Source and Dataset columns: the git commit of the checkout and each input with a digest."""
    data = tmp_path / "tokens"
    data.mkdir()
    (data / "manifest.json").write_text('{"shards": 1}')
    (data / "shard-0.parquet").write_bytes(b"x" * 100)
    first = folder_dataset(data, "training")
    with start_run(tracking_target, "upvla-test", "tune-full-s0", inputs=[first]) as run:
        pass
    got = MlflowClient(tracking_target.uri).get_run(run.run_id)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()
    assert got.data.tags["mlflow.source.git.commit"] == head and got.data.tags["upvla.git.dirty"] in ("true", "false")
    assert got.data.tags["mlflow.source.type"] == "LOCAL"
    (logged,) = got.inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest, logged.dataset.source) == (str(data), first.digest, str(data))
    assert [(t.key, t.value) for t in logged.tags] == [("mlflow.data.context", "training")]
    (data / "manifest.json").write_text('{"shards": 2}')  # same sizes, other manifest
    assert folder_dataset(data, "training").digest != first.digest
    (data / "shard-0.parquet").write_bytes(b"x" * 101)
    assert len({folder_dataset(data, "training").digest, first.digest}) == 2
    with pytest.raises(FileNotFoundError, match="missing"):
        folder_dataset(tmp_path / "missing", "training")


def test_a_copy_without_git_records_the_commit_of_the_checkout_it_came_from(tmp_path, monkeypatch):
    """`ray job submit` runs a copy of the checkout without .git: the runs name the submitting checkout's commit,
    and say whether the copy differs from it, without touching that checkout's index."""
    checkout = tmp_path / "checkout"
    (checkout / "pkg").mkdir(parents=True)
    (checkout / "pkg" / "code.py").write_text("A = 1\n")
    (checkout / "params.yaml").write_text("a: 1\n")

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=checkout,
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    head = git("rev-parse", "HEAD")
    index_before = (checkout / ".git" / "index").read_bytes()
    copy = tmp_path / "copy"
    shutil.copytree(checkout, copy, ignore=shutil.ignore_patterns(".git"))
    (copy / "untracked.log").write_text("a result\n")  # untracked files do not make it dirty

    assert git_state(copy) is None  # no .git of its own
    assert git_state(copy, checkout=checkout) == (head, False)
    assert (checkout / ".git" / "index").read_bytes() == index_before
    monkeypatch.setattr(tracking, "PROJECT_ROOT", copy)
    monkeypatch.delenv(SOURCE_CHECKOUT_VARIABLE, raising=False)
    assert tracking.source_tags()["upvla.git.commit"] == "unknown (not a git checkout)"
    monkeypatch.setenv(SOURCE_CHECKOUT_VARIABLE, str(checkout))
    tags = tracking.source_tags()
    assert (tags["mlflow.source.git.commit"], tags["upvla.git.dirty"], tags["upvla.git.checkout"]) == (
        head, "false", str(checkout))
    (copy / "pkg" / "code.py").write_text("A = 2\n")  # the job ran code that is not the commit
    assert tracking.source_tags()["upvla.git.dirty"] == "true"
    monkeypatch.setenv(SOURCE_CHECKOUT_VARIABLE, str(tmp_path / "not-a-checkout"))
    assert tracking.source_tags()["upvla.git.commit"] == "unknown (not a git checkout)"


def test_failed_block_marks_the_run_failed(tracking_target):
    with pytest.raises(RuntimeError), start_run(tracking_target, "upvla-test", "x") as run:
        raise RuntimeError("boom")
    assert MlflowClient(tracking_target.uri).get_run(run.run_id).info.status == "FAILED"


def test_non_finite_metrics_are_refused(tracking_target):
    with start_run(tracking_target, "upvla-test", "x") as run:
        with pytest.raises(ValueError, match="not finite"):
            run.log_metrics({"loss": float("nan")})


def test_run_from_a_subprocess(tracking_target):
    code = textwrap.dedent(f"""
        from components.core.tracking import TrackingTarget, start_run
        target = TrackingTarget(uri={tracking_target.uri!r}, artifact_root={tracking_target.artifact_root!r})
        with start_run(target, "upvla-sub", "collect-full-s0", tags={{"stage": "collect"}}) as run:
            run.log_params({{"collect.seed": 0}})
            run.log_metrics({{"episodes": 24}}, step=0)
        print(run.run_id)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip().splitlines()[-1]
    got = MlflowClient(tracking_target.uri).get_run(run_id)
    assert got.data.metrics == {"episodes": 24.0}
    assert got.data.tags["stage"] == "collect"


def test_nested_runs_from_ray_tasks(ray_session, tracking_target):
    ray = ray_session

    @ray.remote(num_cpus=0.5)
    def child(target, parent_id, preset):
        from components.core.tracking import attach_run, start_run

        attach_run(target, parent_id).log_metrics({f"started.{preset}": 1.0})
        with start_run(target, "upvla-ablations", f"tune-{preset}-s0", parent_run_id=parent_id) as run:
            run.log_metrics({"avg_len": 1.5}, step=0)
        return run.run_id

    with start_run(tracking_target, "upvla-ablations", "ablations") as parent:
        child_ids = ray.get([child.remote(tracking_target, parent.run_id, p) for p in ("full", "no_mmu")])
    client = MlflowClient(tracking_target.uri)
    for child_id in child_ids:
        run = client.get_run(child_id)
        assert run.data.tags["mlflow.parentRunId"] == parent.run_id
        assert run.data.metrics["avg_len"] == 1.5
    assert set(client.get_run(parent.run_id).data.metrics) == {"started.full", "started.no_mmu"}
    assert {r.info.run_id for r in find_runs(tracking_target, "upvla-ablations")} == {parent.run_id, *child_ids}


def test_attach_to_a_missing_run_fails_clearly(tracking_target):
    with start_run(tracking_target, "upvla-test", "x"):
        pass
    with pytest.raises(Exception, match="(?i)run"):
        attach_run(tracking_target, "0" * 32)


def test_credentials_in_the_tracking_uri_are_never_shown():
    from components.core.tracking import TrackingTarget, redact_uri

    target = TrackingTarget("https://alice:s3cret@mlflow.example.org:5000/path?token=abc", "file:///tmp/a")
    for shown in (target.display_uri, repr(target), str(target)):
        assert "s3cret" not in shown and "alice" not in shown and "abc" not in shown, shown
    assert target.display_uri == "https://***@mlflow.example.org:5000/path?***"
    assert redact_uri("sqlite:////work/mlflow.db") == "sqlite:////work/mlflow.db"  # nothing to hide: unchanged
