"""Which API dialect a model speaks, and how a request must be shaped for it: declared once, here.

Why a table and not per-method care: every method and filter sends the same sampling parameters
(``max_tokens``, often ``temperature``), and reasoning models reject them with a 400 — OpenAI's o-series
and GPT-5 take ``max_completion_tokens`` and only the default temperature; DeepSeek's reasoner rejects
``logprobs`` and does not do ``n``.  The teacher shapes each request by the model's family just before
sending it (the cache key stays the caller's request, so a rerun is free whatever was learned), and a
server that still answers "unsupported parameter" teaches it the rest (see
:class:`RequestShaper`).

The model -> family table matches by longest prefix, like the price table, and users extend it the same
way: a JSON or YAML file ``{"my-model-prefix": "openai-reasoning"}`` given as ``--families FILE`` or
``$SYNTHKD_FAMILIES``.  Unknown models are ``openai-compatible`` (sent as given: vLLM, Ollama,
llama.cpp, TGI take ``max_tokens``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthkd.errors import TeacherConfigError
from synthkd.teachers.table_file import read_table_file

log = logging.getLogger("synthkd.teacher")

#: output tokens a reasoning model gets for its reasoning on top of a request's ``max_tokens``, unless
#: ``--reasoning-budget`` says otherwise: methods size ``max_tokens`` for the answer (32 for a label),
#: and a reasoning model counts its reasoning in it, so without room it stops before any answer
DEFAULT_REASONING_BUDGET = 4096

#: sampling parameters a server may refuse for a model and that can be left out without changing what
#: is asked (the model then samples at its own default); never a parameter the user set with --param
SAMPLING_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs",
                   "logit_bias", "seed", "stop", "top_k")


@dataclass(frozen=True)
class Family:
    """How to talk to one kind of model.

    * ``api``: ``openai`` (chat/completions) or ``anthropic`` (Messages API);
    * ``token_param``: the name the output-token limit is sent under (``max_tokens`` is renamed);
    * ``drops``: sampling parameters the model rejects, left out of every request;
    * ``n_samples``: whether one request may ask for several samples (``n``);
    * ``reasoning``: a reasoning model (its output limit covers the hidden reasoning too);
    * ``chat_only``: no legacy ``/completions`` endpoint: a plain prompt goes as one user message;
    * ``json_schema``: the provider takes strict JSON schemas (``response_format``, Anthropic: a forced
      tool), so ``--structured auto`` sends them; an unknown server is asked only with ``--structured on``;
    * ``notes``: the quirks handled, for the README and ``--help``.
    """

    name: str
    api: str = "openai"
    token_param: str = "max_tokens"
    drops: tuple[str, ...] = ()
    n_samples: bool = True
    reasoning: bool = False
    chat_only: bool = False
    json_schema: bool = False
    notes: str = ""


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("openai-compatible", notes="Any OpenAI-compatible server (vLLM, Ollama, llama.cpp, TGI, SGLang): "
           "parameters sent as given; `n` tried and dropped if refused; JSON schemas sent only with `--structured on` "
           "(vLLM, SGLang, Ollama take them)."),
    Family("openai", json_schema=True, notes="OpenAI chat models (gpt-4o, gpt-4.1...)."),
    Family("openai-reasoning", token_param="max_completion_tokens", reasoning=True, json_schema=True,
           chat_only=True,
           drops=("temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs",
                  "logit_bias"),
           notes="OpenAI o-series and GPT-5: `max_tokens` sent as `max_completion_tokens` (it covers the hidden "
                 "reasoning too), sampling parameters they reject left out, `reasoning_effort` passed; a plain "
                 "prompt goes as chat (no /completions)."),
    Family("deepseek", n_samples=False, notes="DeepSeek chat (https://api.deepseek.com): `n` is not supported."),
    Family("deepseek-reasoner", reasoning=True, n_samples=False, chat_only=True, drops=("logprobs", "top_logprobs"),
           notes="DeepSeek reasoner: the trace arrives as `reasoning_content`; `logprobs` is an error and "
                 "`temperature`/`top_p` are ignored; no `n`."),
    Family("gemini", chat_only=True, json_schema=True,
           notes="Gemini's OpenAI-compatible endpoint (https://generativelanguage.googleapis.com/v1beta/openai): "
                 "`reasoning_effort` maps to its thinking budget; a bad key is a 400, not a 401."),
    Family("anthropic", api="anthropic", n_samples=False, reasoning=True, json_schema=True,
           notes="Anthropic Messages API (native): `max_tokens` required, `thinking` budgets, `stop` sent as "
                 "`stop_sequences`, `seed` left out, temperature left out while thinking; no `n`."),
)}

#: model-name prefix -> family (longest prefix wins); extended by --families FILE / $SYNTHKD_FAMILIES
BUILTIN_MODELS: dict[str, str] = {
    "gpt-3.5": "openai", "gpt-4": "openai", "gpt-4o": "openai", "gpt-4.1": "openai", "chatgpt-": "openai",
    "o1": "openai-reasoning", "o3": "openai-reasoning", "o4": "openai-reasoning", "gpt-5": "openai-reasoning",
    "gpt-5-chat": "openai",
    "deepseek-chat": "deepseek", "deepseek-reasoner": "deepseek-reasoner",
    "gemini-": "gemini",
    "claude-": "anthropic",
}


def _load_file(path: Path) -> dict[str, str]:
    data = read_table_file(path, "model-family file", TeacherConfigError)
    if not isinstance(data, dict):
        raise TeacherConfigError(f"{path}: expected a mapping of model-name prefix -> family")
    for prefix, fam in data.items():
        if fam not in FAMILIES:
            raise TeacherConfigError(f"{path}: model {prefix!r}: unknown family {fam!r} "
                                     f"(known: {', '.join(sorted(FAMILIES))})")
    return {str(k): str(v) for k, v in data.items()}


class FamilyTable:
    """Model name -> :class:`Family`, by exact name or longest matching prefix."""

    def __init__(self, models: dict[str, str] | None = None) -> None:
        self._models = dict(BUILTIN_MODELS if models is None else models)

    @classmethod
    def default(cls, extra_file: str | Path | None = None) -> "FamilyTable":
        models = dict(BUILTIN_MODELS)
        for f in (os.environ.get("SYNTHKD_FAMILIES"), extra_file):
            if f:
                models.update(_load_file(Path(f)))
        return cls(models)

    def lookup(self, model: str) -> Family:
        name = model.rsplit("/", 1)[-1]  # "openai/o3-mini" on a router is o3-mini
        best = max((p for p in self._models if name.startswith(p)), key=len, default=None)
        return FAMILIES[self._models[best]] if best else FAMILIES["openai-compatible"]


@dataclass
class RequestShaper:
    """Turns a request's parameters into what the model accepts, and learns from the server's 400s.

    Starts from the family's rules; :meth:`learn` takes an "unsupported parameter/value" error and says
    whether re-sending in another shape can fix it (then it is remembered for every later request of
    this teacher, so one model costs at most one rejected request per parameter).  Parameters the user
    passed through (``--param``) are never dropped: the provider decides, and its error is the answer.
    """

    family: Family
    protected: frozenset[str] = frozenset()
    #: output tokens added to ``max_tokens`` for the reasoning of a reasoning model (see ``--reasoning-budget``)
    allowance: int = 0
    renames: dict[str, str] = field(default_factory=dict)
    drops: set[str] = field(default_factory=set)
    n_samples: bool = True

    def __post_init__(self) -> None:
        if self.family.token_param != "max_tokens":
            self.renames["max_tokens"] = self.family.token_param
        self.drops |= set(self.family.drops) - self.protected
        self.n_samples = self.family.n_samples

    def shape(self, params: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in params.items():
            if k in self.drops:
                continue
            if k in ("max_tokens", "max_completion_tokens") and self.allowance and isinstance(v, int):
                v = v + self.allowance  # the answer's budget plus room to reason
            out[self.renames.get(k, k)] = v
        return out

    def learn(self, param: str | None, message: str, sent: dict[str, Any], model: str) -> bool:
        """A 400 named ``param`` (or only a ``message``): True when the request may be re-sent reshaped."""
        if not param:  # some servers name the parameter only in the text
            for cand in ("max_tokens", "max_completion_tokens", *SAMPLING_PARAMS, "n", "response_format"):
                if f"'{cand}'" in message or f"`{cand}`" in message:
                    param = cand
                    break
        if not param or param not in sent:
            return False
        if param == "n":
            if not self.n_samples:
                return False
            self.n_samples = False
            log.warning("%s: the server refused n>1: each sample is sent as its own request", model)
            return True
        if param == "max_tokens" and "max_completion_tokens" in message and "max_tokens" not in self.renames:
            self.renames["max_tokens"] = "max_completion_tokens"
            log.warning("%s: the server wants max_completion_tokens, not max_tokens: renamed from now on", model)
            return True
        if param == "max_completion_tokens" and self.renames.get("max_tokens") == "max_completion_tokens":
            del self.renames["max_tokens"]  # an older server that knows only max_tokens
            log.warning("%s: the server does not know max_completion_tokens: max_tokens sent instead", model)
            return True
        if param == "response_format" and param not in self.protected:
            if param in self.drops:  # sent before another request's 400 taught it: re-sent without, silently
                return True
            self.drops.add(param)
            log.warning("%s: the server does not take response_format json_schema: structured outputs are off for "
                        "this model from now on (answers are parsed as text)", model)
            return True
        if param in SAMPLING_PARAMS and param not in self.protected and param not in self.drops:
            self.drops.add(param)
            log.warning("%s: the server refused %s=%r: left out from now on (the model samples at its "
                        "default)", model, param, sent.get(param))
            return True
        return False


def known_families_help() -> str:
    """One line per family, for the README and --help."""
    return "\n".join(f"- `{f.name}`: {f.notes}" for f in FAMILIES.values())

