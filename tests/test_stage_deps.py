"""Every dvc.yaml stage declares the code it runs: the import closure of its `python -m workflows.<x>` command.

A stage whose code changes must re-run; DVC only knows what `deps` lists. The closure follows every
absolute and relative import of the project's packages, lazy ones inside functions included (they run
too), plus the `__init__.py` of every package on the way. Also checks the project has no import cycles.
"""

from __future__ import annotations

import ast
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

PACKAGES = ("model", "envs", "components", "workflows", "cluster")
STAGES = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def module_path(name: str) -> Path | None:
    """The file of a project module (`a.b` -> a/b.py or a/b/__init__.py), None outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = PROJECT_ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    """`a/b/c.py` -> `a.b.c`; `a/b/__init__.py` -> `a.b`."""
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def named_imports(path: Path, typing_too: bool = False) -> frozenset[Path]:
    """Project modules `path` imports by name when it runs (TYPE_CHECKING blocks only with `typing_too`).

    `from pkg import sub` names the submodule `pkg.sub` when there is one, else `pkg`.
    """
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = set() if typing_too else {id(n) for node in ast.walk(tree)
                                        if isinstance(node, ast.If) and _is_type_checking(node.test)
                                        for n in ast.walk(node)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if module_path(f"{base}.{alias.name}") else base)
    return frozenset(p for p in map(module_path, names) if p is not None and p != path)


@cache
def direct_imports(path: Path) -> frozenset[Path]:
    """Project files that run when `path` runs: its named imports and every package `__init__` on their way."""
    found = set()
    for file in named_imports(path):
        parts = module_name(file).split(".")
        found.update(p for i in range(1, len(parts) + 1) if (p := module_path(".".join(parts[:i]))) is not None)
    return frozenset(found - {path})


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def closure(entry: Path) -> set[Path]:
    """`entry` and every project file it imports, transitively."""
    seen, todo = {entry}, [entry]
    while todo:
        for dep in direct_imports(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def entry_module(cmd: str) -> str:
    """The module of a stage's `python -m <module> ...` command."""
    words = shlex.split(cmd)
    assert words[:2] == ["python", "-m"], f"stage command {cmd!r}: expected `python -m workflows.<stage>`"
    return words[2]


def declared(path: Path, deps: list) -> bool:
    """Whether `path` is a listed dep or lies in a listed folder."""
    names = [next(iter(d)) if isinstance(d, dict) else d for d in deps]
    rel = path.relative_to(PROJECT_ROOT)
    return any(rel == Path(d) or rel.is_relative_to(d) for d in names)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_the_code_the_stage_runs(stage):
    spec = STAGES[stage]
    entry = module_path(entry_module(spec["cmd"]))
    assert entry is not None, f"dvc.yaml stage {stage}: {spec['cmd']!r} runs no project module"
    missing = sorted(str(p.relative_to(PROJECT_ROOT)) for p in closure(entry) if not declared(p, spec["deps"]))
    assert not missing, f"dvc.yaml stage {stage} runs code it does not list in deps: {missing}"


def test_the_closure_follows_lazy_relative_and_submodule_imports(tmp_path, monkeypatch):
    root = tmp_path
    (root / "components" / "pkg").mkdir(parents=True)
    for name, text in {"components/__init__.py": "", "components/pkg/__init__.py": "",
                       "components/pkg/a.py": "def f():\n    from . import b\n",
                       "components/pkg/b.py": "from components.pkg import c\n",
                       "components/pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                              "    import components.pkg.d\n",
                       "components/pkg/d.py": ""}.items():
        (root / name).write_text(text)
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "PROJECT_ROOT", root)
    caches = (named_imports, direct_imports)
    for f in caches:
        f.cache_clear()
    try:
        found = {str(p.relative_to(root)) for p in closure(root / "components/pkg/a.py")}
    finally:
        for f in caches:
            f.cache_clear()
    assert found == {"components/__init__.py", "components/pkg/__init__.py", "components/pkg/a.py",
                     "components/pkg/b.py", "components/pkg/c.py"}
    assert not declared(PROJECT_ROOT / "components/core/config.py", ["components/core.py", "components/co"])
    assert declared(PROJECT_ROOT / "components/core/config.py", ["components/core"])


def test_no_import_cycles():
    """No module imports, by name, a module that imports it back (directly or through others), even for typing."""

    def reach(start: Path) -> set[Path]:
        seen, todo = set(), [start]
        while todo:
            for dep in named_imports(todo.pop(), typing_too=True):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    files = [p for package in PACKAGES for p in (PROJECT_ROOT / package).rglob("*.py")]
    cycles = sorted({" <-> ".join(sorted((module_name(path), module_name(dep))))
                     for path in files for dep in named_imports(path, typing_too=True) if path in reach(dep)})
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


DATA_ROOTS = ("data/", "artifacts", "metrics", "reports/")  # ray_results/ is deliberately no DVC output


class _Parsed(Exception):
    """Raised by the patched `parse_args` to hand the stage's real parser back without running the stage."""


def stage_paths(spec: dict) -> set[str]:
    """Every data path a dvc.yaml stage declares (deps, outs, metrics, plots)."""
    entries = [e for key in ("deps", "outs", "metrics", "plots") for e in spec.get(key, [])]
    paths = {next(iter(e)) if isinstance(e, dict) else e for e in entries}
    return {p for p in paths if p.startswith(DATA_ROOTS)}


def covers(default: str, declared: str) -> bool:
    return declared == default or declared.startswith(default.rstrip("/") + "/")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_stage_commands_default_paths_are_the_ones_dvc_yaml_declares(stage, monkeypatch):
    """The workflow's argparse defaults and dvc.yaml name the same folders (each typed twice, kept equal here)."""
    import argparse
    import importlib

    def parsed(self, args=None, namespace=None):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parsed)
    main = importlib.import_module(entry_module(STAGES[stage]["cmd"])).main
    with pytest.raises(_Parsed) as caught:
        main([])
    parser = caught.value.args[0]
    defaults = {a.dest: a.default for a in parser._actions
                if isinstance(a.default, str) and a.default.startswith(DATA_ROOTS)}
    # paths the stage takes from params.yaml (evaluate.checkpoint) count as defaults too
    from components.core.config import flatten, load_config, to_dict

    config = to_dict(load_config())
    for section in STAGES[stage].get("params", []):
        value = config
        for part in str(section).split("."):
            value = value.get(part, {}) if isinstance(value, dict) else {}
        for key, item in (flatten(value, f"{section}.") if isinstance(value, dict) else {}).items():
            if isinstance(item, str) and item.startswith(DATA_ROOTS):
                defaults[key] = item
    declared = stage_paths(STAGES[stage])
    undeclared = {k: v for k, v in defaults.items() if not any(covers(v, d) for d in declared)}
    assert not undeclared, f"dvc.yaml stage {stage} does not declare the command's default paths {undeclared}"
    unread = sorted(d for d in declared if not any(covers(v, d) for v in defaults.values()))
    assert not unread, f"dvc.yaml stage {stage} declares {unread}, which no default path of its command names"
