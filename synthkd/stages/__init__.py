"""Pipeline stage kinds: thin adapters from a YAML stage to the library function that does the work.

Each module registers its kinds with :func:`synthkd.stages.base.register_stage`; importing this package
registers them all.  A module whose optional dependencies are missing (training without the
``[train]`` extra) is skipped, so its kinds are reported as unknown with the known ones listed.
"""

import importlib
import pkgutil

_OPTIONAL = {"torch", "transformers", "trl", "peft", "datasets", "accelerate"}

for _mod in pkgutil.iter_modules(__path__):
    try:
        importlib.import_module(f"{__name__}.{_mod.name}")
    except ModuleNotFoundError as _exc:
        if (_exc.name or "").split(".")[0] not in _OPTIONAL:
            raise
