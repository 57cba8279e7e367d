"""Files and the environment around `synthkd complete` (and the commands sharing its writers).

Findings F4 (paths that name one file), F14 (unusable paths, disk full), F16 (BOM, 64-bit ids, the
output lock) and audit mutant 23 (SIGTERM).  Every CLI run is a real subprocess against the loopback
test server; "unwritable" and "disk full" are real kernel refusals, not mocks:

* read-only directories: ``chmod 0o555``.  Root ignores permission bits, so when the tests run as root
  the child drops CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH from its capability bounding set before exec
  (``prctl(PR_CAPBSET_DROP)``, Linux), which makes the kernel apply the bits to it as to anyone;
* disk full: ``RLIMIT_FSIZE`` in the child (with SIGXFSZ ignored) makes the kernel fail the write that
  would grow a file past the limit with EFBIG, exactly where ENOSPC would fail it; synthkd treats both
  as "disk full".  Unlike a small tmpfs this needs no mount, so it works in CI containers.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_env, read_jsonl, run_cli, synthkd_cmd, write_prompts
from synthkd.jsonl_io import InputError, OutputLock, iter_jsonl, load_rows
from synthkd.testing.server import FaultConfig

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _args(tmp: Path, srv, *extra: str) -> list[str]:
    return ["complete", "-i", str(tmp / "in.jsonl"), "-o", str(tmp / "out.jsonl"), "-m", "test-model",
            "--base-url", srv.base_url, *extra]


def _defaults_in_child() -> None:
    """Default signal handlers in the child: pytest run in the background starts it with SIGINT ignored."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _as_unprivileged() -> None:
    """In the child: make permission bits apply even to root (see the module docstring)."""
    _defaults_in_child()
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed: run the tests as non-root")


def _run(args: list[str], preexec=_defaults_in_child, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(synthkd_cmd(*args), env=cli_env(), capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec)


def _one_clear_line(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert "Traceback" not in res.stderr, res.stderr
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1, res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr


@pytest.fixture
def readonly_dir(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    yield d
    d.chmod(0o755)  # so pytest can clean up


# ---------------------------------------------------------------------------------------------------
# F4: two options naming one file
# ---------------------------------------------------------------------------------------------------


def _link(kind: str, target: Path, at: Path) -> Path:
    if kind == "symlink":
        at.symlink_to(target)
    elif kind == "hardlink":
        os.link(target, at)
    else:
        return target
    return at


@pytest.mark.parametrize("flag,victim,kind", [
    ("--rejects", "in.jsonl", "same"),
    ("--rejects", "in.jsonl", "symlink"),
    ("--rejects", "in.jsonl", "hardlink"),
    ("--summary-json", "in.jsonl", "same"),
    ("--summary-json", "in.jsonl", "hardlink"),
    ("--rejects", "out.jsonl", "same"),          # a resume: the finished rows would be truncated
    ("--summary-json", "out.jsonl", "symlink"),
    ("--cache", "in.jsonl", "same"),
])
def test_an_option_naming_the_input_or_output_file_is_refused_before_anything_is_written(
        tmp_path, make_server, flag, victim, kind):
    # F4 regression
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 10)
    (tmp_path / "out.jsonl").write_text(json.dumps({"id": "q0", "completion": "done before"}) + "\n")
    before = {p: (tmp_path / p).read_bytes() for p in ("in.jsonl", "out.jsonl")}
    path = _link(kind, tmp_path / victim, tmp_path / f"alias-{victim}")
    res = _run(_args(tmp_path, srv, "--no-cache" if flag != "--cache" else "--max-retries=0", flag, str(path)))
    assert res.returncode == 2, res.stderr
    _one_clear_line(res, "names the same file as", str(path))
    assert {p: (tmp_path / p).read_bytes() for p in before} == before
    assert srv.stats()["requests_total"] == 0


def test_summary_json_naming_the_rejects_file_is_refused(tmp_path, make_server):
    # F4 regression
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 5)
    res = _run(_args(tmp_path, srv, "--no-cache", "--summary-json", str(tmp_path / "out.rejects.jsonl")))
    assert res.returncode == 2, res.stderr
    _one_clear_line(res, "--summary-json", "names the same file as rejects file")
    assert srv.stats()["requests_total"] == 0 and not (tmp_path / "out.jsonl").exists()


def test_generate_and_clean_refuse_an_output_naming_their_input(tmp_path):
    # F4 regression (the same check, shared by every command)
    (tmp_path / "in.jsonl").write_text('{"id": 1, "question": "1+1?", "answer": "2", "text": "a"}\n')
    before = (tmp_path / "in.jsonl").read_bytes()
    res = run_cli("generate", "rationales", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
                  "--kind", "math", "-m", "simulated:arithmetic", "--no-cache", "--n-demos", "0",
                  "--summary-json", str(tmp_path / "in.jsonl"))
    assert res.returncode == 2 and "names the same file as --input" in res.stderr, res.stderr
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "in.jsonl")
    res = run_cli("clean", "exact-dedup", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "link.jsonl"),
                  "--fields", "text")
    assert res.returncode == 2 and "names the same file as --input" in res.stderr, res.stderr
    assert (tmp_path / "in.jsonl").read_bytes() == before


def _failing_responder(failing: set[str]):
    def responder(endpoint, body):
        text = body["messages"][0]["content"] if "messages" in body else body["prompt"]
        if any(text.startswith(f"Question {i}:") for i in failing):
            raise ValueError("boom")  # a 500: rejected once retries are spent
        return f"answer to {text[:12]}"
    return responder


def test_rejects_of_an_earlier_attempt_are_kept_until_their_row_is_redone(tmp_path, make_server):
    # F4 regression: the rejects file was truncated at every start
    failing = {str(i) for i in range(10)}
    srv = make_server(responder=_failing_responder(failing))
    write_prompts(tmp_path / "all.jsonl", 10)
    args = ["complete", "-o", str(tmp_path / "out.jsonl"), "-m", "test-model", "--base-url", srv.base_url,
            "--no-cache", "--max-retries", "0"]
    assert _run([*args, "-i", str(tmp_path / "all.jsonl")]).returncode == 1
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "out.rejects.jsonl")) == sorted(f"q{i}" for i in range(10))
    # a second attempt reaches only q0..q3: q0, q1 now succeed, q2, q3 fail again; q4..q9 are not redone
    failing.difference_update({"0", "1"})
    write_prompts(tmp_path / "part.jsonl", 4)
    assert _run([*args, "-i", str(tmp_path / "part.jsonl")]).returncode == 1
    rej = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert sorted(r["id"] for r in rej) == sorted(f"q{i}" for i in range(2, 10))  # one entry each
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "out.jsonl")) == ["q0", "q1"]
    # everything succeeds: no stale entry is left
    failing.clear()
    assert _run([*args, "-i", str(tmp_path / "all.jsonl")]).returncode == 0
    assert read_jsonl(tmp_path / "out.rejects.jsonl") == []
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "out.jsonl")) == sorted(f"q{i}" for i in range(10))


# ---------------------------------------------------------------------------------------------------
# F14: unusable paths -> one line, exit 2, nothing paid for
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["output_dir", "input_dir", "cache_dir", "cache_not_db", "output_under_file"])
def test_unusable_path_is_one_clear_line_and_exit_2(tmp_path, make_server, case):
    # F14 regression
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 5)
    extra = ["--cache", str(tmp_path / "c.sqlite")]
    if case == "output_dir":
        (tmp_path / "out.jsonl").mkdir()
        needle = f"--output {tmp_path / 'out.jsonl'}: is a directory"
    elif case == "input_dir":
        (tmp_path / "in.jsonl").unlink()
        (tmp_path / "in.jsonl").mkdir()
        needle = f"--input {tmp_path / 'in.jsonl'}: is a directory"
    elif case == "cache_dir":
        (tmp_path / "c.sqlite").mkdir()
        needle = f"--cache {tmp_path / 'c.sqlite'}: is a directory"
    elif case == "cache_not_db":
        (tmp_path / "c.sqlite").write_text("just some text, not a database\n" * 10)
        needle = "is not a SQLite database"
    else:
        (tmp_path / "afile").write_text("x")
        extra += ["--summary-json", str(tmp_path / "afile" / "s.json")]
        needle = "is not a directory"
    res = _run(_args(tmp_path, srv, *extra))
    assert res.returncode == 2, res.stderr
    _one_clear_line(res, needle)
    assert srv.stats()["requests_total"] == 0


@pytest.mark.parametrize("flag", ["--output", "--rejects", "--summary-json", "--cache"])
def test_a_path_in_a_read_only_directory_is_refused_before_any_request(tmp_path, make_server, readonly_dir, flag):
    # F14 regression: --summary-json used to fail after every row had been paid for
    srv = make_server()
    write_prompts(tmp_path / "in.jsonl", 5)
    target = readonly_dir / "x.jsonl"
    args = _args(tmp_path, srv, *([] if flag == "--cache" else ["--no-cache"]), flag, str(target))
    if flag == "--output":
        args[args.index("-o") + 1] = str(target)
        args = args[:-2]
    res = _run(args, preexec=_as_unprivileged)
    assert res.returncode == 2, res.stderr
    _one_clear_line(res, str(target), f"cannot write in {readonly_dir}", "permission denied")
    assert srv.stats()["requests_total"] == 0


def test_disk_full_mid_run_stops_cleanly_and_a_rerun_resumes(tmp_path, make_server):
    # F14 regression: a traceback and "Unclosed client session"; now one line, what is kept, exit 2
    srv = make_server(FaultConfig(latency_ms=2))
    rows = write_prompts(tmp_path / "in.jsonl", 40)
    args = _args(tmp_path, srv, "--no-cache", "-c", "2")  # no cache: the only growing file is the output

    def small_disk() -> None:
        _defaults_in_child()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))

    res = _run(args, preexec=small_disk)
    assert res.returncode == 2, res.stderr
    _one_clear_line(res, str(tmp_path / "out.jsonl"), "disk full")
    assert "rerun the same command to resume" in res.stderr and "Unclosed" not in res.stderr, res.stderr
    data = (tmp_path / "out.jsonl").read_bytes()
    assert data.endswith(b"\n") and len(data) <= 4000  # whole rows only: the failed row was taken back
    kept = [json.loads(line) for line in data.splitlines()]
    assert 0 < len(kept) < 40
    res = _run(args)
    assert res.returncode == 0, res.stderr
    out = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in out) == sorted(r["id"] for r in rows)


# ---------------------------------------------------------------------------------------------------
# F16
# ---------------------------------------------------------------------------------------------------


def test_a_utf8_bom_before_the_first_row_is_accepted(tmp_path, make_server):
    # F16 regression
    srv = make_server()
    write_prompts(tmp_path / "plain.jsonl", 3)
    (tmp_path / "in.jsonl").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.jsonl").read_bytes())
    res = _run(_args(tmp_path, srv, "--no-cache"))
    assert res.returncode == 0, res.stderr
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "out.jsonl")) == ["q0", "q1", "q2"]
    rows, lines = load_rows(tmp_path / "in.jsonl")  # the readers of the generate commands too
    assert rows[0]["id"] == "q0" and lines == [1, 2, 3]
    assert [r["id"] for _, r in iter_jsonl(tmp_path / "in.jsonl")] == ["q0", "q1", "q2"]


def test_an_integer_id_beyond_64_bits_gets_its_own_message(tmp_path, make_server):
    # F16 regression: it was "must be a non-empty string or an integer" (the parser made it a float)
    srv = make_server()
    (tmp_path / "in.jsonl").write_text('{"id": 18446744073709551615, "prompt": "largest u64 is fine"}\n'
                                       '{"id": 99999999999999999999999, "prompt": "too big"}\n')
    res = _run(_args(tmp_path, srv, "--no-cache"))
    assert res.returncode == 2
    assert f"{tmp_path / 'in.jsonl'}:2: field 'id': integer id out of range (must fit in 64 bits" in res.stderr
    assert ":1:" not in res.stderr and srv.stats()["requests_total"] == 0


def test_second_writer_is_told_which_process_holds_the_output(tmp_path):
    # F16 regression: "invalid input: ...: another synthkd process is writing it", no pid
    out = tmp_path / "out.jsonl"
    (tmp_path / "link.jsonl").symlink_to(out)
    with OutputLock(out):
        with pytest.raises(InputError) as err:
            OutputLock(tmp_path / "link.jsonl").__enter__()  # the same file by another name
    msg = str(err.value)
    assert "another synthkd process is writing it" in msg and f"(pid {os.getpid()})" in msg
    assert "invalid input" not in msg  # an InputError all the same: exit 2


_HAMMER = r"""
import os, sys
from pathlib import Path
from synthkd.jsonl_io import InputError, OutputLock
d = Path(sys.argv[1]); overlaps = held = 0
for _ in range(int(sys.argv[2])):
    try:
        with OutputLock(d / "out.jsonl"):
            held += 1
            try:
                fd = os.open(d / "holder", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                overlaps += 1  # someone else holds the lock at the same time
                continue
            for _ in range(20):
                os.stat(d)
            os.close(fd)
            os.unlink(d / "holder")
    except InputError:
        pass  # busy: the normal answer
print(held, overlaps)
"""


def test_the_output_lock_has_one_holder_at_a_time(tmp_path):
    # F16 regression: the lock file was unlinked after unlocking, so a process could lock the old inode
    # while another locked a new one (measured on 8f1e175: hundreds of overlaps in this test)
    procs = [subprocess.Popen([sys.executable, "-c", _HAMMER, str(tmp_path), "400"], env=cli_env(),
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    results = [tuple(map(int, p.communicate(timeout=120)[0].split())) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(h for h, _ in results) > 0
    assert sum(o for _, o in results) == 0, results


# ---------------------------------------------------------------------------------------------------
# audit mutant 23: SIGTERM
# ---------------------------------------------------------------------------------------------------


def test_sigterm_stops_cleanly_with_130_and_a_rerun_completes(tmp_path, make_server):
    # audit mutant 23: `_install_sigterm()` -> `pass` went unnoticed (no test sent SIGTERM)
    srv = make_server(FaultConfig(latency_ms=50))
    rows = write_prompts(tmp_path / "in.jsonl", 60)
    out = tmp_path / "out.jsonl"
    args = _args(tmp_path, srv, "--cache", str(tmp_path / "c.sqlite"), "-c", "2")
    proc = subprocess.Popen(synthkd_cmd(*args), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_defaults_in_child)
    deadline = time.monotonic() + 60
    while not (out.exists() and out.read_bytes().count(b"\n") >= 5) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    assert proc.poll() is None and out.read_bytes().count(b"\n") < 60  # running, some rows but not all
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "rerun the same command to resume" in err and "Traceback" not in err
    data = out.read_bytes()
    assert data.endswith(b"\n")  # no torn line
    kept = [json.loads(line) for line in data.splitlines()]
    assert 0 < len(kept) < 60 and len({r["id"] for r in kept}) == len(kept)
    assert {r["id"] for r in kept} <= {r["id"] for r in rows}
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    ids = [r["id"] for r in read_jsonl(out)]
    assert sorted(ids) == sorted(r["id"] for r in rows)  # every id exactly once


def test_sigterm_stops_a_generate_command_cleanly_too(tmp_path, make_server):
    # audit §3 "SIGTERM -> clean stop, exit 130, resumable, for any command" (generate used to die at once)
    srv = make_server(FaultConfig(latency_ms=50))
    with open(tmp_path / "in.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"id": i, "question": f"What is {i} plus {i}?", "answer": str(2 * i)}) + "\n")
    out = tmp_path / "out.jsonl"
    args = ["generate", "rationales", "-i", str(tmp_path / "in.jsonl"), "-o", str(out), "--kind", "math",
            "--n-demos", "0", "-m", "test-model", "--base-url", srv.base_url, "--cache", str(tmp_path / "c.sqlite"),
            "-c", "2"]
    proc = subprocess.Popen(synthkd_cmd(*args), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_defaults_in_child)
    deadline = time.monotonic() + 60
    while not (out.exists() and out.read_bytes().count(b"\n") >= 3) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    assert proc.poll() is None and out.read_bytes().count(b"\n") < 40
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    assert out.read_bytes().endswith(b"\n")
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert sorted(r["id"] for r in read_jsonl(out)) == list(range(40))


def test_summary_json_says_why_a_run_stopped_on_sigterm_and_on_the_budget(tmp_path, make_server):
    # F1 follow-up regression: --summary-json was written only when the run reached its end (not on
    # SIGTERM/Ctrl-C), and had no field saying why a run stopped early.
    srv = make_server(FaultConfig(latency_ms=50))
    write_prompts(tmp_path / "in.jsonl", 60)
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    args = _args(tmp_path, srv, "--cache", str(tmp_path / "c.sqlite"), "-c", "2", "--summary-json", str(summary))
    proc = subprocess.Popen(synthkd_cmd(*args), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_defaults_in_child)
    deadline = time.monotonic() + 60
    while not (out.exists() and out.read_bytes().count(b"\n") >= 3) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    s = json.loads(summary.read_text())
    kept = len(read_jsonl(out))
    assert (s["exit_code"], s["stopped"], s["rows_written"]) == (130, "interrupted", kept)
    assert s["rows_not_started"] == 60 - kept - s["rows_rejected"] > 0
    # The budget: the rerun stops at once (every answer costs more than the budget left)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"test-model": {"input": 1000.0, "output": 1000.0}}))
    res = run_cli(*args, "--prices", str(prices), "--max-cost", "0.0001")
    assert res.returncode == 3, res.stderr
    s = json.loads(summary.read_text())
    assert (s["exit_code"], s["stopped"]) == (3, "budget") and s["rows_not_started"] > 0
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    s = json.loads(summary.read_text())
    assert (s["exit_code"], s["stopped"], s["rows_not_started"]) == (0, None, 0)
