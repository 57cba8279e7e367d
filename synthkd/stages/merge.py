"""Pipeline stage ``merge``: concatenate the rows of several earlier stages (or files) into one file.

Why: stages are a chain with one ``input`` each, but a dataset is often built from several generators
(``generate.tasks`` rows + ``generate.promptmix`` rows) that must be cleaned, deduplicated and balanced
*together* — a near-duplicate across two generators is still a duplicate.

Options: ``fields`` (keep only these fields, plus ``id`` and ``source``; default: all) and ``require``
(rows whose value of one of these fields is missing or null are dropped, counted by reason).  Each row's
id becomes ``<input name>:<id>`` (ids of two generators may collide) and ``source`` names its input.
Inputs are read in the order of the stage's ``inputs`` mapping, so the output is deterministic.

Ids keep their value, not their type: ``"1"`` and ``1`` of one input would both become ``t:1``.  Rather
than invent a second spelling (``t:"1"``) that later stages and users would have to know, such a
collision is reported (file:line of both rows, exit 2) before the merge writes anything.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict

from synthkd.jsonl_io import InputError, id_hash, iter_jsonl
from synthkd.stages.base import Estimate, StageContext, register_stage


@register_stage("merge")
class MergeStage:
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        fields: Optional[list[str]] = None
        require: list[str] = []

    options_model = Options

    def check(self, ctx: StageContext, o: Options) -> None:
        if len(ctx.inputs) < 1:
            raise ValueError("merge needs 'inputs' (name: earlier stage or file), at least one")

    async def run(self, ctx: StageContext, o: Options) -> dict[str, Any]:
        import json
        import os

        dropped: Counter = Counter()
        per_input: dict[str, int] = {}
        rows_in = rows_out = 0
        seen: dict[int, tuple[Any, int]] = {}  # hash of the merged id -> (file, line) where it was first written
        tmp = ctx.output.with_name(ctx.output.name + ".tmp")
        out = open(tmp, "w", encoding="utf-8")
        try:
            for name, path in ctx.inputs.items():
                kept = 0
                for lineno, row in iter_jsonl(path):
                    rows_in += 1
                    if not isinstance(row, dict):
                        raise InputError([f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"])
                    missing = [f for f in o.require if row.get(f) is None]
                    if missing:
                        dropped[f"{name}: missing {missing[0]}"] += 1
                        continue
                    body = {k: v for k, v in row.items() if o.fields is None or k in o.fields}
                    body.pop("id", None)
                    rid = row.get("id", f"line{lineno}")
                    merged = f"{name}:{rid}"
                    h = id_hash(merged)
                    if h in seen:
                        raise InputError([f"{path}:{lineno}: field 'id': {rid!r} becomes {merged!r}, the same merged id "
                                          f"as the row at {seen[h][0]}:{seen[h][1]}; give the rows distinct ids"])
                    seen[h] = (path, lineno)
                    out.write(json.dumps({"id": merged, "source": name, **body}, ensure_ascii=False) + "\n")
                    kept += 1
                per_input[name] = kept
                rows_out += kept
            out.close()
        except BaseException:
            out.close()
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, ctx.output)  # all or nothing: a crash never leaves half a merge
        return {"rows_in": rows_in, "rows_out": rows_out, "rejected": 0, "dropped": dict(dropped),
                "per_input": per_input}

    def estimate(self, ctx: StageContext, o: Options) -> Estimate | None:
        """No teacher call; the rows it will write (the sum of its inputs, known or expected) for the
        stages after it."""
        n = 0
        for name, path in ctx.inputs.items():
            if name in ctx.expected_rows:
                n += ctx.expected_rows[name]
            elif path.exists():
                n += sum(1 for _ in iter_jsonl(path))
            else:
                return None
        return Estimate(rows_out=n)
