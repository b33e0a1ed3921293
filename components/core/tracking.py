"""MLflow tracking for every stage and workflow; the only module in the project that imports mlflow.

The store is a sqlite file in the project folder plus a local artifact folder (both from the
`tracking:` section of params.yaml); `MLFLOW_TRACKING_URI` overrides the store, e.g. to point a
cluster's workers at a shared MLflow server. Everything goes through `MlflowClient` with explicit
run ids, never MLflow's process-global "active run", so the same calls work from the driver, a
subprocess, a Ray task or a Ray Train worker: resolve a `TrackingTarget` on the driver (absolute
paths), ship it with the run id, and `attach_run` there.

Every run records where it came from: the entry script and the git commit of the checkout (MLflow's
Source column; `upvla.git.dirty` says whether tracked files had uncommitted changes), and the data it
read as MLflow dataset inputs (the Dataset column; `DatasetRef`, `folder_dataset`), each with a digest
so two runs that read different data are told apart.

Browse with `make ui` (the MLflow UI on 127.0.0.1, same store).
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from components.core.config import PROJECT_ROOT, TrackingConfig

MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit for params
MAX_METRICS_PER_BATCH = 1000
# a dataset folder's digest reads the bytes of these files (manifests, metadata); the others count by path and size
DIGEST_READ_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True)
class DatasetRef:
    """Data a run read, as an MLflow dataset input: a name, a content digest, where it is, and how it was used."""

    name: str
    digest: str
    # a path or a description of where the data comes from
    source: str
    # MLflow's `mlflow.data.context` tag: training, evaluation, ...
    context: str
    source_type: str = "local"


def folder_dataset(path: str | Path, context: str, *, name: str | None = None) -> DatasetRef:
    """A `DatasetRef` of a file or folder, named by its path in the project unless `name` is given.

    The digest covers every file's relative path and size, and the bytes of its JSON/YAML files
    (manifests, metadata), so it is cheap on a large dataset (26k files of collected CALVIN data) and
    changes when the data's layout or manifests do.

    Raises:
        FileNotFoundError: `path` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: the dataset a run read does not exist")
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path) if file != path else file.name}\0{size}\0".encode())
        if file.suffix in DIGEST_READ_SUFFIXES:
            digest.update(file.read_bytes())
    try:
        shown = path.resolve().relative_to(PROJECT_ROOT)
    except ValueError:
        shown = path.resolve()
    return DatasetRef(name or str(shown), digest.hexdigest()[:16], str(path.resolve()), context)


# a git checkout of the project that a copy of it without .git (a `ray job submit` working dir) was made from;
# set by the workflows that take --root (workflows/ablations.py), read by source_tags()
SOURCE_CHECKOUT_VARIABLE = "UPVLA_SOURCE_CHECKOUT"


def source_tags() -> dict[str, str]:
    """MLflow's source tags for a run started by this process: the entry script, git commit and dirty flag.

    In a copy of the project without .git (Ray's working-dir copy under `ray job submit`), the commit is that
    of the checkout `UPVLA_SOURCE_CHECKOUT` names, and `upvla.git.dirty` says whether this copy's tracked files
    differ from that commit (`upvla.git.checkout` names the checkout); without it, `upvla.git.commit` says
    `unknown (not a git checkout)`.
    """
    entry = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] and Path(sys.argv[0]).is_file() else None
    try:
        name = str(entry.relative_to(PROJECT_ROOT)) if entry is not None else "python"
    except ValueError:  # a module run with -m, or a script outside the project
        name = str(entry) if entry is not None else "python"
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": name}
    try:
        state = git_state(PROJECT_ROOT)
        checkout = os.environ.get(SOURCE_CHECKOUT_VARIABLE)
        if state is None and checkout:
            state = git_state(PROJECT_ROOT, checkout=Path(checkout))
            if state is not None:
                tags["upvla.git.checkout"] = checkout
    except (OSError, subprocess.TimeoutExpired) as err:
        return tags | {"upvla.git.commit": f"unknown ({type(err).__name__})"}
    if state is None:  # e.g. a `ray job submit` working-dir copy without .git
        return tags | {"upvla.git.commit": "unknown (not a git checkout)"}
    commit, dirty = state
    return tags | {"mlflow.source.git.commit": commit, "upvla.git.dirty": str(dirty).lower()}


def git_state(work_tree: Path, *, checkout: Path | None = None) -> tuple[str, bool] | None:
    """(HEAD commit, whether tracked files differ from it) of `work_tree`, or None when it is not a checkout.

    With `checkout`: the commit is `checkout`'s HEAD and `work_tree` (a copy of it without .git) is compared
    with that commit's tracked files, in a private index so the checkout's own index is left alone.
    """
    def git(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=work_tree, capture_output=True, text=True, timeout=60,
                              env=None if env is None else {**os.environ, **env})

    if checkout is None:
        commit = git("rev-parse", "HEAD")
        if commit.returncode != 0:
            return None
        status = git("status", "--porcelain", "--untracked-files=no")
        return commit.stdout.strip(), bool(status.stdout.strip())
    git_dir = checkout / ".git"
    commit = git(f"--git-dir={git_dir}", "rev-parse", "HEAD")
    if commit.returncode != 0:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        where = (f"--git-dir={git_dir}", f"--work-tree={work_tree}")
        if git(*where, "read-tree", "HEAD", env=env).returncode != 0:
            return None
        status = git(*where, "status", "--porcelain", "--untracked-files=no", env=env)
    if status.returncode != 0:
        return None
    return commit.stdout.strip(), bool(status.stdout.strip())


@dataclass(frozen=True)
class TrackingTarget:
    """Where runs go: a tracking URI and an artifact root, both absolute so they survive a cwd change.

    The URI may carry credentials (`https://user:token@host`, `?token=...`): print `display_uri`, never
    `uri` (the dataclass repr shows the redacted form too).
    """

    uri: str = field(repr=False)
    artifact_root: str = field(repr=False)

    @property
    def display_uri(self) -> str:
        """`uri` without credentials: user:password and the query string are replaced by `***`."""
        return redact_uri(self.uri)

    def __repr__(self) -> str:
        return f"TrackingTarget(uri={self.display_uri!r}, artifact_root={redact_uri(self.artifact_root)!r})"


def redact_uri(uri: str) -> str:
    """A URI safe to print: its user:password part and its query string become `***`."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc and not parts.query and not parts.fragment:
        return uri  # nothing to hide (urlunsplit would also fold sqlite://// into sqlite://)
    netloc = f"***@{parts.netloc.rpartition('@')[2]}" if "@" in parts.netloc else parts.netloc
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


def resolve_target(cfg: TrackingConfig, root: str | Path | None = None) -> TrackingTarget:
    """The tracking store for `cfg`, relative paths taken from `root` (default: the current folder).

    `MLFLOW_TRACKING_URI`, when set, replaces the sqlite store (the artifact root stays local unless
    the server manages artifacts itself).
    """
    base = Path(root or Path.cwd()).resolve()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{base / cfg.db}"
    return TrackingTarget(uri=uri, artifact_root=(base / cfg.artifacts).as_uri())


def experiment_name(cfg: TrackingConfig, workflow: str) -> str:
    """The MLflow experiment of a workflow, e.g. `upvla-pipeline`, `upvla-ablations`."""
    return f"{cfg.experiment_prefix}-{workflow}"


def run_name(stage: str, preset: str, seed: int) -> str:
    """The run name convention: f"{stage}-{preset}-s{seed}"."""
    return f"{stage}-{preset}-s{seed}"


class MetricLogger(Protocol):
    """What stages log through; `MlflowRun` writes to MLflow, `NullLogger` drops everything."""

    run_id: str | None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (flat) parameters."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log scalar metrics at a step."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or a whole folder."""

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Save a matplotlib figure as an artifact."""

    def log_image(self, image: Any, artifact_file: str) -> None:
        """Save an image array (H, W, 3) uint8 as an artifact."""

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Save a dict as a JSON/YAML artifact."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags."""

    def log_inputs(self, datasets: list[DatasetRef]) -> None:
        """Record the data the run read (MLflow dataset inputs)."""


class NullLogger:
    """A `MetricLogger` that records nothing: the default for stages called outside a tracked run."""

    run_id = None

    def log_params(self, params: Mapping[str, Any]) -> None:  # noqa: D102
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:  # noqa: D102
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:  # noqa: D102
        pass

    def log_figure(self, figure: Any, artifact_file: str) -> None:  # noqa: D102
        pass

    def log_image(self, image: Any, artifact_file: str) -> None:  # noqa: D102
        pass

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:  # noqa: D102
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:  # noqa: D102
        pass

    def log_inputs(self, datasets: list[DatasetRef]) -> None:  # noqa: D102
        pass


NULL_LOGGER = NullLogger()


class MlflowRun:
    """One MLflow run addressed by id; picklable parts only (`target`, `run_id`), client made lazily."""

    def __init__(self, target: TrackingTarget, run_id: str) -> None:
        self.target = target
        self.run_id = run_id
        self._client = None

    def __getstate__(self) -> dict[str, Any]:
        return {"target": self.target, "run_id": self.run_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["target"], state["run_id"])

    @property
    def client(self) -> Any:
        """The `MlflowClient` of this process."""
        if self._client is None:
            self._client = make_client(self.target)
        return self._client

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (values stringified, in batches of MLflow's limit)."""
        from mlflow.entities import Param

        items = [Param(str(k), _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log scalar metrics; non-finite values raise (a NaN loss must not be hidden)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = []
        for key, value in metrics.items():
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"metric {key!r} is not finite: {value}")
            items.append(Metric(key, value, now, step or 0))
        for i in range(0, len(items), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + MAX_METRICS_PER_BATCH])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's contents, under `artifact_path`."""
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Save a matplotlib figure as `artifact_file` (e.g. `plots/success.png`)."""
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_image(self, image: Any, artifact_file: str) -> None:
        """Save an (H, W, 3) uint8 array as `artifact_file`."""
        self.client.log_image(self.run_id, image, artifact_file=artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Save a dict as JSON or YAML (by the file's extension)."""
        self.client.log_dict(self.run_id, dict(data), artifact_file)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values stringified)."""
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_inputs(self, datasets: list[DatasetRef]) -> None:
        """Record `datasets` as the run's dataset inputs (the UI's Dataset column)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [DatasetInput(Dataset(d.name, d.digest, d.source_type, d.source),
                               [InputTag("mlflow.data.context", d.context)]) for d in datasets]
        if inputs:
            self.client.log_inputs(self.run_id, datasets=inputs)


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def make_client(target: TrackingTarget) -> Any:
    """An `MlflowClient` on `target` (the sqlite schema is created on first use)."""
    from mlflow.tracking import MlflowClient

    if target.uri.startswith("sqlite:///"):
        Path(target.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=target.uri)


def get_or_create_experiment(target: TrackingTarget, name: str) -> str:
    """The id of experiment `name`, created with an artifact location under the artifact root.

    Safe when several processes race to create it.
    """
    from mlflow.exceptions import MlflowException

    client = make_client(target)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        # The kind tag makes MLflow 3's UI open on the training-runs table, not the GenAI overview.
        return client.create_experiment(name, artifact_location=f"{target.artifact_root}/{name}",
                                        tags={"mlflow.experimentKind": "custom_model_development"})
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@contextmanager
def start_run(
    target: TrackingTarget,
    experiment: str,
    name: str,
    *,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    inputs: list[DatasetRef] | None = None,
) -> Iterator[MlflowRun]:
    """Create a run (a child of `parent_run_id` if given), yield it, and end it.

    The run ends FINISHED, or FAILED if the block raises (the exception propagates).
    """
    run = create_run(target, experiment, name, parent_run_id=parent_run_id, tags=tags, params=params, inputs=inputs)
    try:
        yield run
    except BaseException:
        end_run(run, "FAILED")
        raise
    end_run(run, "FINISHED")


def create_run(target: TrackingTarget, experiment: str, name: str, *, parent_run_id: str | None = None,
               tags: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
               inputs: list[DatasetRef] | None = None) -> MlflowRun:
    """Create a RUNNING run that the caller ends with `end_run`; it carries `source_tags()` and `inputs`.

    For runs that outlive one block of code (a workflow's children, finished by Ray tasks); prefer
    `start_run` otherwise.
    """
    experiment_id = get_or_create_experiment(target, experiment)
    all_tags = source_tags() | {str(k): str(v) for k, v in (tags or {}).items()}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = MlflowRun(target, make_client(target).create_run(experiment_id, run_name=name, tags=all_tags).info.run_id)
    if params:
        run.log_params(params)
    if inputs:
        run.log_inputs(inputs)
    return run


def end_run(run: MlflowRun, status: str = "FINISHED") -> None:
    """End a run as FINISHED, FAILED or KILLED."""
    run.client.set_terminated(run.run_id, status=status)


def attach_run(target: TrackingTarget, run_id: str) -> MlflowRun:
    """Log into an existing run from another process (a Ray worker, a subprocess)."""
    run = MlflowRun(target, run_id)
    run.client.get_run(run_id)  # fail here, clearly, if the id or the store is wrong
    return run


def find_runs(target: TrackingTarget, experiment: str, filter_string: str = "") -> list[Any]:
    """Runs of an experiment (newest first), as MLflow `Run` objects; empty if it does not exist."""
    client = make_client(target)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(client.search_runs([found.experiment_id], filter_string=filter_string,
                                   order_by=["attributes.start_time DESC"]))


def metric_history(target: TrackingTarget, run_id: str, key: str) -> list[tuple[int, float]]:
    """`(step, value)` of every logged value of metric `key` in run `run_id`, by step (empty if never logged)."""
    history = make_client(target).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


def list_run_artifacts(target: TrackingTarget, run_id: str, path: str = "") -> list[tuple[str, bool]]:
    """`(artifact path, is_dir)` of the artifacts directly under `path` in run `run_id`."""
    return [(info.path, info.is_dir) for info in make_client(target).list_artifacts(run_id, path or None)]


def download_run_artifacts(target: TrackingTarget, run_id: str, path: str, dst: str | Path) -> Path:
    """Download the artifact file or folder `path` of run `run_id` into the existing folder `dst`."""
    return Path(make_client(target).download_artifacts(run_id, path, str(dst)))
