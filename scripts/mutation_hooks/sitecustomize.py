"""Let mutmut see which tests reach mutated code through a CLI subprocess.

scripts/mutation.sh puts this directory on PYTHONPATH. mutmut records "test -> function" hits in
the pytest process only; our CLI tests start `python -m synthkd.cli` (with cli_env(), which keeps
PYTHONPATH), so without this hook a function reached only through the CLI has "no tests" and one
reached both ways is only run against the in-process tests. During mutmut's stats run
(MUTANT_UNDER_TEST=stats) a subprocess here preloads mutmut's config from the copy's root (its cwd
is usually a tmp dir, where mutmut could not find it) and, at exit, writes the functions it hit to
$SYNTHKD_MUTMUT_HITS; mutmut_subprocess_stats.py (a pytest plugin) folds them into the test that
was running. A subprocess killed by SIGKILL loses its hits; its test still counts through the
rerun that follows in every such test. Does nothing outside a mutmut stats run.
"""

import os

if os.environ.get("MUTANT_UNDER_TEST") == "stats" and os.environ.get("SYNTHKD_MUTMUT_HITS"):
    import atexit
    import json

    _root = os.environ["SYNTHKD_MUTMUT_ROOT"]
    _here = os.getcwd()
    try:
        os.chdir(_root)
        from mutmut.configuration import config as _config

        _config()
    finally:
        os.chdir(_here)

    def _dump_hits() -> None:
        from mutmut.state import state

        hits = sorted(state()._stats)
        if hits:
            path = os.path.join(os.environ["SYNTHKD_MUTMUT_HITS"], f"{os.getpid()}.json")
            with open(path + ".tmp", "w") as f:
                json.dump(hits, f)
            os.replace(path + ".tmp", path)

    atexit.register(_dump_hits)
