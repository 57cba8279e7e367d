"""Labelled examples from a task description: N diverse, de-duplicated examples per label.

The input is a task spec (YAML/JSON, see :func:`load_task_spec`): a task description, the labels
(optionally with descriptions and seed examples) and attribute lists such as topics, styles or
lengths.  Each teacher request asks for a batch of ``batch_size`` examples of one label under one
combination of attribute values; the combinations are a seeded shuffle of the full product, so
successive requests for a label ask for different things and the answers are not near-copies.

Why the processing is shaped like this (resume = rerun, nothing paid twice):

* Request ``r`` of label ``L`` has a prompt that depends only on (spec, template, seed, L, r) —
  never on what came back — so a rerun issues the same requests and the cache answers them.
* Answers of a label are *processed* strictly in request order (a reorder buffer), so which texts
  are kept, and the ids ``<label>-<k>`` they get, never depend on completion order.  Rows still
  stream out as soon as every earlier request of their label is in.
* More requests for a label are issued only when all of its earlier ones are processed, and their
  number is a function of what was kept so far — again the same on every rerun.
* A request that fails for good (or is never sent because the budget ran out) *stalls* its label:
  later answers of that label wait for the next run, instead of taking ids that the failed
  request's texts would have had.  So the output is always a prefix of the failure-free run.
* Near-duplicates are looked for **within a label** (and against every label's seed examples, which
  are fixed before the first request), never against what *other* labels kept so far: labels are
  processed concurrently, so a pool shared by all labels would make "which label keeps a text both
  were given" depend on which answer arrived first (issue 18: two identical runs agreed on 496 of
  600 rows).  So a row's fate is a function of the seed, the spec and its own label's answers.
  A text the teacher wrote for two labels is kept under both: that is a *label conflict*, resolved
  downstream by a stated policy (the ``label_conflicts`` cleaning op: relabel by the teacher,
  majority or drop), where copies from other generators (PromptMix) are seen too.
* The finished output is rewritten in canonical order (spec label order, then ``k``;
  :func:`canonical_order`), so the file a run leaves does not depend on completion order either:
  two runs, a cached rerun and a resume after SIGKILL leave the same rows in the same order.

Shared with Self-Instruct, and kept elsewhere: :func:`synthkd.teacher_lists.parse_list_items` (robust
numbered / bulleted / JSON-lines parsing of teacher lists), :class:`synthkd.teachers.jobs.JobFeed`
(jobs added while the stream runs) and :class:`synthkd.teachers.jobs.MethodStats` (requests, tokens,
cost and drops by reason, for the summary).
"""

from __future__ import annotations

import itertools
import json
import math
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import yaml

from synthkd.jsonl_io import InputError
from synthkd.labels import DEFAULT_OOS, OOS_DESCRIPTION
from synthkd.near_dup_pool import NearDupPool, duplicate_reason
from synthkd.options import comma_list, opt, register_feature
from synthkd.reasoning import reasoning_field
from synthkd.teacher_lists import clean_item, parse_list_items
from synthkd.teachers.base import Teacher, TeacherRequest
from synthkd.teachers.jobs import Job, JobFeed, MethodStats, request_provenance, stable_rng, stream_jobs
from synthkd.teachers.structured import ItemList, answer_of
from synthkd.templates import PromptTemplate, load_template

# ==================================================================================================
# The task spec
# ==================================================================================================

#: One label file for every feature (tasks, PromptMix, relabel, balance, eval): the keys of a task spec,
#: the label-space spellings ``descriptions`` / ``examples``, and provenance notes.
_TOP_KEYS = {"task", "text_name", "labels", "label_descriptions", "seed_examples", "attributes", "descriptions",
             "examples", "out_of_scope", "name", "source", "licence", "license"}


class _Lines:
    """Line numbers of fields in a YAML/JSON document, so errors can name them."""

    def __init__(self, text: str) -> None:
        try:
            self.root = yaml.compose(text)
        except yaml.YAMLError:
            self.root = None

    def line(self, *path: Any) -> int | None:
        node, found = self.root, None
        for p in path:
            if node is None:
                break
            nxt = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == str(p):
                        found = k.start_mark.line + 1
                        nxt = v
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(p, int) and p < len(node.value):
                nxt = node.value[p]
                found = nxt.start_mark.line + 1
            node = nxt
        return found


@dataclass
class LabelSpec:
    name: str
    description: str = ""
    examples: list[str] = field(default_factory=list)
    where: str = ""  # "file:line" of its definition, for errors found later
    out_of_scope: bool = False  # the class of texts that belong to none of the others


@dataclass
class TaskDescription:
    """A classification task to generate examples for (see :func:`load_task_spec`)."""

    task: str
    labels: list[LabelSpec]
    attributes: dict[str, list[str]] = field(default_factory=dict)
    text_name: str = "text"
    path: Path | None = None

    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    @property
    def out_of_scope(self) -> str | None:
        """The out-of-scope class's name, when the file declares one."""
        return next((lab.name for lab in self.labels if lab.out_of_scope), None)

    def label(self, name: str) -> LabelSpec:
        return next(lab for lab in self.labels if lab.name == name)


def load_task_spec(path: str | Path) -> TaskDescription:
    """Read and validate a task spec; raise InputError naming file, line and field of every problem.

    Format (YAML or JSON)::

        task: Classify customer messages to an online bank by intent.   # required
        text_name: customer message                                      # optional, default "text"
        labels:                       # a list of names, a list of {name, description, examples},
          card_arrival:               # or a mapping name -> description | {description, examples}
            description: The customer asks when their new card will arrive.
            examples: ["Where is my new card?"]
          lost_or_stolen_card: The customer reports a lost or stolen card.
        label_descriptions: {name: description}    # optional, another way to give descriptions
        seed_examples: {name: [text, ...]}         # optional; or a list of {text, label}
        attributes:                                # optional: value lists combined per request
          style: [polite, angry, terse]
          length: [a few words, one sentence, two sentences]
        out_of_scope:                              # optional: a class for texts that fit no label
          name: out_of_scope                       # (default name), generated with its own prompt
          description: Anything else a customer might write (other topics, small talk).
          examples: ["Can you book me a table for two?"]

    The label-space spellings ``descriptions`` and ``examples`` ({name: [texts]}) are accepted too, so
    one file serves ``generate tasks``, ``generate promptmix``, ``relabel``, ``balance`` and ``eval``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError([f"{path}: task spec not found"])
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise InputError([f"{path}:{exc.lineno}: not valid JSON ({exc.msg})"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise InputError([f"{at}: not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    lines = _Lines(text)
    problems: list[str] = []

    def err(msg: str, *fpath: Any) -> None:
        ln = lines.line(*fpath) if fpath else None
        dotted = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in fpath).replace(".[", "[")
        problems.append(f"{path}{':' + str(ln) if ln else ''}: " + (f"field '{dotted}': " if fpath else "") + msg)

    if not isinstance(data, dict):
        raise InputError([f"{path}: expected a mapping with 'task' and 'labels', got {type(data).__name__}"])
    for k in data:
        if k not in _TOP_KEYS:
            err(f"unknown field (known: {', '.join(sorted(_TOP_KEYS))})", k)
    task = data.get("task")
    if not isinstance(task, str) or not task.strip():
        err("missing or empty: describe the task in a sentence or two", "task")
        task = ""
    text_name = data.get("text_name", "text")
    if not isinstance(text_name, str) or not text_name.strip():
        err("must be a non-empty string (what one example is, e.g. 'customer message')", "text_name")
        text_name = "text"

    labels: list[LabelSpec] = []
    raw = data.get("labels")

    def where(*fpath: Any) -> str:
        ln = lines.line(*fpath)
        return f"{path}:{ln}" if ln else str(path)

    def add_label(name: Any, desc: Any, examples: Any, fpath: tuple[Any, ...]) -> None:
        if not isinstance(name, str) or not name.strip():
            err(f"label name must be a non-empty string (quote names like yes/no/1), got {name!r}", *fpath)
            return
        if any(lab.name == name for lab in labels):
            err(f"duplicate label {name!r}", *fpath)
            return
        if desc is not None and not isinstance(desc, str):
            err("description must be a string", *fpath, "description")
            desc = None
        exs = _str_list(examples, err, (*fpath, "examples")) if examples is not None else []
        labels.append(LabelSpec(name.strip(), (desc or "").strip(), exs, where(*fpath)))

    if raw is None or raw == [] or raw == {}:
        err("missing or empty: give at least two labels", "labels")
    elif isinstance(raw, list):
        for i, entry in enumerate(raw):
            if isinstance(entry, dict):
                extra = set(entry) - {"name", "description", "examples"}
                if extra:
                    err(f"unknown field(s) {sorted(extra)} (known: name, description, examples)", "labels", i)
                add_label(entry.get("name"), entry.get("description"), entry.get("examples"), ("labels", i))
            else:
                add_label(entry, None, None, ("labels", i))
    elif isinstance(raw, dict):
        for name, entry in raw.items():
            if isinstance(entry, dict):
                extra = set(entry) - {"description", "examples"}
                if extra:
                    err(f"unknown field(s) {sorted(extra)} (known: description, examples)", "labels", name)
                add_label(name, entry.get("description"), entry.get("examples"), ("labels", name))
            elif entry is None or isinstance(entry, str):
                add_label(name, entry, None, ("labels", name))
            else:
                err("must be a description string or {description, examples}", "labels", name)
    else:
        err("must be a list of label names or a mapping label -> description", "labels")
    if labels and len(labels) < 2 and not problems:
        err("a classification task needs at least two labels", "labels")
    lines_alias: dict[str, str] = {}

    oos = data.get("out_of_scope")
    if oos is not None:
        if isinstance(oos, str):
            oos = {"description": oos}
        if not isinstance(oos, dict):
            err("must be a description string or {name, description, examples}", "out_of_scope")
        else:
            extra = set(oos) - {"name", "description", "examples"}
            if extra:
                err(f"unknown field(s) {sorted(extra)} (known: name, description, examples)", "out_of_scope")
            add_label(oos.get("name", DEFAULT_OOS), oos.get("description"), oos.get("examples"), ("out_of_scope",))
            if labels and labels[-1].name == str(oos.get("name", DEFAULT_OOS)).strip():
                labels[-1].out_of_scope = True
                if not labels[-1].description:
                    labels[-1].description = OOS_DESCRIPTION
    for alias, canonical in (("descriptions", "label_descriptions"), ("examples", "seed_examples")):
        if alias in data:
            if canonical in data:
                err(f"give either '{alias}' or '{canonical}', not both", alias)
            else:
                data[canonical] = data[alias]
                lines_alias[canonical] = alias
    known = {lab.name: lab for lab in labels}

    descs = data.get("label_descriptions")
    if descs is not None:
        if not isinstance(descs, dict):
            err("must be a mapping label -> description", "label_descriptions")
        else:
            for name, d in descs.items():
                if name not in known:
                    err(f"unknown label {name!r} (labels: {', '.join(known)})", lines_alias.get("label_descriptions", "label_descriptions"), name)
                elif not isinstance(d, str):
                    err("description must be a string", lines_alias.get("label_descriptions", "label_descriptions"), name)
                elif known[name].description and known[name].description != d.strip():
                    err("label described twice (in 'labels' and here) with different text", lines_alias.get("label_descriptions", "label_descriptions"), name)
                else:
                    known[name].description = d.strip()

    seeds = data.get("seed_examples")
    if seeds is not None:
        if isinstance(seeds, dict):
            for name, exs in seeds.items():
                if name not in known:
                    err(f"unknown label {name!r} (labels: {', '.join(known)})", lines_alias.get("seed_examples", "seed_examples"), name)
                    continue
                known[name].examples.extend(_str_list(exs, err, (lines_alias.get("seed_examples", "seed_examples"), name)))
        elif isinstance(seeds, list):
            for i, ex in enumerate(seeds):
                if not isinstance(ex, dict) or set(ex) != {"text", "label"}:
                    err("each seed example must be {text, label}", lines_alias.get("seed_examples", "seed_examples"), i)
                    continue
                if ex["label"] not in known:
                    err(f"unknown label {ex['label']!r} (labels: {', '.join(known)})", lines_alias.get("seed_examples", "seed_examples"), i, "label")
                    continue
                if not isinstance(ex["text"], str) or not ex["text"].strip():
                    err("must be a non-empty string", "seed_examples", i, "text")
                    continue
                known[ex["label"]].examples.append(ex["text"].strip())
        else:
            err("must be a mapping label -> [texts] or a list of {text, label}", "seed_examples")

    attributes: dict[str, list[str]] = {}
    attrs = data.get("attributes")
    if attrs is not None:
        if not isinstance(attrs, dict):
            err("must be a mapping name -> list of values", "attributes")
        else:
            for name, values in attrs.items():
                if not isinstance(name, str) or not name.strip():
                    err("attribute names must be non-empty strings", "attributes")
                    continue
                if not isinstance(values, list) or not values:
                    err("must be a non-empty list of values", "attributes", name)
                    continue
                vals = []
                for j, v in enumerate(values):
                    if isinstance(v, bool) or not isinstance(v, (str, int, float)) or not str(v).strip():
                        err("must be a non-empty string", "attributes", name, j)
                    else:
                        vals.append(str(v).strip())
                if len(set(vals)) != len(vals):
                    err("has repeated values", "attributes", name)
                attributes[name] = vals
    if problems:
        raise InputError(problems)
    return TaskDescription(task=task.strip(), labels=labels, attributes=attributes, text_name=text_name.strip(), path=path)


def _str_list(value: Any, err: Any, fpath: tuple[Any, ...]) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        err("must be a list of strings", *fpath)
        return []
    out = []
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v.strip():
            err("must be a non-empty string", *fpath, i)
        else:
            out.append(v.strip())
    return out


# ==================================================================================================
# The plan: everything checked before the first request
# ==================================================================================================


def sampling_params(**values: Any) -> dict[str, Any]:
    """Sampling parameters sent with a request: those that are set."""
    return {k: v for k, v in values.items() if v is not None}


@dataclass(kw_only=True)
class LabelTaskConfig:
    """The options of labelled examples from a task spec, declared once: ``synthkd generate tasks``, the
    pipeline stage ``generate.tasks`` and the Python API (:func:`plan_label_tasks` takes it) are built
    from them.  :attr:`params`: the sampling parameters sent with every request."""

    labels: Optional[Path] = opt(None, help="Label file (YAML/JSON): task, labels (+ descriptions, seed examples), "
                                 "attributes, optional out_of_scope class (a subset of its labels: --only).", flags=("-s",), aliases=("--spec",),
                                 yaml_aliases=("spec",))
    output: Optional[Path] = opt(None, help="jsonl output; rerun to resume.", flags=("-o",), stage=False)
    per_label: int = opt(help="Examples to keep per label.", flags=("-n",), ge=1)
    batch_size: Optional[int] = opt(None, help="Examples asked for per request (default: --per-label, at most 10).",
                                    ge=1)
    max_requests_per_label: Optional[int] = opt(None, help="Cap on requests per label (default max(4, 4*N/batch)).",
                                                ge=1)
    template: str = opt("tasks/examples", help="Template name or .j2 file (tasks/examples needs label descriptions; "
                        "tasks/examples_names does not).")
    only: Optional[list[str]] = opt(None, help="Generate for these labels of the file only (comma-separated).",
                                    cli_type=Optional[str], cli_parse=comma_list)
    oos_template: str = opt("tasks/out_of_scope", help="Template of the label file's out_of_scope class (texts that "
                            "fit none of the labels).")
    seeds_per_prompt: int = opt(3, help="Seed examples of the label shown per prompt.", ge=0)
    min_words: int = opt(3, help="Drop items with fewer whitespace-separated words.", ge=0)
    temperature: Optional[float] = opt(1.0, help="Sampling temperature.", ge=0)
    max_tokens: Optional[int] = opt(None, help="max_tokens per request.", ge=1)
    seed: int = opt(0, help="Seed of every random choice (attribute combos, few-shot pools).")
    threshold: float = opt(0.7, help="Drop a candidate whose ROUGE-L F with a kept text or seed is above this.",
                           gt=0, lt=1)
    extra_params: dict[str, Any] = opt(default_factory=dict, help="More sampling parameters sent with every "
                                       "request (top_p...).", cli=False, stage=False)

    @property
    def params(self) -> dict[str, Any]:
        return {**sampling_params(temperature=self.temperature, max_tokens=self.max_tokens), **self.extra_params}

    @property
    def per_request(self) -> int:
        """Examples asked for in one request: ``batch_size``, else ``per_label`` up to 10."""
        return self.batch_size or min(10, self.per_label)


register_feature("generate.tasks", LabelTaskConfig, command=("generate", "tasks"), stage="generate.tasks")


@dataclass
class LabelTaskPlan:
    spec: TaskDescription
    config: LabelTaskConfig
    template: PromptTemplate
    labels: list[str]
    max_requests: int
    combos: dict[str, list[tuple[int, ...]]]
    oos_template: PromptTemplate | None = None  # the out_of_scope class's own prompt

    def template_for(self, label: str) -> PromptTemplate:
        if self.oos_template is not None and label == self.spec.out_of_scope:
            return self.oos_template
        return self.template

    def attributes_for(self, label: str, r: int) -> dict[str, str]:
        names = list(self.spec.attributes)
        if not names:
            return {}
        pool = self.combos.get(label)
        if pool:
            idx = pool[r % len(pool)]
        else:  # product too large to list: an independent seeded draw per request
            rng = stable_rng(self.config.seed, "attrs", label, r)
            idx = tuple(rng.randrange(len(self.spec.attributes[n])) for n in names)
        return {n: self.spec.attributes[n][i] for n, i in zip(names, idx)}

    def variables(self, label: str, r: int) -> dict[str, Any]:
        lab = self.spec.label(label)
        exs = lab.examples
        k = min(self.config.seeds_per_prompt, len(exs))
        shown = stable_rng(self.config.seed, "examples", label, r).sample(exs, k) if k else []
        return {
            "task_description": self.spec.task,
            "text_name": self.spec.text_name,
            "label": label,
            "label_description": lab.description,
            "labels": self.spec.label_names,
            "label_descriptions": {x.name: x.description for x in self.spec.labels},
            "other_labels": [n for n in self.spec.label_names if n != label],
            "in_scope_labels": [x.name for x in self.spec.labels if not x.out_of_scope],
            "n": self.config.per_request,
            "attributes": self.attributes_for(label, r),
            "examples": shown,
            "request_index": r,
        }

    def request(self, label: str, r: int) -> TeacherRequest:
        content = self.template_for(label).render(**self.variables(label, r))
        return TeacherRequest(
            key=f"{label}/{r}",
            messages=[{"role": "user", "content": content}],
            # the seed makes the r-th request of a label a distinct, reproducible sample even when
            # its prompt repeats an earlier one (more requests than attribute combinations)
            params={**self.config.params, "seed": r},
            sample_index=r,
            schema=ItemList,  # a JSON list where the teacher takes a schema, else the text is parsed
        )


_MAX_LISTED_COMBOS = 100_000


def plan_label_tasks(spec: TaskDescription, config: LabelTaskConfig) -> LabelTaskPlan:
    """Check settings, template and spec together; raise InputError/TemplateError before any call."""
    c = config
    problems = []
    if c.per_label < 1:
        problems.append("--per-label must be at least 1")
    if c.batch_size is not None and c.batch_size < 1:
        problems.append("--batch-size must be at least 1")
    if c.max_requests_per_label is not None and c.max_requests_per_label < 1:
        problems.append("--max-requests-per-label must be at least 1")
    if not 0 < c.threshold < 1:
        problems.append("--threshold must be in (0, 1)")
    if c.min_words < 0:
        problems.append("--min-words must be >= 0")
    labels = spec.label_names
    if c.only:
        unknown = [x for x in c.only if x not in labels]
        if unknown:
            problems.append(f"--only: unknown label(s) {', '.join(unknown)} (label file {spec.path} has: "
                            f"{', '.join(labels)})")
        labels = [x for x in labels if x in c.only]
    if problems:
        raise InputError(problems)
    template = load_template(c.template)
    provided = {"task_description", "text_name", "label", "label_description", "labels", "label_descriptions",
                "other_labels", "in_scope_labels", "n", "attributes", "examples", "request_index"}
    template.check(provided, where=str(spec.path or "spec"))
    oos_template = None
    if spec.out_of_scope is not None and spec.out_of_scope in labels:
        oos_template = load_template(c.oos_template)
        oos_template.check(provided, where=str(spec.path or "spec"))
    if {"label_description", "label_descriptions"} & template.variables:
        # label_descriptions shows every label's description; label_description only the requested one's
        scope = spec.label_names if "label_descriptions" in template.variables else labels
        missing = [lab for lab in spec.labels if lab.name in scope and not lab.description]
        if missing:
            raise InputError([
                f"{lab.where}: label {lab.name!r}: field 'description': empty, but template {template.name!r} "
                "uses label descriptions (give one per label, or use --template tasks/examples_names)"
                for lab in missing
            ])
    combos: dict[str, list[tuple[int, ...]]] = {}
    sizes = [len(v) for v in spec.attributes.values()]
    if sizes and math.prod(sizes) <= _MAX_LISTED_COMBOS:
        product = list(itertools.product(*(range(n) for n in sizes)))
        for lab in labels:
            order = list(product)
            stable_rng(c.seed, "combos", lab).shuffle(order)
            combos[lab] = order
    max_req = c.max_requests_per_label or max(4, math.ceil(4 * c.per_label / c.per_request))
    plan = LabelTaskPlan(spec, c, template, labels, max_req, combos, oos_template)
    for lab in labels:  # render once per label now: a template error costs nothing
        plan.request(lab, 0)
    return plan


# ==================================================================================================
# Generation
# ==================================================================================================


@dataclass
class _LabelState:
    name: str
    issued: int = 0
    next_r: int = 0
    kept: int = 0
    items_seen: int = 0
    held: dict[int, Job[tuple[str, int]]] = field(default_factory=dict)
    stalled: str | None = None


async def generate_label_examples(
    teacher: Teacher, plan: LabelTaskPlan, *, stats: MethodStats | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Yield kept example rows (and dropped candidates with ``reject_reason``) as they are decided.

    Kept rows: ``{id: "<label>-<k>", text, label, attributes, template, template_sha, teacher,
    request_id, item_index, request_usage, request_cost_usd, cached, request_cache_key}`` — usage and
    cost are the whole request's, shared by the rows that came from it (sum them per request_id).
    """
    st = stats if stats is not None else MethodStats()
    c = plan.config
    N, m = c.per_label, c.per_request
    seed_pool = NearDupPool(c.threshold)
    for spec in plan.spec.labels:
        for i, ex in enumerate(spec.examples):
            seed_pool.add(ex, f"seed:{spec.name}:{i}")
    # one pool per label: what another label kept must not decide this label's rows (see the docstring)
    pools = {lab: NearDupPool(c.threshold) for lab in plan.labels}
    states = {lab: _LabelState(lab) for lab in plan.labels}
    for lab in plan.labels:
        st.per_label[lab] = 0
    feed: JobFeed[tuple[str, int]] = JobFeed()

    def issue(s: _LabelState, count: int) -> None:
        count = min(count, plan.max_requests - s.issued)
        for _ in range(max(0, count)):
            r = s.issued
            s.issued += 1
            feed.put(Job((s.name, r), [plan.request(s.name, r)]))

    def top_up(s: _LabelState) -> None:
        """All issued requests are processed: ask for more if the label is short and may."""
        deficit = N - s.kept
        if deficit <= 0 or s.stalled:
            return
        if s.issued >= plan.max_requests:
            st.short[s.name] = (f"{s.kept}/{N} after the cap of {plan.max_requests} requests "
                                "(raise --max-requests-per-label, --batch-size, or check the rejects)")
            return
        yield_rate = 0.8 if s.items_seen == 0 else max(0.1, s.kept / s.items_seen)
        issue(s, math.ceil(deficit / (m * yield_rate)))

    provs = {lab: plan.template_for(lab).provenance() for lab in plan.labels}

    def base(label: str, r: int, attrs: dict[str, str]) -> dict[str, Any]:
        return {"label": label, "attributes": attrs, **provs[label], "teacher": teacher.model,
                "request_id": f"{label}/{r}"}

    def process(s: _LabelState, job: Job[tuple[str, int]]) -> list[dict[str, Any]]:
        label, r = job.item
        res = job.results[0]
        assert res is not None
        attrs = plan.attributes_for(label, r)
        if not res.ok:
            s.stalled = f"request {label}/{r} failed: {res.error}"
            st.short[label] = f"{s.kept}/{N}: {s.stalled} (rerun to retry; later answers are kept in the cache)"
            st.drops["teacher_error"] += 1
            return [{"id": f"{label}/{r}", **base(label, r, attrs), "reject_reason": f"teacher_error: {res.error}"}]
        rows = []
        meta = request_provenance(teacher, job.requests[0], res)
        trace = reasoning_field(res)  # the teacher's trace of this request, on each of its rows
        items, invalid = answer_of(res, lambda p: [c for c in (clean_item(x) for x in p.items) if c],
                                   parse_list_items)
        if invalid is not None:
            st.drops["invalid_structured_response"] += 1
            rows.append({"id": f"{label}/{r}", **base(label, r, attrs), "completion": res.text, **trace,
                         "reject_reason": invalid})
            items = []
        elif not items:
            st.drops["unparseable_response"] += 1
            rows.append({"id": f"{label}/{r}", **base(label, r, attrs), "completion": res.text, **trace,
                         "reject_reason": "unparseable_response: no list items found"})
        truncated = res.finish_reason == "length"
        for j, text in enumerate(items):
            cand = {"id": f"{label}/{r}/{j}", "text": text, **base(label, r, attrs), "item_index": j, **trace}
            reason = None
            if s.kept >= N:
                reason = "surplus: label already has enough examples"
            elif truncated and j == len(items) - 1:
                reason = "truncated: last item of an answer cut at max_tokens"
            elif len(text.split()) < c.min_words:
                reason = f"too_short: fewer than {c.min_words} words"
            else:
                s.items_seen += 1
                reason = duplicate_reason(text, seed_pool, pools[label], seed_by_text=True)
            if reason is not None:
                st.drops[reason.split(":")[0]] += 1
                cand["reject_reason"] = reason
                rows.append(cand)
                continue
            row_id = f"{label}-{s.kept}"
            pools[label].add(text, row_id)
            s.kept += 1
            st.kept += 1
            st.per_label[label] = s.kept
            rows.append({"id": row_id, **{k: v for k, v in cand.items() if k != "id"}, **meta})
        return rows

    for s in states.values():
        issue(s, math.ceil(N / (m * 0.8)))
    feed.close_if_idle()
    # closed at once when the caller stops early (a --limit dry run): no request is left in flight
    async with aclosing(stream_jobs(teacher, feed)) as answered:
        async for job in answered:
            feed.finished()
            st.record(job.results[0])  # type: ignore[arg-type]
            label, r = job.item
            s = states[label]
            s.held[r] = job
            while not s.stalled and s.next_r in s.held:
                for row in process(s, s.held.pop(s.next_r)):
                    yield row
                s.next_r += 1
                if s.next_r == s.issued:
                    top_up(s)
            feed.close_if_idle()
    st.budget_stopped = teacher.budget_exhausted
    for s in states.values():
        if s.kept < N and s.name not in st.short:
            st.short[s.name] = f"{s.kept}/{N}: " + (
                "budget reached before its requests were answered" if st.budget_stopped
                else f"{s.issued - s.next_r} request(s) not answered")


def canonical_key(plan: LabelTaskPlan) -> Any:
    """Sort key of an output row: the label's position in the spec, then ``k`` of ``<label>-<k>``
    (rows of labels the spec does not have, or other ids, last, in file order)."""
    order = {name: i for i, name in enumerate(plan.spec.label_names)}

    def key(row: dict[str, Any]) -> tuple[int, int]:
        lab, rid = row.get("label"), str(row.get("id", ""))
        prefix = f"{lab}-"
        if lab in order and rid.startswith(prefix) and rid[len(prefix):].isdigit():
            return order[lab], int(rid[len(prefix):])
        return len(order), 0

    return key


def canonical_order(plan: LabelTaskPlan, output: Path) -> None:
    """Rewrite a finished (or stopped) output in canonical order: the file then depends on what was
    kept, never on the order answers arrived in.  Atomic (temp file + rename), so a kill here leaves
    either the old or the new file."""
    from synthkd.methods.runner import sort_output

    sort_output(Path(output), canonical_key(plan))


__all__ = [
    "canonical_order", "canonical_key",
    "TaskDescription", "LabelSpec", "LabelTaskConfig", "LabelTaskPlan", "generate_label_examples", "load_task_spec",
    "plan_label_tasks",
]
