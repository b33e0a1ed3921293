"""The ablation workflow: which stages variants share, the tables, and the whole thing submitted with
`ray job submit` to a real local Ray head on the smoke profile (tests/workflows/conftest.py)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from components.core.config import load_config
from components.core.tracking import find_runs
from components.experiments.ablations import ALL_PRESETS, ablation_tables, parse_presets, plan_ablations
from tests.conftest import PROJECT_ROOT
from tests.workflows.conftest import ABLATION_PRESETS

PARAMS = PROJECT_ROOT / "params.yaml"


def configs(*presets, **overrides):
    return {p: load_config(PARAMS, profile="smoke", preset=p, overrides=overrides) for p in presets}


def test_variants_share_stage_one_exactly_when_its_config_is_the_same():
    plan = plan_ablations(configs(*ALL_PRESETS))
    groups = {tuple(v.preset for v in group) for group in plan.pretrain_groups().values()}
    # no_bridge_pretrain starts stage 2 from the backbone; rt2 and phi_no_mmu change the model itself
    assert groups == {("full", "no_mmu_condition"), ("no_mmu",), ("no_prediction",), ("rt2",), ("phi_no_mmu",)}
    assert len({v.tune_key for v in plan.variants}) == len(ALL_PRESETS)
    assert plan_ablations(configs("full")).data_key == plan.data_key  # one dataset for every preset


def test_a_preset_that_changes_the_evaluation_is_refused():
    cfgs = configs("full", "no_mmu")
    cfgs["no_mmu"] = dataclasses.replace(cfgs["no_mmu"], evaluate=dataclasses.replace(cfgs["full"].evaluate,
                                                                                       ep_len=99))
    with pytest.raises(ValueError, match="presets.no_mmu: changes the evaluate relative to full"):
        plan_ablations(cfgs)
    with pytest.raises(ValueError, match="--presets: full named twice"):
        parse_presets("full,no_mmu,full")
    assert parse_presets("all") == list(ALL_PRESETS)


def test_tables_follow_the_papers_layout_with_intervals_and_mark_what_they_cannot_separate():
    rates = {"1": 0.75, "2": 0.5, "3": 0.0, "4": 0.0, "5": 0.0}
    trials = lambda drawer, led: {"open_drawer": {"successes": drawer, "trials": 20},  # noqa: E731
                                  "turn_on_led": {"successes": led, "trials": 20}}
    full = {"num_chains": 4, "avg_seq_len": 1.25, "chain_sr": rates, "chain_lengths": [2, 2, 1, 0],
            "task_trials": trials(18, 19)}
    same = {**full, "chain_lengths": [2, 1, 2, 0]}  # the same average on other chains: not separable
    worse = {**full, "avg_seq_len": 0.0, "chain_sr": dict.fromkeys(rates, 0.0), "chain_lengths": [0, 0, 0, 0],
             "task_trials": trials(0, 1)}
    tables = ablation_tables({"full": full, "rt2": same, "no_mmu": worse, "no_prediction": same},
                             setting="CALVIN D->D, playtable", provenance={"commit": "abc123", "machine": "2 CPUs"})
    assert set(tables) == {"table3.md", "table1.md"}
    table3 = tables["table3.md"]
    assert table3.startswith("# Table 3: ablations (CALVIN D->D, playtable)\n") and "- commit: abc123" in table3
    # rates with Wilson intervals, the average length with its bootstrap interval, Δ vs full on the same chains
    assert "| UP-VLA (full) | 75.0% [30, 95] | 50.0% [15, 85] | 0.0% [0, 49] | 0.0% [0, 49] | 0.0% [0, 49] | 1.25 [" \
        in table3 and "| – | 4 |" in table3
    chains = table3.split("## Single-task")[0]
    rows = {line.split(" | ")[0][2:]: line for line in chains.splitlines() if line.startswith("| ")}
    assert rows["w/o future prediction (no_prediction)"].split(" | ")[7].endswith("≈")  # +0.00 [..]: same mean
    assert not rows["w/o MMU data (no_mmu)"].split(" | ")[7].endswith("≈")  # -1.25 on every non-zero chain
    # the single-task table: per-task counts and the total with its interval; ≈ where it overlaps full's
    assert "| UP-VLA (full) | 18/20 | 19/20 | 37/40, 92.5% [80, 97] |" in table3
    assert "| w/o MMU data (no_mmu) | 0/20 | 1/20 | 1/40, 2.5% [0, 13] |" in table3
    assert "| w/o future prediction (no_prediction) | 18/20 | 19/20 | 37/40, 92.5% [80, 97] ≈ |" in table3
    assert "| UP-VLA-RT-2 (rt2) |" in tables["table1.md"] and "rt2" not in table3
    # both keys say the intervals are one trained model's, not the spread between training seeds
    assert table3.count("not the spread between training seeds") == 2
    assert ablation_tables({"full": full}) == {}  # full alone compares with nothing
    plain = {k: v for k, v in full.items() if k not in ("chain_lengths", "task_trials")}  # older results
    assert "| UP-VLA (full) | 75.0% [30, 95] |" in ablation_tables({"full": plain, "no_mmu": plain})["table3.md"]


def test_submitted_ablations_share_stages_and_write_the_tables_and_mlflow_runs(ablation_job):
    root, target = ablation_job.root, ablation_job.target
    assert "succeeded" in ablation_job.output
    table3 = (root / "reports" / "ablations" / "table3.md").read_text()
    for label in ("UP-VLA (full)", "w/o MMU-conditioned prompt (no_mmu_condition)",
                  "w/o Bridge pretraining (no_bridge_pretrain)"):
        assert f"| {label} |" in table3 and label in ablation_job.output  # the job printed the table too
    assert "## Single-task trials" in table3 and "| turn_on_led | total |" in table3
    assert "- commit: " in table3 and "- machine: " in table3 and "--task-trials 1" in table3
    results = json.loads((root / "reports" / "ablations" / "results.json").read_text())["results"]
    assert all(len(r["chain_lengths"]) == r["num_chains"] and r["task_trials"]["turn_on_led"]["trials"] == 1
               for r in results.values())
    assert not (root / "reports" / "ablations" / "table1.md").exists()  # no baseline ran
    out = root / "artifacts" / "ablations"
    stages = sorted(p.name.split("-")[0] for p in out.iterdir() if p.name != "ray_results")
    # data once, stage 1 once for full + no_mmu_condition, stage 2 and evaluation per variant
    assert stages == ["data", "evaluate", "evaluate", "evaluate", "pretrain", "tune", "tune", "tune"]
    [parent] = find_runs(target, "upvla-ablations", "attributes.run_name = 'ablations-all-s0'")
    children = find_runs(target, "upvla-ablations", f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    variants = {r.data.tags["preset"]: r for r in children if r.data.tags["upvla.role"] == "variant"}
    assert set(variants) == set(ABLATION_PRESETS)
    for preset, run in variants.items():
        assert run.info.run_name == f"ablation-{preset}-s0" and run.info.status == "FINISHED"
        assert "avg_seq_len" in run.data.metrics and "tune/loss" in run.data.metrics
        assert run.data.metrics["trials/total"] == 1 and "trials/turn_on_led" in run.data.metrics
        assert parent.data.metrics[f"avg_seq_len/{preset}"] == run.data.metrics["avg_seq_len"]
    assert variants["no_mmu_condition"].data.params["tune.mmu_condition"] == "False"
    stage_runs = sorted(r.info.run_name for r in children if r.data.tags["upvla.role"] == "stage")
    assert stage_runs == ["ingest-shared-s0", "pretokenize-shared-s0", "pretrain-full+no_mmu_condition-s0",
                          "tokenizer-shared-s0"]
    shared = variants["full"].data.tags["upvla.pretrain_run"]
    assert variants["no_mmu_condition"].data.tags["upvla.pretrain_run"] == shared
    assert "upvla.pretrain_run" not in variants["no_bridge_pretrain"].data.tags
