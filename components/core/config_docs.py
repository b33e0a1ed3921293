"""What each config key means, read from the comment block above its dataclass field.

A field's comment in the source (`components/core/config.py`, `model/config.py`, `envs/config.py`,
`envs/franka/config.py`) is the one definition of its key. `params.yaml` repeats it above the key, and may
go on with notes about the chosen value; tests/components/core/test_config_docs.py checks that it does.

Run:
    python -m components.core.config_docs        # every dotted key and its meaning
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import Field
from typing import Any, NamedTuple

from components.core.config import ProjectConfig


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass `cls` to its doc: the `#` lines directly above it, joined by spaces.

    A field with no comment directly above it (a blank line or code in between) maps to "".
    """
    lines, _ = inspect.getsourcelines(cls)
    body = ast.parse(textwrap.dedent("".join(lines))).body[0]
    assert isinstance(body, ast.ClassDef)
    docs = {}
    for node in body.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment: list[str] = []
            above = node.lineno - 2  # lines[] is 0-based and ast line numbers are 1-based
            while above >= 0 and lines[above].lstrip().startswith("#"):
                comment.insert(0, lines[above].strip().removeprefix("#").strip())
                above -= 1
            docs[node.target.id] = " ".join(comment)
    return {f.name: docs.get(f.name, "") for f in dataclasses.fields(cls)}


def config_type(tp: Any) -> type | None:
    """The dataclass a field holds as a nested section (`VQConfig`, or `X | None`), else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = inner[0] if len(inner) == 1 else None
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


class ConfigKey(NamedTuple):
    """One dotted key of a configuration and the dataclass field behind it."""

    key: str
    owner: type
    field: Field[Any]
    type: Any


def iter_keys(cls: type, prefix: str = "") -> Iterator[ConfigKey]:
    """Yield every key under dataclass `cls`, each section before its keys (`model`, `model.vq`, ...).

    Recurses into nested sections (`model.vq.codebook_bits`), not into mappings or lists of dataclasses
    (`robot.suites`, `presets`), whose keys are data.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        yield ConfigKey(key, cls, f, hints[f.name])
        section = config_type(hints[f.name])
        if section is not None:
            yield from iter_keys(section, f"{key}.")


def key_docs(cls: type) -> dict[str, str]:
    """Map every dotted key under dataclass `cls` (e.g. `model.vq.codebook_bits`) to its field's doc."""
    return {k.key: field_docs(k.owner)[k.field.name] for k in iter_keys(cls)}


def config_dataclasses(cls: type) -> list[type]:
    """`cls` and every dataclass reachable from its field types, also through mappings, lists and unions."""
    found: list[type] = []

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            if tp not in found:
                found.append(tp)
                for hint in typing.get_type_hints(tp).values():
                    visit(hint)
        for arg in typing.get_args(tp):
            visit(arg)

    visit(cls)
    return found


def main() -> int:
    """Print every key of the project configuration with its doc."""
    for key, doc in key_docs(ProjectConfig).items():
        print(f"{key}: {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
