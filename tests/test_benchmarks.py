"""Every script in benchmarks/ runs end to end at smoke size and prints its figures.

Speed is measured in the benchmarks, never asserted here: this only keeps them runnable, so a default
that changes under one (model.num_views became 2 and two of them crashed) fails CI. Each script runs with
`--smoke` (the same measurements at sizes that take seconds; benchmarks/README.md) in a new process of
this interpreter, the venv's python, and must exit 0 having printed its figures against the baseline it
measured in the same run (the patterns in FIGURES; a nan or a missing ratio fails). input_pipeline.py
reads the small pre-tokenized data that the session fixture `pipeline_data` builds from the raw
fixtures with the real ingest, tokenizer and pretokenize stages.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

BENCHMARKS = PROJECT_ROOT / "benchmarks"
NUMBER = r"\d+\.\d+"
# lines each script must print at smoke size (regular expressions, searched line by line)
FIGURES = {
    "contention.py": [
        *(rf"{workload}: loaded/idle {NUMBER}x \(default {NUMBER}x\), idle {NUMBER}x of default's"
          for workload in ("tokenizer", "training", "rollout")),
        rf"  passive +\d+ +0 +{NUMBER} +{NUMBER} +{NUMBER}x",
        rf"  1 thread +1 +0 +{NUMBER} +{NUMBER} +{NUMBER}x",
        rf"  project +\d+ +\d+ +{NUMBER} +{NUMBER} +{NUMBER}x",
    ],
    "env_step.py": [
        rf"baseline: detailed robot meshes, full renders +{NUMBER} ms/step",
        rf"ours: low-poly robot, layered static camera +{NUMBER} ms/step",
        rf"speed-up of ours over the baseline, both cameras: {NUMBER}x",
    ],
    "input_pipeline.py": [
        r"rgb_static\+rgb_gripper at vq",  # both views, as the default model reads them
        rf"pre-tokenized shards : +{NUMBER} samples/s",
        rf"on-the-fly VQ encode : +{NUMBER} samples/s",
        rf"speed-up +: +{NUMBER}x",
        r"tune stream \(3 batches of \d+ robot \+ \d+ MMU, mmu_condition True\)",
        rf"\(8 groups, before\) : +{NUMBER} batches/s",
        rf"\(LAZY_CACHE_BYTES\) : +{NUMBER} batches/s",
        rf"  speed-up +: +{NUMBER}x",
    ],
    "model_step.py": [
        r"matmul ceiling 2048\^2: fp32 \d+ GFLOP/s, bf16 \d+ GFLOP/s",
        r"fp32: .* robot samples/s, .* = \d+% of the fp32 ceiling",
        r"bf16: .* robot samples/s, .* = \d+% of the bf16 ceiling",
        rf"bf16 / fp32 speed-up: {NUMBER}x",
        rf"1 env\(s\) bf16: +{NUMBER} ms/replan",
        rf"scene description .* bf16: {NUMBER} ms",
    ],
    "rollouts.py": [
        rf"one replan, 1 thread: fp32 {NUMBER} ms, bf16 autocast {NUMBER} ms \({NUMBER}x\)",
        rf"sequential \(CALVIN's loop\), 1 torch thread\(s\) +{NUMBER} +{NUMBER}x",
        rf"local +1 actor\(s\) x 1 env\(s\) +{NUMBER} +{NUMBER}x +{NUMBER}",
        rf"shared 1 actor\(s\) x 1 env\(s\) +{NUMBER} +{NUMBER}x +{NUMBER}",
    ],
}


def run_smoke(script: str, *args: str) -> str:
    """Run `benchmarks/<script> --smoke *args` from the project root; its stdout, after checking exit code 0."""
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke", *args], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (f"{script} --smoke exited {out.returncode}\n--- stdout\n{out.stdout[-4000:]}\n"
                                 f"--- stderr\n{out.stderr[-4000:]}")
    return out.stdout


def assert_figures(script: str, stdout: str) -> None:
    missing = [p for p in FIGURES[script] if not re.search(p, stdout)]
    assert not missing, f"{script} did not print {missing}; its stdout:\n{stdout}"


def test_every_benchmark_has_a_smoke_run():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")}
    assert scripts == set(FIGURES), f"add the new benchmarks to FIGURES (and a --smoke flag): {scripts ^ set(FIGURES)}"


@pytest.mark.parametrize("script", ["contention.py", "env_step.py", "model_step.py", "rollouts.py"])
def test_benchmark_runs_at_smoke_size(script):
    assert_figures(script, run_smoke(script))


def test_input_pipeline_runs_at_smoke_size(pipeline_data):
    stdout = run_smoke("input_pipeline.py", "--ingested", str(pipeline_data.ingested), "--tokens",
                       str(pipeline_data.tokens), "--vq", str(pipeline_data.vq_dir), "--text-tokenizer",
                       str(pipeline_data.text_dir))
    assert_figures("input_pipeline.py", stdout)
