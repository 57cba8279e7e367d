"""The two Batch APIs on the wire: OpenAI (Files + Batches) and Anthropic (Message Batches).

Shapes: ``../shared/api_reference.md`` section 2 (OpenAI) and 3.4 (Anthropic), checked against the
recorded exchanges in ``../shared/data/api_recordings/`` (``openai__*batch*``, ``anthropic__*batch*``).
Each adapter turns the provider's words into the same few things: a request line, a
:class:`BatchStatus`, and a stream of :class:`ItemResult` (one per request that came back).

What is read carefully, because the providers say so:
* OpenAI: an item failed over HTTP has ``response.status_code >= 400`` and ``error: null`` (read the
  status code, not only ``error``); ``error`` is set for ``batch_expired``, ``batch_cancelled``,
  ``request_timeout``.  Output *and* error files are read for completed, expired and cancelled batches,
  and either may be null.  Output lines come in any order: they are joined on ``custom_id``.
* Anthropic: request counts other than ``processing`` stay zero until the batch has ended;
  ``results_url`` is followed as given (never a hard-coded path); result types are ``succeeded``,
  ``errored`` (a full error body), ``canceled`` and ``expired`` (not billed).
Results are read line by line from the response (memory bounded by one line, not by the file).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
import orjson

from synthkd.teachers.base import TeacherFatalError
from synthkd.teachers.batch.journal import BatchRecord
from synthkd.teachers.batch.spool import Limits

#: the control calls (upload, create, poll, download) are retried this many times on 5xx/429/connection
#: errors, with exponential backoff: a poll that fails once must not end a 24-hour wait
CONTROL_RETRIES = 6


@dataclass
class BatchStatus:
    """A batch as the provider last described it."""

    batch_id: str
    status: str  # the provider's word
    ended: bool  # results can be read (and will not change)
    total: int = 0
    done: int = 0  # requests finished (answered or failed)
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    results_url: str | None = None
    errors: str | None = None  # a batch-level failure (OpenAI validation errors)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class ItemResult:
    """One request's outcome in a batch: ``body`` (the provider's reply) or ``error``; ``retry``: worth
    resubmitting (expired, cancelled, 5xx, 429, timeout) rather than failed for good (a 400)."""

    key: str
    body: dict[str, Any] | None = None
    error: str | None = None
    retry: bool = False


class ControlError(Exception):
    """A control call that failed for good (not a reason to stop waiting for other batches)."""


class TransientControlError(ControlError):
    """A call that was not retried blindly (``retry=False``) failed in a way that may have acted on the
    provider's side (5xx, 429, a dropped connection): the caller looks before it tries again."""


class Http:
    """The control calls, on the teacher's session, headers and secret scrubbing."""

    def __init__(self, session: Callable[[], Any], headers: dict[str, str], scrub: Callable[[str], str],
                 base_url: str) -> None:
        self._session = session
        self.headers = headers
        self.scrub = scrub
        self.base_url = base_url

    async def request(self, method: str, url: str, *, json: Any = None, data: Any = None,
                      headers: dict[str, str] | None = None, ok404: bool = False, retry: bool = True) -> Any:
        """JSON of a control call; transient failures retried (``retry``; else TransientControlError at
        once: a create whose reply was lost must be looked up, not sent again), 401/403 fatal, other 4xx
        ControlError."""
        delay = 0.5
        retries = CONTROL_RETRIES if retry else 0
        for attempt in range(retries + 1):
            session: aiohttp.ClientSession = await self._session()
            body = None if json is None else orjson.dumps(json)
            hdrs = {**self.headers, **(headers or {})}
            if body is not None:
                hdrs["Content-Type"] = "application/json"
            payload = body if body is not None else (data() if callable(data) else data)
            try:
                async with session.request(method, url, data=payload, headers=hdrs) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if attempt == retries:
                    raise TransientControlError(self.scrub(f"{method} {url}: {type(exc).__name__}: {exc}")) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if status == 200:
                try:
                    return orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise ControlError(f"{method} {url}: the reply is not JSON") from None
            message = self.scrub(raw.decode("utf-8", "replace")[:300])
            if status in (401, 403):
                raise TeacherFatalError(f"{self.base_url} refused the API key (HTTP {status}): {message}")
            if status == 404 and ok404:
                return None
            if status in (408, 409, 429) or status >= 500:
                if attempt < retries:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                raise TransientControlError(f"{method} {url}: HTTP {status}: {message}")
            raise ControlError(f"{method} {url}: HTTP {status}: {message}")
        raise ControlError(f"{method} {url}: no answer")  # unreachable

    async def lines(self, url: str) -> AsyncIterator[bytes]:
        """A JSONL body, line by line (never the whole file in memory)."""
        session: aiohttp.ClientSession = await self._session()
        delay = 0.5
        for attempt in range(CONTROL_RETRIES + 1):
            try:
                async with session.get(url, headers={**self.headers, "Accept": "application/binary"}) as resp:
                    if resp.status != 200:
                        raw = await resp.read()
                        message = self.scrub(raw.decode("utf-8", "replace")[:300])
                        if resp.status in (401, 403):
                            raise TeacherFatalError(f"{self.base_url} refused the API key (HTTP {resp.status}): "
                                                    f"{message}")
                        if (resp.status in (408, 429) or resp.status >= 500) and attempt < CONTROL_RETRIES:
                            await asyncio.sleep(delay)
                            delay *= 2
                            continue
                        raise ControlError(f"GET {url}: HTTP {resp.status}: {message}")
                    buf = b""
                    async for chunk in resp.content.iter_any():
                        buf += chunk
                        *whole, buf = buf.split(b"\n")
                        for line in whole:
                            if line.strip():
                                yield line
                    if buf.strip():
                        yield buf
                    return
            except (aiohttp.ClientError, TimeoutError) as exc:
                # a download cut halfway is read again whole: the cache writes are idempotent
                if attempt == CONTROL_RETRIES:
                    raise ControlError(self.scrub(f"GET {url}: {type(exc).__name__}: {exc}")) from None
                await asyncio.sleep(delay)
                delay *= 2


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        inner: dict[str, Any] = err["error"] if isinstance(err.get("error"), dict) else err
        msg = inner.get("message") or inner
        code = inner.get("code") or inner.get("type")
        return f"{msg} ({code})" if code else str(msg)
    return str(err)


class OpenAIBatchAPI:
    """``POST /files`` (purpose=batch) -> ``POST /batches`` -> ``GET /batches/{id}`` -> file contents."""

    name = "openai"
    limits = Limits(max_requests=50_000, max_bytes=200_000_000)
    overhead = 0
    _ENDED = ("completed", "failed", "expired", "cancelled")

    def __init__(self, http: Http) -> None:
        self.http = http
        self.base = http.base_url

    def endpoint(self, url: str) -> str:
        """``/v1/chat/completions`` for the teacher's ``{base_url}/chat/completions``."""
        return "/v1" + url[len(self.base):]

    def line(self, key: str, url: str, body: dict[str, Any]) -> bytes:
        return orjson.dumps({"custom_id": key, "method": "POST", "url": self.endpoint(url), "body": body}) + b"\n"

    async def upload(self, rec: BatchRecord, path: Path) -> str:
        def form() -> aiohttp.FormData:
            fd = aiohttp.FormData()
            fd.add_field("purpose", "batch")
            fd.add_field("file", open(path, "rb"), filename=f"{rec.id}.jsonl", content_type="application/jsonl")
            return fd

        data = await self.http.request("POST", f"{self.base}/files", data=form)
        return str(data["id"])

    async def create(self, rec: BatchRecord, path: Path) -> BatchStatus:
        data = await self.http.request("POST", f"{self.base}/batches", json={
            "input_file_id": rec.file_id, "endpoint": rec.endpoint, "completion_window": "24h",
            "metadata": {"synthkd_batch": rec.id}}, retry=False)
        return self.status(data)

    async def find(self, rec: BatchRecord) -> BatchStatus | None:
        """The batch created for ``rec`` (by its ``metadata.synthkd_batch``), if the provider has it."""
        after: str | None = None
        while True:
            q = {"limit": "100", **({"after": after} if after else {})}
            page = await self.http.request("GET", f"{self.base}/batches?{urllib.parse.urlencode(q)}")
            items = page.get("data") or []
            for b in items:
                if (b.get("metadata") or {}).get("synthkd_batch") == rec.id:
                    return self.status(b)
                created = b.get("created_at")
                if isinstance(created, (int, float)) and rec.submitting_at and created < rec.submitting_at - 3600:
                    return None  # newest first: past the time it was made, it is not there
            if not page.get("has_more") or not items:
                return None
            after = str(items[-1]["id"])

    async def get(self, batch_id: str) -> BatchStatus:
        return self.status(await self.http.request("GET", f"{self.base}/batches/{batch_id}"))

    async def cancel(self, batch_id: str) -> BatchStatus:
        return self.status(await self.http.request("POST", f"{self.base}/batches/{batch_id}/cancel"))

    def status(self, b: dict[str, Any]) -> BatchStatus:
        rc = b.get("request_counts") or {}
        errors = b.get("errors")
        err_text = None
        if isinstance(errors, dict) and errors.get("data"):
            err_text = "; ".join(_error_text(e) for e in errors["data"][:3])
        total, completed, failed = int(rc.get("total") or 0), int(rc.get("completed") or 0), int(rc.get("failed") or 0)
        return BatchStatus(batch_id=str(b["id"]), status=str(b.get("status")), ended=b.get("status") in self._ENDED,
                           total=total, done=completed + failed, failed=failed,
                           output_file_id=b.get("output_file_id"), error_file_id=b.get("error_file_id"),
                           errors=err_text, counts={"total": total, "completed": completed, "failed": failed})

    async def results(self, st: BatchStatus) -> AsyncIterator[ItemResult]:
        for file_id in (st.output_file_id, st.error_file_id):
            if not file_id:
                continue
            async for line in self.http.lines(f"{self.base}/files/{file_id}/content"):
                yield parse_openai_line(orjson.loads(line))


def parse_openai_line(d: dict[str, Any]) -> ItemResult:
    """One line of an OpenAI batch output or error file."""
    key = str(d.get("custom_id"))
    resp = d.get("response")
    err = d.get("error")
    if isinstance(resp, dict):
        code = int(resp.get("status_code") or 0)
        body = resp.get("body")
        if code == 200 and isinstance(body, dict):
            return ItemResult(key, body=body)
        msg = _error_text(body.get("error")) if isinstance(body, dict) and body.get("error") else str(body)[:300]
        return ItemResult(key, error=f"HTTP {code}: {msg}", retry=code in (408, 409, 429) or code >= 500)
    if err:
        err_code = err.get("code") if isinstance(err, dict) else None
        # batch_expired, batch_cancelled, request_timeout: not the request's fault
        return ItemResult(key, error=f"batch: {_error_text(err)}", retry=True if err_code is None else
                          err_code in ("batch_expired", "batch_cancelled", "request_timeout", "server_error"))
    return ItemResult(key, error="batch: a result line with neither response nor error", retry=True)


class AnthropicBatchAPI:
    """``POST /messages/batches`` (the requests inline) -> ``GET /messages/batches/{id}`` -> ``results_url``."""

    name = "anthropic"
    limits = Limits(max_requests=100_000, max_bytes=256_000_000 - 64)  # the body's {"requests":[...]} around the lines
    overhead = 1  # the comma between two requests in the body

    def __init__(self, http: Http) -> None:
        self.http = http
        self.base = http.base_url

    def endpoint(self, url: str) -> str:
        return "/v1/messages"

    def line(self, key: str, url: str, body: dict[str, Any]) -> bytes:
        return orjson.dumps({"custom_id": key, "params": body}) + b"\n"

    async def upload(self, rec: BatchRecord, path: Path) -> str | None:
        return None  # the requests go inline with the create call

    async def create(self, rec: BatchRecord, path: Path) -> BatchStatus:
        def body() -> bytes:  # one batch's lines as {"requests": [...]} (bounded by the batch limit)
            with open(path, "rb") as f:
                return b'{"requests":[' + b",".join(line.rstrip(b"\n") for line in f if line.strip()) + b"]}"

        data = await self.http.request("POST", f"{self.base}/messages/batches", data=body,
                                       headers={"Content-Type": "application/json"}, retry=False)
        return self.status(data)

    async def find(self, rec: BatchRecord, known: set[str] | None = None) -> BatchStatus | None:
        """The batch created for ``rec``: Message Batches carry no metadata, so it is the one batch
        created since ``rec`` was being submitted with exactly its number of requests that no other
        record of the journal claims.  Two candidates: ControlError (never guess, never submit twice)."""
        after: str | None = None
        found: list[BatchStatus] = []
        since = (rec.submitting_at or rec.created) - 300  # clock skew
        while True:
            q = {"limit": "100", **({"after_id": after} if after else {})}
            page = await self.http.request("GET", f"{self.base}/messages/batches?{urllib.parse.urlencode(q)}")
            items = page.get("data") or []
            older = False
            for b in items:
                created = _rfc3339(b.get("created_at"))
                if created is not None and created < since:
                    older = True
                    continue
                st = self.status(b)
                if st.total == rec.requests and st.batch_id not in (known or set()):
                    found.append(st)
            if older or not page.get("has_more") or not items:
                break
            after = str(page.get("last_id") or items[-1]["id"])
        if len(found) > 1:
            raise ControlError(f"batch {rec.id}: {len(found)} provider batches could be the one it was submitting "
                               f"({', '.join(s.batch_id for s in found)}); not resubmitting it. Cancel the wrong one "
                               "with `synthkd batch cancel`, or mark the record")
        return found[0] if found else None

    async def get(self, batch_id: str) -> BatchStatus:
        return self.status(await self.http.request("GET", f"{self.base}/messages/batches/{batch_id}"))

    async def cancel(self, batch_id: str) -> BatchStatus:
        return self.status(await self.http.request("POST", f"{self.base}/messages/batches/{batch_id}/cancel"))

    def status(self, b: dict[str, Any]) -> BatchStatus:
        rc = {k: int(v or 0) for k, v in (b.get("request_counts") or {}).items()}
        total = sum(rc.values())
        failed = rc.get("errored", 0) + rc.get("canceled", 0) + rc.get("expired", 0)
        return BatchStatus(batch_id=str(b["id"]), status=str(b.get("processing_status")),
                           ended=b.get("processing_status") == "ended", total=total,
                           done=total - rc.get("processing", 0), failed=failed,
                           results_url=b.get("results_url"), counts=rc)

    async def results(self, st: BatchStatus) -> AsyncIterator[ItemResult]:
        if not st.results_url:
            return
        url = urllib.parse.urljoin(self.base + "/", st.results_url)
        async for line in self.http.lines(url):
            yield parse_anthropic_line(orjson.loads(line))


#: Anthropic error types worth a resubmission (the service's fault, not the request's)
_ANTHROPIC_TRANSIENT = ("api_error", "overloaded_error", "rate_limit_error", "timeout_error")


def parse_anthropic_line(d: dict[str, Any]) -> ItemResult:
    """One line of an Anthropic Message Batch results stream."""
    key = str(d.get("custom_id"))
    result = d.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded" and isinstance(result.get("message"), dict):
        return ItemResult(key, body=result["message"])
    if kind == "errored":
        err = result.get("error") or {}
        inner = err.get("error") if isinstance(err, dict) and isinstance(err.get("error"), dict) else err
        etype = inner.get("type") if isinstance(inner, dict) else None
        return ItemResult(key, error=f"errored: {_error_text(inner)}", retry=etype in _ANTHROPIC_TRANSIENT)
    if kind in ("canceled", "expired"):
        return ItemResult(key, error=f"batch: request {kind}", retry=True)
    return ItemResult(key, error=f"batch: unknown result type {kind!r}", retry=True)


def _rfc3339(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
