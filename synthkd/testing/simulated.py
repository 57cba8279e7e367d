"""A simulated teacher with known ground truth, for the offline demo and for end-to-end tests.

The task: short multi-step arithmetic word problems ("Mia has 4 boxes with 3 pens in each. She gives
away 5 pens. How many pens does she have now?").  The simulated teacher writes a real step-by-step
rationale ("Mia has 4 * 3 = 12 pens. After giving away 5 she has 12 - 5 = 7 pens. The answer is 7."),
so everything downstream — answer extraction, consistency filtering, rationale and multitask training —
sees the same shapes it sees from a real LLM.  Two knobs make it realistically imperfect:

* ``error_rate``: the share of answers with an arithmetic slip in one step (the rest of the rationale
  follows from the slip, as a real model's would), so the final answer is wrong but fluent;
* ``noise_rate``: the share of answers with formatting noise — "Answer: 7", "**7**", "= 7.", or a
  run-on hallucinated next exemplar ("Q: ...") after the answer.

It answers any question of its three templates, not only the ones it was built with
(:func:`parse_problem` / :func:`find_problem`), and it writes new exercises of the same template on a
"Write <m> new exercises" prompt (``prompts/tailored/similar.j2``), so it can play the teacher of the
tailored multi-round loop offline: correct a student's mistakes, invent similar exercises, then solve them.

It is served by :class:`synthkd.testing.server.TestServer` as its responder, so the whole demo goes
through the real HTTP client (retries, cache, rate limits); ``simulated:arithmetic`` as a teacher name
does that in-process (:mod:`synthkd.teachers.simulated_teacher`).  Which answer a request gets is a pure
function of the question, the sampling seed and the knobs: reruns are reproducible.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from synthkd.testing.sampling import sample_seed

NAMES = ["Mia", "Noah", "Ava", "Liam", "Zoe", "Omar", "Lena", "Ravi", "Sara", "Tom", "Ines", "Kai"]
THINGS = ["pens", "apples", "stickers", "marbles", "cookies", "books", "shells", "cards", "coins", "plums"]
HOLDERS = ["boxes", "bags", "jars", "baskets", "packs", "trays"]


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: int
    steps: tuple[tuple[str, int, int, int], ...]  # (op, a, b, result) in order
    template: str

    def rationale(self, slip_step: int | None = None, slip: int = 0) -> tuple[str, int]:
        """The step-by-step rationale, optionally with an arithmetic slip carried forward."""
        return _render_rationale(self, slip_step, slip)


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


TEMPLATES = ("boxes-give", "buy-holders", "collect-lose")


def random_problem(rng: random.Random, template: str | None = None) -> Problem:
    """One random problem (of ``template``, or a random one of :data:`TEMPLATES`), drawn from ``rng``.

    Why a function of its own: :func:`make_problems` and the teacher's similar-exercise replies must
    build problems the same way, so that every generated exercise is one the teacher can later solve
    (see :func:`parse_problem`).  The draw order (name, thing, holder, then the template, then the
    numbers) is that of the original ``make_problems`` and must not change: recorded data sets in
    ``data/arithmetic`` depend on ``make_problems(n, seed)`` being stable.  Numbers are drawn so the
    answer is always >= 0.  The id is ``"x" + short sha`` of the question (callers may replace it).
    """
    name, thing, holder = rng.choice(NAMES), rng.choice(THINGS), rng.choice(HOLDERS)
    if template is None:
        kind = rng.randrange(3)
    elif template in TEMPLATES:
        kind = TEMPLATES.index(template)
    else:
        raise ValueError(f"unknown problem template {template!r}; known: {', '.join(TEMPLATES)}")
    if kind == 0:  # a * b - c
        a, b = rng.randint(2, 6), rng.randint(2, 9)
        c = rng.randint(1, a * b)
    elif kind == 1:  # a + b * c
        a, b, c = rng.randint(1, 20), rng.randint(2, 5), rng.randint(2, 6)
    else:  # a + b - c
        a, b = rng.randint(5, 30), rng.randint(1, 20)
        c = rng.randint(1, a + b)
    return build_problem(TEMPLATES[kind], name, thing, holder, a, b, c)


#: What the simulated teacher's "new exercises like this one" are: ``template`` -- random problems of
#: the same template; ``variation`` -- the same problem with its first step kept and the rest
#: changed (:func:`variation_of`), the way a teacher asked for exercises on a student's mistake writes
#: variations of that exercise.
SIMILAR_KINDS = ("template", "variation")


def variation_of(rng: random.Random, p: Problem) -> Problem:
    """A variation of ``p``: the same template and the same first step (the operands of its first
    operation: the multiplication or sum a student who got ``p`` wrong may have missed), with a new
    name, thing, holder and other number (drawn as :func:`random_problem` draws it)."""
    name, thing, holder = rng.choice(NAMES), rng.choice(THINGS), rng.choice(HOLDERS)
    _, x, y, first = p.steps[0]
    if p.template == "boxes-give":  # a * b - c: keep a, b
        a, b, c = x, y, rng.randint(1, first)
    elif p.template == "buy-holders":  # a + b * c: keep b, c
        a, b, c = rng.randint(1, 20), x, y
    else:  # a + b - c: keep a, b
        a, b, c = x, y, rng.randint(1, first)
    return build_problem(p.template, name, thing, holder, a, b, c)


def build_problem(template: str, name: str, thing: str, holder: str, a: int, b: int, c: int,
                  id: str | None = None) -> Problem:
    """The problem of ``template`` with these slots (question text, steps, answer)."""
    if template == "boxes-give":  # a * b - c
        q = (f"{name} has {a} {holder} with {b} {thing} in each. {name} gives away {c} {thing}. "
             f"How many {thing} does {name} have now?")
        steps = (("*", a, b, a * b), ("-", a * b, c, a * b - c))
    elif template == "buy-holders":  # a + b * c
        q = (f"{name} had {a} {thing}. Then {name} bought {b} {holder} of {thing} with {c} {thing} in each. "
             f"How many {thing} does {name} have in total?")
        steps = (("*", b, c, b * c), ("+", a, b * c, a + b * c))
    elif template == "collect-lose":  # a + b - c
        q = (f"{name} collected {a} {thing} on Monday and {b} {thing} on Tuesday. "
             f"{name} lost {c} of them. How many {thing} are left?")
        steps = (("+", a, b, a + b), ("-", a + b, c, a + b - c))
    else:
        raise ValueError(f"unknown problem template {template!r}; known: {', '.join(TEMPLATES)}")
    return Problem(id=id or question_id(q), question=q, answer=steps[-1][3], steps=steps, template=template)


def question_id(question: str) -> str:
    """``"x"`` + 10 hex chars of sha256: the id of a problem known only by its text."""
    return "x" + hashlib.sha256(question.encode("utf-8")).hexdigest()[:10]


def make_problems(n: int, seed: int = 0, prefix: str = "p") -> list[Problem]:
    """``n`` distinct problems with small numbers (answers 0..~60), reproducible from ``seed``."""
    rng = random.Random(seed)
    out: list[Problem] = []
    seen: set[str] = set()
    while len(out) < n:
        p = random_problem(rng)
        if p.question in seen:
            continue
        seen.add(p.question)
        out.append(replace(p, id=f"{prefix}{len(out)}"))
    return out


# --- recognising a question of any template, so novel (generated) questions can be answered too.
# Tolerant on purpose: any capitalised name and any word for the things/holders, so exercises a real
# generator would write with other names or objects still parse.
_NAME = r"(?<![A-Za-z'-])[A-Z][A-Za-z'-]*"
_WORD = r"[A-Za-z][A-Za-z'-]*"
_NUM = r"(?:0|[1-9]\d{0,8})"  # canonical integers: the rebuilt question is the matched text
_TEMPLATE_PATTERNS = {
    "boxes-give": (
        r"(?P<{t}name>{name}) has (?P<{t}a>{num}) (?P<{t}holder>{word}) with (?P<{t}b>{num}) (?P<{t}thing>{word})"
        r" in each\. (?P={t}name) gives away (?P<{t}c>{num}) (?P={t}thing)\."
        r" How many (?P={t}thing) does (?P={t}name) have now\?"
    ),
    "buy-holders": (
        r"(?P<{t}name>{name}) had (?P<{t}a>{num}) (?P<{t}thing>{word})\. Then (?P={t}name) bought"
        r" (?P<{t}b>{num}) (?P<{t}holder>{word}) of (?P={t}thing) with (?P<{t}c>{num}) (?P={t}thing) in each\."
        r" How many (?P={t}thing) does (?P={t}name) have in total\?"
    ),
    "collect-lose": (
        r"(?P<{t}name>{name}) collected (?P<{t}a>{num}) (?P<{t}thing>{word}) on Monday and (?P<{t}b>{num})"
        r" (?P={t}thing) on Tuesday\. (?P={t}name) lost (?P<{t}c>{num}) of them\."
        r" How many (?P={t}thing) are left\?"
    ),
}
_GROUP_PREFIX = {tpl: f"t{i}_" for i, tpl in enumerate(TEMPLATES)}
_ANY_PROBLEM = re.compile("|".join(
    "(?:" + _TEMPLATE_PATTERNS[tpl].format(t=_GROUP_PREFIX[tpl], name=_NAME, word=_WORD, num=_NUM) + ")"
    for tpl in TEMPLATES
))


def _problem_from_match(m: re.Match[str]) -> Problem:
    for tpl in TEMPLATES:
        t = _GROUP_PREFIX[tpl]
        if m.group(f"{t}name") is not None:
            g = m.groupdict()
            holder = g.get(f"{t}holder") or HOLDERS[0]  # collect-lose has no holder
            return build_problem(tpl, g[f"{t}name"], g[f"{t}thing"], holder,
                                 int(g[f"{t}a"]), int(g[f"{t}b"]), int(g[f"{t}c"]))
    raise AssertionError("a match of _ANY_PROBLEM names no template")  # pragma: no cover


def parse_problem(question: str) -> Problem | None:
    """The :class:`Problem` of a question written by one of the three templates (None otherwise).

    The whole text (surrounding whitespace aside) must be one question; to find a question *inside* a
    prompt use :func:`find_problem`.  Its id is :func:`question_id` of the question.
    """
    m = _ANY_PROBLEM.fullmatch(question.strip())
    return _problem_from_match(m) if m else None


def find_problem(text: str) -> Problem | None:
    """The rightmost template question inside ``text`` (prompts show the target question last)."""
    m = _rightmost(_ANY_PROBLEM, text)
    return _problem_from_match(m) if m else None


def _rightmost(pattern: re.Pattern[str] | None, text: str) -> re.Match[str] | None:
    last = None
    if pattern is not None:
        for m in pattern.finditer(text):
            last = m
    return last


def _render_rationale(p: Problem, slip_step: int | None, slip: int) -> tuple[str, int]:
    results: list[int] = []
    parts = []
    for i, (op, a, b, _) in enumerate(p.steps):
        # operands that were results of earlier steps follow the (possibly slipped) earlier result
        if i > 0:
            prev = results[-1]
            if p.steps[i - 1][3] == a:
                a = prev
            elif p.steps[i - 1][3] == b:
                b = prev
        r = _apply(op, a, b)
        if slip_step == i:
            r += slip
        results.append(r)
        word = {"+": "plus", "-": "minus", "*": "times"}[op]
        parts.append(f"{a} {op} {b} = {r}" if i % 2 == 0 else f"{a} {word} {b} is {r}")
    q = p.question
    subject = q.split(" ")[0]
    if p.template == "boxes-give":
        text = f"{subject} starts with {parts[0]} items. After giving some away: {parts[1]}."
    elif p.template == "buy-holders":
        text = f"The new ones are {parts[0]}. Together with the first ones: {parts[1]}."
    else:
        text = f"Over the two days: {parts[0]}. After the loss: {parts[1]}."
    return text, results[-1]


def _rng_for(question: str, seed: Any, salt: str) -> random.Random:
    h = hashlib.sha256(f"{salt}\x1f{seed}\x1f{question}".encode()).digest()
    return random.Random(int.from_bytes(h[:8], "little"))


_SIMILAR_ASK = re.compile(r"\bWrite\s+(\d{1,3})\s+new\s+exercises?\b", re.I)
_MAX_EXERCISES = 50
_HINT = re.compile(r"(?:correct|gold|right) answer is\s*\**(-?\d+)", re.I)


class SimulatedResponder:
    """A TestServer responder that answers the problem found in the prompt (rightmost question).

    Two kinds of prompt are understood:

    * anything containing a question: a step-by-step solution of the rightmost question — one of
      ``problems`` or, failing that, any question of the three templates (:func:`parse_problem`), so
      exercises the teacher itself invented can be solved later.  When the prompt states the answer
      after the question ("The correct answer is 7", a correction / rationalization prompt) the
      solution reasons to it without slips;
    * with ``think=True`` a solution comes R1-style, ``<think>\n{working}\n</think>\n\n{final sentence}``:
      a reasoning flavor of the server returns the working as the trace (``reasoning_content``,
      ``reasoning``, thinking blocks), ``think-inline`` leaves it inline;
    * ``Write <m> new exercises`` (``prompts/tailored/similar.j2``): ``m`` new problems of the same
      template as the rightmost question, see :meth:`similar_exercises`.
    """

    def __init__(self, problems: list[Problem], *, error_rate: float = 0.1, noise_rate: float = 0.1,
                 salt: str = "sim", copy_rate: float = 0.1, think: bool = False,
                 similar_kind: str = "template") -> None:
        if similar_kind not in SIMILAR_KINDS:
            raise ValueError(f"similar_kind {similar_kind!r}: one of {', '.join(SIMILAR_KINDS)}")
        self.similar_kind = similar_kind
        self.think = think  # R1-style: the working inside <think>...</think>, the final sentence after it
        self.by_question = {p.question: p for p in problems}
        self.error_rate = error_rate
        self.noise_rate = noise_rate
        self.copy_rate = copy_rate
        self.salt = salt
        self._pattern = (
            re.compile("|".join(re.escape(q) for q in sorted(self.by_question, key=len, reverse=True)))
            if self.by_question else None
        )
        self.answered = 0
        self.unmatched = 0
        self.exercise_replies = 0

    def find(self, prompt: str) -> Problem | None:
        """The rightmost question in ``prompt``: a known problem, else any parseable template question.

        Whichever starts further right wins, so a known question quoted earlier in the prompt (say in a
        student's rambling attempt) does not shadow a novel question that comes after it; at the same
        position the known problem (with its own id) is returned.
        """
        known = _rightmost(self._pattern, prompt)
        novel = _rightmost(_ANY_PROBLEM, prompt)
        if novel is not None and (known is None or novel.start() > known.start()):
            return self.by_question.get(novel.group(0)) or _problem_from_match(novel)
        return self.by_question[known.group(0)] if known else None

    def answer(self, problem: Problem, seed: Any = None, *, hint: int | None = None) -> str:
        rng = _rng_for(problem.question, seed, self.salt)
        slip_step = None
        slip = 0
        if hint is None and rng.random() < self.error_rate:
            slip_step = rng.randrange(len(problem.steps))
            slip = rng.choice([-3, -2, -1, 1, 2, 3, 10])
        text, final = problem.rationale(slip_step, slip)
        if rng.random() < self.noise_rate:
            style = rng.randrange(4)
            if style == 3:  # a hallucinated next exemplar: some other question
                other = rng.choice(list(self.by_question)) if self.by_question else random_problem(rng).question
                ending = f" The answer is {final}.\n\nQ: {other}\nA: Let's think"
            else:
                ending = [f" Answer: {final}", f" So the answer is **{final}**.", f" = {final}."][style]
        else:
            ending = f" The answer is {final}."
        if self.think:
            return f"<think>\n{text.strip()}\n</think>\n\n{ending.strip()}"
        return text + ending

    def similar_exercises(self, problem: Problem, m: int, seed: Any = None) -> list[tuple[Problem, int]]:
        """``m`` new ``(problem, proposed answer)`` pairs of ``problem``'s template
        (``similar_kind="variation"``: variations of ``problem`` itself, see :func:`variation_of`).

        Fresh names, things and numbers, reproducible from (question, seed, salt): the same prompt gets
        the same exercises, and a smaller ``m`` gets a prefix of a larger one's.  Like a real generator
        it is imperfect: with probability ``copy_rate`` an exercise is a verbatim copy of the original
        question, and with probability ``error_rate`` the proposed answer has a slip of 1..3 (kept >= 0).
        Other exercises never repeat the original or each other.
        """
        rng = _rng_for(problem.question, seed, self.salt + "\x1fsimilar")
        out: list[tuple[Problem, int]] = []
        seen = {problem.question}
        for _ in range(m):
            if rng.random() < self.copy_rate:
                new = problem
            else:
                new = self._new_exercise(rng, problem)
                while new.question in seen:
                    new = self._new_exercise(rng, problem)
                seen.add(new.question)
            proposed = new.answer
            if rng.random() < self.error_rate:
                slip = rng.choice([-3, -2, -1, 1, 2, 3])
                proposed = proposed + slip if proposed + slip >= 0 else proposed + abs(slip)
            out.append((new, proposed))
        return out

    def _new_exercise(self, rng: random.Random, problem: Problem) -> Problem:
        if self.similar_kind == "variation":
            return variation_of(rng, problem)
        return random_problem(rng, problem.template)

    def similar_reply(self, problem: Problem, m: int, seed: Any = None) -> str:
        """The reply text: ``Exercise k: <question>`` / ``Answer: <n>`` blocks separated by blank lines."""
        return "\n\n".join(f"Exercise {k}: {p.question}\nAnswer: {n}"
                             for k, (p, n) in enumerate(self.similar_exercises(problem, m, seed), start=1))

    def __call__(self, endpoint: str, body: dict[str, Any]) -> str:
        if "messages" in body:
            prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
        else:
            prompt = str(body.get("prompt", ""))
        problem = self.find(prompt)
        if problem is None:
            self.unmatched += 1
            return "I am not sure what is being asked."
        temperature = body.get("temperature") or 0
        seed = sample_seed(body) if temperature else None
        ask = _SIMILAR_ASK.search(prompt)
        if ask:
            self.exercise_replies += 1
            return self.similar_reply(problem, min(int(ask.group(1)), _MAX_EXERCISES), seed)
        self.answered += 1
        hint = None
        m = _HINT.search(prompt[prompt.rfind(problem.question):])
        if m:  # a rationalization prompt shows the answer: the teacher then reasons to it
            hint = int(m.group(1))
        return self.answer(problem, seed, hint=hint)


def __getattr__(name: str) -> Any:
    """``SimulatedTeacher``: the old name of :class:`SimulatedResponder` (documented in data/arithmetic/),
    kept as a deprecated alias: it is a TestServer responder, not a :class:`synthkd.teachers.base.Teacher`."""
    if name == "SimulatedTeacher":
        import warnings

        warnings.warn("synthkd.testing.simulated.SimulatedTeacher is renamed SimulatedResponder",
                      DeprecationWarning, stacklevel=2)
        return SimulatedResponder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def write_problems(problems: list[Problem], path: Path) -> None:
    with open(path, "w") as f:
        for p in problems:
            d = asdict(p)
            d.pop("steps")
            f.write(json.dumps({"id": d["id"], "question": p.question, "answer": p.answer,
                                "template": p.template}) + "\n")


def main(argv: list[str] | None = None) -> int:
    from synthkd.testing.server import FaultConfig, TestServer

    ap = argparse.ArgumentParser(description="Serve the simulated arithmetic teacher on 127.0.0.1.")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--error-rate", type=float, default=0.1)
    ap.add_argument("--noise-rate", type=float, default=0.1)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--write-problems", type=Path, help="also write the problems (with answers) as jsonl")
    args = ap.parse_args(argv)
    problems = make_problems(args.n, args.seed)
    if args.write_problems:
        write_problems(problems, args.write_problems)
    teacher = SimulatedResponder(problems, error_rate=args.error_rate, noise_rate=args.noise_rate)
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with TestServer(FaultConfig(), responder=teacher, port=args.port) as srv:
        print(f"READY {srv.base_url}", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
