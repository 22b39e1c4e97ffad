"""Old import paths of the flat ``audit_core`` (before the core moved into layered sub-packages):
``import audit_core.runner`` still works, warns ``DeprecationWarning: audit_core.runner moved to
audit_core.run.runner``, and gives THE SAME module object as the new path (so monkeypatching
through the old path reaches the real module). No file is left at an old path: a
``sys.meta_path`` finder, installed by ``audit_core/__init__.py``, maps each old name to its
module. ``audit_core.data``, ``audit_core.cli`` and ``audit_core.testing`` kept their names (they
are packages now). docs/architecture.md has the table."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module -> new module
MOVED = {
    **{f"audit_core.{m}": f"audit_core.base.{m}" for m in ("config", "ddim", "errors", "params", "records", "secrets", "seeding")},
    "audit_core.cache": "audit_core.data.cache",
    **{f"audit_core.{m}": f"audit_core.plugin.{m}" for m in ("attacks", "factory", "generators", "guard", "hookspecs", "lazyref", "targets")},
    "audit_core.plugins": "audit_core.plugin.manager",
    **{f"audit_core.{m}": f"audit_core.stats.{m}" for m in ("combine", "metrics", "rank_test", "results", "scorer")},
    **{f"audit_core.{m}": f"audit_core.copyright.{m}" for m in ("inference", "reference", "shift", "two_stage")},
    "audit_core.second_stage": "audit_core.copyright.rescore",
    **{
        f"audit_core.{m}": f"audit_core.run.{m}"
        for m in ("batching", "console", "defaults", "environment", "executors", "gallery", "preflight", "reporting", "rundir",
                  "runner", "store", "sweeps")
    },
    "audit_core.testkit": "audit_core.testing.toys",
}


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the line with the ``import``: past this module
    and importlib's own frames (which ``warnings`` skips without counting them)."""
    frame, level = sys._getframe(1), 1
    while frame is not None:
        name = frame.f_code.co_filename
        if "importlib" in name and "_bootstrap" in name:
            frame = frame.f_back
            continue
        if name != __file__ and "importlib" not in name:
            return level
        frame, level = frame.f_back, level + 1
    return 1


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old names in :data:`MOVED`; loading one returns the module at the new path."""

    def __init__(self) -> None:
        self._specs: dict[str, object] = {}  # old name -> the real module's own spec, while loading

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}", DeprecationWarning, stacklevel=_caller_level())
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module):
        # importlib has just set the alias's spec on the module: it keeps its own
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
