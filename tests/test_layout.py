"""The project's layout and dependency direction, enforced on the source itself.

model/ and envs/ import nothing else from the project; components/ may import model/ and envs/;
cluster/ and workflows/ may import components/ (and below); nothing imports workflows/.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

PACKAGES = ("model", "envs", "components", "workflows", "cluster")
ALLOWED = {
    "model": {"model"},
    "envs": {"envs"},
    "components": {"components", "model", "envs"},
    "cluster": {"cluster", "components", "model", "envs"},
    "workflows": {"components", "cluster", "model", "envs"},
    "benchmarks": {"benchmarks", "components", "model", "envs", "cluster"},
}


def project_imports(path) -> set[str]:
    """Top-level project packages a file imports (absolute imports only; relative ones stay inside)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES}
    return found


def test_top_level_layout_exists():
    for name in (*PACKAGES, "tests", "benchmarks"):
        assert (PROJECT_ROOT / name).is_dir(), f"{name}/ is missing"
    for name in ("dvc.yaml", "params.yaml", "pyproject.toml", "README.md", "Makefile", ".ci/run", ".dvc/config"):
        assert (PROJECT_ROOT / name).is_file(), f"{name} is missing"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependency_direction(package):
    violations = []
    for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
        bad = project_imports(path) - ALLOWED[package]
        if bad:
            violations.append(f"{path.relative_to(PROJECT_ROOT)} imports {sorted(bad)}")
    assert not violations, "dependency direction broken:\n" + "\n".join(violations)


def test_the_checker_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom components.core.config import load_config\nimport workflows.x as w\n"
                   "from . import y\n")
    assert project_imports(bad) == {"components", "workflows"}


def test_packages_import_from_the_install_not_the_checkout(tmp_path):
    code = f"import importlib; [importlib.import_module(p) for p in {PACKAGES!r}]; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_components_are_grouped_by_concern_and_tests_mirror_them():
    loose = sorted(p.name for p in (PROJECT_ROOT / "components").glob("*.py") if p.name != "__init__.py")
    assert not loose, f"components/ holds modules outside a subpackage: {loose}"
    packages = {p.parent.name for p in (PROJECT_ROOT / "components").glob("*/__init__.py")}
    test_dirs = {p.name for p in (PROJECT_ROOT / "tests/components").iterdir()
                 if p.is_dir() and p.name != "__pycache__"}
    assert test_dirs <= packages, f"tests/components/ folders without a components/ subpackage: {test_dirs - packages}"
    loose_tests = sorted(p.name for p in (PROJECT_ROOT / "tests/components").glob("test_*.py"))
    assert not loose_tests, f"tests/components/ holds tests outside the mirrored folders: {loose_tests}"
