"""A dry run (``--limit N``): the first rows only, their prompts and the teacher's answers printed side by
side, and what the whole input would cost.

Why: the way a user checks a prompt template, a column map and the answer parsing is to look at a few
real prompts and answers before paying for ten thousand.  :class:`Recorder` keeps the first requests a
teacher answers (it wraps the teacher's ``stream``; nothing else changes), :func:`side_by_side` prints
them in two columns, and :func:`command_estimate` prices the *full* input with the very code
``synthkd validate`` uses (each stage kind's ``estimate`` and the price table, through a one-stage
pipeline built from the command's options).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import textwrap
from pathlib import Path
from typing import Any, AsyncIterable, AsyncIterator, Iterable

log = logging.getLogger(__name__)

#: how many prompt/answer pairs a dry run prints
SHOWN = 3
#: lines of one cell before it is cut
CELL_LINES = 14


def request_text(req: Any) -> str:
    """The prompt of a request as a person reads it: the plain prompt, or the chat messages one after the other."""
    if getattr(req, "prompt", None) is not None:
        return str(req.prompt)
    parts = []
    for m in req.messages or []:
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(str(c.get("text", "")) if isinstance(c, dict) else str(c) for c in content)
        parts.append(f"[{m.get('role')}] {content}")
    return "\n".join(parts)


class Recorder:
    """Keeps the first ``keep`` answered requests of the teachers it is attached to: (label, prompt, answer)."""

    def __init__(self, keep: int = SHOWN) -> None:
        self.keep = keep
        self.pairs: list[tuple[str, str, str]] = []
        #: the output the recorded job writes (a pipeline stage's), for the report
        self.output: Path | None = None

    def attach(self, teacher: Any, label: str = "") -> Any:
        """Wrap ``teacher.stream`` so that its first answers are kept; returns the teacher."""
        inner = teacher.stream
        rec = self

        def stream(requests: AsyncIterable[Any]) -> AsyncIterator[Any]:
            async def gen() -> AsyncIterator[Any]:
                agen = inner(requests)
                try:
                    async for res in agen:
                        if len(rec.pairs) < rec.keep:
                            answer = res.text if res.text is not None else f"[no answer: {res.error}]"
                            if getattr(res, "reasoning", None):
                                answer = f"[reasoning] {res.reasoning}\n[answer] {answer}"
                            rec.pairs.append((f"{label}{res.request.key}", request_text(res.request), answer))
                        yield res
                finally:
                    await agen.aclose()

            return gen()

        teacher.stream = stream
        return teacher


def side_by_side(pairs: Iterable[tuple[str, str, str]], width: int | None = None) -> str:
    """Prompts and answers in two columns (``| prompt | answer |``), each cell wrapped and cut at
    :data:`CELL_LINES` lines."""
    width = width or max(80, min(shutil.get_terminal_size((120, 24)).columns, 200))
    col = (width - 7) // 2
    out: list[str] = []
    rule = "+" + "-" * (col + 2) + "+" + "-" * (col + 2) + "+"

    def cell(text: str) -> list[str]:
        lines: list[str] = []
        for para in text.splitlines() or [""]:
            lines += textwrap.wrap(para, col, replace_whitespace=False, drop_whitespace=True) or [""]
        if len(lines) > CELL_LINES:
            lines = lines[: CELL_LINES - 1] + [f"... ({len(lines) - CELL_LINES + 1} more lines)"]
        return lines

    for key, prompt, answer in pairs:
        out.append(rule)
        out.append(f"| {('prompt ' + key)[:col]:<{col}} | {'answer'[:col]:<{col}} |")
        out.append(rule)
        left, right = cell(prompt), cell(answer)
        for i in range(max(len(left), len(right))):
            a = left[i] if i < len(left) else ""
            b = right[i] if i < len(right) else ""
            out.append(f"| {a:<{col}} | {b:<{col}} |")
    if out:
        out.append(rule)
    return "\n".join(out)


def first_rows(path: Path, n: int = SHOWN) -> list[dict[str, Any]]:
    """The first rows of an output file (for the dry run's "rows written" lines)."""
    from synthkd.jsonl_io import iter_jsonl

    out: list[dict[str, Any]] = []
    if not Path(path).is_file():
        return out
    for _, row in iter_jsonl(Path(path)):
        out.append(row)
        if len(out) >= n:
            break
    return out


def report(recorder: Recorder, outputs: Iterable[tuple[str, Path]], limit: int, estimate: str | None) -> None:
    """Print a command's dry run: the pairs side by side, the first rows written, the whole input's estimate."""
    report_sections([("", recorder, list(outputs))], limit, estimate)


def report_sections(sections: Iterable[tuple[str, Recorder | None, list[tuple[str, Path]]]], limit: int,
                    estimate: str | None) -> None:
    """Print a dry run in sections (a pipeline's stages): for each, the teacher's first prompts and answers
    side by side (when it has a teacher) and the first rows written; then the whole input's estimate."""
    lines = [f"dry run (--limit {limit}): the first prompts and the teacher's answers, and the first rows written"]
    for title, recorder, outputs in sections:
        if title:
            lines.append(f"== {title}")
        if recorder is not None:
            lines.append(side_by_side(recorder.pairs) if recorder.pairs else "(no request was answered)")
        for name, path in outputs:
            rows = first_rows(path)
            if rows:
                lines.append(f"first rows written to {path}{' (' + name + ')' if name else ''}:")
                lines += [f"  {_short(r)}" for r in rows]
    if estimate:
        lines.append("cost estimate for the whole input (as synthkd validate):")
        lines.append(estimate)
    print("\n".join(lines), flush=True)


def _short(row: dict[str, Any], limit: int = 400) -> str:
    import orjson

    text = orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def command_estimate(stage_kind: str, cfg: Any, *, teacher: str, conn: dict[str, Any] | None = None,
                     input_path: Path | None = None, columns: dict[str, str] | None = None,
                     sampling: dict[str, Any] | None = None) -> str:
    """The cost table ``synthkd validate`` prints, for one command's job on its whole input: a one-stage
    pipeline of kind ``stage_kind`` with the command's stage options (``cfg``'s fields that are stage
    options), its ``--input`` and column map, and a ``teacher:`` block with the command's teacher, prices
    and sampling parameters.  Returns the table, or a line saying why there is none."""
    from synthkd.commands.pipeline_cmd import estimate_table
    from synthkd.config import PipelineConfig
    from synthkd.errors import exit_code_for
    from synthkd.options import stage_fields
    from synthkd.pipeline import plan
    from synthkd.stages.base import STAGES

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple):
            return list(v)
        return v

    try:
        import synthkd.stages  # noqa: F401  (registers every stage kind)

        model = STAGES[stage_kind].options_model
        names = set(model.model_fields)
        opts = {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
                if f.name in names and f.name in {g.name for g in stage_fields(type(cfg))}}
        tblock: dict[str, Any] = {"model": teacher}
        prices = (conn or {}).get("prices")
        if prices:
            tblock["prices"] = str(Path(prices).resolve())
        for k, v in (sampling or {}).items():
            if v is not None:
                tblock[k] = v
        stage: dict[str, Any] = {"name": "dry_run", "kind": stage_kind, "options": opts}
        if input_path is not None:
            stage["input"] = str(Path(str(input_path)).resolve()) if not str(input_path).startswith("hf:") \
                else str(input_path)
        if columns:
            stage["columns"] = dict(columns)
        pcfg = PipelineConfig.model_validate({"name": "dry_run", "teacher": tblock, "stages": [stage]})
        planned = plan(pcfg, Path.cwd())
        table, _ = estimate_table(pcfg, planned)
        return table
    except Exception as exc:  # noqa: BLE001  (an estimate that cannot be made must not stop the dry run)
        if exit_code_for(exc) is None and not isinstance(exc, (KeyError, ValueError, TypeError)):
            raise
        return f"(no estimate: {str(exc).strip().splitlines()[-1][:300]})"
