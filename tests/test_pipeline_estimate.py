"""``synthkd validate``'s task-generation estimate counts the requests dedup losses cost (issue 18,
item 6: 75 estimated where 149 were needed): a prior keep rate before any run, the keep rate measured
on the stage's last run afterwards — against the real loopback server with the scripted Banking77
teacher, which plants seed copies and near-copies."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from conftest import REPO, cli_env, synthkd_cmd
from synthkd.methods.metrics import KEEP_RATE_PRIOR, expected_task_requests
from synthkd.testing.banking77_responder import Banking77Responder


@pytest.mark.parametrize("per_label, batch, cap, per_request, expected", [
    (40, 10, 16, 8.0, 5),    # the method's own first wave (keep rate 0.8): no top-up
    (40, 10, 16, 4.0, 10),   # half the items lost: first wave of 5, then 5 more
    (40, 10, 16, 10.0, 5),   # nothing lost: still the first wave (it is sized for 0.8)
    (40, 10, 6, 2.0, 6),     # the cap bounds it
    (15, 10, 4, 3.0, 4),     # first wave 2, kept 6; top-up ceil(9/3) = 3 -> capped at 4
])
def test_expected_requests_follow_the_methods_policy(per_label, batch, cap, per_request, expected):
    assert expected_task_requests(per_label, batch, cap, per_request) == expected


def _calls(stdout: str) -> int:
    m = re.search(r"\| tasks \| generate\.tasks \| (\d+) \|", stdout)
    assert m, stdout
    return int(m.group(1))


def _validate(where):
    """``synthkd validate p.yaml`` in ``where``, which must succeed."""
    res = subprocess.run(synthkd_cmd("validate", "p.yaml"), cwd=where, env=cli_env(), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr + res.stdout
    return res


def test_validate_estimates_dedup_losses_then_uses_the_measured_keep_rate(tmp_path, make_server):
    srv = make_server(responder=Banking77Responder.from_dir())
    shutil.copy(REPO / "data" / "banking77" / "task_spec.yaml", tmp_path / "task_spec.yaml")
    n, batch, labels = 10, 5, 8
    (tmp_path / "p.yaml").write_text(f"""name: est
teacher: {{model: test-model, base_url: "{srv.base_url}", concurrency: 8}}
stages:
  - name: tasks
    kind: generate.tasks
    options: {{spec: task_spec.yaml, per_label: {n}, batch_size: {batch}, seed: 0}}
""")
    validate = lambda: subprocess.run(synthkd_cmd("validate", "p.yaml"), cwd=tmp_path, env=cli_env(),  # noqa: E731
                                      capture_output=True, text=True, timeout=120)
    before = validate()
    assert before.returncode == 0, before.stderr
    cap = max(4, -(-4 * n // batch))
    assert _calls(before.stdout) == labels * expected_task_requests(n, batch, cap, batch * KEEP_RATE_PRIOR)
    assert f"keep rate {KEEP_RATE_PRIOR:.2f} after dedup (prior: no earlier run" in before.stdout
    assert f"at most {labels * cap}" in before.stdout
    assert srv.stats()["requests_total"] == 0  # validate spends nothing

    res = subprocess.run(synthkd_cmd("run", "p.yaml"), cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "runs/est/manifest.json").read_text())["stages"]["tasks"]["counts"]["method_metrics"]
    actual = m["requests"]
    old_rule = labels * -(-n // int(batch * 0.8))  # what validate said before: ceil(N / (batch * 0.8)) a label
    assert m["dedup_dropped"] > 0 and actual > old_rule  # dedup losses cost extra requests

    after = validate()
    assert after.returncode == 0, after.stderr
    assert f"keep rate {m['keep_rate']:.2f} after dedup (measured on this stage's last run, {m['candidates']} candidates)" \
        in after.stdout, after.stdout
    est = _calls(after.stdout)
    assert est == labels * expected_task_requests(n, batch, cap, m["items_per_request"] * m["keep_rate"])
    assert abs(est - actual) < abs(old_rule - actual)  # closer than the rule that ignored dedup


def test_a_relabel_stage_reading_generated_rows_is_estimated_from_their_expected_count(tmp_path, make_server):
    """A clean stage with a teacher op (relabel) on rows an earlier stage makes: validate counts one call a
    row from the rows that stage is expected to write (N x labels), not "-" (it used to leave the relabel
    calls of the ready intent pipeline out of the total), and a merge passes the count on."""
    srv = make_server(responder=Banking77Responder.from_dir())
    shutil.copy(REPO / "data" / "banking77" / "task_spec.yaml", tmp_path / "task_spec.yaml")
    n, labels = 6, 8
    (tmp_path / "p.yaml").write_text(f"""name: est2
teacher: {{model: test-model, base_url: "{srv.base_url}"}}
stages:
  - name: tasks
    kind: generate.tasks
    options: {{labels: task_spec.yaml, per_label: {n}, batch_size: 5, seed: 0}}
  - name: merged
    kind: merge
    inputs: {{a: tasks}}
  - name: relabel
    kind: clean
    input: merged
    options:
      ops:
        - {{op: relabel, labels: task_spec.yaml, policy: overwrite}}
""")
    res = _validate(tmp_path)
    m = re.search(r"\| relabel \| clean \| (\d+) \|", res.stdout)
    assert m and int(m.group(1)) == n * labels, res.stdout
    assert re.search(r"\| merged \| merge \| - \|", res.stdout), res.stdout  # no teacher call: no cost column
    assert f"relabel: {n * labels} input rows expected" in res.stdout
    total = re.search(r"\| \*\*total\*\* \| \| (\d+) \|", res.stdout)
    assert total and int(total.group(1)) == _calls(res.stdout) + n * labels
    assert srv.stats()["requests_total"] == 0


def test_a_sample_caps_the_teacher_calls_after_it_and_the_rows_passed_on(tmp_path, make_server):
    """clean: [sample n=5, relabel] over 30 generated rows costs 5 relabel calls, not 30, and a stage after
    it expects 5 rows; a sample after the teacher op leaves its calls alone."""
    srv = make_server(responder=Banking77Responder.from_dir())
    shutil.copy(REPO / "data" / "banking77" / "task_spec.yaml", tmp_path / "task_spec.yaml")
    n, labels = 6, 8  # 48 rows expected from the tasks stage
    (tmp_path / "p.yaml").write_text(f"""name: est3
teacher: {{model: test-model, base_url: "{srv.base_url}"}}
stages:
  - name: tasks
    kind: generate.tasks
    options: {{labels: task_spec.yaml, per_label: {n}, batch_size: 5, seed: 0}}
  - name: first
    kind: clean
    input: tasks
    options:
      ops:
        - {{op: sample, n: 5}}
        - {{op: relabel, labels: task_spec.yaml, policy: overwrite}}
  - name: second
    kind: clean
    input: tasks
    options:
      ops:
        - {{op: relabel, labels: task_spec.yaml, policy: overwrite}}
        - {{op: sample, n: 7}}
  - name: again
    kind: clean
    input: second
    options:
      ops:
        - {{op: relabel, labels: task_spec.yaml, policy: overwrite}}
""")
    res = _validate(tmp_path)
    calls = {name: int(m.group(1)) for name in ("first", "second", "again")
             if (m := re.search(rf"\| {name} \| clean \| (\d+) \|", res.stdout))}
    assert calls == {"first": 5, "second": n * labels, "again": 7}, res.stdout
    assert srv.stats()["requests_total"] == 0
