"""The batch executor: one teacher's requests through the provider's Batch API, nothing lost or paid twice.

A *pass* is one run of the caller's requests through :meth:`BatchExecutor.stream`:

* a request the cache answers is yielded at once (as online);
* a request already in a live batch (this run's or an earlier, killed one's) is *deferred*: never
  written into a second batch;
* a request that failed in collected batches is resubmitted while it has retries left (``--batch-
  retries``) and the failure was not the request's own fault; otherwise its last error is yielded (the
  row goes to the rejects);
* any other request is written into a batch file (the body built by the teacher's own
  ``_request_body``; ``custom_id`` = its cache key) and deferred, unless the budget, counted at batch
  prices with every answer as long as ``max_tokens``, would be passed: then nothing more is planned and
  ``budget_exhausted`` is set, before anything is uploaded.

At the end of a pass the batch files become durable ``planned`` records (:mod:`.journal`) and are
uploaded and submitted, each step recorded before it is taken.  The caller then waits
(:meth:`BatchExecutor.wait_all`: polls with progress, collects every ended batch into the cache) and
runs the next pass, or exits 5 with ``--no-wait`` (:mod:`.passes`).  A pass starts by finishing what a
killed process left: submissions it may have made are looked up on the provider before anything is
created again, and ended batches are collected.

Collecting reads the output and error files (OpenAI) or the results stream (Anthropic) line by line:
each answer is parsed by the teacher's own ``_parse_reply`` and stored in the cache at its batch price;
each failure goes to ``<batch>.failed.jsonl`` with whether it is worth resubmitting.  A batch that
expired or was cancelled with part of its requests done keeps those answers; the rest are resubmitted.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncGenerator, AsyncIterable, AsyncIterator

import orjson

from synthkd.teachers.base import (
    Teacher,
    TeacherConfigError,
    TeacherFatalError,
    TeacherRequest,
    TeacherResult,
    TeacherStorageError,
)
from synthkd.teachers.batch.journal import BatchJournal, BatchRecord, key_id
from synthkd.teachers.batch.providers import (
    CONTROL_RETRIES,
    AnthropicBatchAPI,
    BatchStatus,
    ControlError,
    Http,
    OpenAIBatchAPI,
    TransientControlError,
)
from synthkd.teachers.batch.spool import BatchSpool, Limits
from synthkd.teachers.errors import MalformedResponse

if TYPE_CHECKING:
    from synthkd.teachers.factory import TeacherSpec
    from synthkd.teachers.openai_compat import OpenAICompatibleTeacher

log = logging.getLogger("synthkd.batch")

#: body fields read again when a batch's answers are parsed (answer length limit, structured output)
_META_FIELDS = ("max_tokens", "max_completion_tokens", "tool_choice", "response_format")
#: a progress line at least this often while waiting (seconds), and when the counts change (at most
#: every _PROGRESS_MIN_S)
_PROGRESS_EVERY_S = 60.0
_PROGRESS_MIN_S = 5.0


def attach_batch(teacher: Teacher, spec: TeacherSpec) -> None:
    """Put ``teacher`` in batch mode (``--batch``); a teacher that cannot be is a setting error (exit 2)."""
    import sys

    from synthkd.teachers.openai_compat import OpenAICompatibleTeacher

    if not isinstance(teacher, OpenAICompatibleTeacher) or not teacher.calls_model:
        raise TeacherConfigError(f"--batch needs an API teacher (OpenAI or Anthropic); {spec.teacher!r} is not one")
    if teacher.cache is None:
        raise TeacherConfigError("--batch keeps every answer in the request cache until a pass reads it: "
                                 "drop --no-cache")
    wait = sys.stdout.isatty() if spec.wait is None else spec.wait
    teacher.batch = BatchExecutor(teacher, wait=wait, retries=spec.batch_retries, poll_s=spec.batch_poll,
                                  batch_max_requests=spec.batch_max_requests)


class BatchExecutor:
    """Batch mode of one API teacher (see the module docstring)."""

    def __init__(self, teacher: OpenAICompatibleTeacher, *, wait: bool, retries: int = 2, poll_s: float = 30.0,
                 batch_max_requests: int | None = None) -> None:
        from synthkd.teachers.anthropic import AnthropicTeacher

        assert teacher.cache is not None
        self.t = teacher
        headers = {k: v for k, v in teacher._headers.items() if k.lower() != "content-type"}
        http = Http(teacher._get_session, headers, teacher._scrub, teacher.base_url)
        self.api: OpenAIBatchAPI | AnthropicBatchAPI = (
            AnthropicBatchAPI(http) if isinstance(teacher, AnthropicTeacher) else OpenAIBatchAPI(http))
        base = self.api.limits
        self.limits = Limits(min(batch_max_requests or base.max_requests, base.max_requests), base.max_bytes)
        self.journal = BatchJournal(teacher.cache.path)
        self.wait = wait
        self.retries = retries
        self.poll_s = poll_s
        self.price = teacher.price.batch() if teacher.price is not None else None
        self.label = ""
        #: requests of this pass that wait for a batch, over every stream of the pass (the caller runs
        #: another pass when > 0, and sets it back to 0 before it: :mod:`.passes`)
        self.deferred = 0
        #: estimated cost of the batches this run submitted and has not collected yet (the budget)
        self._outstanding: dict[str, float] = {}
        self.submitted_batches = 0
        self.submitted_requests = 0
        self.collected_batches = 0

    # ================================================================== one pass
    async def stream(self, requests: AsyncIterable[TeacherRequest]) -> AsyncGenerator[TeacherResult, None]:
        t = self.t
        cache = t.cache
        assert cache is not None
        # the budget is looked at afresh: what the collected answers really cost replaces their estimate
        t.budget_exhausted = False
        await self.sync()  # (``deferred`` counts over the whole pass: a method may stream several times)
        live = self.journal.live_keys(self.api.name, t.base_url)
        failures = self.journal.failures()
        spool = BatchSpool(self.journal, provider=self.api.name, model=t.model, base_url=t.base_url,
                           limits=self.limits, label=self.label, overhead=self.api.overhead)
        finished = False
        deferred_before = self.deferred
        try:
            async for req in requests:
                for i in range(req.samples):
                    one = req.sample(i) if req.samples > 1 else req
                    key = t.cache_key(one)
                    hit = cache.get(key)
                    if hit is not None:
                        t.stats.done += 1
                        t.stats.cached += 1
                        if hit.get("error"):
                            t.stats.failed += 1
                        yield t._result_from_cache(one, hit)
                        continue
                    kid = key_id(key)
                    if kid in live:
                        self.deferred += 1
                        yield _deferred(one)
                        continue
                    failed = failures.get(key)
                    if failed is not None and (not failed[2] or failed[0] > self.retries):
                        t.stats.done += 1
                        t.stats.failed += 1
                        yield TeacherResult(request=one, text=None, attempts=failed[0],
                                            error=f"{failed[1]} (failed in {failed[0]} batch(es))")
                        continue
                    send = _one_by_one(one, i) if req.samples > 1 else one
                    url, body = self._body(send)
                    est = self._estimate(send, body)
                    if self._over_budget(spool, est):
                        t.budget_exhausted = True
                        break
                    spool.add(self.api.endpoint(url), self.api.line(key, url, body), est)
                    live.add(kid)
                    self.deferred += 1
                    yield _deferred(one)
                if t.budget_exhausted:
                    break
            finished = True
        finally:
            if not finished:
                spool.discard()
        records = spool.close()
        if records:
            await self.submit(records)
        if self.deferred > deferred_before:
            log.info(f"batch: {self.deferred - deferred_before} request(s) wait for a batch ({spool.requests} "
                     f"submitted now in {len(records)} batch(es))")

    def _body(self, req: TeacherRequest) -> tuple[str, dict[str, Any]]:
        """URL and body exactly as the teacher sends it online (``_complete_uncached``)."""
        t = self.t
        params = {**t.default_params, **req.params, **t._structured_params(req)}
        clash = sorted(set(t.extra_body) & set(req.params))
        if clash:
            raise TeacherConfigError(
                f"--param {clash[0]}={t.extra_body[clash[0]]!r} collides with the {clash[0]}={req.params[clash[0]]!r} "
                "that this job sends itself: drop the --param (or the extra_body key), or set it with the job's own option")
        body: dict[str, Any]
        url, body = t._request_body(req, params, 1)
        body.pop("stream", None)  # batches do not stream
        return url, body

    def _estimate(self, req: TeacherRequest, body: dict[str, Any]) -> float | None:
        """An upper estimate of what the answer costs at batch prices: the prompt at ~4 characters a
        token, the answer as long as ``max_tokens`` allows (256 when the request sets none)."""
        if self.price is None:
            return None
        if req.messages is not None:
            chars = sum(len(m.get("content") or "") if isinstance(m.get("content"), str) else 200 for m in req.messages)
        else:
            chars = len(req.prompt or "")
        out = int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)
        return self.price.cost(chars // 4 + 4, out)

    def _over_budget(self, spool: BatchSpool, est: float | None) -> bool:
        t = self.t
        if t.max_cost is None or est is None:
            return False
        committed = t.stats.cost_usd + sum(self._outstanding.values()) + (spool.est_cost_usd or 0.0)
        return committed + est > t.max_cost

    # ================================================================== submit
    async def submit(self, records: list[BatchRecord]) -> None:
        async with self._locked():
            for i, rec in enumerate(records):
                rec = records[i] = self.journal.load(rec.id)  # as on disk: another process may have moved it on
                if rec.live and rec.state != "submitted":
                    await self._advance(rec)
        n = sum(r.requests for r in records)
        log.info(f"batch: submitted {n} request(s) in {len(records)} batch(es): "
                 + ", ".join(str(r.batch_id) for r in records))

    async def _advance(self, rec: BatchRecord) -> None:
        """Take ``rec`` from where it is to ``submitted``, recording each step before taking it."""
        j = self.journal
        path = j.requests_path(rec.id)
        try:
            if rec.state == "submitting":  # the create call may have reached the provider: look first
                found = await self._find(rec)
                if found is not None:
                    self._submitted(rec, found, adopted=True)
                    return
                rec.state = "uploaded" if rec.file_id or isinstance(self.api, AnthropicBatchAPI) else "planned"
                j.save(rec)
            if rec.state in ("planned", "uploading"):
                if not path.exists():
                    raise TeacherStorageError(f"{path}: the request file of batch {rec.id} is missing")
                if isinstance(self.api, OpenAIBatchAPI):
                    rec.state = "uploading"
                    j.save(rec)
                    rec.file_id = await self.api.upload(rec, path)
                rec.state = "uploaded"
                j.save(rec)
            if rec.state == "uploaded":
                rec.state = "submitting"
                rec.submitting_at = time.time()
                j.save(rec)
                delay = 0.5
                for attempt in range(CONTROL_RETRIES + 1):
                    try:
                        self._submitted(rec, await self.api.create(rec, path))
                        return
                    except TransientControlError:
                        # a 5xx or a cut connection: the batch may exist (a lost reply); never create it
                        # twice: look it up, and only when it is not there, create it again
                        found = await self._find(rec)
                        if found is not None:
                            self._submitted(rec, found, adopted=True)
                            return
                        if attempt == CONTROL_RETRIES:
                            raise
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 30.0)
        except ControlError as exc:
            raise TeacherFatalError(f"batch {rec.id}: {exc} (recorded in {j.record_path(rec.id)}; rerun to try again, "
                                    "or `synthkd batch cancel` to drop it)") from None

    async def _find(self, rec: BatchRecord) -> BatchStatus | None:
        """The provider's batch for ``rec`` if its create call got through (see the providers' ``find``)."""
        if isinstance(self.api, AnthropicBatchAPI):
            known = {r.batch_id for r in self.journal.records() if r.batch_id and r.id != rec.id}
            return await self.api.find(rec, {k for k in known if k})
        return await self.api.find(rec)

    def _submitted(self, rec: BatchRecord, st: BatchStatus, adopted: bool = False) -> None:
        rec.batch_id = st.batch_id
        rec.state = "submitted"
        rec.status = st.status
        rec.submitted_at = rec.submitted_at or time.time()
        self.journal.save(rec)
        self._outstanding[rec.id] = rec.est_cost_usd or 0.0
        if not adopted:
            self.submitted_batches += 1
            self.submitted_requests += rec.requests
            self.t.stats.attempts += rec.requests
            self.t.stats.batched += rec.requests
        else:
            log.info(f"batch {rec.id}: found on the provider as {st.batch_id} (submitted before a crash)")

    # ================================================================== poll and collect
    def _mine(self, rec: BatchRecord) -> bool:
        return rec.provider == self.api.name and rec.base_url == self.t.base_url

    async def sync(self) -> list[BatchRecord]:
        """Finish what an earlier process left (submissions), poll every live batch once, collect those
        that ended.  Returns the batches still live."""
        live: list[BatchRecord] = []
        async with self._locked():
            self.journal.tidy()
            for rec in self.journal.records():
                if not rec.live or not self._mine(rec):
                    continue
                if rec.state != "submitted":
                    await self._advance(rec)
                assert rec.batch_id is not None
                try:
                    st = await self.api.get(rec.batch_id)
                except ControlError as exc:
                    log.warning(f"batch {rec.batch_id}: cannot poll it now ({exc}); trying again later")
                    live.append(rec)
                    continue
                changed = (st.status, st.counts) != (rec.status, rec.counts)
                rec.status, rec.counts = st.status, st.counts
                if st.ended:
                    await self.collect(rec, st)
                else:
                    if changed:
                        self.journal.save(rec)
                    live.append(rec)
        return live

    def _request_meta(self, rec: BatchRecord) -> dict[int, dict[str, Any]]:
        """key_id -> the body fields parsing needs, for every request of the batch (the same fields are
        one shared dict: memory is a few dozen bytes per request, not a body)."""
        out: dict[int, dict[str, Any]] = {}
        shared: dict[bytes, dict[str, Any]] = {}
        path = self.journal.requests_path(rec.id)
        with open(path, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                d = orjson.loads(line)
                body = d.get("body") if "body" in d else d.get("params")
                meta = {k: body[k] for k in _META_FIELDS if k in body}
                blob = orjson.dumps(meta, option=orjson.OPT_SORT_KEYS)
                out[key_id(str(d["custom_id"]))] = shared.setdefault(blob, meta)
        return out

    async def collect(self, rec: BatchRecord, st: BatchStatus) -> None:
        """Every answer of an ended batch into the cache, every failure into its failed file; then the
        record says ``collected``.  Killed halfway, a rerun collects it again (cache writes are
        idempotent, the failed file is rewritten whole)."""
        t = self.t
        cache = t.cache
        assert cache is not None
        meta = self._request_meta(rec)
        chat = rec.endpoint != "/v1/completions"
        seen: set[int] = set()
        ok = failed = 0
        cost_total = 0.0
        failed_path = self.journal.failed_path(rec.id)
        tmp = failed_path.with_name(failed_path.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as fails:
            def fail(key: str, error: str, retry: bool) -> None:
                nonlocal failed
                failed += 1
                fails.write(orjson.dumps({"key": key, "error": t._scrub(error), "retry": retry}) + b"\n")
                if t.journal is not None:
                    t.journal.sent(key)
                    t.journal.failed(key)

            try:
                async for item in self.api.results(st):
                    kid = key_id(item.key)
                    if kid not in meta or kid in seen:
                        continue  # not ours, or a repeated line
                    seen.add(kid)
                    if item.body is None:
                        fail(item.key, item.error or "failed", item.retry)
                        continue
                    try:
                        reply = t._parse_reply(item.body, chat, meta[kid])
                    except MalformedResponse as exc:
                        fail(item.key, f"MalformedResponse: {exc}", True)
                        continue
                    cost_total += self._store(item.key, reply, structured=t._sent_structured(meta[kid]))
                    ok += 1
            except ControlError as exc:
                log.warning(f"batch {rec.batch_id}: cannot download its results now ({exc}); trying again later")
                tmp.unlink(missing_ok=True)
                return
            why = f"batch {rec.batch_id} {st.status}" + (f": {st.errors}" if st.errors else "")
            if len(seen) < len(meta):
                for key in self.journal.keys(rec):  # the file again: the missing ones by their real key
                    if key_id(key) not in seen:
                        fail(key, f"not in the results ({why})", True)
            fails.flush()
            os.fsync(fails.fileno())
        os.replace(tmp, failed_path)
        rec.state = "collected"
        rec.collected_at = time.time()
        rec.succeeded, rec.failed, rec.cost_usd = ok, failed, round(cost_total, 10)
        self.journal.save(rec)
        self.journal.requests_path(rec.id).unlink(missing_ok=True)
        self._outstanding.pop(rec.id, None)
        self.collected_batches += 1
        log.info(f"batch {rec.batch_id} {st.status}: {ok} answer(s) collected into the cache, {failed} failed"
                 + (f" (${cost_total:.6f} at batch prices)" if self.price is not None else ""))

    def _store(self, key: str, reply: Any, *, structured: bool) -> float:
        """One answer into the cache at its batch price; counted in the stats and the ledger."""
        t = self.t
        assert t.cache is not None
        choice = reply.choices[0] if reply.choices else None
        usage = reply.usage
        cost = self.price.cost_of(usage) if self.price is not None else None
        if t.journal is not None:
            t.journal.sent(key)
            t.journal.answered(key, usage, cost)
        t.stats.add_billed(usage, cost)
        from synthkd.teachers.openai_compat import cache_entry

        entry = cache_entry(choice, usage, cost, reply.model, structured=structured, batch=True)
        try:
            t.cache.put(key, t.model, entry)
        except (sqlite3.Error, OSError) as exc:
            raise TeacherStorageError(f"cannot write the request cache {t.cache.path}: {exc}; the batch stays "
                                      "uncollected: make room, then rerun to collect it") from None
        return cost or 0.0

    # ================================================================== wait
    async def wait_all(self) -> None:
        """Poll the live batches with a progress line (done / failed per batch, elapsed, ETA) and collect
        each one as it ends; return when none is live."""
        t0 = time.monotonic()
        first_done: int | None = None
        last_line, last_at = "", 0.0
        while True:
            live = await self.sync()
            if not live:
                log.info(f"batch: every batch collected after {_dur(time.monotonic() - t0)}")
                return
            total = sum(r.counts.get("total", 0) or sum(r.counts.values()) or r.requests for r in live)
            done = sum(done_count(r) for r in live)
            first_done = done if first_done is None else first_done
            elapsed = time.monotonic() - t0
            rate = (done - first_done) / elapsed if elapsed > 0 else 0.0
            eta = f"ETA {_dur((total - done) / rate)}" if rate > 0 else "ETA unknown"
            parts = [f"{r.batch_id}: {done_count(r)}/{r.requests} done, {failed_count(r)} failed ({r.status})" for r in live]
            line = f"batch: waiting for {len(live)} batch(es): " + "; ".join(parts[:5]) + (
                f"; +{len(parts) - 5} more" if len(parts) > 5 else "")
            now = time.monotonic()
            if not last_line or (line != last_line and now - last_at >= _PROGRESS_MIN_S) \
                    or now - last_at >= _PROGRESS_EVERY_S:
                log.info(f"{line}; elapsed {_dur(elapsed)}, {eta}")
                last_line, last_at = line, now
            await asyncio.sleep(self.poll_s)

    async def cancel_all(self) -> list[BatchRecord]:
        """Cancel every live batch of this teacher's provider; those never submitted are abandoned."""
        out = []
        async with self._locked():
            for rec in self.journal.records():
                if not rec.live or not self._mine(rec):
                    continue
                if rec.state == "submitting":
                    found = await self._find(rec)
                    if found is not None:
                        rec.batch_id, rec.state = found.batch_id, "submitted"
                if rec.state == "submitted" and rec.batch_id:
                    try:
                        st = await self.api.cancel(rec.batch_id)
                    except ControlError as exc:  # e.g. it ended meanwhile: the next run collects it
                        log.warning(f"batch {rec.batch_id}: not cancelled: {exc}")
                        continue
                    rec.status = st.status
                else:
                    rec.state = "abandoned"
                self.journal.save(rec)
                out.append(rec)
        return out

    def submitted_message(self) -> str:
        live = [r for r in self.journal.records() if r.live and self._mine(r)]
        n = sum(r.requests for r in live)
        return (f"{n} request(s) in {len(live)} batch(es) at the provider "
                f"({', '.join(str(r.batch_id) for r in live[:5])}{', ...' if len(live) > 5 else ''}); "
                f"rerun the same command to collect (see `synthkd batch status {self.t.cache.path if self.t.cache is not None else ''}`)")

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """The journal's lock, waited for without blocking the event loop."""
        fd = os.open(self.journal.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.05)
            yield
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def _deferred(req: TeacherRequest) -> TeacherResult:
    return TeacherResult(request=req, text=None, error="deferred: waiting for a batch", deferred=True)


def _one_by_one(sample: TeacherRequest, offset: int) -> TeacherRequest:
    from synthkd.teachers.openai_compat import one_by_one

    return one_by_one(sample, offset)


def done_count(rec: BatchRecord) -> int:
    c = rec.counts
    if "completed" in c:
        return int(c.get("completed", 0)) + int(c.get("failed", 0))
    return sum(int(v) for k, v in c.items() if k != "processing")


def failed_count(rec: BatchRecord) -> int:
    c = rec.counts
    if "completed" in c:
        return int(c.get("failed", 0))
    return int(c.get("errored", 0)) + int(c.get("expired", 0)) + int(c.get("canceled", 0))


def _dur(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s // 60:.0f}m{s % 60:02.0f}s"
    return f"{s // 3600:.0f}h{(s % 3600) // 60:02.0f}m"
