"""Run a pipeline's stages in order into ``runs/<name>/``, resumably, skipping what is already done.

The run directory is the source of truth:
  manifest.json          config + hash, versions, per-stage status, counts, tokens, cost, timings
  <stage>.jsonl          the stage's rows, append-only (a rerun resumes from what is there)
  <stage>.rejects.jsonl  rows the stage dropped, with reasons

A stage is *skipped* when its fingerprint — its own config, the teacher config, and the content hashes
of its inputs — equals the one recorded for a finished run of it and its outputs still exist.  A stage
that was interrupted (status "running") with the same fingerprint is *resumed*: its output is kept, the
stage skips ids already written and gets every answer it already paid for from the request cache.  A
stage whose fingerprint changed starts over (its old output is moved to ``<stage>.jsonl.prev``,
never silently mixed with the new one).  So does an unfinished stage whose class says
``resumable = False`` (the train stages: a killed or disk-full attempt leaves a torn model directory,
which is moved to ``<stage>.prev``; training restarts from scratch and gives the uninterrupted result).

Safety of the run directory (it is the only place the runner writes, moves or deletes):
* every such path is checked by :func:`inside_run_dir` first;
* a directory synthkd did not make is refused unless it is empty (ours holds a manifest with
  ``"synthkd_run": 1``, or the keys an older synthkd wrote), and a foreign ``manifest.json`` is never
  rewritten;
* a ``.prev`` is replaced or deleted only when this run dir's manifest records that synthkd made it;
* one ``synthkd run`` at a time holds ``.synthkd.lock`` (flock); a second one is refused at once.

The teacher ledger (``<stage>.ledger.jsonl``) is the teacher's journal: each HTTP attempt appends
``sent`` (its cache key) before the POST, then ``failed`` (not billed: 5xx, 429, timeout, 4xx...) or
``answer`` (billed: its tokens and cost, appended *before* the answer is cached); an attempt that ends
normally (even by an error or Ctrl-C) adds one ``end`` line with the teacher's exact counters.  The
manifest's ``teacher`` totals are summed over every attempt in it:
* an attempt with an ``end`` line counts its exact counters (which must agree with its lines;
  ``journal_mismatch`` counts those that do not); a SIGKILLed attempt counts requests = its ``sent``
  lines, tokens and cost = its ``answer`` lines;
* and, in either case, each send with neither answer nor failure (in flight when the attempt died or
  was cancelled: a provider bills it if it answers it) adds the tokens and cost of the same request's
  answer in another attempt.  That part is also reported as ``estimated_unreceived`` (exact when the
  provider answered it, an upper bound when it would have failed it); an in-flight send that no
  attempt ever got an answer for is counted in ``unknown_unreceived`` (its tokens are unknown).
A kill between a ``sent`` line and the request reaching the wire over-counts that request; nothing is
ever under-counted.  (A kill between an answer line and the cache write makes the rerun pay again:
both are billed, both are counted.)  A model with no known price writes ``"cost_usd": null``: the
totals then say ``"cost_usd": null, "price_known": false`` (the report: "unknown"), never ``0``.
Rows are counted in the output file, never "rows written this time".
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pydantic import ValidationError

import synthkd
from synthkd.config import ConfigError, PipelineConfig, StageConfig, stage_line
from synthkd.errors import BatchSubmitted, BudgetExceeded, RunDirError, StageFailed  # noqa: F401 (re-exported: their home was here)
from synthkd.jsonl_io import InputError, count_rows  # noqa: F401  (count_rows: stage modules import it from here)
from synthkd.row_source import bind, is_source_spec, source_fingerprint, source_kind, source_problem
from synthkd.teachers.base import Teacher
from synthkd.templates import TemplateError

if TYPE_CHECKING:
    from synthkd.stages.base import Estimate, Stage, StageContext

logger = logging.getLogger(__name__)


def counts_line(counts: dict[str, Any], limit: int = 400) -> str:
    """A stage's counts for the log: whole when short; else nested parts shortened (the manifest has all)."""
    full = json.dumps(counts, default=str)
    if len(full) <= limit:
        return full
    short: dict[str, Any] = {}
    for k, v in counts.items():
        if isinstance(v, list):
            short[k] = f"[{len(v)} items]"
        elif isinstance(v, dict) and len(json.dumps(v, default=str)) > 120:
            short[k] = "{...}"
        else:
            short[k] = v
    return json.dumps(short, default=str) + " (all counts in manifest.json)"


# ----------------------------------------------------------------------------- stage kinds
# The stage vocabulary lives in synthkd.stages.base; the runner imports the stage package only when it
# plans a run (never at module level), so stages and runner do not import each other on import.
#: names the stage modules used to import from here; served lazily from synthkd.stages.base
_STAGE_NAMES = frozenset({"Estimate", "StageContext", "Stage", "STAGES", "register_stage", "teacher_spec_from",
                          "check_budget", "funnel_counts"})


def __getattr__(name: str) -> Any:
    if name in _STAGE_NAMES:
        from synthkd.stages import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_builtin_stages() -> dict[str, Stage]:
    """Register every built-in stage kind (importing the stage package does it) and return the registry."""
    import synthkd.stages  # noqa: F401  (registers every stage kind)
    from synthkd.stages.base import STAGES

    return STAGES


# ----------------------------------------------------------------------------- helpers
def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    fingerprint = source_fingerprint(path, file_sha)  # an hf: data set's own fingerprint; DIR:SPLIT
    if fingerprint is not None:
        return hashlib.sha256(f"{path}\0{fingerprint}".encode()).hexdigest()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(path)).encode())
                h.update(file_sha(p).encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _versions() -> dict[str, str]:
    out = {"synthkd": synthkd.__version__, "python": platform.python_version()}
    for mod in ("torch", "transformers", "trl", "datasets", "openai", "aiohttp"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "__version__"):
            out[mod] = m.__version__
    return out


def inside_run_dir(run_dir: Path, path: Path) -> Path:
    """``path`` if it lies strictly inside the (resolved) run directory; refuse anything else.

    Every path the runner writes, moves or deletes goes through here, so no name, symlink or ``..``
    can make it touch a file outside the run directory (or the run directory itself)."""
    root = Path(run_dir).resolve()
    p = Path(path)
    if p.name in ("", ".", ".."):
        raise RunDirError(f"refusing to touch {p}: not a file or directory name inside {root}")
    real = p.parent.resolve() / p.name  # the entry itself may be a symlink: checked below
    if root not in real.parents or (real.is_symlink() and root not in real.resolve().parents):
        raise RunDirError(f"refusing to touch {p}: it is outside the run directory {root}")
    return real


#: what makes a manifest ours: the marker (current) or the keys every synthkd manifest has had
MANIFEST_MARKER = "synthkd_run"
_MANIFEST_KEYS = {"name", "config", "config_hash", "stages"}
LOCK_NAME = ".synthkd.lock"


def os_error_at(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` (a failed ``write`` names no file): the CLI's one line then says where the
    disk was full or read-only."""
    return exc if exc.filename else OSError(exc.errno, exc.strerror, str(path))


class Manifest:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = read_manifest(path) if path.exists() else {MANIFEST_MARKER: 1, "stages": {}}

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].setdefault(name, {})

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(self.data, indent=2, sort_keys=False, default=str) + "\n")
            os.replace(tmp, self.path)  # atomic: a crash never leaves a half-written manifest
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # disk full: the old manifest is intact, drop the torn copy
            raise os_error_at(exc, self.path) from None

    # ---- what synthkd itself made (the only things it may replace or delete later)
    def made(self, path: Path) -> bool:
        return path.name in self.data.get("made_by_synthkd", [])

    def record_made(self, path: Path) -> None:
        made = self.data.setdefault("made_by_synthkd", [])
        if path.name not in made:
            made.append(path.name)


def read_manifest(path: Path) -> dict[str, Any]:
    """A synthkd manifest, or RunDirError: a manifest.json we did not write is never used or rewritten."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: not a synthkd manifest (not valid JSON: {exc}); "
                          "point run_dir at a new or empty directory") from None
    if not isinstance(data, dict) or not (data.get(MANIFEST_MARKER) == 1 or _MANIFEST_KEYS <= data.keys()) \
            or not isinstance(data.get("stages"), dict):
        raise RunDirError(f"{path}: not a synthkd manifest (it was not written by synthkd); "
                          "point run_dir at a new or empty directory")
    data[MANIFEST_MARKER] = 1
    return data


def open_run_dir(run_dir: Path, name: str) -> Path:
    """Create or check the run directory: ours (a synthkd manifest for this pipeline) or empty."""
    run_dir = run_dir.resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a directory")
    if run_dir.is_dir():
        entries = {p.name for p in run_dir.iterdir()} - {LOCK_NAME}
        manifest = run_dir / "manifest.json"
        if manifest.exists() or manifest.is_symlink():
            if manifest.is_symlink() or not manifest.is_file():
                raise RunDirError(f"{manifest}: not a synthkd manifest (not a plain file)")
            data = read_manifest(manifest)
            if data.get("name") not in (None, name):
                raise RunDirError(f"{run_dir}: holds the run of pipeline {data.get('name')!r}, not {name!r}")
        elif entries:
            raise RunDirError(f"{run_dir}: exists, is not empty and is not a synthkd run directory (no manifest.json); "
                              "synthkd will not move or overwrite files it did not make: choose a new run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def claim_run_dir(run_dir: Path, name: str) -> Path:
    """Make (or check) a run directory and mark it as synthkd's before anything is written into it,
    for callers that put their own inputs there before running a pipeline (the demos)."""
    run_dir = open_run_dir(run_dir, name)
    if not (run_dir / "manifest.json").exists():
        manifest = Manifest(run_dir / "manifest.json")
        manifest.data["name"] = name
        manifest.save()
    return run_dir


class RunLock:
    """One ``synthkd run`` per run directory: an flock on ``.synthkd.lock`` that holds the owner's pid.

    Why not unlink on release: a third process could open the old file after the unlink and lock a
    different inode than a fourth; the file stays, the lock (kernel-held) goes with the process."""

    def __init__(self, run_dir: Path) -> None:
        self.path = inside_run_dir(run_dir, run_dir / LOCK_NAME)
        self._fd = -1

    def __enter__(self) -> "RunLock":
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise RunDirError(f"{self.path.parent}: another synthkd run (pid {holder}) is using this run "
                              "directory; wait for it to finish") from None
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # disk full: one line naming the lock file, the lock released
            self.__exit__()
            raise os_error_at(exc, self.path) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


# ----------------------------------------------------------------------------- the teacher ledger
def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def ledger_path(output: Path) -> Path:
    return output.with_name(output.name.removesuffix(".jsonl") + ".ledger.jsonl")


def _open_ledger(run_dir: Path, output: Path) -> "Ledger":
    """The ledger of the stage writing ``output`` (a :class:`StageContext`'s ``open_ledger``)."""
    return Ledger(inside_run_dir(run_dir, ledger_path(output)))


class Ledger:
    """Append-only per-stage record of teacher usage (the rule is in the module docstring).

    It is the teacher's journal (:class:`synthkd.teachers.openai_compat.Journal`): one line per HTTP
    attempt event, each a single ``os.write`` to an O_APPEND descriptor (no fsync: a SIGKILL loses
    nothing the kernel was given; lines are short enough to be written whole), formatted by hand
    because it is on the teacher's hot path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.attempt = f"{os.getpid()}-{time.time_ns()}"
        self._head = '{"attempt": "%s", ' % self.attempt
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # A full disk can leave an earlier attempt's last line torn (no newline): start on a new line,
            # else this attempt's first line would be glued to it and both read as one bad line.
            if path.stat().st_size and not _ends_with_newline(path):
                self._write_all(b"\n")
        except BaseException:
            os.close(self._fd)
            raise

    def _write_all(self, data: bytes) -> None:
        """One ``os.write``; a short write (the disk filled up mid-line) is ENOSPC, not success: the
        caller must not send a request whose ``sent`` line is torn (a torn line counts nothing)."""
        try:
            if os.write(self._fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:  # name the file (the teacher's stop message and the CLI's line show it)
            raise os_error_at(exc, self.path) from None

    def _write(self, line: str) -> None:
        self._write_all((self._head + line).encode())

    def sent(self, key: str) -> None:
        self._write(f'"sent": "{key}"}}\n')

    def failed(self, key: str) -> None:
        self._write(f'"failed": "{key}"}}\n')

    def answered(self, key: str, usage: Any, cost_usd: float | None) -> None:
        # null: no price is known for the model (the answer was billed, at a cost nobody can tell)
        cost = "null" if cost_usd is None else repr(float(cost_usd))
        self._write(f'"answer": "{key}", "prompt_tokens": {int(usage.prompt_tokens)}, '
                    f'"completion_tokens": {int(usage.completion_tokens)}, "cost_usd": {cost}}}\n')

    def end(self, teacher: Teacher) -> None:
        st = teacher.stats
        self._write(json.dumps({"end": {"requests": st.attempts, "cached_answers": st.cached,
                                        "prompt_tokens": st.prompt_tokens, "completion_tokens": st.completion_tokens,
                                        "cost_usd": st.cost_usd if st.price_known else None,
                                        "price_known": st.price_known, **st.structured_dict()}})[1:] + "\n")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


_SUMS = ("requests", "cached_answers", "prompt_tokens", "completion_tokens", "cost_usd")
#: the structured-output counters of an attempt's end (re-asks are in the sums above too)
_STRUCTURED_SUMS = ("structured_answers", "reasks", "reask_cost_usd", "structured_invalid")


def ledger_totals(path: Path) -> dict[str, Any] | None:
    """Teacher totals over every attempt in a ledger; None when there is none (no teacher used).

    See the module docstring for the rule.  ``estimated_unreceived`` holds the part of the totals
    that is estimated (requests in flight at a kill, priced like the same request's answer in another
    attempt); ``unknown_unreceived`` counts in-flight requests whose answer no attempt received (their
    tokens are not known, so not counted); ``journal_mismatch`` counts finished attempts whose exact
    counters disagree with their journal lines (0 unless something is wrong)."""
    if not path.exists():
        return None
    attempts: dict[str, dict[str, Any]] = {}
    usage_of: dict[str, tuple[int, int, float]] = {}  # key -> (prompt, completion, cost) of an answer
    unpriced = False  # some attempt's model had no known price: the cost is unknown, never $0
    with open(path, "rb") as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue  # a line torn by a kill mid-write
            a = attempts.get(e.get("attempt", "?"))
            if a is None:
                a = attempts[e.get("attempt", "?")] = {"sent": {}, "resolved": {}, "answers": [0, 0, 0.0], "end": None}
            if "sent" in e:
                a["sent"][e["sent"]] = a["sent"].get(e["sent"], 0) + 1
            elif "failed" in e:
                a["resolved"][e["failed"]] = a["resolved"].get(e["failed"], 0) + 1
            elif "end" in e:
                a["end"] = e["end"]
            else:  # an answer (billed)
                if "cost_usd" in e and e["cost_usd"] is None:
                    unpriced = True  # billed at a price nobody knows
                key, u = e.get("answer"), (e.get("prompt_tokens", 0), e.get("completion_tokens", 0), e.get("cost_usd") or 0.0)
                if key is not None:
                    a["resolved"][key] = a["resolved"].get(key, 0) + 1
                    usage_of.setdefault(key, u)
                ans = a["answers"]
                ans[0] += u[0]
                ans[1] += u[1]
                ans[2] += u[2]
    if not attempts:
        return None
    tot: dict[str, Any] = {"attempts": len(attempts), "interrupted_attempts": 0, **dict.fromkeys(_SUMS, 0),
                           "estimated_unreceived": dict.fromkeys(("requests", "prompt_tokens", "completion_tokens", "cost_usd"), 0),
                           "unknown_unreceived": 0, "journal_mismatch": 0}
    tot["cost_usd"] = 0.0
    est = tot["estimated_unreceived"]
    for a in attempts.values():
        pt, ct, usd = a["answers"]
        sent = sum(a["sent"].values())
        end = a["end"]
        if end is not None:  # ended normally: the teacher's exact counters (the journal must agree)
            if end.get("price_known") is False:
                unpriced = True
            if a["sent"] and (end.get("requests") != sent or end.get("prompt_tokens") != pt
                              or end.get("completion_tokens") != ct):
                tot["journal_mismatch"] += 1
            end = dict(end)
        else:  # killed: every request sent and every answer received
            tot["interrupted_attempts"] += 1
            end = {"requests": sent, "prompt_tokens": pt, "completion_tokens": ct, "cost_usd": usd}
        for key, n in a["sent"].items():  # and the requests in flight when it died or was cancelled
            unresolved = n - a["resolved"].get(key, 0)
            if unresolved <= 0:
                continue
            if key not in usage_of:
                tot["unknown_unreceived"] += unresolved
                continue
            upt, uct, uusd = usage_of[key]
            est["requests"] += unresolved
            for k, v in (("prompt_tokens", upt), ("completion_tokens", uct), ("cost_usd", uusd)):
                est[k] += unresolved * v
                end[k] = (end.get(k) or 0) + unresolved * v
        for k in _SUMS:
            tot[k] += end.get(k) or 0
        for k in _STRUCTURED_SUMS:  # only where answers were asked as JSON (structured outputs)
            if k in end:
                tot[k] = tot.get(k, 0) + end[k]
    if "reask_cost_usd" in tot:
        tot["reask_cost_usd"] = round(tot["reask_cost_usd"], 8) if not unpriced else None
    tot["cost_usd"] = round(tot["cost_usd"], 8)
    est["cost_usd"] = round(est["cost_usd"], 8)
    if unpriced:  # as the CLI says "cost unknown": a number here would read as "free"
        tot["cost_usd"] = est["cost_usd"] = None
        tot["price_known"] = False
    return tot


# ----------------------------------------------------------------------------- the runner
@dataclass
class PlannedStage:
    index: int
    cfg: StageConfig
    impl: Stage
    options: Any
    ctx: StageContext
    estimate: Estimate | None = None


@dataclass
class RunResult:
    run_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


def plan(cfg: PipelineConfig, base_dir: Path | None = None) -> list[PlannedStage]:
    """Validate every stage (kind, options, inputs) before anything runs or is paid for.

    Relative paths are taken against ``base_dir``, by default the pipeline file's directory
    (:attr:`PipelineConfig.base_dir`).  Each problem is reported once: a stage whose kind or options
    are wrong still names its output, so a later stage reading it gets no second, misleading error."""
    from synthkd.config import validation_problems
    from synthkd.stages.base import StageContext

    STAGES = load_builtin_stages()
    base_dir = Path(base_dir) if base_dir is not None else cfg.base_dir
    run_dir = (base_dir / cfg.run_dir / cfg.name).resolve()  # the name is a plain identifier (config.check_name)
    outputs: dict[str, Path] = {}
    planned: list[PlannedStage] = []
    problems: list[str] = []
    for i, st in enumerate(cfg.stages):
        output = inside_run_dir(run_dir, run_dir / f"{st.name}.jsonl")
        # named before the stage is checked: a later stage that reads it is fine even if this one is not
        outputs[st.name] = output
        impl = STAGES.get(st.kind)
        if impl is None:
            problems.append(f"{stage_line(cfg, i, 'kind')}: stages[{i}] ({st.name}).kind: unknown stage kind {st.kind!r}"
                            + _did_you_mean(st.kind, list(STAGES)) + f" (known: {', '.join(sorted(STAGES))})")
            continue
        try:
            options = impl.options_model.model_validate(st.options)
        except ValidationError as exc:
            problems += validation_problems(exc, impl.options_model, functools.partial(_line_of, cfg, i),
                                            ("options",), f"stages[{i}] ({st.name}).options")
            continue
        inputs: dict[str, Path] = {}
        bad_input = False
        named = dict(st.inputs)
        if st.input is not None:
            named["input"] = st.input
        for key, ref in named.items():
            if ref in outputs and ref != st.name:
                inputs[key] = outputs[ref]
            else:
                p = Path(ref) if Path(ref).is_absolute() or is_source_spec(ref) else base_dir / ref
                if not (p.exists() or source_kind(p) in ("hf", "dir")):
                    where = stage_line(cfg, i, *(("input",) if key == "input" else ("inputs", key)))
                    later = [s.name for s in cfg.stages[i + 1:] if s.name == ref]
                    why = ("a stage cannot read its own output" if ref == st.name else
                           f"{ref!r} is a later stage (a stage reads only earlier ones)" if later else
                           f"{ref!r} is neither an earlier stage nor an existing file ({p})"
                           + _did_you_mean(ref, [n for n in outputs if n != st.name], "stage"))
                    problems.append(f"{where}: stages[{i}] ({st.name}).{'input' if key == 'input' else 'inputs.' + key}: "
                                    + why)
                    bad_input = True
                    continue
                unreadable = source_problem(p)  # an hf: spec, a dataset directory
                if unreadable:
                    where = stage_line(cfg, i, *(("input",) if key == "input" else ("inputs", key)))
                    problems.append(f"{where}: stages[{i}] ({st.name}).{'input' if key == 'input' else 'inputs.' + key}: "
                                    + unreadable)
                    bad_input = True
                    continue
                inputs[key] = p
        if bad_input:
            continue  # its checks would only repeat the problem ("needs an input")
        if st.columns and "input" in inputs:  # the stage reads its input's columns under these names
            inputs["input"] = bind(inputs["input"], st.columns)
        ctx = StageContext(pipeline=cfg, stage=st, index=i, run_dir=run_dir, inputs=inputs, output=output,
                           base_dir=base_dir, teacher_config=st.teacher or cfg.teacher,
                           open_ledger=functools.partial(_open_ledger, run_dir, output))
        check = getattr(impl, "check", None)
        if check is not None:  # stage-specific checks that need no input rows (files, templates, operators)
            try:
                check(ctx, options)
            except (ConfigError, InputError, TemplateError, ValueError) as exc:
                problems.append(f"{stage_line(cfg, i, 'options')}: stages[{i}] ({st.name}): {exc}")
                continue
        planned.append(PlannedStage(i, st, impl, options, ctx))
    if problems:
        raise ConfigError("invalid pipeline:\n  " + "\n  ".join(problems))
    return planned


def _line_of(cfg: PipelineConfig, index: int, loc: tuple[Any, ...]) -> str:
    return stage_line(cfg, index, *loc)


def _did_you_mean(word: str, known: list[str], what: str = "") -> str:
    """`` (did you mean 'x'?)`` for the closest known word, or nothing."""
    import difflib

    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f" (did you mean {what + ' ' if what else ''}{close[0]!r}?)" if close else ""


def estimate_all(planned: list[PlannedStage]) -> Estimate:
    from synthkd.stages.base import Estimate

    total = Estimate()
    expected: dict[Path, int] = {}  # rows an earlier stage is expected to write, by its output path
    for p in planned:
        p.ctx.expected_rows = {name: expected[path] for name, path in p.ctx.inputs.items()
                               if path in expected and not path.exists()}
        try:
            p.estimate = p.impl.estimate(p.ctx, p.options)
        except FileNotFoundError:
            p.estimate = None  # input made by an earlier stage that gives no row count: known after it runs
        if p.estimate:
            total = total + p.estimate
            if p.estimate.rows_out is not None:
                expected[p.ctx.output] = p.estimate.rows_out
    return total


def referenced_stages(value: Any, names: set[str]) -> set[str]:
    """Earlier stages an option names (e.g. ``student: sft``): their results are inputs too."""
    if isinstance(value, str):
        return {value} & names
    if isinstance(value, dict):
        return set().union(*(referenced_stages(v, names) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(referenced_stages(v, names) for v in value)) if value else set()
    return set()


def _fingerprint(p: PlannedStage, input_hashes: dict[str, str], upstream: dict[str, str] | None = None) -> str:
    tc = p.ctx.teacher_config
    return _json_hash({
        "upstream": upstream or {},
        # (an empty column map is left out: fingerprints of runs made before it existed stay the same)
        "stage": p.cfg.model_dump(exclude={"teacher"} | (set() if p.cfg.columns else {"columns"})),
        "options": p.options.model_dump(mode="json"),
        # how the teacher is reached changes no answer: not part of the fingerprint (a rerun with more
        # concurrency or a larger budget resumes instead of starting over)
        "teacher": tc.model_dump(exclude={"concurrency", "rpm", "tpm", "timeout", "max_retries", "max_cost",
                                          "adaptive_timeout", "batch", "wait", "batch_retries", "batch_poll",
                                          "batch_max_requests"}) if tc else None,
        "inputs": input_hashes,
        "seed": p.ctx.pipeline.seed,
    })


async def run_pipeline(
    cfg: PipelineConfig, *, base_dir: Path | None = None, from_stage: str | None = None,
    log: Callable[[str], None] | None = None, limit: int | None = None,
    on_plan: Callable[[list[PlannedStage]], None] | None = None,
) -> RunResult:
    """Carry out a pipeline (see the module docstring).  ``limit``: a dry run, the first ``limit`` rows of
    each input the pipeline reads from outside its run directory, into its own run directory
    ``<name>-limit<N>`` (so a later full run never takes its stages for finished ones; the request cache,
    shared by the pipeline's runs, answers the same prompts again for free).  ``on_plan`` sees the planned
    stages before they run (the dry run attaches its recorders there)."""
    if limit is not None:
        cfg = cfg.model_copy(update={"name": f"{cfg.name}-limit{limit}"})
    planned = plan(cfg, base_dir)
    if limit is not None:
        for p in planned:
            root = p.ctx.run_dir
            for key, path in list(p.ctx.inputs.items()):
                if root not in Path(os.path.abspath(path)).parents:  # the pipeline's own data, not a stage's output
                    p.ctx.inputs[key] = bind(path, getattr(path, "columns", None), limit)
    if on_plan is not None:
        on_plan(planned)
    if from_stage is not None and from_stage not in {p.cfg.name for p in planned}:
        raise ConfigError(f"--from {from_stage!r}: no such stage (stages: {', '.join(p.cfg.name for p in planned)})")
    run_dir = open_run_dir(planned[0].ctx.run_dir, cfg.name)
    with RunLock(run_dir):
        return await _run_locked(cfg, planned, run_dir, from_stage, log)


async def _run_locked(cfg: PipelineConfig, planned: list[PlannedStage], run_dir: Path, from_stage: str | None,
                      log: Callable[[str], None] | None) -> RunResult:
    manifest = Manifest(inside_run_dir(run_dir, run_dir / "manifest.json"))  # re-read under the lock
    recorded = cfg.recorded()
    manifest.data.update(
        name=cfg.name, config=recorded, config_hash=_json_hash(cfg.model_dump(mode="json")),
        versions=_versions(), updated=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    manifest.save()
    say = log or logger.info
    result = RunResult(run_dir=run_dir)
    forcing = False
    for p in planned:
        name = p.cfg.name
        p.ctx.log = say
        forcing = forcing or (from_stage == name)
        input_hashes = {k: file_sha(v) for k, v in p.ctx.inputs.items()}
        earlier = {q.cfg.name for q in planned[: planned.index(p)]}
        upstream = {n: manifest.stage(n).get("fingerprint", "") for n in
                    sorted(referenced_stages(p.options.model_dump(mode="json"), earlier))}
        fp = _fingerprint(p, input_hashes, upstream)
        known = name in manifest.data["stages"]
        rec = manifest.stage(name)
        outputs_exist = all(Path(o).exists() for o in rec.get("outputs", [str(p.ctx.output)]))
        if not forcing and rec.get("status") == "done" and rec.get("fingerprint") == fp and outputs_exist:
            say(f"[{name}] unchanged since its last run: skipped")
            result.skipped.append(name)
            continue
        if not known:
            _refuse_unknown_outputs(run_dir, p.ctx.output, name)
        elif rec.get("fingerprint") != fp or forcing or not getattr(p.impl, "resumable", True):
            _move_aside(run_dir, p.ctx.output, manifest)
        say(f"[{name}] running ({p.cfg.kind})")
        rec.update(status="running", kind=p.cfg.kind, fingerprint=fp, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
        manifest.save()
        t0 = time.monotonic()
        try:
            counts = await _run_stage(p)
        except BaseException as exc:
            rec["status"] = ("interrupted" if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError))
                             else "batch submitted" if isinstance(exc, BatchSubmitted) else "failed")
            raise
        finally:
            teacher = p.ctx._teacher
            if p.ctx._progress is not None:
                await p.ctx._progress.stop()
                p.ctx._progress = None
            if teacher is not None:
                try:
                    if p.ctx._ledger is not None:
                        p.ctx._ledger.end(teacher)  # (disk full: an OSError naming the ledger, still closed)
                finally:
                    if p.ctx._ledger is not None:
                        p.ctx._ledger.close()
                        p.ctx._ledger = None
                    await teacher.aclose()
                    p.ctx._teacher = None
            _record_teacher(rec, p.ctx.output, teacher)
            rec["seconds"] = round(time.monotonic() - t0, 3)
            manifest.save()
        counts = counts or {}
        outputs = counts.pop("_outputs", [p.ctx.output])
        if "rows_out" in counts and p.ctx.output.is_file():
            counts["rows_out"] = count_rows(p.ctx.output)  # the file's rows, whichever attempt wrote them
        rec.update(status="done", counts=counts, finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                   outputs=[str(o) for o in outputs])
        manifest.save()
        result.ran.append(name)
        say(f"[{name}] done in {rec['seconds']:.1f}s: {counts_line(rec['counts'])}")
        if rec.get("teacher"):
            from synthkd.report import teacher_line

            say(f"[{name}] teacher: {teacher_line(rec['teacher'])}")  # the report's figures, from the manifest
    manifest.data["versions"] = _versions()  # now including what the stages imported (torch, trl...)
    manifest.save()
    result.manifest = manifest.data
    from synthkd.report import write_report

    write_report(run_dir, manifest.data)
    return result


async def _run_stage(p: PlannedStage) -> dict[str, Any]:
    """Run a stage; in batch mode, pass after pass (:mod:`synthkd.teachers.batch.passes`): after a
    pass that deferred requests to batches, wait for them (or stop with exit 5, ``--no-wait``: the
    stage stays resumable) and run the stage again, its answers now in the cache."""
    from synthkd.teachers.batch.passes import batch_waiting, wait_or_stop

    while True:
        try:
            counts = await p.impl.run(p.ctx, p.options)
        except (StageFailed, BudgetExceeded):  # with rows still in batches: wait for them first
            if not batch_waiting([p.ctx.current_teacher]):
                raise
            counts = {}
        if not batch_waiting([p.ctx.current_teacher]):
            return counts
        await wait_or_stop([p.ctx.current_teacher], f"[{p.cfg.name}]")


def _record_teacher(rec: dict[str, Any], output: Path, teacher: Teacher | None) -> None:
    """The stage's teacher totals, summed over every attempt from its ledger (see module docstring)."""
    totals = ledger_totals(ledger_path(output))
    if totals is None:
        return
    model = teacher.model if teacher is not None else (rec.get("teacher") or {}).get("model")
    rec["teacher"] = {"model": model, **totals}


def _refuse_unknown_outputs(run_dir: Path, output: Path, stage: str) -> None:
    """A stage this manifest never ran must not find its outputs there already: they are not ours."""
    for p in _stage_paths(output):
        if p.exists() or p.is_symlink():
            raise RunDirError(f"{p}: exists, but the manifest records no run of stage {stage!r}; synthkd will not "
                              "append to, move or delete a file it did not make: move it away first")


def _stage_paths(output: Path) -> list[Path]:
    """A stage's output, its rejects file and its directory (a model, an eval, the tailored rounds)."""
    return [output, output.with_name(output.name.replace(".jsonl", ".rejects.jsonl")),
            output.with_name(output.name.removesuffix(".jsonl"))]


def _move_aside(run_dir: Path, output: Path, manifest: Manifest) -> None:
    """Move a stage's previous outputs to ``*.prev`` (kept once).  An existing ``.prev`` is replaced
    only if this manifest records that synthkd made it; the paths are checked to be in the run dir."""
    for i, p in enumerate(_stage_paths(output)):
        p = inside_run_dir(run_dir, p)
        if not (p.exists() or p.is_symlink()) or (i == 2 and (p.is_symlink() or not p.is_dir())):
            continue
        prev = inside_run_dir(run_dir, p.with_name(p.name + ".prev"))
        if prev.exists() or prev.is_symlink():
            if not manifest.made(prev):
                raise RunDirError(f"{prev}: exists and was not made by synthkd; move it away (synthkd will not "
                                  "replace or delete it)")
            if prev.is_dir() and not prev.is_symlink():
                shutil.rmtree(prev)
            else:
                prev.unlink()
        # record first: after a crash between the two steps the .prev is still known to be ours
        manifest.record_made(prev)
        manifest.save()
        os.replace(p, prev)
