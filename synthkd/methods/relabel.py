"""Moved to :mod:`synthkd.labels` (label space, teacher classifier, confusion summary).

Kept only so modules not yet switched (synthkd/stages/generate_stages.py,
synthkd/commands/generate_promptmix.py) still import; it is the same module object.
Remove once they import synthkd.labels.
"""

import sys

from synthkd import labels as _moved

sys.modules[__name__] = _moved
