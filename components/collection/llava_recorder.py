r"""Visual question answering in LLaVA-665k's format, every answer read off the simulator's state.

Each image is a training scene reset to one of CALVIN's symbolic start states (random spots), then
half the time advanced by one expert task (so blocks sit in the drawer, on the shelf, stacked or
in the gripper), rendered by the static camera. Its conversation starts with `DESCRIBE_QUESTION`
answered by `envs.describe.describe_scene` (the MMU-conditioned prompt's target) and adds
`questions` random questions about block places, colours, left/right, drawer, door and lights.

    <root>/llava_v1_5_mix665k.json  [{"id": "playtable-000012", "image": "playtable/000012.jpg",
                                      "conversations": [{"from": "human", "value": "<image>\nDescribe the scene."},
                                                        {"from": "gpt", "value": "red block ..."}, ...]}]
    <root>/playtable/<k>.jpg        200x200 JPEG (quality 95)
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from components.data.conversation import DESCRIBE_QUESTION
from envs.describe import block_places, describe_scene
from envs.experts.play import PlaySession
from envs.playtable import PlayTableEnv

IMAGE_DIR = "playtable"
WHERE = {"table": "on the table", "cabinet": "in the sliding cabinet", "drawer": "in the drawer",
         "floor": "on the floor", "held": "in the gripper", "lifted": "in the air"}


@dataclass(frozen=True)
class LlavaJob:
    """A batch of LLaVA samples: image indices [first, first + count) rendered in `scene`."""

    first: int
    count: int
    scene: str
    seed: int
    # questions per image besides "Describe the scene."
    questions: int


def where(place: str) -> str:
    """A block place of `envs.describe.block_places` in words."""
    return f"on the {place[3:]} block" if place.startswith("on ") else WHERE[place]


def question_bank(scene_obs: np.ndarray, robot_obs: np.ndarray, scene: str) -> list[tuple[str, str]]:
    """Every (question, answer) pair this state answers; the caller samples from them."""
    places = block_places(scene_obs, scene, robot_obs)
    colours = list(places)
    x = {c: scene_obs[6 + 6 * i] for i, c in enumerate(colours)}
    held = [c for c, p in places.items() if p == "held"]
    on_table = [c for c in colours if places[c] == "table"]
    bank = [(f"Where is the {c} block?", f"The {c} block is {where(p)}.") for c, p in places.items()]
    bank += [("Which blocks are on the table?", f"The {' and '.join(on_table)} block{'s' if len(on_table) > 1 else ''}."
              if on_table else "There is no block on the table."),
             ("What colours are the blocks?", f"The blocks are {', '.join(colours[:-1])} and {colours[-1]}."),
             ("What is the gripper holding?", f"The {held[0]} block." if held else "Nothing, the gripper is empty."),
             ("Is the drawer open?", "Yes." if scene_obs[1] > 0.15 else "It is half open." if scene_obs[1] > 0.04
              else "No, it is closed."),
             ("Is the light bulb on?", "Yes." if scene_obs[4] > 0.5 else "No."),
             ("Is the green LED on?", "Yes." if scene_obs[5] > 0.5 else "No."),
             ("Which side is the sliding door on?",
              "The left side." if "door left" in describe_scene(scene_obs, scene) else "The right side.")]
    for a, b in ((a, b) for a in on_table for b in on_table if a < b):
        side = "left" if x[a] < x[b] else "right"
        bank.append((f"Is the {a} block left or right of the {b} block?", f"It is to the {side} of the {b} block."))
    return bank


def conversation(scene_obs: np.ndarray, robot_obs: np.ndarray, scene: str, questions: int,
                 rng: np.random.Generator) -> list[dict[str, str]]:
    """LLaVA turns: the description first (with the `<image>` placeholder), then sampled questions."""
    bank = question_bank(scene_obs, robot_obs, scene)
    picked = rng.choice(len(bank), size=min(questions, len(bank)), replace=False)
    turns = [(f"<image>\n{DESCRIBE_QUESTION}", describe_scene(scene_obs, scene, robot_obs))]
    turns += [bank[i] for i in picked]
    return [{"from": who, "value": text} for q, a in turns for who, text in (("human", q), ("gpt", a))]


def record_samples(job: LlavaJob, root: Path) -> list[dict]:
    """Render and write the job's images under `root`; returns their samples. Deterministic for `job`."""
    rng = np.random.default_rng(job.seed)
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    samples = []
    with PlayTableEnv(job.scene, cameras=False, seed=job.seed) as env:
        session = PlaySession(env, rng)
        for k in range(job.first, job.first + job.count):
            seen: list[dict] = []
            session.run(int(rng.random() < 0.5), lambda o, _a, seen=seen: seen.append(o))
            obs = seen[-1]
            name = f"{IMAGE_DIR}/{k:06d}.jpg"
            buffer = io.BytesIO()
            Image.fromarray(env.render()).save(buffer, format="JPEG", quality=95)
            (root / name).write_bytes(buffer.getvalue())
            turns = conversation(obs["scene_obs"], obs["robot_obs"], job.scene, job.questions, rng)
            samples.append({"id": f"playtable-{k:06d}", "image": name, "conversations": turns})
    return samples
