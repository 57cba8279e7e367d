"""The user's own data in: every format ``datasets`` reads (jsonl, a JSON list, CSV/TSV, Parquet, a
``save_to_disk`` directory, a ``datasets`` cache directory, ``hf:`` specs), column maps, errors that name
file + line (or row) + field before any request, ``--limit`` dry runs, ``synthkd export`` and
``synthkd init``.  Every file is built in tmp_path from the Banking77 and arithmetic fixtures; the
teacher is the loopback TestServer; nothing reaches a hub (tests/conftest.py sets the offline variables)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from conftest import cli_env, read_jsonl, run_cli
from synthkd.errors import InputError
from synthkd.jsonl_io import check_paths, iter_jsonl, load_rows, scan_prompt_file
from synthkd.row_source import RowIndex, bind, parse_columns, source_kind
from synthkd.testing.server import FaultConfig, prompt_text_of

FX = Path(__file__).parent / "fixtures"
B77_CSV = FX / "tasks" / "banking77_subset.csv"  # text,category; 5 intents (see tests/fixtures/tasks/README.md)


def _b77(n: int | None = None) -> list[dict]:
    with open(B77_CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows[:n] if n else rows


def _formats(tmp_path: Path, rows: list[dict]) -> dict[str, Path]:
    """The same rows in every format: {kind: path}."""
    import datasets

    out: dict[str, Path] = {}
    out["csv"] = tmp_path / "b77.csv"
    with open(out["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows(rows)
    out["tsv"] = tmp_path / "b77.tsv"
    with open(out["tsv"], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category"], delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    out["json"] = tmp_path / "b77.json"
    out["json"].write_text(json.dumps(rows), encoding="utf-8")
    out["jsonl"] = tmp_path / "b77.jsonl"
    out["jsonl"].write_text("".join(json.dumps({"id": i, **r}) + "\n" for i, r in enumerate(rows)), encoding="utf-8")
    ds = datasets.Dataset.from_list(rows)
    out["parquet"] = tmp_path / "b77.parquet"
    ds.to_parquet(str(out["parquet"]))
    out["saved"] = tmp_path / "b77_saved"
    ds.save_to_disk(str(out["saved"]))
    cache = tmp_path / "hf-cache"
    datasets.load_dataset("parquet", data_files={"train": str(out["parquet"])}, cache_dir=str(cache))
    out["cache"] = cache
    return out


# ----------------------------------------------------------------------------------------------- reading
def test_every_format_gives_the_same_rows_with_the_same_ids(tmp_path):
    rows = _b77(30)
    paths = _formats(tmp_path, rows)
    expected = [{"id": i, **r} for i, r in enumerate(rows)]
    for kind, path in paths.items():
        got, locs = load_rows(path)
        assert got == expected, kind
        if kind in ("csv", "tsv"):
            assert locs[:3] == [2, 3, 4]  # the header is line 1
        elif kind == "jsonl":
            assert locs[:3] == [1, 2, 3]
        else:
            assert locs[:3] == [0, 1, 2] and str(locs[2]) == "row 2", kind
    assert source_kind(paths["cache"]) == source_kind(paths["saved"]) == "dir"


def test_a_column_map_renames_and_a_limit_stops(tmp_path):
    paths = _formats(tmp_path, _b77(12))
    for kind in ("csv", "parquet", "jsonl", "cache"):
        src = bind(paths[kind], {"prompt": "text", "label": "category"}, limit=5)
        rows, _ = load_rows(src)
        assert len(rows) == 5, kind
        assert set(rows[0]) == {"id", "prompt", "label"}, kind  # the mapped columns are renamed, not copied
        assert rows[4]["prompt"] == _b77(12)[4]["text"]
        assert scan_prompt_file(src).rows == 5  # every prompt reader sees the map
    with pytest.raises(InputError, match="field 'prompt' or 'messages': missing"):
        scan_prompt_file(paths["parquet"])
    with pytest.raises(InputError) as e:
        load_rows(bind(paths["csv"], {"prompt": "question"}))
    assert "b77.csv: column 'question' (read as field 'prompt') not found; its columns: text, category" in str(e.value)
    with pytest.raises(InputError, match="FIELD=COLUMN"):
        parse_columns(["prompt"])
    with pytest.raises(InputError, match="read as two fields"):
        parse_columns(["a=text", "b=text"])


def test_errors_name_the_line_of_a_csv_row_and_the_row_of_a_parquet_row(tmp_path):
    import datasets

    bad = tmp_path / "bad.csv"
    bad.write_text('id,prompt\n1,"a prompt\nover two lines"\n2,fine\n3,too,many\n4,\n', encoding="utf-8")
    with pytest.raises(InputError) as e:
        scan_prompt_file(bad)
    msg = str(e.value)
    assert "bad.csv:5: 3 values, the header has 2 columns" in msg  # the line the row starts on
    assert "bad.csv:6: field 'prompt': must be a non-empty string" in msg
    assert "bad.csv:2" not in msg and "bad.csv:4" not in msg
    pq = tmp_path / "p.parquet"
    datasets.Dataset.from_list([{"prompt": "x"}, {"prompt": ""}, {"prompt": "y"}]).to_parquet(str(pq))
    with pytest.raises(InputError, match=re.escape("p.parquet:row 1: field 'prompt': must be a non-empty string")):
        scan_prompt_file(pq)
    not_pq = tmp_path / "x.parquet"
    not_pq.write_text("hello")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        load_rows(not_pq)
    assert f"{RowIndex(7)}" == "row 7" and int(RowIndex(7)) == 7


def test_dataset_directories_and_hub_specs_are_checked_before_reading(tmp_path):
    import datasets

    paths = _formats(tmp_path, _b77(6))
    d = datasets.DatasetDict({"train": datasets.Dataset.from_list(_b77(4)), "test": datasets.Dataset.from_list(_b77(2))})
    d.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match="splits train, test: give one"):
        check_paths({"--input": tmp_path / "dd"})
    assert len(load_rows(Path(f"{tmp_path / 'dd'}:test"))[0]) == 2
    assert len(load_rows(tmp_path / "dd" / "train")[0]) == 4
    datasets.load_dataset("parquet", data_files={"train": str(paths["parquet"]), "test": str(paths["parquet"])},
                          cache_dir=str(tmp_path / "two"))
    with pytest.raises(InputError, match="a datasets cache with splits test, train"):
        check_paths({"--input": tmp_path / "two"})
    assert len(load_rows(Path(f"{tmp_path / 'two'}:test"))[0]) == 6
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is a directory, not a file or a dataset"):
        check_paths({"--input": tmp_path / "empty"})
    with pytest.raises(InputError, match="hf:org/name:split or hf:org/name:config:split"):
        check_paths({"--input": Path("hf:banking77")})
    check_paths({"--input": Path("hf:PolyAI/banking77:train")})  # well-formed: read later
    with pytest.raises(InputError) as e:  # offline (conftest), not in the cache: said, not a traceback
        load_rows(Path("hf:nobody/nothing:train"))
    assert "hf:nobody/nothing:train: cannot load it" in str(e.value) and "offline" in str(e.value)


def test_a_hub_dataset_is_read_from_the_local_cache_offline(tmp_path):
    """``hf:org/name:split`` with HF_DATASETS_OFFLINE=1: a data set the user downloaded before is read from the
    datasets cache (HF_DATASETS_CACHE).  The cache entry is laid out the way `load_dataset` stores a Hub data
    set (<org>___<name>/<config>/<version>/<hash>/<name>-<split>.arrow + dataset_info.json), made here from the
    fixture; a name not in the cache is one clear error."""
    import datasets
    import pyarrow.parquet as pq

    rows = [{"text": r["text"], "label": r["category"]} for r in _b77(10)]
    cache = tmp_path / "hf-datasets"
    src = tmp_path / "src.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(src))
    datasets.load_dataset("parquet", data_files={"train": str(src)}, cache_dir=str(cache))
    made = next(cache.rglob("parquet-train.arrow")).parent
    hub = cache / "someorg___banking-mini" / "default" / "0.0.0" / made.name
    hub.mkdir(parents=True)
    (hub / "banking-mini-train.arrow").write_bytes((made / "parquet-train.arrow").read_bytes())
    info = json.loads((made / "dataset_info.json").read_text())
    info.update(builder_name="parquet", dataset_name="banking-mini", config_name="default")
    info["splits"] = {"train": {**info["splits"]["train"], "dataset_name": "banking-mini"}}
    (hub / "dataset_info.json").write_text(json.dumps(info))
    env = cli_env(HF_DATASETS_CACHE=str(cache), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    res = run_cli("export", "-i", "hf:someorg/banking-mini:train", "-o", str(tmp_path / "out.parquet"), env=env)
    assert res.returncode == 0, res.stderr
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == [{"id": i, **r} for i, r in enumerate(rows)]
    res = run_cli("export", "-i", "hf:someorg/other:train", "-o", str(tmp_path / "o2.parquet"), env=env)
    assert res.returncode == 2 and "hf:someorg/other:train: cannot load it" in res.stderr
    assert "only a data set already in the datasets cache can be read" in res.stderr and "Traceback" not in res.stderr


# ---------------------------------------------------------------------------------------- commands
def test_complete_reads_a_csv_through_a_column_map_and_names_bad_rows_before_any_request(tmp_path, make_server):
    srv = make_server(FaultConfig())
    inp = tmp_path / "mine.csv"
    inp.write_text("qid,question,topic\nq1,What is 2 + 3?,math\nq2,Name a colour.,art\nq3,What is 4 * 5?,math\n")
    out = tmp_path / "out.jsonl"
    base = ["complete", "-i", str(inp), "-o", str(out), "-m", "test-model", "--base-url", srv.base_url]
    res = run_cli(*base, "--column", "prompt=question")  # ids: the row positions
    assert res.returncode == 0, res.stderr
    assert sorted((r["id"], r["prompt"]) for r in read_jsonl(out)) == [(0, "What is 2 + 3?"), (1, "Name a colour."),
                                                                  (2, "What is 4 * 5?")]
    assert _completions(srv) == 3
    res = run_cli(*base[:4], str(tmp_path / "o2.jsonl"), *base[5:], "--column", "prompt=nope")
    assert res.returncode == 2
    assert "mine.csv: column 'nope' (read as field 'prompt') not found; its columns: qid, question, topic" in res.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("qid,question\nq1,fine\nq2,\nq3,also fine\n")
    res = run_cli(*base[:2], str(bad), "-o", str(tmp_path / "o3.jsonl"), *base[5:], "--column", "prompt=question",
                  "--column", "id=qid")
    assert res.returncode == 2
    assert "bad.csv:3: field 'prompt': must be a non-empty string" in res.stderr
    assert not (tmp_path / "o3.jsonl").exists()
    assert _completions(srv) == 3  # neither the unknown column nor the bad row cost a request


def _completions(srv) -> int:
    by = srv.stats()["by_endpoint"]
    return by.get("/v1/chat/completions", 0) + by.get("/v1/completions", 0)


def test_complete_limit_is_a_dry_run_with_the_whole_input_estimate(tmp_path, make_server):
    srv = make_server(FaultConfig())
    inp = tmp_path / "p.parquet"
    import datasets

    datasets.Dataset.from_list([{"question": f"Question {i}: what is {i} plus {i}?"} for i in range(40)]).to_parquet(str(inp))
    out = tmp_path / "out.jsonl"
    res = run_cli("complete", "-i", str(inp), "-o", str(out), "-m", "test-model", "--base-url", srv.base_url,
                  "--column", "prompt=question", "--limit", "3", "--max-tokens", "50", env=cli_env(COLUMNS="120"))
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(out)) == 3
    assert _completions(srv) == 3
    s = res.stdout
    assert "dry run (--limit 3)" in s
    assert "| prompt 0" in s and "| Question 0: what is 0 plus 0?" in s  # the prompt, beside its answer
    answer0 = read_jsonl(out)[0]["completion"]
    assert answer0[:20] in s
    # the estimate is for the whole input (40 rows), as `synthkd validate` computes it
    assert re.search(r"\| dry_run \| complete \| 40 \| \d+ \| 2000 \|", s), s


def test_generate_limit_on_a_method_that_reads_rows_and_on_one_that_makes_them(tmp_path, make_server):
    from synthkd.testing.simulated import make_problems

    inp = tmp_path / "problems.csv"
    with open(inp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["problem", "solution"])
        for p in make_problems(25, seed=2):
            w.writerow([p.question, p.answer])
    out = tmp_path / "r.jsonl"
    res = run_cli("generate", "rationales", "--kind", "math", "-i", str(inp), "-o", str(out), "--n-demos", "0",
                  "--column", "question=problem", "--column", "answer=solution", "--limit", "4",
                  "-m", "simulated:arithmetic", "--summary-json", str(tmp_path / "s.json"))
    assert res.returncode == 0, res.stderr
    rows = read_jsonl(out)
    assert sorted(r["id"] for r in rows) == [0, 1, 2, 3]
    assert all(r["gold"] is not None for r in rows)  # the mapped answer column is the gold
    assert json.loads((tmp_path / "s.json").read_text())["requests_sent"] == 4
    assert "| prompt 0" in res.stdout and "| Q: " in res.stdout and "The answer is" in res.stdout
    assert re.search(r"\| dry_run \| generate\.rationales \| 25 \|", res.stdout), res.stdout
    # a method that reads no rows: --limit caps its results; a column map is refused (nothing to map)
    spec = FX / "tasks" / "banking77_spec.yaml"
    res = run_cli("generate", "tasks", "--spec", str(spec), "-o", str(tmp_path / "t.jsonl"), "--per-label", "4",
                  "-m", "simulated:arithmetic", "--column", "text=x")
    assert res.returncode == 2 and "reads no input rows" in res.stderr
    from synthkd.testing.banking77_responder import Banking77Responder

    srv = make_server(FaultConfig(), responder=Banking77Responder.from_dir())
    repo_spec = Path(__file__).resolve().parents[1] / "data" / "banking77" / "task_spec.yaml"
    res = run_cli("generate", "tasks", "--spec", str(repo_spec), "-o", str(tmp_path / "t.jsonl"), "--per-label", "10",
                  "-m", "test-model", "--base-url", srv.base_url, "--limit", "5")
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(tmp_path / "t.jsonl")) == 5  # the first 5 results, not 80
    assert "dry run (--limit 5)" in res.stdout and "| prompt " in res.stdout
    assert re.search(r"\| dry_run \| generate\.tasks \| \d+ \|", res.stdout), res.stdout
    assert "Unclosed" not in res.stderr and "Traceback" not in res.stderr  # stopping early leaves nothing open


# ------------------------------------------------------------------------------------------- export
def test_export_parquet_and_hf_round_trip_and_keep_mixed_fields(tmp_path):
    import datasets
    import pyarrow.parquet as pq

    rows = [{"id": 1, "text": "a", "answer": 3, "votes": [{"answer": 3, "count": 1}]},
            {"id": 2, "text": "b", "answer": "three", "extra": True},
            {"id": 3, "text": "c", "answer": None}]
    src = tmp_path / "stage.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run_cli("export", "-i", str(src), "--format", "parquet")
    assert res.returncode == 0, res.stderr
    assert "fields written as JSON text (mixed types): answer" in res.stdout
    t = pq.read_table(tmp_path / "stage.parquet").to_pylist()
    assert [r["id"] for r in t] == [1, 2, 3] and t[1]["extra"] is True and t[0]["extra"] is None
    assert [r["answer"] for r in t] == ["3", '"three"', None]
    res = run_cli("export", "-i", str(src), "--format", "parquet")
    assert res.returncode == 2 and "exists already; give --force" in res.stderr
    res = run_cli("export", "-i", str(src), "--format", "hf", "-o", str(tmp_path / "ds"))
    assert res.returncode == 0, res.stderr
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    assert ds.num_rows == 3 and ds[0]["votes"] == [{"answer": 3, "count": 1}]
    assert [r for _, r in iter_jsonl(tmp_path / "ds")][0]["text"] == "a"  # and synthkd reads it back


# ------------------------------------------------------------------------------------- init -> run
def _b77_responder(labels_of: dict[str, str], wrong_every: int = 5):
    """A teacher for the classification rationale prompt: the true label of the last ``Input:`` text, a
    wrong one for every ``wrong_every``-th text (by a hash of the text: a pure function of the request)."""
    import hashlib

    names = sorted(set(labels_of.values()))

    def respond(endpoint: str, body: dict) -> str:
        prompt = prompt_text_of(body)
        text = prompt.rsplit("Input:", 1)[-1].rsplit("\nA:", 1)[0].strip()
        label = labels_of.get(text)
        if label is None:
            return "I cannot tell."
        if int(hashlib.sha256(text.encode()).hexdigest(), 16) % wrong_every == 0:
            label = names[(names.index(label) + 1) % len(names)]
        return f"The customer's message is about {label.replace('_', ' ')}. So the answer is {label}."

    return respond


@pytest.mark.train
@pytest.mark.parametrize("source", ["parquet", "cache"])
def test_banking77_intent_pipeline_from_parquet_and_a_datasets_cache(tmp_path, make_server, monkeypatch, source):
    """init -> validate -> run --limit 30 on Banking77 rows given as a Parquet file and as a datasets cache
    directory: the teacher explains and labels each row, the consistency filter drops the planted wrong
    labels, a tiny student trains and is scored on held-out Banking77 rows of the 5 intents."""
    every = _b77()
    rows = [every[i] for i in range(0, len(every), 7)]  # every intent, in file order
    paths = _formats(tmp_path, rows)
    # held-out: other rows of the same 5 intents, with other column names (and no id) as a user's file may have
    test_rows = [{"text": r["text"], "label": r["category"]} for r in every[3::7]]
    labels_of = {r["text"].strip(): r["category"] for r in rows}
    srv = make_server(FaultConfig(), responder=_b77_responder(labels_of))
    monkeypatch.chdir(tmp_path)
    held = tmp_path / "heldout.jsonl"
    held.write_text("".join(json.dumps({"utterance": r["text"], "intent": r["label"]}) + "\n" for r in test_rows))
    res = run_cli("init", "--task", "classification", "-i", str(paths[source]), "-m", "test-model",
                  "--base-url", srv.base_url, "--eval-input", str(held), "-o", "b77.yaml")
    assert res.returncode == 0, res.stderr
    y = Path("b77.yaml").read_text()
    assert 'columns: {question: "text", answer: "category"}' in y
    assert "labels: [" in y and "card_arrival" in y and "age_limit" in y
    res = run_cli("validate", "b77.yaml")
    assert res.returncode == 0, res.stderr
    assert re.search(rf"\| rationales \| generate\.rationales \| {len(rows)} \|", res.stdout), res.stdout
    res = run_cli("run", "b77.yaml", "--limit", "30", timeout=600, env=cli_env(COLUMNS="120"))
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = next(Path("runs").glob("*-limit30"))
    rat = read_jsonl(run_dir / "rationales.jsonl")
    assert len(rat) == 30 and {r["gold"] for r in rat} <= set(labels_of.values())
    wrong = {r["id"] for r in rat if not r["correct"]}
    assert 0 < len(wrong) < 15
    kept = {r["id"] for r in read_jsonl(run_dir / "clean.jsonl")}
    assert kept and not (kept & wrong)  # the consistency filter dropped the teacher's wrong labels
    assert "== stage rationales (ran)" in res.stdout and "So the answer is" in res.stdout
    assert (run_dir / "eval" / "metrics.json").is_file()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["eval"]["counts"]["rows_in"] == 30  # the held-out rows are limited too


@pytest.mark.train
def test_init_validate_and_a_dry_run_on_a_csv_of_ones_own(tmp_path, make_server, monkeypatch):
    """The user's own CSV (their column names, no id column): `synthkd init` -> `validate` -> `run --limit 20`
    against the loopback server, which answers the arithmetic problems step by step."""
    from synthkd.testing.simulated import SimulatedResponder, make_problems

    monkeypatch.chdir(tmp_path)
    with open("homework.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Problem", "Result", "Difficulty"])
        for p in make_problems(60, seed=5):
            w.writerow([p.question, p.answer, "easy"])
    srv = make_server(FaultConfig(), responder=SimulatedResponder([], error_rate=0.2, noise_rate=0.0, copy_rate=0.0))
    res = run_cli("init", "--task", "math", "-i", "homework.csv", "-m", "test-model", "--base-url", srv.base_url)
    assert res.returncode == 0, res.stderr
    y = Path("pipeline.yaml").read_text()
    assert 'input: "homework.csv"' in y and 'columns: {question: "Problem", answer: "Result"}' in y
    assert 'gold_field: "Result"' in y
    res = run_cli("init", "--task", "math", "-i", "homework.csv", "-m", "test-model")
    assert res.returncode == 2 and "exists already" in res.stderr
    res = run_cli("validate", "pipeline.yaml")
    assert res.returncode == 0, res.stderr
    assert "| rationales | generate.rationales | 60 |" in res.stdout
    res = run_cli("run", "pipeline.yaml", "--limit", "20", timeout=600, env=cli_env(COLUMNS="120"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| rationales | generate.rationales | 60 |" in res.stdout  # the estimate is for all 60 rows
    run_dir = Path("runs") / "homework-math-limit20"
    assert len(read_jsonl(run_dir / "rationales.jsonl")) == 20
    assert "| Q: " in res.stdout and "The answer is" in res.stdout  # prompts beside the teacher's answers
    assert not (Path("runs") / "homework-math").exists()  # the full run's directory is untouched
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["eval"]["counts"]["rows_in"] == 20 and (run_dir / "eval" / "metrics.json").is_file()
    assert _completions(srv) == 20


def test_clean_and_a_pipeline_stage_read_through_a_column_map(tmp_path, make_server, monkeypatch):
    """`clean run --column` and a stage's `columns:` read a Parquet file's columns under the expected names."""
    import datasets

    rows = [{"utterance": r["text"], "intent": r["category"]} for r in _b77(20)]
    rows.append(dict(rows[3]))  # an exact duplicate, for exact_dedup to drop
    src = tmp_path / "mine.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(src))
    ops = tmp_path / "ops.yaml"
    ops.write_text("- {op: exact_dedup, fields: [text]}\n")
    res = run_cli("clean", "run", "-i", str(src), "--config", str(ops), "-o", str(tmp_path / "c.jsonl"),
                  "--column", "text=utterance")
    assert res.returncode == 0, res.stderr
    kept = read_jsonl(tmp_path / "c.jsonl")
    assert len(kept) == 20 and set(kept[0]) == {"id", "text", "intent"}
    res = run_cli("clean", "run", "-i", str(src), "--config", str(ops), "-o", str(tmp_path / "d.jsonl"))
    assert res.returncode == 2 and "mine.parquet:row 0: row id 0: field 'text': missing" in res.stderr
    srv = make_server(FaultConfig())
    monkeypatch.chdir(tmp_path)
    Path("p.yaml").write_text(f"""name: mapped
teacher: {{model: test-model, base_url: "{srv.base_url}"}}
stages:
  - name: answers
    kind: complete
    input: mine.parquet
    columns: {{prompt: utterance}}
""")
    res = run_cli("validate", "p.yaml")
    assert res.returncode == 0 and "| answers | complete | 21 |" in res.stdout, res.stdout + res.stderr
    res = run_cli("run", "p.yaml")
    assert res.returncode == 0, res.stderr
    out = read_jsonl(tmp_path / "runs" / "mapped" / "answers.jsonl")
    assert sorted(r["id"] for r in out) == list(range(21)) and out[0]["prompt"] and "intent" in out[0]
    Path("p.yaml").write_text(Path("p.yaml").read_text().replace("prompt: utterance", "prompt: question"))
    res = run_cli("validate", "p.yaml")  # the estimate reads the rows: a bad map is said before any run
    assert res.returncode == 2 and "column 'question' (read as field 'prompt') not found" in res.stderr


def test_decontaminate_reads_an_eval_set_in_parquet_and_csv(tmp_path):
    """The decontamination filter's eval file may be any table synthkd reads."""
    import datasets

    from conftest import clean_rows

    every = _b77(60)
    evals = [{"utterance": r["text"]} for r in every[:10]]
    datasets.Dataset.from_list(evals).to_parquet(str(tmp_path / "eval.parquet"))
    with open(tmp_path / "eval.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["utterance"])
        w.writerows([[e["utterance"]] for e in evals])
    rows = [{"id": i, "text": r["text"]} for i, r in enumerate(every)]  # rows 0-9 are the eval items
    for name in ("eval.parquet", "eval.csv"):
        d = tmp_path / name.replace(".", "_")
        d.mkdir()
        ops = [{"op": "decontaminate", "eval_file": str(tmp_path / name), "fields": ["text"],
                "eval_fields": ["utterance"], "ngram": 4}]
        _, kept, rejects = clean_rows(d, rows, ops)
        assert {r["id"] for r in rejects} >= set(range(10)), name
        assert all(r["id"] >= 10 for r in kept) and len(kept) >= 40, name
