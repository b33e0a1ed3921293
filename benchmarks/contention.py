"""Throughput beside ONE competing CPU-bound process, per torch thread policy: does a stage survive a busy laptop?

On a 2-core machine torch's two intra-op threads (GNU OpenMP, libgomp) share the cores with whatever else
runs. When one of them is descheduled the other waits for it at the end of every parallel region, and
libgomp waits by spinning (GOMP_SPINCOUNT, 300000 spins by default), so the waiting thread holds a core
that the descheduled one needs: a tokenizer fit was measured 13x slower beside one other process.
components/core/threads.py holds the policy the stages use; this script measures it against the others.

Three workloads at the sizes of params.yaml (or --profile/--preset/--set), each timed in one process per
policy (thread settings must be in place before torch loads), in alternating windows: idle, then beside
ONE competing process (a pure-Python busy loop at the same priority, in its own session as a program from
another terminal would be: its own scheduler autogroup) that the script starts, pauses and ends itself.
Each runs with the torch threads its stage uses:

  tokenizer  one VQ tokenizer fitting step (components/data/tokenizer.fit_vq): `tokenizer.batch_size`
             random frames at `model.vq.image_size`, training_loss + backward + AdamW, fp32; torch's
             default threads (one per core), as the tokenizer stage
  training   one `tune` step (components/training/step.train_step): a tune-shaped batch (robot + MMU
             samples), forward + backward in bf16 autocast (`tune.bf16`), clipping, AdamW, schedule;
             `tune.cpus_per_worker` threads, as a Ray Train worker
  rollout    a rollout actor's loop (components/evaluation/rollout.drive_chains): `evaluate.envs_per_worker`
             PlayTable envs with both cameras, batched replans in `evaluate.precision`, one `--ep-len`-step
             subtask per env (random weights solve nothing): reset, scene description, a replan every
             chunk_len steps, env steps; an actor's max(1, evaluate.cpus_per_worker) threads (1 by default:
             no thread waits for another; `--rollout-threads 2` is CALVIN's sequential loop on all cores)

Policies, each in its own process (`--spin-counts N ...` adds `spin N`: GOMP_SPINCOUNT=N):

  default    libgomp's default wait, a fixed thread count (before)
  1 thread   torch.set_num_threads(1) for every workload
  passive    OMP_WAIT_POLICY=PASSIVE: a waiting thread sleeps at once
  project    libgomp's default wait and components.core.threads.ThreadGuard.tick() before every step, as the
             training and tokenizer loops call it: one thread while other processes take the cores (after)

Every window starts with `--settle` untimed seconds in its state (competitor running or paused), so a
figure is the steady state: the guard has seen the change (it switches after 4 s of contention) and the
step in flight when the state changed is not counted. Under the default wait one such step can take
over 10 s, which is also about how long the guard's first switch takes in a real run.

Printed per workload and policy: torch threads (on a free machine), the guard's thread switches (project
only: 2 per round when it works), steps/s idle and loaded (medians over the rounds),
loaded / idle, idle vs the first policy's idle (a policy must not cost throughput on an idle machine),
the cores other processes on the machine used during the windows (the largest; above ~0.1 the figures
are disturbed: run again), and every window's figure (idle ones first).

    .venv/bin/python benchmarks/contention.py                          # ~5 min on 2 cores
    .venv/bin/python benchmarks/contention.py --policies default project default project --workloads training
    .venv/bin/python benchmarks/contention.py --spin-counts 300 1000   # tune the spin count on another CPU
    .venv/bin/python benchmarks/contention.py --smoke                  # ~40 s: profiles/smoke.yaml, short windows
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from components.core.config import ProjectConfig, add_config_args, config_from_args

# the child processes import the project from the root, like the parent (`python benchmarks/contention.py`)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# --smoke: the same measurements at sizes that take seconds; explicit flags still win
SMOKE = ["--profile", "smoke", "--seconds", "0.2", "--settle", "0.2", "--rounds", "1", "--warmup", "1",
         "--ep-len", "10"]
WORKLOADS = ("tokenizer", "training", "rollout")
# env vars that change how torch's threads run; a policy's child starts with none of them but its own
THREAD_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_DYNAMIC",
              "OMP_PROC_BIND", "GOMP_CPU_AFFINITY", "KMP_BLOCKTIME", "KMP_AFFINITY")
# the competitor: one pure-Python busy loop, ending on its own when its parent is gone
COMPETITOR = """import os
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(10**6):
        pass
"""
RESULT = "RESULT "  # prefix of the child's JSON line


@dataclass(frozen=True)
class Policy:
    """How a child process runs torch's threads."""

    description: str
    # env vars set before torch loads
    env: dict[str, str] = field(default_factory=dict)
    # torch.set_num_threads for every workload; None = what each workload's stage uses
    threads: int | None = None
    # tick a components.core.threads.ThreadGuard before every step, as the training and tokenizer loops do
    project: bool = False


POLICIES = {
    "default": Policy("libgomp's default wait (GOMP_SPINCOUNT=300000)"),
    "1 thread": Policy("torch.set_num_threads(1)", threads=1),
    "passive": Policy("OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}),
    "project": Policy("libgomp's default wait + components.core.threads.ThreadGuard", project=True),
}


def spin_policy(count: int) -> Policy:
    """`spin N`: GOMP_SPINCOUNT=N."""
    return Policy(f"GOMP_SPINCOUNT={count}", {"GOMP_SPINCOUNT": str(count)})


def policy_named(name: str) -> Policy:
    """A policy of POLICIES, or `spin N`."""
    if name.startswith("spin "):
        return spin_policy(int(name.removeprefix("spin ")))
    return POLICIES[name]


# --------------------------------------------------------------------------- the child: one policy, all workloads


class Competitor:
    """One CPU-bound process beside the benchmark, paused (SIGSTOP) except inside `running()`."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-S", "-c", COMPETITOR], stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        os.kill(self.process.pid, signal.SIGSTOP)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Let it run inside the block."""
        os.kill(self.process.pid, signal.SIGCONT)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGSTOP)

    def close(self) -> None:
        """End it."""
        self.process.kill()
        self.process.wait()


def busy_seconds(competitor: Competitor) -> tuple[float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process and the competitor) so far."""
    from components.core.threads import cpu_seconds  # the guard's own reading of the machine

    busy, own = cpu_seconds()
    with open(f"/proc/{competitor.process.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return busy, own + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rate(step: Callable[[], int], seconds: float, competitor: Competitor, min_calls: int = 1) -> tuple[float, float]:
    """Time `step()` (which returns the units of work it did) for at least `seconds` and `min_calls` calls.

    Returns:
        (units per second, cores that other processes on the machine used meanwhile).
    """
    units, calls, start, (busy, own) = 0, 0, time.perf_counter(), busy_seconds(competitor)
    while True:
        units += step()
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= min_calls and elapsed >= seconds:
            busy_end, own_end = busy_seconds(competitor)
            return units / elapsed, max(0.0, (busy_end - busy) - (own_end - own)) / elapsed


def tokenizer_step(cfg: ProjectConfig) -> tuple[Callable[[], int], str]:
    """One fit_vq step on random frames: training_loss + backward + AdamW (fp32, as the stage fits)."""
    import torch

    from model.vq import build_vq

    torch.manual_seed(0)
    tok = build_vq(cfg.model.vq).train()
    opt = torch.optim.AdamW(tok.parameters(), lr=cfg.tokenizer.lr)
    size = cfg.model.vq.image_size
    frames = torch.rand(cfg.tokenizer.batch_size, 3, size, size) * 2 - 1

    def step() -> int:
        loss, _ = tok.training_loss(frames, entropy_weight=cfg.tokenizer.entropy_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return 1

    return step, f"VQ tokenizer fit step, {cfg.tokenizer.batch_size} frames at {size} px (steps/s)"


def training_step(cfg: ProjectConfig) -> tuple[Callable[[], int], str]:
    """One `tune` train_step: a tune-shaped batch, bf16 autocast per tune.bf16, clipping, AdamW, schedule."""
    import torch

    from components.training.loop import loss_weights
    from components.training.optim import make_optimizer, make_scheduler
    from components.training.step import train_step
    from model.batches import IGNORE, MMUBatch, RobotBatch, TrainBatch, clip_pixels
    from model.vla import VLAModel

    tune, mcfg = cfg.tune, cfg.model
    torch.manual_seed(0)
    model = VLAModel(mcfg).train()
    n, m, g = tune.batch_size, tune.mmu_batch_size, torch.Generator().manual_seed(0)

    def codes() -> torch.Tensor:
        return torch.randint(0, mcfg.vq.codebook_size, (n, mcfg.num_views * mcfg.vq.tokens_per_image), generator=g)

    def text(rows: int, k: int) -> torch.Tensor:
        return torch.randint(0, model.layout.eos_id, (rows, k), generator=g)

    frames = torch.randint(0, 256, (n, 200, 200, 3), dtype=torch.uint8, generator=g)
    actions = torch.rand(n, mcfg.chunk_len, mcfg.action_dim, generator=g) * 2 - 1
    robot = RobotBatch(text(n, 14), codes(), codes(), actions,
                       scene_pixels=clip_pixels(frames, mcfg.vision_image_size) if tune.mmu_condition else None,
                       description_ids=text(n, 30) if tune.mmu_condition else None,
                       robot_obs=torch.randn(n, 15, generator=g) if mcfg.proprio else None)
    mmu = None
    if m:
        ids = text(m, 40)
        labels = ids.clone()
        labels[:, :20] = IGNORE
        mmu = MMUBatch(torch.randn(m, 3, mcfg.vision_image_size, mcfg.vision_image_size, generator=g), ids, labels)
    batch = TrainBatch(robot, mmu)
    optimizer = make_optimizer(model, tune.lr, tune.weight_decay)
    scheduler = make_scheduler(optimizer, 10**9, 0, tune.min_lr_ratio)
    weights = loss_weights(tune)

    def step() -> int:
        train_step(model, optimizer, scheduler, [batch], weights, bf16=tune.bf16, clip=tune.clip_grad_norm)
        return 1

    return step, f"tune training step, {n} robot + {m} MMU samples, bf16={tune.bf16} (steps/s)"


def rollout_step(cfg: ProjectConfig, ep_len: int) -> tuple[Callable[[], int], str]:
    """The evaluate stage's rollout loop (drive_chains, batched) over one chain per env of `ep_len` steps."""
    import torch

    from components.data.conversation import DESCRIBE_PROMPT
    from components.evaluation.policy import ChunkedPolicy, PolicySettings, VLAInference
    from components.evaluation.rollout import ChainOutcome, drive_chains
    from envs.factory import make_env
    from envs.sequences import get_sequences
    from envs.tasks import load_eval_instructions
    from model.vla import VLAModel
    from model.vocab import build_text_tokenizer

    evaluate = cfg.evaluate
    texts = [*load_eval_instructions().values(), DESCRIBE_PROMPT]
    torch.manual_seed(0)
    model = VLAModel.build(cfg.model, text_tokenizer=build_text_tokenizer(texts, cfg.model.text_vocab_size))
    engine = VLAInference(model, PolicySettings(mmu_condition=cfg.tune.mmu_condition), precision=evaluate.precision)
    envs = [make_env(cfg.env) for _ in range(evaluate.envs_per_worker)]
    policy = ChunkedPolicy(engine, len(envs))
    chains = list(enumerate(get_sequences(len(envs))))

    def step() -> int:
        # random weights solve nothing: every chain is one subtask of exactly ep_len steps, the same each time
        events = drive_chains(envs, policy, chains, ep_len=ep_len, batched=evaluate.batched_inference)
        return sum(e.steps for e in events if isinstance(e, ChainOutcome))

    return step, (f"evaluate rollout loop, {len(envs)} envs (batched={evaluate.batched_inference}, "
                  f"{evaluate.precision}), one {ep_len}-step subtask per env: reset, scene description, "
                  f"a replan every {cfg.model.chunk_len} steps (env steps/s)")


BUILDERS = {"tokenizer": tokenizer_step, "training": training_step}


def stage_threads(name: str, cfg: ProjectConfig, args: argparse.Namespace, default: int) -> int:
    """The torch threads the stage runs workload `name` with (`default`: torch's own count)."""
    if name == "training":
        return cfg.tune.cpus_per_worker  # components/training/train._ray_train_worker
    if name == "rollout":  # each rollout actor: WorkerSpec.torch_threads
        return args.rollout_threads or max(1, int(cfg.evaluate.cpus_per_worker))
    return default  # the tokenizer stage sets none


def run_child(args: argparse.Namespace, policy: Policy) -> None:
    """Time every workload of `args.workloads` idle and loaded under `policy`; print one RESULT line each."""
    import torch

    from components.core.threads import ThreadGuard

    default = torch.get_num_threads()
    cfg = config_from_args(args)
    competitor = Competitor()
    try:
        for name in args.workloads:
            torch.set_num_threads(policy.threads or stage_threads(name, cfg, args, default))
            work, label = rollout_step(cfg, args.ep_len) if name == "rollout" else BUILDERS[name](cfg)
            threads = torch.get_num_threads()
            guard = ThreadGuard(name=name, log=lambda message: None) if policy.project else None

            def step(work: Callable[[], int] = work, guard: ThreadGuard | None = guard) -> int:
                if guard is not None:
                    guard.tick()
                return work()

            rate(step, 0.0, competitor, min_calls=args.warmup)
            idle, loaded, others = [], [], []
            for _ in range(args.rounds):
                for window, running in ((idle, False), (loaded, True)):
                    with competitor.running() if running else nullcontext():
                        rate(step, args.settle, competitor)
                        steps_per_s, other = rate(step, args.seconds, competitor)
                    window.append(steps_per_s)
                    others.append(other)
            switches = 0 if guard is None else guard.switches
            print(RESULT + json.dumps({"workload": name, "label": label, "threads": threads, "switches": switches,
                                       "idle": statistics.median(idle), "loaded": statistics.median(loaded),
                                       "others": max(others), "idle_all": idle, "loaded_all": loaded}), flush=True)
    finally:
        competitor.close()


# --------------------------------------------------------------------------- the parent: one child per policy


def child_env(policy: Policy) -> dict[str, str]:
    """This process's environment without any thread setting, plus the policy's."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    return env | policy.env


def measure(policy_name: str, argv: list[str]) -> list[dict]:
    """Run the child of one policy; its RESULT records."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--child", policy_name],
                         cwd=PROJECT_ROOT, env=child_env(policy_named(policy_name)), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"policy {policy_name!r}: the child exited {out.returncode}\n{out.stderr[-4000:]}")
    return [json.loads(line[len(RESULT):]) for line in out.stdout.splitlines() if line.startswith(RESULT)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES),
                        help="thread policies to compare, in this order (the first is the baseline of `idle vs`; "
                             "one named twice runs twice, which shows drift)")
    parser.add_argument("--spin-counts", type=int, nargs="+", default=[], metavar="N",
                        help="also compare GOMP_SPINCOUNT=N for each N")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each timed window")
    parser.add_argument("--settle", type=float, default=6.0,
                        help="untimed seconds in a window's state before it is timed (the guard switches after 4)")
    parser.add_argument("--rounds", type=int, default=2, help="idle + loaded window pairs per figure (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (rollout: subtasks) before timing")
    parser.add_argument("--ep-len", type=int, default=60, help="rollout: steps per subtask (one per env per step)")
    parser.add_argument("--rollout-threads", type=int, default=None,
                        help="rollout: torch threads (default: a rollout actor's, max(1, evaluate.cpus_per_worker))")
    parser.add_argument("--smoke", action="store_true", help=f"tiny sizes, seconds: {' '.join(SMOKE)}")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    argv = sys.argv[1:]
    if args.smoke:
        argv = [*SMOKE, *argv]
        args = parser.parse_args(argv)
    if args.child is not None:
        run_child(args, policy_named(args.child))
        return
    policies = [*args.policies, *(f"spin {n}" for n in args.spin_counts)]
    cfg = config_from_args(args)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; preset "
          f"{cfg.experiment.preset}; one competing process (a Python busy loop) in the loaded windows; "
          f"{args.rounds} x {args.seconds:g} s idle + loaded per figure", flush=True)
    results: dict[str, list[tuple[str, dict]]] = {name: [] for name in args.workloads}
    for policy in policies:
        for record in measure(policy, argv):
            results[record["workload"]].append((policy, record))
    base = policies[0]
    for name, rows in results.items():
        base_idle = rows[0][1]["idle"]
        print(f"\n{name}: {rows[0][1]['label']}")
        print(f"  {'policy':<10} {'threads':>7} {'switches':>8} {'idle':>8} {'loaded':>8} {'loaded/idle':>12} "
              f"{'idle vs ' + base:>16} {'others':>7}")
        for policy, r in rows:
            print(f"  {policy:<10} {r['threads']:>7} {r['switches']:>8} {r['idle']:8.2f} {r['loaded']:8.2f} "
                  f"{r['loaded'] / r['idle']:11.2f}x {r['idle'] / base_idle:15.2f}x "
                  f"{r['others']:7.2f}  {' '.join(f'{v:.2f}' for v in r['idle_all'] + r['loaded_all'])}")
    if {"default", "project"} <= set(policies):
        print("\nproject vs default (the first run of each):")
        for name, rows in results.items():
            ours, theirs = (next(r for p, r in rows if p == policy) for policy in ("project", "default"))
            print(f"  {name}: loaded/idle {ours['loaded'] / ours['idle']:.2f}x (default "
                  f"{theirs['loaded'] / theirs['idle']:.2f}x), idle {ours['idle'] / theirs['idle']:.2f}x of default's")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    for policy in dict.fromkeys(policies):
        print(f"  {policy}: {policy_named(policy).description}")


if __name__ == "__main__":
    main()
