"""Quarantine: records that fail validation are left out, listed with file, key and reason, never replaced.

Readers raise `BadRecord(kind, key, reason)` for one record; the ingest stage catches it, keeps the
`QuarantineRecord`, and goes on. At the end `write_report` writes `quarantine.json` (machine-readable)
and `quarantine.txt` (an aligned table for people), and `check_bad_fraction` fails the stage when a
table lost more than `ingest.max_bad_fraction` of its records. A record's texts come from the data (file
names, JSON values): control characters and lone surrogates in them are written escaped (`printable`),
so any record can be reported.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

# kind -> what it means (the `kind` column of the report)
KINDS = {
    "missing_file": "a file the dataset's index lists does not exist",
    "corrupt_file": "a file cannot be read: truncated, not the expected format, or unparsable",
    "unsafe_pickle": "a pickle names a global or call besides numpy arrays and builtin containers; refused, never run",
    "missing_key": "a required key or field is absent",
    "bad_shape": "an array has the wrong shape (or lengths disagree)",
    "bad_dtype": "an array has the wrong data type",
    "non_finite": "an array holds NaN or infinity",
    "bad_value": "a value the format does not allow (gripper not +-1, empty text, text that is not UTF-8, ...)",
    "bad_path": "a path that cannot be used: not a string, a NUL byte, not UTF-8, too long, a symlink loop",
    "outside_dataset": "a file (or a symlink on its way) that leads outside the dataset folder; never read",
    "missing_image": "an image the record points to does not exist",
    "outside_episode": "a language window that does not lie inside one episode",
    "bad_frame": "a language window that covers a quarantined or missing frame",
}


class IngestError(RuntimeError):
    """The data cannot be ingested as a whole (missing index files, too many bad records)."""


class BadRecord(Exception):
    """One record fails validation; `kind` is a key of `KINDS`, `key` the offending key or field."""

    def __init__(self, kind: str, key: str, reason: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown quarantine kind {kind!r}; one of {sorted(KINDS)}")
        super().__init__(f"{key}: {reason} ({kind})")
        self.kind, self.key, self.reason = kind, key, reason


@dataclass(frozen=True)
class QuarantineRecord:
    """One record left out of a table."""

    # table it would have gone to: frames, windows or vqa
    table: str
    # file (or folder) holding it, relative to the dataset root of its source
    file: str
    # the offending key or field, e.g. `rgb_static`, `conversations[1].from`
    key: str
    # a key of KINDS
    kind: str
    # human-readable detail, e.g. "shape (200, 199, 3), expected (200, 200, 3)"
    reason: str

    def __post_init__(self) -> None:
        for name in ("file", "key", "reason"):
            object.__setattr__(self, name, printable(str(getattr(self, name))))

    @classmethod
    def of(cls, table: str, file: str, err: BadRecord) -> QuarantineRecord:
        """The record for a caught `BadRecord`."""
        return cls(table, file, err.key, err.kind, err.reason)


def printable(text: str) -> str:
    """`text` with every non-printable character (NUL, newline, lone surrogate, ...) as its Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def bad_counts(records: Sequence[QuarantineRecord]) -> dict[str, int]:
    """Quarantined records per table."""
    return dict(Counter(r.table for r in records))


def write_report(records: Sequence[QuarantineRecord], totals: Mapping[str, int], out_dir: Path) -> Path:
    """Write `quarantine.json` and `quarantine.txt` into `out_dir`; returns the JSON path.

    Args:
        records: every quarantined record.
        totals: records seen per table (kept + quarantined).
        out_dir: the ingest output folder.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    bad = bad_counts(records)
    summary = {t: {"total": n, "quarantined": bad.get(t, 0), "fraction": bad.get(t, 0) / n if n else 0.0}
               for t, n in totals.items()}
    payload = {"tables": summary, "kinds": dict(Counter(r.kind for r in records)),
               "records": [asdict(r) for r in records]}
    path = out_dir / "quarantine.json"
    path.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    (out_dir / "quarantine.txt").write_text(format_table(records, summary), encoding="utf-8")
    return path


def format_table(records: Sequence[QuarantineRecord], summary: Mapping[str, Mapping[str, float]]) -> str:
    """The readable report: per-table totals, then one aligned line per record."""
    lines = [f"{'table':<8} {'total':>9} {'quarantined':>12} {'fraction':>9}"]
    lines += [f"{t:<8} {s['total']:>9} {s['quarantined']:>12} {s['fraction']:>9.4f}" for t, s in summary.items()]
    lines.append("")
    if not records:
        return "\n".join([*lines, "no records quarantined", ""])
    cols = ("table", "file", "key", "kind", "reason")
    rows = [[getattr(r, c) for c in cols] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols[:-1])]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    lines.append(fmt.format(*cols))
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines) + "\n"


def check_bad_fraction(bad: Mapping[str, int], totals: Mapping[str, int], max_fraction: float, report: Path) -> None:
    """Raise `IngestError` (pointing to `report`) when any table lost more than `max_fraction` of its records.

    Args:
        bad: quarantined records per table (`bad_counts`).
        totals: records seen per table.
        max_fraction: `ingest.max_bad_fraction`.
        report: where the quarantine report of this run lies.
    """
    for table, total in totals.items():
        fraction = bad.get(table, 0) / total if total else 0.0
        if fraction > max_fraction:
            raise IngestError(f"ingest: {bad[table]} of {total} {table} records ({fraction:.2%}) were quarantined, "
                              f"more than ingest.max_bad_fraction = {max_fraction:.2%}; see {report}")
