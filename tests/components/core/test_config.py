"""params.yaml, the paper profile and the presets load; every kind of bad value names its key."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import get_args

import pytest
import yaml

from components.core.config import (
    PRESET_NAMES,
    ConfigError,
    ProjectConfig,
    flatten,
    load_config,
    merge,
    parse_overrides,
    to_dict,
)
from components.core.config_docs import iter_keys
from tests.conftest import PROJECT_ROOT

PARAMS = PROJECT_ROOT / "params.yaml"
# every float key with a range (`ge`/`gt`/`le`/`lt` metadata), `float | None` included
RANGED_FLOAT_KEYS = [k.key for k in iter_keys(ProjectConfig)
                     if k.field.metadata and float in (k.type, *get_args(k.type))]


def write_params(tmp_path, edit):
    """Copy params.yaml with `edit(raw_dict)` applied; return the new path."""
    raw = yaml.safe_load(PARAMS.read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_default_params_load_and_are_frozen():
    cfg = load_config(PARAMS)
    assert cfg.experiment.preset == "full"
    assert cfg.tune.init_from == "pretrain" and cfg.pretrain.init_from == "backbone"
    assert cfg.collect.train_scenes == ("D",) and cfg.collect.val_scenes == ("D",)  # CALVIN's D -> D
    with pytest.raises(AttributeError):
        cfg.tune.lr = 1.0  # type: ignore[misc]


def test_paper_profile_has_the_paper_settings():
    cfg = load_config(PARAMS, profile="paper")
    m = cfg.model
    assert (m.hidden_size, m.num_layers, m.num_heads, m.intermediate_size) == (2048, 24, 32, 8192)
    assert m.text_vocab_size == 50295 and m.partial_rotary_factor == 0.5
    assert m.vq.image_size == 512 and m.vq.tokens_per_image == 1024 and m.vq.codebook_size == 8192
    assert (m.vision_image_size, m.vision_patch_size, m.vision_hidden_size) == (336, 14, 1024)
    assert m.delta_t == m.chunk_len == 10
    assert cfg.tune.batch_size * cfg.tune.num_workers == 64
    assert (cfg.tune.lambda_mmu, cfg.tune.lambda_pre, cfg.tune.lambda_act) == (0.1, 1.0, 1.0)
    assert cfg.pretrain.lambda_act == 0.0 and cfg.pretrain.steps == 20000
    assert cfg.evaluate.num_sequences == 1000 and cfg.cluster.use_gpu
    assert cfg.collect.train_scenes == ("A", "B", "C")  # the paper's ABC -> D


@pytest.mark.parametrize("profile", [None, "paper"])
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_preset_changes_exactly_what_it_names(preset, profile):
    base = flatten(to_dict(load_config(PARAMS, profile=profile, preset="full")))
    cfg = load_config(PARAMS, profile=profile, preset=preset)
    assert cfg.experiment.preset == preset
    changed = {k for k, v in flatten(to_dict(cfg)).items() if base[k] != v}
    named = set(yaml.safe_load(PARAMS.read_text())["presets"][preset] or {})
    assert changed - {"experiment.preset"} <= named
    for key in named:  # every named key takes the preset's value
        assert flatten(to_dict(cfg))[key] == yaml.safe_load(PARAMS.read_text())["presets"][preset][key]


def test_preset_semantics_match_the_paper():
    no_mmu = load_config(PARAMS, preset="no_mmu")
    assert no_mmu.pretrain.lambda_mmu == no_mmu.tune.lambda_mmu == 0 and no_mmu.tune.mmu_batch_size == 0
    assert load_config(PARAMS, preset="no_bridge_pretrain").tune.init_from == "backbone"
    assert load_config(PARAMS, preset="no_prediction").tune.lambda_pre == 0
    assert not load_config(PARAMS, preset="no_mmu_condition").tune.mmu_condition
    assert load_config(PARAMS, preset="rt2").model.action_head == "tokens"
    phi = load_config(PARAMS, preset="phi_no_mmu")
    assert phi.model.backbone_init == "llm" and phi.tune.lambda_mmu == 0 and not phi.tune.mmu_condition


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["tune"].update(lambda_act=-1), "tune.lambda_act: must be >= 0.0, got -1"),
        (lambda r: r["tune"].update(lamda_act=1), "tune.lamda_act: unknown key"),
        (lambda r: r["pretrain"].pop("lr"), "pretrain.lr: missing"),
        (lambda r: r["tune"].update(steps="many"), "tune.steps: expected an integer, got 'many'"),
        (lambda r: r["tune"].update(lr="fast"), "tune.lr: expected a number, got 'fast'"),
        (lambda r: r["tune"].update(steps=1.5), "tune.steps: expected an integer, got 1.5"),
        (lambda r: r["tune"].update(bf16="yes"), "tune.bf16: expected true/false"),
        (lambda r: r["tune"].update(init_from="scratch"), "tune.init_from: must be one of"),
        (lambda r: r["model"]["vq"].update(downsample=6), "model.vq.downsample: must be a power of two"),
        (lambda r: r["model"].update(hidden_size=100, num_heads=3), "model.hidden_size: must be divisible"),
        (lambda r: r["evaluate"].update(num_sequences=1001), "evaluate.num_sequences: must be <= 1000"),
        (lambda r: r["collect"].update(train_scenes="ABC"), "collect.train_scenes: expected a list"),
        (lambda r: r["ingest"].update(max_bad_fraction=2), "ingest.max_bad_fraction: must be <= 1.0"),
        (lambda r: r["env"].update(name="calvin"), "env.calvin_dataset_path: required"),
        (lambda r: r["experiment"].update(preset="no_such"), "experiment.preset: unknown preset 'no_such'"),
        (lambda r: r["presets"].update(bad={"tune.lrr": 1}), "tune.lrr: unknown key (from presets.bad)"),
        (lambda r: r["presets"].pop("rt2"), "presets.rt2: missing"),
        (lambda r: r.update(extra={}), "extra: unknown key"),
        (lambda r: r.update(tune=[1, 2]), "tune: expected a mapping, got list"),
        (lambda r: r.pop("experiment"), "experiment: missing in"),
        (lambda r: r["ingest"].update(sources=["calvin", "calvin"]), "ingest.sources: expected distinct names"),
        (lambda r: r["ingest"].update(sources=[]), "ingest.sources: expected distinct names"),
        (lambda r: r["ingest"].update(sources=["coco"]), "ingest.sources: expected distinct names"),
        (lambda r: r.update(experiment=[1]), "experiment: expected a mapping in"),
        (lambda r: r.pop("cluster"), "cluster: missing"),
        (lambda r: r["tune"].pop("lr"), "tune.lr: missing"),
        (lambda r: r["tune"].update(task_repeats={"open_drawer": 0}), "tune.task_repeats.open_drawer: must be >= 1"),
        (lambda r: r["tune"].update(task_repeats={"open_drawer": 1.5}),
         "tune.task_repeats.open_drawer: expected an integer"),
        (lambda r: (r["model"].update(proprio=True), r["tune"].update(robot_mix={"calvin": 1.0, "bridge": 0.5})),
         "tune.robot_mix: names bridge while tune.lambda_act > 0 and model.proprio is on"),
    ],
)
def test_bad_values_name_the_key(tmp_path, edit, message):
    with pytest.raises(ConfigError) as err:
        load_config(write_params(tmp_path, edit))
    assert message in str(err.value)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such parameter file"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("tune: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{broken}: not valid YAML"):
        load_config(broken)


def test_overrides_apply_after_the_preset_and_must_name_real_keys():
    cfg = load_config(PARAMS, preset="no_mmu", overrides={"tune.lambda_mmu": 0.5, "tune.lr": 1e-3})
    assert cfg.tune.lambda_mmu == 0.5 and cfg.tune.lr == 1e-3 and cfg.pretrain.lambda_mmu == 0
    with pytest.raises(ConfigError, match="tune.lrr: unknown key"):
        load_config(PARAMS, overrides={"tune.lrr": 1})
    assert load_config(PARAMS, overrides={"tune.lr": "3e-4"}).tune.lr == 3e-4  # how DVC's -S writes it
    assert parse_overrides(["a.b=3e-4", "c=true", "d=[A, B]", "e=null"]) == {
        "a.b": 3e-4, "c": True, "d": ["A", "B"], "e": None}


def test_merge_does_not_mutate_and_merges_nested():
    base = {"a": {"b": 1, "c": 2}}
    out = merge(base, {"a": {"b": 5}}, source="t")
    assert out == {"a": {"b": 5, "c": 2}} and base == {"a": {"b": 1, "c": 2}}


def test_overrides_add_entries_to_a_robot_mix_but_not_to_a_section():
    added = load_config(PARAMS, overrides={"model.proprio": False, "tune.robot_mix.bridge": 0.5})
    assert added.tune.robot_mix == {"calvin": 1.0, "bridge": 0.5}
    as_mapping = load_config(PARAMS, overrides={"model.proprio": False, "tune.robot_mix": {"bridge": 0.5}})
    assert as_mapping.tune.robot_mix == added.tune.robot_mix
    with pytest.raises(ConfigError, match="tune.robot_mix.coco: unknown source"):
        load_config(PARAMS, overrides={"tune.robot_mix.coco": 1.0})
    with pytest.raises(ConfigError, match="tune.robot: unknown key"):  # a section still gains no key
        load_config(PARAMS, overrides={"tune.robot": {"calvin": 1.0}})


def test_cli_prints_the_resolved_config_and_fails_with_the_key():
    ok = subprocess.run([sys.executable, "-m", "components.core.config", "--profile", "paper"],
                        capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert ok.returncode == 0, ok.stderr
    assert yaml.safe_load(ok.stdout)["model"]["hidden_size"] == 2048
    bad = subprocess.run([sys.executable, "-m", "components.core.config", "--set", "tune.lambda_act=-1"],
                         capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert bad.returncode == 2
    assert "tune.lambda_act: must be >= 0.0, got -1" in bad.stderr


def test_ranged_float_keys_are_found():
    expected = {"model.partial_rotary_factor", "tune.lr", "slurm.mem_gb", "robot.franka.control_hz"}
    assert expected <= set(RANGED_FLOAT_KEYS)


@pytest.mark.parametrize("key", RANGED_FLOAT_KEYS)
def test_non_finite_floats_are_rejected_naming_the_key(key):
    for text, shown in ((".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf"), ("nan", "nan")):
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: must be finite, got {shown}$"):
            load_config(PARAMS, overrides=parse_overrides([f"{key}={text}"]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tune.robot_mix.calvin=.inf", "tune.robot_mix.calvin: must be finite, got inf"),
        ("sweep.lr=[1.0e-4, .inf]", "sweep.lr[1]: must be finite, got inf"),
        ("robot.franka.workspace_min=[.nan, -0.35, 0.05]", "robot.franka.workspace_min[0]: must be finite, got nan"),
    ],
)
def test_non_finite_floats_inside_lists_and_mappings_are_rejected(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(PARAMS, overrides=parse_overrides([override]))


def test_non_finite_from_a_parameter_file_or_dvc_string_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="ingest.max_bad_fraction: must be finite, got inf"):
        load_config(write_params(tmp_path, lambda r: r["ingest"].update(max_bad_fraction=float("inf"))))
    with pytest.raises(ConfigError, match="tune.lr: must be finite, got nan"):
        load_config(PARAMS, overrides={"tune.lr": "NaN"})  # as DVC's -S writes a string


def test_cli_names_the_non_finite_key():
    bad = subprocess.run([sys.executable, "-m", "components.core.config", "--set", "model.partial_rotary_factor=.nan"],
                         capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert bad.returncode == 2
    assert "config error: model.partial_rotary_factor: must be finite, got nan" in bad.stderr


def test_overriding_a_section_the_file_lacks_says_missing_not_unknown(tmp_path):
    params = write_params(tmp_path, lambda r: r.pop("cluster"))
    with pytest.raises(ConfigError, match="cluster: missing in the base parameter file"):
        load_config(params, overrides={"cluster.num_cpus": 2})


def test_a_bad_override_value_is_a_config_error():
    with pytest.raises(ConfigError, match=r"--set 'tune.lr=\[1': tune.lr: not a YAML value"):
        parse_overrides(["tune.lr=[1"])


WORKFLOWS = ["ablations", "collect", "evaluate", "ingest", "pretokenize", "pretrain", "report", "sweep", "tokenizer",
             "tune"]


@pytest.mark.parametrize("workflow", [*WORKFLOWS, "robot_eval"])
@pytest.mark.parametrize("args", [["--set", "tune.lr=[1"], ["--set", "tune.lrr=1"], ["--set", "tune.lr=.nan"]])
def test_every_workflow_reports_config_errors_in_one_line_with_exit_2(workflow, args, capsys):
    main = __import__(f"workflows.{workflow}", fromlist=["main"]).main
    if workflow == "robot_eval":
        args = ["run", "--checkpoint", "artifacts/tune/model", *args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("config error: ") and "tune.lr" in err[0], err
