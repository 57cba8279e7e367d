"""Run pytest as if the [train] extra were not installed: importing torch, transformers, trl, peft,
accelerate or datasets raises ImportError (ModuleNotFoundError, as for a missing package).

Why: ``pytest -m "not train"`` must collect and pass on an install without the [train] extra, so no test
module and no synthkd module that a non-train test imports may import those at module level.  .ci/run
checks the collection this way (``-m "not train" --co``) on its full install; the whole not-train run
(``python scripts/pytest_without_torch.py -m "not train"``) checks the tests themselves.

Usage: python scripts/pytest_without_torch.py [pytest args...]
Subprocesses the tests start (the CLI) are not covered: they run in a fresh interpreter.
"""

from __future__ import annotations

import importlib.abc
import sys

BLOCKED = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by pytest_without_torch.py)",
                                      name=fullname)
        return None


def main(argv: list[str]) -> int:
    already = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    if already:
        print(f"already imported: {already}", file=sys.stderr)
        return 3
    sys.meta_path.insert(0, _Blocker())
    import pytest

    return int(pytest.main(argv))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
