"""The default executor, ``inprocess`` (batches run one after another in this process).

Registered by reference: :mod:`audit_core.executors` (pydantic models, numpy) is imported only when
a run builds its executor, so ``audit --help`` and ``audit plugins`` stay light."""

from __future__ import annotations

from .. import lazy_exports
from ..plugin.hookspecs import hookimpl


@hookimpl
def register_executors(register):
    register("inprocess", "audit_core.run.executors:InProcessExecutor")


# ``from audit_core.builtins.executor import InProcessExecutor`` (where it used to live) keeps working
__getattr__ = lazy_exports("audit_core.run", ["InProcessExecutor"], "executors")
