"""The text template of understanding (MMU) conversations, shared by training data and inference.

LLaVA's `conv_phi_v0` style, as UP-VLA trains it: each turn is "USER: <question> ASSISTANT: <answer><eos>";
only the answers and their eos are trained. The image is not in the text: the model puts the CLIP
block before it (model/vla.py). The scene description of the MMU-conditioned prompt (the paper's L')
is generated after `DESCRIBE_PROMPT`, i.e. `prompt_text(DESCRIBE_QUESTION)`: the exact text the
"describe the scene" samples of the training data are prompted with. Collect, the text tokenizer,
training and the policy all take it from here, and every text becomes ids through `encode_text`.

    ids, labels = conversation_ids(tokenizer, ["What is on the table?"], ["A red block."], eos_id, 200)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from model.batches import IGNORE

# the question whose answers are the ground-truth scene descriptions (collect's LLaVA data asks it)
DESCRIBE_QUESTION = "Describe the scene."


def prompt_text(question: str, first: bool = True) -> str:
    """The untrained part of a turn: "USER: q ASSISTANT:" (later turns start with a space)."""
    return f"{'' if first else ' '}USER: {question} ASSISTANT:"


# what the model reads before it writes a scene description, in training and at inference
DESCRIBE_PROMPT = prompt_text(DESCRIBE_QUESTION)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """The ids of `text` as the model reads it: the tokenizer's raw ids, no special tokens added."""
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def answer_text(answer: str) -> str:
    """The trained part of a turn, before its eos."""
    return f" {answer}"


def conversation_ids(tokenizer: Any, questions: Sequence[str], answers: Sequence[str], eos_id: int,
                     max_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels of a multi-turn conversation, truncated to `max_len` tokens.

    Args:
        tokenizer: the model's text tokenizer (`tokenizer(text).input_ids` gives raw ids, no specials).
        questions: the human turns.
        answers: the assistant turns, as many as questions.
        eos_id: the tokenizer's eos id, appended after every answer (and trained).
        max_len: longest text the model takes after the image block.

    Returns:
        ids and labels of equal length; labels are IGNORE on the questions, the ids on answers and eos.

    Raises:
        ValueError: when not even the first answer's first token fits in `max_len`.
    """
    if len(questions) != len(answers) or not questions:
        raise ValueError(f"conversation: {len(questions)} questions and {len(answers)} answers")
    ids: list[int] = []
    labels: list[int] = []
    for i, (q, a) in enumerate(zip(questions, answers, strict=True)):
        prompt = encode_text(tokenizer, prompt_text(q, first=i == 0))
        answer = [*encode_text(tokenizer, answer_text(a)), eos_id]
        ids += prompt + answer
        labels += [IGNORE] * len(prompt) + answer
    ids, labels = ids[:max_len], labels[:max_len]
    if all(label == IGNORE for label in labels):
        raise ValueError(f"conversation: the first question alone fills the {max_len}-token text budget "
                         f"(raise model.max_position_embeddings); question: {questions[0][:80]!r}")
    return ids, labels
