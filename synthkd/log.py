"""Where synthkd's messages go: ``logging.getLogger("synthkd.<module>")`` everywhere, one handler.

Library use (``import synthkd``, no CLI) prints nothing: the ``synthkd`` logger has a NullHandler, so
messages reach only the handlers the application configures (``logging.basicConfig(level="INFO")``
shows them).  The ``synthkd`` command installs one stderr handler (:func:`setup_cli_logging`) with a
message-only format, so what the user sees is the text the code logs, nothing more.

Why the handler looks up ``sys.stderr`` at each message instead of keeping the stream it started with:
whoever replaces ``sys.stderr`` later (pytest's capture, click's ``CliRunner``, ``contextlib``
redirection) gets the messages; a handler bound at start-up would write past them.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "synthkd"


class StderrHandler(logging.StreamHandler):
    """A StreamHandler writing to the current ``sys.stderr``, message only."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - whatever sys.stderr is now
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:  # StreamHandler.__init__/setStream: always sys.stderr
        pass


def setup_cli_logging(level: int | None = None) -> None:
    """Send synthkd's messages to stderr, once per process (idempotent).

    ``level``: INFO by default, DEBUG for ``--verbose``, WARNING for ``--quiet``; None keeps the level
    a previous call set (a command mounted outside the ``synthkd`` app calls it so; see
    :func:`synthkd.commands.common.run_job`).  The CLI's messages stop at its handler (no propagation to
    the root logger, which a host application or pytest may have configured too: no line twice).
    """
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        logger.addHandler(StderrHandler())
        logger.propagate = False
        if level is None:
            level = logging.INFO
    if level is not None:
        logger.setLevel(level)
