"""UP-VLA as a CALVIN policy: the checkpoint loader, batched inference, open-loop action chunks.

Three layers, so one model serves one env (CALVIN's loop, the real robot) or many (Ray rollouts):

* `VLAInference` is stateless and batched: for B environments it VQ-encodes the current frame(s),
  generates the MMU scene description for rows that have none yet (the paper's L'), and predicts
  the action chunk (and, for videos, the decoded future frame) in one forward.
* `ChunkedPolicy` keeps per-environment state over any such engine (local, or a shared Ray actor):
  the instruction, the description generated once per subtask, and the rest of the chunk, executed
  open loop; it replans every `chunk_len` steps, as the paper does (or after the chunk's first
  `action_steps`), for all envs that need it at once.
* `UPVLAPolicy` is CALVIN's `reset()/step(obs, goal)` (`envs.base.Policy`) for one environment.

`load_policy(checkpoint_or_run)` is the one loader of simulation and robot evaluation: a checkpoint
folder (`VLAModel.save_pretrained` + `policy.json`), an MLflow `runs:/<id>/<path>` URI or a run id.

    policy = load_policy("artifacts/tune/model")
    run_chain(env, policy, chain)                       # envs.protocol, CALVIN's loop

Determinism: a row's outputs do not depend on the other rows' contents (text is padded to fixed lengths),
but CPU kernels do round differently with the number of rows (a trained default checkpoint's actions
moved by up to 2e-3 between a batch of one and of two, enough for greedy descriptions and rollouts to
drift). So `VLAInference(batch_size=B)` runs every forward on exactly B rows, padding with copies of a
real row and splitting larger requests; the evaluate stage sets B to the env slots a policy serves, so
results do not depend on which chains happen to replan together (checked by
tests/components/evaluation/test_policy.py).
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from components.core.checkpoint_refs import resolve_checkpoint
from components.data.conversation import DESCRIBE_PROMPT, DESCRIBE_QUESTION, encode_text, prompt_text
from envs.base import Observation
from model.batches import RobotBatch, clip_pixels, pad_ids, vq_pixels
from model.pretrained import TOKENIZER_DIR
from model.vla import VLAModel

POLICY_FILE = "policy.json"
# policy.json's format. Version 1 (no "version" key) stored the bare question "Describe the scene." as the
# description prompt, which no model was ever trained on (training prompts "USER: <question> ASSISTANT:");
# version 2 stores the trained prompt's text and its exact ids.
POLICY_VERSION = 2
Precision = Literal["bf16", "fp32"]


@dataclass(frozen=True)
class PolicySettings:
    """How a checkpoint must be prompted at inference; written beside the weights by the `tune` stage."""

    # the action prompt carries CLIP tokens + a generated scene description (trained with tune.mmu_condition)
    mmu_condition: bool
    # the text the scene description is generated after: the MMU training data's describe prompt
    description_prompt: str = DESCRIBE_PROMPT
    # its ids under the checkpoint's text tokenizer, as trained (None: encode `description_prompt`)
    description_prompt_ids: tuple[int, ...] | None = None

    def prompt_ids(self, tokenizer: Any) -> list[int]:
        """The description prompt's ids; stored ids must be what `tokenizer` makes of the stored text."""
        ids = encode_text(tokenizer, self.description_prompt)
        if self.description_prompt_ids is not None and list(self.description_prompt_ids) != ids:
            raise ValueError(f"{POLICY_FILE}: description_prompt_ids {list(self.description_prompt_ids)} are not "
                             f"what the checkpoint's tokenizer makes of {self.description_prompt!r} ({ids}); "
                             "the tokenizer/ folder is not the one the model was trained with")
        return ids


def save_policy_settings(folder: str | Path, settings: PolicySettings, tokenizer: Any = None) -> Path:
    """Write `policy.json` into a checkpoint folder (after `VLAModel.save_pretrained`), prompt ids included.

    The ids are the description prompt under `tokenizer`, by default the checkpoint's own `tokenizer/`:
    the one inference reads the prompt with.
    """
    if tokenizer is None:
        if not (Path(folder) / TOKENIZER_DIR / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{Path(folder) / TOKENIZER_DIR}: missing; save the model (with its text "
                                    "tokenizer) before its policy.json")
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(Path(folder) / TOKENIZER_DIR))
    path = Path(folder) / POLICY_FILE
    path.write_text(json.dumps({"version": POLICY_VERSION, "mmu_condition": settings.mmu_condition,
                                "description_prompt": settings.description_prompt,
                                "description_prompt_ids": settings.prompt_ids(tokenizer)}, indent=2))
    return path


def read_policy_settings(folder: str | Path) -> PolicySettings:
    """Read `policy.json` of a checkpoint folder (any version), with errors naming the file and key."""
    path = Path(folder) / POLICY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the checkpoint does not say how to prompt it. Write it with "
                                "components.evaluation.policy.save_policy_settings(folder, "
                                "PolicySettings(mmu_condition=...))")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not JSON ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    version = raw.get("version", 1)
    if version == 1:  # it held the bare question; every version-1 checkpoint was trained on its prompt_text
        question = raw.get("description_prompt", DESCRIBE_QUESTION)
        raw = {**raw, "description_prompt": prompt_text(question) if isinstance(question, str) else question,
               "description_prompt_ids": None}
    elif version != POLICY_VERSION:
        raise ValueError(f"{path}: version {version!r} is not one this code reads (1..{POLICY_VERSION})")
    ids = raw.get("description_prompt_ids")
    for key, ok in (("mmu_condition", isinstance(raw.get("mmu_condition"), bool)),
                    ("description_prompt", isinstance(raw.get("description_prompt"), str)),
                    ("description_prompt_ids", ids is None and version == 1 or isinstance(ids, list)
                     and all(isinstance(i, int) and not isinstance(i, bool) for i in ids))):
        if not ok:
            raise ValueError(f"{path}: key {key!r} is missing or of the wrong type, got {raw.get(key)!r}")
    return PolicySettings(raw["mmu_condition"], raw["description_prompt"], None if ids is None else tuple(ids))


def checkpoint_digest(folder: str | Path) -> str:
    """sha256 over a checkpoint folder's files (names and bytes): identifies the policy in results logs."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class PlanRequest:
    """One batched replan for B environments.

    Attributes:
        goals: B instructions.
        static: (B, H, W, 3) uint8 static camera frames.
        gripper: (B, h, w, 3) uint8 gripper camera frames (needed when the model reads two views).
        descriptions: per row, the subtask's description ids, or None to generate one from this frame.
        previews: per row, whether to decode the predicted future frame (videos only; costs a VQ decode).
        robot_obs: (B, 15) CALVIN robot_obs (needed when the model reads proprioception, `model.proprio`).
    """

    goals: list[str]
    static: np.ndarray
    gripper: np.ndarray | None
    descriptions: list[list[int] | None]
    previews: list[bool]
    robot_obs: np.ndarray | None = None


@dataclass
class PlanReply:
    """Actions (B, k, 7) float32 (gripper exactly +-1), descriptions (None when unconditioned), previews."""

    actions: np.ndarray
    descriptions: list[list[int] | None]
    previews: list[np.ndarray | None]


class InferenceEngine(Protocol):
    """Anything that answers `PlanRequest`s: `VLAInference` in-process, or a shared Ray actor."""

    def plan(self, request: PlanRequest) -> PlanReply:
        """Run one batched replan."""


class VLAInference:
    """Stateless batched UP-VLA inference (see the module docstring)."""

    def __init__(self, model: VLAModel, settings: PolicySettings, *, precision: Precision = "bf16",
                 batch_size: int | None = None) -> None:
        """Wrap an eval-mode model; its text tokenizer encodes instructions and the description prompt.

        `batch_size`: every forward (description and actions) runs on exactly this many rows, so a row's
        result does not depend on how many rows came with it; None: the request's own size.
        """
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1, got {batch_size}")
        if model.text_tokenizer is None:
            raise ValueError("the checkpoint has no text tokenizer (tokenizer/); the policy cannot read instructions")
        if precision not in ("bf16", "fp32"):
            raise ValueError(f"precision: must be 'bf16' or 'fp32', got {precision!r}")
        self.model, self.settings, self.bf16 = model.eval(), settings, precision == "bf16"
        self.batch_size = batch_size
        self.cfg, self.layout = model.cfg, model.layout
        self.device = next(model.parameters()).device
        self._prompt = settings.prompt_ids(model.text_tokenizer)
        self._instructions: dict[str, list[int]] = {}

    def tokenize(self, goal: str) -> list[int]:
        """Instruction ids (cached); too long an instruction is an error, never silently cut."""
        if goal not in self._instructions:
            ids = encode_text(self.model.text_tokenizer, goal)
            if len(ids) > self.cfg.max_text_len:
                raise ValueError(f"instruction {goal!r} has {len(ids)} tokens > model.max_text_len "
                                 f"({self.cfg.max_text_len})")
            self._instructions[goal] = ids
        return self._instructions[goal]

    def plan(self, request: PlanRequest) -> PlanReply:
        """Descriptions for rows without one, then the action chunk for every row (one forward per `batch_size`)."""
        size, rows = self.batch_size, len(request.goals)
        if size is None or size == rows:
            return self._plan(request)
        replies = []
        for start in range(0, rows, size):
            block = list(range(start, min(start + size, rows)))
            padded = block + [block[-1]] * (size - len(block))
            reply = self._plan(select_rows(request, padded, previews=len(block)))
            replies.append(PlanReply(reply.actions[:len(block)], reply.descriptions[:len(block)],
                                     reply.previews[:len(block)]))
        return PlanReply(np.concatenate([r.actions for r in replies]), [d for r in replies for d in r.descriptions],
                         [p for r in replies for p in r.previews])

    def _plan(self, request: PlanRequest) -> PlanReply:
        static = torch.from_numpy(np.ascontiguousarray(request.static)).to(self.device)
        descriptions = list(request.descriptions)
        scene_pixels = description_ids = None
        if self.settings.mmu_condition:
            scene_pixels = clip_pixels(static, self.cfg.vision_image_size)
            descriptions = self._describe(scene_pixels, descriptions)
            description_ids = pad_ids(descriptions, self.layout.pad_id, self.cfg.max_description_len)
        # fixed padded widths keep every row's computation independent of the rest of the batch
        instructions = pad_ids([self.tokenize(g) for g in request.goals], self.layout.pad_id, self.cfg.max_text_len)
        batch = RobotBatch(instructions.to(self.device), self._encode(static, request.gripper),
                           scene_pixels=scene_pixels,
                           description_ids=None if description_ids is None else description_ids.to(self.device),
                           robot_obs=self._robot_obs(request.robot_obs))
        prediction = self.model.predict(batch, bf16=self.bf16)
        previews: list[np.ndarray | None] = [None] * len(request.goals)
        for row in (i for i, wanted in enumerate(request.previews) if wanted):
            # one row at a time: the VQ decoder's convolutions round differently with the batch size
            image = self.model.decode_codes(prediction.future_codes[row:row + 1])[0, 0]  # static view
            previews[row] = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        return PlanReply(prediction.actions.cpu().numpy(), descriptions if self.settings.mmu_condition
                         else [None] * len(descriptions), previews)

    def _describe(self, scene_pixels: torch.Tensor, descriptions: list[list[int] | None]) -> list[list[int]]:
        rows = [i for i, d in enumerate(descriptions) if d is None]
        if rows:
            # with a fixed batch size, generate on as many rows as the forward has (copies of a missing row)
            padded = rows + [rows[-1]] * (len(descriptions) - len(rows) if self.batch_size is not None else 0)
            prompt = torch.tensor([self._prompt] * len(padded), dtype=torch.long, device=self.device)
            generated = self.model.generate_description(scene_pixels[padded], prompt, bf16=self.bf16)
            for row, ids in zip(rows, generated.tolist()[:len(rows)], strict=True):
                descriptions[row] = [t for t in ids if t != self.layout.pad_id]
        return descriptions

    def _robot_obs(self, robot_obs: np.ndarray | None) -> torch.Tensor | None:
        if not self.cfg.proprio:
            return None
        if robot_obs is None:
            raise ValueError("the model reads proprioception (model.proprio = true); the request has no robot_obs")
        return torch.from_numpy(np.asarray(robot_obs, dtype=np.float32)).to(self.device)

    def _encode(self, static: torch.Tensor, gripper: np.ndarray | None) -> torch.Tensor:
        """(B, V*N) VQ codes of the current views (static, then gripper)."""
        views = [static]
        if self.cfg.num_views == 2:
            if gripper is None:
                raise ValueError("the model reads the gripper camera too (model.num_views = 2); obs has no rgb_gripper")
            views.append(torch.from_numpy(np.ascontiguousarray(gripper)).to(self.device))
        codes = [self.model.vq.encode(vq_pixels(v, self.cfg.vq.image_size)) for v in views]
        return torch.cat(codes, dim=1)


def select_rows(request: PlanRequest, rows: list[int], *, previews: int | None = None) -> PlanRequest:
    """The request made of `rows` (indices may repeat); only the first `previews` of them decode a preview."""
    keep = len(rows) if previews is None else previews
    return PlanRequest(
        goals=[request.goals[i] for i in rows], static=request.static[rows],
        gripper=None if request.gripper is None else request.gripper[rows],
        descriptions=[request.descriptions[i] for i in rows],
        previews=[request.previews[i] and n < keep for n, i in enumerate(rows)],
        robot_obs=None if request.robot_obs is None else request.robot_obs[rows])


class ChunkedPolicy:
    """Per-environment policy state over an `InferenceEngine`; serves many envs ("slots") per call.

    `act(slots, observations, goals)` returns one action per slot. Slots whose chunk is used up replan
    together in one engine call; the description is generated on the first replan after `reset(slot)`.
    """

    def __init__(self, engine: InferenceEngine, num_slots: int, *, delta_t: int | None = None,
                 action_steps: int | None = None) -> None:
        """State for `num_slots` environments, all starting as if just reset.

        `delta_t`: the model's `delta_t` (how far ahead a preview is, control steps), for video labels.
        `action_steps`: control steps executed from each predicted chunk before the next replan (its first ones);
        None: the whole chunk, as the paper.
        """
        if action_steps is not None and action_steps < 1:
            raise ValueError(f"action_steps: at least 1 (or None for the whole chunk), got {action_steps}")
        self.engine = engine
        self.preview_delta_t = delta_t
        self.action_steps = action_steps
        self._goals: list[str | None] = [None] * num_slots
        self._descriptions: list[list[int] | None] = [None] * num_slots
        self._chunks: list[deque[np.ndarray]] = [deque() for _ in range(num_slots)]
        self._watched = [False] * num_slots
        self._previews: list[np.ndarray | None] = [None] * num_slots

    def reset(self, slot: int) -> None:
        """A new subtask starts in `slot`: forget its description and the rest of its chunk."""
        self._goals[slot], self._descriptions[slot], self._previews[slot] = None, None, None
        self._chunks[slot].clear()

    def watch(self, slot: int, enabled: bool) -> None:
        """Decode the predicted future frame of `slot` at every replan (for rollout videos)."""
        self._watched[slot] = enabled
        self._previews[slot] = None

    def preview(self, slot: int) -> np.ndarray | None:
        """(S, S, 3) uint8 future frame predicted at the slot's last replan, when watched."""
        return self._previews[slot]

    def act(self, slots: Sequence[int], observations: Sequence[Observation], goals: Sequence[str]) -> list[np.ndarray]:
        """The (7,) action of each slot; one batched replan for the slots whose chunk is exhausted."""
        for slot, goal in zip(slots, goals, strict=True):
            if goal != self._goals[slot]:  # a new instruction is a new subtask, even without reset()
                self.reset(slot)
                self._goals[slot] = goal
        due = [i for i, slot in enumerate(slots) if not self._chunks[slot]]
        if due:
            self._replan([slots[i] for i in due], [observations[i] for i in due])
        return [self._chunks[slot].popleft() for slot in slots]

    def _replan(self, slots: list[int], observations: list[Observation]) -> None:
        rgb = [obs.get("rgb_obs", {}) for obs in observations]
        if any("rgb_static" not in r for r in rgb):
            raise ValueError("observation has no rgb_obs.rgb_static: the policy needs an env built with cameras")
        gripper = np.stack([r["rgb_gripper"] for r in rgb]) if all("rgb_gripper" in r for r in rgb) else None
        has_state = all("robot_obs" in obs for obs in observations)
        reply = self.engine.plan(PlanRequest(
            goals=[self._goals[s] for s in slots], static=np.stack([r["rgb_static"] for r in rgb]), gripper=gripper,
            descriptions=[self._descriptions[s] for s in slots], previews=[self._watched[s] for s in slots],
            robot_obs=np.stack([obs["robot_obs"] for obs in observations]) if has_state else None))
        for i, slot in enumerate(slots):
            actions = reply.actions[i]
            if self.action_steps is not None:
                if self.action_steps > len(actions):
                    raise ValueError(f"action_steps: {self.action_steps} is more than the model's chunk of "
                                     f"{len(actions)} actions (model.chunk_len)")
                actions = actions[:self.action_steps]
            self._descriptions[slot] = reply.descriptions[i]
            self._chunks[slot].extend(np.asarray(a, dtype=np.float64) for a in actions)
            if reply.previews[i] is not None:
                self._previews[slot] = reply.previews[i]


class UPVLAPolicy:
    """CALVIN's `CalvinBaseModel` (`envs.base.Policy`) for one environment."""

    def __init__(self, engine: InferenceEngine, *, action_steps: int | None = None) -> None:
        """One slot of a `ChunkedPolicy` over `engine` (`action_steps`: as `ChunkedPolicy`'s)."""
        self.chunked = ChunkedPolicy(engine, 1, action_steps=action_steps)

    def reset(self) -> None:
        """Start of a subtask: the next step generates a new description and replans."""
        self.chunked.reset(0)

    def step(self, obs: Observation, goal: str) -> np.ndarray:
        """The (7,) relative action for this control step."""
        return self.chunked.act([0], [obs], [goal])[0]


def load_inference(folder: str | Path, *, device: str = "cpu", precision: Precision = "bf16",
                   batch_size: int | None = None) -> VLAInference:
    """`VLAInference` over a local checkpoint folder (weights, tokenizer and `policy.json`)."""
    settings = read_policy_settings(folder)
    return VLAInference(VLAModel.from_pretrained(folder, map_location=device), settings, precision=precision,
                        batch_size=batch_size)


def load_policy(checkpoint_or_run: str | Path, *, target: Any = None, device: str = "cpu",
                precision: Precision = "bf16", action_steps: int | None = None) -> UPVLAPolicy:
    """The policy of a checkpoint folder, an MLflow `runs:/<id>/<path>` URI or a run id.

    Args:
        checkpoint_or_run: a local folder, or a run reference (downloaded through `components.core.tracking`).
        target: the `TrackingTarget` of the MLflow store; required for run references.
        device: torch device of the model.
        precision: `bf16` (autocast; faster on CPUs with bf16 units and on GPUs) or `fp32`.
        action_steps: control steps executed from each chunk before replanning; None: the whole chunk (the paper).
    """
    folder = resolve_checkpoint(checkpoint_or_run, target)
    return UPVLAPolicy(load_inference(folder, device=device, precision=precision), action_steps=action_steps)
