"""Where a checkpoint comes from: a local folder, an MLflow `runs:/<run id>/<path>` URI, or a bare run id.

`resolve_checkpoint(ref, target)` returns a local folder holding a `VLAModel.save_pretrained` checkpoint.
Run references are downloaded through `components.core.tracking` (the only mlflow import) into a cache
private to the user (`$UPVLA_CACHE`, else `$XDG_CACHE_HOME/upvla`, else `~/.cache/upvla`; mode 0700,
owned by the user, refused otherwise), once per run and path. The artifact path must be a plain
relative path (no `..`, no absolute path), so a reference can never name a folder outside the cache. A
download lands in a scratch folder first and is renamed into place, then `<folder>.sha256.json` records
its files' SHA-256; a cached folder is trusted only while it matches its manifest (otherwise it is downloaded
again). For a bare run id, the run's artifacts are searched for the one folder holding
`config.json` + `model.safetensors`.

    resolve_checkpoint("artifacts/tune/model")
    resolve_checkpoint("runs:/3f2a.../model", target)     # target = tracking.resolve_target(cfg.tracking)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path, PurePosixPath

from components.core.tracking import TrackingTarget, download_run_artifacts, list_run_artifacts

CHECKPOINT_FILES = ("config.json", "model.safetensors")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
SEARCH_DEPTH = 4


ARTIFACT_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
MANIFEST_SUFFIX = ".sha256.json"  # <folder>.sha256.json beside each cached folder


def cache_root() -> Path:
    """Where downloaded run checkpoints are kept: `<user cache>/checkpoints/<run id>/<path>`."""
    base = os.environ.get("UPVLA_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "upvla"
    return Path(base) / "checkpoints"


def private_dir(folder: Path) -> Path:
    """Create `folder` (mode 0700) or check an existing one is the user's and not writable by others."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise PermissionError(f"{folder}: the checkpoint cache must be owned by you and writable only by you "
                              f"(owner uid {info.st_uid}, mode {oct(info.st_mode & 0o777)}); set UPVLA_CACHE to "
                              "a private folder")
    return folder


def safe_artifact_path(ref: str, path: str) -> str:
    """`path` when it is a plain relative artifact path (parts of letters, digits, `._-`; no `..`)."""
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or not all(ARTIFACT_PART.match(p) and p != ".." for p in parts):
        raise ValueError(f"{ref}: the artifact path {path!r} must be relative, without '..', of letters, digits "
                         "and ._- only")
    return "/".join(parts)


def parse_run_ref(ref: str) -> tuple[str, str | None] | None:
    """`(run_id, artifact path or None)` of a run reference, or None when `ref` is not one."""
    if ref.startswith("runs:/"):
        run_id, _, path = ref.removeprefix("runs:/").partition("/")
        if not RUN_ID.match(run_id):
            raise ValueError(f"{ref}: expected runs:/<32-hex run id>/<artifact path>")
        path = path.strip("/")
        return run_id, safe_artifact_path(ref, path) if path else None
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
    path = safe_artifact_path(text, path or find_checkpoint_artifact(target, run_id))
    root = private_dir(cache_root())
    dst = root / run_id / path
    if dst.is_dir() and not _matches_manifest(dst):
        warnings.warn(f"{dst}: cached checkpoint differs from its manifest; downloading it again", stacklevel=2)
        shutil.rmtree(dst)
    if not dst.is_dir():
        scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
        try:
            downloaded = download_run_artifacts(target, run_id, path, scratch)
            digests = _digests(downloaded)
            _mkdir(dst.parent)
            downloaded.rename(dst)
            _manifest(dst).write_text(json.dumps(digests, indent=1, sort_keys=True))  # last: marks it complete
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return _check_folder(dst, source=f"runs:/{run_id}/{path}")


def _manifest(folder: Path) -> Path:
    return folder.parent / f"{folder.name}{MANIFEST_SUFFIX}"


def _digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by relative path."""
    digests = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digests[str(file.relative_to(folder))] = digest.hexdigest()
    return digests


def _matches_manifest(folder: Path) -> bool:
    try:
        return json.loads(_manifest(folder).read_text()) == _digests(folder)
    except (OSError, ValueError):
        return False


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
