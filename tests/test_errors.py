"""One error tree, one exit-code rule, one message rule, and messages through logging (issue 12, point 4).

The exit codes are README's ("exit codes"); the CLI tests elsewhere assert them per command, these
assert the rule itself and where the messages go: to stderr from the CLI, nowhere from the library."""

from __future__ import annotations

import asyncio
import errno
import importlib
import inspect
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

import synthkd.errors as E
import synthkd.teachers.errors as TE
from conftest import cli_env, synthkd_cmd
from synthkd.errors import ExitCode, exit_code_for, report_error


def _classes(module) -> list[type[BaseException]]:
    return [c for c in vars(module).values()
            if inspect.isclass(c) and issubclass(c, BaseException) and c.__module__ == module.__name__]


def test_every_error_class_is_a_synthkd_error():
    classes = _classes(E) + _classes(TE)
    assert len(classes) >= 20  # the tree is really enumerated
    for cls in classes:
        assert issubclass(cls, E.SynthkdError), cls


@pytest.mark.parametrize("module, names", [
    ("synthkd.jsonl_io", ["InputError", "PathError", "OutputWriteError", "MAX_REPORTED_ERRORS"]),
    ("synthkd.config", ["ConfigError"]),
    ("synthkd.filters.op_config", ["ConfigError"]),
    ("synthkd.pipeline", ["RunDirError", "StageFailed"]),
    ("synthkd.templates", ["TemplateError"]),
    ("synthkd.teachers.pricing", ["PriceTableError"]),
    ("synthkd.teachers.base", ["TeacherFatalError", "TeacherConfigError", "TeacherStorageError", "BudgetExceeded"]),
    ("synthkd.teachers", ["TeacherFatalError", "TeacherConfigError", "BudgetExceeded"]),
    ("synthkd.hub", ["HubError"]),
    ("synthkd.methods.task_kinds", ["GoldError"]),
])
def test_the_old_import_paths_give_the_same_classes(module, names):
    mod = importlib.import_module(module)
    for name in names:
        assert getattr(mod, name) is getattr(E, name), (module, name)


@pytest.mark.parametrize("cls, builtin", [
    (E.InputError, ValueError), (E.PathError, ValueError), (E.ConfigError, ValueError),
    (E.RunDirError, ValueError), (E.TemplateError, ValueError), (E.PriceTableError, ValueError),
    (E.GoldError, ValueError), (E.UnknownStageError, KeyError), (E.OutputWriteError, OSError),
    (E.TeacherFatalError, RuntimeError), (E.BudgetExceeded, RuntimeError), (E.StageFailed, RuntimeError),
    (E.HubError, RuntimeError),
])
def test_each_class_keeps_the_builtin_base_it_is_caught_as(cls, builtin):
    assert issubclass(cls, builtin)


def test_the_exit_codes_are_readmes():
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0, "REJECTED": 1, "BAD_INPUT": 2, "BUDGET": 3, "TEACHER": 4, "SUBMITTED": 5, "INTERRUPTED": 130}


_DISK_FULL = OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("exc, code", [
    (E.InputError(["in.jsonl:1: no id"]), 2),
    (E.PathError(["--input x: file not found"]), 2),
    (E.ConfigError("p.yaml:3: bad"), 2),
    (E.RunDirError("not ours"), 2),
    (E.TemplateError("no such template"), 2),
    (E.PriceTableError("not UTF-8"), 2),
    (E.GoldError("gold: not a number"), 2),
    (E.UnknownStageError("no stage 'x'"), 2),
    (E.OutputWriteError(Path("out.jsonl"), _DISK_FULL), 2),
    (E.TeacherConfigError("credentials in base_url"), 2),
    (E.TeacherStorageError("cannot write the request cache"), 2),
    (E.TeacherFatalError("401 bad key"), 4),
    (E.HubError("offline"), 4),
    (E.BudgetExceeded("budget reached"), 3),
    (E.BatchSubmitted("submitted; rerun the same command to collect"), 5),
    (E.StageFailed("[s] some rows failed for good"), 1),
    (KeyboardInterrupt(), 130),
    (asyncio.CancelledError(), 130),
    (ValueError("x"), 2),
    (OSError(errno.EROFS, "Read-only file system", "runs"), 2),
    (ImportError("No module named 'trl'"), 2),
    # not ours to report: a bug keeps its traceback; transport errors never leave the teacher
    (RuntimeError("bug"), None),
    (KeyError("bug"), None),
    (TypeError("bug"), None),
    (TE.ServerError("503"), None),
    (TE.RequestRejected("400"), None),
])
def test_exit_code_for_maps_each_error_to_its_code(exc, code):
    got = exit_code_for(exc)
    assert got == code
    assert got is None or isinstance(got, ExitCode)


class _Lines(logging.Handler):
    """The messages the synthkd loggers emit, whatever handlers the CLI installed meanwhile."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


@pytest.fixture
def said():
    logger = logging.getLogger("synthkd")
    h, level = _Lines(), logger.level
    logger.addHandler(h)
    logger.setLevel(logging.INFO)
    yield h.lines
    logger.removeHandler(h)
    logger.setLevel(level)


@pytest.mark.parametrize("exc, kw, lines", [
    (E.TeacherConfigError("key has a control character"), {},  # nothing was sent: nothing to resume
     ["error: key has a control character"]),
    (E.TeacherFatalError("401 bad key"), {}, ["error: 401 bad key", E.RESUME_HINT]),
    (E.TeacherStorageError("cannot write the cache"), {"hints": {E.TeacherFatalError: "kept: all"}},
     ["error: cannot write the cache", "kept: all"]),
    (E.TeacherConfigError("bad spec"), {"hints": {E.TeacherFatalError: "kept: all"}}, ["error: bad spec"]),
    (E.BudgetExceeded("[s] budget reached"), {}, ["stopped: [s] budget reached"]),
    (OSError(errno.EROFS, "Read-only file system", "runs/p"), {"hints": {OSError: "fix it, rerun"}},
     ["error: Read-only file system: runs/p", "fix it, rerun"]),
    (E.OutputWriteError(Path("o.jsonl"), _DISK_FULL),
     {"hints": {E.OutputWriteError: lambda e: f"full={e.disk_full}"}},
     ["error: o.jsonl: cannot write: disk full (No space left on device)", "full=True"]),
    (ImportError("No module named 'trl'"), {"hints": {ImportError: "pip install it"}},
     ["error: No module named 'trl'", "pip install it"]),
    (KeyboardInterrupt(), {"interrupted": "interrupted: kept; rerun"}, ["interrupted: kept; rerun"]),
    (E.UnknownStageError("no stage 'x'"), {}, ["error: \"no stage 'x'\""]),  # KeyError's quoting, as before
])
def test_report_error_says_the_error_then_what_is_kept(said, exc, kw, lines):
    assert report_error(exc, **kw) == exit_code_for(exc)
    assert [m for lvl, m in said if lvl >= logging.INFO] == lines


def test_report_error_refuses_an_error_that_is_not_ours(said):
    with pytest.raises(ValueError, match="not an error a command reports"):
        report_error(RuntimeError("bug"))
    assert said == []


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env=cli_env(), capture_output=True, text=True,
                          timeout=60)


_LIBRARY = """
import logging, sys
import synthkd.pipeline  # a module that logs, with its loggers created
from synthkd.errors import TeacherFatalError, report_error
if sys.argv[1:] == ["configured"]:
    logging.basicConfig(level=logging.INFO, format="LOG %(name)s %(message)s")
logging.getLogger("synthkd.pipeline").info("[s] running (merge)")
code = report_error(TeacherFatalError("401 bad key"))
print(int(code))
"""


def test_the_library_prints_nothing_unless_the_application_configures_logging():
    quiet = _python(_LIBRARY)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "4\n" and quiet.stderr == ""  # not even the error (no logging "last resort")
    shown = _python(_LIBRARY, "configured")  # the same calls log for an application that wants them
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.splitlines() == ["LOG synthkd.pipeline [s] running (merge)",
                                         "LOG synthkd.errors error: 401 bad key", f"LOG synthkd.errors {E.RESUME_HINT}"]


def _merge_pipeline(tmp: Path) -> None:
    (tmp / "in.jsonl").write_text("".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(3)))
    (tmp / "p.yaml").write_text("name: p\nstages:\n  - {name: m, kind: merge, inputs: {t: in.jsonl}}\n")


def _cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(synthkd_cmd(*args), cwd=tmp, env=cli_env(), capture_output=True, text=True, timeout=120)


def test_the_cli_prints_its_messages_as_they_are_and_quiet_keeps_the_errors(tmp_path):
    _merge_pipeline(tmp_path)
    res = _cli(tmp_path, "run", "p.yaml")
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()  # the messages alone: no level, logger name or time added
    assert len(lines) == 3 and lines[0] == "[m] running (merge)" and re.fullmatch(r"\[m\] done in [\d.]+s: .*", lines[1])
    assert lines[2] == f"run directory: {tmp_path / 'runs/p'} (ran: m; skipped: nothing)"
    assert _cli(tmp_path, "-q", "run", "p.yaml", "--from", "m").stderr == ""  # info lines hidden
    bad = _cli(tmp_path, "-q", "complete", "-i", "missing.jsonl", "-o", "out.jsonl", "-m", "x")
    assert (bad.returncode, bad.stderr) == (2, "error: --input missing.jsonl: file not found\n")
    verbose = _cli(tmp_path, "-v", "complete", "-i", "missing.jsonl", "-o", "out.jsonl", "-m", "x")
    assert verbose.returncode == 2
    assert verbose.stderr.startswith("error: --input missing.jsonl: file not found\n")
    assert "Traceback" in verbose.stderr and "PathError" in verbose.stderr  # -v: where it was raised


def test_in_process_runs_write_to_the_stderr_of_the_moment(tmp_path, monkeypatch):
    # the handler is installed once, by the first run: a handler bound to the stderr of that moment
    # would write the second run's messages into the first run's (closed) capture
    from typer.testing import CliRunner

    from synthkd.cli import app

    monkeypatch.chdir(tmp_path)
    for name in ("a.jsonl", "b.jsonl"):
        res = CliRunner().invoke(app, ["complete", "-i", name, "-o", "out.jsonl", "-m", "x"])
        assert res.exit_code == 2
        assert res.stderr == f"error: --input {name}: file not found\n"
