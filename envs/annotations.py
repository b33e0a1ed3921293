"""CALVIN's language annotations: the training sentences and the evaluation sentences of the 34 tasks.

Training data is labelled with `new_playtable.yaml` (CALVIN's `conf/annotations/new_playtable.yaml`:
389 sentences, 8-16 per task); the evaluation protocol instructs with `new_playtable_validation.yaml`
(one sentence per task, none of them among the training sentences). Both files are CALVIN's (MIT),
shipped in `envs/playtable/data/calvin/`.

Example:
    training = load_training_sentences()      # {"open_drawer": ["open the drawer", ...], ...}
    lookup = SentenceLookup()                 # any training or evaluation sentence -> its task
    lookup.task("pull the handle to open the drawer")  # -> "open_drawer"
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from envs.symbolic import TASK_ORDER
from envs.tasks import CALVIN_DATA, VALIDATION_YAML

TRAINING_YAML = CALVIN_DATA / "new_playtable.yaml"


def _load(path: Path) -> dict[str, list[str]]:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or set(data) != set(TASK_ORDER):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected sentences for CALVIN's 34 tasks, got {got}")
    for task, sentences in data.items():
        if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) for s in sentences):
            raise ValueError(f"{path}: {task}: expected a non-empty list of sentences")
    return {task: list(data[task]) for task in TASK_ORDER}


@functools.lru_cache(maxsize=4)
def load_training_sentences(path: Path = TRAINING_YAML) -> dict[str, list[str]]:
    """Task -> its training sentences, tasks in CALVIN's task order (a cached dict: do not mutate)."""
    return _load(path)


@functools.lru_cache(maxsize=4)
def load_evaluation_sentences(path: Path = VALIDATION_YAML) -> dict[str, list[str]]:
    """Task -> its evaluation sentences (one each in CALVIN), tasks in CALVIN's task order."""
    return _load(path)


class SentenceLookup:
    """Maps an instruction back to its task: any training or evaluation sentence, or a task name."""

    def __init__(self, training: Path = TRAINING_YAML, evaluation: Path = VALIDATION_YAML) -> None:
        """Index both sentence files; a sentence listed under two tasks raises ValueError."""
        self._tasks = {task: task for task in TASK_ORDER}
        for path, sentences in ((training, load_training_sentences(training)),
                                (evaluation, load_evaluation_sentences(evaluation))):
            for task, texts in sentences.items():
                for text in texts:
                    key = _normalise(text)
                    if self._tasks.setdefault(key, task) != task:
                        raise ValueError(f"{path}: {text!r} is listed under {task} and {self._tasks[key]}")

    def task(self, instruction: str) -> str:
        """The task an instruction asks for (case and surrounding whitespace are ignored).

        Raises:
            KeyError: the sentence is in neither file.
        """
        key = _normalise(instruction)
        if key not in self._tasks:
            raise KeyError(f"instruction {instruction!r} is not one of CALVIN's training or evaluation sentences")
        return self._tasks[key]


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())
