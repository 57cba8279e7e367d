"""``synthkd init``: a commented pipeline YAML for the user's own data, asking nothing.

Why: the shortest path from "I have data and an API key" to a run.  From a task kind, an input (any source
:mod:`synthkd.row_source` reads: jsonl, CSV, Parquet, a dataset directory, ``hf:``) and a teacher, it writes
the pipeline a practitioner would start from — teacher rationales (or, for instructions, the teacher's
answers) -> cleaning -> a student -> its evaluation — with the user's column names mapped (``columns:``),
the label set read from the data, and a comment on every choice.  The file is checked with the same
:func:`synthkd.pipeline.plan` as ``synthkd validate`` before it is written, so what ``init`` writes is a
pipeline ``validate`` accepts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from synthkd.errors import InputError
from synthkd.options import opt, register_feature

TASKS = ("classification", "math", "choice", "instructions")

#: column names tried, in order, when the user names none (lower-case comparison)
INPUT_GUESS = ("text", "question", "input", "prompt", "sentence", "utterance", "query", "problem", "instruction",
               "body", "content")
LABEL_GUESS = {
    "classification": ("label", "intent", "category", "class", "labels", "target", "gold", "answer"),
    "math": ("answer", "gold", "label", "solution", "target", "result"),
    "choice": ("answer", "answerkey", "answer_key", "label", "gold", "target"),
}
INSTRUCTION_GUESS = ("instruction", "prompt", "question", "input", "text", "query")
CHOICES_GUESS = ("choices", "options", "answers", "candidates")
#: a classification input with more distinct labels than this is refused (a label column that is free text)
MAX_LABELS = 500


@dataclass
class InitConfig:
    """The options of ``synthkd init`` (declared once; the command is generated from them)."""

    task: str = opt(help="What the student learns: classification (text -> label), math (question -> number), "
                         "choice (question + options -> option) or instructions (prompt -> answer).", choices=TASKS)
    input: str = opt(help="Your rows: jsonl, json, csv, tsv, parquet, a datasets save_to_disk/cache directory, or "
                          "hf:org/name[:config]:split.", flags=("-i",))
    teacher: str = opt(help="The teacher model (e.g. gpt-4o-mini; simulated:arithmetic offline).", flags=("-m",))
    output: Path = opt(Path("pipeline.yaml"), help="Where to write the pipeline YAML.", flags=("-o",))
    name: Optional[str] = opt(None, help="Pipeline name (default: from the input's file name).")
    base_url: Optional[str] = opt(None, help="The teacher's OpenAI-compatible base URL (default: the provider's).")
    input_field: Optional[str] = opt(None, help="Column with the text / question / instruction (default: guessed "
                                                "from the column names).")
    label_field: Optional[str] = opt(None, help="Column with the gold label / answer (default: guessed).")
    choices_field: Optional[str] = opt(None, help="choice: column with the list of options (default: guessed).")
    eval_input: Optional[str] = opt(None, help="Held-out rows to evaluate the student on (default: the input "
                                               "itself, which only checks that the pipeline runs).")
    student: str = opt("tiny", help="The student: a model directory, a Hub id, or tiny (a small random-init model, "
                                    "offline).")
    max_cost: Optional[float] = opt(None, help="The teacher's budget in USD (needs a known price for the model).",
                                    ge=0)
    force: bool = opt(False, help="Overwrite an existing output file.")


register_feature("init", InitConfig, command=("init",), stage=None)


def _q(value: Any) -> str:
    """A YAML scalar or flow sequence (JSON is YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _columns(path: str, limit: int = 1) -> tuple[list[str], list[dict[str, Any]]]:
    """The input's column names (its first row's, less a made-up id) and its first rows."""
    from synthkd.row_source import iter_rows

    rows: list[dict[str, Any]] = []
    for _, row in iter_rows(Path(path)):
        if not isinstance(row, dict):
            raise InputError([f"{path}: the first row is not an object with named columns"])
        rows.append(row)
        if len(rows) >= limit:
            break
    if not rows:
        raise InputError([f"{path}: no rows (the file is empty)"])
    return list(rows[0]), rows


def _pick(what: str, given: str | None, names: list[str], guesses: tuple[str, ...], path: str,
          flag: str, exclude: tuple[str | None, ...] = ()) -> str:
    if given is not None:
        if given not in names:
            raise InputError([f"{path}: {flag} {given!r}: no such column (columns: {', '.join(names)})"])
        return given
    lower = {n.lower(): n for n in names if n not in exclude and n != "id"}
    for g in guesses:
        if g in lower:
            return lower[g]
    raise InputError([f"{path}: which column holds the {what}? none of {', '.join(guesses)} is a column "
                      f"(columns: {', '.join(names)}); give it with {flag}"])


def _labels(path: str, field: str) -> list[str]:
    """The distinct values of the label column, in order of first appearance."""
    from synthkd.row_source import iter_rows

    seen: dict[str, None] = {}
    for loc, row in iter_rows(Path(path)):
        v = row.get(field) if isinstance(row, dict) else None
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        seen.setdefault(str(v).strip(), None)
        if len(seen) > MAX_LABELS:
            raise InputError([f"{path}:{loc}: field {field!r}: more than {MAX_LABELS} distinct values: is it "
                              "really the label column? give another with --label-field"])
    if len(seen) < 2:
        raise InputError([f"{path}: field {field!r}: fewer than 2 distinct labels; classification needs 2 or more"])
    return list(seen)


def _where(value: str, yaml_dir: Path) -> str:
    """A path as the pipeline names it: relative to the pipeline file's directory (how ``synthkd run`` reads
    it, from whichever directory it is run); an hf: spec as it is."""
    if value.startswith("hf:"):
        return value
    return os.path.relpath(Path(value).resolve(), yaml_dir.resolve())


def render(c: InitConfig) -> str:
    """The pipeline YAML text for ``c`` (reads the input's columns and, for classification, its labels)."""
    names, first = _columns(c.input)
    yaml_dir = Path(c.output).parent
    src = _where(c.input, yaml_dir)
    ev = _where(c.eval_input, yaml_dir) if c.eval_input else src
    name = c.name or _default_name(c.input, c.task)
    out = [
        f"# synthkd pipeline written by `synthkd init --task {c.task}` for {c.input}.",
        "# Check it and see what the whole run would cost:   synthkd validate " + str(c.output),
        "# Dry run on the first 20 rows (prompts, answers):  synthkd run " + f"{c.output} --limit 20",
        "# The real run (resumable; rerun to continue):      synthkd run " + str(c.output),
        "# Paths are relative to this file's directory.",
        f"name: {name}",
        "teacher:",
        f"  model: {_q(c.teacher)}",
    ]
    if c.base_url:
        out.append(f"  base_url: {_q(c.base_url)}")
    else:
        out.append("  # base_url: http://localhost:8000/v1   # an OpenAI-compatible server (default: the provider's)")
    out.append("  # the API key is read from OPENAI_API_KEY (ANTHROPIC_API_KEY for anthropic: models), never from here")
    out.append("  concurrency: 16")
    if c.max_cost is not None:
        out.append(f"  max_cost: {c.max_cost:g}   # USD: the run stops at this spend (rerun with more to finish)")
    else:
        out.append("  # max_cost: 5.0   # USD: stop at this spend (needs a known price for the model)")
    out.append("stages:")
    if c.task == "instructions":
        out += _instructions(c, names, src)
    else:
        out += _rationale_pipeline(c, names, first, src, ev)
    return "\n".join(out) + "\n"


def _default_name(value: str, task: str) -> str:
    import re

    base = value.split(":")[1] if value.startswith("hf:") else Path(value.rstrip("/")).stem
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", base.split("/")[-1]).strip("-_") or "data"
    return f"{base}-{task}"[:100]


def _map(pairs: dict[str, str]) -> str:
    """A ``columns:`` line for the fields whose column has another name ("" when none)."""
    m = {k: v for k, v in pairs.items() if k != v}
    return "    columns: {" + ", ".join(f"{k}: {_q(v)}" for k, v in m.items()) + "}" if m else ""


def _student(c: InitConfig, mode: str, extra: list[str]) -> list[str]:
    tiny = c.student == "tiny"
    out = [
        "  - name: student",
        "    kind: train.sft",
        "    input: clean",
        "    options:",
        f"      student: {_q(c.student)}" + ("   # a small random-init model, offline; put a model dir or Hub id "
                                             "(e.g. Qwen/Qwen2.5-0.5B) for a real student" if tiny else ""),
        f"      mode: {mode}",
        *extra,
        f"      epochs: {6 if tiny else 3}",
        f"      learning_rate: {0.002 if tiny else 2e-5}" + ("   # random init; about 2e-5 for a pretrained student"
                                                          if tiny else ""),
        "      batch_size: 16",
        "      max_length: 384",
    ]
    if tiny:
        out.append("      tiny: {hidden_size: 128, layers: 4, heads: 4, vocab_size: 1000}")
    return out


def _rationale_pipeline(c: InitConfig, names: list[str], first: list[dict[str, Any]], src: str, ev: str) -> list[str]:
    kind = {"classification": "classification", "math": "math", "choice": "choice"}[c.task]
    text = _pick("input text", c.input_field, names, INPUT_GUESS, c.input, "--input-field")
    label = _pick("gold label/answer", c.label_field, names, LABEL_GUESS[c.task], c.input, "--label-field",
                  exclude=(text,))
    choices = None
    if c.task == "choice":
        choices = _pick("list of options", c.choices_field, names, CHOICES_GUESS, c.input, "--choices-field",
                        exclude=(text, label))
    labels = _labels(c.input, label) if c.task == "classification" else None
    mapping = {"question": text, "answer": label}
    if choices:
        mapping["choices"] = choices
    ev_text, ev_label, ev_choices = text, label, choices
    if c.eval_input:  # held-out rows may name their columns otherwise: the same names if there, else guessed
        ev_names, _ = _columns(c.eval_input)
        if text not in ev_names:
            ev_text = _pick("input text", None, ev_names, INPUT_GUESS, c.eval_input, "--input-field")
        if label not in ev_names:
            ev_label = _pick("gold label/answer", None, ev_names, LABEL_GUESS[c.task], c.eval_input, "--label-field",
                             exclude=(ev_text,))
        if choices and choices not in ev_names:
            ev_choices = _pick("list of options", None, ev_names, CHOICES_GUESS, c.eval_input, "--choices-field",
                               exclude=(ev_text, ev_label))
    cons_kind = {"classification": "label", "math": "number", "choice": "choice"}[c.task]
    eval_kind = {"classification": "label", "math": "number", "choice": "choice"}[c.task]
    out = [
        "  # 1. The teacher explains and answers every row step by step (Distilling step-by-step, Hsieh et al.",
        "  #    2023); your gold answers score it.  Your columns are read under the names the stage expects:",
        "  - name: rationales",
        "    kind: generate.rationales",
        f"    input: {_q(src)}",
    ]
    line = _map(mapping)
    if line:
        out.append(line + "   # FIELD: your column")
    out += ["    options:", f"      kind: {kind}"]
    if labels is not None:
        out.append(f"      labels: {_q(labels)}   # the {len(labels)} labels found in column {label!r}")
    out += [
        "      n_demos: 0   # zero-shot; give demos: FILE (rows with a rationale) for few-shot prompts",
        "      # samples: 3 and temperature: 0.7 for self-consistency (3x the calls)",
        "  # 2. Keep rows whose teacher answer matches the gold one, without (near-)duplicates.",
        "  - name: clean",
        "    kind: clean",
        "    input: rationales",
        "    options:",
        "      ops:",
    ]
    cons = f"        - {{op: consistency, mode: gold, kind: {cons_kind}"
    if labels is not None:
        cons += f", labels: {_q(labels)}"
    out.append(cons + "}")
    out += [
        "        - {op: exact_dedup, fields: [input]}",
        "        - {op: near_dup, field: input, threshold: 0.8}",
        "  # 3. The student learns the answer and, as an auxiliary task, the rationale (multitask).",
    ]
    out += _student(c, "multitask", ["      rationale_weight: 0.5"])
    out += [
        "  # 4. Its accuracy" + (" on your held-out rows." if c.eval_input else
                                  " — on the training rows themselves: give held-out rows here (init --eval-input)."),
        "  - name: eval",
        "    kind: eval",
        f"    input: {_q(ev)}",
        "    options:",
        "      student: student",
        f"      kind: {eval_kind}",
        f"      input_field: {_q(ev_text)}",
        f"      gold_field: {_q(ev_label)}",
    ]
    if labels is not None:
        out.append(f"      labels: {_q(labels)}")
    if ev_choices:
        out.append(f"      choices_field: {_q(ev_choices)}")
    return out


def _instructions(c: InitConfig, names: list[str], src: str) -> list[str]:
    prompt = _pick("instruction", c.input_field, names, INSTRUCTION_GUESS, c.input, "--input-field")
    out = [
        "  # 1. The teacher answers every instruction.",
        "  - name: answers",
        "    kind: complete",
        f"    input: {_q(src)}",
    ]
    line = _map({"prompt": prompt})
    if line:
        out.append(line + "   # FIELD: your column")
    out += [
        "    options:",
        "      samples: 1",
        "  # 2. Drop refusals and (near-)duplicate instructions.",
        "  - name: clean",
        "    kind: clean",
        "    input: answers",
        "    options:",
        "      ops:",
        "        - {op: refusal, field: completion}",
        "        - {op: exact_dedup, fields: [prompt]}",
        "        - {op: near_dup, field: prompt, threshold: 0.8}",
        "  # 3. The student learns to answer like the teacher.",
    ]
    out += _student(c, "label", ["      input_field: prompt", "      answer_field: completion"])
    out += [
        "  # No eval stage: open-ended answers have no exact gold to score against; compare the student's",
        "  # answers with the teacher's (synthkd eval needs a number, choice, label or yes/no answer).",
    ]
    return out


def write_pipeline(c: InitConfig) -> Path:
    """Render, check with ``synthkd validate``'s plan, and write the pipeline; returns its path."""
    from synthkd.config import load_pipeline
    from synthkd.pipeline import plan
    from synthkd.row_source import source_problem

    out = Path(c.output)
    if out.exists() and not c.force:
        raise InputError([f"--output {out}: exists already; give --force to overwrite it, or another --output"])
    if out.is_dir():
        raise InputError([f"--output {out}: is a directory"])
    if not c.input.startswith("hf:") and not Path(c.input).exists() and source_problem(Path(c.input)) is None:
        raise InputError([f"--input {c.input}: file not found"])
    text = render(c)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.init.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        plan(load_pipeline(tmp))  # what `synthkd validate` checks (paths against the file's directory)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
