"""Moved to :mod:`synthkd.methods.task_kinds` (task kinds: class TaskSpec is now TaskKind).

Kept only so modules not yet switched (synthkd/stages/generate_stages.py, synthkd/stages/preference_stages.py, synthkd/commands/generate_rationales.py,
synthkd/commands/generate_preferences.py; tests/test_errors.py checks its GoldError re-export) still import; it is the same module object.
Remove once they import synthkd.methods.task_kinds.
"""

import sys

from synthkd.methods import task_kinds as _moved

sys.modules[__name__] = _moved
