"""audit-core: membership-inference audits of diffusion models, extended by pluggy plugins.

``__all__`` is the public plugin API (see :mod:`audit_core.api` and the "Utilities" section
of docs/writing-plugins.md). Only ``hookimpl`` is imported eagerly; the rest (torch included)
loads on first use, so ``audit --version`` and the pytest plugin stay fast.
"""

from . import _compat
from .base.version import __version__
from .plugin.hookspecs import hookimpl

_compat.install()  # old import paths (audit_core.runner, ...) keep working, with a DeprecationWarning

__all__ = [
    "__version__",
    # hooks, and a torch-free plugin package
    "hookimpl", "lazy_exports",
    # attacks
    "Attack", "AttackParams", "AttackContext", "AttackOutput", "Batch", "flat_sum", "mean_over",
    # targets
    "Target", "TargetParams", "TargetContext", "Stats", "VARIATION", "NOISE", "GRADIENTS", "TEXT", "weights_sha256",
    # the maths and the randomness
    "ddim", "seeding", "randn", "derive_seed",
    # reporters and executors
    "Reporter", "ReporterParams", "RunView", "Executor", "ExecutorParams", "Job", "WorkBatch", "BatchResult",
    "execute_batch", "build_local",
    # data and paths
    "ImageRecord", "resolve_path",
    # errors: AuditError and subclasses are bad input (exit 2); PluginFailure a plugin's bug (exit 1)
    "AuditError", "ConfigError", "DataError", "PluginError", "AccessError", "ModelError", "PluginFailure",
    # what the shipped plugins use besides (tests/test_public_imports.py keeps them to this list)
    # ... target helpers: weights on disk, device and dtype, latent targets, generators
    "PICKLE_SUFFIXES", "pipeline_folder", "require_weights", "resolve_device", "resolve_dtype", "VaeLatentTarget",
    "Generator", "GeneratorParams", "build_generator",
    # ... images: decoding, 16-bit modes, tensors, base64 PNG (the http wire format)
    "to_tensor", "to_8bit", "SIXTEEN_BIT_MODES", "tensor_to_uint8", "png_b64", "b64_bytes",
    # ... statistics, secrets, config values, results
    "metrics", "calibration_split", "CombiningAttack", "secrets", "parse_value", "load_yaml", "LABEL_NAMES",
    "SET_INFERENCE_BLOCKS", "queries_curve", "thumbnail_path",
    # ... the atomic writers (temporary file, fsync, rename; write_text: text, registered secrets scrubbed;
    # atomic_write: bytes or text as given); a warning printed once
    "write_text", "atomic_write", "warn",
    # ... the one factory every plugin object is made through (lookup, defaults and presets, strict params)
    "build_plugin",
]


def lazy_exports(package: str, names: list[str], module: str):
    """A module ``__getattr__`` for a plugin package: each of ``names`` loads from the submodule
    ``module`` on first use, so entry-point discovery (which imports the package) stays
    torch-free and ``audit --help`` starts fast. Use: ``__getattr__ = lazy_exports(__name__,
    __all__, "attack")``."""
    import importlib

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


_MODULES = {"ddim": ".base.ddim", "seeding": ".base.seeding", "secrets": ".base.secrets", "metrics": ".stats.metrics"}
#: names that load without torch (a plugin's registration module imports them at discovery time)
_LIGHT = {
    **dict.fromkeys(("AuditError", "ConfigError", "DataError", "PluginError", "AccessError", "ModelError", "PluginFailure"), ".base.errors"),
    "ImageRecord": ".base.records", "LABEL_NAMES": ".base.records", "SET_INFERENCE_BLOCKS": ".base.records",
    "resolve_path": ".base.config", "parse_value": ".base.config", "load_yaml": ".base.config", "warn": ".base.terminal",
    "build_plugin": ".plugin.factory",
    "atomic_write": ".base.atomic",
}


def __getattr__(name: str):
    if name in _MODULES:  # submodules: `from . import seeding` must not load the whole API
        import importlib

        return importlib.import_module(_MODULES[name], __name__)
    if name in _LIGHT:
        import importlib

        return getattr(importlib.import_module(_LIGHT[name], __name__), name)
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
