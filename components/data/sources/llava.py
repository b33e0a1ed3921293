r"""LLaVA-665k reader: `llava_v1_5_mix665k.json` + image folder -> validated image/conversation records.

    <root>/llava_v1_5_mix665k.json   [{id, image: "coco/train2017/x.jpg", conversations: [
                                        {from: human, value: "<image>\nWhat is ...?"}, {from: gpt, value: ...}, ...]}]
    <root>/<image>                   the image files, resolved inside <root> only

Samples without an image (LLaVA's text-only ShareGPT part) are skipped and counted, not quarantined:
the understanding loss here always has an image. A kept sample has human/gpt turns alternating from
human, non-empty UTF-8 texts and exactly one `<image>` placeholder (removed from the stored question: the
model puts the image block before the text). An image path must be a string naming a file inside <root>
(symlinks resolved): a NUL byte, a name that is not UTF-8, a symlink loop (`bad_path`) or a way out of the
folder (`outside_dataset`) quarantines the sample. A sample list with no image sample is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.data.quarantine import BadRecord, IngestError, QuarantineRecord
from components.data.sources import UnitResult, check_text, read_file
from components.data.tables import LAZY_ROW_GROUP_SIZE, VQA, VQA_SCHEMA, PartWriter, decode_image

JSON_NAME = "llava_v1_5_mix665k.json"
PLACEHOLDER = "<image>"


def load_samples(root: Path) -> list[Any]:
    """The JSON list of samples.

    Raises:
        IngestError: the file is missing, outside `root` or not a JSON list, or no sample has an image.
    """
    path = root / JSON_NAME
    if not path.exists() and not path.is_symlink():
        raise IngestError(f"{root}: no LLaVA sample list (expected {JSON_NAME} and its image files)")
    try:
        samples = json.loads(read_file(root, path, JSON_NAME).decode("utf-8"))
    except BadRecord as err:
        raise IngestError(f"{path}: cannot read the LLaVA sample list: {err.reason} ({err.kind})") from err
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise IngestError(f"{path}: cannot read the LLaVA sample list: {type(err).__name__}: {err}") from err
    if not isinstance(samples, list):
        raise IngestError(f"{path}: expected a JSON list of samples, got {type(samples).__name__}")
    if not any(not isinstance(s, dict) or "image" in s for s in samples):
        raise IngestError(f"{path}: no samples found with an image ({len(samples)} samples, all text-only)")
    return samples


def parse_conversation(conversations: Any) -> tuple[list[str], list[str]]:
    """Questions and answers of a conversation, the `<image>` placeholder removed.

    Raises:
        BadRecord: bad_value / missing_key naming the turn.
    """
    if not isinstance(conversations, list) or len(conversations) < 2 or len(conversations) % 2:
        raise BadRecord("bad_value", "conversations", "expected an even, non-empty list of human/gpt turns")
    texts = []
    for i, turn in enumerate(conversations):
        expected = "human" if i % 2 == 0 else "gpt"
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise BadRecord("missing_key", f"conversations[{i}]", "a turn needs `from` and `value`")
        if turn["from"] != expected:
            raise BadRecord("bad_value", f"conversations[{i}].from", f"{turn['from']!r}, expected {expected!r}")
        if not isinstance(turn["value"], str) or not turn["value"].strip():
            raise BadRecord("bad_value", f"conversations[{i}].value", "empty or not a string")
        texts.append(check_text(turn["value"], f"conversations[{i}].value"))
    placeholders = sum(t.count(PLACEHOLDER) for t in texts)
    if placeholders != 1 or PLACEHOLDER in "".join(texts[1::2]):
        raise BadRecord("bad_value", "conversations", f"expected one {PLACEHOLDER} placeholder in a human turn, "
                                                      f"found {placeholders}")
    questions = [t.replace(PLACEHOLDER, "").strip() for t in texts[0::2]]
    if not all(questions):
        raise BadRecord("bad_value", "conversations", "a question is empty once the placeholder is removed")
    return questions, [t.strip() for t in texts[1::2]]


def read_image(root: Path, name: Any) -> bytes:
    """The bytes of a sample's image, which must lie inside `root` and decode."""
    if not isinstance(name, str) or not name:
        raise BadRecord("bad_path", "image", f"{name!r:.80} is not a relative image path")
    check_text(name, "image", "bad_path")  # stored in the `image_path` column
    data = read_file(root, root / name, "image", "missing_image", f"{name} does not exist")
    try:
        decode_image(data)
    except Exception as err:  # noqa: BLE001 - PIL raises many types for truncated/corrupt images
        raise BadRecord("corrupt_file", "image", f"{name}: {type(err).__name__}: {err}") from err
    return data


@dataclass(frozen=True)
class LlavaUnit:
    """A slice of the sample list, read and written as one part file."""

    root: str
    index: int
    # position of the first sample in the JSON list (for the report)
    start: int
    samples: tuple[Any, ...]

    def read(self, out_root: Path, rows_per_file: int, describe: Any = None) -> UnitResult:
        """Validate the samples and write the good ones to `vqa/`."""
        result, root = UnitResult(), Path(self.root)
        writer = PartWriter(out_root / VQA, f"llava-u{self.index:05d}", VQA_SCHEMA, rows_per_file, LAZY_ROW_GROUP_SIZE)
        for offset, sample in enumerate(self.samples):
            if isinstance(sample, dict) and "image" not in sample:
                result.skip("llava_without_image")
                continue
            result.count(VQA)
            where = f"{JSON_NAME}[{self.start + offset}]"
            try:
                writer.add(self._row(root, sample))
            except BadRecord as err:
                result.records.append(QuarantineRecord.of(VQA, where, err))
        writer.flush()
        result.files = [str(p.relative_to(out_root)) for p in writer.files]
        return result

    @staticmethod
    def _row(root: Path, sample: Any) -> dict[str, Any]:
        if not isinstance(sample, dict):
            raise BadRecord("bad_value", "sample", f"expected an object, got {type(sample).__name__}")
        for key in ("id", "conversations"):
            if key not in sample:
                raise BadRecord("missing_key", key, "not in the sample")
        questions, answers = parse_conversation(sample["conversations"])
        image = read_image(root, sample["image"])
        return {"id": check_text(str(sample["id"]), "id"), "image": image, "image_path": sample["image"],
                "questions": questions, "answers": answers}


def plan_llava(root: Path, samples_per_unit: int) -> list[LlavaUnit]:
    """Slice the sample list into units."""
    samples = load_samples(root)
    return [LlavaUnit(str(root), i // samples_per_unit, i, tuple(samples[i:i + samples_per_unit]))
            for i in range(0, len(samples), samples_per_unit)]
