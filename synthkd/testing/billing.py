"""The test server's own bill: what a provider would charge for the responses it sent.

Why the server keeps a bill: the client reports a cost per result, and a cost bug (cached tokens
priced as fresh input, reasoning tokens forgotten, n > 1 choices counted once) is silent.  This
ledger is computed independently of ``synthkd.teachers.pricing`` -- same published price shape,
separate code -- so a test can check the client's total against it.

A response is billed when a provider would bill it: a 200 that carries usage (truncated ``length``
answers and ``n > 1`` requests included).  Errors, rate-limit answers, abandoned hangs and
malformed bodies are not billed (the malformed bodies carry no usable usage).

Items of a Batch API job (OpenAI Batch, Anthropic Message Batches) are billed at
:data:`BATCH_DISCOUNT` of the online price, every token class alike (cached input and cache writes
included: both providers state "50% of the standard API prices" for all usage of a batch); failed,
expired and cancelled items are not billed.  They count in ``billed`` / ``billed_usd`` like any
response, and are also totalled apart in ``billed_batch`` / ``billed_batch_usd``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Price", "PriceTable", "Ledger", "DEFAULT_PRICES_PATH", "TOKEN_CLASSES", "BATCH_DISCOUNT"]

#: The share of the online price a batch item costs (OpenAI: "50% cost discount"; Anthropic: "All
#: usage is charged at 50% of the standard API prices"; reference §2.7, §3.4).
BATCH_DISCOUNT = 0.5

#: synthkd's shipped price list (USD per 1M tokens), read with plain ``json``.
DEFAULT_PRICES_PATH = Path(__file__).resolve().parent.parent / "data" / "prices.json"

#: The token classes of ``stats()["billed"]`` (besides ``requests``).
TOKEN_CLASSES = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens.  ``cached_input`` and ``cache_write`` default to ``input``."""

    input: float
    output: float
    cached_input: float
    cache_write: float

    @classmethod
    def from_entry(cls, name: str, entry: Mapping[str, Any]) -> "Price":
        try:
            inp = float(entry["input"])
            out = float(entry["output"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"price for {name!r} needs numeric 'input' and 'output': {entry!r}") from exc
        cached = entry.get("cached_input")
        write = entry.get("cache_write")
        return cls(inp, out, inp if cached is None else float(cached), inp if write is None else float(write))

    def cost(self, input_tokens: int, cached_input_tokens: int, cache_write_tokens: int, output_tokens: int) -> float:
        """USD for one response (reasoning tokens are part of ``output_tokens``)."""
        return (
            input_tokens * self.input
            + cached_input_tokens * self.cached_input
            + cache_write_tokens * self.cache_write
            + output_tokens * self.output
        ) / 1e6


class PriceTable:
    """Model name -> :class:`Price`, matched by exact name, then by the longest prefix.

    Keys starting with ``_`` (comments) and non-object values are skipped, as in prices.json.
    """

    def __init__(self, entries: Mapping[str, Any]) -> None:
        self.prices = {
            name: Price.from_entry(name, entry)
            for name, entry in entries.items()
            if not name.startswith("_") and isinstance(entry, Mapping)
        }

    @classmethod
    def load(cls, source: "PriceTable | Mapping[str, Any] | str | Path | None" = None) -> "PriceTable":
        """A table from a mapping, a JSON file path, or (``None``) synthkd's shipped prices.json."""
        if isinstance(source, PriceTable):
            return source
        if isinstance(source, Mapping):
            return cls(source)
        path = DEFAULT_PRICES_PATH if source is None else Path(source)
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a price file must hold a JSON object of model -> price")
        return cls(data)

    def lookup(self, model: str) -> Price | None:
        price = self.prices.get(model)
        if price is not None:
            return price
        best = ""
        for name in self.prices:
            if model.startswith(name) and len(name) > len(best):
                best = name
        return self.prices[best] if best else None


class Ledger:
    """Running totals per token class, plus USD from a :class:`PriceTable`.

    Models without a price are still counted in the token totals and listed in
    ``unpriced_models`` (their USD counts as 0).
    """

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices
        self.reset()

    def reset(self) -> None:
        self.totals = dict.fromkeys(("requests", *TOKEN_CLASSES), 0)
        self.usd = 0.0
        self.batch_totals = dict.fromkeys(("requests", *TOKEN_CLASSES), 0)
        self.batch_usd = 0.0
        self.unpriced: dict[str, None] = {}

    def charge(
        self,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        batch: bool = False,
    ) -> None:
        """Bill one response.  ``input_tokens`` is the uncached input only; ``batch``: an item of a
        batch job, priced at :data:`BATCH_DISCOUNT` of the online price."""
        for t in (self.totals, self.batch_totals) if batch else (self.totals,):
            t["requests"] += 1
            t["input_tokens"] += input_tokens
            t["cached_input_tokens"] += cached_input_tokens
            t["cache_write_tokens"] += cache_write_tokens
            t["output_tokens"] += output_tokens
            t["reasoning_tokens"] += reasoning_tokens
        price = self.prices.lookup(model)
        if price is None:
            self.unpriced[model] = None
            return
        usd = price.cost(input_tokens, cached_input_tokens, cache_write_tokens, output_tokens)
        if batch:
            usd *= BATCH_DISCOUNT
            self.batch_usd += usd
        self.usd += usd

    def snapshot(self) -> dict:
        return {"billed": dict(self.totals), "billed_usd": self.usd, "billed_unpriced_models": list(self.unpriced),
                "billed_batch": dict(self.batch_totals), "billed_batch_usd": self.batch_usd}
