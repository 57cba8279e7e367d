"""Moved to :mod:`synthkd.filters.op_config` (the operator registry and cleaning config; synthkd/config.py is the pipeline config).

Kept only so modules not yet switched (synthkd/stages/clean_stage.py, synthkd/commands/clean.py; tests/test_errors.py checks its ConfigError re-export) still import; it is the same module object.
Remove once they import synthkd.filters.op_config.
"""

import sys

from synthkd.filters import op_config as _moved

sys.modules[__name__] = _moved
