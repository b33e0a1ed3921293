"""CALVIN chains spread over Ray actors, each chain finished exactly once even when actors die.

Each `RolloutWorker` actor owns `envs_per_worker` environments and a policy built in the actor
(`WorkerSpec.policy`, a picklable factory), and runs `components.evaluation.rollout.drive_chains` as a Ray
streaming generator fed from a shared queue: an env that finishes a chain pulls the next, so actors
stay busy until the queue is empty, whatever the chains' lengths. The driver (`run_rollouts`) hears
every `ChainStarted` / `ChainOutcome` as it happens and hands each outcome to `on_outcome` at once
(the evaluate stage appends it to its results log).

Faults: an actor that dies (crash, OOM kill, lost node) is restarted by Ray (`max_restarts`); the
chains it had announced go back into the queue at once, the driver waits for the restarted process
(a new pid from `ready`) and it resumes pulling. A chain the actor took but whose `ChainStarted` died
with it (a process that dies drops the events it had not reported yet) is caught after the queue
drains: every chain without an outcome is queued again for another pass. Passes repeat while each
finishes a chain or sees an actor restart or die (restarts are finite, so this ends); once no actor
is left the run stops with "every rollout actor died". An outcome is accepted once per chain, so a
chain is never counted twice. An exception raised by the env or the policy is a bug, not a fault: it
stops the run.

    stats = run_rollouts(WorkerSpec(env_cfg, LocalVLAFactory(folder)), enumerate(chains),
                         num_workers=2, on_outcome=lambda o: print(o.result.index, o.result.completed))
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import ray
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.util.queue import Empty, Queue

from components.evaluation.rollout import ChainOutcome, ChainStarted, PolicyFactory, drive_chains
from envs.config import EnvConfig
from envs.factory import make_env
from envs.protocol import EP_LEN
from envs.sequences import Chain

# a restarting actor may refuse calls for a while: poll it this often, this many times, then give up on it
RESTART_POLL_S = 0.5
MAX_REFUSALS = 240


@dataclass(frozen=True)
class WorkerSpec:
    """What every rollout actor builds and how it runs chains."""

    env: EnvConfig
    policy: PolicyFactory
    # environments per actor; the policy batches across them
    envs_per_worker: int = 1
    ep_len: int = EP_LEN
    # one policy call per control step for all of an actor's running chains
    batched: bool = True
    torch_threads: int = 1
    # chain indices filmed as rollout videos
    filmed: frozenset[int] = frozenset()
    # render the cameras (a model needs them; privileged scripted experts do not)
    cameras: bool = True


class RolloutWorker:
    """A Ray actor (`ray.remote(RolloutWorker)`) owning envs and a policy; `run` streams chain events.

    The spec comes with every call, not to the constructor, so an actor Ray restarts after a crash
    rebuilds its envs and policy from the next call alone (Ray warns about constructor arguments of
    restartable actors, ray-project/ray#53727).
    """

    def __init__(self) -> None:
        self.spec: WorkerSpec | None = None

    def _build(self, spec: WorkerSpec) -> None:
        """Build the envs and the policy once (torch threads first: they are fixed at first use)."""
        if self.spec is not None:
            return
        import torch

        torch.set_num_threads(spec.torch_threads)
        self.envs = [make_env(spec.env, cameras=spec.cameras) for _ in range(spec.envs_per_worker)]
        self.policy = spec.policy(self.envs)
        self.spec = spec

    def ready(self, spec: WorkerSpec) -> int:
        """Build the envs and policy; the actor's process id."""
        self._build(spec)
        return os.getpid()

    def run(self, queue: Queue, spec: WorkerSpec) -> Iterator[ChainStarted | ChainOutcome]:
        """Run chains pulled from `queue` until it is empty (a streaming generator)."""
        self._build(spec)
        yield from drive_chains(self.envs, self.policy, _drain(queue), ep_len=spec.ep_len, batched=spec.batched,
                                film=spec.filmed.__contains__)


def _drain(queue: Queue) -> Iterator[tuple[int, Chain]]:
    while True:
        try:
            yield queue.get_nowait()
        except Empty:
            return


@dataclass
class RolloutStats:
    """What a `run_rollouts` call did: chains, env steps, actor start-up and run wall time, actor deaths."""

    chains: int = 0
    env_steps: int = 0
    startup_s: float = 0.0
    run_s: float = 0.0
    worker_failures: int = 0
    pids: list[int] = field(default_factory=list)

    @property
    def steps_per_s(self) -> float:
        """Env steps per second of the run, actor start-up excluded."""
        return self.env_steps / self.run_s if self.run_s > 0 else 0.0


def run_rollouts(spec: WorkerSpec, chains: Iterable[tuple[int, Chain]], *, num_workers: int = 1,
                 cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0, max_restarts: int = 2,
                 reserved_cpus: float = 0.0, on_outcome: Callable[[ChainOutcome], None] = lambda outcome: None,
                 on_start: Callable[[int], None] = lambda index: None) -> RolloutStats:
    """Run `chains` (pairs of CALVIN index and chain) on `num_workers` actors; see the module docstring.

    Args:
        spec: what each actor builds.
        chains: the chains to run, each once.
        num_workers: actors (fewer when there are fewer chains than env slots).
        cpus_per_worker: CPUs Ray reserves per actor.
        gpus_per_worker: GPUs Ray reserves per actor (fractions share a GPU).
        max_restarts: restarts Ray grants each actor after it dies.
        reserved_cpus: CPUs already held for this run elsewhere (a shared inference actor).
        on_outcome: called in the driver with each finished chain, once per chain, as soon as it ends.
        on_start: called in the driver with a chain's index when it starts (for progress displays).

    Raises:
        RuntimeError: the cluster cannot hold the actors, every actor died, or chains stopped finishing.
    """
    todo = dict(chains)
    stats = RolloutStats()
    if not todo:
        return stats
    count = max(1, min(num_workers, math.ceil(len(todo) / spec.envs_per_worker)))
    _check_cpus(count * cpus_per_worker + reserved_cpus, count, cpus_per_worker)
    begin = time.perf_counter()
    actor = ray.remote(RolloutWorker).options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
                                              max_restarts=max_restarts)
    workers = [actor.remote() for _ in range(count)]
    queue = Queue(actor_options={"num_cpus": 0})
    try:
        stats.pids = ray.get([w.ready.remote(spec) for w in workers])
        stats.startup_s = time.perf_counter() - begin
        begin = time.perf_counter()
        pool = _Pool(workers, stats.pids, queue, spec, todo, on_outcome, on_start, stats)
        while missing := [i for i in todo if i not in pool.finished]:
            if not pool.live:
                raise RuntimeError(f"rollouts: every rollout actor died ({stats.worker_failures} crashes, restarts "
                                   f"used up); {len(missing)} chains unfinished, e.g. {missing[:10]}; finished "
                                   "chains are kept, re-run to resume")
            progress = (len(pool.finished), stats.worker_failures)
            for _ in _drain(queue):  # chains re-queued by actors that then died for good: queued once below
                pass
            for index in missing:
                queue.put((index, todo[index]))
            pool.serve()
            if (len(pool.finished), stats.worker_failures) == progress:
                raise RuntimeError(f"rollouts: a full pass over the queue finished none of chains {missing[:20]} "
                                   "although no actor died: chains are lost without a crash (a bug)")
        stats.run_s = time.perf_counter() - begin
    finally:
        for worker in workers:
            ray.kill(worker)
        ray.kill(queue.actor)
    return stats


class _Pool:
    """The driver's view of the actors: their streams, the chains each has announced, their processes."""

    def __init__(self, workers: list, pids: list[int], queue: Queue, spec: WorkerSpec, todo: dict[int, Chain],
                 on_outcome: Callable[[ChainOutcome], None], on_start: Callable[[int], None],
                 stats: RolloutStats) -> None:
        self.live = list(workers)
        self.queue, self.spec, self.todo, self.stats = queue, spec, todo, stats
        self.on_outcome, self.on_start = on_outcome, on_start
        self.in_flight: dict[int, set[int]] = {id(w): set() for w in workers}
        self.pids: dict[int, int] = {id(w): pid for w, pid in zip(workers, pids, strict=True)}
        self.finished: set[int] = set()

    def serve(self) -> None:
        """Stream every live actor until the queue is empty and all their chains have ended."""
        streams = {w.run.remote(self.queue, self.spec): w for w in self.live}
        while streams:
            [stream], _ = ray.wait(list(streams), num_returns=1)
            worker = streams.pop(stream)
            try:
                event = ray.get(next(stream))
            except StopIteration:
                continue
            except RayActorError:
                if self._recover(worker):
                    streams[worker.run.remote(self.queue, self.spec)] = worker
                continue
            streams[stream] = worker
            self._handle(worker, event)

    def _handle(self, worker, event: ChainStarted | ChainOutcome) -> None:
        flight = self.in_flight[id(worker)]
        if isinstance(event, ChainStarted):
            flight.add(event.index)
            self.on_start(event.index)
            return
        index = event.result.index
        flight.discard(index)
        if index in self.finished:
            return
        self.finished.add(index)
        self.stats.chains += 1
        self.stats.env_steps += event.steps
        self.on_outcome(event)

    def _recover(self, worker) -> bool:
        """After `worker`'s stream failed: re-queue its chains, wait for its process; True when it can work.

        A crash surfaces as `ActorUnavailableError` while Ray restarts the actor (calls are refused until
        the new process is up) and as `ActorDiedError` once restarts are used up. A new pid from `ready`
        is a restart; the same pid was a dropped connection, not a crash.
        """
        for index in sorted(self.in_flight[id(worker)] - self.finished):
            self.queue.put((index, self.todo[index]))
        self.in_flight[id(worker)] = set()
        for _ in range(MAX_REFUSALS):
            try:
                pid = ray.get(worker.ready.remote(self.spec))
            except ActorUnavailableError:
                time.sleep(RESTART_POLL_S)
                continue
            except RayActorError:
                break
            if pid != self.pids[id(worker)]:
                self.stats.worker_failures += 1
                self.pids[id(worker)] = pid
            return True
        self.stats.worker_failures += 1  # gone for good (or never came back): its last process died
        self.live.remove(worker)
        return False


def _check_cpus(needed: float, count: int, cpus_per_worker: float) -> None:
    total = ray.cluster_resources().get("CPU", 0.0)
    if needed > total + 1e-9:
        raise RuntimeError(f"evaluate: {count} rollout actors x {cpus_per_worker} CPUs (+ a shared inference actor) "
                           f"need {needed:g} CPUs but the Ray cluster has {total:g}; lower evaluate.num_workers or "
                           "evaluate.cpus_per_worker")

