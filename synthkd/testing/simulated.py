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

It is served by :class:`synthkd.testing.server.TestServer` as its responder, so the whole demo goes
through the real HTTP client (retries, cache, rate limits).  Which answer a request gets is a pure
function of the question, the sampling seed and the knobs: reruns are reproducible.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


def make_problems(n: int, seed: int = 0, prefix: str = "p") -> list[Problem]:
    """``n`` distinct problems with small numbers (answers 0..~60), reproducible from ``seed``."""
    rng = random.Random(seed)
    out: list[Problem] = []
    seen: set[str] = set()
    while len(out) < n:
        name, thing, holder = rng.choice(NAMES), rng.choice(THINGS), rng.choice(HOLDERS)
        kind = rng.randrange(3)
        if kind == 0:  # a * b - c
            a, b = rng.randint(2, 6), rng.randint(2, 9)
            c = rng.randint(1, a * b)
            q = (f"{name} has {a} {holder} with {b} {thing} in each. {name} gives away {c} {thing}. "
                 f"How many {thing} does {name} have now?")
            steps = (("*", a, b, a * b), ("-", a * b, c, a * b - c))
            tpl = "boxes-give"
        elif kind == 1:  # a + b * c
            a, b, c = rng.randint(1, 20), rng.randint(2, 5), rng.randint(2, 6)
            q = (f"{name} had {a} {thing}. Then {name} bought {b} {holder} of {thing} with {c} {thing} in each. "
                 f"How many {thing} does {name} have in total?")
            steps = (("*", b, c, b * c), ("+", a, b * c, a + b * c))
            tpl = "buy-holders"
        else:  # a + b - c
            a, b = rng.randint(5, 30), rng.randint(1, 20)
            c = rng.randint(1, a + b)
            q = (f"{name} collected {a} {thing} on Monday and {b} {thing} on Tuesday. "
                 f"{name} lost {c} of them. How many {thing} are left?")
            steps = (("+", a, b, a + b), ("-", a + b, c, a + b - c))
            tpl = "collect-lose"
        if q in seen:
            continue
        seen.add(q)
        out.append(Problem(id=f"{prefix}{len(out)}", question=q, answer=steps[-1][3], steps=steps, template=tpl))
    return out


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


class SimulatedTeacher:
    """A TestServer responder that answers the problem found in the prompt (rightmost question)."""

    def __init__(self, problems: list[Problem], *, error_rate: float = 0.1, noise_rate: float = 0.1,
                 salt: str = "sim") -> None:
        self.by_question = {p.question: p for p in problems}
        self.error_rate = error_rate
        self.noise_rate = noise_rate
        self.salt = salt
        self._pattern = re.compile("|".join(re.escape(q) for q in sorted(self.by_question, key=len, reverse=True)))
        self.answered = 0
        self.unmatched = 0

    def find(self, prompt: str) -> Problem | None:
        last = None
        for m in self._pattern.finditer(prompt):
            last = m
        return self.by_question[last.group(0)] if last else None

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
            ending = [f" Answer: {final}", f" So the answer is **{final}**.", f" = {final}.",
                      f" The answer is {final}.\n\nQ: {rng.choice(list(self.by_question))}\nA: Let's think"][style]
        else:
            ending = f" The answer is {final}."
        return text + ending

    def __call__(self, endpoint: str, body: dict[str, Any]) -> str:
        if "messages" in body:
            prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
        else:
            prompt = str(body.get("prompt", ""))
        problem = self.find(prompt)
        if problem is None:
            self.unmatched += 1
            return "I am not sure what is being asked."
        self.answered += 1
        temperature = body.get("temperature") or 0
        seed = body.get("seed") if temperature else None
        hint = None
        m = re.search(r"(?:correct|gold|right) answer is\s*\**(-?\d+)", prompt[prompt.rfind(problem.question):], re.I)
        if m:  # a rationalization prompt shows the answer: the teacher then reasons to it
            hint = int(m.group(1))
        return self.answer(problem, seed, hint=hint)


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
    teacher = SimulatedTeacher(problems, error_rate=args.error_rate, noise_rate=args.noise_rate)
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
