"""SIGKILL and disk-full soak of ``synthkd run`` on a ready pipeline, against a counting teacher.

Why this exists: the promise "nothing paid for is lost, nothing is paid twice, and the bill we
report is the provider's" is about what happens when a run dies at a random instant — in a request,
in a cache write, in training, in the report — and when the disk fills up.  Unit tests pin each
mechanism; this script checks the whole thing the way a user meets it:

1. A teacher server runs in its own process (the simulated arithmetic teacher of the offline demo,
   behind :class:`synthkd.testing.server.TestServer`, with 5% HTTP 500s and 100-400 ms latency, so the teacher stages take seconds), so its
   request and token counts survive every kill of the client.
2. **Baseline**: the pipeline runs once, uninterrupted, into ``WORK/base``.
3. **Soak**: the same pipeline into ``WORK/soak`` (a fresh cache, the server's counters reset):
   ``--kills`` times started and SIGKILLed at a random instant, aimed at every stage in turn (a kill
   lands within the first 90% of the stage's baseline duration; a stage already passed gives its
   kill to the one running); the server's faults are paused for the last 0.6 s before each kill, so
   every request in flight at a kill is one it bills (see 4.).  Once (``--disk-full``,
   needs root to mount a tmpfs) the disk fills up during a stage, which must fail with one clear
   message, no traceback and an exit code other than 0 and 1; then rerun to completion.
4. **Checks**: every rows file of the run (``*.jsonl``: stage outputs and rejects) holds the same rows
   as the baseline's (compared by id, volatile fields such as ``cached`` and timings left out), no id
   twice; the eval results are equal; and the run's ledger (``manifest.json``, summed over stages and
   attempts) equals the server's own counts of requests, tokens and their cost.  The ledger prices a
   request in flight at a kill like the same request's answer in another attempt: exact when the
   provider answered it, which is why faults are paused just before a kill (no client can know
   whether an in-flight request would have been a 500).

Usage (from the repository root, in the project's venv; 10-30 minutes on 2 cores, by load)::

    python scripts/soak_pipeline.py                      # preference_distillation.yaml, 20 kills
    python scripts/soak_pipeline.py --kills 5 --no-disk-full --pipeline pipelines/svamp_step_by_step.yaml

It prints a table and exits 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FAULT_PAUSE_S = 0.6  # > the server's longest latency (400 ms): no fault is in flight at a kill
MODEL = "gpt-4o-mini"  # a priced model name, so the pipeline's max_cost works and cost can be checked
PRICE_IN, PRICE_OUT = 0.15, 0.60  # USD per 1M tokens, as in synthkd/data/prices.json
#: fields that legitimately differ between two runs of the same rows (cache hits, timings)
VOLATILE = {"cached", "seconds", "elapsed_s", "latency_s", "started", "finished", "updated"}


# ----------------------------------------------------------------------------- the teacher server
def serve(seed: int, error_rate: float) -> None:
    """Run the counting teacher in this process until killed; print ``READY <root-url>``."""
    from synthkd.testing.server import FaultConfig, TestServer
    from synthkd.testing.simulated import SimulatedResponder

    responder = SimulatedResponder([], error_rate=0.15, noise_rate=0.1, salt="sim")
    cfg = FaultConfig(latency_ms=250.0, latency_jitter_ms=150.0, error_rate=error_rate, seed=seed)
    srv = TestServer(cfg, responder=responder).start()
    print(f"READY {srv.url}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    srv.stop()


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: dict[str, Any] | None = None) -> None:
    req = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


# ----------------------------------------------------------------------------- running the pipeline
def run_cmd(pipeline: Path, runs: Path, extra_set: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "synthkd.cli", "run", str(pipeline), "--set", f"run_dir={runs}"]
    for s in extra_set:
        cmd += ["--set", s]
    return cmd


def child_env(base_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(SYNTHKD_TEACHER=MODEL, OPENAI_BASE_URL=base_url + "/v1", OPENAI_API_KEY="sk-soak-test-key",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    return env


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    f = open(log, "ab")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, preexec_fn=_default_signals)


def running_stage(run_dir: Path) -> str:
    try:
        stages = json.loads((run_dir / "manifest.json").read_text()).get("stages", {})
    except (OSError, ValueError):
        return "(start-up)"
    for name, rec in stages.items():
        if rec.get("status") == "running":
            return name
    return "(between stages)"


def stage_started_since(run_dir: Path, since_ns: int) -> str | None:
    """The stage this run marked "running" after ``since_ns`` (the manifest's mtime), else None (a killed
    run leaves its stage "running": only a save by the new process counts)."""
    try:
        if (run_dir / "manifest.json").stat().st_mtime_ns <= since_ns:
            return None
    except OSError:
        return None
    stage = running_stage(run_dir)
    return None if stage.startswith("(") else stage


def kill_targets(durations: dict[str, float], kills: int) -> list[str]:
    """The stage each kill aims at, in pipeline order: every stage at least ``kills // len`` kills, the
    rest to the longest stages (a stage's kill lands at a random instant within its baseline duration)."""
    names = list(durations)
    quota = dict.fromkeys(names, kills // len(names))
    for name in sorted(names, key=lambda n: -durations[n])[: kills - sum(quota.values())]:
        quota[name] += 1
    return [n for n in names for _ in range(quota[n])]


# ----------------------------------------------------------------------------- comparing runs
def _normalise(value: Any, roots: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v, roots) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list):
        return [_normalise(v, roots) for v in value]
    if isinstance(value, str):
        for r in roots:
            value = value.replace(r, "<RUN>")
    return value


def rows_by_id(path: Path, roots: tuple[str, ...]) -> tuple[dict[str, str], int]:
    """``{id: canonical row}`` and the number of duplicate ids in ``path``."""
    out: dict[str, str] = {}
    dups = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        key = json.dumps(row.get("id"), sort_keys=True) if isinstance(row, dict) and "id" in row else line
        if key in out:
            dups += 1
        out[key] = json.dumps(_normalise(row, roots), sort_keys=True)
    return out, dups


def compare_runs(base: Path, soak: Path) -> list[tuple[str, str, bool]]:
    checks: list[tuple[str, str, bool]] = []
    roots = (str(base), str(soak))
    files = sorted({p.relative_to(base) for p in base.rglob("*.jsonl")} | {p.relative_to(soak) for p in soak.rglob("*.jsonl")})
    # (the ledgers are not rows: they record attempts, which differ by design; checked against the server)
    files = [f for f in files if ".prev" not in str(f) and "checkpoint" not in str(f) and not f.name.endswith(".ledger.jsonl")]
    for rel in files:
        a, b = base / rel, soak / rel
        if not (a.exists() and b.exists()):
            checks.append((str(rel), f"only in {'baseline' if a.exists() else 'soak'}", False))
            continue
        ra, da = rows_by_id(a, roots)
        rb, db = rows_by_id(b, roots)
        differ = sum(1 for k in ra.keys() & rb.keys() if ra[k] != rb[k])
        missing, extra = len(ra.keys() - rb.keys()), len(rb.keys() - ra.keys())
        ok = differ == missing == extra == db == 0
        checks.append((str(rel), f"{len(rb)} rows; differ {differ}, missing {missing}, extra {extra}, "
                                 f"duplicate ids {db} (baseline {len(ra)} rows)", ok))
    for rel in sorted(p.relative_to(base) for p in base.rglob("*.json") if p.parent.name.startswith("eval")):
        a, b = base / rel, soak / rel
        same = b.exists() and _normalise(json.loads(a.read_text()), roots) == _normalise(json.loads(b.read_text()), roots)
        checks.append((str(rel), "equal" if same else "differs", same))
    return checks


def ledger(run_dir: Path) -> dict[str, float]:
    """Requests, tokens and cost that the run's manifest reports, summed over its stages (and the parts
    of them that are estimated / unknown / inconsistent: see ``synthkd.pipeline.ledger_totals``)."""
    man = json.loads((run_dir / "manifest.json").read_text())
    tot = {"requests": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0, "cost_usd": 0.0,
           "estimated_requests": 0.0, "estimated_completion_tokens": 0.0, "unknown_unreceived": 0.0,
           "journal_mismatch": 0.0, "interrupted_attempts": 0.0}
    for rec in man.get("stages", {}).values():
        t = rec.get("teacher") or {}
        est = t.get("estimated_unreceived") or {}
        t = {**t, "estimated_requests": est.get("requests", 0), "estimated_completion_tokens": est.get("completion_tokens", 0)}
        for k in tot:
            tot[k] += float(t.get(k, 0) or 0)
    return tot


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def server_bill(stats: dict[str, Any]) -> dict[str, float]:
    u = stats["usage"]
    # the client's one `GET /models` preflight per teacher is not a billed request
    billed = stats["requests_total"] - sum(n for ep, n in stats.get("by_endpoint", {}).items() if ep.endswith("/models"))
    cost = (u["prompt_tokens"] * PRICE_IN + u["completion_tokens"] * PRICE_OUT) / 1e6
    return {"requests": float(billed), "prompt_tokens": float(u["prompt_tokens"]),
            "completion_tokens": float(u["completion_tokens"]), "cost_usd": cost}


# ----------------------------------------------------------------------------- disk full
def fill_disk(mount: Path) -> Path:
    """Fill the tmpfs at ``mount`` to the last few KB with a ballast file; return its path."""
    ballast = mount / "ballast.bin"
    with open(ballast, "wb") as f:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    return ballast


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", type=Path, default=REPO / "pipelines" / "preference_distillation.yaml")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill instants and the server's faults")
    ap.add_argument("--error-rate", type=float, default=0.05, help="share of HTTP 500s from the teacher")
    ap.add_argument("--work", type=Path, default=None, help="scratch directory (default: a new temp dir)")
    ap.add_argument("--disk-full", action=argparse.BooleanOptionalAction, default=True,
                    help="one episode on a full disk (mounts a tmpfs: needs root; skipped with a note otherwise)")
    ap.add_argument("--tmpfs-size", default="768m")
    ap.add_argument("--set", dest="extra_set", action="append", default=[],
                    help="extra --set for both runs, e.g. stages.2.options.epochs=1 to make it quicker")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.seed, args.error_rate)
        return 0

    work = args.work or Path(tempfile.mkdtemp(prefix="synthkd-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir: {work}", flush=True)
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--seed", str(args.seed), "--error-rate", str(args.error_rate)],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    mounted: Path | None = None
    try:
        line = server.stdout.readline() if server.stdout else ""
        if not line.startswith("READY"):
            print(f"teacher server did not start: {line!r}")
            return 1
        root = line.split()[1]
        env = child_env(root)
        name = _pipeline_name(args.pipeline)

        # ---- baseline
        base_runs = work / "base" / "runs"
        _post(root + "/_reset")
        t0 = time.monotonic()
        rc = subprocess.run(run_cmd(args.pipeline, base_runs, args.extra_set), cwd=REPO, env=env,
                            stdout=open(work / "base.log", "wb"), stderr=subprocess.STDOUT).returncode
        t_base = time.monotonic() - t0
        base_bill = server_bill(_get(root + "/_stats"))
        print(f"baseline: exit {rc} in {t_base:.0f} s; server saw {base_bill['requests']:.0f} requests", flush=True)
        if rc != 0:
            print(f"baseline failed; see {work / 'base.log'}")
            return 1

        # ---- soak
        soak_root = work / "soak"
        soak_root.mkdir(exist_ok=True)
        if args.disk_full:
            if os.geteuid() == 0 and shutil.which("mount"):
                r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.tmpfs_size}", "tmpfs", str(soak_root)])
                mounted = soak_root if r.returncode == 0 else None
            if mounted is None:
                print("note: the disk-full episode needs root to mount a tmpfs: skipped")
        soak_runs = soak_root / "runs"
        run_dir = soak_runs / name
        _post(root + "/_reset")
        rng = random.Random(args.seed)
        log = work / "soak.log"
        kills: list[tuple[float, str]] = []
        base_man = json.loads((base_runs / name / "manifest.json").read_text())
        base_secs = {n: float(r.get("seconds") or 0.0) for n, r in base_man["stages"].items()}
        order = list(base_secs)
        teacher_stages = {n for n, r in base_man["stages"].items() if r.get("teacher")}
        targets = kill_targets(base_secs, args.kills)
        disk_full_at = args.kills // 2 if mounted else -1
        disk_full_result, disk_full_ok = ("not reached (the run finished first)", False) if mounted else ("skipped", True)
        attempt = 0
        while len(kills) < args.kills:
            if attempt == disk_full_at and not disk_full_result.startswith("filled"):
                # The disk fills up *during* a stage (once this run has started one), so the writes in
                # flight then (rows, cache, ledger, manifest, checkpoints) meet ENOSPC, not just start-up.
                with open(log, "ab") as f:
                    f.write(b"\n==== disk-full episode ====\n")
                err_path = work / "disk_full.stderr"
                since = _mtime_ns(run_dir / "manifest.json")
                with open(err_path, "wb") as err:
                    proc = subprocess.Popen(run_cmd(args.pipeline, soak_runs, args.extra_set), cwd=REPO, env=env,
                                            stdout=open(log, "ab"), stderr=err, preexec_fn=_default_signals)
                    full_in = "(finished first)"
                    while proc.poll() is None:
                        stage = stage_started_since(run_dir, since)
                        if stage is not None:
                            time.sleep(rng.uniform(0.2, 2.0))
                            # as before a kill: no request in flight when the disk fills is a 500 (the
                            # ledger prices an unanswered one like its answer elsewhere)
                            _post(root + "/_config", {"error_rate": 0})
                            time.sleep(FAULT_PAUSE_S)
                            full_in = running_stage(run_dir)
                            ballast = fill_disk(mounted)  # type: ignore[arg-type]
                            break
                        time.sleep(0.02)
                    try:
                        rc = proc.wait(timeout=1800)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        rc = proc.wait()
                _post(root + "/_config", {"error_rate": args.error_rate})
                stderr = err_path.read_text(errors="replace")
                with open(log, "a") as f:
                    f.write(stderr)
                if full_in != "(finished first)":
                    ballast.unlink()
                tb = "Traceback" in stderr
                lines = [ln for ln in stderr.splitlines() if ln.startswith("error")] or stderr.strip().splitlines()[-1:]
                disk_full_result = (f"filled in {full_in}: exit {rc}, {'TRACEBACK' if tb else 'no traceback'}: "
                                    + (lines[0] if lines else "(no message)")[:200])
                disk_full_ok = rc not in (0, 1) and not tb and full_in != "(finished first)"
                print(f"disk-full episode: {disk_full_result}", flush=True)
                attempt += 1
                continue
            # Aim at the next target stage: wait until this run starts a stage, then kill at a random
            # instant within that stage's baseline duration.  Faults are paused for the last
            # FAULT_PAUSE_S before the kill, so every request in flight at the kill is one the server
            # bills (whether an in-flight request would have been a 500 is unknowable to any client;
            # the ledger prices it like its answer, see synthkd.pipeline).
            target = targets[len(kills)]
            since = _mtime_ns(run_dir / "manifest.json")
            t_start = time.monotonic()
            proc = start(run_cmd(args.pipeline, soak_runs, args.extra_set), env, log)
            attempt += 1
            kill_at = paused = aimed = None
            while proc.poll() is None:
                now = time.monotonic()
                stage = stage_started_since(run_dir, since)
                if stage is not None and stage != aimed and order.index(stage) >= order.index(target):
                    # (re-)aim within the stage now running: a resumed stage may end long before its
                    # baseline duration, and a kill aimed past the run's end would never happen
                    target = aimed = stage
                    # early in the stage: a resumed stage ends sooner than its baseline, and a kill aimed past
                    # the end of the whole run would never happen (the soak wants all --kills)
                    kill_at = now + rng.uniform(0.05, 0.5) * max(0.5, base_secs.get(stage, 1.0))
                    if stage in teacher_stages:  # its first requests, too, were sent without faults
                        kill_at = max(kill_at, now + FAULT_PAUSE_S)
                    if paused is not None and kill_at - now > FAULT_PAUSE_S:
                        _post(root + "/_config", {"error_rate": args.error_rate})
                        paused = None
                elif stage is not None and aimed is None:
                    since = _mtime_ns(run_dir / "manifest.json")  # before the target: wait for the next stage
                if kill_at is not None and paused is None and now >= kill_at - FAULT_PAUSE_S:
                    _post(root + "/_config", {"error_rate": 0})  # faults off for the last FAULT_PAUSE_S
                    paused = now
                if kill_at is not None and now >= kill_at:
                    break
                time.sleep(0.02)
            if proc.poll() is not None:
                _post(root + "/_config", {"error_rate": args.error_rate})
                print(f"run finished (exit {proc.returncode}) before kill {len(kills) + 1}; "
                      f"{len(kills)} kills done", flush=True)
                break
            stage = running_stage(run_dir)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            _post(root + "/_config", {"error_rate": args.error_rate})
            delay = time.monotonic() - t_start
            kills.append((delay, stage))
            print(f"kill {len(kills):2d} after {delay:5.1f} s in {stage} (aimed at {target})", flush=True)
        proc = start(run_cmd(args.pipeline, soak_runs, args.extra_set), env, log)
        final_rc = proc.wait()
        soak_bill = server_bill(_get(root + "/_stats"))
        print(f"final run: exit {final_rc}", flush=True)

        # ---- checks
        checks = compare_runs(base_runs / name, run_dir)
        led = ledger(run_dir)
        for k in ("requests", "prompt_tokens", "completion_tokens"):
            checks.append((f"ledger {k}", f"manifest {led[k]:.0f} vs server {soak_bill[k]:.0f}", led[k] == soak_bill[k]))
        checks.append(("ledger cost_usd", f"manifest ${led['cost_usd']:.6f} vs server tokens x price "
                       f"${soak_bill['cost_usd']:.6f}", abs(led["cost_usd"] - soak_bill["cost_usd"]) < 5e-7))
        checks.append(("ledger parts", f"{led['interrupted_attempts']:.0f} interrupted attempts; in flight at a kill: "
                       f"{led['estimated_requests']:.0f} requests, {led['estimated_completion_tokens']:.0f} completion "
                       f"tokens (estimated from their answers); {led['unknown_unreceived']:.0f} never answered; "
                       f"journal mismatches {led['journal_mismatch']:.0f}",
                       led["unknown_unreceived"] == 0 and led["journal_mismatch"] == 0))
        checks.append(("final run", f"exit {final_rc}", final_rc == 0))
        if mounted:
            checks.append(("disk-full episode", disk_full_result, disk_full_ok))
        base_led = ledger(base_runs / name)
        checks.append(("baseline ledger requests", f"manifest {base_led['requests']:.0f} vs server {base_bill['requests']:.0f}",
                       base_led["requests"] == base_bill["requests"]))
        print()
        print(f"{len(kills)} SIGKILLs at: " + ", ".join(f"{d:.1f}s/{s}" for d, s in kills))
        per_stage = {n: sum(1 for _, st in kills if st == n) for n in order}
        other = len(kills) - sum(per_stage.values())
        print("kills per stage: " + ", ".join(f"{n} {c}" for n, c in per_stage.items())
              + (f", between stages / start-up {other}" if other else ""))
        print(f"teacher requests: baseline {base_bill['requests']:.0f}, soak {soak_bill['requests']:.0f} "
              f"(re-sent after kills: {soak_bill['requests'] - base_bill['requests']:.0f})")
        print()
        print("| check | result | ok |\n|---|---|---|")
        for what, res, ok in checks:
            print(f"| {what} | {res} | {'yes' if ok else '**NO**'} |")
        return 0 if all(ok for _, _, ok in checks) else 1
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        if mounted is not None:
            try:  # keep the soak's run dir (the tmpfs goes with the unmount) for a look at what differed
                shutil.copytree(mounted / "runs", work / "soak-runs", symlinks=True, dirs_exist_ok=True)
                print(f"soak run dir kept in {work / 'soak-runs'}")
            except OSError as exc:
                print(f"note: could not keep the soak run dir: {exc}")
            subprocess.run(["umount", "-l", str(mounted)])


def _pipeline_name(path: Path) -> str:
    import yaml

    return str(yaml.safe_load(path.read_text(encoding="utf-8"))["name"])


if __name__ == "__main__":
    sys.exit(main())
