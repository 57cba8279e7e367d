"""PromptMix (Sahu et al., 2023): generate borderline examples that mix two classes, then relabel them.

Why: a student learns a class boundary from examples near it.  PromptMix asks the teacher for texts
that are "α% class A and (1-α)% class B" (α in [0.5, 1)), which lands them near the A/B boundary,
and then asks the teacher again, as a classifier, which class each text really is — the relabel step
fixes the examples that drifted over the boundary, turning them into hard examples of B.

Steps (each pure and deterministic given the label space and the seed, so a rerun renders the
same prompts, gets every answer from the cache and writes no row twice):

1. :func:`make_groups` partitions the classes into groups of ``group_size`` (similar classes together
   by default, by TF-IDF cosine; or a seeded random partition).
2. :func:`plan_calls` gives each class A ``ceil(per_label / m)`` calls; each names a partner B from A's
   group (cycling) and draws α = 0.5 + 0.5·Beta(a, b) (skewed toward 1), rounded to a whole percent.
3. The generation calls are answered (one teacher stream); :func:`parse_items` strips numbering and
   "(80% A, 20% B)"-style annotations.  Items are then deduplicated in the plan's order (not in
   completion order), dropping copies of the seed examples and exact repeats.
4. Every kept item goes through :func:`synthkd.labels.classify` (k-shot, descriptions,
   candidates = the most similar classes plus A and B), and ``policy`` decides its ``label``.

Generation finishes before relabeling starts: that keeps step 3's dedup independent of completion
order at the cost of one phase's tail latency, and each phase gets the teacher's full concurrency.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import numpy as np

from synthkd.labels import LABEL_SPACE_HELP, LabelSpace, classify, norm_text
from synthkd.options import comma_list, opt, register_feature
from synthkd.reasoning import reasoning_field
from synthkd.teachers.base import Teacher, TeacherRequest
from synthkd.teachers.jobs import Job, stream_jobs
from synthkd.teachers.structured import ItemList, answer_of
from synthkd.templates import load_template

POLICIES = ("overwrite", "keep", "drop-disagreeing")
GROUPINGS = ("similar", "random")


@dataclass(kw_only=True)
class PromptMixConfig:
    """The options of PromptMix, declared once: ``synthkd generate promptmix``, the pipeline stage
    ``generate.promptmix`` and the Python API (:func:`promptmix` takes it) are built from them."""

    labels: Optional[Path] = opt(None, help=LABEL_SPACE_HELP, flags=("-l",))
    output: Optional[Path] = opt(None, help="Output jsonl (appended; ids already there are skipped).",
                                 flags=("-o",), stage=False)
    per_label: int = opt(help="Examples to generate per label (before drops).", flags=("-n",), ge=1,
                         aliases=("--per-class",), yaml_aliases=("per_class",))
    group_size: int = opt(4, help="Classes per group; each class mixes with the others of its group.", ge=2)
    examples_per_call: int = opt(4, help="Examples asked for in one generation call.", ge=1)
    grouping: str = opt("similar", help="similar (TF-IDF nearest classes) or random (seeded).", choices=GROUPINGS)
    policy: str = opt("overwrite", help="label = relabeled (overwrite), intended (keep), or drop rows where they "
                      "differ (drop-disagreeing).", choices=POLICIES)
    seed: int = opt(0, help="Seed for groups, partners and alpha.")
    alpha_a: float = opt(2.0, help="alpha = 0.5 + 0.5*Beta(a, b): a.", gt=0)
    alpha_b: float = opt(1.0, help="alpha = 0.5 + 0.5*Beta(a, b): b.", gt=0)
    k_shot: int = opt(3, help="Seed examples per class in the generation prompt.", ge=0)
    relabel_k_shot: int = opt(2, help="Examples per class in the relabel prompt.", ge=0)
    relabel_candidates: Optional[int] = opt(10, help="Classes offered when relabeling (most similar + the pair); "
                                            "0 = all.", ge=0)
    template: str = opt("promptmix/generate", help="Generation prompt template.")
    relabel_template: str = opt("relabel/classify", help="Relabel prompt template.")
    temperature: Optional[float] = opt(1.0, help="Generation temperature.", ge=0)
    max_tokens: Optional[int] = opt(None, help="max_tokens for each generation call.", ge=1)
    relabel_temperature: Optional[float] = opt(0.0, help="Temperature of the relabel (classification) calls.", ge=0)
    relabel_max_tokens: int = opt(32, help="max_tokens for each relabel answer; a reasoning teacher (o-series, "
                                  "deepseek-reasoner, Qwen3 thinking) spends it on its reasoning too: give it ~1024.",
                                  ge=1)
    classes: Optional[list[str]] = opt(None, help="Comma-separated classes to generate for (default all).",
                                       cli_type=Optional[str], cli_parse=comma_list)
    confusion: Optional[Path] = opt(None, help="Relabelled rows (jsonl with relabel.intended/relabel.teacher, or "
                                    "intended_label/relabeled_label; in a pipeline: an earlier relabel stage's name): "
                                    "group and pair the classes the teacher confuses; without it (or for classes "
                                    "it never confused), by description similarity.")

    def __post_init__(self) -> None:
        if self.relabel_candidates == 0:  # 0 = offer every class
            self.relabel_candidates = None

    @property
    def alpha_beta(self) -> tuple[float, float]:
        """α = 0.5 + 0.5·Beta(a, b); (2, 1): mean α ≈ 0.83."""
        return (self.alpha_a, self.alpha_b)

    def problems(self, space: LabelSpace) -> list[str]:
        out = []
        if self.per_label < 1:
            out.append("--per-label must be at least 1")
        if self.group_size < 2:
            out.append("--group-size must be at least 2 (a class needs a partner to mix with)")
        if len(space.labels) < 2:
            out.append("PromptMix needs at least 2 classes in the label space")
        if self.examples_per_call < 1:
            out.append("--examples-per-call must be at least 1")
        if self.grouping not in GROUPINGS:
            out.append(f"--grouping must be one of {', '.join(GROUPINGS)}")
        if self.policy not in POLICIES:
            out.append(f"--policy must be one of {', '.join(POLICIES)}")
        a, b = self.alpha_beta
        if a <= 0 or b <= 0:
            out.append("alpha Beta parameters must be positive")
        if self.relabel_candidates is not None and self.relabel_candidates < 2:
            out.append("--relabel-candidates must be at least 2")
        for c in self.classes or []:
            if c not in space.labels:
                out.append(f"--classes: {c!r} is not in the label space")
        return out


register_feature("generate.promptmix", PromptMixConfig, command=("generate", "promptmix"), stage="generate.promptmix")


@dataclass(frozen=True)
class MixCall:
    """One generation request of the plan: class ``a`` mixed with ``b`` at ``alpha``."""

    key: str  # stable: promptmix:<a>:<call>
    a: str
    b: str
    alpha: float
    m: int
    group: tuple[str, ...]
    class_index: int
    call_index: int
    prompt: str
    pair_by: str = "description"  # why b is a's partner: confusion (the teacher's), description, or random

    @property
    def prompt_sha(self) -> str:
        return hashlib.sha256(self.prompt.encode()).hexdigest()[:8]


# --------------------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------------------


Confusion = dict[tuple[str, str], int]


def load_confusion(path: Path, space: LabelSpace) -> Confusion:
    """How often the teacher, relabelling, moved a row between two classes (both directions summed, keyed
    by the sorted pair): from rows with ``relabel: {intended, teacher}`` (the ``relabel`` cleaning op) or
    ``intended_label`` / ``relabeled_label`` (``generate relabel``, PromptMix).  Classes outside the label
    space are ignored.  Why: PromptMix's borderline examples help most between the classes the teacher
    itself mixes up — ``min_payment`` vs ``bill_balance``, whose names and descriptions are not alike."""
    from synthkd.jsonl_io import iter_jsonl

    known = set(space.labels)
    out: Confusion = {}
    for _lineno, row in iter_jsonl(path):
        if not isinstance(row, dict):
            continue
        info = row.get("relabel")
        a, b = (info.get("intended"), info.get("teacher")) if isinstance(info, dict) else \
            (row.get("intended_label"), row.get("relabeled_label"))
        if a in known and b in known and a != b:
            key = (min(a, b), max(a, b))
            out[key] = out.get(key, 0) + 1
    return out


def _conf(confusion: Confusion | None, a: str, b: str) -> int:
    return (confusion or {}).get((min(a, b), max(a, b)), 0)


def make_groups(space: LabelSpace, group_size: int, grouping: str = "similar", seed: int = 0,
                confusion: Confusion | None = None) -> list[list[str]]:
    """Partition the classes into groups of ``group_size`` (a leftover singleton joins another group).

    ``similar``: walk the classes in label-space order; each unassigned class takes its
    ``group_size - 1`` most similar unassigned classes: those the teacher confused it with most
    (``confusion``), then by TF-IDF cosine of name+description+examples.
    ``random``: a seeded shuffle cut into chunks.
    """
    labels = list(space.labels)
    if grouping == "similar" and confusion:
        desc = space.index().class_similarity()
        top = max(confusion.values())
        conf = np.array([[_conf(confusion, a, b) / top for b in labels] for a in labels])
        return _groups_merged(labels, conf + 0.01 * desc, group_size)  # description similarity breaks ties
    if grouping == "random":
        order = labels[:]
        random.Random(f"promptmix-groups:{seed}").shuffle(order)
        groups = [order[i : i + group_size] for i in range(0, len(order), group_size)]
    elif grouping == "similar":
        return _groups_by(labels, space.index().class_similarity(), group_size)
    else:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    if len(groups) > 1 and len(groups[-1]) == 1:
        groups[-2].append(groups.pop()[0])
    return groups


def _groups_merged(labels: list[str], score: Any, group_size: int) -> list[list[str]]:
    """Groups by merging: class pairs in descending ``score`` (ties: label-space order) join their groups
    while the union fits in ``group_size`` — so every confused pair that can be together is, which a
    greedy walk in label order does not ensure.  A leftover singleton joins a group as in :func:`_groups_by`."""
    n = len(labels)
    group = list(range(n))
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    pairs = sorted(((i, j) for i in range(n) for j in range(i + 1, n)), key=lambda p: (-score[p[0], p[1]], p))
    for i, j in pairs:
        gi, gj = group[i], group[j]
        if gi != gj and len(members[gi]) + len(members[gj]) <= group_size:
            lo, hi = min(gi, gj), max(gi, gj)
            members[lo] += members.pop(hi)
            for k in members[lo]:
                group[k] = lo
    groups = [[labels[k] for k in sorted(ms)] for _, ms in sorted(members.items())]
    if len(groups) > 1 and len(groups[-1]) == 1:
        lone, pos = groups.pop()[0], {lab: i for i, lab in enumerate(labels)}
        best = max(range(len(groups)), key=lambda g: (float(np.mean([score[pos[lone], pos[x]] for x in groups[g]])), -g))
        groups[best].append(lone)
    return groups


def _groups_by(labels: list[str], sim: Any, group_size: int) -> list[list[str]]:
    """Greedy groups by a class-by-class similarity matrix (label-space order; a leftover singleton joins
    the group it is most similar to on average)."""
    pos = {lab: i for i, lab in enumerate(labels)}
    left = labels[:]
    groups = []
    while left:
        head = left.pop(0)
        h = pos[head]
        near = sorted(left, key=lambda lab: (-sim[h, pos[lab]], pos[lab]))[: group_size - 1]
        for lab in near:
            left.remove(lab)
        groups.append([head, *near])
    if len(groups) > 1 and len(groups[-1]) == 1:
        lone = groups.pop()[0]
        best = max(range(len(groups)), key=lambda g: (float(np.mean([sim[pos[lone], pos[x]] for x in groups[g]])), -g))
        groups[best].append(lone)
    return groups


def draw_alpha(seed: int, a_label: str, call_index: int, beta: tuple[float, float] = (2.0, 1.0)) -> float:
    """α in [0.5, 0.99], skewed toward 1 by Beta(a, b), rounded to a whole percent; seeded per call."""
    rng = random.Random(f"promptmix-alpha:{seed}:{a_label}:{call_index}")
    x = 0.5 + 0.5 * rng.betavariate(*beta)
    return min(0.99, max(0.5, round(x, 2)))


def plan_calls(space: LabelSpace, cfg: PromptMixConfig, confusion: Confusion | None = None) -> list[MixCall]:
    """Every generation call, in a fixed order (class order, then call index).

    With ``confusion`` (see :func:`load_confusion`), a class's partners are taken most-confused first;
    each call records why its partner was chosen (``pair_by``)."""
    tpl = load_template(cfg.template)
    tpl.check({"classes", "a", "b", "pct_a", "pct_b", "m", "task"}, where="promptmix")
    groups = make_groups(space, cfg.group_size, cfg.grouping, cfg.seed, confusion)
    group_of = {lab: g for g in groups for lab in g}
    wanted = cfg.classes or space.labels
    m = cfg.examples_per_call
    calls: list[MixCall] = []
    for ci, a in enumerate(space.labels):
        if a not in wanted:
            continue
        group = group_of[a]
        others = [x for x in group if x != a]
        offset = random.Random(f"promptmix-partner:{cfg.seed}:{a}").randrange(len(others))
        if confusion and any(_conf(confusion, a, x) for x in others):
            others = sorted(others, key=lambda x: -_conf(confusion, a, x))  # most confused first (stable)
            offset = 0
        n_calls = math.ceil(cfg.per_label / m)
        for c in range(n_calls):
            b = others[(offset + c) % len(others)]
            alpha = draw_alpha(cfg.seed, a, c, cfg.alpha_beta)
            count = min(m, cfg.per_label - c * m)
            shown = [a, b] + [x for x in group if x not in (a, b)]
            classes = [
                {"name": lab, "description": space.description(lab), "examples": space.examples.get(lab, [])[: cfg.k_shot]}
                for lab in shown
            ]
            pct_a = int(round(alpha * 100))
            prompt = tpl.render(classes=classes, a=a, b=b, pct_a=pct_a, pct_b=100 - pct_a, m=count, task=space.task)
            pair_by = "confusion" if _conf(confusion, a, b) else ("random" if cfg.grouping == "random" else "description")
            calls.append(MixCall(key=f"promptmix:{a}:{c}", a=a, b=b, alpha=alpha, m=count, group=tuple(group),
                                 class_index=ci, call_index=c, prompt=prompt, pair_by=pair_by))
    return calls


# --------------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------------

_NUMBERED_RE = re.compile(
    r"^\s*(?:[-*\u2022]\s*)?(?:\**(?:example|utterance|text|sentence|query|message)\s*#?\d*\**\s*[:.)\-]|\(?\d{1,3}\s*[.):\]]|\d{1,3}\s+-)\s*",
    re.IGNORECASE,
)
_BULLET_RE = re.compile(r"^\s*[-*\u2022]\s+")
_PCT_GROUP_RE = re.compile(r"\s*[(\[{]([^()\[\]{}]*\d\s*%[^()\[\]{}]*)[)\]}]")
_PCT_TAIL_RE = re.compile(r"\s*(?:[-\u2013\u2014:|/]\s*|\s+)(\(?\d{1,3}(?:\.\d+)?\s*%.*)$")
_PCT_HEAD_RE = re.compile(r"^\s*(\d{1,3}\s*%[^:]*):\s*")
_PERCENT_RE = re.compile(r"\d{1,3}(?:\.\d+)?\s*%")
_QUOTE_PAIRS = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "`": "`"}


def _strip_quotes(s: str) -> str:
    s = s.strip().strip("*").strip()
    while len(s) >= 2 and s[0] in _QUOTE_PAIRS and s[-1] == _QUOTE_PAIRS[s[0]]:
        s = s[1:-1].strip()
    return s


def _is_annotation(part: str, names: tuple[str, ...]) -> bool:
    """A percentage aside is a mix annotation if it gives two shares or names a class ("80% A, 20% B")."""
    if len(_PERCENT_RE.findall(part)) >= 2:
        return True
    low = re.sub(r"[\s_\-]+", " ", part.lower())
    return any(n and n in low for n in names)


def clean_item(line: str, labels: tuple[str, ...] = ("a", "b")) -> str:
    """One generated line without numbering, bullets, quotes or mix annotations ("(80% A, 20% B)").

    A percentage that is not an annotation (one share, no class name: "is a 3% fee normal?") stays.
    """
    names = tuple(re.sub(r"[\s_\-]+", " ", lab.lower()) for lab in labels)
    s = _NUMBERED_RE.sub("", line, count=1)
    s = _BULLET_RE.sub("", s, count=1)
    m = _PCT_HEAD_RE.match(s)
    if m and _is_annotation(m.group(1), names):
        s = s[m.end():]
    s = _PCT_GROUP_RE.sub(lambda g: "" if _is_annotation(g.group(1), names) else g.group(0), s)
    s = _strip_quotes(s)
    m = _PCT_TAIL_RE.search(s)
    if m and _is_annotation(m.group(1), names):
        s = s[: m.start()]
    return _strip_quotes(s)


def parse_items(text: str | None, m: int | None = None, labels: tuple[str, ...] = ("a", "b")) -> list[str]:
    """The examples in a generation answer, at most ``m``.

    When some lines are numbered or bulleted, only those are items (a preamble like "Here are 4
    examples:" and closing remarks are dropped); otherwise every non-empty line that is not a
    header (ending in ":") is.
    """
    if not text:
        return []
    lines = [ln for ln in text.splitlines() if ln.strip()]
    marked = [ln for ln in lines if _NUMBERED_RE.match(ln) or _BULLET_RE.match(ln)]
    chosen = marked if marked else [ln for ln in lines if not ln.rstrip().endswith(":")]
    items = []
    for ln in chosen:
        s = clean_item(ln, labels)
        if s and re.search(r"[A-Za-z]", s):
            items.append(s)
    return items[:m] if m is not None else items


# --------------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------------


@dataclass
class PromptMixStats:
    calls: int = 0
    failed_calls: int = 0
    parsed: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    invalid_structured: int = 0  # answers still invalid JSON for the schema after the re-asks
    confusion_pairs: int = 0  # class pairs the teacher confused in the relabel data (0: paired by description)


def _gen_params(cfg: PromptMixConfig, call: MixCall) -> dict[str, Any]:
    p: dict[str, Any] = {}
    if cfg.temperature is not None:
        p["temperature"] = cfg.temperature
        if cfg.temperature > 0:
            p["seed"] = cfg.seed * 1000 + call.call_index
    if cfg.max_tokens is not None:
        p["max_tokens"] = cfg.max_tokens
    return p


async def promptmix(
    space: LabelSpace, teacher: Teacher, cfg: PromptMixConfig, stats: PromptMixStats | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Yield PromptMix rows (and reject rows carrying ``reject_reason``) for :func:`write_rows`."""
    problems = cfg.problems(space)
    if problems:
        raise ValueError("; ".join(problems))
    stats = stats if stats is not None else PromptMixStats()
    confusion = load_confusion(cfg.confusion, space) if cfg.confusion is not None else None
    stats.confusion_pairs = len(confusion or {})
    calls = plan_calls(space, cfg, confusion)
    gen_prov = load_template(cfg.template).provenance()
    model = teacher.model

    # phase 1: all generation calls
    answers: dict[str, Any] = {}
    jobs = (Job(call, [TeacherRequest(key=call.key, messages=[{"role": "user", "content": call.prompt}],
                                      params=_gen_params(cfg, call), sample_index=call.call_index, schema=ItemList)])
            for call in calls)
    async for job in stream_jobs(teacher, jobs):
        answers[job.item.key] = job.results[0]
    stats.calls = len(answers)

    # dedup in plan order, so the same items survive whatever order the answers came in
    seeds = space.seed_texts()
    seen: dict[str, str] = {}
    pending: list[dict[str, Any]] = []
    for call in calls:
        res = answers.get(call.key)
        if res is None:  # not sent (budget reached): a rerun does it
            continue
        base_id = f"promptmix-{call.a}-{call.call_index:03d}-{call.prompt_sha}"
        common = {
            "method": "promptmix", "intended_label": call.a, "pair": [call.a, call.b], "pair_by": call.pair_by,
            "alpha": call.alpha,
            "group": list(call.group), "template": gen_prov, "teacher": res.model or model,
        }
        if not res.ok:
            stats.failed_calls += 1
            yield {"id": f"{base_id}-call", **common, "reject_reason": f"teacher error: {res.error}"}
            continue
        items, invalid = answer_of(
            res, lambda p, call=call: [c for c in (clean_item(x, (call.a, call.b)) for x in p.items) if c][:call.m],
            lambda text, call=call: parse_items(text, call.m, (call.a, call.b)))
        if invalid is not None:
            stats.invalid_structured += 1
            yield {"id": f"{base_id}-call", **common, "completion": res.text, "reject_reason": invalid}
            continue
        stats.parsed += len(items)
        share = None if res.cost_usd is None else res.cost_usd / max(1, len(items))
        for i, text in enumerate(items):
            rid = f"{base_id}-{i:02d}"
            n = norm_text(text)
            row = {"id": rid, "text": text, **common, "gen_cost_usd": share, "gen_cached": res.cached,
                   **reasoning_field(res)}
            why = None
            if n in seeds:
                why = "seed copy: the text repeats a seed example"
            elif n in seen:
                why = f"duplicate: same text as {seen[n]}"
            if why:
                stats.dropped[why.split(":")[0]] = stats.dropped.get(why.split(":")[0], 0) + 1
                yield {**row, "reject_reason": why}
                continue
            seen[n] = rid
            pending.append(row)
    stats.kept = len(pending)

    # phase 2: relabel every kept item
    async for row, rel in classify(
        pending, teacher, space, text_field="text", k_shot=cfg.relabel_k_shot, candidates=cfg.relabel_candidates,
        template=cfg.relabel_template, temperature=cfg.relabel_temperature, intended_field="intended_label",
        always_offer=lambda r: r["pair"], max_tokens=cfg.relabel_max_tokens,
    ):
        out = {
            **row,
            "relabeled_label": rel.label,
            "relabel_raw": rel.raw,
            "relabel_reason": rel.reason,
            "relabel_candidates": rel.candidates,
            "relabel_template": rel.template,
        }
        if rel.reasoning is not None:
            out["relabel_reasoning"] = rel.reasoning
        gen_cost = row.get("gen_cost_usd")
        out["relabel_cost_usd"] = rel.cost_usd
        out["cost_usd"] = None if gen_cost is None or rel.cost_usd is None else round(gen_cost + rel.cost_usd, 10)
        out["cached"] = bool(row.get("gen_cached")) and rel.cached
        a = row["intended_label"]
        if rel.teacher_error:
            out["reject_reason"] = rel.reason  # rejected, not written: a rerun asks again
        elif cfg.policy == "keep":
            out["label"] = a
        elif cfg.policy == "overwrite":
            if rel.label is None:
                out["reject_reason"] = f"relabel failed: {rel.reason}"
            else:
                out["label"] = rel.label
        else:  # drop-disagreeing
            if rel.label == a:
                out["label"] = a
            else:
                out["reject_reason"] = f"relabel disagrees: intended {a}, teacher says {rel.label or rel.reason}"
        yield out


def canonical_key(row: dict[str, Any]) -> str:
    """Sort key of an output row: its id (``promptmix-<class>-<call>-<hash>-<item>``, zero-padded), so a
    finished file is in one order whatever the order the answers arrived in."""
    return str(row.get("id", ""))
