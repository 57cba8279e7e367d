"""Moved to :mod:`synthkd.filters.chain` (the filter chain runner; synthkd/pipeline.py is the stage runner).

Kept only so modules not yet switched (synthkd/stages/clean_stage.py, synthkd/commands/clean.py) still import; it is the same module object.
Remove once they import synthkd.filters.chain.
"""

import sys

from synthkd.filters import chain as _moved

sys.modules[__name__] = _moved
