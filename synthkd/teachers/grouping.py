"""Moved to :mod:`synthkd.teachers.jobs` (jobs fed to a teacher).

Kept only so modules not yet switched (synthkd/complete.py) still import; it is the same module object.
Remove once they import synthkd.teachers.jobs.
"""

import sys

from synthkd.teachers import jobs as _moved

sys.modules[__name__] = _moved
