"""The providers' batch APIs for the test server: OpenAI Batch and Anthropic Message Batches.

Why an emulator and not mocks: a batch client is about durable state across a long wait -- files
uploaded, jobs submitted, statuses polled, partial results collected after an expiry or a
cancellation, failed items resubmitted.  Those paths only get exercised against a server that
really holds jobs, moves them through their states and returns result files.  This module does
that on an accelerated clock (``FaultConfig.batch_seconds`` instead of up to 24 h), with the shapes
of the offline API reference (§2, §3.4) and of the real recordings of Bespoke Curator
(``openai__*batch*``, ``anthropic__*batch*``): object names, id prefixes, key order, timestamp types
(unix ints for OpenAI, RFC 3339 ``+00:00`` strings with microseconds for Anthropic), the
``retry-after: 10`` of an Anthropic poll while in progress, download headers.

Every item is answered by the server's own online logic (:meth:`TestServer._batch_openai_item`,
:meth:`TestServer._batch_anthropic_item`): the same body gives the same message and usage online
and in a batch, and a body the online endpoint rejects ends as a failed / errored item with that
very error.  Items are billed at 50% (:data:`synthkd.testing.billing.BATCH_DISCOUNT`).

Timeline of a batch of N items, T = ``batch_seconds`` (read when the batch is created):

* OpenAI: ``validating`` for 0.1 T (the file's lines are checked then: a bad file ends ``failed``
  with ``errors``), ``in_progress`` for 0.8 T with item i done at ``(i + 1) / N`` of it (so
  ``request_counts.completed`` / ``failed`` grow while polling), ``finalizing`` for 0.1 T, then
  ``completed`` with an output file (successes) and an error file (HTTP failures and items that
  never ran).  A cancel during ``validating`` / ``in_progress`` shows ``cancelling`` for 0.1 T, then
  ``cancelled``, keeping what was done.
* Anthropic: ``in_progress`` (counts stay ``processing: N`` until the end, as the API documents),
  items done over 0.9 T, ``ended`` at T; a cancel shows ``canceling`` for 0.1 T then ``ended`` with
  the unfinished items ``canceled``.

Faults (``FaultConfig``): ``batch_failed_rate`` -- exactly ``round(rate * N)`` items of each batch
fail (OpenAI: a 500 ``server_error`` line in the error file; Anthropic: an ``errored`` result with an
``api_error``), picked by a hash of the seed, the custom_id and how many times that custom_id was
submitted before, so a rerun against a fresh server fails the same items and a resubmission is a
new draw.  ``batch_error_rate`` / ``batch_lost_reply_rate`` -- a batch endpoint answers 500 before
acting, or after (an upload stored, a batch created or cancelled, and the reply lost: the case where a
client that retries blindly submits twice).  ``batch_expire_after_share`` -- the batch expires once
``floor(share * N)`` items are
done: OpenAI ``expired`` (output file of the done ones, ``batch_expired`` lines for the rest),
Anthropic ``expired`` results.  ``batch_max_requests`` / ``batch_max_bytes`` lower the providers'
limits (50,000 requests / 200 MB per OpenAI input file; 100,000 requests / 256 MB per Anthropic
batch; MB counted as 10^6 bytes) so a test can hit them cheaply.

Where the providers' behaviour is not documented (texts of some 400s and 404s, error lines of
cancelled OpenAI items, what cancelling an ended batch answers) the wording is an assumption, said
so beside each.

Counters (``stats()["batch"]``): files uploaded, batches created, requests submitted, cancels, and
per custom_id how many times it was submitted across all batches (``submitted_by_custom_id``;
``resubmitted_ids`` lists those submitted more than once), plus the fate of the items.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import secrets
import string
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import orjson
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

if TYPE_CHECKING:  # pragma: no cover
    from synthkd.testing.server import TestServer

__all__ = [
    "BatchEmulator",
    "OPENAI_MAX_REQUESTS",
    "OPENAI_MAX_BYTES",
    "ANTHROPIC_MAX_REQUESTS",
    "ANTHROPIC_MAX_BYTES",
    "OPENAI_BATCH_ENDPOINTS",
    "openai_routes",
    "anthropic_routes",
]

#: Per input file (reference §2.7); the byte limits count MB as 10^6 bytes (the stricter reading).
OPENAI_MAX_REQUESTS = 50_000
OPENAI_MAX_BYTES = 200_000_000
#: Per Message Batch (reference §3.4).
ANTHROPIC_MAX_REQUESTS = 100_000
ANTHROPIC_MAX_BYTES = 256_000_000

#: The batch endpoints this server can run (those it serves online).
OPENAI_BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
_OPENAI_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_DAY = 86_400
_FILE_TTL = 30 * _DAY
_CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_CUSTOM_ID_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
_B62 = string.ascii_letters + string.digits

# OpenAI texts.  Verbatim: "File is too large." (bespokelabsai/curator #111), the .jsonl one
# (BerriAI/litellm #37527), "No batch found with id ..." (curator #190), the batch_expired line (§2.6).
_TOO_LARGE = "File is too large."
_NOT_JSONL = "Invalid file format for Batch API. Must be .jsonl"
_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
_CANCELLED_MESSAGE = "This request was cancelled before it could be executed."  # assumption
_SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"

def _rand(n: int) -> str:
    return "".join(secrets.choice(_B62) for _ in range(n))


def _rfc3339(t: float) -> str:
    """Anthropic's timestamps: ``2025-01-12T05:59:14.154311+00:00`` (recordings)."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="microseconds")


def _draw(seed: int, custom_id: str, attempt: int) -> int:
    digest = hashlib.sha256(f"{seed}\x1f{custom_id}\x1f{attempt}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


def _metadata_problem(metadata: Any) -> tuple[str, str, str] | None:
    """OpenAI's metadata rules (at most 16 pairs, keys <= 64 and values <= 512 characters, strings):
    ``(message, param, code)`` in OpenAI's usual "Invalid '...'" wording, or None."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return ("Invalid type for 'metadata': expected an object, but got a value of another type instead.",
                "metadata", "invalid_type")
    if len(metadata) > 16:
        return (f"Invalid 'metadata': too many properties. Expected an object with at most 16 properties, but got "
                f"an object with {len(metadata)} properties instead.", "metadata", "object_above_max_length")
    for key, value in metadata.items():
        if len(key) > 64:
            return (f"Invalid 'metadata': key too long. Expected a key with maximum length 64, but got a key with "
                    f"length {len(key)} instead.", "metadata", "invalid_value")
        if not isinstance(value, str):
            return (f"Invalid type for 'metadata.{key}': expected a string, but got a value of another type "
                    "instead.", f"metadata.{key}", "invalid_type")
        if len(value) > 512:
            return (f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length 512, but got "
                    f"a string with length {len(value)} instead.", f"metadata.{key}", "string_above_max_length")
    return None


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class StoredFile:
    """An OpenAI file: an uploaded batch input, or a batch's output / error file."""

    id: str
    purpose: str
    filename: str
    data: bytes
    created_at: int
    lines: list[tuple[int, Any]] | None = None  # (line number, parsed object) of a batch input

    def object(self, *, on_upload: bool = False) -> dict:
        """The FileObject, keys in the recorded order.  The upload reply has ``expires_at: null``,
        a later GET ``created_at`` + 30 days (``openai__batch_cancel.json`` #0/#1)."""
        return {
            "object": "file",
            "id": self.id,
            "purpose": self.purpose,
            "filename": self.filename,
            "bytes": len(self.data),
            "created_at": self.created_at,
            "expires_at": None if on_upload else self.created_at + _FILE_TTL,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class Item:
    """One request of a batch and its fate."""

    custom_id: str
    body: Any  # OpenAI: the line's ``body``; Anthropic: ``params``
    fail: bool = False  # an injected failure (batch_failed_rate)
    state: str = "pending"  # pending | succeeded | failed | expired | cancelled
    line: dict | None = None  # the output / error line (OpenAI) or the result line (Anthropic)


@dataclass
class Batch:
    provider: str  # "openai" | "anthropic"
    id: str
    created: float
    seconds: float
    items: list[Item]
    status: str
    endpoint: str = ""
    input_file_id: str = ""
    metadata: Any = None
    errors: dict | None = None
    times: dict[str, float] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    expire_after: float | None = None
    failed_rate: float = 0.0
    validated: bool = False
    behind: int = 0  # items started late (see _wait_until)
    lines: list[tuple[int, Any]] = field(default_factory=list)  # OpenAI: the input file's lines, as submitted
    max_requests: int = 0
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: "asyncio.Task[None] | None" = None

    def count(self, state: str) -> int:
        return sum(1 for item in self.items if item.state == state)


def openai_routes() -> list[tuple[str, str, str]]:
    """``(method, path, handler name)`` of the OpenAI Batch API."""
    return [
        ("POST", "/v1/files", "openai_upload"),
        ("GET", "/v1/files", "openai_file_list"),
        ("GET", "/v1/files/{file_id}", "openai_file"),
        ("DELETE", "/v1/files/{file_id}", "openai_file_delete"),
        ("GET", "/v1/files/{file_id}/content", "openai_file_content"),
        ("POST", "/v1/batches", "openai_create"),
        ("GET", "/v1/batches", "openai_list"),
        ("GET", "/v1/batches/{batch_id}", "openai_get"),
        ("POST", "/v1/batches/{batch_id}/cancel", "openai_cancel"),
    ]


def anthropic_routes() -> list[tuple[str, str, str]]:
    """``(method, path, handler name)`` of the Message Batches API."""
    return [
        ("POST", "/v1/messages/batches", "anthropic_create"),
        ("GET", "/v1/messages/batches", "anthropic_list"),
        ("GET", "/v1/messages/batches/{batch_id}", "anthropic_get"),
        ("DELETE", "/v1/messages/batches/{batch_id}", "anthropic_delete"),
        ("GET", "/v1/messages/batches/{batch_id}/results", "anthropic_results"),
        ("POST", "/v1/messages/batches/{batch_id}/cancel", "anthropic_cancel"),
    ]


class BatchEmulator:
    """Files, batches and their processing tasks for one :class:`TestServer` (its loop only)."""

    def __init__(self, server: "TestServer") -> None:
        self.server = server
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}
        self.reseed()
        self.reset_counters()

    def reseed(self) -> None:
        """The RNG of the HTTP faults (``batch_error_rate``, ``batch_lost_reply_rate``), from the seed."""
        self._rng = random.Random(f"batch:{self.server.config.seed}")

    # ---------------------------------------------------------------- counters

    def reset_counters(self) -> None:
        self.files_uploaded = 0
        self.batches_created = 0
        self.requests_submitted = 0
        self.cancels = 0
        self.submitted_by_custom_id: dict[str, int] = {}
        self.items = {"succeeded": 0, "failed": 0, "expired": 0, "cancelled": 0}
        self.http_errors = {"before": 0, "lost_reply": 0}
        self.reseed()

    def stats(self) -> dict:
        """``stats()["batch"]``."""
        by_id = self.submitted_by_custom_id
        return {
            "files_uploaded": self.files_uploaded,
            "batches_created": self.batches_created,
            "requests_submitted": self.requests_submitted,
            "cancels": self.cancels,
            "submitted_by_custom_id": dict(by_id),
            "resubmitted_ids": sorted(cid for cid, n in by_id.items() if n > 1),
            "items": dict(self.items),
            "live_batches": sum(1 for b in self.batches.values() if b.task is not None and not b.task.done()),
            "batches_by_status": self._by_status(),
            "http_errors": dict(self.http_errors),
        }

    def _by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for b in self.batches.values():
            counts[b.status] = counts.get(b.status, 0) + 1
        return counts

    async def close(self) -> None:
        """Stop the processing tasks and wait for them to end (the server is stopping)."""
        tasks = [b.task for b in self.batches.values() if b.task is not None and not b.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---------------------------------------------------------------- routing

    def routes(self, flavor: str) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        """The routes of ``flavor``'s batch API (none for flavors whose provider has none here)."""
        if flavor == "anthropic":
            table, provider = anthropic_routes(), "anthropic"
        elif flavor in ("openai", "openai-reasoning"):
            table, provider = openai_routes(), "openai"
        else:
            return []
        return [(method, path, self._wrap(path, provider, getattr(self, name))) for method, path, name in table]

    def _wrap(self, template: str, provider: str,
              handler: Callable[[web.Request], Awaitable[Any]]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Count the request (by route template), check auth, turn ``(status, body)`` into a response,
        count its outcome (``ok`` or ``bad_request``; auth failures are counted by the server's helpers)."""
        server = self.server

        async def handle(request: web.Request) -> web.StreamResponse:
            server._count(template)
            if provider == "anthropic":
                request_id = server._next_request_id()
                denied = server._anthropic_denied(request, request_id)
                if denied is not None:
                    return denied
            else:
                request_id = "req_" + secrets.token_hex(16)
                if server._expected_auth is not None and request.headers.get("Authorization") != server._expected_auth:
                    return server._unauthorized(request)
            cfg = server.config
            fault = None
            if cfg.batch_error_rate or cfg.batch_lost_reply_rate:
                draw = self._rng.random()
                fault = ("before" if draw < cfg.batch_error_rate
                         else "lost_reply" if draw < cfg.batch_error_rate + cfg.batch_lost_reply_rate else None)
            if fault == "before":
                async for _ in request.content.iter_chunked(1 << 16):
                    pass  # drain the upload, so the client is answered and not cut off
                reply = self._server_error(provider)
            else:
                reply = await handler(request)
                if fault == "lost_reply":
                    reply = self._server_error(provider)
            if fault is not None:
                self.http_errors[fault] += 1
            if isinstance(reply, web.StreamResponse):
                response = reply
            else:
                status, body = reply
                if provider == "anthropic" and isinstance(body, dict) and body.get("type") == "error":
                    body["request_id"] = request_id
                response = server._json(body, status=status)
            response.headers["request-id" if provider == "anthropic" else "x-request-id"] = request_id
            if provider == "openai":
                response.headers["openai-version"] = "2020-10-01"
            outcome = "error_500" if fault is not None else "ok" if response.status < 400 else "bad_request"
            server._by_outcome[outcome] += 1
            return response

        return handle

    # ---------------------------------------------------------------- shared helpers

    @staticmethod
    def _openai_error(status: int, message: str, param: str | None = None, code: str | None = None,
                      type_: str = "invalid_request_error") -> tuple[int, dict]:
        return status, {"error": {"message": message, "type": type_, "param": param, "code": code}}

    @classmethod
    def _server_error(cls, provider: str) -> tuple[int, dict]:
        if provider == "anthropic":
            return cls._anthropic_error(500, "api_error", "Internal server error")
        return cls._openai_error(500, _SERVER_ERROR, type_="server_error")

    @staticmethod
    def _anthropic_error(status: int, type_: str, message: str) -> tuple[int, dict]:
        # _wrap puts the request's id into request_id (as in the header).
        return status, {"type": "error", "error": {"type": type_, "message": message}, "request_id": None}

    @staticmethod
    async def _read_capped(request: web.Request, cap: int) -> tuple[bytes, bool]:
        """The body (read whole, so the client is not cut off) and whether it exceeded ``cap``."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size <= cap:
                chunks.append(chunk)
        return b"".join(chunks), size > cap

    def _submit(self, batch: Batch) -> None:
        """Count a submission, pick the injected failures, start processing."""
        self.batches[batch.id] = batch
        self.batches_created += 1
        self.requests_submitted += len(batch.items)
        seed = self.server.config.seed
        draws = []
        for index, item in enumerate(batch.items):
            attempt = self.submitted_by_custom_id.get(item.custom_id, 0)
            if item.custom_id:  # a line without one fails validation; nothing to count it by
                self.submitted_by_custom_id[item.custom_id] = attempt + 1
            draws.append((_draw(seed, item.custom_id, attempt), index))
        failing = int(batch.failed_rate * len(batch.items) + 0.5)  # rounded half up
        for _, index in sorted(draws)[:failing]:
            batch.items[index].fail = True
        runner = self._run_openai if batch.provider == "openai" else self._run_anthropic
        batch.task = asyncio.get_running_loop().create_task(runner(batch))

    @staticmethod
    async def _wait_until(batch: Batch, target: float) -> bool:
        """Sleep until loop time ``target``; True as soon as a cancel was asked for.

        A batch that is behind its schedule (or ``batch_seconds`` 0) still yields to the loop now and
        then, so a big batch never stalls the server's other requests.
        """
        if batch.cancel.is_set():
            return True
        delay = target - asyncio.get_running_loop().time()
        if delay <= 0:
            batch.behind += 1
            if batch.behind % 64 == 0:
                await asyncio.sleep(0)
                return batch.cancel.is_set()
            return False
        try:
            await asyncio.wait_for(batch.cancel.wait(), delay)
        except asyncio.TimeoutError:
            return False
        return True

    def _expire_index(self, batch: Batch) -> int | None:
        share = batch.expire_after
        if share is None:
            return None
        k = math.floor(share * len(batch.items) + 1e-9)
        return k if k < len(batch.items) else None

    def _settle(self, item: Item, state: str) -> None:
        item.state = state
        self.items[state] += 1

    # ================================================================ OpenAI

    async def openai_upload(self, request: web.Request) -> Any:
        """``POST /v1/files`` (multipart: ``purpose``, ``file``)."""
        cfg = self.server.config
        cap = cfg.batch_max_bytes or OPENAI_MAX_BYTES
        if not request.content_type.startswith("multipart/"):
            return self._openai_error(400, "Invalid Content-Type header (expected multipart/form-data).")
        try:
            parsed = await self._read_form(request, cap)
        except (ValueError, AssertionError, HttpProcessingError) as exc:
            return self._openai_error(400, f"Could not parse the multipart form: {exc}.")
        purpose, filename, data, too_large = parsed
        if purpose is None:
            return self._openai_error(400, "Missing required parameter: 'purpose'.", "purpose",
                                      "missing_required_parameter")
        if data is None:
            return self._openai_error(400, "Missing required parameter: 'file'.", "file", "missing_required_parameter")
        if purpose not in _OPENAI_PURPOSES:
            return self._openai_error(400, f"Invalid value: '{purpose}'. Supported values are: "
                                      + ", ".join(f"'{p}'" for p in _OPENAI_PURPOSES) + ".", "purpose",
                                      "invalid_value")
        if too_large:  # the emulator keeps files for batches only: the batch limit applies to every upload
            return self._openai_error(400, _TOO_LARGE)
        lines: list[tuple[int, Any]] | None = None
        if purpose == "batch":
            lines = []
            for number, raw in enumerate(data.split(b"\n"), start=1):
                if not raw.strip():
                    continue
                try:
                    lines.append((number, orjson.loads(raw)))
                except orjson.JSONDecodeError:
                    return self._openai_error(400, _NOT_JSONL)
        stored = StoredFile("file-" + _rand(22), purpose, filename, data, int(time.time()), lines)
        self.files[stored.id] = stored
        self.files_uploaded += 1
        return 200, stored.object(on_upload=True)

    @staticmethod
    async def _read_form(request: web.Request, cap: int) -> tuple[str | None, str, bytes | None, bool]:
        """``(purpose, filename, file bytes, too large)`` of an upload; the file is read whole (so the
        client is not cut off) but only its first ``cap`` bytes are kept."""
        purpose: str | None = None
        filename = "upload"
        data: bytes | None = None
        too_large = False
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                continue  # pragma: no cover - a nested multipart
            if part.name == "purpose":
                purpose = (await part.read()).decode("utf-8", "replace").strip()
            elif part.name == "file":
                filename = part.filename or "upload"
                chunks: list[bytes] = []
                size = 0
                while True:
                    chunk = await part.read_chunk(1 << 16)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size <= cap:
                        chunks.append(chunk)
                too_large = size > cap
                data = b"".join(chunks)
            else:
                await part.release()
        return purpose, filename, data, too_large

    def _file_or_404(self, request: web.Request) -> StoredFile | tuple[int, dict]:
        file_id = request.match_info["file_id"]
        stored = self.files.get(file_id)
        if stored is None:
            return self._openai_error(404, f"No such File object: {file_id}", "id")  # wording: assumption
        return stored

    async def openai_file_list(self, request: web.Request) -> Any:
        """``GET /v1/files?purpose=&limit=&after=&order=``: a cursor page (default newest first, 10,000)."""
        try:
            limit = int(request.query.get("limit", "10000"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 10000:
            return self._openai_error(400, f"Invalid 'limit': expected an integer between 1 and 10000, got "
                                      f"{request.query.get('limit')!r}.", "limit", "invalid_value")
        order = request.query.get("order", "desc")
        if order not in ("asc", "desc"):
            return self._openai_error(400, f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
                                      "order", "invalid_value")
        purpose = request.query.get("purpose")
        ordered = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
        if order == "desc":
            ordered.reverse()
        after = request.query.get("after")
        if after:
            ids = [f.id for f in ordered]
            ordered = ordered[ids.index(after) + 1:] if after in ids else []
        data = [f.object() for f in ordered[:limit]]
        return 200, {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                     "last_id": data[-1]["id"] if data else None, "has_more": len(ordered) > limit}

    async def openai_file(self, request: web.Request) -> Any:
        stored = self._file_or_404(request)
        return stored if isinstance(stored, tuple) else (200, stored.object())

    async def openai_file_delete(self, request: web.Request) -> Any:
        stored = self._file_or_404(request)
        if isinstance(stored, tuple):
            return stored
        del self.files[stored.id]
        return 200, {"object": "file", "deleted": True, "id": stored.id}

    async def openai_file_content(self, request: web.Request) -> Any:
        stored = self._file_or_404(request)
        if isinstance(stored, tuple):
            return stored
        return web.Response(body=stored.data, headers={
            "Content-Type": "application/octet-stream",
            "content-disposition": f'attachment; filename="{stored.filename}"',
        })

    async def openai_create(self, request: web.Request) -> Any:
        """``POST /v1/batches``: checks the parameters now; the file's lines while ``validating``."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._openai_error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return self._openai_error(400, "The request body must be a JSON object.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                return self._openai_error(400, f"Missing required parameter: '{name}'.", name,
                                          "missing_required_parameter")
        window = body["completion_window"]
        if window != "24h":
            return self._openai_error(400, f"Invalid value: '{window}'. Supported values are: '24h'.",
                                      "completion_window", "invalid_value")
        endpoint = body["endpoint"]
        if endpoint not in OPENAI_BATCH_ENDPOINTS:
            return self._openai_error(400, f"Invalid value: '{endpoint}'. Supported values are: "
                                      + " and ".join(f"'{e}'" for e in OPENAI_BATCH_ENDPOINTS)
                                      + " (the synthkd test server runs no other batch endpoint).",
                                      "endpoint", "invalid_value")
        metadata = body.get("metadata")
        problem = _metadata_problem(metadata)
        if problem is not None:
            return self._openai_error(400, problem[0], problem[1], problem[2])
        file_id = body["input_file_id"]
        stored = self.files.get(file_id)
        if stored is None:
            # curator #116 shows this text (with a project id) and param "file_id".
            return self._openai_error(400, f"Cannot find file {file_id}, or project does not have access to it.",
                                      "file_id")
        if stored.purpose != "batch" or stored.lines is None:
            return self._openai_error(400, f"File {file_id} has purpose '{stored.purpose}'; a batch needs a file "
                                      "uploaded with purpose 'batch'.", "input_file_id")  # wording: assumption
        items = [Item(obj["custom_id"] if isinstance(obj, dict) and isinstance(obj.get("custom_id"), str) else "", obj)
                 for _, obj in stored.lines]
        cfg = self.server.config
        now = time.time()
        batch = Batch("openai", "batch_" + secrets.token_hex(16), now, cfg.batch_seconds, items, "validating",
                      endpoint=endpoint, input_file_id=file_id, metadata=metadata,
                      expire_after=cfg.batch_expire_after_share, failed_rate=cfg.batch_failed_rate,
                      lines=stored.lines, max_requests=cfg.batch_max_requests or OPENAI_MAX_REQUESTS)
        self._submit(batch)
        return 200, self._openai_object(batch)

    def _openai_object(self, b: Batch) -> dict:
        """The Batch object, keys in the recorded order (no ``usage`` / ``model``: absent in the recordings)."""
        def at(name: str) -> int | None:
            value = b.times.get(name)
            return None if value is None else int(value)

        total = len(b.items) if b.validated else 0
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "errors": b.errors,
            "input_file_id": b.input_file_id,
            "completion_window": "24h",
            "status": b.status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "created_at": int(b.created),
            "in_progress_at": at("in_progress_at"),
            "expires_at": int(b.created) + _DAY,
            "finalizing_at": at("finalizing_at"),
            "completed_at": at("completed_at"),
            "failed_at": at("failed_at"),
            "expired_at": at("expired_at"),
            "cancelling_at": at("cancelling_at"),
            "cancelled_at": at("cancelled_at"),
            "request_counts": {"total": total, "completed": b.count("succeeded"), "failed": b.count("failed")},
            "metadata": b.metadata,
        }

    def _openai_batch(self, request: web.Request) -> Batch | tuple[int, dict]:
        batch_id = request.match_info["batch_id"]
        batch = self.batches.get(batch_id)
        if batch is None or batch.provider != "openai":
            return self._openai_error(404, f"No batch found with id '{batch_id}'.")
        return batch

    async def openai_get(self, request: web.Request) -> Any:
        batch = self._openai_batch(request)
        return batch if isinstance(batch, tuple) else (200, self._openai_object(batch))

    async def openai_cancel(self, request: web.Request) -> Any:
        batch = self._openai_batch(request)
        if isinstance(batch, tuple):
            return batch
        if batch.status in ("validating", "in_progress"):
            self.cancels += 1
            batch.status = "cancelling"
            batch.times["cancelling_at"] = time.time()
            batch.cancel.set()
        elif batch.status not in ("cancelling", "cancelled"):
            # wording: assumption (the recordings only cancel a validating batch)
            return self._openai_error(400, f"Cannot cancel a batch with status '{batch.status}'.")
        return 200, self._openai_object(batch)

    async def openai_list(self, request: web.Request) -> Any:
        """``GET /v1/batches?after=&limit=``: newest first, a cursor page."""
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 100:
            return self._openai_error(400, f"Invalid 'limit': expected an integer between 1 and 100, got "
                                      f"{request.query.get('limit')!r}.", "limit", "invalid_value")
        ordered = [b for b in reversed(list(self.batches.values())) if b.provider == "openai"]
        after = request.query.get("after")
        if after:
            ids = [b.id for b in ordered]
            ordered = ordered[ids.index(after) + 1:] if after in ids else []
        page = ordered[:limit]
        data = [self._openai_object(b) for b in page]
        return 200, {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                     "last_id": data[-1]["id"] if data else None, "has_more": len(ordered) > limit}

    def _openai_validate(self, b: Batch) -> list[dict]:
        """The ``errors.data`` of a bad input file (codes from reference §2.5); [] when it is good."""
        lines = b.lines  # kept with the batch: deleting the input file afterwards changes nothing
        errors: list[dict] = []

        def err(code: str, message: str, line: int | None = None, param: str | None = None) -> None:
            if len(errors) < 100:
                errors.append({"code": code, "line": line, "message": message, "param": param})

        cap = b.max_requests
        if not lines:
            err("empty_file", "The input file is empty.")
        elif len(lines) > cap:
            err("too_many_tasks", f"The input file has {len(lines)} requests; a batch takes at most {cap}.")
        seen: set[str] = set()
        model: str | None = None
        for number, obj in lines:
            if not isinstance(obj, dict):
                err("invalid_json_line", "This line is not a JSON object.", number)
                continue
            cid = obj.get("custom_id")
            if not isinstance(cid, str) or not cid:
                err("missing_required_parameter", "Missing required parameter: 'custom_id'.", number, "custom_id")
            elif cid in seen:
                err("duplicate_custom_id", f"The custom_id '{cid}' is not unique in the input file.", number,
                    "custom_id")
            else:
                seen.add(cid)
            if obj.get("method") != "POST":
                err("invalid_method", "'method' must be 'POST'.", number, "method")
            if obj.get("url") != b.endpoint:
                err("url_mismatch", f"The url '{obj.get('url')}' does not match the batch's endpoint "
                    f"'{b.endpoint}'.", number, "url")
            body = obj.get("body")
            if not isinstance(body, dict):
                err("missing_required_parameter", "Missing required parameter: 'body'.", number, "body")
                continue
            line_model = body.get("model")
            if model is None:
                model = line_model
            elif line_model != model:
                err("model_mismatch", f"The model '{line_model}' differs from the model '{model}' of the first "
                    "line: an input file may only hold requests to one model.", number, "body.model")
        return errors

    async def _run_openai(self, b: Batch) -> None:
        loop = asyncio.get_running_loop()
        t = b.seconds
        if await self._wait_until(b, loop.time() + 0.1 * t):
            await self._openai_cancelled(b)
            return
        problems = self._openai_validate(b)
        if problems:
            b.errors = {"object": "list", "data": problems}
            b.status = "failed"
            b.times["failed_at"] = time.time()
            return
        b.validated = True
        b.status = "in_progress"
        b.times["in_progress_at"] = time.time()
        n = len(b.items)
        expire_at = self._expire_index(b)
        start = loop.time()
        for index, item in enumerate(b.items):
            if index == expire_at:
                await self._openai_end(b, "expired")
                return
            if await self._wait_until(b, start + 0.8 * t * (index + 1) / n):
                await self._openai_cancelled(b)
                return
            await self._openai_execute(b, item)
        if b.cancel.is_set():  # asked while the last item was being answered
            await self._openai_cancelled(b)
            return
        b.status = "finalizing"
        b.times["finalizing_at"] = time.time()
        await asyncio.sleep(0.1 * t)
        await self._openai_end(b, "completed")

    async def _openai_execute(self, b: Batch, item: Item) -> None:
        if item.fail:
            status, body = 500, {"error": {"message": _SERVER_ERROR, "type": "server_error", "param": None,
                                           "code": None}}
        else:
            status, body, model, charge = await self.server._batch_openai_item(item.body["body"], b.endpoint)
            if charge is not None:
                self.server.ledger.charge(model, batch=True, **charge)
        item.line = {"id": "batch_req_" + secrets.token_hex(16), "custom_id": item.custom_id,
                     "response": {"status_code": status, "request_id": secrets.token_hex(16), "body": body},
                     "error": None}
        self._settle(item, "succeeded" if status == 200 else "failed")

    async def _openai_cancelled(self, b: Batch) -> None:
        await asyncio.sleep(0.1 * b.seconds)
        await self._openai_end(b, "cancelled")

    async def _openai_end(self, b: Batch, status: str) -> None:
        """Write the output / error files and enter ``status`` (completed, expired or cancelled)."""
        code, message, fate = (("batch_expired", _EXPIRED_MESSAGE, "expired") if status == "expired"
                               else ("batch_cancelled", _CANCELLED_MESSAGE, "cancelled"))
        output: list[bytes] = []
        errors: list[bytes] = []
        for item in b.items:
            if item.state == "pending":
                if not b.validated:
                    continue  # cancelled while validating: nothing ran, nothing to report
                item.line = {"id": "batch_req_" + secrets.token_hex(16), "custom_id": item.custom_id,
                             "response": None, "error": {"code": code, "message": message}}
                self._settle(item, fate)
            assert item.line is not None
            (output if item.state == "succeeded" else errors).append(orjson.dumps(item.line))
        now = int(time.time())
        if output:
            b.output_file_id = self._result_file(b, "output", output, now)
        if errors:
            b.error_file_id = self._result_file(b, "error", errors, now)
        b.status = status
        b.times[f"{status}_at"] = time.time()

    def _result_file(self, b: Batch, kind: str, lines: list[bytes], now: int) -> str:
        stored = StoredFile("file-" + _rand(22), "batch_output", f"{b.id}_{kind}.jsonl",
                            b"\n".join(lines) + b"\n", now)
        self.files[stored.id] = stored
        return stored.id

    # ================================================================ Anthropic

    async def anthropic_create(self, request: web.Request) -> Any:
        """``POST /v1/messages/batches``: the envelope is checked now, each ``params`` while processing."""
        cfg = self.server.config
        cap_bytes = cfg.batch_max_bytes or ANTHROPIC_MAX_BYTES
        raw, too_large = await self._read_capped(request, cap_bytes)
        if too_large:
            return self._anthropic_error(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._anthropic_error(400, "invalid_request_error", "Request body is not valid JSON.")
        if not isinstance(body, dict):
            return self._anthropic_error(400, "invalid_request_error", "Request body must be a JSON object.")
        requests_ = body.get("requests")
        if requests_ is None:
            return self._anthropic_error(400, "invalid_request_error", "requests: Field required")
        if not isinstance(requests_, list):
            return self._anthropic_error(400, "invalid_request_error", "requests: Input should be a valid list")
        cap = cfg.batch_max_requests or ANTHROPIC_MAX_REQUESTS
        if not requests_:
            return self._anthropic_error(400, "invalid_request_error",
                                         "requests: List should have at least 1 item after validation, not 0")
        if len(requests_) > cap:
            return self._anthropic_error(400, "invalid_request_error", f"requests: List should have at most {cap} "
                                         f"items after validation, not {len(requests_)}")
        seen: set[str] = set()
        items: list[Item] = []
        for i, entry in enumerate(requests_):
            if not isinstance(entry, dict):
                return self._anthropic_error(400, "invalid_request_error",
                                             f"requests.{i}: Input should be a valid dictionary")
            cid = entry.get("custom_id")
            if not isinstance(cid, str):
                return self._anthropic_error(400, "invalid_request_error", f"requests.{i}.custom_id: Field required")
            if len(cid) > 64:  # verbatim: anthropics/anthropic-sdk-python #984
                return self._anthropic_error(400, "invalid_request_error",
                                             f"requests.{i}.custom_id: String should have at most 64 characters")
            if not cid or not set(cid) <= _CUSTOM_ID_CHARS:
                return self._anthropic_error(400, "invalid_request_error", f"requests.{i}.custom_id: String should "
                                             f"match pattern '{_CUSTOM_ID_PATTERN}'")
            if cid in seen:  # wording: assumption
                return self._anthropic_error(400, "invalid_request_error", f"requests.{i}.custom_id: Duplicate "
                                             f"custom_id '{cid}'; custom_id values must be unique within a batch")
            seen.add(cid)
            if not isinstance(entry.get("params"), dict):
                return self._anthropic_error(400, "invalid_request_error", f"requests.{i}.params: Field required")
            items.append(Item(cid, entry["params"]))
        batch = Batch("anthropic", "msgbatch_01" + _rand(22), time.time(), cfg.batch_seconds, items, "in_progress",
                      expire_after=cfg.batch_expire_after_share, failed_rate=cfg.batch_failed_rate, validated=True)
        self._submit(batch)
        return 200, self._anthropic_object(batch)

    def _anthropic_object(self, b: Batch) -> dict:
        """The MessageBatch, keys in the recorded order; counts other than ``processing`` stay 0 until ended."""
        ended = b.status == "ended"
        counts = {"processing": 0 if ended else len(b.items), "succeeded": 0, "errored": 0, "canceled": 0,
                  "expired": 0}
        if ended:
            counts.update(succeeded=b.count("succeeded"), errored=b.count("failed"), canceled=b.count("cancelled"),
                          expired=b.count("expired"))
        cancel_at = b.times.get("cancelling_at")
        return {
            "id": b.id,
            "type": "message_batch",
            "processing_status": b.status,
            "request_counts": counts,
            "ended_at": _rfc3339(b.times["ended_at"]) if ended else None,
            "created_at": _rfc3339(b.created),
            "expires_at": _rfc3339(b.created + _DAY),
            "archived_at": None,
            "cancel_initiated_at": None if cancel_at is None else _rfc3339(cancel_at),
            "results_url": f"{self.server.url}/v1/messages/batches/{b.id}/results" if ended else None,
        }

    def _anthropic_batch(self, request: web.Request) -> Batch | tuple[int, dict]:
        batch_id = request.match_info["batch_id"]
        batch = self.batches.get(batch_id)
        if batch is None or batch.provider != "anthropic":
            return self._anthropic_error(404, "not_found_error", f"Message batch {batch_id} not found.")  # assumption
        return batch

    def _anthropic_reply(self, batch: Batch) -> web.Response:
        """A MessageBatch reply; while in progress with ``retry-after: 10`` as every recorded poll."""
        headers = {"retry-after": "10"} if batch.status == "in_progress" else None
        return self.server._json(self._anthropic_object(batch), headers=headers)

    async def anthropic_get(self, request: web.Request) -> Any:
        batch = self._anthropic_batch(request)
        return batch if isinstance(batch, tuple) else self._anthropic_reply(batch)

    async def anthropic_cancel(self, request: web.Request) -> Any:
        batch = self._anthropic_batch(request)
        if isinstance(batch, tuple):
            return batch
        if batch.status == "in_progress":
            self.cancels += 1
            batch.status = "canceling"
            batch.times["cancelling_at"] = time.time()
            batch.cancel.set()
        return 200, self._anthropic_object(batch)  # canceling / ended: unchanged (assumption)

    async def anthropic_delete(self, request: web.Request) -> Any:
        batch = self._anthropic_batch(request)
        if isinstance(batch, tuple):
            return batch
        if batch.status != "ended":  # wording: assumption
            return self._anthropic_error(400, "invalid_request_error", f"Message batch {batch.id} cannot be deleted "
                                         "before it has ended; cancel it first.")
        del self.batches[batch.id]
        return 200, {"id": batch.id, "type": "message_batch_deleted"}

    async def anthropic_list(self, request: web.Request) -> Any:
        """``GET /v1/messages/batches?limit=&after_id=&before_id=``: newest first."""
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 1000:
            return self._anthropic_error(400, "invalid_request_error",
                                         "limit: Input should be greater than or equal to 1 and less than or equal "
                                         "to 1000")
        ordered = [b for b in reversed(list(self.batches.values())) if b.provider == "anthropic"]
        ids = [b.id for b in ordered]
        after, before = request.query.get("after_id"), request.query.get("before_id")
        if after:
            ordered = ordered[ids.index(after) + 1:] if after in ids else []
            more = len(ordered) > limit
            page = ordered[:limit]
        elif before:
            ordered = ordered[:ids.index(before)] if before in ids else []
            more = len(ordered) > limit
            page = ordered[-limit:]
        else:
            more = len(ordered) > limit
            page = ordered[:limit]
        data = [self._anthropic_object(b) for b in page]
        return 200, {"data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
                     "last_id": data[-1]["id"] if data else None}

    async def anthropic_results(self, request: web.Request) -> Any:
        batch = self._anthropic_batch(request)
        if isinstance(batch, tuple):
            return batch
        if batch.status != "ended":  # wording: assumption
            return self._anthropic_error(400, "invalid_request_error", f"Message batch {batch.id} has not ended yet; "
                                         "its results are available once processing_status is 'ended'.")
        body = b"".join(orjson.dumps(item.line) + b"\n" for item in batch.items if item.line is not None)
        response = web.Response(body=body, headers={
            "content-disposition": f'attachment; filename="{batch.id}_results.jsonl"'})
        return response

    async def _run_anthropic(self, b: Batch) -> None:
        loop = asyncio.get_running_loop()
        t = b.seconds
        n = len(b.items)
        expire_at = self._expire_index(b)
        start = loop.time()
        cancelled = False
        for index, item in enumerate(b.items):
            if index == expire_at:
                break
            if await self._wait_until(b, start + 0.9 * t * (index + 1) / n):
                cancelled = True
                break
            await self._anthropic_execute(item)
        if not cancelled and expire_at is None:
            cancelled = await self._wait_until(b, start + t) or b.cancel.is_set()
        if cancelled:
            await asyncio.sleep(0.1 * t)
        for item in b.items:
            if item.state == "pending":
                kind = "canceled" if cancelled else "expired"
                item.line = {"custom_id": item.custom_id, "result": {"type": kind}}
                self._settle(item, "cancelled" if cancelled else "expired")
        b.status = "ended"
        b.times["ended_at"] = time.time()

    async def _anthropic_execute(self, item: Item) -> None:
        if item.fail:
            result: dict = {"type": "errored", "error": {"type": "error", "error": {
                "type": "api_error", "message": "Internal server error"}, "request_id": None}}
        else:
            kind, payload, model, charge = await self.server._batch_anthropic_item(item.body)
            if charge is not None:
                self.server.ledger.charge(model, batch=True, **charge)
            result = {"type": kind, "message" if kind == "succeeded" else "error": payload}
        item.line = {"custom_id": item.custom_id, "result": result}
        self._settle(item, "succeeded" if result["type"] == "succeeded" else "failed")
