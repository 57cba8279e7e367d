"""pytest plugin (loaded by scripts/mutation.sh): add the hits of a test's CLI subprocesses.

See sitecustomize.py next to this file. Runs before mutmut's own teardown hook, which assigns
everything in mutmut's hit set to the test that just ran.
"""

import json
import os
from pathlib import Path

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    hits_dir = os.environ.get("SYNTHKD_MUTMUT_HITS")
    if os.environ.get("MUTANT_UNDER_TEST") != "stats" or not hits_dir:
        return
    from mutmut.state import state

    for f in Path(hits_dir).glob("*.json"):
        try:
            state()._stats.update(json.loads(f.read_text()))
        finally:
            f.unlink()
