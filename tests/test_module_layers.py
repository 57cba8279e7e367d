"""The package's rooms and who may import whom, read from the source with ``ast`` (nothing is executed
except the few fresh-interpreter imports at the end).

Rooms (one job each):
* ``synthkd.teachers`` — talking to a teacher and feeding it jobs; imports no room above it;
* ``synthkd.methods`` — rows in, rows out over a teacher (generation methods);
* ``synthkd.filters`` — row-stream cleaning operators and the chain that runs them;
  methods and filters never import each other: what both need (the label space and classifier, a
  judge's score parser, teacher-list parsing, the near-duplicate pool) lives in neutral modules
  (``synthkd.labels``, ``synthkd.scores``, ``synthkd.teacher_lists``, ``synthkd.near_dup_pool``);
* ``synthkd.loops`` — multi-round loops that train and evaluate (may use methods, never stages);
* ``synthkd.stages`` — pipeline stage adapters; ``synthkd.stages.base`` is all they need and it
  never imports the runner (``synthkd.pipeline``), which loads the stage package only when it plans.
And: no module-level import cycle anywhere, and no module imports another module's private name.

``PENDING_*`` list what is left in modules other work owned when the rooms were set up (the stage and
command modules, complete.py, config.py): entries are removed as those modules are switched, and a
new one is a failure.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "synthkd"


def _name_of(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_name_of(p): p for p in sorted(PKG.rglob("*.py"))}
TREES: dict[str, ast.Module] = {m: ast.parse(p.read_text(encoding="utf-8"), str(p)) for m, p in MODULES.items()}

#: a package whose ``__init__`` imports every submodule at run time (invisible to ``ast``)
AUTOLOADING = {"synthkd.stages"}

#: old module path -> the module it now aliases (same module object), kept while these modules import it
SHIMS: dict[str, tuple[str, set[str]]] = {}

#: (importing module, imported module, private name) still to be made public by the module's owner
PENDING_PRIVATE: set[tuple[str, str, str]] = set()

#: stage modules that still import their vocabulary from the runner instead of synthkd.stages.base
PENDING_STAGES_FROM_PIPELINE: set[str] = set()


def _resolve(module: str, node: ast.Import | ast.ImportFrom) -> list[tuple[str, str | None]]:
    """(module imported, name imported from it or None) for one import statement."""
    if isinstance(node, ast.Import):
        return [(a.name, None) for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = module.split(".")
        if MODULES[module].name != "__init__.py":
            pkg.pop()
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    out: list[tuple[str, str | None]] = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append((sub, None) if sub in MODULES else (base, a.name))
    return out


def _imports(module: str, *, top_level_only: bool) -> list[tuple[str, str | None, int]]:
    """Every import of ``module`` (or only those run when it is imported: not in functions, not under
    ``if TYPE_CHECKING``) as (module, name, line)."""
    found: list[tuple[str, str | None, int]] = []

    def visit(stmts: list[ast.stmt]) -> None:
        for s in stmts:
            if isinstance(s, (ast.Import, ast.ImportFrom)):
                if not (isinstance(s, ast.ImportFrom) and s.module == "__future__"):
                    found.extend((m, n, s.lineno) for m, n in _resolve(module, s))
            elif isinstance(s, ast.If) and "TYPE_CHECKING" in ast.unparse(s.test):
                continue
            elif isinstance(s, (ast.If, ast.Try, ast.With)):
                for block in ("body", "orelse", "finalbody"):
                    visit(getattr(s, block, []))
                for h in getattr(s, "handlers", []):
                    visit(h.body)

    if top_level_only:
        visit(TREES[module].body)
    else:
        for node in ast.walk(TREES[module]):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not (
                    isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                found.extend((m, n, node.lineno) for m, n in _resolve(module, node))
    return found


def _in(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


def _violations(src_room: str, forbidden: tuple[str, ...], *, except_modules: set[str] = frozenset()) -> list[str]:
    bad = []
    for m in MODULES:
        if not _in(m, src_room) or m in except_modules:
            continue
        for target, _, line in _imports(m, top_level_only=False):
            if any(_in(target, f) for f in forbidden):
                bad.append(f"{MODULES[m].relative_to(REPO)}:{line}: imports {target}")
    return bad


# ----------------------------------------------------------------------------- the import graph
def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _, _ in _imports(m, top_level_only=True):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                dep = ".".join(parts[:i])
                if dep in MODULES and dep != m and not _in(m, dep):  # a submodule's own packages are set up first
                    graph[m].add(dep)
    for pkg in AUTOLOADING:
        graph[pkg] |= {m for m in MODULES if m.startswith(pkg + ".") and m.count(".") == pkg.count(".") + 1}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:  # Tarjan, iterative enough for this package's depth
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_graph_sees_the_imports():
    # the parser finds module-level imports, relative ones and submodules imported by name
    g = _graph()
    assert "synthkd.labels" in g["synthkd.methods.promptmix"]
    assert "synthkd.teachers.jobs" in g["synthkd.methods.label_tasks"]
    assert "synthkd.filters.base" in g["synthkd.filters.judge"]
    assert "synthkd.stages.base" in g["synthkd.stages"]  # the autoloading package
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_level_import_cycle():
    assert _cycles(_graph()) == []


def test_the_runner_loads_the_stage_package_only_when_it_plans():
    top = [t for t, _, _ in _imports("synthkd.pipeline", top_level_only=True)]
    assert not [t for t in top if _in(t, "synthkd.stages")], top
    anywhere = [t for t, _, _ in _imports("synthkd.pipeline", top_level_only=False)]
    assert "synthkd.stages.base" in anywhere  # lazily, inside the functions that plan and estimate


def test_stage_base_needs_neither_the_runner_nor_other_stages():
    targets = [t for t, _, _ in _imports("synthkd.stages.base", top_level_only=False)]
    assert not [t for t in targets if _in(t, "synthkd.pipeline") or (_in(t, "synthkd.stages") and t != "synthkd.stages.base")]


def test_stage_modules_import_the_runner_only_where_not_yet_switched():
    users = {m for m in MODULES if _in(m, "synthkd.stages")
             and any(_in(t, "synthkd.pipeline") for t, _, _ in _imports(m, top_level_only=False))}
    assert users <= PENDING_STAGES_FROM_PIPELINE, users - PENDING_STAGES_FROM_PIPELINE


def test_filters_never_import_methods():
    assert _violations("synthkd.filters", ("synthkd.methods", "synthkd.loops")) == []


def test_methods_never_import_filters_loops_stages_or_the_runner():
    forbidden = ("synthkd.filters", "synthkd.loops", "synthkd.stages", "synthkd.commands", "synthkd.pipeline",
                 "synthkd.cli")
    assert _violations("synthkd.methods", forbidden) == []


def test_teachers_import_no_room_above_them():
    # (the local teacher loads its model with synthkd.train.student: the trainer's loader, not a room above)
    forbidden = ("synthkd.methods", "synthkd.filters", "synthkd.loops", "synthkd.stages", "synthkd.commands",
                 "synthkd.pipeline", "synthkd.cli", "synthkd.labels")
    assert _violations("synthkd.teachers", forbidden) == []


def test_neutral_modules_import_neither_methods_nor_filters():
    for m in ("synthkd.labels", "synthkd.scores", "synthkd.teacher_lists", "synthkd.near_dup_pool"):
        assert _violations(m, ("synthkd.methods", "synthkd.filters", "synthkd.loops", "synthkd.stages",
                               "synthkd.pipeline", "synthkd.commands")) == [], m


def test_loops_never_import_stages_commands_or_the_runner():
    assert _violations("synthkd.loops", ("synthkd.stages", "synthkd.commands", "synthkd.pipeline", "synthkd.cli")) == []


def test_no_module_imports_another_modules_private_name():
    found = set()
    for m in MODULES:
        for target, name, _ in _imports(m, top_level_only=False):
            if name and name.startswith("_") and not name.startswith("__") and _in(target, "synthkd") and target != m:
                found.add((m, target, name))
    assert found <= PENDING_PRIVATE, sorted(found - PENDING_PRIVATE)


def test_old_module_paths_are_only_aliases_and_only_pending_modules_use_them():
    for old, (_new, pending) in SHIMS.items():
        assert old in MODULES, old
        assert ["sys.modules[__name__] = _moved"] == [ast.unparse(s) for s in TREES[old].body
                                                      if isinstance(s, ast.Assign)], old
        users = {m for m in MODULES if m != old and any(t == old for t, _, _ in _imports(m, top_level_only=False))}
        assert users <= pending, (old, users - pending)


# ----------------------------------------------------------------------------- fresh interpreters
# Each import in a new interpreter: what a cycle would break depends on which module comes first.
FRESH = ["synthkd.stages.base", "synthkd.pipeline", "synthkd.stages.clean", "synthkd.labels",
         "synthkd.filters.relabel", "synthkd.methods.label_tasks", "synthkd.loops.tailored"]


@pytest.mark.parametrize("module", FRESH)
def test_each_module_imports_first_in_a_fresh_interpreter(module):
    code = (f"import importlib, sys; importlib.import_module({module!r}); "
            "import synthkd.pipeline as p; from synthkd.stages import base; "
            "assert p.StageContext is base.StageContext and p.register_stage is base.register_stage")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_old_paths_are_the_moved_modules():
    code = "; ".join(["import importlib"] + [
        f"assert importlib.import_module({old!r}) is importlib.import_module({new!r}), {old!r}"
        for old, (new, _) in SHIMS.items()])
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
