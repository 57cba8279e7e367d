"""`synthkd clean` as a user meets it: config errors naming file/index/key, strict vs lenient handling
of rows missing a field, each operator alone, and the files a run leaves (output, rejects, funnel)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from conftest import read_jsonl, run_cli
from synthkd.filters.chain import CleanPaths, clean_file
from synthkd.filters.op_config import parse_ops

FIX = Path(__file__).resolve().parent / "fixtures" / "filters"


def write_rows(path: Path, n: int = 400) -> list[dict]:
    premises = (FIX / "esnli_s1_test_head400.txt").read_text().splitlines()[:n]
    rows = [{"id": f"p{i}", "text": p, "label": lab} for i, (p, lab) in
            enumerate(zip(premises, (FIX / "esnli_labels_test_head400.txt").read_text().splitlines()))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def run(tmp_path: Path, config: str, *extra: str, rows_file: Path | None = None):
    cfg = tmp_path / "clean.yaml"
    cfg.write_text(config)
    inp = rows_file or tmp_path / "in.jsonl"
    if not inp.exists():
        write_rows(inp)
    return run_cli("clean", "run", "--input", str(inp), "--config", str(cfg), "--output", str(tmp_path / "out.jsonl"), *extra)


def test_config_errors_name_file_index_and_key(tmp_path):
    res = run(tmp_path, "- {op: exact_dedup}\n- {op: near_dupe, threshold: 0.9}\n")
    assert res.returncode == 2
    assert f"{tmp_path / 'clean.yaml'}: [1]: unknown operator 'near_dupe' (known: " in res.stderr
    assert "near_dup" in res.stderr
    res = run(tmp_path, "- op: exact_dedup\n- op: near_dup\n  treshold: 0.9\n")
    assert res.returncode == 2
    assert "clean.yaml: [1] near_dup: unknown option 'treshold' (known options: name, field, threshold," in res.stderr
    res = run(tmp_path, "- {op: near_dup, threshold: 1.5}\n- {op: format, require_pattern: '(unclosed'}\n")
    assert res.returncode == 2 and "[0] near_dup: option 'threshold': Input should be less than or equal to 1" in res.stderr
    res = run(tmp_path, "op: exact_dedup\n")
    assert res.returncode == 2 and "expected a non-empty list of operators" in res.stderr
    res = run(tmp_path, "- {op: format, require_pattern: '(unclosed'}\n")
    assert res.returncode == 2 and "option 'require_pattern': not a valid regular expression" in res.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_strict_missing_field_names_line_row_and_field_and_writes_nothing(tmp_path):
    rows = write_rows(tmp_path / "in.jsonl", 50)
    del rows[9]["text"]
    rows[20]["text"] = None
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "out.jsonl").write_text('{"id": "old"}\n')  # a previous result must survive a failed run
    res = run(tmp_path, "- {op: exact_dedup, fields: [text]}\n- {op: balance, label_field: category, max_per_label: 5}\n")
    assert res.returncode == 2
    assert f"{tmp_path / 'in.jsonl'}:10: row id 'p9': field 'text': missing (needed by operator 'exact_dedup')" in res.stderr
    assert "in.jsonl:1: row id 'p0': field 'category': missing (needed by operator 'balance')" in res.stderr
    assert read_jsonl(tmp_path / "out.jsonl") == [{"id": "old"}]
    assert not (tmp_path / "out.rejects.jsonl").exists()


def test_lenient_rejects_bad_rows_with_the_reason(tmp_path):
    rows = write_rows(tmp_path / "in.jsonl", 50)
    del rows[9]["text"]
    rows[20]["text"] = None
    lines = [json.dumps(r) for r in rows]
    lines.insert(30, "{not json")
    lines.insert(31, json.dumps({"text": "no id here"}))
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    res = run(tmp_path, "- {op: exact_dedup}\n- {op: exact_dedup, normalize: words}\n", "--lenient")
    assert res.returncode == 0, res.stderr
    rej = read_jsonl(tmp_path / "out.rejects.jsonl")
    out = read_jsonl(tmp_path / "out.jsonl")
    reasons = {(r["reject_op"], r["reject_reason"]) for r in rej}
    assert ("exact_dedup", "field 'text' missing") in reasons and ("exact_dedup", "field 'text' is null") in reasons
    assert ("input", "not valid JSON") in reasons and ("input", "field 'id' missing") in reasons
    assert next(r for r in rej if r["reject_reason"] == "not valid JSON")["line"] == 31
    assert len(out) + len(rej) == 52
    report = json.loads((tmp_path / "out.funnel.json").read_text())
    assert report["rows_in"] == 52 and report["rows_out"] == len(out) and report["accounted"]
    assert [s["name"] for s in report["stages"]] == ["input", "exact_dedup", "exact_dedup#2"]
    assert report["stages"][0]["dropped"] == 2
    assert "52 rows in" in res.stderr


def test_each_operator_runs_alone(tmp_path):
    rows = write_rows(tmp_path / "in.jsonl")
    res = run_cli("clean", "exact_dedup", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "a.jsonl"),
                  "--fields", "text", "--normalize", "words", "--report-dir", str(tmp_path / "rep"))
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(tmp_path / "a.jsonl")) == 135
    assert (tmp_path / "rep" / "funnel.md").read_text().startswith("# Cleaning funnel")
    res = run_cli("clean", "near-dup", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "b.jsonl"),
                  "--threshold", "0.9", "--rejects", str(tmp_path / "b.rej.jsonl"))
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(tmp_path / "b.jsonl")) + len(read_jsonl(tmp_path / "b.rej.jsonl")) == len(rows)
    # ... and keeps exactly what the operator keeps through the API on the same file (the 400 premises
    # are 135 distinct ones, each repeated, so at least 265 rows go)
    api = tmp_path / "api"
    api.mkdir()
    paths = CleanPaths(api / "out.jsonl", api / "rej.jsonl", api / "f.json", api / "f.md")
    asyncio.run(clean_file(tmp_path / "in.jsonl", parse_ops([{"op": "near_dup", "threshold": 0.9}]), paths,
                           progress=False))
    kept_api = [r["id"] for r in read_jsonl(paths.output)]
    assert [r["id"] for r in read_jsonl(tmp_path / "b.jsonl")] == kept_api
    assert 0 < len(kept_api) <= 135
    res = run_cli("clean", "balance", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "c.jsonl"),
                  "--equalize")
    assert res.returncode == 0, res.stderr
    counts = {}
    for r in read_jsonl(tmp_path / "c.jsonl"):
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    assert len(set(counts.values())) == 1 and len(counts) == 3
    res = run_cli("clean", "near_dup", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "d.jsonl"),
                  "--threshold", "2")
    assert res.returncode == 2 and "synthkd clean near_dup: [0] near_dup: option 'threshold'" in res.stderr
    res = run_cli("clean", "judge", "--help")
    assert res.returncode == 0 and "--top-fraction" in res.stdout and "--teacher" in res.stdout


def test_clean_accepts_a_utf8_bom_like_every_other_command(tmp_path):
    # F16 regression (follow-up): `clean` had its own jsonl reader and rejected the BOM others accept,
    # in strict mode (the prescan) and in lenient mode (the streaming read) alike.
    rows = [{"id": f"r{i}", "text": f"row number {i}"} for i in range(3)] + [{"id": "r3", "text": "row number 0"}]
    (tmp_path / "in.jsonl").write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode())
    for mode in ([], ["--lenient"]):
        res = run_cli("clean", "exact-dedup", "--input", str(tmp_path / "in.jsonl"), "--output",
                      str(tmp_path / "out.jsonl"), "--fields", "text", *mode)
        assert res.returncode == 0, res.stderr
        assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == ["r0", "r1", "r2"], mode
