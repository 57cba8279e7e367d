"""Prompt templates as files: Jinja2 with strict variables, found by name or path, hashed for provenance.

Why files and strictness: a prompt is part of the experiment, so it lives in ``prompts/`` under version
control, every output row records the template's name and a hash of its text, and a variable with no
value is an error *before* any request (Jinja2's default would silently render an empty string and
you would pay for thousands of broken prompts).
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import jinja2
from jinja2 import meta

REPO_PROMPTS = Path(__file__).resolve().parents[1] / "prompts"


class TemplateError(ValueError):
    pass


def prompt_dirs() -> list[Path]:
    """Where template names are looked up: $SYNTHKD_PROMPTS (colon-separated), then the repo's prompts/."""
    dirs = [Path(p) for p in os.environ.get("SYNTHKD_PROMPTS", "").split(os.pathsep) if p]
    return [*dirs, REPO_PROMPTS]


_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=False,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)


@functools.lru_cache(maxsize=256)
def _compiled(text: str) -> jinja2.Template:
    """Compile once per template text (compiling costs ~1 ms; rendering a compiled one ~20 µs)."""
    return _ENV.from_string(text)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str
    path: Path | None = None

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]

    @property
    def variables(self) -> set[str]:
        return set(meta.find_undeclared_variables(_ENV.parse(self.text)))

    def check(self, provided: Iterable[str], where: str = "") -> None:
        """Fail now, naming the missing variables, if ``provided`` cannot fill this template."""
        missing = sorted(self.variables - set(provided))
        if missing:
            raise TemplateError(
                f"{where + ': ' if where else ''}template {self.name!r} needs variable(s) {', '.join(missing)} "
                "that are not given"
            )

    def render(self, **values: Any) -> str:
        try:
            return _compiled(self.text).render(**values).strip()
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"template {self.name!r}: {exc.message}") from None

    def provenance(self) -> dict[str, str]:
        return {"template": self.name, "template_sha": self.sha}


def load_template(name_or_path: str | Path) -> PromptTemplate:
    """A template by file path, or by name (``rationale/cot`` -> ``prompts/rationale/cot.j2``)."""
    p = Path(name_or_path)
    candidates = [p] if p.suffix or p.is_absolute() or p.exists() else []
    name = str(name_or_path)
    for d in prompt_dirs():
        candidates += [d / f"{name}.j2", d / name]
    for c in candidates:
        if c.is_file():
            text = c.read_text(encoding="utf-8")
            try:
                _ENV.parse(text)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"{c}:{exc.lineno}: template syntax error: {exc.message}") from None
            return PromptTemplate(name=c.stem if c == p else name, text=text, path=c)
    raise TemplateError(f"template {name!r} not found (looked in: {', '.join(str(d) for d in prompt_dirs())})")
