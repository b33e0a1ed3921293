"""Evaluation throughput: env steps/s of CALVIN's sequential loop vs N Ray actors, batched or not, local or shared.

Same policy, same chains, one run. The policy is a UP-VLA checkpoint at the CPU default size of
params.yaml (`model:`) with random weights, prompted as the `full` preset is (MMU-conditioned: a scene
description per subtask, then a replan every chunk_len steps); the envs are PlayTable scene D with both
cameras, as in evaluation. Random weights never solve a subtask, so every chain is one subtask of
exactly `--ep-len` steps and every configuration runs the same number of steps.

Rows:
  sequential          CALVIN's loop (envs.protocol.evaluate_chains): one env, one policy, in this process,
                      with 1 torch thread and with all cores; the faster is the baseline of the ratios
  local  N x E        N rollout actors, each with E envs and its own model (1 torch thread per actor)
  shared N x E        N rollout actors sending replans to one inference actor, which batches across them
Figures exclude process start-up (actors building envs and loading the model); the last column
includes it. Also printed: one replan's latency in bf16 autocast vs fp32 (the `precision` choice).

Run:
    .venv/bin/python benchmarks/rollouts.py [--chains 8] [--ep-len 60] [--workers 1 2] [--envs 1 2]
    .venv/bin/python benchmarks/rollouts.py --smoke   # ~1 min: 1 chain x 20 steps, 1 actor x 1 env
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from components.core.config import ProjectConfig, load_config  # noqa: E402
from components.core.ray_runtime import ray_connection  # noqa: E402
from components.data.conversation import DESCRIBE_PROMPT  # noqa: E402
from components.evaluation.inference import InferenceServer, LocalVLAFactory, SharedVLAFactory  # noqa: E402
from components.evaluation.policy import (  # noqa: E402
    PlanRequest,
    PolicySettings,
    UPVLAPolicy,
    load_inference,
    save_policy_settings,
)
from components.evaluation.rollout_workers import WorkerSpec, run_rollouts  # noqa: E402
from envs.config import EnvConfig  # noqa: E402
from envs.factory import make_env  # noqa: E402
from envs.protocol import evaluate_chains  # noqa: E402
from envs.sequences import get_sequences  # noqa: E402
from envs.tasks import load_eval_instructions  # noqa: E402
from model.vla import VLAModel  # noqa: E402
from model.vocab import build_text_tokenizer  # noqa: E402

# --smoke: the same rows at sizes that take about a minute; explicit flags still win
SMOKE = ["--chains", "1", "--ep-len", "20", "--workers", "1", "--envs", "1", "--replan-repeats", "3"]


def write_checkpoint(cfg: ProjectConfig, folder: Path) -> Path:
    """The CPU default model (random weights) with a tokenizer of the evaluation sentences, MMU-conditioned."""
    texts = [*load_eval_instructions().values(), DESCRIBE_PROMPT]
    torch.manual_seed(0)
    model = VLAModel.build(cfg.model, text_tokenizer=build_text_tokenizer(texts, cfg.model.text_vocab_size))
    model.save_pretrained(folder)
    save_policy_settings(folder, PolicySettings(mmu_condition=cfg.tune.mmu_condition))
    return folder


def time_sequential(env_cfg: EnvConfig, folder: Path, chains: list, ep_len: int, threads: int) -> tuple[float, float]:
    """(steps/s, steps/s including building the env and loading the model) of CALVIN's loop."""
    torch.set_num_threads(threads)
    begin = time.perf_counter()
    env = make_env(env_cfg)
    policy = UPVLAPolicy(load_inference(folder))
    start = time.perf_counter()
    results = evaluate_chains(env, policy, [chain for _, chain in chains], ep_len=ep_len)
    end = time.perf_counter()
    env.close()
    steps = sum(s.steps for r in results for s in r.subtasks)
    return steps / (end - start), steps / (end - begin)


def time_actors(env_cfg: EnvConfig, folder: Path, chains: list, ep_len: int, workers: int, envs: int, batched: bool,
                shared: bool) -> tuple[float, float]:
    """(steps/s, steps/s including actor start-up) of `workers` rollout actors."""
    import ray

    cpus = 0.5 if shared else 1.0  # the shared inference actor needs room beside the rollout actors
    begin = time.perf_counter()
    server = None
    rows = envs if batched else 1  # every forward on a fixed number of rows, as the evaluate stage runs them
    if shared:
        server = ray.remote(InferenceServer).options(num_cpus=cpus).remote(str(folder), threads=1,
                                                                           batch_size=rows * workers)
        factory = SharedVLAFactory(server)
    else:
        factory = LocalVLAFactory(str(folder), batch_size=rows)
    spec = WorkerSpec(env_cfg, factory, envs_per_worker=envs, ep_len=ep_len, batched=batched)
    try:
        stats = run_rollouts(spec, chains, num_workers=workers, cpus_per_worker=cpus,
                             reserved_cpus=cpus if shared else 0.0)
    finally:
        if server is not None:
            ray.kill(server)
    return stats.steps_per_s, stats.env_steps / (time.perf_counter() - begin)


def replan_latency(env_cfg: EnvConfig, folder: Path, precision: str, repeats: int = 20) -> float:
    """Mean ms of one replan (B = 1, description included once) in `precision`, one torch thread.

    The request carries what the checkpoint's model reads, as `ChunkedPolicy` sends it in a rollout: the
    static frame, the gripper frame when `model.num_views` is 2, the robot state when `model.proprio`.
    """
    engine = load_inference(folder, precision=precision)
    env = make_env(env_cfg)
    obs = env.get_obs()
    env.close()
    model = engine.cfg
    frames = {view: obs["rgb_obs"][view][None] for view in ("rgb_static", "rgb_gripper")[: model.num_views]}
    state = obs["robot_obs"][None] if model.proprio else None
    goal = next(iter(load_eval_instructions().values()))

    def request(descriptions: list) -> PlanRequest:
        return PlanRequest([goal], frames["rgb_static"], frames.get("rgb_gripper"), descriptions, [False], state)

    description = engine.plan(request([None])).descriptions
    begin = time.perf_counter()
    for _ in range(repeats):
        engine.plan(request(description))
    return (time.perf_counter() - begin) / repeats * 1000


def configurations(workers: list[int], envs: list[int]) -> list[tuple[bool, int, int, bool]]:
    """(shared, actors, envs per actor, batched) to time: every combination; unbatched only with several envs."""
    return [(shared, n, e, batched) for shared in (False, True) for n in workers for e in envs
            for batched in ((True, False) if e > 1 else (True,))]


def print_row(name: str, rate: float, rate_all: float, load: float, base: float) -> None:
    """One line of the table, printed as soon as it is measured (a long run shows progress)."""
    print(f"{name:<52} {rate:8.1f} {rate / base:7.2f}x {rate_all:15.1f} {load:5.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=8, help="chains per configuration (CALVIN's first N)")
    parser.add_argument("--ep-len", type=int, default=60, help="steps per subtask (= per chain here)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="rollout actor counts")
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 2], help="envs per actor")
    parser.add_argument("--replan-repeats", type=int, default=20, help="replans timed per precision")
    parser.add_argument("--smoke", action="store_true", help=f"tiny sizes, about a minute: {' '.join(SMOKE)}")
    args = parser.parse_args()
    if args.smoke:
        args = parser.parse_args([*SMOKE, *sys.argv[1:]])
    cfg = load_config()
    chains = list(enumerate(get_sequences(1000)[: args.chains]))
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_checkpoint(cfg, Path(tmp) / "model")
        torch.set_num_threads(1)
        latency = {p: replan_latency(cfg.env, folder, p, args.replan_repeats)  # the second pass is kept
                   for p in ("fp32", "bf16", "fp32", "bf16")}
        print(f"one replan, 1 thread: fp32 {latency['fp32']:.1f} ms, bf16 autocast {latency['bf16']:.1f} ms "
              f"({latency['fp32'] / latency['bf16']:.2f}x)")
        print(f"\n{args.chains} chains x {args.ep_len} steps, scene D, both cameras, CPU default model "
              "(random weights); load: the 1-minute load average when the row was measured")
        print(f"{'configuration':<52} {'steps/s':>8} {'vs seq.':>8} {'incl. start-up':>15} {'load':>5}")
        rows = [(f"sequential (CALVIN's loop), {n} torch thread(s)",
                 *time_sequential(cfg.env, folder, chains, args.ep_len, n), os.getloadavg()[0])
                for n in sorted({1, os.cpu_count() or 1})]
        base = max(rate for _, rate, _, _ in rows)  # the better sequential loop is the baseline
        for row in rows:
            print_row(*row, base)
        with ray_connection(os.cpu_count()):
            for shared, workers, envs, batched in configurations(args.workers, args.envs):
                name = f"{'shared' if shared else 'local '} {workers} actor(s) x {envs} env(s)"
                name += (", batched" if batched else ", one call per env") if envs > 1 else ""
                rates = time_actors(cfg.env, folder, chains, args.ep_len, workers, envs, batched, shared)
                print_row(name, *rates, os.getloadavg()[0], base)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
