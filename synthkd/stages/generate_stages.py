"""Old home of the ``generate.*`` stages' shared helpers (split into generate_rationales.py,
generate_promptmix.py, generate_relabel.py; helpers in generate_common.py).  Kept so that imports of
``_check_budget`` / ``_funnel`` from here keep working; import from generate_common instead."""

from synthkd.stages.generate_common import _check_budget, _funnel  # noqa: F401
