"""The run's record tells the same story everywhere (issue 18, item 6): cost "unknown" where no price is
known (never ``$0.0000``) in the manifest, the report and the run's summary line; each method's own
metrics (PromptMix's relabel agreement, generate tasks' dedup figures) in the manifest and the report,
equal to what ``synthkd generate ...`` reports — real CLI, real loopback server."""

from __future__ import annotations

import json
import shutil
import subprocess

from conftest import REPO, cli_env, synthkd_cmd, write_prompts
from synthkd.testing.banking77_responder import Banking77Responder


def _run(args, cwd, timeout=180):
    return subprocess.run(synthkd_cmd(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)


def _complete_pipeline(tmp_path, url, prices: str = "") -> None:
    write_prompts(tmp_path / "in.jsonl", 5)
    (tmp_path / "p.yaml").write_text(f"""name: c
teacher: {{model: no-such-priced-model, base_url: "{url}"{prices}}}
stages:
  - {{name: gen, kind: complete, input: in.jsonl}}
  - {{name: gen2, kind: complete, input: in.jsonl, options: {{samples: 2}},
     teacher: {{model: no-such-priced-model, base_url: "{url}", temperature: 0.5{prices}}}}}
""")


def test_no_price_is_unknown_cost_everywhere_never_zero(tmp_path, make_server):
    srv = make_server()
    _complete_pipeline(tmp_path, srv.base_url)
    res = _run(["run", "p.yaml"], tmp_path)
    assert res.returncode == 0, res.stderr
    man = json.loads((tmp_path / "runs/c/manifest.json").read_text())
    for name in ("gen", "gen2"):
        t = man["stages"][name]["teacher"]
        assert t["requests"] > 0 and t["cost_usd"] is None and t["price_known"] is False
    report = (tmp_path / "runs/c/report.md").read_text()
    assert "$0.0000" not in report
    assert report.count("unknown (no price for 'no-such-priced-model')") == 2
    assert "Total teacher cost: **unknown**" in report
    # the run's own lines say the same as the report (one formatter)
    assert "[gen] teacher: 5 requests (0 from cache), " in res.stderr and "cost unknown (no price for" in res.stderr
    assert "teacher cost: unknown (no price for the model of gen, gen2" in res.stderr
    # `synthkd complete` says "unknown" too for the same model (what the report must agree with)
    cli = _run(["complete", "--teacher", "no-such-priced-model", "--base-url", srv.base_url, "--input", "in.jsonl",
                "--output", "o.jsonl", "--no-cache"], tmp_path)
    assert cli.returncode == 0 and "cost unknown (no price for 'no-such-priced-model'" in cli.stderr


def test_a_known_price_is_the_same_figure_in_manifest_report_and_summary(tmp_path, make_server):
    srv = make_server()
    (tmp_path / "prices.json").write_text(json.dumps({"no-such-priced-model": {"input": 3.0, "output": 15.0}}))
    _complete_pipeline(tmp_path, srv.base_url, prices=", prices: prices.json")
    res = _run(["run", "p.yaml"], tmp_path)
    assert res.returncode == 0, res.stderr
    man = json.loads((tmp_path / "runs/c/manifest.json").read_text())
    costs = [man["stages"][n]["teacher"]["cost_usd"] for n in ("gen", "gen2")]
    assert all(c > 0 for c in costs) and all(man["stages"][n]["teacher"].get("price_known", True) for n in ("gen", "gen2"))
    total = f"${sum(costs):.4f}"
    report = (tmp_path / "runs/c/report.md").read_text()
    assert f"Total teacher cost: **{total}**" in report
    assert f"| ${costs[0]:.4f} |" in report and f"| ${costs[1]:.4f} |" in report
    assert f"teacher cost: {total}" in res.stderr
    # a rerun from the cache pays nothing: the figures stay those of the run that paid
    res = _run(["run", "p.yaml", "--from", "gen"], tmp_path)
    man2 = json.loads((tmp_path / "runs/c/manifest.json").read_text())
    assert [man2["stages"][n]["teacher"]["cost_usd"] for n in ("gen", "gen2")] == costs


def _labels(tmp_path):
    for f in ("labels.yaml", "task_spec.yaml"):
        shutil.copy(REPO / "data" / "banking77" / f, tmp_path / f)


def test_promptmix_relabel_agreement_is_in_the_manifest_and_report_as_on_the_cli(tmp_path, make_server):
    srv = make_server(responder=Banking77Responder.from_dir())
    _labels(tmp_path)
    opts = {"per_class": 2, "group_size": 2, "examples_per_call": 2, "seed": 0}
    (tmp_path / "p.yaml").write_text(f"""name: pm
teacher: {{model: test-model, base_url: "{srv.base_url}", concurrency: 8}}
stages:
  - name: tasks
    kind: generate.tasks
    options: {{spec: task_spec.yaml, per_label: 4, batch_size: 5, seed: 0}}
  - name: promptmix
    kind: generate.promptmix
    options: {{labels: labels.yaml, per_class: 2, group_size: 2, examples_per_call: 2, seed: 0}}
""")
    res = _run(["run", "p.yaml"], tmp_path)
    assert res.returncode == 0, res.stderr
    man = json.loads((tmp_path / "runs/pm/manifest.json").read_text())
    pm = man["stages"]["promptmix"]["counts"]["method_metrics"]
    conf = pm["confusion"]
    assert conf["compared"] > 0 and conf["agreement"] is not None
    assert pm["calls_answered"] == pm["calls_planned"] > 0 and pm["alpha_mean"] is not None
    # the CLI with the same settings and the same (cached) answers reports the very same metrics
    cli = _run(["generate", "promptmix", "--teacher", "test-model", "--base-url", srv.base_url, "--labels", "labels.yaml",
                "--output", "cli.jsonl", "--summary-json", "s.json",
                *[a for k, v in opts.items() for a in (f"--{k.replace('_', '-')}", str(v))]], tmp_path)
    assert cli.returncode in (0, 1), cli.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["confusion"] == conf
    for k in ("calls_planned", "calls_answered", "parsed", "kept", "rows_per_label", "alpha_mean"):
        assert summary[k] == pm[k], k
    report = (tmp_path / "runs/pm/report.md").read_text()
    assert "## Method metrics" in report and "### `promptmix` (generate.promptmix)" in report
    share = f"{100 * conf['agreement']:.1f}%"
    assert f"intended vs relabeled: agreement **{share}** ({conf['agree']}/{conf['compared']} rows compared" in report
    # generate tasks: its dedup figures, the ones `validate` measures the keep rate from
    tm = man["stages"]["tasks"]["counts"]["method_metrics"]
    assert tm["kept"] == 4 * 8 and tm["candidates"] >= tm["kept"] + tm["dedup_dropped"]
    assert tm["dedup_dropped"] == sum(n for r, n in tm["drops"].items() if "duplicate" in r or r == "seed_copy")
    assert 0 < tm["keep_rate"] <= 1
    assert f"- dedup dropped: {tm['dedup_dropped']}" in report and f"- keep rate: {tm['keep_rate']:.4f}" in report


def test_the_report_shows_re_asks_and_method_metrics_from_the_manifest_alone(tmp_path):
    # `synthkd report RUN_DIR` rebuilds from the manifest: re-asks of structured answers, a method's
    # metrics, an unpriced stage beside a priced one
    from synthkd.pipeline import claim_run_dir, read_manifest
    from synthkd.report import write_report

    run_dir = claim_run_dir(tmp_path / "runs" / "r", "r")
    man = read_manifest(run_dir / "manifest.json")
    man["stages"] = {
        "tasks": {"kind": "generate.tasks", "status": "done",
                  "counts": {"rows_in": 30, "rows_out": 12,
                             "method_metrics": {"kept": 12, "dedup_dropped": 15, "keep_rate": 0.4444, "drops": {}}},
                  "teacher": {"model": "m1", "requests": 7, "cached_answers": 0, "prompt_tokens": 70,
                              "completion_tokens": 700, "cost_usd": None, "price_known": False,
                              "structured_answers": 7, "reasks": 3, "reask_cost_usd": None, "structured_invalid": 1}},
        "rel": {"kind": "generate.relabel", "status": "done", "counts": {"rows_in": 12, "rows_out": 12},
                "teacher": {"model": "m2", "requests": 12, "cached_answers": 0, "prompt_tokens": 1,
                            "completion_tokens": 1, "cost_usd": 0.5}},
    }
    text = write_report(run_dir, man).read_text()
    assert "- structured answers 7: re-asked 3 (cost unknown), still invalid 1" in text
    assert "- dedup dropped: 15" in text and "- keep rate: 0.4444" in text
    assert "| unknown (no price for 'm1') |" in text and "| $0.5000 |" in text
    assert "Total teacher cost: **unknown** (no price for the model of tasks; the other stages: $0.5000;" in text
