"""What every teacher counts, and the one line every command prints about it.

Why its own module: the counters are the same for every backend (an API, a local model, recorded
answers), and the progress bar, the pipeline ledger and every command's summary read them; before,
each command formatted them itself and probed for them with ``getattr``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synthkd.teachers.base import Usage


@dataclass
class TeacherStats:
    """Counters for progress bars and summaries; updated in place by the teacher, read by anyone.

    ``attempts`` counts every request sent (a retry is another attempt; a cache hit is none),
    ``done`` every request finished (answered, failed for good, or from the cache).  Tokens and
    ``cost_usd`` are what this run sent and paid for: cache hits cost nothing.  ``model`` and
    ``price_known`` are set by the teacher so that :meth:`summary` can say which model has no price.
    """

    total: int | None = None
    done: int = 0
    cached: int = 0
    failed: int = 0
    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0
    timeouts: int = 0
    reshaped: int = 0  # requests re-sent in the shape the model accepts after an "unsupported parameter" 400
    structured: int = 0  # answers asked for as JSON for a schema (structured outputs)
    reasks: int = 0  # invalid structured answers asked again (see teachers/structured.py)
    reask_cost_usd: float = 0.0  # what the invalid answers that were re-asked cost (part of cost_usd)
    structured_invalid: int = 0  # structured answers still invalid after the last re-ask
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # part of prompt_tokens read from the provider's prompt cache
    reasoning_tokens: int = 0  # part of completion_tokens spent on reasoning
    cost_usd: float = 0.0  # spent in this run (cache hits cost nothing)
    started_at: float = field(default_factory=time.monotonic)
    first_request_at: float | None = None
    last_result_at: float | None = None
    in_flight: int = 0
    batched: int = 0  # batch mode: requests submitted in provider batches (part of attempts)
    model: str = ""
    price_known: bool = True

    def add_billed(self, usage: "Usage", cost: float | None) -> None:
        """Count one billed answer's tokens and cost (online or collected from a batch)."""
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.cached_tokens += usage.cached_tokens
        self.reasoning_tokens += usage.reasoning_tokens
        if cost:
            self.cost_usd += cost

    def cost_line(self) -> str:
        """``cost this run $X``, or why there is no figure (no price for the model)."""
        if self.price_known:
            return f"cost this run ${self.cost_usd:.6f}"
        return f"cost unknown (no price for {self.model!r}; see --prices)"

    def structured_part(self) -> str:
        """``, N structured (R re-asked for $X, F still invalid)`` when answers were asked as JSON."""
        if not self.structured:
            return ""
        return (f", {self.structured} structured ({self.reasks} re-asked for ${self.reask_cost_usd:.6f}, "
                f"{self.structured_invalid} still invalid)")

    def structured_dict(self) -> dict[str, object]:
        """The structured-output counters for a ``--summary-json`` (empty when nothing was asked as JSON)."""
        if not self.structured:
            return {}
        return {"structured_answers": self.structured, "reasks": self.reasks,
                "reask_cost_usd": round(self.reask_cost_usd, 8), "structured_invalid": self.structured_invalid}

    def summary(self) -> str:
        """One line for a command's final report: requests sent (and what they became), tokens, cost."""
        return (f"requests sent {self.attempts} ({self.cached} from cache, {self.failed} failed, {self.retries} retries, "
                f"{self.rate_limited} rate-limited, {self.timeouts} timed out"
                f"{f', {self.reshaped} reshaped' if self.reshaped else ''}"
                f"{self.structured_part()}"
                f"{f'; {self.batched} in batches at batch prices, their answers read back from the cache' if self.batched else ''}); "
                f"tokens {self.prompt_tokens} in{f' ({self.cached_tokens} cached)' if self.cached_tokens else ''} / "
                f"{self.completion_tokens} out{f' ({self.reasoning_tokens} reasoning)' if self.reasoning_tokens else ''}; "
                f"{self.cost_line()}")
