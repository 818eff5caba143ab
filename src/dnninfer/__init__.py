"""dnninfer: fast, cheap DNN inference on heterogeneous hardware.

The public API lives in `dnninfer.api` and is re-exported here lazily (PEP 562 module
``__getattr__``): ``import dnninfer`` and ``dnninfer --help`` import neither torch nor fastapi;
the first use of a verb (``dnninfer.partition(...)``) imports what it needs.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__version__ = "0.1.0"

#: Names served from dnninfer.api on first access.
_API = frozenset({
    "BinaryConfig", "CBNetConfig", "CBNetResult", "DPRAConfig", "MemoryPlanResult", "Model", "Partition",
    "RNSConfig", "Schedule", "Server", "SignedBinaryConfig", "TernaryConfig",
    "capture", "cbnet", "compare_partitions", "dpra_simulate", "load", "partition", "plan_memory", "profile_cluster",
    "quantize",
    "rnsify", "schedule", "serve",
})


class _Package(types.ModuleType):
    """The package module. Two verbs share their names with subpackages (``dnninfer.partition``,
    ``dnninfer.schedule``); importing a subpackage binds it on the package, so the API's names are
    resolved first here. Subpackages stay importable by their full names (``from
    dnninfer.partition.plan import Plan``), which is how the package uses them internally."""

    def __getattribute__(self, name: str) -> Any:
        if name in _API:
            from dnninfer import api

            return getattr(api, name)
        return super().__getattribute__(name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | _API)


sys.modules[__name__].__class__ = _Package
