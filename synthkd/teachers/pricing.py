"""Token prices and exact cost accounting.

Costs are computed from integer token counts reported by the server (``usage``), never from estimates,
so the total a run reports is what the provider bills.  Users extend the table with a JSON or YAML file
(``--prices FILE`` or ``$SYNTHKD_PRICES``) mapping model name -> {"input": USD/1M, "output": USD/1M},
optionally with ``"cached_input"`` (prompt tokens read from the provider's prompt cache: OpenAI's
``cached_tokens``, DeepSeek's ``prompt_cache_hit_tokens``, Anthropic's ``cache_read_input_tokens``) and
``"cache_write"`` (Anthropic's ``cache_creation_input_tokens``), both defaulting to ``input``,
``"batch_input"``/``"batch_output"`` (the Batch API's prices, default half the online ones: both providers
charge 50% in batches), and ``"as_of"`` (the date the price was read).  Reasoning tokens are output tokens and priced as such
(every provider counts them in ``completion_tokens``/``output_tokens``).  Local servers (vLLM, Ollama)
can be priced at 0.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from synthkd.errors import PriceTableError
from synthkd.teachers.table_file import read_table_file  # noqa: F401 (re-exported: their home was here)


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens of each billed class; ``None`` for the cache classes means the input price."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None
    #: the Batch API's prices (``"batch_input"``/``"batch_output"``); None: the online price x BATCH_DISCOUNT
    batch_input_per_mtok: float | None = None
    batch_output_per_mtok: float | None = None

    def batch(self) -> "Price":
        """The price of the provider's Batch API (OpenAI Batch, Anthropic Message Batches): every token
        class at ``BATCH_DISCOUNT`` (half) of its online price unless the table gives batch prices."""
        def half(v: float | None) -> float | None:
            return None if v is None else v * BATCH_DISCOUNT

        inp = self.batch_input_per_mtok if self.batch_input_per_mtok is not None else self.input_per_mtok * BATCH_DISCOUNT
        out = self.batch_output_per_mtok if self.batch_output_per_mtok is not None else self.output_per_mtok * BATCH_DISCOUNT
        scale = inp / self.input_per_mtok if self.input_per_mtok else BATCH_DISCOUNT
        cached = None if self.cached_input_per_mtok is None else self.cached_input_per_mtok * scale
        write = None if self.cache_write_per_mtok is None else self.cache_write_per_mtok * scale
        return Price(inp, out, cached, write, inp, out)

    def cost(self, prompt_tokens: int, completion_tokens: int, *, cached_tokens: int = 0,
             cache_write_tokens: int = 0) -> float:
        """The bill for one answer; ``cached_tokens`` and ``cache_write_tokens`` are parts of ``prompt_tokens``."""
        cached_rate = self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        write_rate = self.input_per_mtok if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        plain = max(0, prompt_tokens - cached_tokens - cache_write_tokens)
        return (plain * self.input_per_mtok + cached_tokens * cached_rate + cache_write_tokens * write_rate
                + completion_tokens * self.output_per_mtok) / 1_000_000

    def cost_of(self, usage: Any) -> float:
        """The bill for a :class:`synthkd.teachers.base.Usage` (cached and cache-write tokens at their rates)."""
        return self.cost(usage.prompt_tokens, usage.completion_tokens, cached_tokens=usage.cached_tokens,
                         cache_write_tokens=usage.cache_write_tokens)


#: the optional prices of an entry (USD per 1M tokens): prompt-cache reads and writes (default: the input
#: price), and the Batch API's input and output (default: the online price x BATCH_DISCOUNT)
_CACHE_FIELDS = ("cached_input", "cache_write", "batch_input", "batch_output")

#: what the Batch APIs charge of the online price: "50% cost discount" (OpenAI), "All usage is charged at
#: 50% of the standard API prices" (Anthropic); see ../shared/api_reference.md 2.7 and 3.4
BATCH_DISCOUNT = 0.5


def _parse_entries(data: Any, source: str) -> dict[str, Price]:
    if not isinstance(data, dict):
        raise PriceTableError(f"{source}: expected a mapping of model name -> {{input, output}}")
    table: dict[str, Price] = {}
    for model, entry in data.items():
        if model.startswith("_"):
            continue
        if not isinstance(entry, dict) or not {"input", "output"} <= set(entry):
            raise PriceTableError(f"{source}: model {model!r}: needs fields 'input' and 'output' (USD per 1M tokens)")
        try:
            base = (float(entry["input"]), float(entry["output"]))
        except (TypeError, ValueError):
            raise PriceTableError(f"{source}: model {model!r}: 'input' and 'output' must be numbers") from None
        try:
            optional = [None if entry.get(k) is None else float(entry[k]) for k in _CACHE_FIELDS]
        except (TypeError, ValueError):
            raise PriceTableError(f"{source}: model {model!r}: 'cached_input', 'cache_write', 'batch_input' and "
                                  "'batch_output' must be numbers when given") from None
        table[model] = Price(*base, *optional)  # other fields (as_of, notes) are for people
    return table


def _load_file(path: Path) -> dict[str, Price]:
    return _parse_entries(read_table_file(path, "price file", PriceTableError), str(path))


class PriceTable:
    """Model -> price, by exact name or longest matching prefix."""

    def __init__(self, prices: dict[str, Price] | None = None) -> None:
        self._prices = dict(prices or {})

    @classmethod
    def default(cls, extra_file: str | Path | None = None) -> "PriceTable":
        builtin = json.loads(resources.files("synthkd").joinpath("data/prices.json").read_text())
        table = _parse_entries(builtin, "synthkd/data/prices.json")
        env_file = os.environ.get("SYNTHKD_PRICES")
        for f in (env_file, extra_file):
            if f:
                table.update(_load_file(Path(f)))
        return cls(table)

    def set(self, model: str, input_per_mtok: float, output_per_mtok: float) -> None:
        self._prices[model] = Price(input_per_mtok, output_per_mtok)

    def lookup(self, model: str) -> Price | None:
        if model in self._prices:
            return self._prices[model]
        best = None
        for name in self._prices:
            if model.startswith(name) and (best is None or len(name) > len(best)):
                best = name
        return self._prices[best] if best else None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self.lookup(model)
        return None if price is None else price.cost(prompt_tokens, completion_tokens)
