"""One clear error per bad key (issue 18, item 6): an unknown key names the file, line, stage and key
with the known key it is probably a typo of, and a later stage reading that stage gets no second,
misleading "neither an earlier stage nor an existing file" error."""

from __future__ import annotations

import subprocess

from conftest import cli_env, synthkd_cmd, write_prompts


def _validate(tmp_path, text):
    write_prompts(tmp_path / "in.jsonl", 3)
    (tmp_path / "p.yaml").write_text(text)
    res = subprocess.run(synthkd_cmd("validate", "p.yaml"), cwd=tmp_path, env=cli_env(), capture_output=True, text=True)
    assert res.returncode == 2, res.stdout
    problems = [ln.strip() for ln in res.stderr.splitlines() if ln.startswith("  ")]
    return res.stderr, problems


def test_an_unknown_option_is_one_error_and_later_stages_are_not_blamed(tmp_path):
    err, problems = _validate(tmp_path, """name: x
teacher: {model: test-model}
stages:
  - name: gen
    kind: complete
    input: in.jsonl
    options:
      sampels: 2
  - name: clean
    kind: clean
    input: gen
    options:
      ops: [{op: exact_dedup, fields: [prompt]}]
  - name: both
    kind: merge
    inputs: {a: gen, b: clean}
""")
    assert problems == ["p.yaml:8: stages[0] (gen).options.sampels: unknown key 'sampels' (did you mean 'samples'?)"], err
    assert "neither an earlier stage" not in err


def test_an_unknown_stage_kind_is_one_error(tmp_path):
    err, problems = _validate(tmp_path, """name: x
stages:
  - {name: gen, kind: generate.taks, options: {spec: s.yaml}}
  - {name: m, kind: merge, inputs: {a: gen}}
""")
    assert len(problems) == 1, err
    assert problems[0].startswith("p.yaml:3: stages[0] (gen).kind: unknown stage kind 'generate.taks' "
                                  "(did you mean 'generate.tasks'?)"), err


def test_a_nested_unknown_key_names_its_path_and_the_close_key(tmp_path):
    err, problems = _validate(tmp_path, """name: x
stages:
  - name: sft
    kind: train.sft
    input: in.jsonl
    options:
      student: tiny
      tiny: {hiden_size: 32}
""")
    assert problems == ["p.yaml:8: stages[0] (sft).options.tiny.hiden_size: unknown key 'hiden_size' "
                        "(did you mean 'hidden_size'?)"], err


def test_unknown_keys_in_the_teacher_block_and_stage_say_what_was_meant(tmp_path):
    err, problems = _validate(tmp_path, """name: x
teacher: {model: test-model, concurency: 4}
stages:
  - name: gen
    kind: complete
    input: in.jsonl
    optons: {samples: 2}
""")
    assert problems == ["p.yaml:2: teacher.concurency: unknown key 'concurency' (did you mean 'concurrency'?)",
                        "p.yaml:7: stages[0].optons: unknown key 'optons' (did you mean 'options'?)"], err


def test_a_key_with_no_close_match_lists_the_known_ones(tmp_path):
    err, problems = _validate(tmp_path, """name: x
stages:
  - {name: m, kind: merge, inputs: {a: in.jsonl}, options: {zzz: 1}}
""")
    assert problems == ["p.yaml:3: stages[0] (m).options.zzz: unknown key 'zzz' (known: fields, require)"], err


def test_a_bad_input_is_one_error_not_also_a_missing_input(tmp_path):
    err, problems = _validate(tmp_path, """name: x
stages:
  - {name: a, kind: merge, inputs: {x: in.jsonl}}
  - {name: b, kind: merge, inputs: {x: aa}}
  - {name: c, kind: merge, inputs: {x: d}}
  - {name: d, kind: merge, inputs: {x: a}}
""")
    assert problems == [
        f"p.yaml:4: stages[1] (b).inputs.x: 'aa' is neither an earlier stage nor an existing file "
        f"({tmp_path / 'aa'}) (did you mean stage 'a'?)",
        "p.yaml:5: stages[2] (c).inputs.x: 'd' is a later stage (a stage reads only earlier ones)",
    ], err


def test_a_stage_reading_itself_is_refused_once(tmp_path):
    err, problems = _validate(tmp_path, """name: x
stages:
  - name: a
    kind: merge
    inputs:
      x: in.jsonl
      y: a
""")
    assert problems == ["p.yaml:7: stages[0] (a).inputs.y: a stage cannot read its own output"], err
