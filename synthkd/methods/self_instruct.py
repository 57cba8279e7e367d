"""Self-Instruct (Wang et al. 2022): grow an instruction dataset from a few seed tasks.

The loop, as in the paper's ``bootstrap_instructions.py`` / ``generate_instances.py``:

1. Each round sends ``requests_per_round`` prompts; each shows ``prompt_instructions`` instructions
   (``prompt_machine`` of them generated earlier, once there are enough, the rest seed tasks),
   numbered, and asks the teacher to continue the list.
2. New instructions are parsed from the numbered list and filtered: 3 words or fewer, more than 150,
   a keyword a text model cannot act on (image, graph, picture, file, map, draw, plot, go to, video,
   audio, music, flowchart, diagram — the paper's list plus Alpaca's additions), starting with
   "Write a program", with punctuation or a non-ASCII character; and ROUGE-L F > 0.7 with any seed
   (``seed_copy``) or generated instruction (``near_duplicate``).
3. Each kept instruction is classified (classification task with finite labels, or not) with the
   paper's few-shot question, then instances are asked for: input-first for ordinary tasks,
   *output-first* (class label, then an input for it) for classification tasks, so that generated
   inputs are not biased towards one label.

Determinism (resume = rerun, nothing paid twice): every random choice comes from a Random seeded by
(seed, round, request); answers of a round are processed in request order before the pool is
updated, and round t+1 is built only from the pool after round t — so a rerun sends exactly the same
prompts and the cache answers all of them.  A generation request that fails for good stops the
growth at that point (later answers of the round wait for the next run); instance requests of kept
instructions still run.  Rows stream out as each instruction's instances arrive, overlapping with
later rounds (one teacher stream carries everything, via :class:`JobFeed`).
"""

from __future__ import annotations

import math
import re
import string
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, ClassVar, Optional

from pydantic import BaseModel

from synthkd.jsonl_io import InputError, check_id, iter_jsonl
from synthkd.methods.label_tasks import sampling_params
from synthkd.near_dup_pool import NearDupPool, duplicate_reason
from synthkd.options import opt, register_feature
from synthkd.reasoning import reasoning_field
from synthkd.row_source import as_path, source_kind
from synthkd.teacher_lists import clean_item, parse_list_items
from synthkd.teachers.base import Teacher, TeacherRequest, TeacherResult
from synthkd.teachers.jobs import Job, JobFeed, MethodStats, request_provenance, stable_rng, stream_jobs
from synthkd.teachers.structured import ItemList, answer_of
from synthkd.templates import PromptTemplate, load_template

#: Words that make an instruction unfit for a text-only model (Self-Instruct + Alpaca).
BAD_KEYWORDS = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
                "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
_BAD_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in BAD_KEYWORDS) + r")\b", re.I)


# ==================================================================================================
# Seed tasks
# ==================================================================================================


@dataclass(frozen=True)
class SeedTask:
    id: str
    instruction: str
    instances: tuple[tuple[str, str], ...]  # (input, output)
    is_classification: bool
    name: str = ""


def load_seed_tasks(path: str | Path) -> list[SeedTask]:
    """Read seed tasks in the Self-Instruct format; InputError names file, line and field of each problem.

    One JSON object a line: ``{"id", "name", "instruction", "instances": [{"input", "output"}],
    "is_classification"}`` (``name`` optional; ``input`` may be empty, ``output`` may not).
    """
    path = as_path(path)  # a SourcePath keeps its column map
    if not path.exists() and source_kind(path) not in ("hf", "dir"):
        raise InputError([f"{path}: seed tasks file not found"])
    problems: list[str] = []
    tasks: list[SeedTask] = []
    seen: dict[str, int] = {}
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        if not isinstance(row, dict):
            problems.append(f"{where}: expected a JSON object")
            continue
        rid = row.get("id")
        why = "field 'id': missing" if "id" not in row else check_id(rid)  # the one id rule (F16)
        if why:
            problems.append(f"{where}: {why}")
            continue
        rid = str(rid)
        if rid in seen:
            problems.append(f"{where}: field 'id': duplicate id {rid!r} (first on line {seen[rid]})")
            continue
        seen[rid] = lineno
        inst = row.get("instruction")
        if not isinstance(inst, str) or not inst.strip():
            problems.append(f"{where}: field 'instruction': missing or empty")
            continue
        clf = row.get("is_classification")
        if not isinstance(clf, bool):
            problems.append(f"{where}: field 'is_classification': must be true or false")
            continue
        raw = row.get("instances")
        if not isinstance(raw, list) or not raw:
            problems.append(f"{where}: field 'instances': must be a non-empty list of {{input, output}}")
            continue
        pairs = []
        for i, x in enumerate(raw):
            if not isinstance(x, dict) or not isinstance(x.get("input", ""), str):
                problems.append(f"{where}: field 'instances[{i}].input': must be a string")
            elif not isinstance(x.get("output"), str) or not x["output"].strip():
                problems.append(f"{where}: field 'instances[{i}].output': missing or empty")
            else:
                pairs.append((x.get("input", "").strip(), x["output"].strip()))
        if len(pairs) == len(raw):
            tasks.append(SeedTask(rid, inst.strip(), tuple(pairs), clf, str(row.get("name") or "")))
        if len(problems) >= 20:
            break
    if not problems and not tasks:
        problems.append(f"{path}: no seed tasks (the file is empty)")
    if problems:
        raise InputError(problems)
    return tasks


# ==================================================================================================
# Parsing and filtering
# ==================================================================================================


def instruction_filter(inst: str, min_words: int = 4, max_words: int = 150) -> str | None:
    """Why the paper's post-processing drops this instruction, or None to keep it."""
    n = len(inst.split())
    if n < min_words:
        return f"too_short: {n} words"
    if n > max_words:
        return f"too_long: {n} words"
    m = _BAD_RE.search(inst)
    if m:
        return f"bad_keyword: {m.group(1).lower()!r}"
    if inst.startswith("Write a program"):
        return "write_a_program: ambiguous whether to write code or give the result"
    if inst[0] in string.punctuation:
        return "starts_with_punctuation"
    if not inst[0].isascii():
        return "non_ascii_start"
    return None


def parse_instructions(text: str | None, first_number: int) -> list[str]:
    """New instructions from a continuation of a numbered list that ended at ``first_number - 1``.

    A completion model continues right after ``"N."`` (so the text before the first number is an
    item); a chat model usually restarts the numbering.  Both work.
    """
    return clean_instructions(parse_list_items(text, leading_item=True))


def clean_instructions(items: list[str]) -> list[str]:
    """Instructions without an "Instruction:" label or the "Input:"/"Output:" parts, capitalised."""
    out = []
    for it in items:
        it = re.sub(r"^(?:instruction|task)\s*:\s*", "", it, flags=re.I).strip()
        # keep only the instruction line when the model also wrote "Input:"/"Output:" parts
        it = re.split(r"\s(?:Input|Output)\s*\d*\s*:", it, maxsplit=1)[0].strip()
        if it:
            out.append(it[0].upper() + it[1:])
    return out


_OUTPUT_RE = re.compile(r"Output\s*\d*\s*:", re.I)
_INPUT_RE = re.compile(r"Input\s*\d*\s*:", re.I)
_EXAMPLE_RE = re.compile(r"^\s*\**Example\s*\d*\s*[:.]?\**\s*$", re.I | re.M)
_CLASS_RE = re.compile(r"^\s*\**Class\s*label\s*\**\s*:\s*", re.I | re.M)


def _input_output(chunk: str) -> tuple[str, str]:
    """The paper's ``parse_input_output``: text before "Output:" is the input (minus "Input:")."""
    parts = _OUTPUT_RE.split(chunk, maxsplit=1)
    if len(parts) == 2:
        inp, out = parts
    else:
        inp, out = "", chunk
    out = _INPUT_RE.split(out, maxsplit=1)[0]
    inp = re.sub(r"^\s*Input\s*\d*\s*:", "", inp.strip(), flags=re.I).strip()
    return inp, out.strip()


def parse_instances(text: str | None, output_first: bool) -> list[tuple[str, str]]:
    """(input, output) pairs from an instance answer (input-first or output-first format)."""
    if not text or not text.strip():
        return []
    text = text.replace("\r\n", "\n")
    text = re.split(r"^\s*Task\s*:", text, flags=re.M)[0]  # a run-on next demonstration is not ours
    pairs = []
    if output_first:
        chunks = _CLASS_RE.split(text)[1:]
        for ch in chunks:
            label, _, rest = ch.partition("\n")
            inp = re.sub(r"^\s*Input\s*\d*\s*:", "", rest.strip(), flags=re.I).strip()
            inp = _CLASS_RE.split(inp)[0].strip()
            pairs.append((inp, label.strip()))
        return pairs
    chunks = _EXAMPLE_RE.split(text)
    chunks = [c for c in chunks if c.strip()] if len(chunks) > 1 else [text]
    for ch in chunks:
        pairs.append(_input_output(ch))
    return pairs


def clean_instances(pairs: list[tuple[str, str]], drops: Any) -> list[dict[str, str]]:
    """Drop instances with an empty output or a repeated input (the first one wins)."""
    out, seen = [], set()
    for inp, outp in pairs:
        if not outp:
            drops["instance_empty_output"] += 1
            continue
        if inp in seen:
            drops["instance_repeated_input"] += 1
            continue
        seen.add(inp)
        out.append({"input": inp, "output": outp})
    return out


_YES_NO = re.compile(r"\b(yes|no)\b", re.I)


class Instance(BaseModel):
    input: str
    output: str


class Instances(BaseModel):
    """The instances of one instruction (for a classification task, ``output`` is the class label)."""

    schema_name: ClassVar[str] = "instances"
    instances: list[Instance]


class IsClassification(BaseModel):
    schema_name: ClassVar[str] = "is_classification"
    is_classification: bool


def _yes_no(text: str | None) -> bool | None:
    m = _YES_NO.search(text or "")
    return None if m is None else m.group(1).lower() == "yes"


def instances_of(parsed: Instances) -> list[tuple[str, str]]:
    return [(i.input.strip(), i.output.strip()) for i in parsed.instances]


# ==================================================================================================
# The plan
# ==================================================================================================


@dataclass(kw_only=True)
class SelfInstructConfig:
    """The options of Self-Instruct, declared once: ``synthkd generate self-instruct`` and the Python API
    (:func:`plan_self_instruct` takes it) are built from them.  :attr:`params` / :attr:`instance_params`:
    the sampling parameters of the generation requests / of the classification and instance requests."""

    seeds: Optional[Path] = opt(None, help="Seed tasks jsonl in the Self-Instruct format.", stage=False)
    output: Optional[Path] = opt(None, help="jsonl output; rerun to resume.", flags=("-o",), stage=False)
    num_instructions: int = opt(help="New instructions to generate.", flags=("-n",), ge=1)
    requests_per_round: int = opt(8, help="Generation requests per round (in parallel).", ge=1)
    prompt_instructions: int = opt(8, help="Instructions shown per generation prompt.", ge=1)
    prompt_machine: int = opt(2, help="How many of those are generated ones (once available).", ge=0)
    max_new_per_request: int = opt(8, help="New instructions taken from one answer.", ge=1)
    max_rounds: Optional[int] = opt(None, help="Cap on generation rounds (default: enough rounds for 4x the needed "
                                    "answers).", ge=1)
    classify: bool = opt(True, help="Ask whether each task is classification (output-first instances).")
    demos: int = opt(3, help="Seed tasks shown as demonstrations in an instance prompt.", ge=0)
    clf_demos: int = opt(12, help="Seed tasks shown in the \"is it classification?\" prompt.", ge=0)
    min_words: int = opt(4, help="Drop instructions with fewer words.", ge=0)
    max_words: int = opt(150, help="Drop instructions with more words.", ge=1)
    temperature: Optional[float] = opt(0.7, help="Temperature of instruction generation.", ge=0)
    top_p: Optional[float] = opt(0.5, help="top_p of instruction generation (paper: 0.5).", gt=0, le=1)
    instance_temperature: Optional[float] = opt(0.0, help="Temperature of classification and instance requests.",
                                                ge=0)
    max_tokens: Optional[int] = opt(None, help="max_tokens per request.", ge=1)
    seed: int = opt(0, help="Seed of every random choice (attribute combos, few-shot pools).")
    threshold: float = opt(0.7, help="Drop a candidate whose ROUGE-L F with a kept text or seed is above this.",
                           gt=0, lt=1)
    instructions_template: str = opt("self_instruct/new_instructions", help="Template of the generation prompt.")
    clf_template: str = opt("self_instruct/is_classification", help="Template of the classification prompt.")
    input_first_template: str = opt("self_instruct/instances_input_first",
                                    help="Template of an instance prompt (input first).")
    output_first_template: str = opt("self_instruct/instances_output_first",
                                     help="Template of an instance prompt (output first: classification tasks).")

    @property
    def params(self) -> dict[str, Any]:
        return sampling_params(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)

    @property
    def instance_params(self) -> dict[str, Any]:
        return sampling_params(temperature=self.instance_temperature, max_tokens=self.max_tokens)


register_feature("generate.self-instruct", SelfInstructConfig, command=("generate", "self-instruct"), stage=None)


@dataclass
class SelfInstructPlan:
    seeds: list[SeedTask]
    config: SelfInstructConfig
    t_new: PromptTemplate
    t_clf: PromptTemplate
    t_in: PromptTemplate
    t_out: PromptTemplate
    max_rounds: int

    def generation_request(self, rnd: int, j: int, machine: list[str]) -> TeacherRequest:
        c = self.config
        rng = stable_rng(c.seed, "generate", rnd, j)
        shown: list[str] = []
        if len(machine) >= c.prompt_machine:
            shown = rng.sample(machine, c.prompt_machine)
        shown += rng.sample([s.instruction for s in self.seeds], c.prompt_instructions - len(shown))
        rng.shuffle(shown)
        shown = [re.sub(r"\s+", " ", s).strip().rstrip(":") for s in shown]
        content = self.t_new.render(instructions=shown, num_new=c.max_new_per_request)
        number = rnd * c.requests_per_round + j
        return TeacherRequest(key=f"gen/{rnd}/{j}", messages=[{"role": "user", "content": content}],
                              params={**c.params, "seed": number}, sample_index=0, schema=ItemList)

    def clf_request(self, k: int, instruction: str) -> TeacherRequest:
        c = self.config
        rng = stable_rng(c.seed, "clf")
        yes = [s for s in self.seeds if s.is_classification]
        no = [s for s in self.seeds if not s.is_classification]
        half = c.clf_demos // 2
        demos = rng.sample(yes, min(half, len(yes))) + rng.sample(no, min(c.clf_demos - half, len(no)))
        rng.shuffle(demos)
        content = self.t_clf.render(demos=[{"instruction": d.instruction, "is_classification": d.is_classification}
                                           for d in demos], instruction=instruction)
        return TeacherRequest(key=f"clf/{k}", messages=[{"role": "user", "content": content}],
                              params=dict(c.instance_params), schema=IsClassification)

    def instance_request(self, k: int, instruction: str, is_clf: bool) -> TeacherRequest:
        c = self.config
        rng = stable_rng(c.seed, "instances", k)
        pool = [s for s in self.seeds if s.is_classification == is_clf] or self.seeds
        demos = rng.sample(pool, min(c.demos, len(pool)))
        tmpl = self.t_out if is_clf else self.t_in
        content = tmpl.render(
            demos=[{"instruction": d.instruction, "instances": [{"input": i, "output": o} for i, o in d.instances]}
                   for d in demos],
            instruction=instruction,
        )
        return TeacherRequest(key=f"inst/{k}", messages=[{"role": "user", "content": content}],
                              params=dict(c.instance_params), schema=Instances)


def plan_self_instruct(seeds: list[SeedTask], config: SelfInstructConfig) -> SelfInstructPlan:
    """Check settings and templates against the seeds; raise InputError/TemplateError before any call."""
    c = config
    problems = []
    if c.num_instructions < 1:
        problems.append("--num-instructions must be at least 1")
    if c.requests_per_round < 1:
        problems.append("--requests-per-round must be at least 1")
    if not 0 <= c.prompt_machine < c.prompt_instructions:
        problems.append("--prompt-machine must be >= 0 and below --prompt-instructions")
    if c.prompt_instructions - c.prompt_machine > len(seeds):
        problems.append(f"--prompt-instructions {c.prompt_instructions} needs at least "
                        f"{c.prompt_instructions - c.prompt_machine} seed tasks, the file has {len(seeds)}")
    if c.max_new_per_request < 1:
        problems.append("--max-new-per-request must be at least 1")
    if c.max_rounds is not None and c.max_rounds < 1:
        problems.append("--max-rounds must be at least 1")
    if not 0 < c.threshold < 1:
        problems.append("--threshold must be in (0, 1)")
    if c.classify and not ({s.is_classification for s in seeds} >= {True, False}):
        problems.append("classification step needs seed tasks of both kinds (is_classification true and false); "
                        "or use --no-classify")
    if problems:
        raise InputError(problems)
    t_new = load_template(c.instructions_template)
    t_new.check({"instructions", "num_new"})
    t_clf = load_template(c.clf_template)
    t_clf.check({"demos", "instruction"})
    t_in = load_template(c.input_first_template)
    t_in.check({"demos", "instruction"})
    t_out = load_template(c.output_first_template)
    t_out.check({"demos", "instruction"})
    per_round = c.requests_per_round * c.max_new_per_request
    max_rounds = c.max_rounds or max(3, math.ceil(4 * c.num_instructions / per_round))
    plan = SelfInstructPlan(seeds, c, t_new, t_clf, t_in, t_out, max_rounds)
    plan.generation_request(0, 0, [])  # render once now: a template error costs nothing
    plan.clf_request(0, seeds[0].instruction)
    plan.instance_request(0, seeds[0].instruction, False)
    plan.instance_request(0, seeds[0].instruction, True)
    return plan


# ==================================================================================================
# Generation
# ==================================================================================================


@dataclass
class _Kept:
    k: int
    instruction: str
    round: int
    request_id: str
    is_clf: bool | None = None
    results: list[tuple[TeacherRequest, TeacherResult]] = field(default_factory=list)


async def generate_self_instruct(
    teacher: Teacher, plan: SelfInstructPlan, *, stats: MethodStats | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Yield instruction rows ``{id: "si-<k>", instruction, instances, is_classification, ...}`` as their
    instances arrive, and every dropped candidate as a row with ``reject_reason``."""
    st = stats if stats is not None else MethodStats()
    c = plan.config
    N = c.num_instructions
    seed_pool = NearDupPool(c.threshold)
    seed_pool.extend((s.instruction, s.id) for s in plan.seeds)
    pool = NearDupPool(c.threshold)
    machine: list[str] = []
    kept: dict[int, _Kept] = {}
    feed: JobFeed[tuple[str, Any]] = JobFeed()
    held: dict[int, Job[tuple[str, Any]]] = {}
    state: dict[str, Any] = {"round": 0, "next_j": 0, "stalled": None}
    prov_new = plan.t_new.provenance()

    def start_round(rnd: int) -> None:
        state["round"], state["next_j"] = rnd, 0
        for j in range(c.requests_per_round):
            feed.put(Job(("gen", (rnd, j)), [plan.generation_request(rnd, j, machine)]))

    def process_generation(rnd: int, j: int, job: Job[tuple[str, Any]]) -> list[dict[str, Any]]:
        res = job.results[0]
        assert res is not None
        rid = f"gen/{rnd}/{j}"
        base = {"round": rnd, "request_id": rid, **prov_new, "teacher": teacher.model, **reasoning_field(res)}
        if not res.ok:
            state["stalled"] = f"generation request {rid} failed: {res.error}"
            st.drops["teacher_error"] += 1
            return [{"id": rid, **base, "reject_reason": f"teacher_error: {res.error}"}]
        rows = []
        items, invalid = answer_of(res, lambda p: clean_instructions([clean_item(x) for x in p.items]),
                                   lambda text: parse_instructions(text, c.prompt_instructions + 1))
        if invalid is not None:
            st.drops["invalid_structured_response"] += 1
            rows.append({"id": rid, **base, "completion": res.text, "reject_reason": invalid})
            items = []
        elif not items:
            st.drops["unparseable_response"] += 1
            rows.append({"id": rid, **base, "completion": res.text,
                         "reject_reason": "unparseable_response: no numbered instructions found"})
        cut = res.finish_reason == "length"
        for i, inst in enumerate(items):
            cand = {"id": f"{rid}/{i}", "instruction": inst, **base, "item_index": i}
            reason = None
            if len(machine) >= N:
                reason = "surplus: enough instructions already"
            elif i >= c.max_new_per_request:
                reason = f"over_request_limit: item beyond --max-new-per-request {c.max_new_per_request}"
            elif cut and i == len(items) - 1:
                reason = "truncated: last item of an answer cut at max_tokens"
            else:
                reason = instruction_filter(inst, c.min_words, c.max_words)
            if reason is None:
                reason = duplicate_reason(inst, seed_pool, pool)
            if reason is not None:
                st.drops[reason.split(":")[0]] += 1
                cand["reject_reason"] = reason
                rows.append(cand)
                continue
            k = len(machine)
            row_id = f"si-{k}"
            machine.append(inst)
            pool.add(inst, row_id)
            kept[k] = _Kept(k, inst, rnd, f"{rid}/{i}")
            if c.classify:
                feed.put(Job(("clf", k), [plan.clf_request(k, inst)]))
            else:
                kept[k].is_clf = False
                feed.put(Job(("inst", k), [plan.instance_request(k, inst, False)]))
        return rows

    def finish_row(kp: _Kept) -> dict[str, Any]:
        req, res = kp.results[-1]
        ok_results = [r for _, r in kp.results]
        tmpl = plan.t_out if kp.is_clf else plan.t_in
        usage = {"prompt_tokens": sum(r.usage.prompt_tokens for r in ok_results),
                 "completion_tokens": sum(r.usage.completion_tokens for r in ok_results)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        costs = [r.cost_usd for r in ok_results]
        known_costs = [x for x in costs if x is not None]
        row: dict[str, Any] = {
            "id": f"si-{kp.k}", "instruction": kp.instruction, "instances": [], "is_classification": kp.is_clf,
            "round": kp.round, "generation_request_id": kp.request_id, **tmpl.provenance(),
            "templates": {"instructions": prov_new, "is_classification": plan.t_clf.provenance() if c.classify else None,
                          "instances": tmpl.provenance()},
            "teacher": teacher.model,
            **request_provenance(teacher, req, res),
            "request_usage": usage,
            "request_cost_usd": None if len(known_costs) < len(costs) else round(sum(known_costs), 10),
            "cached": all(r.cached for r in ok_results),
        }
        if not res.ok:
            row["reject_reason"] = f"teacher_error: {res.error}"
            st.drops["teacher_error"] += 1
            st.short[row["id"]] = f"instances request failed: {res.error} (rerun to retry)"
            return row
        pairs, invalid = answer_of(res, instances_of, lambda text: parse_instances(text, bool(kp.is_clf)))
        row["instances"] = clean_instances(pairs or [], st.drops)
        row.update(reasoning_field(res))  # the trace of the answer the instances were read from
        if invalid is not None:
            row["completion"] = res.text
            row["reject_reason"] = invalid
            st.drops["invalid_structured_response"] += 1
            return row
        if not row["instances"]:
            row["completion"] = res.text
            row["reject_reason"] = "no_instances: no input/output pair could be parsed"
            st.drops["no_instances"] += 1
            return row
        st.kept += 1
        return row

    start_round(0)
    feed.close_if_idle()
    # closed at once when the caller stops early (a --limit dry run): no request is left in flight
    async with aclosing(stream_jobs(teacher, feed)) as answered:
        async for job in answered:
            feed.finished()
            res = job.results[0]
            assert res is not None
            st.record(res)
            kind, ref = job.item
            if kind == "gen":
                rnd, j = ref
                held[j] = job
                while not state["stalled"] and state["next_j"] in held:
                    jj = state["next_j"]
                    for row in process_generation(rnd, jj, held.pop(jj)):
                        yield row
                    state["next_j"] += 1
                if state["next_j"] == c.requests_per_round and not state["stalled"]:
                    if len(machine) < N and rnd + 1 < plan.max_rounds:
                        start_round(rnd + 1)
                    elif len(machine) < N:
                        st.short["instructions"] = (f"{len(machine)}/{N} after {plan.max_rounds} rounds "
                                                    "(raise --max-rounds, or check the drops)")
            elif kind == "clf":
                kp = kept[ref]
                kp.results.append((job.requests[0], res))
                if not res.ok:
                    kept.pop(ref)
                    kp.is_clf = None
                    yield finish_row(kp)
                else:
                    answer, invalid = answer_of(res, lambda p: p.is_classification, _yes_no)
                    if answer is None:
                        st.notes["is_classification unclear (treated as no)"] += 1
                    kp.is_clf = bool(answer)
                    feed.put(Job(("inst", ref), [plan.instance_request(ref, kp.instruction, kp.is_clf)]))
            else:
                kp = kept.pop(ref)
                kp.results.append((job.requests[0], res))
                yield finish_row(kp)
            feed.close_if_idle()
    st.budget_stopped = teacher.budget_exhausted
    st.per_label = {"instructions": len(machine)}
    if state["stalled"]:
        st.short["instructions"] = f"{len(machine)}/{N}: {state['stalled']} (rerun to retry)"
    elif len(machine) < N and "instructions" not in st.short:
        st.short["instructions"] = f"{len(machine)}/{N}: " + (
            "budget reached" if st.budget_stopped else "generation answers missing")
    for kp in kept.values():
        st.short.setdefault(f"si-{kp.k}", "instances not generated (budget or interruption)")


__all__ = [
    "BAD_KEYWORDS", "SeedTask", "SelfInstructConfig", "SelfInstructPlan", "clean_instances",
    "generate_self_instruct", "instruction_filter", "load_seed_tasks", "parse_instances", "parse_instructions",
    "plan_self_instruct",
]
