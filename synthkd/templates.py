"""Prompt templates as files: Jinja2 with strict variables, found by name or path, hashed for provenance.

Why files and strictness: a prompt is part of the experiment, so it lives in ``synthkd/prompts/`` under
version control (shipped in the wheel as package data; the repository's top-level ``prompts`` is a symlink
to it), every output row records the template's name and a hash of its text, and a variable with no
value is an error *before* any request (Jinja2's default would silently render an empty string and
you would pay for thousands of broken prompts).

Why a sandbox and a suffix rule: templates are shared as files (``prompts/``, ``$SYNTHKD_PROMPTS``, a
downloaded pipeline's ``template:``), so a template is *untrusted input*, not code. They render in
Jinja2's ``ImmutableSandboxedEnvironment``: no ``_``-prefixed attributes (``cycler.__init__.__globals__``,
``''.__class__.__mro__``), no mutating methods. A template that names such an attribute is refused
when it is loaded (before any request), and one that reaches it dynamically fails at its first render
with a :class:`TemplateError` naming the file. A template *file* must end in ``.j2``, ``.jinja`` or
``.jinja2`` and be UTF-8 text, so a key or config file (``secret.key``, ``~/.netrc``) cannot be sent to
the teacher as a prompt by mistake; a template *name* is looked up inside the prompt directories only
(``..`` and absolute names cannot escape them, nor can a symlink inside them that points outside).
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from synthkd.assets import prompts_dir
from synthkd.errors import TemplateError  # noqa: F401 (re-exported: their home was here)

TEMPLATE_SUFFIXES = (".j2", ".jinja", ".jinja2")


def prompt_dirs() -> list[Path]:
    """Where template names are looked up: $SYNTHKD_PROMPTS (colon-separated), then the shipped templates
    (``synthkd/prompts``, found with importlib.resources, so an installed wheel finds them too)."""
    dirs = [Path(p) for p in os.environ.get("SYNTHKD_PROMPTS", "").split(os.pathsep) if p]
    shipped = prompts_dir()
    return [*dirs, shipped] if shipped is not None else dirs


_ENV = ImmutableSandboxedEnvironment(
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
        except SecurityError as exc:  # before UndefinedError: the sandbox's refusal is a SecurityError
            raise TemplateError(f"{self._where()}: unsafe template refused by the sandbox: {exc}") from None
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"template {self.name!r}: {exc.message}") from None

    def _where(self) -> str:
        return f"template {self.name!r}" + (f" ({self.path})" if self.path else "")

    def provenance(self) -> dict[str, str]:
        return {"template": self.name, "template_sha": self.sha}


def _unsafe_attribute(tree: nodes.Template) -> tuple[int, str] | None:
    """The first ``x.__attr`` / ``x['_attr']`` / ``x|attr('_attr')`` in a parsed template, as (line, name).

    The sandbox refuses these at render time anyway; finding them statically makes the refusal happen when
    the template is loaded, before the first request, even for branches a dry render would not take.
    """
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        attr: Any
        if isinstance(node, nodes.Getattr):
            attr = node.attr
        elif isinstance(node, nodes.Getitem):
            attr = node.arg.value if isinstance(node.arg, nodes.Const) else None
        elif isinstance(node, nodes.Filter):
            attr = node.args[0].value if node.name == "attr" and node.args and isinstance(node.args[0], nodes.Const) else None
        else:  # find_all yields only the three kinds asked for
            continue
        if isinstance(attr, str) and attr.startswith("_"):
            return node.lineno, attr
    return None


def _check_template_file(c: Path) -> str:
    """The text of template file ``c``, or a TemplateError saying why it is not a template (see module doc)."""
    if c.suffix not in TEMPLATE_SUFFIXES:
        raise TemplateError(
            f"{c}: not a template file: a template must end in {', '.join(TEMPLATE_SUFFIXES)} "
            "(refused so that no other file's contents are sent to the teacher as a prompt)"
        )
    data = c.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise TemplateError(f"{c}: not a template file: not UTF-8 text")
    try:
        tree = _ENV.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{c}:{exc.lineno}: template syntax error: {exc.message}") from None
    bad = _unsafe_attribute(tree)
    if bad:
        raise TemplateError(
            f"{c}:{bad[0]}: unsafe template: attribute {bad[1]!r} (names starting with '_' reach Python "
            "internals; templates render in a sandbox and may only use the values they are given)"
        )
    return text


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def load_template(name_or_path: str | Path) -> PromptTemplate:
    """A template by file path, or by name (``rationale/cot`` -> ``prompts/rationale/cot.j2``).

    A path (absolute, with a suffix, or an existing file) is used as given but must be a template file;
    a name is looked up in :func:`prompt_dirs` and must resolve inside the directory it was found in.
    """
    p = Path(name_or_path)
    name = str(name_or_path)
    if (p.suffix or p.is_absolute() or p.exists()) and p.is_file():
        return PromptTemplate(name=p.stem, text=_check_template_file(p), path=p)
    for d in prompt_dirs():
        for c in (d / f"{name}.j2", d / name):
            if c.is_file():
                if not _inside(c, d):
                    raise TemplateError(f"template {name!r}: {c} lies outside the prompt directory {d}; refused")
                return PromptTemplate(name=name, text=_check_template_file(c), path=c)
    raise TemplateError(f"template {name!r} not found (looked in: {', '.join(str(d) for d in prompt_dirs())})")
