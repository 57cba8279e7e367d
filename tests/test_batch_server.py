"""The test server's Batch APIs (OpenAI Batch, Anthropic Message Batches), spoken to in raw HTTP.

The shapes asserted here (key order, id prefixes, timestamp types, headers) are those of real
recorded batch runs of Bespoke Curator (Apache-2.0): tests/fixtures/api_shapes/recorded_batches.json
(source and changes in that folder's README), and literals copied from it.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import cli_env, synthkd_cmd
from synthkd.testing.server import FaultConfig, TestServer, _build_parser

KEY = "sk-test-batch"
ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}

# Recorded key orders.
OPENAI_BATCH_KEYS = ["id", "object", "endpoint", "errors", "input_file_id", "completion_window", "status",
                     "output_file_id", "error_file_id", "created_at", "in_progress_at", "expires_at", "finalizing_at",
                     "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at", "request_counts",
                     "metadata"]
OPENAI_FILE_KEYS = ["object", "id", "purpose", "filename", "bytes", "created_at", "expires_at", "status",
                    "status_details"]
ANTHROPIC_BATCH_KEYS = ["id", "type", "processing_status", "request_counts", "ended_at", "created_at", "expires_at",
                        "archived_at", "cancel_initiated_at", "results_url"]
RFC3339_MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
RECORDED = json.loads((Path(__file__).parent / "fixtures" / "api_shapes" / "recorded_batches.json").read_text())


def _shape(value: Any) -> Any:
    """Keys (in order) and JSON types, recursively: what must match a recorded object."""
    if isinstance(value, dict):
        return [(key, _shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_shape(item) for item in value[:1]]
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def _line(cid: str, text: str, model: str = "gpt-4o-mini", url: str = "/v1/chat/completions", **extra: object) -> dict:
    return {"custom_id": cid, "method": "POST", "url": url,
            "body": {"model": model, "messages": [{"role": "user", "content": text}], **extra}}


def _jsonl(lines: list[dict]) -> bytes:
    return "\n".join(json.dumps(line) for line in lines).encode() + b"\n"


def _openai(srv: TestServer, key: str = KEY) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _upload(client: httpx.Client, data: bytes, purpose: str = "batch") -> httpx.Response:
    return client.post("/v1/files", data={"purpose": purpose}, files={"file": ("upload", data, "application/octet-stream")})


def _create(client: httpx.Client, file_id: str, endpoint: str = "/v1/chat/completions") -> dict:
    r = client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h",
                                         "metadata": {"run": "t"}})
    assert r.status_code == 200, r.text
    return r.json()


def _submit(client: httpx.Client, lines: list[dict], endpoint: str = "/v1/chat/completions") -> dict:
    r = _upload(client, _jsonl(lines))
    assert r.status_code == 200, r.text
    return _create(client, r.json()["id"], endpoint)


def _poll_openai(client: httpx.Client, batch_id: str, timeout: float = 20) -> tuple[dict, list[dict]]:
    """Poll to a final status; returns the final object and every object seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/v1/batches/{batch_id}")
        assert r.status_code == 200, r.text
        batch = r.json()
        seen.append(batch)
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return batch, seen
        time.sleep(0.02)
    raise AssertionError(f"batch {batch_id} did not end: {seen[-1]}")


def _content(client: httpx.Client, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    r = client.get(f"/v1/files/{file_id}/content")
    assert r.status_code == 200
    return [json.loads(line) for line in r.text.splitlines()]


def _anthropic(srv: TestServer, key: str = KEY) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers={"x-api-key": key, "anthropic-version": "2023-06-01"}, timeout=30)


def _request(cid: str, text: str, **params: object) -> dict:
    return {"custom_id": cid, "params": {"model": "claude-sonnet-4-5", "max_tokens": 256,
                                        "messages": [{"role": "user", "content": text}], **params}}


def _poll_anthropic(client: httpx.Client, batch_id: str, timeout: float = 20) -> tuple[dict, list[httpx.Response]]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/v1/messages/batches/{batch_id}")
        assert r.status_code == 200, r.text
        seen.append(r)
        if r.json()["processing_status"] == "ended":
            return r.json(), seen
        time.sleep(0.02)
    raise AssertionError(f"batch {batch_id} did not end: {seen[-1].json()}")


def _results(client: httpx.Client, batch: dict) -> dict[str, dict]:
    r = client.get(batch["results_url"])
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == f'attachment; filename="{batch["id"]}_results.jsonl"'
    return {row["custom_id"]: row["result"] for row in map(json.loads, r.text.splitlines())}


# ------------------------------------------------------------------------------------------ OpenAI


def test_openai_batch_end_to_end_matches_online_and_recorded_shapes() -> None:
    prompts = [f"question number {i} about batches" for i in range(6)]
    lines = [_line(f"req-{i}", p) for i, p in enumerate(prompts)]
    with TestServer(FaultConfig(api_key=KEY, batch_seconds=1.0)) as srv, _openai(srv) as client:
        up = _upload(client, _jsonl(lines))
        assert up.status_code == 200
        file_obj = up.json()
        assert list(file_obj) == OPENAI_FILE_KEYS
        assert re.fullmatch(r"file-[A-Za-z0-9]{22}", file_obj["id"])
        assert file_obj["bytes"] == len(_jsonl(lines)) and file_obj["filename"] == "upload"
        assert file_obj["expires_at"] is None and file_obj["status"] == "processed"
        got = client.get(f"/v1/files/{file_obj['id']}").json()
        assert got["expires_at"] == got["created_at"] + 2592000

        created = _create(client, file_obj["id"])
        assert client.delete(f"/v1/files/{file_obj['id']}").status_code == 200  # the batch keeps its input
        assert list(created) == OPENAI_BATCH_KEYS
        assert re.fullmatch(r"batch_[0-9a-f]{32}", created["id"])
        assert created["status"] == "validating" and created["errors"] is None
        assert created["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
        assert created["expires_at"] - created["created_at"] == 86400
        assert created["metadata"] == {"run": "t"}

        final, seen = _poll_openai(client, created["id"])
        statuses = [b["status"] for b in seen]
        assert "in_progress" in statuses and statuses[-1] == "completed"
        in_progress = [b["request_counts"] for b in seen if b["status"] == "in_progress"]
        assert all(c["total"] == 6 for c in in_progress)
        assert any(0 < c["completed"] < 6 for c in in_progress), in_progress  # visible progress while polling
        assert final["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
        for name in ("in_progress_at", "finalizing_at", "completed_at"):
            assert isinstance(final[name], int)
        assert final["error_file_id"] is None

        out = client.get(f"/v1/files/{final['output_file_id']}/content")
        assert out.headers["content-type"] == "application/octet-stream"
        assert out.headers["content-disposition"] == f'attachment; filename="{final["id"]}_output.jsonl"'
        rows = [json.loads(line) for line in out.text.splitlines()]
        assert [r["custom_id"] for r in rows] == [f"req-{i}" for i in range(6)]
        for row in rows:
            assert list(row) == ["id", "custom_id", "response", "error"] and row["error"] is None
            assert re.fullmatch(r"batch_req_[0-9a-f]{32}", row["id"])
            assert re.fullmatch(r"[0-9a-f]{32}", row["response"]["request_id"])  # no req_ prefix (recordings)
            assert row["response"]["status_code"] == 200

        batch_stats = srv.stats()
        # The same bodies online give the same message and usage.
        for line, row in zip(lines, rows):
            online = client.post("/v1/chat/completions", json=line["body"]).json()
            body = row["response"]["body"]
            assert body["object"] == "chat.completion"
            assert body["choices"] == online["choices"] and body["usage"] == online["usage"]
        stats = srv.stats()

    assert batch_stats["batch"]["files_uploaded"] == 1 and batch_stats["batch"]["batches_created"] == 1
    assert batch_stats["batch"]["requests_submitted"] == 6
    assert batch_stats["batch"]["submitted_by_custom_id"] == {f"req-{i}": 1 for i in range(6)}
    assert batch_stats["batch"]["resubmitted_ids"] == []
    # Batch items at half the online price: the 6 online twins cost exactly twice the batch.
    assert batch_stats["billed_batch"]["requests"] == 6
    online_usd = stats["billed_usd"] - batch_stats["billed_usd"]
    assert online_usd > 0
    assert stats["billed_batch_usd"] == pytest.approx(online_usd / 2)
    assert stats["billed"]["requests"] == 12


def test_openai_batch_cached_prefix_billed_at_half_the_cached_price() -> None:
    shared = " ".join(f"w{i}" for i in range(300))
    lines = [_line(str(i), f"{shared} tail {i}") for i in range(3)]
    with TestServer(FaultConfig(batch_seconds=0.2, prompt_cache_min_tokens=128)) as srv, _openai(srv) as client:
        final, _ = _poll_openai(client, _submit(client, lines)["id"])
        rows = _content(client, final["output_file_id"])
        stats = srv.stats()
    cached = [r["response"]["body"]["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0) for r in rows]
    assert cached[0] == 0 and cached[1] > 0 and cached[2] > 0
    billed = stats["billed_batch"]
    assert billed["cached_input_tokens"] == sum(cached)
    full = (billed["input_tokens"] * 0.15 + billed["cached_input_tokens"] * 0.075 + billed["output_tokens"] * 0.60) / 1e6
    assert stats["billed_batch_usd"] == pytest.approx(full / 2)


def test_openai_failed_share_is_exact_reproducible_and_resubmission_is_counted() -> None:
    lines = [_line(f"id{i}", f"prompt {i}") for i in range(10)]

    def run() -> tuple[set[str], list[dict], TestServer]:
        srv = TestServer(FaultConfig(batch_seconds=0.2, batch_failed_rate=0.3, seed=7)).start()
        with _openai(srv) as client:
            final, _ = _poll_openai(client, _submit(client, lines)["id"])
            assert final["status"] == "completed"
            assert final["request_counts"] == {"total": 10, "completed": 7, "failed": 3}
            errors = _content(client, final["error_file_id"])
            assert len(_content(client, final["output_file_id"])) == 7
        return {e["custom_id"] for e in errors}, errors, srv

    failed, errors, srv = run()
    try:
        assert len(failed) == 3
        for e in errors:
            assert e["error"] is None and e["response"]["status_code"] == 500
            assert e["response"]["body"]["error"]["type"] == "server_error"
        assert srv.stats()["billed"]["requests"] == 7  # failed items are not billed
        # Resubmitting the failed ones: a new draw, and the emulator counts them as submitted twice.
        with _openai(srv) as client:
            retry = [line for line in lines if line["custom_id"] in failed]
            final, _ = _poll_openai(client, _submit(client, retry)["id"])
            assert final["request_counts"]["total"] == 3
        stats = srv.stats()["batch"]
        assert stats["resubmitted_ids"] == sorted(failed)
        assert all(stats["submitted_by_custom_id"][cid] == 2 for cid in failed)
        assert stats["requests_submitted"] == 13 and stats["batches_created"] == 2
    finally:
        srv.stop()
    again, _, srv2 = run()  # same seed, fresh server: the same items fail
    srv2.stop()
    assert again == failed


def test_openai_expiry_keeps_the_completed_share() -> None:
    lines = [_line(f"c{i}", f"prompt {i}") for i in range(10)]
    with TestServer(FaultConfig(batch_seconds=0.3, batch_expire_after_share=0.3)) as srv, _openai(srv) as client:
        final, _ = _poll_openai(client, _submit(client, lines)["id"])
        assert final["status"] == "expired" and isinstance(final["expired_at"], int)
        assert final["completed_at"] is None
        assert final["request_counts"] == {"total": 10, "completed": 3, "failed": 0}
        done = _content(client, final["output_file_id"])
        expired = _content(client, final["error_file_id"])
        stats = srv.stats()
    assert [r["custom_id"] for r in done] == ["c0", "c1", "c2"]
    assert [r["custom_id"] for r in expired] == [f"c{i}" for i in range(3, 10)]
    for row in expired:
        assert row["response"] is None
        assert row["error"] == {"code": "batch_expired",
                                "message": "This request could not be executed before the completion window expired."}
    assert stats["billed"]["requests"] == 3
    assert stats["batch"]["items"] == {"succeeded": 3, "failed": 0, "expired": 7, "cancelled": 0}


def test_openai_completions_endpoint_batch_matches_online() -> None:
    lines = [{"custom_id": "one", "method": "POST", "url": "/v1/completions",
              "body": {"model": "gpt-4o-mini", "prompt": "complete this", "max_tokens": 3}},
             {"custom_id": "two", "method": "POST", "url": "/v1/completions",
              "body": {"model": "gpt-4o-mini", "prompt": ["first prompt", "second prompt"], "n": 2,
                       "temperature": 0.7, "seed": 1}}]
    with TestServer(FaultConfig(batch_seconds=0.2)) as srv, _openai(srv) as client:
        final, _ = _poll_openai(client, _submit(client, lines, endpoint="/v1/completions")["id"])
        rows = {r["custom_id"]: r["response"]["body"] for r in _content(client, final["output_file_id"])}
        for line in lines:
            online = client.post("/v1/completions", json=line["body"]).json()
            assert rows[line["custom_id"]]["object"] == "text_completion"
            assert rows[line["custom_id"]]["choices"] == online["choices"]
            assert rows[line["custom_id"]]["usage"] == online["usage"]
        outputs = client.get("/v1/files", params={"purpose": "batch_output"}).json()["data"]
    assert rows["one"]["choices"][0]["finish_reason"] == "length" and len(rows["two"]["choices"]) == 4
    assert [f["id"] for f in outputs] == [final["output_file_id"]]
    assert outputs[0]["filename"] == f"{final['id']}_output.jsonl"


def test_openai_cancel_in_progress_keeps_done_items() -> None:
    lines = [_line(f"k{i}", f"prompt {i}") for i in range(20)]
    with TestServer(FaultConfig(batch_seconds=2.0)) as srv, _openai(srv) as client:
        batch = _submit(client, lines)
        deadline = time.monotonic() + 10
        while client.get(f"/v1/batches/{batch['id']}").json()["request_counts"]["completed"] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = client.post(f"/v1/batches/{batch['id']}/cancel")
        assert r.status_code == 200
        assert r.json()["status"] == "cancelling" and isinstance(r.json()["cancelling_at"], int)
        final, _ = _poll_openai(client, batch["id"])
        assert final["status"] == "cancelled" and isinstance(final["cancelled_at"], int)
        done = _content(client, final["output_file_id"])
        rest = _content(client, final["error_file_id"])
        again = client.post(f"/v1/batches/{batch['id']}/cancel")
        stats = srv.stats()
    assert 3 <= len(done) < 20 and len(done) + len(rest) == 20
    assert final["request_counts"]["completed"] == len(done)
    assert {r["error"]["code"] for r in rest} == {"batch_cancelled"}
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert stats["batch"]["cancels"] == 1 and stats["billed"]["requests"] == len(done)


def test_openai_cancel_while_validating_matches_the_recording() -> None:
    with TestServer(FaultConfig(batch_seconds=5.0)) as srv, _openai(srv) as client:  # validating for 0.5 s
        batch = _submit(client, [_line("0", "Spagetti"), _line("1", "Sushi")])
        r = client.post(f"/v1/batches/{batch['id']}/cancel").json()
        assert r["status"] == "cancelling" and r["cancelling_at"] == r["created_at"]
        assert r["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
        final, _ = _poll_openai(client, batch["id"])
        assert final["status"] == "cancelled" and final["output_file_id"] is None and final["error_file_id"] is None
        assert srv.stats()["billed"]["requests"] == 0


def test_openai_item_rejected_by_the_endpoint_fails_with_the_online_error() -> None:
    bad = _line("bad", "hello", model="o4-mini", max_tokens=10)
    with TestServer(FaultConfig(batch_seconds=0.2), flavor="openai-reasoning") as srv, _openai(srv) as client:
        final, _ = _poll_openai(client, _submit(client, [_line("ok", "hello", model="o4-mini"), bad])["id"])
        errors = _content(client, final["error_file_id"])
        online = client.post("/v1/chat/completions", json=bad["body"])
    assert final["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    assert errors[0]["custom_id"] == "bad" and errors[0]["error"] is None
    assert errors[0]["response"]["status_code"] == online.status_code == 400
    assert errors[0]["response"]["body"] == online.json()


def test_openai_limits_and_bad_requests() -> None:
    with TestServer(FaultConfig(batch_seconds=0.2, batch_max_requests=2, batch_max_bytes=2000)) as srv, \
            _openai(srv) as client:
        big = _upload(client, _jsonl([_line(str(i), "x" * 200) for i in range(10)]))
        assert big.status_code == 400
        assert big.json() == {"error": {"message": "File is too large.", "type": "invalid_request_error",
                                        "param": None, "code": None}}
        not_jsonl = _upload(client, b'{"custom_id": "0"}\nthis is not json\n')
        assert not_jsonl.status_code == 400
        assert not_jsonl.json()["error"]["message"] == "Invalid file format for Batch API. Must be .jsonl"

        too_many = _submit(client, [_line(str(i), "x") for i in range(3)])
        final, _ = _poll_openai(client, too_many["id"])
        assert final["status"] == "failed" and isinstance(final["failed_at"], int)
        assert final["errors"]["object"] == "list"
        assert [e["code"] for e in final["errors"]["data"]] == ["too_many_tasks"]

        dup = _submit(client, [_line("same", "a"), _line("same", "b")])
        final, _ = _poll_openai(client, dup["id"])
        assert final["status"] == "failed"
        assert final["errors"]["data"] == [{"code": "duplicate_custom_id", "line": 2, "param": "custom_id",
                                            "message": "The custom_id 'same' is not unique in the input file."}]

        mixed = _submit(client, [_line("a", "a"), _line("b", "b", url="/v1/completions")])
        final, _ = _poll_openai(client, mixed["id"])
        assert [(e["code"], e["line"]) for e in final["errors"]["data"]] == [("url_mismatch", 2)]

        file_id = _upload(client, _jsonl([_line("a", "a")])).json()["id"]
        window = client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                                  "completion_window": "1h"})
        assert window.status_code == 400 and window.json()["error"]["param"] == "completion_window"
        missing = client.post("/v1/batches", json={"endpoint": "/v1/chat/completions", "completion_window": "24h"})
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_required_parameter"
        unknown = client.post("/v1/batches", json={"input_file_id": "file-nope", "endpoint": "/v1/chat/completions",
                                                   "completion_window": "24h"})
        assert unknown.status_code == 400 and "file-nope" in unknown.json()["error"]["message"]
        nobatch = client.get("/v1/batches/batch_nope")
        assert nobatch.status_code == 404
        assert nobatch.json()["error"]["message"] == "No batch found with id 'batch_nope'."
        assert client.get("/v1/files/file-nope").status_code == 404
        long_meta = client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                                     "completion_window": "24h", "metadata": {"k": "v" * 513}})
        assert long_meta.status_code == 400 and long_meta.json()["error"]["param"] == "metadata.k"
        many_meta = client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                                     "completion_window": "24h",
                                                     "metadata": {str(i): "v" for i in range(17)}})
        assert many_meta.status_code == 400 and "at most 16" in many_meta.json()["error"]["message"]
        listed = client.get("/v1/files", params={"purpose": "batch"}).json()
        assert listed["object"] == "list" and listed["data"][0]["id"] == file_id  # newest first
        assert {f["purpose"] for f in listed["data"]} == {"batch"}
        outputs = client.get("/v1/files", params={"purpose": "batch_output"}).json()["data"]
        assert outputs == []  # every batch above failed validation: no output or error files
        assert client.delete(f"/v1/files/{file_id}").json() == {"object": "file", "deleted": True, "id": file_id}
        assert client.get(f"/v1/files/{file_id}").status_code == 404
        stats = srv.stats()
    assert stats["by_outcome"]["bad_request"] >= 9
    assert stats["billed"]["requests"] == 0


def test_openai_auth_and_list() -> None:
    with TestServer(FaultConfig(api_key=KEY, batch_seconds=0.1)) as srv:
        with _openai(srv, key="wrong") as bad:
            r = _upload(bad, _jsonl([_line("a", "a")]))
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            assert bad.get("/v1/batches").status_code == 401
        with _openai(srv) as client:
            ids = [_submit(client, [_line("a", f"p{i}")])["id"] for i in range(3)]
            page = client.get("/v1/batches", params={"limit": 2}).json()
            assert page["object"] == "list" and [b["id"] for b in page["data"]] == ids[::-1][:2]
            assert page["has_more"] is True and page["last_id"] == ids[1]
            rest = client.get("/v1/batches", params={"limit": 2, "after": page["last_id"]}).json()
            assert [b["id"] for b in rest["data"]] == [ids[0]] and rest["has_more"] is False
        assert srv.stats()["by_outcome"]["unauthorized"] == 2
        assert srv.stats()["batch"]["submitted_by_custom_id"] == {"a": 3}


# ------------------------------------------------------------------------------------------ Anthropic


def test_anthropic_batch_end_to_end_matches_online_and_recorded_shapes() -> None:
    requests = [_request(f"r{i}", f"tell me about item {i}") for i in range(3)]
    requests.append(_request("r3", "think about item 3", max_tokens=2048,
                             thinking={"type": "enabled", "budget_tokens": 1024}))
    with TestServer(FaultConfig(api_key=KEY, batch_seconds=0.4), flavor="anthropic") as srv, \
            _anthropic(srv) as client:
        r = client.post("/v1/messages/batches", json={"requests": requests})
        assert r.status_code == 200 and r.headers["request-id"].startswith("req_")
        created = r.json()
        assert list(created) == ANTHROPIC_BATCH_KEYS
        assert re.fullmatch(r"msgbatch_01[A-Za-z0-9]{22}", created["id"])
        assert created["type"] == "message_batch" and created["processing_status"] == "in_progress"
        assert created["request_counts"] == {"processing": 4, "succeeded": 0, "errored": 0, "canceled": 0,
                                             "expired": 0}
        assert RFC3339_MICRO.match(created["created_at"]) and RFC3339_MICRO.match(created["expires_at"])
        assert created["ended_at"] is None and created["results_url"] is None
        early = client.get(f"/v1/messages/batches/{created['id']}/results")
        assert early.status_code == 400 and early.json()["error"]["type"] == "invalid_request_error"

        final, polls = _poll_anthropic(client, created["id"])
        for poll in polls[:-1]:  # every in-progress poll says retry-after: 10, counts frozen (recordings)
            assert poll.headers["retry-after"] == "10"
            assert poll.json()["request_counts"]["processing"] == 4
        assert "retry-after" not in polls[-1].headers
        assert final["request_counts"] == {"processing": 0, "succeeded": 4, "errored": 0, "canceled": 0,
                                           "expired": 0}
        assert RFC3339_MICRO.match(final["ended_at"])
        assert final["results_url"] == f"{srv.url}/v1/messages/batches/{created['id']}/results"
        results = _results(client, final)
        batch_stats = srv.stats()
        for req in requests:
            online = client.post("/v1/messages", json=req["params"]).json()
            result = results[req["custom_id"]]
            assert result["type"] == "succeeded"
            message = result["message"]
            assert message["content"] == online["content"] and message["stop_reason"] == online["stop_reason"]
            assert message["usage"] == {**online["usage"], "service_tier": "batch"}
        assert [b["type"] for b in results["r3"]["message"]["content"]] == ["thinking", "text"]
        listing = client.get("/v1/messages/batches").json()
        assert [b["id"] for b in listing["data"]] == [created["id"]] and listing["has_more"] is False
        deleted = client.delete(f"/v1/messages/batches/{created['id']}")
        assert deleted.json() == {"id": created["id"], "type": "message_batch_deleted"}
        assert client.get(f"/v1/messages/batches/{created['id']}").status_code == 404
        stats = srv.stats()
    assert batch_stats["batch"]["submitted_by_custom_id"] == {f"r{i}": 1 for i in range(4)}
    assert batch_stats["billed_batch"]["requests"] == 4
    online_usd = stats["billed_usd"] - batch_stats["billed_usd"]
    assert online_usd > 0 and stats["billed_batch_usd"] == pytest.approx(online_usd / 2)


def test_anthropic_failed_expired_and_errored_items() -> None:
    requests = [_request(f"r{i}", f"prompt {i}") for i in range(10)]
    requests[1] = {"custom_id": "r1", "params": {"model": "claude-sonnet-4-5",
                                                 "messages": [{"role": "user", "content": "no max_tokens"}]}}
    with TestServer(FaultConfig(batch_seconds=0.3, batch_failed_rate=0.2, seed=3), flavor="anthropic") as srv, \
            _anthropic(srv) as client:
        batch = client.post("/v1/messages/batches", json={"requests": requests}).json()
        final, _ = _poll_anthropic(client, batch["id"])
        results = _results(client, final)
    kinds = [results[f"r{i}"]["type"] for i in range(10)]
    assert kinds.count("errored") >= 2  # the two injected, plus r1's missing max_tokens unless it was one of them
    assert final["request_counts"]["errored"] == kinds.count("errored")
    assert final["request_counts"]["succeeded"] == kinds.count("succeeded") == 10 - kinds.count("errored")
    assert results["r1"]["type"] == "errored"
    error = results["r1"]["error"]
    assert error["type"] == "error" and error["error"]["type"] in ("invalid_request_error", "api_error")

    with TestServer(FaultConfig(batch_seconds=0.3, batch_expire_after_share=0.3), flavor="anthropic") as srv, \
            _anthropic(srv) as client:
        batch = client.post("/v1/messages/batches", json={"requests": [_request(f"e{i}", "p") for i in range(10)]}).json()
        final, _ = _poll_anthropic(client, batch["id"])
        results = _results(client, final)
        assert srv.stats()["billed"]["requests"] == 3
    assert final["request_counts"] == {"processing": 0, "succeeded": 3, "errored": 0, "canceled": 0, "expired": 7}
    assert [results[f"e{i}"]["type"] for i in range(10)] == ["succeeded"] * 3 + ["expired"] * 7
    assert results["e5"] == {"type": "expired"}


def test_anthropic_cancel_keeps_done_items() -> None:
    with TestServer(FaultConfig(batch_seconds=2.0), flavor="anthropic") as srv, _anthropic(srv) as client:
        batch = client.post("/v1/messages/batches", json={"requests": [_request(f"c{i}", "p") for i in range(20)]}).json()
        time.sleep(0.5)
        r = client.post(f"/v1/messages/batches/{batch['id']}/cancel").json()
        assert r["processing_status"] == "canceling" and RFC3339_MICRO.match(r["cancel_initiated_at"])
        assert r["request_counts"]["processing"] == 20  # as recorded: counts only move at the end
        final, _ = _poll_anthropic(client, batch["id"])
        results = _results(client, final)
        stats = srv.stats()
    counts = final["request_counts"]
    assert counts["canceled"] > 0 and counts["succeeded"] > 0 and counts["succeeded"] + counts["canceled"] == 20
    assert sum(1 for r in results.values() if r == {"type": "canceled"}) == counts["canceled"]
    assert stats["batch"]["cancels"] == 1 and stats["billed"]["requests"] == counts["succeeded"]


def test_anthropic_limits_and_auth() -> None:
    with TestServer(FaultConfig(api_key=KEY, batch_max_requests=3, batch_max_bytes=5000), flavor="anthropic") as srv:
        with _anthropic(srv) as client:
            def create(requests: list[dict]) -> httpx.Response:
                return client.post("/v1/messages/batches", json={"requests": requests})

            r = create([_request(str(i), "p") for i in range(4)])
            assert r.status_code == 400
            assert r.json()["error"] == {"type": "invalid_request_error",
                                         "message": "requests: List should have at most 3 items after validation, "
                                                    "not 4"}
            assert r.json()["request_id"] == r.headers["request-id"]
            r = create([_request("0", "x" * 6000)])
            assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"
            r = create([_request("a" * 65, "p")])
            assert r.json()["error"]["message"] == "requests.0.custom_id: String should have at most 64 characters"
            r = create([_request("a", "p"), _request("a", "q")])
            assert r.status_code == 400 and "requests.1.custom_id" in r.json()["error"]["message"]
            assert create([]).status_code == 400
            assert client.get("/v1/messages/batches/msgbatch_nope").status_code == 404
        with _anthropic(srv, key="wrong") as bad:
            r = bad.post("/v1/messages/batches", json={"requests": [_request("a", "p")]})
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = httpx.post(f"{srv.url}/v1/messages/batches", headers={"x-api-key": KEY},
                       json={"requests": [_request("a", "p")]})
        assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]
        stats = srv.stats()
    assert stats["batch"]["batches_created"] == 0 and stats["batch"]["requests_submitted"] == 0


def test_http_faults_before_and_after_the_effect() -> None:
    with TestServer(FaultConfig(batch_seconds=0.1, batch_error_rate=1.0)) as srv, _openai(srv) as client:
        r = _upload(client, _jsonl([_line("a", "a")]))
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert srv.stats()["batch"]["files_uploaded"] == 0  # answered before it took effect
        srv.configure(batch_error_rate=0, batch_lost_reply_rate=1.0)
        r = _upload(client, _jsonl([_line("a", "a")]))
        assert r.status_code == 500
        srv.configure(batch_lost_reply_rate=0)
        files = client.get("/v1/files").json()["data"]
        assert len(files) == 1  # the upload whose reply was lost is there
        srv.configure(batch_lost_reply_rate=1.0)
        r = client.post("/v1/batches", json={"input_file_id": files[0]["id"], "endpoint": "/v1/chat/completions",
                                             "completion_window": "24h"})
        assert r.status_code == 500
        srv.configure(batch_lost_reply_rate=0)
        listed = client.get("/v1/batches").json()["data"]
        assert len(listed) == 1 and listed[0]["input_file_id"] == files[0]["id"]
        stats = srv.stats()
    assert stats["batch"]["batches_created"] == 1 and stats["batch"]["submitted_by_custom_id"] == {"a": 1}
    assert stats["batch"]["http_errors"] == {"before": 1, "lost_reply": 2}
    assert stats["by_outcome"]["error_500"] == 3

    with TestServer(FaultConfig(batch_lost_reply_rate=1.0), flavor="anthropic") as srv, _anthropic(srv) as client:
        r = client.post("/v1/messages/batches", json={"requests": [_request("a", "p")]})
        assert r.status_code == 500 and r.json()["error"] == {"type": "api_error", "message": "Internal server error"}
        srv.configure(batch_lost_reply_rate=0)
        assert len(client.get("/v1/messages/batches").json()["data"]) == 1
    # a share in between: reproducible for a seed
    def outcomes(seed: int) -> list[int]:
        with TestServer(FaultConfig(batch_error_rate=0.3, seed=seed)) as srv, _openai(srv) as client:
            return [client.get("/v1/batches").status_code for _ in range(40)]
    first = outcomes(4)
    assert first == outcomes(4) and 0 < first.count(500) < 40


# ------------------------------------------------------------------------------------------ configuration


def test_batch_options_are_fault_config_fields() -> None:
    with TestServer() as srv:
        cfg = srv.configure(batch_seconds=2, batch_failed_rate=0.1, batch_expire_after_share=0.5,
                            batch_max_requests=10, batch_max_bytes=None)
        assert (cfg.batch_seconds, cfg.batch_failed_rate, cfg.batch_expire_after_share, cfg.batch_max_requests) == \
            (2.0, 0.1, 0.5, 10)
        for bad in ({"batch_failed_rate": 1.5}, {"batch_expire_after_share": -0.1}, {"batch_seconds": -1},
                    {"batch_max_requests": 0}, {"batch_max_bytes": "big"}):
            with pytest.raises(ValueError):
                srv.configure(**bad)
        r = httpx.post(f"{srv.url}/_config", json={"batch_failed_rate": 0.25})
        assert r.status_code == 200 and r.json()["config"]["batch_failed_rate"] == 0.25
    args = _build_parser().parse_args(["--batch-seconds", "3", "--batch-failed-rate", "0.2",
                                       "--batch-expire-after-share", "0.4", "--batch-max-requests", "100",
                                       "--batch-max-bytes", "1000"])
    assert (args.batch_seconds, args.batch_failed_rate, args.batch_expire_after_share, args.batch_max_requests,
            args.batch_max_bytes) == (3.0, 0.2, 0.4, 100, 1000)


def test_serve_test_flags_configure_the_batch_emulator() -> None:
    proc = subprocess.Popen(
        synthkd_cmd("serve-test", "--port", "0", "--flavor", "anthropic", "--batch-seconds", "0.2",
                    "--batch-failed-rate", "0.5", "--batch-max-requests", "4", "--seed", "5"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(30)
        assert line and line[0].startswith("READY "), line
        root = line[0].split()[1]
        config = httpx.get(f"{root}/_stats").json()["config"]
        assert (config["batch_seconds"], config["batch_failed_rate"], config["batch_max_requests"]) == (0.2, 0.5, 4)
        with httpx.Client(base_url=root, headers=ANTHROPIC_HEADERS, timeout=30) as client:
            over = client.post("/v1/messages/batches", json={"requests": [_request(str(i), "p") for i in range(5)]})
            assert over.status_code == 400
            batch = client.post("/v1/messages/batches", json={"requests": [_request(str(i), "p") for i in range(4)]})
            final, _ = _poll_anthropic(client, batch.json()["id"])
        assert final["request_counts"]["errored"] == 2 and final["request_counts"]["succeeded"] == 2
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_a_big_batch_on_a_zero_clock_does_not_stall_the_server() -> None:
    lines = [_line(f"z{i}", f"p {i}") for i in range(12000)]
    with TestServer(FaultConfig(batch_seconds=0)) as srv, _openai(srv) as client:
        batch = _submit(client, lines)
        partial = 0  # polls answered while the batch was part done
        while True:  # every poll is answered while the batch is processed, not only once it is over
            got = client.get(f"/v1/batches/{batch['id']}").json()
            if got["status"] == "completed":
                break
            partial += 0 < got["request_counts"]["completed"] < len(lines)
        # Processing 12,000 items without yielding blocks the loop for all of it: no poll can be answered
        # in between, so none sees a part-done batch.  A count, not a time: a loaded machine passes too.
        assert partial >= 1, partial
        assert srv.stats()["batch"]["batches_by_status"] == {"completed": 1}
        bad = client.post("/v1/files", content=b"--x\r\nnot a form",
                          headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert bad.status_code == 400


def test_flavors_without_a_batch_api_have_no_batch_routes() -> None:
    with TestServer(flavor="vllm") as srv:
        assert httpx.post(f"{srv.url}/v1/batches", json={}).status_code == 404
    with TestServer(flavor="anthropic") as srv:
        assert httpx.get(f"{srv.url}/v1/batches").status_code in (404, 405)


# ------------------------------------------------------------------------------------------ recorded shapes


def test_openai_objects_have_the_recorded_shapes() -> None:
    rec = RECORDED["openai"]
    assert [p["name"] for p in rec["upload_request_parts"]] == ["purpose", "file"]
    lines = [_line(str(i), food, model="gpt-3.5-turbo") for i, food in enumerate(["Spagetti", "Sushi", "Ramen"])]
    with TestServer(FaultConfig(batch_seconds=3.0)) as srv, _openai(srv) as client:  # states last 0.3 s or more
        upload = _upload(client, _jsonl(lines)).json()
        assert _shape(upload) == _shape(rec["file_upload"])
        assert _shape(client.get(f"/v1/files/{upload['id']}").json()) == _shape(rec["file_get"])
        request = {**rec["batch_create_request"], "input_file_id": upload["id"]}
        created = client.post("/v1/batches", json=request).json()
        assert _shape(created) == _shape(rec["batch_create"])
        final, seen = _poll_openai(client, created["id"])
        by_status = {b["status"]: b for b in seen}
        for status in ("in_progress", "finalizing", "completed"):
            assert _shape(by_status[status]) == _shape(rec[f"batch_{status}"]), status
        out = client.get(f"/v1/files/{final['output_file_id']}/content")
        recorded_headers = {k.lower(): v for k, v in rec["output_content_headers"].items()}
        assert out.headers["content-type"] == recorded_headers["content-type"]
        assert re.fullmatch(r'attachment; filename="batch_[0-9a-f]{32}_output\.jsonl"',
                            out.headers["content-disposition"])
        assert re.fullmatch(r'attachment; filename="batch_[0-9a-f]{32}_output\.jsonl"',
                            recorded_headers["content-disposition"])
        line = json.loads(out.text.splitlines()[0])
        recorded_line = rec["output_line"]
        assert list(line) == list(recorded_line) and list(line["response"]) == list(recorded_line["response"])
        assert _shape(line["response"]["status_code"]) == _shape(recorded_line["response"]["status_code"])
        assert len(line["response"]["request_id"]) == len(recorded_line["response"]["request_id"]) == 32
        assert len(line["id"]) == len(recorded_line["id"])

        cancelled = client.post("/v1/batches", json=request).json()
        cancelling = client.post(f"/v1/batches/{cancelled['id']}/cancel").json()
        assert _shape(cancelling) == _shape(rec["batch_cancelling"])


def test_anthropic_objects_have_the_recorded_shapes() -> None:
    rec = RECORDED["anthropic"]
    with TestServer(FaultConfig(batch_seconds=0.5), flavor="anthropic") as srv, _anthropic(srv) as client:
        r = client.post("/v1/messages/batches", json=rec["batch_create_request"])
        assert _shape(r.json()) == _shape(rec["batch_create"])
        final, polls = _poll_anthropic(client, r.json()["id"])
        assert _shape(polls[0].json()) == _shape(rec["batch_in_progress"])
        assert polls[0].headers["retry-after"] == rec["batch_in_progress_headers"]["retry-after"]
        assert _shape(final) == _shape(rec["batch_ended"])
        results = client.get(final["results_url"])
        assert re.fullmatch(r'attachment; filename="msgbatch_01[A-Za-z0-9]{22}_results\.jsonl"',
                            results.headers["content-disposition"])
        assert re.fullmatch(r'attachment; filename="msgbatch_01[A-Za-z0-9]{22}_results\.jsonl"',
                            rec["results_headers"]["content-disposition"])
        line = json.loads(results.text.splitlines()[0])
        recorded = rec["result_line"]
        assert list(line) == list(recorded) and list(line["result"]) == list(recorded["result"])
        assert list(line["result"]["message"]) == list(recorded["result"]["message"])
        assert set(recorded["result"]["message"]["usage"]) <= set(line["result"]["message"]["usage"])

        second = client.post("/v1/messages/batches", json=rec["batch_create_request"]).json()
        canceling = client.post(f"/v1/messages/batches/{second['id']}/cancel").json()
        assert _shape(canceling) == _shape(rec["batch_canceling"])
