"""Where a checkpoint comes from: a local folder, an MLflow `runs:/<run id>/<path>` URI, or a bare run id.

`resolve_checkpoint(ref, target)` returns a local folder holding a `VLAModel.save_pretrained` checkpoint.
Run references are downloaded through `components.core.tracking` (the only mlflow import) into a cache
under the system temp folder, once per run and path; a download lands in a scratch folder first and
is renamed into place, so an interrupted download is never mistaken for a checkpoint. For a bare run
id, the run's artifacts are searched for the one folder holding `config.json` + `model.safetensors`.

    resolve_checkpoint("artifacts/tune/model")
    resolve_checkpoint("runs:/3f2a.../model", target)     # target = tracking.resolve_target(cfg.tracking)
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from components.core.tracking import TrackingTarget, download_run_artifacts, list_run_artifacts

CHECKPOINT_FILES = ("config.json", "model.safetensors")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
SEARCH_DEPTH = 4


def cache_root() -> Path:
    """Where downloaded run checkpoints are kept: `<tmp>/upvla-checkpoints/<run id>/<path>`."""
    return Path(tempfile.gettempdir()) / "upvla-checkpoints"


def parse_run_ref(ref: str) -> tuple[str, str | None] | None:
    """`(run_id, artifact path or None)` of a run reference, or None when `ref` is not one."""
    if ref.startswith("runs:/"):
        run_id, _, path = ref.removeprefix("runs:/").partition("/")
        if not RUN_ID.match(run_id):
            raise ValueError(f"{ref}: expected runs:/<32-hex run id>/<artifact path>")
        return run_id, path.strip("/") or None
    return (ref, None) if RUN_ID.match(ref) else None


def resolve_checkpoint(ref: str | Path, target: TrackingTarget | None = None) -> Path:
    """A local checkpoint folder for a folder path, `runs:/<id>/<path>` or run id.

    Raises:
        FileNotFoundError: a folder that does not exist or is not a checkpoint; a run without one.
        ValueError: a run reference without a tracking target, or a run with several checkpoints.
    """
    text = str(ref)
    run = None if Path(text).exists() else parse_run_ref(text)
    if run is None:
        return _check_folder(Path(text))
    if target is None:
        raise ValueError(f"{text}: a run reference needs the MLflow store (pass target=resolve_target(cfg.tracking))")
    run_id, path = run
    path = path or find_checkpoint_artifact(target, run_id)
    dst = cache_root() / run_id / path
    if not dst.is_dir():
        scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=_mkdir(cache_root())))
        try:
            downloaded = download_run_artifacts(target, run_id, path, scratch)
            _mkdir(dst.parent)
            downloaded.rename(dst)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return _check_folder(dst, source=f"runs:/{run_id}/{path}")


def find_checkpoint_artifact(target: TrackingTarget, run_id: str) -> str:
    """The artifact path of the single checkpoint folder logged in run `run_id`."""
    found: list[str] = []
    frontier = [("", 0)]
    while frontier:
        folder, depth = frontier.pop()
        entries = list_run_artifacts(target, run_id, folder)
        names = {Path(p).name for p, is_dir in entries if not is_dir}
        if all(name in names for name in CHECKPOINT_FILES):
            found.append(folder)
        frontier += [(p, depth + 1) for p, is_dir in entries if is_dir and depth < SEARCH_DEPTH]
    if not found:
        raise FileNotFoundError(f"run {run_id}: no artifact folder holds {' + '.join(CHECKPOINT_FILES)}")
    if len(found) > 1:
        raise ValueError(f"run {run_id}: several checkpoints {sorted(found)}; name one as runs:/{run_id}/<path>")
    return found[0]


def _check_folder(folder: Path, source: str | None = None) -> Path:
    missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing:
        what = f"{folder} (from {source})" if source else str(folder)
        raise FileNotFoundError(f"{what}: not a checkpoint folder (missing {', '.join(missing)})")
    return folder.resolve()


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
