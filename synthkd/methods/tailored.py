"""Moved to :mod:`synthkd.loops.tailored` (the tailored multi-round loop trains and evaluates: not a method).

Kept only so modules not yet switched (synthkd/stages/tailor_stage.py, synthkd/commands/tailor.py)
still import; it is the same module object (attribute reads and monkeypatches reach the real one).
Remove once they import synthkd.loops.tailored.
"""

import sys

from synthkd.loops import tailored as _moved

sys.modules[__name__] = _moved
