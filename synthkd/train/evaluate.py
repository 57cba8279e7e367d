"""``synthkd eval``: score a student on a held-out set, list its mistakes, compare it with the teacher.

Why this shape:
* generation is the same batched, left-padded, greedy-by-default code the local teacher uses, and the
  prompt is built exactly as in training (chat template or plain format, plus the student's inference
  prefix, ``predict: `` for a multitask student), read from the student's ``synthkd_train.json``;
* answers are read with ``synthkd.answers.read_answer`` (``extract_answer`` after a ``</think>`` block), the
  same parser the generation methods use on teacher text and the tailored rounds use on the teacher's
  corrections, so student and teacher are scored by one rule whatever answer format each writes;
* every mistake is written as a row (the original row plus the student's output), which is the input
  of the tailored loop; a student whose outputs never match the label set is *reported*, not a crash.

Outputs (``--output DIR``): ``metrics.json``, ``report.md``, ``predictions.jsonl``, ``mistakes.jsonl``.
"""

from __future__ import annotations

import json
import math
import time
import typing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from synthkd.answers import NLI_LABELS, NLI_SYNONYMS, AnswerKind, numbers_equal, read_answer, safe_eval_arithmetic
from synthkd.jsonl_io import MAX_REPORTED_ERRORS, InputError
from synthkd.options import opt, register_feature
from synthkd.row_source import as_path
from synthkd.train.common import InputField
from synthkd.train.export import Fields, read_rows

KINDS = ("number", "choice", "label", "boolean")
LETTERS = "abcdefghij"


@dataclass
class EvalOptions:
    student: str
    input: Path
    kind: str = "number"
    fields: Fields = field(default_factory=Fields)
    gold_field: str = "gold"
    teacher_field: str | None = None
    choices_field: str = "choices"
    labels: list[str] | None = None
    out_of_scope: str | None = None  # the out-of-scope class: gold outside ``labels`` counts as it
    abstain_below: float | None = None  # predict out_of_scope when the answer's probability is lower
    synonyms: dict[str, list[str]] | None = None
    batch_size: int = 32
    max_new_tokens: int | None = None
    temperature: float = 0.0
    seed: int = 0                   # sampling seed (temperature > 0): k samples = k seeds
    limit: int | None = None
    out_dir: Path | None = None
    prefix: str | None = None  # None: the student's recorded inference prefix
    system: str | None = None
    tokenizer: str | None = None
    trust_remote_code: bool = False
    bf16: bool | None = False
    record_in_card: bool = False


def _label_list(text: str | list[str]) -> list[str]:
    """``--labels``: the label file (kept as one item, read by :func:`resolve_labels`), or a comma list."""
    if isinstance(text, list):
        return text
    if _is_label_file(text):
        return [text]
    return [x.strip() for x in text.split(",") if x.strip()]


def _is_label_file(value: str) -> bool:
    return Path(value).suffix.lower() in (".yaml", ".yml", ".json") or Path(value).is_file()


def resolve_labels(opts: "EvalOptions") -> None:
    """Read ``--labels FILE`` (the label file every feature uses): its labels, and its out_of_scope class
    unless ``--out-of-scope`` names one."""
    from synthkd.labels import LabelSpace

    if opts.labels and len(opts.labels) == 1 and _is_label_file(opts.labels[0]):
        space = LabelSpace.from_file(opts.labels[0])  # InputError naming file, line and field
        opts.labels = list(space.labels)
        if opts.out_of_scope is None:
            opts.out_of_scope = space.out_of_scope
    if opts.out_of_scope and opts.labels and opts.out_of_scope not in opts.labels:
        opts.labels = [*opts.labels, opts.out_of_scope]


@dataclass(kw_only=True)
class EvalConfig(InputField):
    """Every option of an evaluation, flat: ``synthkd eval``'s flags, the ``eval`` stage's keys and the
    Python API (``run_eval(EvalConfig(student=..., input=...))``)."""

    student: str = opt(help="Student: a model directory or a Hub id (org/name).", flags=("-s",),
                       stage=False)  # a stage may name an earlier train stage: declared in the stage
    input: Path = opt(help="Held-out rows jsonl: {id, input|question, gold, [teacher answer], [choices]}.",
                      flags=("-i",), stage=False)  # a stage's input is its ``input:``
    kind: str = opt("number", help="number, choice, label or boolean (yes/no, true/false).", flags=("-k",), choices=KINDS)
    labels: list[str] | None = opt(None, help="label kind: the label file (YAML/JSON, as generate tasks and "
                                   "promptmix read it), or a comma-separated label set, or 'nli'.",
                                   cli_type=Optional[str], cli_parse=_label_list)
    out_of_scope: str | None = opt(None, help="label kind: the out-of-scope class (default: the label file's "
                                   "out_of_scope). Gold labels outside --labels count as out-of-scope, and the "
                                   "metrics add in-scope accuracy and out-of-scope recall (CLINC150-style).")
    abstain_below: float | None = opt(None, help="label kind, with an out-of-scope class: predict out-of-scope when "
                                      "the student's probability of its answer is below this (0-1).", ge=0, le=1)
    gold_field: str = opt("gold", help="Gold answer field.")
    teacher_field: str | None = opt(None, help="Field with the teacher's answer on the same rows (adds the "
                                               "comparison line).")
    choices_field: str = opt("choices", help="choice kind: field with the options.")
    output: Path | None = opt(None, help="Write metrics.json, report.md, predictions.jsonl, mistakes.jsonl here.",
                              flags=("-o",), aliases=("--out",),
                              stage=False)  # a stage writes runs/<name>/<stage>
    batch_size: int = opt(32, help="Generation batch size.", ge=1)
    max_new_tokens: int | None = opt(None, help="Default: 32 for label/multitask students, 256 for rationale ones, 512 for think ones.",
                                     ge=1)
    temperature: float = opt(0.0, help="0 = greedy (default).", ge=0)
    seed: int = opt(0, help="Sampling seed (with --temperature > 0).")
    limit: int | None = opt(None, help="Only the first N rows.", ge=1)
    prefix: str | None = opt(None, help="Override the student's inference prefix (e.g. 'predict: ').")
    system: str | None = opt(None, help="System message for every prompt.")
    bf16: bool = opt(False, help="Load the student in bf16 (falls back to fp32 on CPU).")
    tokenizer: str | None = opt(None, help="Tokenizer directory or Hub id, if not next to the weights.")
    trust_remote_code: bool = opt(False, help="Allow model/tokenizer code shipped with the student (off by default).")
    record_in_card: bool = opt(False, help="Append the result to the student's model card.",
                               stage=False)  # a stage does not edit an earlier stage's model
    synonyms: dict[str, list[str]] | None = opt(None, help="label kind: extra spellings of each label.",
                                                cli=False, stage=False)  # Python only

    def to_options(self) -> EvalOptions:
        return EvalOptions(student=self.student, input=as_path(self.input), kind=self.kind,
                           fields=Fields(id=self.id_field, input=self.input_field), gold_field=self.gold_field,
                           teacher_field=self.teacher_field, choices_field=self.choices_field,
                           labels=list(self.labels) if self.labels else None, synonyms=self.synonyms,
                           out_of_scope=self.out_of_scope, abstain_below=self.abstain_below,
                           batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                           temperature=self.temperature, seed=self.seed, limit=self.limit, out_dir=self.output,
                           prefix=self.prefix, system=self.system, tokenizer=self.tokenizer,
                           trust_remote_code=self.trust_remote_code, bf16=self.bf16,
                           record_in_card=self.record_in_card)


register_feature("eval", EvalConfig, command=("eval",), stage="eval")


@dataclass
class EvalRow:
    row: dict[str, Any]
    id: str
    text: str
    gold: Any
    choices: list[str] | None = None


# --------------------------------------------------------------------------------------------------
# gold and predictions as comparable values
# --------------------------------------------------------------------------------------------------


def gold_value(v: Any, kind: str, *, choices: Sequence[str] | None = None,
               labels: Sequence[str] | None = None) -> tuple[Any, str | None]:
    """(normalised gold, problem): a float, a choice index or a canonical label."""
    if kind == "number":
        if isinstance(v, bool) or v is None:
            return None, "must be a number or an arithmetic expression"
        if isinstance(v, (int, float)):
            return float(v), None
        if isinstance(v, str):
            try:
                return float(v.replace(",", "")), None
            except ValueError:
                try:
                    return safe_eval_arithmetic(v), None
                except (ValueError, ZeroDivisionError, SyntaxError):
                    return None, f"{v!r} is not a number or an arithmetic expression"
        return None, f"must be a number, got {type(v).__name__}"
    if kind == "choice":
        n = len(choices or [])
        if isinstance(v, int) and not isinstance(v, bool):
            return (v, None) if 0 <= v < n else (None, f"index {v} out of range for {n} choices")
        if isinstance(v, str):
            s = v.strip().lower().strip("()")
            if len(s) == 1 and s in LETTERS[:n]:
                return LETTERS.index(s), None
            for i, c in enumerate(choices or []):
                if c.strip().lower() == v.strip().lower():
                    return i, None
        return None, f"{v!r} is neither an option letter, an index nor one of the choices"
    if kind == "boolean":
        if isinstance(v, bool):
            return v, None
        key = str(v).strip().lower()
        if key in ("yes", "true", "1"):
            return True, None
        if key in ("no", "false", "0"):
            return False, None
        return None, f"{v!r} is not yes/no or true/false"
    labs = list(labels or [])
    if isinstance(v, int) and not isinstance(v, bool):
        return (labs[v], None) if 0 <= v < len(labs) else (None, f"index {v} out of range for labels {labs}")
    if isinstance(v, str):
        for lab in labs:
            if lab.lower() == v.strip().lower():
                return lab, None
    return None, f"{v!r} is not one of the labels {labs}"


def predicted_value(text: str | Any, kind: str, *, choices: Sequence[str] | None = None,
                    labels: Sequence[str] | None = None, synonyms: Mapping[str, Sequence[str]] | None = None,
                    question: str | None = None) -> tuple[Any, str | None]:
    """(value, reason) from model text (via :func:`synthkd.answers.read_answer`, the reading the tailored
    rounds use too) or from an already-structured answer.  ``question`` (the row's input) lets the reading
    pick the quantity a question asks for among several stated, and read a claim answering a yes/no question."""
    if not isinstance(text, str):
        if text is None:
            return None, "no answer"
        g, why = gold_value(text, kind, choices=choices, labels=labels)
        return g, why and "unusable answer"
    # a think-mode student's answer follows its reasoning: read_answer reads the text after </think>
    ans = read_answer(text, typing.cast(AnswerKind, kind), choices=list(choices) if choices else None,
                      labels=list(labels) if labels else None, synonyms=synonyms, question=question)
    return ans.value, ans.reason


def same(a: Any, b: Any, kind: str) -> bool:
    if a is None or b is None:
        return False
    if kind == "number":
        return numbers_equal(a, b)
    return a == b


# --------------------------------------------------------------------------------------------------
# scoring (pure)
# --------------------------------------------------------------------------------------------------


def class_name(v: Any, kind: str) -> str:
    if v is None:
        return "(none)"
    if kind == "choice":
        return f"({LETTERS[v]})" if isinstance(v, int) and v < len(LETTERS) else str(v)
    return str(v)


def score(golds: Sequence[Any], preds: Sequence[Any], kind: str, *, reasons: Sequence[str | None] | None = None,
          labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy, answer rate, failure reasons; for choice/label also macro-F1 and a per-label breakdown.

    Macro-F1 averages F1 over the classes that occur as gold or as a prediction (an unanswered row is a
    miss for its gold class, never a class of its own), as scikit-learn does by default.
    """
    n = len(golds)
    correct = [same(p, g, kind) for p, g in zip(preds, golds)]
    answered = sum(p is not None for p in preds)
    m: dict[str, Any] = {
        "rows": n,
        "correct": sum(correct),
        "accuracy": (sum(correct) / n) if n else 0.0,
        "answered": answered,
        "answer_rate": (answered / n) if n else 0.0,
    }
    if reasons is not None:
        m["no_answer_reasons"] = dict(Counter(r for p, r in zip(preds, reasons) if p is None and r).most_common())
    if kind in ("choice", "label", "boolean"):
        seen = {class_name(v, kind) for v in list(golds) + list(preds) if v is not None}
        if kind == "label" and labels:  # in the order the labels were given
            classes = [lab for lab in labels if lab in seen] + sorted(seen - set(labels))
        else:
            classes = sorted(seen)
        per: dict[str, dict[str, Any]] = {}
        f1s = []
        for c in classes:
            tp = sum(1 for p, g in zip(preds, golds) if class_name(g, kind) == c and class_name(p, kind) == c)
            support = sum(1 for g in golds if class_name(g, kind) == c)
            predicted = sum(1 for p in preds if class_name(p, kind) == c)
            prec = tp / predicted if predicted else 0.0
            rec = tp / support if support else 0.0
            f1 = 2 * prec * rec / (prec + rec) if (prec + rec) else 0.0
            per[c] = {"support": support, "predicted": predicted, "correct": tp, "precision": prec,
                      "recall": rec, "f1": f1}
            f1s.append(f1)
        m["macro_f1"] = sum(f1s) / len(f1s) if f1s else 0.0
        m["per_label"] = per
    return m


def oos_metrics(golds: Sequence[Any], preds: Sequence[Any], oos: str) -> dict[str, Any]:
    """Intent-benchmark metrics with an out-of-scope class (Larson et al. 2019, CLINC150): accuracy on the
    in-scope rows (an in-scope row predicted out-of-scope is wrong), out-of-scope recall (the share of
    out-of-scope rows predicted out-of-scope) and precision, and the rows of each."""
    ins = [(g, p) for g, p in zip(golds, preds) if g != oos]
    outs = [p for g, p in zip(golds, preds) if g == oos]
    predicted_oos = sum(p == oos for p in preds)
    hit = sum(p == oos for p in outs)
    return {
        "in_scope_rows": len(ins),
        "in_scope_accuracy": (sum(g == p for g, p in ins) / len(ins)) if ins else None,
        "oos_rows": len(outs),
        "oos_recall": (hit / len(outs)) if outs else None,
        "oos_precision": (hit / predicted_oos) if predicted_oos else None,
        "predicted_oos": predicted_oos,
    }


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def comparison_line(student_acc: float, teacher_acc: float, n: int) -> str:
    gap = 100 * (student_acc - teacher_acc)
    return (f"student {pct(student_acc)} vs teacher {pct(teacher_acc)} on the same {n} rows "
            f"({gap:+.1f} points; student/teacher = {student_acc / teacher_acc:.2f})" if teacher_acc > 0 else
            f"student {pct(student_acc)} vs teacher {pct(teacher_acc)} on the same {n} rows ({gap:+.1f} points)")


def markdown(report: dict[str, Any]) -> str:
    m = report["metrics"]
    lines = ["| metric | value |", "|---|---|",
             f"| rows | {m['rows']} |",
             f"| accuracy | {pct(m['accuracy'])} ({m['correct']}/{m['rows']}) |"]
    if "macro_f1" in m:
        lines.append(f"| macro-F1 | {m['macro_f1']:.3f} |")
    if "oos_rows" in m:
        if m["in_scope_accuracy"] is not None:
            lines.append(f"| in-scope accuracy | {pct(m['in_scope_accuracy'])} ({m['in_scope_rows']} rows) |")
        if m["oos_recall"] is not None:
            lines.append(f"| out-of-scope recall | {pct(m['oos_recall'])} ({m['oos_rows']} rows) |")
        if m["oos_precision"] is not None:
            lines.append(f"| out-of-scope precision | {pct(m['oos_precision'])} ({m['predicted_oos']} predicted) |")
    lines.append(f"| answered (an answer could be extracted) | {m['answered']} ({pct(m['answer_rate'])}) |")
    t = report.get("teacher")
    if t:
        lines.append(f"| teacher accuracy (same rows) | {pct(t['accuracy'])} ({t['correct']}/{t['rows']}) |")
        if "macro_f1" in t:
            lines.append(f"| teacher macro-F1 | {t['macro_f1']:.3f} |")
    out = "\n".join(lines)
    if t:
        out += "\n\n" + report["comparison"]
    if m.get("per_label"):
        rows = ["| label | support | predicted | correct | precision | recall | F1 |", "|---|---|---|---|---|---|---|"]
        for c, d in m["per_label"].items():
            rows.append(f"| {c} | {d['support']} | {d['predicted']} | {d['correct']} | {d['precision']:.3f} | "
                        f"{d['recall']:.3f} | {d['f1']:.3f} |")
        out += "\n\n" + "\n".join(rows)
    for w in report.get("warnings", []):
        out += f"\n\n> warning: {w}"
    return out + "\n"


# --------------------------------------------------------------------------------------------------
# reading the eval set
# --------------------------------------------------------------------------------------------------


def read_eval_rows(opts: EvalOptions) -> list[EvalRow]:
    """Validate every row (input text, gold, choices) before loading the student."""
    problems: list[str] = []
    out: list[EvalRow] = []
    for lineno, row in read_rows(opts.input):
        if opts.limit is not None and len(out) >= opts.limit:
            break
        where = f"{opts.input}:{lineno}"
        if not isinstance(row, dict):
            problems.append(f"{where}: expected a JSON object, got {type(row).__name__}")
            continue
        text = None
        for name in opts.fields.input_names():
            if name in row:
                v = row[name]
                if not isinstance(v, str) or not v.strip():
                    problems.append(f"{where}: field '{name}': the input must be a non-empty string")
                else:
                    text = v
                break
        else:
            names = "' / '".join(opts.fields.input_names())
            problems.append(f"{where}: field '{names}': the input missing")
        choices = None
        if opts.kind == "choice":
            choices = row.get(opts.choices_field)
            if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
                problems.append(f"{where}: field '{opts.choices_field}': must be a non-empty list of strings")
                choices = None
        if opts.gold_field not in row:
            problems.append(f"{where}: field '{opts.gold_field}': the gold answer missing")
            gold = None
        else:
            gold, why = gold_value(row[opts.gold_field], opts.kind, choices=choices, labels=opts.labels)
            if why and opts.kind == "label" and opts.out_of_scope and isinstance(row[opts.gold_field], str):
                gold, why = opts.out_of_scope, None  # a gold outside the label list is out of scope
            if why and (opts.kind != "choice" or choices is not None):
                problems.append(f"{where}: field '{opts.gold_field}': {why}")
        rid = row.get(opts.fields.id)
        rid = str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) else f"line{lineno}"
        if text is not None and gold is not None:
            out.append(EvalRow(row=row, id=rid, text=text, gold=gold, choices=choices))
        if len(problems) >= MAX_REPORTED_ERRORS:
            break
    if problems:
        raise InputError(problems)
    if not out:
        raise InputError([f"{opts.input}: no rows to evaluate"])
    return out


def default_max_new_tokens(record: dict[str, Any]) -> int:
    mode = record.get("mode")
    return {"label": 32, "multitask": 32, "rationale": 256, "think": 512}.get(mode or "", 128)


def check_options(opts: EvalOptions) -> None:
    problems = []
    if opts.kind not in KINDS:
        problems.append(f"--kind: must be one of {', '.join(KINDS)}, got {opts.kind!r}")
    if opts.kind == "label" and not opts.labels:
        problems.append("--kind label needs --labels (the label file, or a,b,c, or nli)")
    if (opts.out_of_scope or opts.abstain_below is not None) and opts.kind != "label":
        problems.append("--out-of-scope and --abstain-below need --kind label")
    if opts.abstain_below is not None and not opts.out_of_scope:
        problems.append("--abstain-below needs an out-of-scope class (--out-of-scope NAME, or out_of_scope in the "
                        "label file)")
    if opts.batch_size < 1:
        problems.append(f"--batch-size must be >= 1, got {opts.batch_size}")
    if problems:
        raise InputError(problems)


# --------------------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------------------


def run_eval(opts: EvalOptions | EvalConfig, student: Any = None) -> dict[str, Any]:
    """Generate, extract, score, and write the outputs; returns the report (also ``metrics.json``)."""
    from synthkd.train.student import load_student

    if isinstance(opts, EvalConfig):
        opts = opts.to_options()
    if opts.labels and [x.lower() for x in opts.labels] == ["nli"]:
        opts.labels, opts.synonyms = list(NLI_LABELS), opts.synonyms or NLI_SYNONYMS
    resolve_labels(opts)
    check_options(opts)
    rows = read_eval_rows(opts)
    t0 = time.time()
    if student is None:
        student = load_student(opts.student, tokenizer=opts.tokenizer, trust_remote_code=opts.trust_remote_code,
                               bf16=opts.bf16)
    prefix = student.inference_prefix if opts.prefix is None else opts.prefix
    max_new = opts.max_new_tokens or default_max_new_tokens(student.record)
    prompts = [student.user_prompt(r.text, system=opts.system, prefix=prefix) for r in rows]
    want_scores = opts.abstain_below is not None
    gens = student.generate(prompts, batch_size=opts.batch_size, max_new_tokens=max_new,
                            temperature=opts.temperature, seed=opts.seed, **({"scores": True} if want_scores else {}))
    gen_s = time.time() - t0
    preds, reasons = [], []
    abstained = 0
    for r, g in zip(rows, gens):
        v, why = predicted_value(g.text, opts.kind, choices=r.choices, labels=opts.labels, synonyms=opts.synonyms,
                                 question=r.text)
        if opts.out_of_scope:
            if v is None:  # an answer that names no class is an abstention: out of scope
                v, why = opts.out_of_scope, None
            elif want_scores and g.logprob is not None and math.exp(g.logprob) < opts.abstain_below:  # type: ignore[operator]
                v, why = opts.out_of_scope, None
                abstained += 1
        preds.append(v)
        reasons.append(why)
    golds = [r.gold for r in rows]
    metrics = score(golds, preds, opts.kind, reasons=reasons, labels=opts.labels)
    if opts.out_of_scope:
        metrics.update(oos_metrics(golds, preds, opts.out_of_scope))
        if want_scores:
            metrics["abstained_below_threshold"] = abstained
    report: dict[str, Any] = {
        "student": str(student.source),
        "input": str(opts.input),
        "kind": opts.kind,
        "labels": opts.labels,
        "out_of_scope": opts.out_of_scope,
        "abstain_below": opts.abstain_below,
        "prompt": {"prefix": prefix, "format": "chat template" if student.chat else "plain",
                   "max_new_tokens": max_new, "temperature": opts.temperature, "seed": opts.seed,
                   "decoding": "greedy" if opts.temperature <= 0 else "sampling"},
        "metrics": metrics,
        "generation": {"seconds": round(gen_s, 3), "completion_tokens": sum(g.completion_tokens for g in gens),
                       "stopped": sum(g.finish_reason == "stop" for g in gens)},
        "warnings": [],
    }
    if opts.kind in ("label", "choice") and metrics["answered"] == 0:
        sample = "; ".join(repr(g.text[:60]) for g in gens[:3])
        what = f"the labels {opts.labels}" if opts.kind == "label" else "any option"
        report["warnings"].append(
            f"none of the {len(rows)} student outputs matched {what} (e.g. {sample}); "
            "accuracy is 0 — check --labels, the prompt format, and that the student was trained on this task"
        )
    elif metrics["answered"] == 0:
        report["warnings"].append(f"no answer could be extracted from any of the {len(rows)} student outputs")
    if opts.teacher_field:
        t_preds = []
        for r in rows:
            v = r.row.get(opts.teacher_field)
            t_preds.append(predicted_value(v, opts.kind, choices=r.choices, labels=opts.labels,
                                           synonyms=opts.synonyms, question=r.text)[0])
        report["teacher"] = score(golds, t_preds, opts.kind, labels=opts.labels)
        report["teacher"]["field"] = opts.teacher_field
        report["comparison"] = comparison_line(metrics["accuracy"], report["teacher"]["accuracy"], len(rows))
    report["markdown"] = markdown(report)
    mistakes = []
    predictions = []
    for r, g, v, why in zip(rows, gens, preds, reasons):
        ok = same(v, r.gold, opts.kind)
        rec = {**r.row, "student_output": g.text, "student_answer": v, "gold_answer": r.gold,
               "correct": ok, "finish_reason": g.finish_reason}
        if want_scores:
            rec["student_probability"] = None if g.logprob is None else round(math.exp(g.logprob), 6)
        if v is None:
            rec["extraction_reason"] = why
        predictions.append(rec)
        if not ok:
            mistakes.append({**rec, "mistake": "no answer" if v is None else "wrong answer"})
    report["mistakes"] = len(mistakes)
    if opts.out_dir is not None:
        write_outputs(opts.out_dir, report, predictions, mistakes)
    if opts.record_in_card:
        _record_in_card(opts, report)
    report["_predictions"] = predictions
    report["_mistakes"] = mistakes
    return report


def write_outputs(out: Path, report: dict[str, Any], predictions: list[dict], mistakes: list[dict]) -> None:
    from synthkd.train.export import write_jsonl

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in report.items() if not k.startswith("_")}
    (out / "metrics.json").write_text(json.dumps(clean, indent=2, default=_json_default) + "\n")
    (out / "report.md").write_text(f"# Evaluation of `{report['student']}` on `{report['input']}`\n\n"
                                   + report["markdown"])
    write_jsonl((_jsonable(p) for p in predictions), out / "predictions.jsonl")
    write_jsonl((_jsonable(m) for m in mistakes), out / "mistakes.jsonl")


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    return str(o)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=_json_default))


def _record_in_card(opts: EvalOptions, report: dict[str, Any]) -> None:
    """Append this evaluation to the student's training record and re-render its model card."""
    from synthkd.train.model_card import write_card
    from synthkd.train.student import TRAIN_RECORD

    d = Path(opts.student)
    f = d / TRAIN_RECORD
    if not f.exists():
        report["warnings"].append(f"--record-in-card: {f} not found (not a synthkd-trained student); card not updated")
        return
    rec = json.loads(f.read_text())
    rec.setdefault("evaluations", []).append({"input": str(opts.input), "kind": opts.kind,
                                               "accuracy": report["metrics"]["accuracy"],
                                               "macro_f1": report["metrics"].get("macro_f1"),
                                               "comparison": report.get("comparison"),
                                               "markdown": report["markdown"]})
    f.write_text(json.dumps(rec, indent=2, default=str) + "\n")
    write_card(d, rec)
