"""Token prices and exact cost accounting.

Costs are computed from integer token counts reported by the server (``usage``), never from estimates,
so the total a run reports is what the provider bills.  Users extend the table with a JSON or YAML file
(``--prices FILE`` or ``$SYNTHKD_PRICES``) mapping model name -> {"input": USD/1M, "output": USD/1M};
local servers (vLLM, Ollama) can be priced at 0.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from synthkd.errors import PriceTableError  # noqa: F401 (re-exported: their home was here)


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1_000_000


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
            table[model] = Price(float(entry["input"]), float(entry["output"]))
        except (TypeError, ValueError):
            raise PriceTableError(f"{source}: model {model!r}: 'input' and 'output' must be numbers") from None
    return table


def _load_file(path: Path) -> dict[str, Price]:
    if not path.exists():
        raise PriceTableError(f"{path}: price file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:  # F14: a clear error naming the file, not a traceback
        raise PriceTableError(f"{path}: price file is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise PriceTableError(f"{path}: cannot read price file: {exc.strerror or exc}") from None
    try:
        if path.suffix in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - report any parse error with the file name
        raise PriceTableError(f"{path}: cannot parse price file: {exc}") from None
    return _parse_entries(data, str(path))


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
