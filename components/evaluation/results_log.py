"""The evaluation's results log: one JSON line per finished chain, keyed by its CALVIN chain index.

A chain is appended (and fsynced) the moment it ends, so a killed evaluation loses at most the
chains that were running; a re-run reads the log and skips every chain already in it. The file is
named by a fingerprint of what was evaluated (the checkpoint's digest, the environment, the step
budget, the precision), so a log never mixes two policies or two settings: a new checkpoint starts
a new log beside the old one, and `<name>.json` records what the fingerprint stands for.

Line format:
    {"index": 17, "initial_state": {...}, "tasks": [5 task names],
     "subtasks": [{"task": ..., "success": true, "steps": 41}, ...], "seconds": 12.3}

A crash while writing can leave a torn last line (JSON cut short, with or without its newline): it is
dropped, with a warning, and the file truncated before it. Every entry is type-checked (`"success":
"false"` is not a success); anything else malformed is an error naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from envs.protocol import ChainResult, SubtaskResult
from envs.sequences import Chain


def fingerprint(description: Mapping[str, Any]) -> str:
    """A short stable hash of what is evaluated (JSON of `description`, keys sorted)."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


def result_to_dict(result: ChainResult, seconds: float) -> dict[str, Any]:
    """The log line of a finished chain."""
    return {"index": result.index, "initial_state": result.initial_state, "tasks": list(result.tasks),
            "subtasks": [{"task": s.task, "success": s.success, "steps": s.steps} for s in result.subtasks],
            "seconds": round(seconds, 3)}


def result_from_dict(data: Any) -> ChainResult:
    """Inverse of `result_to_dict` (the timing is dropped), with every field type-checked.

    Raises:
        ValueError: a missing key or a value of the wrong type, named.
    """
    _expect(data, dict, "entry")
    index = _expect(data.get("index"), int, "index")
    if index < 0:
        raise ValueError(f"index: must be >= 0, got {index}")
    state = _expect(data.get("initial_state"), dict, "initial_state")
    tasks = _expect(data.get("tasks"), list, "tasks")
    for i, task in enumerate(tasks):
        _expect(task, str, f"tasks[{i}]")
    subtasks = []
    for i, sub in enumerate(_expect(data.get("subtasks"), list, "subtasks")):
        _expect(sub, dict, f"subtasks[{i}]")
        steps = _expect(sub.get("steps"), int, f"subtasks[{i}].steps")
        if steps < 0:
            raise ValueError(f"subtasks[{i}].steps: must be >= 0, got {steps}")
        subtasks.append(SubtaskResult(_expect(sub.get("task"), str, f"subtasks[{i}].task"),
                                      _expect(sub.get("success"), bool, f"subtasks[{i}].success"), steps))
    return ChainResult(index, dict(state), tuple(tasks), tuple(subtasks))


def _expect(value: Any, kind: type, key: str) -> Any:
    """`value` when it is a `kind` (a bool is not an int), else a ValueError naming `key`."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{key}: expected {kind.__name__}, got {json.dumps(value)}")
    return value


class ResultsLog:
    """Append-only JSONL of finished chains in `folder`, one file per fingerprint."""

    def __init__(self, folder: str | Path, description: Mapping[str, Any]) -> None:
        """Open (or start) the log of `description` (what is evaluated; see `fingerprint`)."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.key = fingerprint(description)
        self.path = self.folder / f"chains-{self.key}.jsonl"
        meta = self.folder / f"chains-{self.key}.json"
        if not meta.exists():
            meta.write_text(json.dumps(dict(description), indent=2, sort_keys=True))

    def load(self, chains: Sequence[Chain] | None = None) -> dict[int, ChainResult]:
        """Finished chains by index; with `chains` (CALVIN's list), each entry must match its chain.

        Raises:
            ValueError: a malformed line (other than a torn last one), a repeated index, or an entry
                whose initial state or tasks differ from chain `index` of `chains`.
        """
        if not self.path.exists():
            return {}
        raw = self.path.read_bytes()
        lines = raw.splitlines(keepends=True)
        entries = []
        for number, line in enumerate(lines, start=1):
            try:
                entries.append(json.loads(line))
            except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
                if number < len(lines):
                    raise ValueError(f"{self.path}:{number}: malformed chain entry ({err})") from err
                warnings.warn(f"{self.path}:{number}: dropping a torn last line (a crash while writing it)",
                              stacklevel=2)
                with self.path.open("r+b") as f:
                    f.truncate(len(raw) - len(line))
        results: dict[int, ChainResult] = {}
        for number, entry in enumerate(entries, start=1):
            try:
                result = result_from_dict(entry)
            except ValueError as err:
                raise ValueError(f"{self.path}:{number}: malformed chain entry ({err})") from err
            if result.index in results:
                raise ValueError(f"{self.path}:{number}: chain {result.index} appears twice")
            if chains is not None:
                _check_entry(result, chains, f"{self.path}:{number}")
            results[result.index] = result
        return results

    def append(self, result: ChainResult, seconds: float) -> None:
        """Append one finished chain and fsync, so it survives a crash right after."""
        with self.path.open("a") as f:
            f.write(json.dumps(result_to_dict(result, seconds)) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _check_entry(result: ChainResult, chains: Sequence[Chain], where: str) -> None:
    if not 0 <= result.index < len(chains):
        raise ValueError(f"{where}: chain index {result.index} outside CALVIN's {len(chains)} chains")
    state, tasks = chains[result.index]
    if dict(state) != result.initial_state or tuple(tasks) != result.tasks:
        raise ValueError(f"{where}: chain {result.index} does not match CALVIN's chain {result.index} "
                         f"(state or tasks differ); the log is not from this chain list")
