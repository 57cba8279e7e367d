"""``simulated:TASK`` teachers: a simulated teacher served in-process, reached through the real client.

Why not answer in-process directly: offline pipelines (the demo, CI, the tailored multi-round loop
without an API key) should exercise exactly the code a paid run exercises — HTTP, retries, the
request cache, budgets, progress.  So ``make_teacher(TeacherSpec("simulated:arithmetic"))`` starts a
:class:`synthkd.testing.server.TestServer` on 127.0.0.1 whose responder is the simulated teacher, and
returns an :class:`OpenAICompatibleTeacher` pointed at it.  The server lives exactly as long as the
teacher: it stops when ``aclose()`` is awaited, when the teacher is garbage-collected, or at
interpreter exit, whichever comes first.

Spec syntax: ``simulated:arithmetic`` or ``simulated:arithmetic?error_rate=0.1&noise_rate=0.1&
copy_rate=0.1&latency_ms=0&seed=0``.  Knobs that change answers are part of the model name
(``simulated-arithmetic?error_rate=0.3``), so the request cache never serves one setting's answers to
another; ``latency_ms`` changes no answer and is left out of it.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any, AsyncGenerator, AsyncIterable, Callable

from synthkd.teachers.base import TeacherConfigError, TeacherRequest, TeacherResult
from synthkd.teachers.openai_compat import OpenAICompatibleTeacher

__all__ = ["PREFIX", "TASKS", "SimulatedSettings", "ServedTeacher", "parse_simulated_spec", "make_simulated_teacher"]

PREFIX = "simulated:"


def _arithmetic_responder(s: "SimulatedSettings") -> Callable[[str, dict], Any]:
    from synthkd.testing.simulated import SimulatedResponder

    salt = "sim" if s.seed == 0 else f"sim{s.seed}"
    return SimulatedResponder([], error_rate=s.error_rate, noise_rate=s.noise_rate, copy_rate=s.copy_rate, salt=salt)


#: task name -> responder factory (imported lazily)
TASKS: dict[str, Callable[["SimulatedSettings"], Callable[[str, dict], Any]]] = {"arithmetic": _arithmetic_responder}

_RATES = ("error_rate", "noise_rate", "copy_rate")
_DEFAULTS: dict[str, float | int] = {"error_rate": 0.1, "noise_rate": 0.1, "copy_rate": 0.1, "latency_ms": 0.0,
                                     "seed": 0}


@dataclass(frozen=True)
class SimulatedSettings:
    task: str
    error_rate: float = 0.1
    noise_rate: float = 0.1
    copy_rate: float = 0.1
    latency_ms: float = 0.0
    seed: int = 0

    @property
    def model_name(self) -> str:
        """``simulated-<task>``, plus every answer-changing knob that differs from its default."""
        changed = [f"{k}={getattr(self, k):g}" for k in (*_RATES, "seed") if getattr(self, k) != _DEFAULTS[k]]
        return f"simulated-{self.task}" + ("?" + "&".join(changed) if changed else "")


def parse_simulated_spec(spec: str) -> SimulatedSettings:
    """``simulated:TASK[?k=v&...]`` -> settings; TeacherConfigError naming the valid tasks/params otherwise."""
    if not spec.startswith(PREFIX):
        raise TeacherConfigError(f"not a simulated teacher spec: {spec!r} (expected {PREFIX}TASK)")
    task, _, query = spec[len(PREFIX):].partition("?")
    valid_tasks = ", ".join(sorted(TASKS))
    if task not in TASKS:
        raise TeacherConfigError(f"unknown simulated teacher task {task!r} in {spec!r}; valid tasks: {valid_tasks}")
    valid_params = ", ".join(_DEFAULTS)
    values: dict[str, Any] = {}
    for part in query.split("&") if query else []:
        key, eq, raw = part.partition("=")
        if not eq or key not in _DEFAULTS:
            raise TeacherConfigError(
                f"bad parameter {part!r} in teacher spec {spec!r}; valid parameters (name=value): {valid_params}")
        if key in values:
            raise TeacherConfigError(f"parameter {key!r} given twice in teacher spec {spec!r}")
        try:
            value: float | int = int(raw) if key == "seed" else float(raw)
        except ValueError:
            kind = "an integer" if key == "seed" else "a number"
            raise TeacherConfigError(f"{key} must be {kind} in teacher spec {spec!r}, got {raw!r}") from None
        if key in _RATES and not 0.0 <= value <= 1.0:
            raise TeacherConfigError(f"{key} must be in [0, 1] in teacher spec {spec!r}, got {raw!r}")
        if key == "latency_ms" and not 0.0 <= value < float("inf"):
            raise TeacherConfigError(f"latency_ms must be >= 0 in teacher spec {spec!r}, got {raw!r}")
        values[key] = value
    return SimulatedSettings(task=task, **values)


class ServedTeacher(OpenAICompatibleTeacher):
    """An OpenAICompatibleTeacher that owns the in-process server it talks to, and stops it on close.

    Like its parent (whose ``aclose`` only closes the HTTP session), a closed teacher may be used again:
    the next ``stream`` starts the server again (same responder, same port when it is free).
    """

    def __init__(self, model: str, *, server: Any, **kwargs: Any) -> None:
        self.server = server
        # stops the server once: on aclose(), when the teacher is collected, or at interpreter exit
        self._stop_server = weakref.finalize(self, server.stop)
        try:
            super().__init__(model, base_url=server.base_url, **kwargs)
        except BaseException:
            self._stop_server()
            raise

    def _ensure_server(self) -> None:
        if self._stop_server.alive:
            return
        try:
            self.server.start()
        except OSError:  # the old port was taken meanwhile: any free one will do
            self.server.port = 0
            self.server.start()
        self._stop_server = weakref.finalize(self, self.server.stop)
        self.base_url = self.server.base_url

    def stream(self, requests: AsyncIterable[TeacherRequest]) -> AsyncGenerator[TeacherResult, None]:
        self._ensure_server()  # before the parent builds any URL
        return super().stream(requests)

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            if self._stop_server.alive:
                await asyncio.to_thread(self._stop_server)


def make_simulated_teacher(spec: Any) -> ServedTeacher:
    """The teacher for a :class:`synthkd.teachers.factory.TeacherSpec` whose ``teacher`` is ``simulated:...``.

    ``base_url``/``api_key`` are ignored (the server is ours); concurrency, rate limits, timeouts,
    retries, cache, budget and prices are honoured.  With no price for the model in the price table
    (built-in + ``prices`` file) the simulated model costs 0, so ``max_cost`` is accepted; give a price
    in a prices file to exercise budgets.
    """
    from synthkd.teachers.factory import client_options
    from synthkd.testing.server import FaultConfig, TestServer

    settings = parse_simulated_spec(spec.teacher)
    model = settings.model_name
    options = client_options(spec)
    if options["prices"].lookup(model) is None:
        options["prices"].set(model, 0.0, 0.0)
    server = TestServer(FaultConfig(latency_ms=settings.latency_ms), responder=TASKS[settings.task](settings),
                        host="127.0.0.1", port=0)
    server.start()  # last: nothing that can fail on bad settings comes after it but the teacher itself
    # the TestServer checks no key by default; "" sends none (never $OPENAI_API_KEY)
    return ServedTeacher(model, server=server, api_key="", **options)
