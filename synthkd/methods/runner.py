"""Write a method's rows to append-only jsonl, resumably, and count what happened.

Resume model: a rerun of the same command recomputes the method, every teacher call it already paid
for comes back from the request cache for free, and rows whose ``id`` is already in the output are not
written again.  So a crash at any point costs at most the requests that were in flight.  The rejects
file is appended to, never truncated: an earlier attempt's entry stays until this run redoes its row
(:class:`synthkd.jsonl_io.RejectsWriter`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterable, Callable

from synthkd.jsonl_io import AppendWriter, RejectsWriter, index_output

REJECT_KEY = "reject_reason"


def rejects_path_for(output: Path) -> Path:
    name = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(name + ".rejects.jsonl")


@dataclass
class RunCounts:
    written: int = 0
    already_there: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)  # reject reasons, and null-answer reasons

    def as_dict(self) -> dict[str, Any]:
        return {"written": self.written, "already_there": self.already_there, "rejected": self.rejected,
                "reasons": dict(self.reasons)}


async def write_rows(rows: AsyncIterable[dict[str, Any]], output: Path, rejects: Path | None = None) -> RunCounts:
    """Append rows not yet in ``output``; rows with ``reject_reason`` go to the rejects file instead."""
    output = Path(output)
    done = index_output(output)
    counts = RunCounts()
    out = AppendWriter(output)
    try:
        rej = RejectsWriter(rejects or rejects_path_for(output), done)
    except BaseException:
        out.close()
        raise
    try:
        async for row in rows:
            if REJECT_KEY in row:
                rej.write(row)
                counts.rejected += 1
                counts.reasons[str(row[REJECT_KEY]).split(":")[0]] += 1
                continue
            if row["id"] in done:
                counts.already_there += 1
                continue
            out.write(row)
            rej.redone(row["id"])
            counts.written += 1
            if row.get("answer_reason"):
                counts.reasons[f"answer null: {row['answer_reason']}"] += 1
    finally:
        out.close()
        rej.close()
    return counts


def sort_output(output: Path, key: Callable[[dict[str, Any]], Any]) -> bool:
    """Rewrite ``output`` with its rows stably sorted by ``key`` (temp file + atomic rename); a torn
    last line (a killed writer's) is dropped, as :func:`index_output` ignores it.  Returns whether the
    file changed.  Methods whose rows stream out in completion order call it when they finish, so the
    file a run leaves is the same whatever the order answers arrived in."""
    import os

    import orjson

    output = Path(output)
    if not output.exists():
        return False
    raw = output.read_bytes()
    lines = raw.split(b"\n")
    rows = []
    for line in lines:
        if not line.strip():
            continue
        try:
            rows.append((orjson.loads(line), line))
        except orjson.JSONDecodeError:
            continue  # a torn last line
    ordered = sorted(rows, key=lambda r: key(r[0]))
    new = b"".join(line + b"\n" for _, line in ordered)
    if new == raw:
        return False
    tmp = output.with_name(output.name + ".sorting.tmp")
    with open(tmp, "wb") as f:
        f.write(new)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, output)
    return True
