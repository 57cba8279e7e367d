"""Run a chain of cleaning operators over a jsonl file, streaming, with every dropped row accounted for.

Flow: (strict mode) one validating pass over the input — every row must carry the fields its
operators read, reported with file, line and field *before* any teacher call — then one streaming
pass: rows flow through the operators as an async chain; each drop is written at once to the
rejects file with ``reject_op``, ``reject_reason`` and ``reject_detail``; kept rows go to the output.

Why outputs are written to temporary files and renamed at the end: a run that fails half-way must
not leave a half-cleaned file that looks like a result.  Rerunning is cheap — the cheap operators
are fast and teacher answers come back from the request cache.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import orjson

from synthkd.errors import ConfigError
from synthkd.filters.base import Operator, RunContext
from synthkd.filters.funnel import Funnel, Stage
from synthkd.filters.op_config import build
from synthkd.jsonl_io import InputError, iter_lines, scan_jsonl
from synthkd.row_source import as_path

INPUT_STAGE = "input"


def default_rejects(output: Path) -> Path:
    name = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(name + ".rejects.jsonl")


def default_report_paths(output: Path, report_dir: Path | None) -> tuple[Path, Path]:
    if report_dir is not None:
        return report_dir / "funnel.json", report_dir / "funnel.md"
    name = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(name + ".funnel.json"), output.with_name(name + ".funnel.md")


def prescan(path: Path, ops: list[Operator], id_field: str = "id") -> int:
    """Validate every row against what the operators read; return the row count or raise InputError."""
    problems: list[str] = []
    rows = 0
    provided: set[str] = set()
    plan: list[tuple[Operator, list[tuple[str, ...]]]] = []
    for op in ops:
        groups = [g for g in op.needs() if not provided.intersection(g)]
        plan.append((op, groups))
        provided.update(op.provides())
    for lineno, row in scan_jsonl(path, problems):  # the shared reader: a BOM is accepted as everywhere else
        rows += 1
        if not isinstance(row, dict):
            problems.append(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        elif id_field not in row:
            problems.append(f"{path}:{lineno}: field {id_field!r}: missing")
        else:
            for op, groups in plan:
                for g in groups:
                    if not any(f in row for f in g):
                        what = " or ".join(repr(f) for f in g)
                        problems.append(f"{path}:{lineno}: row id {row[id_field]!r}: field {what}: missing "
                                        f"(needed by operator {op.label!r})")
                        break
    if problems:
        raise InputError(problems)
    return rows


class _Writer:
    """Buffered jsonl writer to a temporary file beside the target, renamed into place on commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        self.tmp = Path(tmp)
        self.f = os.fdopen(fd, "wb", buffering=1 << 20)
        self.count = 0

    def write(self, row: dict[str, Any]) -> None:
        self.f.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY))
        self.count += 1

    def commit(self) -> None:
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if not self.f.closed:
            self.f.close()
        self.tmp.unlink(missing_ok=True)


@dataclass
class CleanPaths:
    output: Path
    rejects: Path
    report_json: Path
    report_md: Path


async def _read_input(path: Path, ctx: RunContext, funnel: Funnel, rejects: _Writer,
                      tick: Callable[[int], None] | None) -> AsyncIterator[dict[str, Any]]:
    st = funnel.stages[0]
    id_field = ctx.id_field
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        st.rows_in += 1
        if tick is not None and st.rows_in % 1024 == 0:
            tick(1024)
        reason: str | None = None
        detail: str | None = None
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            reason, row = "not valid JSON", {"line": lineno, "raw": line.decode("utf-8", "replace")[:2000]}
            detail = str(exc)
        else:
            if not isinstance(row, dict):
                reason, detail = "not a JSON object", None
                row = {"line": lineno, "raw": line.decode("utf-8", "replace")[:2000]}
            elif id_field not in row:
                reason, detail = f"field {id_field!r} missing", f"line {lineno}"
        if reason is not None:
            if ctx.strict:  # the prescan catches these first; kept for library use without it
                raise InputError([f"{path}:{lineno}: {reason}"])
            funnel.drop(0, row, reason, detail, None, id_field)
            rejects.write({**row, "reject_op": INPUT_STAGE, "reject_reason": reason,
                           **({"reject_detail": detail} if detail else {})})
            continue
        st.kept += 1
        yield row


async def _stage(i: int, op: Operator, upstream: AsyncIterator[dict[str, Any]], funnel: Funnel,
                 rejects: _Writer) -> AsyncIterator[dict[str, Any]]:
    st = funnel.stages[i]
    preview = op.preview_field()
    id_field = op.ctx.id_field
    label = op.label

    async def counted() -> AsyncIterator[dict[str, Any]]:
        async for row in upstream:
            st.rows_in += 1
            yield row

    async for row, rej in op.run(counted()):
        if rej is None:
            st.kept += 1
            yield row
        else:
            funnel.drop(i, row, rej.reason, rej.detail, preview, id_field)
            rec = dict(row)
            rec["reject_op"] = label
            rec["reject_reason"] = rej.reason
            if rej.detail is not None:
                rec["reject_detail"] = rej.detail
            rejects.write(rec)


async def clean_file(
    input_path: Path,
    configs: list,
    paths: CleanPaths,
    *,
    strict: bool = True,
    teacher_factory: Callable[[], Any] | None = None,
    progress: bool | None = None,
    meta: dict[str, Any] | None = None,
    id_field: str = "id",
) -> Funnel:
    """Run the operators of ``configs`` over ``input_path``; write output, rejects and the funnel report."""
    input_path = as_path(input_path)  # a SourcePath keeps its column map
    if not input_path.exists():
        raise InputError([f"{input_path}: file not found"])
    workdir = Path(tempfile.mkdtemp(prefix=".synthkd-clean-", dir=paths.output.parent if paths.output.parent.exists() else None))
    ctx = RunContext(strict=strict, source=str(input_path), id_field=id_field, workdir=workdir)
    writers: list[_Writer] = []
    try:
        ops = build(configs, ctx)
        teacher_ops = [op.label for op in ops if op.uses_teacher]
        if teacher_ops:
            if teacher_factory is None:
                raise ConfigError(f"operator(s) {', '.join(teacher_ops)} need a teacher: give --teacher MODEL")
            ctx.teacher = teacher_factory()
            ctx.teacher_name = ctx.teacher.model
        while True:
            funnel = await _one_pass(input_path, ops, ctx, paths, writers, strict=strict, progress=progress,
                                     meta=meta, id_field=id_field)
            if funnel is not None:
                return funnel
            # batch mode: the teacher's requests wait for batches; this pass's files are dropped, and the
            # next one (fresh operators, answers from the cache) writes the result
            from synthkd.teachers.batch.passes import wait_or_stop

            for w in writers:
                w.abort()
            writers.clear()
            await wait_or_stop([ctx.teacher], "clean")
            ops = build(configs, ctx)
    finally:
        for w in writers:
            w.abort()
        shutil.rmtree(workdir, ignore_errors=True)
        teacher = ctx.teacher
        if teacher is not None and hasattr(teacher, "aclose"):
            await teacher.aclose()


async def _one_pass(input_path: Path, ops: list, ctx: RunContext, paths: CleanPaths, writers: list,
                    *, strict: bool, progress: bool | None, meta: dict[str, Any] | None,
                    id_field: str) -> Funnel | None:
    """One streaming pass over the input; None when (batch mode) some rows wait for batches."""
    from synthkd.teachers.batch.passes import batch_waiting

    for op in ops:
        await op.setup()
    total = prescan(input_path, ops, id_field) if strict else None
    funnel = Funnel([Stage(INPUT_STAGE, INPUT_STAGE, "rows read from the input file")]
                    + [Stage(op.label, op.op, op.summary) for op in ops])
    funnel.meta = {"input": str(input_path), "output": str(paths.output), "rejects": str(paths.rejects),
                   **(meta or {})}
    out = _Writer(paths.output)
    writers.append(out)
    rej = _Writer(paths.rejects)
    writers.append(rej)
    bar = None
    if progress if progress is not None else sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc="clean", unit="row", file=sys.stderr, dynamic_ncols=True)
    stream = _read_input(input_path, ctx, funnel, rej, bar.update if bar else None)
    for i, op in enumerate(ops, 1):
        stream = _stage(i, op, stream, funnel, rej)
    async for row in stream:
        out.write(row)
    if bar is not None:
        bar.close()
    if batch_waiting([ctx.teacher]):
        return None
    funnel.finish()
    for i, op in enumerate(ops, 1):
        funnel.stages[i].extra = op.report()
        funnel.stages[i].extra_md = op.report_markdown()
    problems = funnel.check_accounting()
    if problems or out.count != funnel.rows_out or rej.count != funnel.rejected:
        raise RuntimeError("row accounting failed (a bug in an operator): " + "; ".join(problems))
    out.commit()
    rej.commit()
    funnel.write(paths.report_json, paths.report_md)
    return funnel
