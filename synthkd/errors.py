"""Every error synthkd raises on purpose, the exit codes, and the one rule from one to the other.

The tree (each class also keeps the builtin base that callers catch it as)::

    SynthkdError
    ├── InputError (ValueError) ............ bad rows or fields: file, line, field each ......... exit 2
    │   └── PathError ...................... an unusable path or a busy output ................... exit 2
    ├── ConfigError (ValueError) ........... a pipeline YAML, a --set, a clean operator list .... exit 2
    │   └── RunDirError .................... a run directory that cannot be used safely ......... exit 2
    ├── TemplateError (ValueError) ......... a prompt template that cannot render ............... exit 2
    ├── PriceTableError (ValueError) ....... a price table that cannot be read .................. exit 2
    ├── GoldError (ValueError) ............. a gold label that cannot be read ................... exit 2
    ├── UnknownStageError (KeyError) ....... a run directory without that stage ................ exit 2
    ├── OutputWriteError (OSError) ......... a write failed mid-run (disk full, read-only) ...... exit 2
    ├── TeacherFatalError (RuntimeError) ... the teacher stopped the run (bad key, unreachable) . exit 4
    │   ├── TeacherConfigError ............. a teacher setting found wrong before any request .. exit 2
    │   └── TeacherStorageError ............ the cache or a ledger cannot be written ........... exit 2
    ├── BudgetExceeded (RuntimeError) ...... ``max_cost`` reached ................................ exit 3
    ├── BatchSubmitted (RuntimeError) ...... batch mode, --no-wait: submitted, rerun to collect .. exit 5
    ├── StageFailed (RuntimeError) ......... a pipeline stage rejected rows for good ............ exit 1
    ├── HubError (RuntimeError) ............ the Hugging Face Hub unreachable or refusing ....... exit 4
    └── (internal, never reach a command: :mod:`synthkd.teachers.errors`)
        ├── RetryableError ................. 429, 5xx, timeouts, dropped connections: retried
        └── RequestRejected ................ a request the server refuses for good: the row fails

Beyond the tree, :func:`exit_code_for` maps the builtins a command reports in one line rather than a
traceback: any other ``ValueError`` or ``OSError`` (exit 2), an ``ImportError`` (an extra not
installed, exit 2), and Ctrl-C / SIGTERM (``KeyboardInterrupt``, ``asyncio.CancelledError``: exit 130).
Anything else is a bug and keeps its traceback.

The classes are importable from here and, as before, from the module that raises them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from enum import IntEnum
from pathlib import Path
from typing import Callable, Mapping, Union

log = logging.getLogger("synthkd.errors")

#: How many problems an :class:`InputError` lists before it stops collecting.
MAX_REPORTED_ERRORS = 20


class ExitCode(IntEnum):
    """The process exit codes of every ``synthkd`` command (README "exit codes")."""

    OK = 0
    REJECTED = 1  # some rows were rejected (only that): the rest is done
    BAD_INPUT = 2  # bad input, a path or setting that cannot work, or an output that cannot be written
    BUDGET = 3  # max_cost reached: rerun with a larger one
    TEACHER = 4  # the teacher (or the hub) refused us or cannot be reached
    SUBMITTED = 5  # batch mode, --no-wait: requests submitted to the provider's Batch API; rerun to collect
    INTERRUPTED = 130  # Ctrl-C or SIGTERM


class SynthkdError(Exception):
    """The root of every error synthkd raises on purpose (see the module docstring for the tree)."""


class InputError(SynthkdError, ValueError):
    """Bad input, with every problem found (each naming file, line and field)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = "" if len(problems) < MAX_REPORTED_ERRORS else f"\n  (stopped after {MAX_REPORTED_ERRORS} problems)"
        super().__init__("invalid input:\n  " + "\n  ".join(problems) + more)


class PathError(InputError):
    """An unusable path or a busy output (exit 2 like bad input), worded without the "invalid input" heading:
    the rows are fine, the command line or the file system is not."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        ValueError.__init__(self, "\n       ".join(problems))


class OutputWriteError(SynthkdError, OSError):
    """A write to an output failed mid-run (disk full, file size limit, read-only file system...).

    ``str()`` is one line naming the file and the cause; ``errno`` is kept so callers can tell disk-full
    (``disk_full``) from other failures.  What was written before is whole (see
    :meth:`synthkd.jsonl_io.AppendWriter.write`).
    """

    DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})

    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror)
        self.path = path
        self.message = (f"{path}: cannot write: disk full ({exc.strerror})" if self.disk_full
                        else f"{path}: cannot write: {exc.strerror or exc}")

    @property
    def disk_full(self) -> bool:
        return self.errno in self.DISK_FULL

    def __str__(self) -> str:
        return self.message


class ConfigError(SynthkdError, ValueError):
    """A bad pipeline file, ``--set`` override or cleaning operator list (the message names file and key)."""


class RunDirError(ConfigError):
    """The run directory cannot be used safely (not ours, busy, or a path outside it): exit 2."""


class TemplateError(SynthkdError, ValueError):
    """A prompt template that cannot be found, parsed or rendered."""


class PriceTableError(SynthkdError, ValueError):
    """A price table that cannot be read (not UTF-8, not JSON/YAML, not a mapping of prices)."""


class GoldError(SynthkdError, ValueError):
    """A gold label that cannot be read (the message names the field, not the location)."""


class UnknownStageError(SynthkdError, KeyError):
    """A run directory whose manifest has no such stage (``synthkd push``: exit 2)."""


class TeacherFatalError(SynthkdError, RuntimeError):
    """An error that must stop the whole run at once (bad key, unreachable server, no price for a budget)."""


class TeacherConfigError(TeacherFatalError):
    """A teacher setting that cannot work, found before any request was sent: a local model directory
    that does not load, a key with a control character, credentials in ``base_url``, no price for
    ``--max-cost``, a bad ``simulated:`` spec.

    Why its own class: nothing was sent, so it is a configuration error (exit 2, "fix the setting"),
    not a teacher that refused mid-run (exit 4, "rerun to resume").  It stays a TeacherFatalError so
    code that stops on any fatal teacher error keeps doing so (F13, F16).
    """


class TeacherStorageError(TeacherFatalError):
    """The teacher's own records (the request cache, a pipeline stage's ledger) could not be written:
    disk full, read-only, a file-size limit.

    Why its own class: like any output that cannot be written, it is the machine's problem, not the
    teacher's and not the rows' (exit 2 everywhere, with what is kept and "rerun to resume"), and
    every command maps it the same way through :func:`exit_code_for`.
    """


class BudgetExceeded(SynthkdError, RuntimeError):
    """Raised after the stream stops issuing requests because ``max_cost`` was reached."""


class BatchSubmitted(SynthkdError, RuntimeError):
    """Batch mode with ``--no-wait``: requests were submitted to (or are still in) the provider's Batch
    API; nothing is lost, and a rerun of the same command collects the results and goes on (exit 5)."""


class StageFailed(SynthkdError, RuntimeError):
    """A stage finished but some rows were rejected for good (``synthkd run`` exits 1, as ``complete`` does)."""


class HubError(SynthkdError, RuntimeError):
    """The hub could not be reached or refused the push (``synthkd push`` exits 4, one line)."""


# ------------------------------------------------------------------------------------------------
# the one exit-code rule and the one way to say why a command stopped
# ------------------------------------------------------------------------------------------------

#: First match wins: the subclasses before the classes they refine.
_EXIT_CODES: tuple[tuple[tuple[type[BaseException], ...], ExitCode], ...] = (
    ((StageFailed,), ExitCode.REJECTED),
    ((BudgetExceeded,), ExitCode.BUDGET),
    ((BatchSubmitted,), ExitCode.SUBMITTED),
    ((TeacherConfigError, TeacherStorageError), ExitCode.BAD_INPUT),
    ((TeacherFatalError, HubError), ExitCode.TEACHER),
    ((KeyboardInterrupt, asyncio.CancelledError), ExitCode.INTERRUPTED),
    # InputError, PathError, ConfigError, TemplateError, PriceTableError, GoldError, OutputWriteError...
    ((SynthkdError, ValueError, OSError, ImportError), ExitCode.BAD_INPUT),
)

def exit_code_for(exc: BaseException) -> ExitCode | None:
    """The exit code a command ends with when ``exc`` stops it; None for an error that is not ours to
    report (a bug: it keeps its traceback).  The one mapping for every command."""
    from synthkd.teachers.errors import RequestRejected, RetryableError

    if isinstance(exc, (RetryableError, RequestRejected)):  # handled inside the teacher, never a command's
        return None
    for classes, code in _EXIT_CODES:
        if isinstance(exc, classes):
            return code
    return None


#: What a generic fatal stop keeps (a refused key, an exhausted quota, an unreachable server).
RESUME_HINT = "nothing paid for is lost: rerun the same command to resume"

#: The line printed after the error: a text, or a function of the error giving one (or None).
Hint = Union[str, Callable[[BaseException], Union[str, None]]]


def os_error_line(exc: OSError) -> str:
    """One line for a runtime environment failure (read-only file system, disk full, permissions)."""
    where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
    return f"error: {exc.strerror or exc}{where}"


def error_line(exc: BaseException) -> str:
    """The first line said about ``exc``: ``stopped:`` for a budget, the OS's words for a plain OSError
    (with the file it names), else ``error: <message>``."""
    if isinstance(exc, (BudgetExceeded, BatchSubmitted)):
        return f"stopped: {exc}"
    if isinstance(exc, OSError) and not isinstance(exc, SynthkdError):
        return os_error_line(exc)
    return f"error: {exc}"


def report_error(exc: BaseException, *, interrupted: str = "interrupted: rerun the same command to resume",
                 hints: Mapping[type[BaseException], Hint] | None = None) -> ExitCode:
    """Say why a command stopped and return its exit code: the one message rule.

    The first line is :func:`error_line` (``interrupted`` for Ctrl-C/SIGTERM); then, if any, what is
    kept and how to go on: the first of ``hints`` whose class ``exc`` is an instance of.  A fatal teacher
    error says :data:`RESUME_HINT` unless a hint says better -- except a :class:`TeacherConfigError`,
    found before any request: nothing to resume, so "rerun to resume" would send the user the wrong way
    (F13, F16).  Raises ValueError for an ``exc`` that :func:`exit_code_for` does not map.
    """
    code = exit_code_for(exc)
    if code is None:
        raise ValueError(f"not an error a command reports: {exc!r}")
    if code is ExitCode.INTERRUPTED:
        log.warning(interrupted)
        return code
    level = logging.WARNING if code is ExitCode.BUDGET else logging.ERROR
    log.log(level, error_line(exc))
    after: str | None = None
    if not isinstance(exc, TeacherConfigError):
        for cls, hint in (hints or {}).items():
            if isinstance(exc, cls):
                after = hint(exc) if callable(hint) else hint
                break
        else:
            after = RESUME_HINT if isinstance(exc, TeacherFatalError) else None
    if after:
        log.log(level, after)
    log.debug("(--verbose) where it was raised:", exc_info=exc)
    return code

