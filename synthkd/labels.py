"""Class labels: a task's label space, the teacher classifier that names a text's class, and the
agreement summary of intended vs relabeled labels.

Why one module for this, outside ``methods/`` and ``filters/``: PromptMix (a method) relabels the
examples it generates, and the cleaning stage (a filter) relabels any dataset to find rows whose label
the teacher disagrees with.  Both need the same three things, done once and tested once:

* a :class:`LabelSpace` (class names, one-line descriptions, a few real examples per class) read from
  a YAML/JSON file and validated before any request is paid for;
* a cheap lexical :class:`LexicalIndex` (TF-IDF cosine, numpy only, no model download) that picks the
  classes most similar to a text, so a 77-class task can be asked with a 10-class prompt;
* :func:`classify`, which renders a k-shot prompt with descriptions, streams the requests through the
  teacher (concurrency, cache and budget are the teacher's job) and maps the free-text answer to a
  class name robustly (case/underscore slack, ``"Intent: x"``, quotes, label numbers), reporting
  *why* when it cannot (:attr:`Relabel.reason`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterable, AsyncIterator, Callable, Iterable, Literal, Optional, Sequence

import numpy as np
import yaml
from pydantic import BaseModel, create_model

from synthkd.answers import extract_answer, extract_label, parse_off_loop
from synthkd.jsonl_io import InputError, check_id, id_hash, iter_jsonl
from synthkd.options import opt, register_feature
from synthkd.reasoning import trace_of
from synthkd.teachers.base import Teacher, TeacherRequest
from synthkd.teachers.jobs import Job, aiter_any, stream_jobs
from synthkd.teachers.structured import answer_of
from synthkd.templates import load_template

__all__ = [
    "DEFAULT_OOS",
    "LabelSpace",
    "LexicalIndex",
    "Relabel",
    "RelabelConfig",
    "classify",
    "map_answer",
    "confusion_summary",
    "format_confusion",
]


# --------------------------------------------------------------------------------------------------
# label space
# --------------------------------------------------------------------------------------------------


#: The out-of-scope class's name when a label file's ``out_of_scope`` gives none.
DEFAULT_OOS = "out_of_scope"
OOS_DESCRIPTION = "The text belongs to none of the other labels."


def _line_of(root: yaml.Node | None, path: Sequence[Any]) -> int | None:
    """1-based line of the YAML node at ``path`` (keys / list indices), or of its nearest parent."""
    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for step in path:
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if getattr(k, "value", None) == step:
                    nxt = v
                    line = k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            nxt = node.value[step]
            line = nxt.start_mark.line + 1
        if nxt is None:
            break
        node = nxt
    return line


@dataclass
class LabelSpace:
    """The classes of a task: names (in a fixed order), optional descriptions and few-shot examples.

    ``task`` is an optional one-line statement of what is classified ("the intent of a banking
    customer's message"); prompts use it when given.
    """

    labels: list[str]
    descriptions: dict[str, str] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)  # few-shot texts per label
    task: str = ""
    out_of_scope: str | None = None  # the class of texts that fit no other label (one of ``labels``)
    _index: "LexicalIndex | None" = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise InputError(problems)

    def problems(self, where: str = "label space") -> list[str]:
        out: list[str] = []
        if not self.labels:
            out.append(f"{where}: field 'labels': no classes")
        seen: set[str] = set()
        for i, lab in enumerate(self.labels):
            if not isinstance(lab, str) or not lab.strip():
                out.append(f"{where}: field 'labels[{i}]': must be a non-empty string")
            elif lab in seen:
                out.append(f"{where}: field 'labels[{i}]': duplicate class {lab!r}")
            seen.add(lab)
        for lab in list(self.descriptions) + list(self.examples):
            if lab not in seen:
                out.append(f"{where}: class {lab!r} has a description or examples but is not in 'labels'")
        return out

    @classmethod
    def from_file(cls, path: str | Path) -> "LabelSpace":
        """Read ``{labels: [...] | {name: description}, descriptions: {...}, examples: {label: [...]}, task: str}``.

        ``labels`` may also map a name to ``{description: ..., examples: [...]}``.  YAML or JSON (JSON is
        YAML).  Every problem is reported at once, each with the file, line and field.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError([f"{path}: label space file not found"])
        text = path.read_text(encoding="utf-8")
        try:
            root = yaml.compose(text)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise InputError([f"{where}: not valid YAML/JSON ({getattr(exc, 'problem', exc)})"]) from None

        problems: list[str] = []

        def bad(field_path: Sequence[Any], msg: str) -> None:
            line = _line_of(root, field_path)
            name = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(field_path))
            problems.append(f"{path}:{line or 1}: field '{name}': {msg}")

        if not isinstance(data, dict):
            raise InputError([f"{path}:1: expected a mapping with a 'labels' field, got {type(data).__name__}"])
        # one label file for every feature: the task-spec spellings are accepted too (label_descriptions,
        # seed_examples; text_name and attributes are generate tasks' and ignored here)
        unknown = sorted(set(data) - {"labels", "descriptions", "examples", "task", "name", "source", "licence",
                                      "license", "text_name", "attributes", "label_descriptions", "seed_examples",
                                      "out_of_scope"})
        for k in unknown:
            bad([k], "unknown field (expected labels, descriptions, examples, task, out_of_scope, text_name, "
                     "attributes, label_descriptions, seed_examples)")
        for alias, canonical in (("label_descriptions", "descriptions"), ("seed_examples", "examples")):
            if alias in data:
                if canonical in data:
                    bad([alias], f"give either '{alias}' or '{canonical}', not both")
                seeds = data[alias]
                if isinstance(seeds, list) and canonical == "examples":  # [{text, label}, ...]
                    grouped: dict[Any, list[Any]] = {}
                    for i, ex in enumerate(seeds):
                        if not isinstance(ex, dict) or set(ex) != {"text", "label"}:
                            bad([alias, i], "each seed example must be {text, label}")
                        else:
                            grouped.setdefault(ex["label"], []).append(ex["text"])
                    seeds = grouped
                data[canonical] = seeds
        raw = data.get("labels")
        labels: list[str] = []
        descriptions: dict[str, str] = {}
        examples: dict[str, list[str]] = {}
        if raw is None:
            bad(["labels"], "missing")
        elif isinstance(raw, list):
            for i, lab in enumerate(raw):
                if not isinstance(lab, str) or not lab.strip():
                    bad(["labels", i], f"must be a non-empty string, got {lab!r}")
                else:
                    labels.append(lab.strip())
        elif isinstance(raw, dict):
            for lab, val in raw.items():
                if not isinstance(lab, str) or not lab.strip():
                    bad(["labels"], f"class name must be a non-empty string, got {lab!r}")
                    continue
                labels.append(lab)
                if val is None:
                    continue
                if isinstance(val, str):
                    descriptions[lab] = val
                elif isinstance(val, dict):
                    extra = sorted(set(val) - {"description", "examples"})
                    if extra:
                        bad(["labels", lab], f"unknown key(s) {extra} (expected description, examples)")
                    if "description" in val:
                        if not isinstance(val["description"], str):
                            bad(["labels", lab, "description"], "must be a string")
                        else:
                            descriptions[lab] = val["description"]
                    if "examples" in val:
                        examples[lab] = val["examples"]
                else:
                    bad(["labels", lab], "must be a description string or {description, examples}")
        else:
            bad(["labels"], "must be a list of class names or a mapping {name: description}")
        out_of_scope = None
        oos = data.get("out_of_scope")
        if oos is not None:
            if isinstance(oos, str):
                oos = {"description": oos}
            if not isinstance(oos, dict) or set(oos) - {"name", "description", "examples"}:
                bad(["out_of_scope"], "must be a description string or {name, description, examples}")
            else:
                out_of_scope = str(oos.get("name") or DEFAULT_OOS).strip()
                labels.append(out_of_scope)
                descriptions[out_of_scope] = str(oos.get("description") or OOS_DESCRIPTION)
                if oos.get("examples") is not None:
                    examples[out_of_scope] = oos["examples"]
        if not labels and raw is not None:
            bad(["labels"], "no classes")
        dup = [lab for lab, n in Counter(labels).items() if n > 1]
        for lab in dup:
            bad(["labels"], f"duplicate class {lab!r}")
        known = set(labels)
        desc = data.get("descriptions") or {}
        if not isinstance(desc, dict):
            bad(["descriptions"], "must be a mapping {class: description}")
        else:
            for lab, d in desc.items():
                if lab not in known:
                    bad(["descriptions", lab], f"{lab!r} is not one of the labels")
                elif not isinstance(d, str):
                    bad(["descriptions", lab], "must be a string")
                else:
                    descriptions[lab] = d
        ex = data.get("examples") or {}
        if not isinstance(ex, dict):
            bad(["examples"], "must be a mapping {class: [texts]}")
        else:
            for lab, texts in ex.items():
                examples[lab] = texts
        for lab, texts in list(examples.items()):
            fp = ["examples", lab] if lab in ex else ["labels", lab, "examples"]
            if lab not in known:
                bad(fp, f"{lab!r} is not one of the labels")
                del examples[lab]
                continue
            if not isinstance(texts, list):
                bad(fp, "must be a list of strings")
                del examples[lab]
                continue
            for i, t in enumerate(texts):
                if not isinstance(t, str) or not t.strip():
                    bad([*fp, i], f"must be a non-empty string, got {t!r}")
            examples[lab] = [t.strip() for t in texts if isinstance(t, str) and t.strip()]
        task = data.get("task") or ""
        if not isinstance(task, str):
            bad(["task"], "must be a string")
            task = ""
        if problems:
            raise InputError(problems)
        return cls(labels=labels, descriptions=descriptions, examples=examples, task=task, out_of_scope=out_of_scope)

    @property
    def in_scope(self) -> list[str]:
        """The labels other than the out-of-scope class."""
        return [lab for lab in self.labels if lab != self.out_of_scope]

    def description(self, label: str) -> str:
        return self.descriptions.get(label, "")

    def seed_texts(self) -> set[str]:
        """Normalised texts of every few-shot example (for dropping generated copies of them)."""
        return {norm_text(t) for texts in self.examples.values() for t in texts}

    def index(self) -> "LexicalIndex":
        if self._index is None:
            self._index = LexicalIndex(self)
        return self._index


def norm_text(text: str) -> str:
    """Comparison form of a text: lower case, single spaces, no surrounding punctuation/quotes."""
    return re.sub(r"\s+", " ", text).strip().strip(" \"'`.,!?;:\u201c\u201d\u2018\u2019").lower()


# --------------------------------------------------------------------------------------------------
# lexical similarity
# --------------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an the i im i'm me my mine we us our you your to of for and or in on at by be been is are am was were "
    "it its this that these those with from as do does did can could would should will shall have has had "
    "there here what why how when where which who whom please about into than then so if but just also any "
    "some get got".split()
)
_SUFFIXES = ("ations", "ation", "ings", "ing", "edly", "ed", "ies", "es", "s", "al", "ly", "e")


def _stem(w: str) -> str:
    """A deliberately crude stemmer: enough to match "arrived"/"arrival"/"arrive" without a dependency."""
    for suf in _SUFFIXES:
        if w.endswith(suf) and len(w) - len(suf) >= 4:
            w = w[: -len(suf)]
            break
    if len(w) > 4 and w[-1] == w[-2] and w[-1] not in "aeiou":
        w = w[:-1]  # transferr -> transfer
    return w


def tokens(text: str) -> list[str]:
    return [_stem(w) for w in _WORD_RE.findall(text.lower().replace("_", " ")) if w not in _STOP]


class LexicalIndex:
    """TF-IDF (sublinear tf, smoothed idf, L2) over one document per class: name + description + examples.

    Why lexical: picking the 10 most plausible of 77 classes only has to keep the right one in the
    list (the row's intended label is always added too); a word-overlap score does that well enough,
    costs microseconds and needs no model download.
    """

    def __init__(self, space: LabelSpace) -> None:
        self.labels = list(space.labels)
        docs: list[Counter] = []
        for lab in self.labels:
            name = tokens(lab)
            c = Counter(name * 2)  # the name counts double: it is the densest statement of the class
            c.update(tokens(space.description(lab)))
            for t in space.examples.get(lab, []):
                c.update(tokens(t))
            docs.append(c)
        vocab = sorted({w for d in docs for w in d})
        self.vocab = {w: i for i, w in enumerate(vocab)}
        n = len(docs)
        df = np.zeros(len(vocab))
        for d in docs:
            for w in d:
                df[self.vocab[w]] += 1
        self.idf = np.log((1 + n) / (1 + df)) + 1.0
        m = np.zeros((n, len(vocab)))
        for i, d in enumerate(docs):
            for w, k in d.items():
                m[i, self.vocab[w]] = (1.0 + math.log(k)) * self.idf[self.vocab[w]]
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        self.matrix = m / np.where(norms == 0, 1.0, norms)

    def scores(self, text: str) -> np.ndarray:
        """Cosine similarity of ``text`` to every class, in label-space order."""
        c = Counter(w for w in tokens(text) if w in self.vocab)
        if not c:
            return np.zeros(len(self.labels))
        idx = np.fromiter((self.vocab[w] for w in c), dtype=np.int64)
        vals = np.fromiter(((1.0 + math.log(k)) * self.idf[self.vocab[w]] for w, k in c.items()), dtype=float)
        vals /= np.linalg.norm(vals)
        return self.matrix[:, idx] @ vals

    def top(self, text: str, n: int) -> list[str]:
        """The ``n`` most similar classes, best first (ties: label-space order)."""
        s = self.scores(text)
        order = sorted(range(len(self.labels)), key=lambda i: (-s[i], i))
        return [self.labels[i] for i in order[:n]]

    def class_similarity(self) -> np.ndarray:
        """Class-by-class cosine similarity (for grouping similar classes)."""
        return self.matrix @ self.matrix.T


# --------------------------------------------------------------------------------------------------
# answer mapping
# --------------------------------------------------------------------------------------------------

_PREFIX_RE = re.compile(
    r"^\s*(?:the\s+)?(?:(?:final|correct)\s+)?(?:intent|label|class|category|answer|option|number)\s*(?:is|=|:|#|no\.?)?\s*",
    re.IGNORECASE,
)
_NUMBER_RE = re.compile(r"^[#(\[]?\s*(\d{1,4})\s*[)\].:]?$")
_QUOTES = " \t\"'`*\u201c\u201d\u2018\u2019."


def _as_number(text: str) -> int | None:
    s = text.strip().strip(_QUOTES)
    for _ in range(2):
        s = _PREFIX_RE.sub("", s, count=1).strip().strip(_QUOTES)
    m = _NUMBER_RE.match(s)
    return int(m.group(1)) if m else None


def map_answer(
    raw: str | None, offered: Sequence[str], all_labels: Sequence[str] | None = None, *, numbered: bool = True
) -> tuple[str | None, str | None]:
    """(class name, None) for a teacher answer, or (None, "unmappable answer: ...").

    Order: a class offered in the prompt named by the answer (via :func:`synthkd.answers.extract_answer`,
    so case, underscores, spacing, quotes and "Answer:" cues do not matter); a bare label number when
    the prompt numbered the classes; a class of the label space that was not offered; a class named on
    one line of a longer answer; otherwise None with the reason.
    """
    if raw is None or not raw.strip():
        return None, "unmappable answer: empty answer"
    ans = extract_answer(raw, "label", labels=list(offered))
    if ans.ok:
        return str(ans.value), None
    if numbered:
        n = _as_number(ans.span if ans.span else raw)
        if n is None:
            n = _as_number(raw.strip().splitlines()[0])
        if n is not None:
            if 1 <= n <= len(offered):
                return offered[n - 1], None
            return None, f"unmappable answer: label number {n} out of range 1..{len(offered)}"
    others = [lab for lab in (all_labels or []) if lab not in set(offered)]
    if others:
        ans2 = extract_answer(raw, "label", labels=list(all_labels or []))
        if ans2.ok:
            return str(ans2.value), None
    if ans.reason != "ambiguous":
        for line in raw.strip().splitlines():
            v = extract_label(line, list(offered))
            if v is not None:
                return v, None
    short = raw.strip().replace("\n", " ")
    short = short if len(short) <= 80 else short[:77] + "..."
    return None, f"unmappable answer: {ans.reason or 'no label matched'}: {short!r}"


# --------------------------------------------------------------------------------------------------
# classify
# --------------------------------------------------------------------------------------------------


@dataclass
class Relabel:
    label: str | None  # mapped to a class name; None if the teacher's answer maps to no class / failed
    raw: str | None  # teacher text
    candidates: list[str]  # classes offered in the prompt
    reason: str | None  # why label is None ("teacher error: ...", "unmappable answer: ...")
    votes: dict[str, int]  # per-label votes when samples > 1
    cost_usd: float | None = None
    cached: bool = False
    model: str | None = None
    template: dict[str, str] = field(default_factory=dict)
    #: the teacher's reasoning trace (a list, one per sample, when samples > 1); None when it returned none
    reasoning: str | list[str | None] | None = None

    @property
    def teacher_error(self) -> bool:
        return bool(self.reason and self.reason.startswith("teacher error"))


def _intended(row: dict[str, Any], field_name: str | None) -> str | None:
    if field_name:
        v = row.get(field_name)
        return v if isinstance(v, str) else None
    for f in ("intended_label", "label"):
        v = row.get(f)
        if isinstance(v, str):
            return v
    return None


def _row_key(row: dict[str, Any], text: str) -> str:
    rid = row.get("id")
    if rid is not None:
        return str(rid)
    return "sha:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def offered_classes(
    text: str, space: LabelSpace, candidates: int | None, must: Iterable[str] = ()
) -> list[str]:
    """The classes a prompt offers, in label-space order (never by score: no position hint)."""
    if candidates is None or candidates >= len(space.labels):
        return list(space.labels)
    keep = set(space.index().top(text, candidates))
    keep.update(lab for lab in must if lab in set(space.labels))
    return [lab for lab in space.labels if lab in keep]


async def classify(
    rows: Iterable[dict[str, Any]] | AsyncIterable[dict[str, Any]],
    teacher: Teacher,
    space: LabelSpace,
    *,
    text_field: str = "text",
    k_shot: int = 2,
    candidates: int | None = None,
    template: str = "relabel/classify",
    samples: int = 1,
    temperature: float | None = None,
    seed: int = 0,
    intended_field: str | None = None,
    always_offer: Callable[[dict[str, Any]], Iterable[str]] | None = None,
    max_tokens: int | None = 32,
    numbered: bool = True,
) -> AsyncIterator[tuple[dict[str, Any], Relabel]]:
    """Yield ``(row, Relabel)`` for each row, in completion order.

    The prompt (``template``) shows the offered classes with their descriptions and up to ``k_shot``
    examples each (never the row's own text).  ``candidates=N`` offers only the N lexically most
    similar classes plus the row's intended label (``intended_field``, default ``intended_label`` then
    ``label``) and whatever ``always_offer(row)`` returns.  ``samples > 1`` asks that many times
    (needs ``temperature > 0``) and takes the majority vote (ties: the class named first).
    A row without a string ``text_field`` raises :class:`InputError` (callers validate files first).
    """
    if samples < 1:
        raise ValueError("samples must be at least 1")
    if samples > 1 and not (temperature and temperature > 0):
        raise ValueError("samples > 1 draws distinct answers: set temperature above 0")
    if k_shot < 0:
        raise ValueError("k_shot must be >= 0")
    if candidates is not None and candidates < 1:
        raise ValueError("candidates must be at least 1")
    tpl = load_template(template)
    tpl.check({"classes", "text", "numbered", "task"}, where="relabel")
    prov = tpl.provenance()
    if candidates is not None:
        space.index()  # build once, up front
    labels_set = set(space.labels)

    def job_for(row: dict[str, Any]) -> Job[tuple[dict[str, Any], list[str]]]:
        text = row.get(text_field)
        if not isinstance(text, str) or not text.strip():
            raise InputError([f"row {row.get('id', '?')!r}: field {text_field!r}: missing or not a non-empty string"])
        must = [x for x in [_intended(row, intended_field)] if x]
        if always_offer is not None:
            must += [x for x in always_offer(row) if isinstance(x, str)]
        offered = offered_classes(text, space, candidates, must)
        own = norm_text(text)
        classes = [
            {
                "n": i + 1,
                "name": lab,
                "description": space.description(lab),
                "examples": [e for e in space.examples.get(lab, []) if norm_text(e) != own][:k_shot],
            }
            for i, lab in enumerate(offered)
        ]
        prompt = tpl.render(classes=classes, text=text.strip(), numbered=numbered, task=space.task)
        key = _row_key(row, text)
        params: dict[str, Any] = {}
        if temperature is not None:
            params["temperature"] = temperature
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        reqs = []
        for s in range(samples):
            # the same params for every sample: k samples go as one request with n=k (prompt billed once);
            # sent one by one (a server without n), sample s gets seed + s
            p = dict(params)
            if samples > 1:
                p["seed"] = seed
            reqs.append(TeacherRequest(key=f"relabel:{key}#{s}", messages=[{"role": "user", "content": prompt}],
                                       params=p, sample_index=s, schema=label_schema(tuple(offered))))
        return Job((row, offered), reqs)

    async def jobs() -> AsyncIterator[Job[tuple[dict[str, Any], list[str]]]]:
        async for row in aiter_any(rows):
            yield job_for(row)

    async for job in stream_jobs(teacher, jobs()):
        row, offered = job.item
        results = [r for r in job.results if r is not None]
        votes: Counter = Counter()
        first_seen: dict[str, int] = {}
        reasons: list[str] = []
        errors: list[str] = []
        for i, res in enumerate(results):
            if not res.ok:
                errors.append(res.error or "failed")
                continue
            got, invalid = answer_of(res, lambda p: p.label, lambda _text: None)
            if invalid is not None or res.structured:
                lab, why = got, invalid
            else:
                lab, why = await parse_off_loop(len(res.text or ""), map_answer, res.text, offered, space.labels,
                                                numbered=numbered)
            if lab is not None and lab in labels_set:
                votes[lab] += 1
                first_seen.setdefault(lab, i)
            elif why:
                reasons.append(why)
        label = min(votes, key=lambda lab: (-votes[lab], first_seen[lab])) if votes else None
        reason = None
        if label is None:
            reason = f"teacher error: {errors[0]}" if errors and not reasons else (reasons[0] if reasons else "unmappable answer")
        costs = [r.cost_usd for r in results] + [b.cost_usd for r in results for b in r.reasks]  # re-asks paid too
        known_costs = [c for c in costs if c is not None]
        raws = [r.text for r in results]
        traces = [trace_of(r) for r in results]
        yield row, Relabel(
            label=label,
            raw=raws[0] if len(raws) == 1 else json.dumps(raws, ensure_ascii=False),
            candidates=offered,
            reason=reason,
            votes=dict(votes) if samples > 1 else ({label: 1} if label else {}),
            cost_usd=None if len(known_costs) < len(costs) else round(sum(known_costs), 10),
            cached=all(r.cached for r in results),
            model=next((r.model for r in results if r.model), teacher.model),
            template=prov,
            reasoning=(None if not any(traces) else traces[0] if len(traces) == 1 else traces),
        )


@functools.lru_cache(maxsize=1024)
def label_schema(offered: tuple[str, ...]) -> type[BaseModel]:
    """The relabel answer as a schema: ``{"label": one of the offered classes}`` (a JSON enum)."""
    choice: Any = Literal.__getitem__(offered)  # type: ignore[attr-defined]
    model: type[BaseModel] = create_model("label", label=(choice, ...))
    return model


# --------------------------------------------------------------------------------------------------
# confusion summary
# --------------------------------------------------------------------------------------------------


LABEL_SPACE_HELP = ("Label space YAML/JSON: labels (a list, or name: description), examples per label (a list of "
                    "texts), optional task.")


@dataclass(kw_only=True)
class RelabelConfig:
    """The options of relabeling (the teacher as a k-shot classifier over existing rows), declared
    once: ``synthkd generate relabel``, the pipeline stage ``generate.relabel`` and the Python API
    (:meth:`run`) are built from them."""

    input: Optional[Path] = opt(None, help="Input rows with an id and a text field (jsonl, csv, parquet, a datasets directory or hf:).", flags=("-i",),
                                stage=False)
    labels: Optional[Path] = opt(None, help=LABEL_SPACE_HELP, flags=("-l",))
    output: Optional[Path] = opt(None, help="Output jsonl (appended; ids already there are skipped).",
                                 flags=("-o",), stage=False)
    text_field: str = opt("text", help="Field holding the text to classify.")
    label_field: Optional[str] = opt(None, help="Field holding the intended label (default: intended_label, else "
                                     "label).")
    k_shot: int = opt(2, help="Examples per class shown in the prompt.", ge=0)
    candidates: Optional[int] = opt(None, help="Offer only the N lexically most similar classes (+ the intended "
                                    "one); default all.", ge=1)
    samples: int = opt(1, help="Answers per row, majority vote (needs --temperature > 0).", ge=1)
    temperature: Optional[float] = opt(0.0, help="Sampling temperature for the classifier.", ge=0)
    seed: int = opt(0, help="Seed of the first sample when --samples > 1.")
    template: str = opt("relabel/classify", help="Classification prompt template (name or path).")
    max_tokens: Optional[int] = opt(32, help="max_tokens for each answer.", ge=1)

    def intended(self, row: dict[str, Any]) -> Any:
        """The row's intended label (``label_field``, default ``intended_label`` then ``label``)."""
        if self.label_field:
            return row.get(self.label_field)
        return row.get("intended_label", row.get("label"))

    def check(self) -> None:
        if self.samples > 1 and not (self.temperature and self.temperature > 0):
            raise InputError(["--samples > 1 draws distinct answers: set --temperature above 0"])

    def check_input(self, path: Path, space: LabelSpace) -> int:
        """Check the whole input file before any request (ids, texts, intended labels); the row count."""
        if not path.is_file():
            raise InputError([f"{path}: file not found"])
        labels = set(space.labels)
        problems: list[str] = []
        seen: dict[int, int] = {}
        n = 0
        for lineno, row in iter_jsonl(path):
            n += 1
            where = f"{path}:{lineno}"
            if not isinstance(row, dict):
                problems.append(f"{where}: expected a JSON object")
            else:
                rid = row.get("id")
                if "id" not in row:
                    problems.append(f"{where}: field 'id': missing")
                elif why := check_id(rid):  # the one id rule (64-bit integers named, F16)
                    problems.append(f"{where}: {why}")
                else:
                    h = id_hash(rid)
                    if h in seen:
                        problems.append(f"{where}: field 'id': duplicate id {rid!r} (first on line {seen[h]})")
                    seen.setdefault(h, lineno)
                t = row.get(self.text_field)
                if not isinstance(t, str) or not t.strip():
                    problems.append(f"{where}: field '{self.text_field}': missing or not a non-empty string")
                lab = self.intended(row)
                fname = self.label_field or ("intended_label" if "intended_label" in row else "label")
                if lab is not None and not isinstance(lab, str):
                    problems.append(f"{where}: field '{fname}': must be a class name string, got {lab!r}")
                elif lab is not None and lab not in labels:
                    problems.append(f"{where}: field '{fname}': {lab!r} is not a class of the label space")
            if len(problems) >= 20:
                break
        if not problems and n == 0:
            problems.append(f"{path}: no rows (the file is empty)")
        if problems:
            raise InputError(problems)
        return n

    async def run(self, rows: Iterable[dict[str, Any]] | AsyncIterable[dict[str, Any]], teacher: Teacher,
                  space: LabelSpace) -> AsyncIterator[dict[str, Any]]:
        """Each row with ``relabeled_label``, ``relabel_raw``, ``relabel_reason`` and provenance added, in
        completion order; a row whose request failed for good gets ``reject_reason``."""
        async for row, rel in classify(
            rows, teacher, space, text_field=self.text_field, k_shot=self.k_shot, candidates=self.candidates,
            template=self.template, samples=self.samples, temperature=self.temperature, seed=self.seed,
            intended_field=self.label_field, max_tokens=self.max_tokens,
        ):
            out = {**row, "relabeled_label": rel.label, "relabel_raw": rel.raw, "relabel_reason": rel.reason}
            if rel.reasoning is not None:
                out["relabel_reasoning"] = rel.reasoning
            if self.candidates is not None:
                out["relabel_candidates"] = rel.candidates
            if self.samples > 1:
                out["relabel_votes"] = rel.votes
            out.update(relabel_template=rel.template, relabel_model=rel.model, relabel_cost_usd=rel.cost_usd,
                       relabel_cached=rel.cached)
            if rel.teacher_error:
                out["reject_reason"] = rel.reason
            yield out


register_feature("generate.relabel", RelabelConfig, command=("generate", "relabel"), stage="generate.relabel")


def confusion_summary(pairs: Iterable[tuple[str | None, str | None]], top: int = 10) -> dict[str, Any]:
    """Intended vs relabeled: agreement share, unmapped count, top confusions, per-class agreement.

    ``agreement`` is over rows that have an intended label *and* a relabeled one; rows the teacher's
    answer could not be mapped for are counted in ``unmapped`` (and not in the share).
    """
    rows = 0
    no_intended = 0
    unmapped = 0
    agree = 0
    conf: Counter = Counter()
    per: dict[str, Counter] = {}
    for intended, relabeled in pairs:
        rows += 1
        if intended is None:
            no_intended += 1
            continue
        c = per.setdefault(intended, Counter())
        c["n"] += 1
        if relabeled is None:
            unmapped += 1
            c["unmapped"] += 1
            continue
        c["mapped"] += 1
        if relabeled == intended:
            agree += 1
            c["agree"] += 1
        else:
            conf[(intended, relabeled)] += 1
    compared = rows - no_intended - unmapped
    return {
        "rows": rows,
        "compared": compared,
        "agree": agree,
        "agreement": round(agree / compared, 4) if compared else None,
        "unmapped": unmapped,
        "no_intended": no_intended,
        "top_confusions": [[a, b, n] for (a, b), n in sorted(conf.items(), key=lambda kv: (-kv[1], kv[0]))[:top]],
        "per_label": {
            lab: {"n": c["n"], "agree": c["agree"], "unmapped": c["unmapped"],
                  "agreement": round(c["agree"] / c["mapped"], 4) if c["mapped"] else None}
            for lab, c in sorted(per.items())
        },
    }


def format_confusion(s: dict[str, Any], title: str = "intended vs relabeled") -> str:
    if not s["rows"]:
        return f"{title}: no rows"
    share = "n/a" if s["agreement"] is None else f"{100 * s['agreement']:.1f}%"
    lines = [
        f"{title}: agreement {share} ({s['agree']}/{s['compared']} rows compared; "
        f"{s['unmapped']} unmappable, {s['no_intended']} without an intended label)"
    ]
    if s["top_confusions"]:
        lines.append("top confusions (intended -> relabeled: rows): " + "; ".join(
            f"{a} -> {b}: {n}" for a, b, n in s["top_confusions"]))
    return "\n".join(lines)
