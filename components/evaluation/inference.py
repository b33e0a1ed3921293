"""Where the rollout actors' policy runs: in every actor (`local`) or in one shared Ray actor (`shared`).

* `local`: each rollout actor loads its own copy of the model and batches its own environments. On a
  CPU this wins (measured by benchmarks/rollouts.py: no serialisation of frames, no idle actor while
  the server computes, every core both steps physics and runs the model).
* `shared`: one `InferenceServer` actor holds the model (on the GPU when there is one) and answers
  every rollout actor. Requests that arrive while it computes are merged into its next forward, so the
  batch grows with the number of actors without any waiting window. This is the layout for a GPU: one
  model in GPU memory, many CPU actors stepping physics. (Not measured here: no GPU was available.)

`choose_inference("auto", gpu)` picks `shared` with a GPU and `local` without. Each forward runs on a
fixed number of rows (`batch_size`, padded), so a chain's result does not depend on which chains
replan with it (components/evaluation/policy.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import ray

from components.evaluation.policy import ChunkedPolicy, PlanReply, PlanRequest, Precision, load_inference
from envs.base import SimEnv

InferenceMode = Literal["auto", "local", "shared"]


def choose_inference(mode: InferenceMode, gpu: bool) -> Literal["local", "shared"]:
    """`auto` -> `shared` when the policy runs on a GPU, else `local` (faster on CPU, see module docstring)."""
    if mode not in ("auto", "local", "shared"):
        raise ValueError(f"evaluate.inference: must be auto, local or shared, got {mode!r}")
    if mode != "auto":
        return mode
    return "shared" if gpu else "local"


@dataclass(frozen=True)
class LocalVLAFactory:
    """Policy factory of `local` inference: the actor loads the checkpoint itself."""

    checkpoint: str
    device: str = "cpu"
    precision: Precision = "bf16"
    # rows of every forward (padded; see components/evaluation/policy.py); None: as many as requested
    batch_size: int | None = None

    def __call__(self, envs: Sequence[SimEnv]) -> ChunkedPolicy:
        """A `ChunkedPolicy` over an in-process model, one slot per env."""
        engine = load_inference(self.checkpoint, device=self.device, precision=self.precision,
                                batch_size=self.batch_size)
        return ChunkedPolicy(engine, len(envs), delta_t=engine.cfg.delta_t)


@dataclass(frozen=True)
class SharedVLAFactory:
    """Policy factory of `shared` inference: the actor sends its replans to `server` (an InferenceServer)."""

    server: Any
    # the served model's `delta_t` (named in the rollout videos' labels); None: not named
    delta_t: int | None = None

    def __call__(self, envs: Sequence[SimEnv]) -> ChunkedPolicy:
        """A `ChunkedPolicy` over the remote model, one slot per env."""
        return ChunkedPolicy(RemoteInference(self.server), len(envs), delta_t=self.delta_t)


class RemoteInference:
    """`InferenceEngine` that forwards each replan to an `InferenceServer` actor and waits for it."""

    def __init__(self, server: Any) -> None:
        """`server`: the actor handle."""
        self.server = server

    def plan(self, request: PlanRequest) -> PlanReply:
        """One replan, answered within the server's next batch."""
        return ray.get(self.server.plan.remote(request))


class InferenceServer:
    """One model answering many rollout actors (an async Ray actor: `ray.remote(InferenceServer)`)."""

    def __init__(self, checkpoint: str, *, device: str = "cpu", precision: Precision = "bf16",
                 threads: int = 1, batch_size: int | None = None) -> None:
        """Load the checkpoint; `threads` torch threads run the forwards of `batch_size` rows (padded)."""
        import torch

        torch.set_num_threads(threads)
        self.engine = load_inference(checkpoint, device=device, precision=precision, batch_size=batch_size)
        self._pending: list[tuple[PlanRequest, asyncio.Future]] = []
        self._serving = False
        self._executor = ThreadPoolExecutor(max_workers=1)  # one forward at a time; the event loop stays free
        self.batch_rows: list[int] = []

    async def plan(self, request: PlanRequest) -> PlanReply:
        """Queue a request; it is answered by the next forward (all requests queued by then share it)."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if not self._serving:
            self._serving = True
            asyncio.get_running_loop().create_task(self._serve())
        return await future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    replies = await loop.run_in_executor(self._executor, self._run, [r for r, _ in batch])
                except Exception as err:  # every waiting caller gets the error, none hangs
                    for _, future in batch:
                        future.set_exception(err)
                    continue
                for (_, future), reply in zip(batch, replies, strict=True):
                    future.set_result(reply)
        finally:
            self._serving = False

    def _run(self, requests: list[PlanRequest]) -> list[PlanReply]:
        sizes = [len(r.goals) for r in requests]
        self.batch_rows.append(sum(sizes))
        return split_reply(self.engine.plan(merge_requests(requests)), sizes)

    def stats(self) -> dict[str, float]:
        """Forwards run and their mean number of rows (how much cross-actor batching happened)."""
        rows = self.batch_rows
        return {"forwards": len(rows), "mean_rows": float(np.mean(rows)) if rows else 0.0}


def merge_requests(requests: Sequence[PlanRequest]) -> PlanRequest:
    """Concatenate the rows of several requests (same camera sizes) into one."""
    grippers, states = [r.gripper for r in requests], [r.robot_obs for r in requests]
    return PlanRequest(
        goals=[g for r in requests for g in r.goals],
        static=np.concatenate([r.static for r in requests]),
        gripper=None if any(g is None for g in grippers) else np.concatenate(grippers),
        descriptions=[d for r in requests for d in r.descriptions],
        previews=[p for r in requests for p in r.previews],
        robot_obs=None if any(s is None for s in states) else np.concatenate(states))


def split_reply(reply: PlanReply, sizes: Sequence[int]) -> list[PlanReply]:
    """Cut a merged reply back into one reply per request, `sizes` rows each."""
    out, start = [], 0
    for size in sizes:
        rows = slice(start, start + size)
        out.append(PlanReply(reply.actions[rows], reply.descriptions[rows], reply.previews[rows]))
        start += size
    return out
