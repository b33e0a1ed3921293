"""The ablation plan: which stages the Table-1/3 variants share, keyed by the config they depend on, and the tables.

    plan = plan_ablations({name: load_config(preset=name) for name in TABLE3})
    plan.pretrain_groups()      # {key: (variants sharing that stage-1 model)}, e.g. full + no_mmu_condition
    tables = ablation_tables({"full": metrics, "no_mmu": metrics})   # {"table3.md": ..., "table1.md": ...}

The tables carry 95% intervals (components/experiments/intervals.py) and mark the rows the intervals cannot
separate from the full model.

A stage's key is a hash of exactly the config it depends on (the sections `dvc.yaml` lists for it, plus
the keys of the stages it starts from), so two presets share a stage exactly when DVC would consider its
output the same: the data stages (collect/ingest/tokenizer/pretokenize) are shared by every preset; stage 1
by every preset that changes only stage-2 or evaluation settings (`full`, `no_mmu_condition`); a preset
whose stage 2 starts from the backbone (`no_bridge_pretrain`) needs no stage 1 at all. Every variant is
evaluated on the same chains: the plan refuses presets that change the evaluation or the environment.
The runner is components/experiments/ablation_runs.py; the entry point workflows/ablations.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.core.config import ProjectConfig, to_dict
from components.experiments.intervals import RESAMPLES, bootstrap_mean, overlap, paired_difference, separated, wilson
from components.reporting.report import CALVIN_TABLE_KEY, CHAIN_LEN

# Table 3 of the paper (ablations on CALVIN ABC->D) and Table 1's baselines beside the full model
TABLE3 = {"full": "UP-VLA", "no_mmu": "w/o MMU data", "no_bridge_pretrain": "w/o Bridge pretraining",
          "no_prediction": "w/o future prediction", "no_mmu_condition": "w/o MMU-conditioned prompt"}
TABLE1 = {"full": "UP-VLA", "rt2": "UP-VLA-RT-2", "phi_no_mmu": "UP-VLA-phi-w/o-mmu"}
ALL_PRESETS = tuple(dict.fromkeys([*TABLE3, *TABLE1]))


def config_key(*parts: Any) -> str:
    """12 hex digits of a hash of config sections (dataclasses) and plain values."""
    plain = [to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:12]


def data_key(cfg: ProjectConfig) -> str:
    """Key of the data stages' outputs (collect, ingest, tokenizer, pretokenize)."""
    m = cfg.model
    return config_key("data", cfg.collect, cfg.ingest, cfg.tokenizer, cfg.pretokenize, m.vq, m.text_vocab_size,
                      m.num_views, m.vision_image_size, cfg.experiment.seed)


def pretrain_key(cfg: ProjectConfig) -> str:
    """Key of stage 1's model: its section, the model, the seed and the data."""
    return config_key("pretrain", cfg.pretrain, cfg.model, cfg.experiment.seed, data_key(cfg))


def tune_key(cfg: ProjectConfig) -> str:
    """Key of stage 2's model: its section, the model, the seed, the data and stage 1's key if it starts there."""
    start = pretrain_key(cfg) if cfg.tune.init_from == "pretrain" else "backbone"
    return config_key("tune", cfg.tune, cfg.model, cfg.experiment.seed, data_key(cfg), start)


@dataclass(frozen=True)
class Variant:
    """One preset of the comparison and the keys of the stages it needs."""

    preset: str
    cfg: ProjectConfig
    # None: stage 2 starts from the backbone, no stage 1 needed
    pretrain_key: str | None
    tune_key: str


@dataclass(frozen=True)
class AblationPlan:
    """The variants, in the order given, over one shared dataset."""

    data_key: str
    variants: tuple[Variant, ...]

    def pretrain_groups(self) -> dict[str, tuple[Variant, ...]]:
        """Stage-1 key -> the variants that start stage 2 from that model (one training each)."""
        groups: dict[str, list[Variant]] = {}
        for variant in self.variants:
            if variant.pretrain_key is not None:
                groups.setdefault(variant.pretrain_key, []).append(variant)
        return {key: tuple(group) for key, group in groups.items()}


def plan_ablations(configs: Mapping[str, ProjectConfig]) -> AblationPlan:
    """The plan for `configs` (preset name -> its resolved config).

    Raises:
        ValueError: no presets, or a preset that changes the data stages, the evaluation or the
            environment (the variants would not be compared on the same data and chains).
    """
    if not configs:
        raise ValueError("presets: name at least one, e.g. --presets full,no_mmu")
    first_name, first = next(iter(configs.items()))
    for name, cfg in configs.items():
        for section, same in (("data stages (collect, ingest, tokenizer, pretokenize, model.vq)",
                               data_key(cfg) == data_key(first)),
                              ("evaluate", cfg.evaluate == first.evaluate), ("env", cfg.env == first.env)):
            if not same:
                raise ValueError(f"presets.{name}: changes the {section} relative to {first_name}; the variants "
                                 "of an ablation share one dataset and are evaluated on the same chains")
    variants = tuple(Variant(name, cfg, pretrain_key(cfg) if cfg.tune.init_from == "pretrain" else None,
                             tune_key(cfg)) for name, cfg in configs.items())
    return AblationPlan(data_key(first), variants)


def parse_presets(text: str) -> list[str]:
    """`full,no_mmu` -> ["full", "no_mmu"]; `all` -> every Table-1/3 preset. Duplicates are refused."""
    names = list(ALL_PRESETS) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"--presets: {', '.join(duplicates)} named twice")
    return names


def variant_label(preset: str) -> str:
    """The row label of a preset: the paper's name and the preset, e.g. `w/o MMU data (no_mmu)`."""
    return f"{TABLE3.get(preset) or TABLE1.get(preset) or preset} ({preset})"


def ablation_tables(results: Mapping[str, Mapping[str, Any]], *, setting: str = "CALVIN",
                    provenance: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Markdown of Table 3 (ablations) and Table 1 (baselines) over the presets that have results.

    Args:
        results: preset -> its evaluation (`metrics/eval.json` layout: chain_sr, avg_seq_len, num_chains), plus
            `chain_lengths` (subtasks completed per chain, by chain index: bootstrap intervals and the paired
            comparison with `full`) and `task_trials` ({task: {"successes", "trials"}}: the single-task table)
            when they were measured.
        setting: what was evaluated, for the titles (e.g. "CALVIN D->D, PlayTable").
        provenance: shown above the tables (commit, params, machine, wall time, ...).

    Returns:
        file name -> markdown; a table with none of its ablations/baselines run is left out (`full`
        alone compares with nothing). Presets of neither table go to `other.md`.
    """
    tables = {}
    for name, title, presets in (("table3.md", f"Table 3: ablations ({setting})", TABLE3),
                                 ("table1.md", f"Table 1: baselines ({setting})", TABLE1),
                                 ("other.md", f"Other presets ({setting})", {p: p for p in results
                                                                             if p not in TABLE3 and p not in TABLE1})):
        ran = [p for p in presets if p in results]
        if any(p != "full" for p in ran):  # the full model alone compares with nothing
            parts = [f"# {title}\n", provenance_lines(provenance) if provenance else "",
                     chain_table({p: results[p] for p in ran})]
            trials = {p: results[p]["task_trials"] for p in ran if results[p].get("task_trials")}
            if trials:
                parts.append(trial_table(trials))
            tables[name] = "\n".join(part for part in parts if part)
    return tables


# The intervals are the evaluation's: one trained model per row. Retraining a row with another seed moves it further
# (the default's four runs: 67-111/160 articulated trials, per-task spread ~3x binomial; benchmarks/README.md).
SEED_CAVEAT = ("The intervals cover the evaluation of one trained model per row, not the spread between training "
               "seeds, which is larger: rows from one seed each are ordered only where they differ by more than "
               "that spread (benchmarks/README.md, \"Levers\").")


def _rate(successes: int, trials: int) -> str:
    low, high = wilson(successes, trials)
    return f"{100 * successes / trials:.1f}% [{100 * low:.0f}, {100 * high:.0f}]"


def chain_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The long-horizon table: success of 1..5 subtasks in a row (Wilson) and average length (bootstrap).

    When `full` ran with per-chain lengths, each row's paired difference from it too; ≈ marks a row whose
    difference interval contains 0 (the chains cannot separate it from `full`).
    """
    head = "| Method | " + " | ".join(str(i) for i in range(1, CHAIN_LEN + 1)) + " | Avg. Len. | Δ vs full | chains |"
    lines = ["## Long-horizon chains\n", head, "|---" * (CHAIN_LEN + 4) + "|"]
    reference = results.get("full", {}).get("chain_lengths")
    for preset, m in results.items():
        n = m["num_chains"]
        rates = " | ".join(_rate(round(m["chain_sr"][str(i)] * n), n) for i in range(1, CHAIN_LEN + 1))
        lengths = m.get("chain_lengths")
        if lengths:
            mean, low, high = bootstrap_mean(lengths)
            length = f"{mean:.2f} [{low:.2f}, {high:.2f}]"
        else:
            length = f"{m['avg_seq_len']:.2f}"
        delta = "–"
        if reference and lengths and preset != "full" and len(lengths) == len(reference):
            diff, low, high = paired_difference(lengths, reference)
            delta = f"{diff:+.2f} [{low:+.2f}, {high:+.2f}]" + ("" if separated(low, high) else " ≈")
        lines.append(f"| {variant_label(preset)} | {rates} | {length} | {delta} | {n} |")
    key = (f"{CALVIN_TABLE_KEY} Brackets: 95% intervals (Wilson for the rates; bootstrap over chains, "
           f"{RESAMPLES} resamples, for Avg. Len.). Δ vs full: this row's Avg. Len. minus full's on the same chains "
           "(paired bootstrap); ≈: its interval contains 0, so these chains cannot separate the row from full. "
           f"{SEED_CAVEAT}")
    return "\n".join(lines) + "\n\n" + key + "\n"


def trial_table(trials: Mapping[str, Mapping[str, Mapping[str, int]]]) -> str:
    """The single-task table: successes / trials of each task, and the total with its Wilson interval.

    ≈ marks a row whose total's interval overlaps full's.
    """
    tasks = list(dict.fromkeys(task for per_task in trials.values() for task in per_task))
    lines = ["## Single-task trials (the same starts for every row)\n",
             "| Method | " + " | ".join(tasks) + " | total |", "|---" * (len(tasks) + 2) + "|"]
    totals = {p: (sum(t["successes"] for t in per_task.values()), sum(t["trials"] for t in per_task.values()))
              for p, per_task in trials.items()}
    reference = wilson(*totals["full"]) if "full" in totals and totals["full"][1] else None
    for preset, per_task in trials.items():
        cells = [f"{per_task[t]['successes']}/{per_task[t]['trials']}" if t in per_task else "–" for t in tasks]
        k, n = totals[preset]
        total = f"{k}/{n}, {_rate(k, n)}" if n else "–"
        if reference and n and preset != "full" and overlap(wilson(k, n), reference):
            total += " ≈"
        lines.append(f"| {variant_label(preset)} | " + " | ".join(cells) + f" | {total} |")
    key = ("Each task from the same protocol starts (envs/experts/evaluate.py) with CALVIN's evaluation sentence, at "
           "most evaluate.ep_len steps. total: all trials of the row, 95% Wilson interval in brackets; ≈: the "
           "interval overlaps full's. " + SEED_CAVEAT)
    return "\n".join(lines) + "\n\n" + key + "\n"


def provenance_lines(provenance: Mapping[str, Any]) -> str:
    """`key: value` bullets of where the numbers come from."""
    return "\n".join(f"- {key}: {value}" for key, value in provenance.items()) + "\n"
