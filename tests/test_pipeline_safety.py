"""The pipeline runner never touches what it did not make, one run at a time, an honest ledger after a
crash, no secrets written down, and clear errors (exit 2, file:line) for hostile or broken input.

Every test runs the real CLI against a real loopback test server (or no teacher at all)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import cli_env, read_jsonl, synthkd_cmd, write_prompts
from synthkd.testing.server import FaultConfig


def _run(tmp: Path, *args: str, env: dict | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(synthkd_cmd(*args), cwd=tmp, env=env or cli_env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (to prove nothing was moved, deleted or rewritten)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _merge_pipeline(tmp: Path, *, name: str = "p", stage: str = "m", run_dir: str = "runs", src: str = "in.jsonl") -> Path:
    p = tmp / "p.yaml"
    p.write_text(f"name: {json.dumps(name)}\nrun_dir: {json.dumps(run_dir)}\n"
                 f"stages:\n  - {{name: {json.dumps(stage)}, kind: merge, inputs: {{t: {src}}}}}\n")
    return p


def _rows(path: Path, n: int, start: int = 0) -> None:
    path.write_text("".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(start, start + n)))


def _killable() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# ----------------------------------------------------------------------------- F2: names and paths
@pytest.mark.parametrize("where, name, line", [
    ("pipeline", "..", 1), ("pipeline", ".", 1), ("pipeline", ".hidden", 1),
    ("stage", ".", 4), ("stage", "..", 4), ("stage", ".x", 4), ("stage", "a.b", 4), ("stage", "-rf", 4),
])
def test_names_must_be_plain_identifiers(tmp_path, where, name, line):
    # F2 regression: '..' and '.' passed the name pattern and moved / deleted directories outside the run dir
    _rows(tmp_path / "in.jsonl", 3)
    (tmp_path / "sb" / "inner" / "deep").mkdir(parents=True)
    (tmp_path / "sb" / "inner" / "deep" / "f.txt").write_text("keep")
    before = _tree(tmp_path / "sb")
    kw = {"name": name} if where == "pipeline" else {"stage": name}
    _merge_pipeline(tmp_path, run_dir="sb/inner", **({"stage": "inner"} | kw))
    for cmd in ("validate", "run"):
        res = _run(tmp_path, cmd, "p.yaml")
        assert res.returncode == 2, (cmd, res.stderr)
        assert f"p.yaml:{line}: " in res.stderr and "is not a plain name" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
    assert _tree(tmp_path / "sb") == before and not (tmp_path / "sb" / "inner.prev").exists()


def test_every_runner_path_is_proven_inside_the_run_dir(tmp_path):
    # F2 regression: one helper guards every path the runner writes, moves or deletes
    from synthkd.pipeline import RunDirError, inside_run_dir

    run = tmp_path / "runs" / "p"
    run.mkdir(parents=True)
    assert inside_run_dir(run, run / "a.jsonl") == run.resolve() / "a.jsonl"
    for bad in (run, run / "..", run / "." , run / ".." / "p2" / "x.jsonl", tmp_path / "elsewhere.jsonl"):
        with pytest.raises(RunDirError, match="refusing to touch"):
            inside_run_dir(run, bad)
    (tmp_path / "outside").mkdir()
    (run / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(RunDirError, match="outside the run directory"):
        inside_run_dir(run, run / "link")
    with pytest.raises(RunDirError, match="outside the run directory"):
        inside_run_dir(run, run / "link" / "x.jsonl")


# ----------------------------------------------------------------------------- F3: a directory we did not make
def test_foreign_run_dir_is_refused_and_left_alone(tmp_path):
    # F3 regression: a non-empty directory without a synthkd manifest had .prev deleted and files moved
    _rows(tmp_path / "in.jsonl", 3)
    proj = tmp_path / "victim" / "p"
    for d in ("m", "m.prev", "plots"):
        (proj / d).mkdir(parents=True)
    (proj / "report.md").write_text("my notes")
    (proj / "m" / "weights.txt").write_text("precious model")
    (proj / "m.prev" / "backup.txt").write_text("precious backup")
    (proj / "m.jsonl").write_text('{"id": "mine"}\n')
    (proj / "plots" / "funnel.png").write_text("my plot")
    before = _tree(tmp_path / "victim")
    _merge_pipeline(tmp_path, run_dir="victim")
    res = _run(tmp_path, "run", "p.yaml")
    assert res.returncode == 2 and "is not a synthkd run directory" in res.stderr, res.stderr
    assert _tree(tmp_path / "victim") == before
    # a foreign manifest.json is neither used nor rewritten: a clear error, not KeyError
    (proj / "manifest.json").write_text('{"user": "webapp manifest"}')
    before = _tree(tmp_path / "victim")
    res = _run(tmp_path, "run", "p.yaml")
    assert res.returncode == 2 and "not a synthkd manifest" in res.stderr and "Traceback" not in res.stderr, res.stderr
    res = _run(tmp_path, "report", "victim/p")  # nor does `synthkd report` write its report.md there
    assert res.returncode == 2 and "not a synthkd manifest" in res.stderr, res.stderr
    assert _tree(tmp_path / "victim") == before
    # an empty directory is fine
    empty = tmp_path / "empty" / "p"
    empty.mkdir(parents=True)
    _merge_pipeline(tmp_path, run_dir="empty")
    assert _run(tmp_path, "run", "p.yaml").returncode == 0 and len(read_jsonl(empty / "m.jsonl")) == 3


def test_only_a_prev_that_synthkd_made_is_replaced(tmp_path):
    # F3 regression: synthkd replaced / rmtree'd a .prev it had not made
    _rows(tmp_path / "in.jsonl", 3)
    _merge_pipeline(tmp_path)
    run = tmp_path / "runs" / "p"
    assert _run(tmp_path, "run", "p.yaml").returncode == 0
    (run / "m.jsonl.prev").write_text("a user's own file\n")  # not made by synthkd
    _rows(tmp_path / "in.jsonl", 4)  # the stage's fingerprint changes: its output goes aside
    before = _tree(run)
    res = _run(tmp_path, "run", "p.yaml")
    assert res.returncode == 2 and "m.jsonl.prev: exists and was not made by synthkd" in res.stderr, res.stderr
    after = _tree(run)
    assert after.pop("manifest.json") and after == {k: v for k, v in before.items() if k != "manifest.json"}
    (run / "m.jsonl.prev").unlink()
    for n in (4, 5):  # now each .prev is synthkd's own (recorded in the manifest): replaced freely
        _rows(tmp_path / "in.jsonl", n)
        assert _run(tmp_path, "run", "p.yaml").returncode == 0
        assert len(read_jsonl(run / "m.jsonl")) == n and len(read_jsonl(run / "m.jsonl.prev")) == n - 1
    assert "m.jsonl.prev" in json.loads((run / "manifest.json").read_text())["made_by_synthkd"]


# ----------------------------------------------------------------------------- F5: one run at a time
def test_second_run_on_the_same_run_dir_is_refused_with_the_holders_pid(tmp_path, make_server):
    # F5 regression: two runs on one run dir both exited 0 with duplicated rows and double the requests
    srv = make_server(FaultConfig(latency_ms=100))  # the first run takes >= 10 s: time for the second to start
    write_prompts(tmp_path / "in.jsonl", 200)
    (tmp_path / "p.yaml").write_text(f"name: t\nteacher: {{model: test-model, base_url: '{srv.base_url}', concurrency: 2}}\n"
                                     "stages:\n  - {name: c, kind: complete, input: in.jsonl}\n")
    first = subprocess.Popen(synthkd_cmd("run", "p.yaml"), cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, preexec_fn=_killable)
    deadline = time.monotonic() + 60
    while srv.stats()["by_outcome"].get("ok", 0) < 8 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert first.poll() is None, "the first run ended before the second started"
    t0 = time.monotonic()
    second = _run(tmp_path, "run", "p.yaml")
    assert second.returncode == 2, second.stderr
    assert f"another synthkd run (pid {first.pid}) is using this run directory" in second.stderr
    assert time.monotonic() - t0 < 30 and first.poll() is None  # refused at once, the first still running
    assert first.wait(timeout=120) == 0, first.stderr.read()
    rows = read_jsonl(tmp_path / "runs/t/c.jsonl")
    assert len(rows) == len({r["id"] for r in rows}) == 200
    assert srv.stats()["by_endpoint"]["/v1/completions"] == 200
    assert _run(tmp_path, "run", "p.yaml").returncode == 0  # the lock went with the first process


# ----------------------------------------------------------------------------- F6: the ledger after a crash
def test_manifest_counts_every_attempt_after_sigkill(tmp_path, make_server):
    # F6 regression: after a kill and resume the manifest counted only the last attempt's rows and requests;
    # then (ledger of answers only) it missed the killed attempt's failed requests and those in flight
    srv = make_server(FaultConfig(latency_ms=100, error_rate=0.1, seed=3))
    n = 160
    with open(tmp_path / "in.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"q{i}", "question": f"What is {i} plus {i % 5}?", "answer": str(i + i % 5)}) + "\n")
    (tmp_path / "p.yaml").write_text(
        f"name: t\nteacher: {{model: test-model, base_url: '{srv.base_url}', concurrency: 4}}\n"
        "stages:\n  - {name: r, kind: generate.rationales, input: in.jsonl, options: {kind: math, n_demos: 0}}\n")
    proc = subprocess.Popen(synthkd_cmd("run", "p.yaml"), cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=_killable)
    deadline = time.monotonic() + 60
    while srv.stats()["by_outcome"].get("ok", 0) < n // 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert srv.stats()["by_outcome"]["error_500"] > 0  # the killed attempt had failed (unbilled) requests
    # Kill with requests in flight that the server will bill: whether an in-flight request would have
    # been a 500 is unknowable to the client, so from here the faults are off until every request the
    # server admitted before is over (12 admissions later, with 4 slots and a fixed 100 ms: >= 200 ms).
    srv.configure(error_rate=0)
    admitted = srv.stats()["requests_total"]
    while srv.stats()["requests_total"] < admitted + 12 and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    srv.configure(error_rate=0.1)  # the rerun meets faults again (its counters are exact: checked below)
    killed_rows = len(read_jsonl(tmp_path / "runs/t/r.jsonl"))
    assert 0 < killed_rows < n
    res = _run(tmp_path, "run", "p.yaml")
    assert res.returncode == 0, res.stderr
    st = srv.stats()
    sent = st["by_endpoint"].get("/v1/chat/completions", 0) + st["by_endpoint"].get("/v1/completions", 0)
    rec = json.loads((tmp_path / "runs/t/manifest.json").read_text())["stages"]["r"]
    assert rec["counts"]["rows_out"] == len(read_jsonl(tmp_path / "runs/t/r.jsonl")) == n
    t = rec["teacher"]
    assert t["attempts"] == 2 and t["interrupted_attempts"] == 1
    # exactly the server's counts: failed attempts and the requests in flight at the kill included
    assert (t["requests"], t["prompt_tokens"], t["completion_tokens"]) == (
        sent, st["usage"]["prompt_tokens"], st["usage"]["completion_tokens"]), (t, st["usage"], sent)
    assert t["estimated_unreceived"]["requests"] >= 1 and t["unknown_unreceived"] == 0 and t["journal_mismatch"] == 0
    report = (tmp_path / "runs/t/report.md").read_text()
    assert "| r | generate.rationales | done |" in report and f"| {n} | {n} | {t['requests']} |" in report


def test_ledger_totals_rule_for_killed_and_finished_attempts(tmp_path):
    # F6 regression (the rule itself): a killed attempt counts every send; an in-flight send is priced
    # like the same request's answer in another attempt, and marked estimated; a finished attempt
    # counts its exact counters, and one that disagrees with its own lines is flagged
    from synthkd.pipeline import ledger_totals

    def line(attempt, **kw):
        return json.dumps({"attempt": attempt, **kw}) + "\n"

    ans = {"prompt_tokens": 10, "completion_tokens": 5, "cost_usd": 0.5}
    path = tmp_path / "s.ledger.jsonl"
    path.write_text(
        line("k", sent="A") + line("k", failed="A") + line("k", sent="A") + line("k", answer="A", **ans)
        + line("k", sent="B") + line("k", sent="C") + '{"attempt": "k", "sent": "D"'  # torn by the kill
        + "\n" + line("f", sent="B") + line("f", answer="B", prompt_tokens=7, completion_tokens=3, cost_usd=0.25)
        + line("f", end={"requests": 1, "cached_answers": 1, "prompt_tokens": 7, "completion_tokens": 3, "cost_usd": 0.25}))
    t = ledger_totals(path)
    # killed: 4 sends (A twice, B, C); A answered (10/5); B in flight, priced like f's answer (7/3); C never answered
    assert (t["attempts"], t["interrupted_attempts"], t["requests"], t["cached_answers"]) == (2, 1, 4 + 1, 1)
    assert (t["prompt_tokens"], t["completion_tokens"], t["cost_usd"]) == (10 + 7 + 7, 5 + 3 + 3, 1.0)
    assert t["estimated_unreceived"] == {"requests": 1, "prompt_tokens": 7, "completion_tokens": 3, "cost_usd": 0.25}
    assert t["unknown_unreceived"] == 1 and t["journal_mismatch"] == 0
    with open(path, "a") as f:  # an end line that disagrees with its attempt's lines
        f.write(line("g", sent="E") + line("g", end={"requests": 2, "prompt_tokens": 0, "completion_tokens": 0}))
    assert ledger_totals(path)["journal_mismatch"] == 1



def test_ledger_after_a_line_torn_by_a_full_disk_starts_on_a_new_line(tmp_path):
    # issue 11 regression (soak, disk full in a teacher stage: the ledger under-counted 2 requests): a
    # full disk cut an attempt's last "sent" line short, and the next attempt's first line was appended
    # to it, so both were one unparsable line and that attempt's first send was never counted
    from synthkd.pipeline import Ledger, ledger_totals

    path = tmp_path / "s.ledger.jsonl"
    path.write_text('{"attempt": "k", "sent": "A"}\n{"attempt": "k", "sent": "B')  # torn: B was never sent
    ledger = Ledger(path)
    try:
        ledger.sent("C")
    finally:
        ledger.close()
    t = ledger_totals(path)
    assert (t["attempts"], t["requests"]) == (2, 2), path.read_text()  # A and C


# ----------------------------------------------------------------------------- F8: secrets and local paths
def test_credentials_and_env_values_are_never_written(tmp_path, make_server):
    # F8 regression: ${ENV} values and URL credentials were stored verbatim in manifest.json and the pushed card
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 5)
    url = srv.base_url.replace("http://", "http://proxyuser:sk-PROXY-PASSWORD-789@")
    (tmp_path / "p.yaml").write_text(
        "name: sec\nteacher: {model: test-model, base_url: '${PROBE_BASE_URL}'}\n"
        "stages:\n  - name: comp\n    kind: complete\n    input: in.jsonl\n"
        "    teacher: {model: test-model, base_url: '${PROBE_BASE_URL}', concurrency: 2}\n")
    res = _run(tmp_path, "run", "p.yaml", env=cli_env(PROBE_BASE_URL=url))
    assert res.returncode == 0, res.stderr
    assert srv.stats()["by_endpoint"]["/v1/completions"] == 5  # the expanded URL was used
    run = tmp_path / "runs" / "sec"
    man = json.loads((run / "manifest.json").read_text())
    assert man["config"]["stages"][0]["teacher"]["base_url"] == "${PROBE_BASE_URL}"
    from synthkd.hub import dataset_files

    pushed = {k: (v if isinstance(v, bytes) else v.read_bytes()) for k, v in dataset_files(run, "comp").items()}
    written = {str(p): p.read_bytes() for p in run.rglob("*") if p.is_file() and not p.name.startswith("comp.")}
    for where, blob in {**written, **{f"push:{k}": v for k, v in pushed.items()}}.items():
        assert b"PROXY-PASSWORD" not in blob and b"proxyuser" not in blob, where
    card = pushed["README.md"].decode()
    assert str(tmp_path) not in card and "teacher: `test-model`" in card


def test_urls_are_redacted_when_written_directly(tmp_path):
    # F8 regression: a URL given directly (or by --set) with userinfo or a ?key= query is redacted
    from synthkd.config import load_pipeline, redact_url

    assert redact_url("http://u:pw@h:1/v1?key=sk-1&x=2") == "http://***@h:1/v1?key=***&x=***"
    assert redact_url("https://api.openai.com/v1") == "https://api.openai.com/v1"
    (tmp_path / "p.yaml").write_text("name: x\nteacher: {model: m, base_url: 'http://u:sk-IN-FILE@h/v1'}\n"
                                     "stages:\n  - {name: a, kind: complete}\n")
    cfg = load_pipeline(tmp_path / "p.yaml", ["stages.a.teacher={model: m, base_url: 'https://h/v1?key=sk-IN-SET'}"])
    assert cfg.teacher.base_url == "http://u:sk-IN-FILE@h/v1"  # used as given
    text = json.dumps(cfg.recorded())
    assert "sk-IN-FILE" not in text and "sk-IN-SET" not in text and "http://***@h/v1" in text


def test_model_card_and_student_push_have_no_absolute_paths(tmp_path):
    # F8 regression: the uploaded model card and synthkd_train.json named absolute local paths
    from synthkd.hub import student_files
    from synthkd.train.model_card import render_card

    run = tmp_path / "home" / "alice" / "runs" / "r1"
    student = run / "student"
    (student / "checkpoints" / "step-1").mkdir(parents=True)
    rows = run / "clean.jsonl"
    record = {"kind": "sft", "student": "tiny", "output": str(student),
              "data": {"rows_file": str(rows), "rows_used": 3}, "evaluations": [{"input": str(tmp_path / "test.jsonl"),
                                                                                  "markdown": "ok"}]}
    card = render_card(record)
    assert str(tmp_path) not in card and "| rows file | clean.jsonl |" in card and "Evaluation on `test.jsonl`" in card
    (student / "README.md").write_text(f"# student\nrows from {rows}\n")
    (student / "synthkd_train.json").write_text(json.dumps(record))
    (student / "config.json").write_text("{}")
    (student / "model.safetensors").write_bytes(b"\0weights")
    (student / "training_args.bin").write_bytes(b"x")
    (student / "checkpoints" / "step-1" / "w").write_bytes(b"x")
    files = student_files(run, "student")
    assert sorted(files) == ["README.md", "config.json", "model.safetensors", "synthkd_train.json"]
    assert files["model.safetensors"] == student / "model.safetensors"
    for k in ("README.md", "synthkd_train.json"):
        assert str(tmp_path).encode() not in files[k], files[k]
    assert b"r1/clean.jsonl" in files["README.md"]


# ----------------------------------------------------------------------------- F10: hostile YAML
def _bomb(levels: int) -> str:
    out = ['name: bomb', 'report:', '  a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        out.append(f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(out) + "\nstages:\n  - {name: a, kind: merge, inputs: {t: in.jsonl}}\n"


def test_yaml_alias_bomb_is_refused_fast(tmp_path):
    # F10 regression: an alias bomb was expanded by the line index and ${ENV} expansion (8.6 GB)
    _rows(tmp_path / "in.jsonl", 2)
    (tmp_path / "p.yaml").write_text(_bomb(6))
    t0 = time.monotonic()
    res = _run(tmp_path, "validate", "p.yaml", timeout=60)
    assert res.returncode == 2 and "p.yaml:3: YAML anchors and aliases" in res.stderr, res.stderr
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize("text, expected", [
    ("name: x\nreport: {deep: " + "[" * 5000 + "]" * 5000 + "}\nstages:\n  - {name: a, kind: merge}\n",
     "p.yaml:2: nested more than 64 levels deep"),
    (b"name: x\ndescription: ok\nreport: {k: \"caf\xff\"}\nstages: []\n", "p.yaml:3: not valid UTF-8 (byte 0xff"),
])
def test_deep_and_non_utf8_yaml_are_clear_errors(tmp_path, text, expected):
    # F10/F14 regression: RecursionError and UnicodeDecodeError tracebacks (exit 1)
    p = tmp_path / "p.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    res = _run(tmp_path, "validate", "p.yaml")
    assert res.returncode == 2 and expected in res.stderr and "Traceback" not in res.stderr, res.stderr


# ----------------------------------------------------------------------------- F14: clear errors, right codes
def test_prices_file_that_is_not_utf8_is_a_config_error(tmp_path):
    # F14 regression: a non-UTF-8 prices file gave a UnicodeDecodeError traceback
    write_prompts(tmp_path / "in.jsonl", 2)
    (tmp_path / "prices.json").write_bytes(b'{"m": \xff}')
    (tmp_path / "p.yaml").write_text("name: t\nteacher: {model: m, prices: prices.json}\n"
                                     "stages:\n  - {name: c, kind: complete, input: in.jsonl}\n")
    res = _run(tmp_path, "validate", "p.yaml")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    # (the PriceTableError wording since pricing.py catches the UnicodeDecodeError itself; the path once)
    assert res.stderr.startswith(f"error: p.yaml:2: teacher.prices: {tmp_path / 'prices.json'}: price file is not "
                                 "UTF-8 text (byte 6"), res.stderr
    assert res.stderr.count("prices.json") == 1, res.stderr


def test_bad_set_value_is_a_clear_error(tmp_path):
    # F14 regression: a --set value that is not YAML gave a ParserError traceback
    _rows(tmp_path / "in.jsonl", 2)
    _merge_pipeline(tmp_path)
    res = _run(tmp_path, "validate", "p.yaml", "--set", "stages.0={name: [1")
    assert res.returncode == 2 and "--set stages.0:1: not valid YAML" in res.stderr and "Traceback" not in res.stderr, \
        res.stderr


def test_merge_of_non_object_rows_names_file_and_line(tmp_path):
    # F14 regression: AttributeError traceback, exit 1
    (tmp_path / "in.jsonl").write_text('{"id": 1, "x": 1}\n[1, 2]\n')
    _merge_pipeline(tmp_path)
    res = _run(tmp_path, "run", "p.yaml")
    assert res.returncode == 2 and "in.jsonl:2: expected a JSON object, got list" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "runs/p/m.jsonl").exists()


def test_merge_reports_ids_that_collide(tmp_path):
    # F15 regression: ids "1" and 1 both became t:1, and the next stage failed with "duplicate id"
    (tmp_path / "in.jsonl").write_text('{"id": "1", "prompt": "string id"}\n{"id": 1, "prompt": "int id"}\n')
    _merge_pipeline(tmp_path)
    res = _run(tmp_path, "run", "p.yaml")
    assert res.returncode == 2, res.stderr
    assert "in.jsonl:2: field 'id': 1 becomes 't:1', the same merged id as the row at" in res.stderr
    assert "in.jsonl:1" in res.stderr and not (tmp_path / "runs/p/m.jsonl").exists()
    (tmp_path / "in.jsonl").write_text('{"id": "1", "prompt": "a"}\n{"id": 2, "prompt": "b"}\n')
    assert _run(tmp_path, "run", "p.yaml").returncode == 0
    assert [r["id"] for r in read_jsonl(tmp_path / "runs/p/m.jsonl")] == ["t:1", "t:2"]


def test_complete_stage_with_rejected_rows_exits_1_without_traceback(tmp_path, make_server):
    # F14 regression: StageFailed came out as a traceback
    srv = make_server(FaultConfig(error_rate=0.3, seed=3))
    write_prompts(tmp_path / "in.jsonl", 20)
    (tmp_path / "p.yaml").write_text(
        f"name: t\nteacher: {{model: test-model, base_url: '{srv.base_url}', max_retries: 0}}\n"
        "stages:\n  - {name: c, kind: complete, input: in.jsonl}\n")
    res = _run(tmp_path, "run", "p.yaml")
    assert res.returncode == 1 and "error: [c] some rows failed for good: see c.rejects.jsonl" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    rejected = read_jsonl(tmp_path / "runs/t/c.rejects.jsonl")
    assert rejected and len(rejected) + len(read_jsonl(tmp_path / "runs/t/c.jsonl")) == 20
    assert json.loads((tmp_path / "runs/t/manifest.json").read_text())["stages"]["c"]["status"] == "failed"


def _file_size_limit(limit: int):
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def test_unwritable_run_dir_and_full_disk_are_one_clear_line(tmp_path):
    # F14 regression: OSError tracebacks with exit 1 (read-only run_dir, disk full)
    _rows(tmp_path / "in.jsonl", 3)
    (tmp_path / "afile").write_text("not a directory")
    _merge_pipeline(tmp_path, run_dir="afile/runs")
    res = _run(tmp_path, "run", "p.yaml")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: ") and "afile" in res.stderr
    # a stage whose output outgrows the space left: clear message, not exit 1, the manifest still valid
    _rows(tmp_path / "in.jsonl", 3000)
    _merge_pipeline(tmp_path)
    res = _run(tmp_path, "run", "p.yaml", preexec_fn=_file_size_limit(64 * 1024))
    assert res.returncode == 2 and "error: File too large" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert "rerun the same command to resume" in res.stderr
    man = json.loads((tmp_path / "runs/p/manifest.json").read_text())
    assert man["stages"]["m"]["status"] == "failed"
    assert _run(tmp_path, "run", "p.yaml").returncode == 0  # space back: it finishes
    assert len(read_jsonl(tmp_path / "runs/p/m.jsonl")) == 3000


@pytest.mark.train  # huggingface_hub comes with the [train] extra
def test_push_offline_is_one_clear_message(tmp_path):
    # F14 regression: push with the hub offline gave an OfflineModeIsEnabled traceback
    _rows(tmp_path / "in.jsonl", 3)
    _merge_pipeline(tmp_path)
    assert _run(tmp_path, "run", "p.yaml").returncode == 0
    res = _run(tmp_path, "push", "runs/p", "m", "someone/x", env=cli_env(HF_HUB_OFFLINE="1", HF_TOKEN="hf_fake"))
    assert res.returncode == 4 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: could not push to someone/x on the Hugging Face Hub: OfflineModeIsEnabled")
    assert len(res.stderr.strip().splitlines()) == 1


def test_push_without_huggingface_hub_is_one_clear_message(tmp_path):
    # without the [train] extra, push died with a ModuleNotFoundError traceback: now one line, exit 2
    _rows(tmp_path / "in.jsonl", 3)
    _merge_pipeline(tmp_path)
    assert _run(tmp_path, "run", "p.yaml").returncode == 0
    blocker = tmp_path / "no_hub" / "huggingface_hub"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('huggingface_hub is not installed (test)')\n")
    env = cli_env(HF_TOKEN="hf_fake")
    env["PYTHONPATH"] = f"{blocker.parent}{os.pathsep}{env['PYTHONPATH']}"
    res = _run(tmp_path, "push", "runs/p", "m", "someone/x", env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: ") and "pip install 'synthkd[train]'" in res.stderr, res.stderr


def test_validate_reads_a_bom_input_with_the_shared_reader(tmp_path):
    # F16 regression (follow-up): the complete stage's estimate had its own reader, so `synthkd validate`
    # died with an orjson traceback on a BOM that `synthkd complete` accepts.
    write_prompts(tmp_path / "plain.jsonl", 3)
    (tmp_path / "in.jsonl").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.jsonl").read_bytes())
    (tmp_path / "p.yaml").write_text("name: bom\nteacher: {model: test-model}\n"
                                     "stages:\n  - {name: comp, kind: complete, input: in.jsonl}\n")
    res = _run(tmp_path, "validate", "p.yaml")
    assert res.returncode == 0, res.stderr
    assert "| comp | complete | 3 |" in res.stdout, res.stdout
