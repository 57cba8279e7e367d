"""Method rows -> the dataset formats TRL trains on, written as jsonl that ``datasets.load_dataset("json")`` reads.

Why a separate step: generation methods write rich rows (``{id, input|question, rationale, answer,
gold, model, cost_usd, ...}``); trainers want narrow ones.  Building them here, with field names the
caller chooses, keeps every trainer ignorant of where the data came from, and every problem in a row
is reported with the file, line and field before any model is loaded.

SFT modes (see ``sft.py``):

* ``label``      prompt = input, completion = answer;
* ``rationale``  prompt = input, completion = rationale + "So the answer is <answer>.";
* ``multitask``  Distilling step-by-step: each row gives a ``predict:`` example (-> answer) and an
  ``explain:`` example (-> rationale), carrying per-example loss weights (see :func:`task_weights`);
* ``think``      a reasoning teacher's trace as the open reasoning students' template (DeepSeek-R1
  distills, Qwen3): completion = ``<think>\n{reasoning}\n</think>\n\n{answer}``.  Every row must carry
  a trace (the ``reasoning`` field; a row without one is an error naming its file and line, or is
  skipped with ``skip_invalid``): no silent fallback to a trace-less target.

Formats written by :func:`export_rows`:

* ``prompt-completion``  ``{"prompt": str, "completion": str}`` (standard; the prompt is in the plain
  format of ``student.plain_prompt`` so it trains as is with any tokenizer);
* ``conversational``     ``{"prompt": [user msg], "completion": [assistant msg]}`` (the trainer applies
  the student's chat template);
* ``messages``           ``{"messages": [user msg, assistant msg]}``;
* ``preference``         ``{"prompt", "chosen", "rejected"}`` (standard or conversational, see ``style``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import orjson

from synthkd.jsonl_io import MAX_REPORTED_ERRORS, InputError, iter_jsonl
from synthkd.row_source import as_path
from synthkd.train.student import plain_prompt

MODES = ("label", "rationale", "multitask", "think")
#: the modes whose target needs no reasoning trace (what a loop that writes its own rows can train)
TRACE_FREE_MODES = ("label", "rationale", "multitask")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SFT_FORMATS = ("prompt-completion", "conversational", "messages")
FORMATS = (*SFT_FORMATS, "preference")
PREDICT_PREFIX = "predict: "
EXPLAIN_PREFIX = "explain: "
DEFAULT_ANSWER_TEMPLATE = "So the answer is {answer}."


@dataclass
class Fields:
    """Which row fields hold what.  ``input`` falls back to the first present of ``input_fallbacks``."""

    id: str = "id"
    input: str | None = None
    input_fallbacks: tuple[str, ...] = ("input", "question", "prompt", "text")
    rationale: str = "rationale"
    answer: str = "answer"
    reasoning: str = "reasoning"  # the teacher's trace (think mode)
    # preference rows
    prompt: str | None = None
    chosen: str = "chosen"
    rejected: str = "rejected"

    def input_names(self) -> tuple[str, ...]:
        return (self.input,) if self.input else self.input_fallbacks

    def prompt_names(self) -> tuple[str, ...]:
        return (self.prompt,) if self.prompt else ("prompt", *self.input_fallbacks)

    def text_names(self) -> tuple[str, ...]:
        """Every field whose text a student may be trained on (SFT and preference rows): what a tiny
        student's tokenizer is trained on -- never a row's provenance (``cached``, latency, cost), which
        differs between a first run and a rerun from the cache."""
        names = (*self.input_names(), self.rationale, self.answer, self.reasoning, *self.prompt_names(),
                 self.chosen, self.rejected)
        return tuple(dict.fromkeys(names))


@dataclass
class SFTExample:
    """One training example: the user's text, the target text, its task and its loss weight."""

    id: str
    task: str  # "label" | "rationale" | "predict" | "explain" | "think"
    prompt: str
    completion: str
    weight: float = 1.0


@dataclass
class PreferenceExample:
    id: str
    prompt: str
    chosen: str
    rejected: str


@dataclass
class LoadedRows:
    rows: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)  # problems of rows left out (skip_invalid)
    path: Path | None = None


def task_weights(rationale_weight: float) -> dict[str, float]:
    """Per-example loss weights of the multitask mode for a rationale weight ``alpha`` in [0, 1].

    The multitask loss is ``(1 - alpha) * L_predict + alpha * L_explain`` (Hsieh et al. 2023; alpha 0.5
    by default, i.e. 0.5 each).  Every row contributes one example of each task, so a batch's loss
    ``mean_i(w_i * l_i)`` has that expectation with ``w_predict = 2 (1 - alpha)`` and
    ``w_explain = 2 alpha`` (mean weight 1, so the learning rate means the same as in the other modes).
    """
    if not 0.0 <= rationale_weight <= 1.0 or math.isnan(rationale_weight):
        raise ValueError(f"rationale weight must be in [0, 1], got {rationale_weight}")
    return {"predict": 2.0 * (1.0 - rationale_weight), "explain": 2.0 * rationale_weight}


def inference_prefix(mode: str) -> str:
    """What goes before the input at inference: only ``predict:`` is used for a multitask student."""
    return PREDICT_PREFIX if mode == "multitask" else ""


def answer_text(value: Any) -> str | None:
    """A row's answer as training text: 42.0 -> "42", 0.5 -> "0.5", strings stripped; None if unusable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            return None
        if float(value).is_integer():
            return str(int(value))
        return repr(float(value))
    if isinstance(value, str):
        return value.strip() or None
    return None


# --------------------------------------------------------------------------------------------------
# reading and checking rows
# --------------------------------------------------------------------------------------------------


def read_rows(path: str | Path) -> list[tuple[int, Any]]:
    path = as_path(path)  # a SourcePath keeps its column map
    if not path.exists():
        raise InputError([f"{path}: file not found"])
    rows = list(iter_jsonl(path))
    if not rows:
        raise InputError([f"{path}: no rows (the file is empty)"])
    return rows


def _get_text(row: dict[str, Any], names: Sequence[str], where: str, what: str) -> tuple[str | None, str | None]:
    """(text, problem): the first present field of ``names`` as a non-empty string."""
    for n in names:
        if n in row:
            v = row[n]
            if not isinstance(v, str):
                return None, f"{where}: field '{n}': {what} must be a string, got {type(v).__name__}"
            if not v.strip():
                return None, f"{where}: field '{n}': {what} is empty"
            return v, None
    shown = "' / '".join(names)
    return None, f"{where}: field '{shown}': {what} missing"


def _row_id(row: dict[str, Any], fields: Fields, lineno: int) -> str:
    rid = row.get(fields.id)
    return str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) and rid != "" else f"line{lineno}"


def build_sft_examples(
    path: str | Path,
    mode: str,
    fields: Fields | None = None,
    *,
    rationale_weight: float = 0.5,
    answer_template: str = DEFAULT_ANSWER_TEMPLATE,
    skip_invalid: bool = False,
) -> tuple[list[SFTExample], list[str], list[dict[str, Any]]]:
    """Read method rows and build the examples of ``mode``.

    Returns (examples, problems of skipped rows, the rows used).  Without ``skip_invalid`` any problem
    raises InputError listing every problem found (file, line, field), up to a limit.
    """
    if mode not in MODES:
        raise ValueError(f"unknown SFT mode {mode!r} (choose from {', '.join(MODES)})")
    if "{answer}" not in answer_template:
        raise ValueError(f"--answer-template must contain '{{answer}}', got {answer_template!r}")
    fields = fields or Fields()
    weights = task_weights(rationale_weight)
    path = Path(path)
    examples: list[SFTExample] = []
    problems: list[str] = []
    used: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for lineno, row in read_rows(path):
        where = f"{path}:{lineno}"
        if not isinstance(row, dict):
            problems.append(f"{where}: expected a JSON object, got {type(row).__name__}")
            continue
        row_problems: list[str] = []
        text, why = _get_text(row, fields.input_names(), where, "the input")
        if why:
            row_problems.append(why)
        ans = None
        if mode in MODES:
            if fields.answer not in row:
                row_problems.append(f"{where}: field '{fields.answer}': the answer missing")
            else:
                ans = answer_text(row[fields.answer])
                if ans is None:
                    reason = row.get("answer_reason")
                    extra = f" (answer_reason: {reason})" if reason else ""
                    row_problems.append(
                        f"{where}: field '{fields.answer}': the answer is {orjson.dumps(row[fields.answer]).decode()}"
                        f"{extra}; it must be a non-empty string or a number"
                    )
        rat = None
        if mode in ("rationale", "multitask"):
            rat, why = _get_text(row, (fields.rationale,), where, "the rationale")
            if why:
                row_problems.append(why)
        trace = None
        if mode == "think":
            trace, why = _get_text(row, (fields.reasoning,), where, "the reasoning trace")
            if why:
                row_problems.append(why + (" (think mode trains on the teacher's trace: generate with a reasoning "
                                           "teacher, or use --mode label/rationale)" if fields.reasoning not in row
                                           or row[fields.reasoning] is None else ""))
        rid = _row_id(row, fields, lineno)
        if rid in seen and not row_problems:
            row_problems.append(f"{where}: field '{fields.id}': duplicate id {rid!r} (first on line {seen[rid]})")
        if row_problems:
            problems.extend(row_problems)
            if not skip_invalid and len(problems) >= MAX_REPORTED_ERRORS:
                break
            continue
        seen[rid] = lineno
        used.append(row)
        assert text is not None and ans is not None
        if mode == "label":
            examples.append(SFTExample(rid, "label", text, ans))
        elif mode == "rationale":
            assert rat is not None
            examples.append(SFTExample(rid, "rationale", text, rationale_target(rat, ans, answer_template)))
        elif mode == "think":
            assert trace is not None
            examples.append(SFTExample(rid, "think", text, think_target(trace, ans)))
        else:
            assert rat is not None
            examples.append(SFTExample(rid, "predict", PREDICT_PREFIX + text, ans, weights["predict"]))
            examples.append(SFTExample(rid, "explain", EXPLAIN_PREFIX + text, rat.strip(), weights["explain"]))
    if problems and not skip_invalid:
        raise InputError(problems[:MAX_REPORTED_ERRORS])
    if not examples:
        raise InputError([f"{path}: no usable training rows" + (f" ({len(problems)} skipped):" if problems else ""),
                          *problems[: MAX_REPORTED_ERRORS - 1]])
    return examples, problems, used


def rationale_target(rationale: str, answer: str, answer_template: str = DEFAULT_ANSWER_TEMPLATE) -> str:
    """Rationale followed by the answer sentence; one completion of the ``rationale`` mode."""
    return f"{rationale.strip()}\n{answer_template.format(answer=answer)}"


def think_target(reasoning: str, answer: str) -> str:
    """The trace in the open reasoning students' template, then the answer; one completion of ``think``."""
    return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n\n{answer}"


def after_think(text: str) -> str:
    """A think-mode output without its ``<think>...</think>`` block (the answer alone); unchanged without one."""
    i = text.rfind(THINK_CLOSE)
    return text[i + len(THINK_CLOSE):].strip() if i >= 0 else text


def build_preference_examples(path: str | Path, fields: Fields | None = None, *,
                              skip_invalid: bool = False) -> tuple[list[PreferenceExample], list[str]]:
    """Read ``{prompt|input|question, chosen, rejected}`` rows (field names configurable)."""
    fields = fields or Fields()
    path = Path(path)
    out: list[PreferenceExample] = []
    problems: list[str] = []
    for lineno, row in read_rows(path):
        where = f"{path}:{lineno}"
        if not isinstance(row, dict):
            problems.append(f"{where}: expected a JSON object, got {type(row).__name__}")
            continue
        got: dict[str, str] = {}
        row_problems = []
        for key, names, what in (("prompt", fields.prompt_names(), "the prompt"),
                                 ("chosen", (fields.chosen,), "the chosen answer"),
                                 ("rejected", (fields.rejected,), "the rejected answer")):
            v, why = _get_text(row, names, where, what)
            if why:
                row_problems.append(why)
            else:
                got[key] = v  # type: ignore[assignment]
        if not row_problems and got["chosen"].strip() == got["rejected"].strip():
            row_problems.append(f"{where}: fields '{fields.chosen}' and '{fields.rejected}': identical answers teach nothing")
        if row_problems:
            problems.extend(row_problems)
            if not skip_invalid and len(problems) >= MAX_REPORTED_ERRORS:
                break
            continue
        out.append(PreferenceExample(_row_id(row, fields, lineno), got["prompt"], got["chosen"], got["rejected"]))
    if problems and not skip_invalid:
        raise InputError(problems[:MAX_REPORTED_ERRORS])
    if not out:
        raise InputError([f"{path}: no usable preference rows" + (f" ({len(problems)} skipped):" if problems else ""),
                          *problems[: MAX_REPORTED_ERRORS - 1]])
    return out, problems


# --------------------------------------------------------------------------------------------------
# TRL records
# --------------------------------------------------------------------------------------------------


def sft_record(ex: SFTExample, fmt: str, *, eos_token: str | None = None, prefix: str = "") -> dict[str, Any]:
    """One TRL record.  Extra columns (id, task, loss_weight) ride along; TRL drops what it does not use."""
    user = {"role": "user", "content": prefix + ex.prompt}
    base = {"id": ex.id, "task": ex.task, "loss_weight": float(ex.weight)}
    if fmt == "prompt-completion":
        return {**base, "prompt": plain_prompt([user]), "completion": ex.completion}
    if fmt == "conversational":
        return {**base, "prompt": [user], "completion": [{"role": "assistant", "content": ex.completion}]}
    if fmt == "messages":
        return {**base, "messages": [user, {"role": "assistant", "content": ex.completion}]}
    raise ValueError(f"unknown SFT format {fmt!r} (choose from {', '.join(SFT_FORMATS)})")


def preference_record(ex: PreferenceExample, conversational: bool, *, prefix: str = "") -> dict[str, Any]:
    user = {"role": "user", "content": prefix + ex.prompt}
    if conversational:
        return {"id": ex.id, "prompt": [user], "chosen": [{"role": "assistant", "content": ex.chosen}],
                "rejected": [{"role": "assistant", "content": ex.rejected}]}
    return {"id": ex.id, "prompt": plain_prompt([user]), "chosen": ex.chosen, "rejected": ex.rejected}


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write records as jsonl (atomically: a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "wb") as f:
        for r in records:
            f.write(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE))
            n += 1
    tmp.replace(path)
    return n


def load_json_dataset(path: str | Path) -> Any:
    """Load an exported file back with ``datasets.load_dataset("json")`` (the format's contract).

    The Arrow cache goes next to the file (``.hf_cache/``), not to ~/.cache: it is deleted with the run,
    and concurrent runs never share it."""
    from datasets import load_dataset

    path = Path(path)
    return load_dataset("json", data_files=str(path), split="train", cache_dir=str(path.parent / ".hf_cache"))


def in_id_order(examples: list[Any], *, natural: bool = False) -> list[Any]:
    """``examples`` sorted by row id (stable: a multitask row keeps its predict/explain order).

    Why: rows arrive in teacher completion order, which differs from run to run and after a resumed
    (killed, disk-full) stage, and the trainer's seeded shuffle permutes *positions*: the same rows in
    another order train another student.  In id order the same rows always make the same student.

    ``natural``: numbers in ids compare as numbers (``p2`` before ``p10``, then the plain string breaks
    ties), so rows written in input order with numbered ids keep that order.  DPO uses it (it trained in
    file order before, so an uninterrupted run's student is unchanged); SFT keeps the plain string order
    it has always used (its students are unchanged too)."""
    if not natural:
        return sorted(examples, key=lambda e: str(e.id))

    def key(e: Any) -> tuple[list[tuple[int, Any]], str]:
        parts = re.split(r"(\d+)", str(e.id))
        return [(1, int(t)) if t.isdigit() else (0, t) for t in parts], str(e.id)

    return sorted(examples, key=key)


def split_by_id(examples: list[Any], fraction: float, seed: int = 0) -> tuple[list[Any], list[Any]]:
    """Deterministic train/eval split by hashed row id: both tasks of a multitask row fall on the same side."""
    if fraction <= 0:
        return examples, []
    if fraction >= 1:
        raise ValueError(f"eval fraction must be below 1, got {fraction}")
    import hashlib

    def bucket(rid: str) -> float:
        h = hashlib.blake2b(f"{seed}:{rid}".encode(), digest_size=8).digest()
        return int.from_bytes(h, "little") / 2**64

    ids = sorted({e.id for e in examples})
    held = {i for i in ids if bucket(i) < fraction}
    if not held and len(ids) > 1:
        held = {min(ids, key=bucket)}
    return [e for e in examples if e.id not in held], [e for e in examples if e.id in held]


def export_rows(
    input: str | Path,
    output: str | Path,
    fmt: str,
    *,
    mode: str = "label",
    fields: Fields | None = None,
    rationale_weight: float = 0.5,
    answer_template: str = DEFAULT_ANSWER_TEMPLATE,
    conversational: bool = True,
    skip_invalid: bool = False,
) -> dict[str, Any]:
    """Export a rows file to one TRL format; returns counts.  ``conversational`` only matters for preference."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt == "preference":
        pref, skipped = build_preference_examples(input, fields, skip_invalid=skip_invalid)
        n = write_jsonl((preference_record(e, conversational) for e in pref), output)
        return {"rows_written": n, "rows_skipped": len(skipped), "format": fmt}
    exs, skipped, used = build_sft_examples(input, mode, fields, rationale_weight=rationale_weight,
                                            answer_template=answer_template, skip_invalid=skip_invalid)
    n = write_jsonl((sft_record(e, fmt) for e in exs), output)
    return {"rows_read": len(used), "examples_written": n, "rows_skipped": len(skipped), "format": fmt, "mode": mode}
