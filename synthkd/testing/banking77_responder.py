"""A scripted Banking77 responder (the teacher side of the TestServer): answers synthkd's own prompts with
*real* Banking77 texts, offline.

Why: the intent pipeline (``pipelines/intent_from_prompts.yaml``) must run end to end without an API
key, and its filters must meet the trouble a real model causes (near-duplicates, seed copies, numbering
noise, wrong labels) on real text rather than on lorem ipsum.  The texts are the shipped slice in
``data/banking77/`` (``train_pool.jsonl``: train rows of 8 intents; ``labels.yaml``: their seeds).

Three prompt kinds are recognised (anything else gets a polite refusal):

* **task generation** (``prompts/tasks/examples*.j2``: ``Label: L`` + ``Write N new``): a numbered list
  of N real train texts of L, with a near-copy of another item, a seed example copied back, an empty
  and a too-short item, a preamble/closing line and a numbering style that changes per request; with
  ``task_wrong_rate`` that share of the items is another label's text, from a small subset per label
  (``shared_per_label``), so the same mislabelled texts recur under several labels.  The out-of-scope
  prompt (``tasks/out_of_scope``, ``Label: out_of_scope``) is answered from ``pools["out_of_scope"]``
  when the pools have one (which also makes it that texts' gold class when classifying).
* **PromptMix generation** (``... belong 80% to the class "A" and 20% to the class "B"``): m texts
  drawn from A's pool with probability α and B's otherwise, with annotations, quotes, seed copies and
  repeats.
* **classification** (``Text: "..."`` + numbered classes, the relabel template): the text's true
  label in a varying surface form, a wrong offered class for ``wrong_rate`` of texts, an unmappable
  answer for ``unmappable_rate``.  A text not in the pool (a near-copy) gets the label of the pool
  text sharing most words with it, as a real classifier would.

Every answer is a pure function of the request body (prompt, seed, temperature), so a rerun or a fresh
run gets the same text.  The logic is moved from the test fixtures ``tests/fixtures/tasks/
tasks_responders.py`` and ``tests/fixtures/promptmix/scripted_teacher.py``.

Use: ``TestServer(responder=Banking77Responder.from_dir())`` or ``synthkd serve-test --responder banking77``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from pathlib import Path
from typing import Any

import yaml

from synthkd.testing.sampling import sample_seed
from synthkd.testing.server import prompt_text_of

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "data" / "banking77"

TASK_LABEL_RE = re.compile(r"^Label: (\S+)", re.M)
TASK_N_RE = re.compile(r"Write (\d+) new")
GEN_RE = re.compile(
    r"Generate a diverse set of (\d+) short examples that each belong (\d+)% to the class \"(.+?)\" and (\d+)% to the class \"(.+?)\""
)
TEXT_RE = re.compile(r'\nText: "(.*)"\n', re.DOTALL)
CLASS_LINE_RE = re.compile(r"^(\d+)\. ([^\s:]+)", re.MULTILINE)
EXAMPLE_RE = re.compile(r'^\s+Example: "(.*)"$', re.MULTILINE)
_WORD_RE = re.compile(r"[a-z0-9']+")


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _h(*parts: Any) -> int:
    return int(hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def _rng(prompt: str, body: dict) -> random.Random:
    return random.Random(hashlib.sha256(f"{prompt}\x1f{sample_seed(body)}".encode()).hexdigest())


def _near_copy(text: str, rng: random.Random) -> str:
    """A variant a careless teacher writes: one small edit (ROUGE-L far above 0.7 for real texts)."""
    words = text.split()
    choice = rng.randrange(3)
    if choice == 0 or len(words) < 4:
        return text.rstrip("?.!") + " please?"
    if choice == 1:
        i = rng.randrange(len(words))
        return " ".join(words[:i] + ["really"] + words[i:])
    return text.lower().rstrip("?.!") + "!!"


class Banking77Responder:
    """``responder(endpoint, body) -> str`` for :class:`synthkd.testing.server.TestServer`."""

    def __init__(self, pools: dict[str, list[str]], seeds: dict[str, list[str]] | None = None, *,
                 wrong_rate: float = 0.0, unmappable_rate: float = 0.0, plant: bool = True,
                 seed_copy_every: int = 3, task_wrong_rate: float = 0.0, shared_per_label: int = 10) -> None:
        if not 0 <= wrong_rate + unmappable_rate <= 1:
            raise ValueError("wrong_rate + unmappable_rate must be within [0, 1]")
        if not 0 <= task_wrong_rate <= 1:
            raise ValueError("task_wrong_rate must be within [0, 1]")
        self.pools = pools
        # task generation mislabels: a task_wrong_rate share of the items written "for L" are real texts of
        # another label, drawn from a small per-label subset, so one text recurs under several labels (and
        # PromptMix, drawing from the whole pools, writes some of them under their true label)
        self.task_wrong_rate = task_wrong_rate
        self.shared = {lab: texts[:shared_per_label] for lab, texts in pools.items()}
        self.wrong_rate = wrong_rate
        self.unmappable_rate = unmappable_rate
        self.plant = plant
        self.seed_copy_every = seed_copy_every
        self.gold: dict[str, str] = {}
        for lab, texts in list(pools.items()) + list((seeds or {}).items()):
            for t in texts:
                self.gold.setdefault(norm(t), lab)
        self._words = [(set(_WORD_RE.findall(k)), lab) for k, lab in self.gold.items()]
        self._lock = threading.Lock()
        self.calls: dict[str, int] = {"tasks": 0, "promptmix": 0, "classify": 0, "other": 0}

    @classmethod
    def from_dir(cls, path: str | Path = DEFAULT_DIR, **kw: Any) -> "Banking77Responder":
        """Pools from ``train_pool.jsonl`` ({text, label}), seeds from ``labels.yaml`` (for gold labels)."""
        path = Path(path)
        pools: dict[str, list[str]] = {}
        for line in (path / "train_pool.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                pools.setdefault(r["label"], []).append(r["text"])
        seeds: dict[str, list[str]] = {}
        labels = yaml.safe_load((path / "labels.yaml").read_text(encoding="utf-8")).get("labels", {})
        for lab, spec in labels.items():
            seeds[lab] = list((spec or {}).get("examples", []))
        return cls(pools, seeds, **kw)

    def _count(self, kind: str) -> None:
        with self._lock:
            self.calls[kind] += 1

    def __call__(self, endpoint: str, body: dict) -> str:
        prompt = prompt_text_of(body)
        g = GEN_RE.search(prompt)
        if g:
            self._count("promptmix")
            return self.mix(prompt, body, int(g.group(1)), int(g.group(2)), g.group(3), g.group(5))
        t = TEXT_RE.search(prompt)
        if t:
            self._count("classify")
            return self.classify(prompt, t.group(1))
        lab, n = TASK_LABEL_RE.search(prompt), TASK_N_RE.search(prompt)
        if lab and n:
            self._count("tasks")
            return self.examples(prompt, body, lab.group(1), int(n.group(1)))
        self._count("other")
        return "I do not understand the request."

    # ------------------------------------------------------------------ task generation
    def examples(self, prompt: str, body: dict, label: str, n: int) -> str:
        pool = self.pools.get(label)
        if not pool:
            return f"I don't know any messages about {label}."
        shown = re.findall(r"^- (.+)$", prompt.split("Existing examples", 1)[1], re.M) if "Existing examples" in prompt else []
        rng = _rng(prompt, body)
        items = rng.sample(pool, min(n, len(pool)))
        if self.task_wrong_rate:
            others = [lab for lab in self.shared if lab != label and self.shared[lab]]
            for i in range(len(items)):
                if others and rng.random() < self.task_wrong_rate:
                    items[i] = rng.choice(self.shared[rng.choice(others)])
        if self.plant and len(items) >= 3:
            items[1] = _near_copy(items[0], rng)  # near-duplicate inside the answer
            if shown:
                items[2] = shown[rng.randrange(len(shown))]  # a seed example copied back
            items += ["", "ok"]  # an empty and a too-short item
        style = rng.randrange(7)
        if style == 6:
            return "\n".join(json.dumps({"text": t}) for t in items if t) + "\n"
        fmt = ["{i}. {t}", "{i}) {t}", "({i}) {t}", 'Example {i}: "{t}"', "- {t}", "{i}.{t}"][style]
        lines = [fmt.format(i=i, t=t) for i, t in enumerate(items, 1)]
        return f"Here are {n} {label.replace('_', ' ')} messages:\n\n" + "\n".join(lines) + "\n\nHope this helps!"

    # ------------------------------------------------------------------ PromptMix generation
    def mix(self, prompt: str, body: dict, m: int, pct_a: int, a: str, b: str) -> str:
        salt = (prompt, sample_seed(body), body.get("temperature"))
        seeds = EXAMPLE_RE.findall(prompt)
        lines = [f"Here are {m} examples:", ""]
        prev = None
        for i in range(m):
            r = _h(*salt, i)
            if i == 1 and seeds and _h(*salt, "copy") % self.seed_copy_every == 0:
                text = seeds[0]  # a real model sometimes repeats a demonstration
            elif i == 2 and prev is not None and _h(*salt, "dup") % 4 == 0:
                text = prev
            else:
                cls = a if r % 100 < pct_a else b
                pool = self.pools.get(cls) or [f"something about {cls}"]
                text = pool[(r // 100) % len(pool)]
            prev = text
            style = (r // 7) % 5
            ann = [f" ({pct_a}% {a}, {100 - pct_a}% {b})", f" [{pct_a}% {a} / {100 - pct_a}% {b}]",
                   f" - {pct_a}% {a}, {100 - pct_a}% {b}", "", f" ({pct_a}% {a.replace('_', ' ')})"][style]
            num = [f"{i + 1}. ", f"{i + 1}) ", f"Example {i + 1}: ", "- ", f"{i + 1}. "][(r // 11) % 5]
            quoted = f'"{text}"' if (r // 13) % 3 == 0 else text
            lines.append(num + quoted + ann)
        lines += ["", "I hope these examples help!"]
        return "\n".join(lines)

    # ------------------------------------------------------------------ classification
    def true_label(self, text: str) -> str | None:
        key = norm(text)
        if key in self.gold:
            return self.gold[key]
        words = set(_WORD_RE.findall(key))
        if not words:
            return None
        best, best_score = None, 0.0
        for ws, lab in self._words:  # first best wins: deterministic (insertion order)
            score = len(words & ws) / max(1, len(words | ws))
            if score > best_score:
                best, best_score = lab, score
        return best if best_score >= 0.5 else None

    def classify(self, prompt: str, text: str) -> str:
        offered = [(int(n), name) for n, name in CLASS_LINE_RE.findall(prompt.split("\nText:")[0])]
        names = [n for _, n in offered]
        gold = self.true_label(text)
        r = _h(norm(text))
        band = (r % 1000) / 1000
        if gold is None or band < self.unmappable_rate:
            return "I am not sure which of these it is."
        label = gold
        if band < self.unmappable_rate + self.wrong_rate:
            wrong = [n for n in names if n != gold]
            if wrong:
                label = wrong[(r // 1000) % len(wrong)]
        num = dict((name, n) for n, name in offered).get(label)
        pretty = "_".join(w.capitalize() for w in label.split("_"))
        forms = [f"Intent: {pretty}.", str(num) if num else label, f"The answer is {label}.",
                 f'"{label.replace("_", " ")}"', label.upper(), f"Class: {num}" if num else label]
        return forms[(r // 7) % 6]


def banking77_responder(**kw: Any) -> Banking77Responder:
    """The named built-in responder ``banking77`` of ``synthkd serve-test --responder``."""
    return Banking77Responder.from_dir(**kw)


__all__ = ["Banking77Responder", "banking77_responder", "DEFAULT_DIR"]
