"""CALVIN's rollout loop over many environments at once, with one batched policy call per control step.

`drive_chains(envs, policy, chains)` keeps every env busy with a chain (`envs.protocol.ChainRollout`:
CALVIN's per-chain reset, per-subtask `reset()`, EP_LEN budget and oracle, unchanged) and, each
control step, asks the policy for the actions of all running chains in one call, so a model batches
its forward across environments. It yields `ChainStarted` when a chain takes an env and
`ChainOutcome` when it ends, so a driver can log results as they come and know what is in flight.

A `BatchPolicy` serves numbered env slots; `ChunkedPolicy` (components/evaluation/policy.py) is the UP-VLA one,
and `PolicyPerEnv` adapts ordinary CALVIN policies (one `envs.base.Policy` per env, e.g. scripted
experts), calling them one by one. A `PolicyFactory` builds the policy for a list of envs inside
whichever process owns them (a Ray actor), so it must be picklable.

    for event in drive_chains(envs, policy, enumerate(chains), ep_len=360):
        if isinstance(event, ChainOutcome):
            print(event.result.index, event.result.completed)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from components.evaluation.videos import RolloutFilm
from envs.base import Observation, Policy, SimEnv
from envs.protocol import EP_LEN, ChainResult, ChainRollout
from envs.sequences import Chain


@runtime_checkable
class BatchPolicy(Protocol):
    """A policy serving several env slots: CALVIN's reset/step, per slot, many slots per call."""

    def reset(self, slot: int) -> None:
        """A subtask starts in `slot` (CALVIN's `model.reset()`)."""

    def act(self, slots: Sequence[int], observations: Sequence[Observation], goals: Sequence[str]) -> list[np.ndarray]:
        """One (7,) action per slot for this control step."""


@runtime_checkable
class PreviewingPolicy(Protocol):
    """A `BatchPolicy` that can show the future frame it predicted (for rollout videos)."""

    # control steps between a replan's observation and the frame `preview` shows; None: unknown
    preview_delta_t: int | None

    def watch(self, slot: int, enabled: bool) -> None:
        """Start/stop decoding the predicted frames of `slot`."""

    def preview(self, slot: int) -> np.ndarray | None:
        """(S, S, 3) uint8 latest predicted future frame of `slot`."""


class PolicyFactory(Protocol):
    """Builds the policy of a list of envs, in the process that owns them (picklable)."""

    def __call__(self, envs: Sequence[SimEnv]) -> BatchPolicy:
        """The policy serving `envs` (slot i is envs[i])."""


class PolicyPerEnv:
    """A `BatchPolicy` over one `envs.base.Policy` per slot, called one after another (no batching)."""

    def __init__(self, policies: Sequence[Policy]) -> None:
        """Slot i is served by policies[i]."""
        self.policies = list(policies)

    def reset(self, slot: int) -> None:
        """CALVIN's `reset()` of the slot's policy."""
        self.policies[slot].reset()

    def act(self, slots: Sequence[int], observations: Sequence[Observation], goals: Sequence[str]) -> list[np.ndarray]:
        """Each slot's `step(obs, goal)`."""
        return [self.policies[s].step(o, g) for s, o, g in zip(slots, observations, goals, strict=True)]


@dataclass(frozen=True)
class ChainStarted:
    """Chain `index` took an env (it is in flight until its `ChainOutcome`)."""

    index: int


@dataclass(frozen=True)
class ChainOutcome:
    """A finished chain: its result, wall time, env steps, and its GIF when it was filmed."""

    result: ChainResult
    seconds: float
    video: bytes | None = None

    @property
    def steps(self) -> int:
        """Env steps the chain took."""
        return sum(s.steps for s in self.result.subtasks)


class _Running:
    """One env slot's chain: the rollout, its start time and its film."""

    def __init__(self, rollout: ChainRollout, film: RolloutFilm | None) -> None:
        self.rollout, self.film, self.start = rollout, film, time.perf_counter()

    def outcome(self) -> ChainOutcome:
        video = self.film.gif() if self.film is not None else None
        return ChainOutcome(self.rollout.result(), time.perf_counter() - self.start, video)


def drive_chains(envs: Sequence[SimEnv], policy: BatchPolicy, chains: Iterable[tuple[int, Chain]], *,
                 ep_len: int = EP_LEN, batched: bool = True, film: Callable[[int], bool] = lambda index: False
                 ) -> Iterator[ChainStarted | ChainOutcome]:
    """Run `chains` (pairs of CALVIN index and chain) on `envs`, each env taking the next chain when free.

    Args:
        envs: the environments; slot i of the policy is envs[i].
        policy: serves all slots.
        chains: pulled lazily, one whenever an env is free (a queue can feed it).
        ep_len: step budget per subtask (CALVIN: 360).
        batched: one policy call per control step for all running chains; False calls it per chain.
        film: which chain indices to record as videos.

    Yields:
        `ChainStarted` when a chain takes an env (after its reset), `ChainOutcome` when it ends.
    """
    source = iter(chains)
    running: list[_Running | None] = [None] * len(envs)
    exhausted = False
    while True:
        for slot in range(len(envs)):
            if running[slot] is None and not exhausted:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                running[slot] = _start(envs[slot], policy, slot, item, ep_len, film(item[0]))
                yield ChainStarted(item[0])
        live = [slot for slot in range(len(envs)) if running[slot] is not None]
        if not live:
            return
        for slot in live:
            if running[slot].rollout.take_subtask_start():
                policy.reset(slot)
        actions = _act(policy, live, [running[s].rollout for s in live], batched)
        for slot, action in zip(live, actions, strict=True):
            chain = running[slot]
            if chain.film is not None:
                preview = policy.preview(slot) if isinstance(policy, PreviewingPolicy) else None
                chain.film.add(chain.rollout.obs["rgb_obs"]["rgb_static"], preview, chain.rollout.instruction)
            if chain.rollout.advance(action):
                running[slot] = None
                yield chain.outcome()


def _start(env: SimEnv, policy: BatchPolicy, slot: int, item: tuple[int, Chain], ep_len: int,
           filmed: bool) -> _Running:
    index, chain = item
    rollout = ChainRollout(env, chain, index=index, ep_len=ep_len)
    if filmed and "rgb_static" not in rollout.obs.get("rgb_obs", {}):
        raise ValueError(f"chain {index}: filming needs the static camera (the env was built without cameras)")
    if isinstance(policy, PreviewingPolicy):
        policy.watch(slot, filmed)
    delta_t = policy.preview_delta_t if isinstance(policy, PreviewingPolicy) else None
    return _Running(rollout, RolloutFilm(delta_t=delta_t) if filmed else None)


def _act(policy: BatchPolicy, slots: list[int], rollouts: list[ChainRollout], batched: bool) -> list[np.ndarray]:
    observations = [r.obs for r in rollouts]
    goals = [r.instruction for r in rollouts]
    if batched:
        return policy.act(slots, observations, goals)
    return [policy.act([s], [o], [g])[0] for s, o, g in zip(slots, observations, goals, strict=True)]


def run_sequential(env: SimEnv, policy: BatchPolicy, chains: Iterable[tuple[int, Chain]], *,
                   ep_len: int = EP_LEN) -> list[ChainOutcome]:
    """CALVIN's single-process loop (one env, chains one after another) through the same code path."""
    return [e for e in drive_chains([env], policy, chains, ep_len=ep_len) if isinstance(e, ChainOutcome)]
