"""The hook implementation of audit-ray (entry point ``audit = ray``): the ``ray`` executor.

Selected in audit.yaml with ``run: {executor: {plugin: ray, workers: 2}}`` (see ``executor.py``
for every parameter). Registered by reference, so the executor module (pydantic models, Ray
itself) is imported only when a config selects it.
"""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_executors(register):
    register("ray", "audit_ray.executor:RayExecutor")


def __getattr__(name: str):
    """``from audit_ray.plugin import RayExecutor`` (where it used to live) keeps working."""
    if name in ("RayExecutor", "RayParams"):
        from . import executor

        return getattr(executor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
