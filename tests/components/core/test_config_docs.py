"""Each config key is defined once, by the comment above its dataclass field, and params.yaml agrees with it.

params.yaml's comment above a key starts with its field's doc (whitespace normalised, so the wrapping may
differ) and may go on with notes about the chosen value. The profiles only change values: their comments are
notes on those values, and every key they set must be a documented config key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from components.core.config import PROFILES_DIR, ProjectConfig
from components.core.config_docs import config_dataclasses, field_docs, key_docs
from tests.conftest import PROJECT_ROOT

DOCS = key_docs(ProjectConfig)
# keys whose values are mappings or lists (`robot.suites`, `presets`, ...): the keys below them are data
LEAVES = {key for key in DOCS if not any(other.startswith(f"{key}.") for other in DOCS)}
KEY_LINE = re.compile(r"(?P<indent> *)(?P<key>[A-Za-z_][\w.]*):(\s|$)")


def key_comments(text: str) -> dict[str, str]:
    """Dotted key -> the `#` lines directly above its line, at its indentation, joined ("" when none).

    Block-style YAML, as params.yaml and the profiles are written; list items and flow mappings are values.
    """
    out: dict[str, str] = {}
    parents: list[tuple[int, str]] = []
    comment: list[str] = []
    comment_indent = -1
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if line.lstrip().startswith("#"):
            if indent != comment_indent:
                comment, comment_indent = [], indent
            comment.append(line.strip().removeprefix("#"))
            continue
        match = KEY_LINE.match(line)
        if match:
            while parents and parents[-1][0] >= indent:
                parents.pop()
            key = ".".join([name for _, name in parents] + [match["key"]])
            out[key] = " ".join(comment) if indent == comment_indent else ""
            parents.append((indent, match["key"]))
        comment, comment_indent = [], -1
    return out


def normalised(text: str) -> str:
    return " ".join(text.split())


def is_data(key: str) -> bool:
    """A key inside a config value (a preset's name, a robot suite), not a config key."""
    return any(key.startswith(f"{leaf}.") for leaf in LEAVES)


@pytest.mark.parametrize("cls", config_dataclasses(ProjectConfig), ids=lambda cls: cls.__name__)
def test_every_field_of_every_config_dataclass_has_a_doc(cls):
    undocumented = [name for name, doc in field_docs(cls).items() if not doc]
    assert not undocumented, f"{cls.__name__}: put a comment above {undocumented} saying what the key means"


def test_params_yaml_comments_start_with_the_field_docs():
    comments = key_comments((PROJECT_ROOT / "params.yaml").read_text())
    wrong = []
    for key, doc in DOCS.items():
        comment, doc = normalised(comments.get(key, "")), normalised(doc)
        if comment != doc and not comment.startswith(f"{doc} "):
            wrong.append(f"{key}\n  field:       {doc}\n  params.yaml: {comment}")
    assert not wrong, "params.yaml's comment must start with the field's doc:\n" + "\n".join(wrong)


def test_params_yaml_keys_are_the_documented_keys():
    keys = {key for key in key_comments((PROJECT_ROOT / "params.yaml").read_text()) if not is_data(key)}
    assert keys == set(DOCS)


@pytest.mark.parametrize("profile", sorted(PROFILES_DIR.glob("*.yaml")), ids=lambda path: path.stem)
def test_profile_keys_are_documented_config_keys(profile):
    keys = key_comments(profile.read_text())
    assert keys, f"{profile}: no keys found"
    unknown = [key for key in keys if key not in DOCS and not is_data(key)]
    assert not unknown, f"{profile.name}: not config keys: {unknown}"


@dataclass
class _Inner:
    # first line of a doc
    # and its second line
    size: int = field(default=1, metadata={"ge": 1})

    name: str = "x"


@dataclass
class _Outer:
    # the nested section
    inner: _Inner
    # a mapping; its keys are data
    table: dict[str, _Inner]


def test_extractor_joins_the_comment_lines_right_above_a_field_and_recurses_into_sections():
    assert field_docs(_Inner) == {"size": "first line of a doc and its second line", "name": ""}
    assert key_docs(_Outer) == {"inner": "the nested section", "inner.size": "first line of a doc and its second line",
                                "inner.name": "", "table": "a mapping; its keys are data"}
    assert config_dataclasses(_Outer) == [_Outer, _Inner]


def test_docs_reach_the_nested_sections_of_params_yaml():
    assert DOCS["model.vq.codebook_bits"].startswith("lookup-free quantiser")
    assert DOCS["robot.franka.gripper_camera.fps"] == "stream rate, frames per second"
    assert "robot.suites" in LEAVES and "presets" in LEAVES and is_data("presets.no_mmu")
    assert DOCS["tokenizer.entropy_weight"].startswith("weight of the LFQ entropy term")
