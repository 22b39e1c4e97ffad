"""A pytest fixture kit for plugin authors (loaded automatically through the ``pytest11`` entry
point of audit-core).

Loading it costs nothing: torch, numpy and the CLI are imported inside the fixtures and helpers
that need them (the toy targets and formula helpers live in :mod:`audit_core.testkit` and are
imported from here on first use). Switch it off with ``pytest -p no:audit``.

Fixtures:
- ``register_plugin``: register an in-memory plugin (a module or an object with @hookimpl
  functions) for one test; it is unregistered afterwards.
- ``isolated_plugins``: the test sees only the core's built-ins and the plugins it registers
  itself (every installed plugin is hidden for the test, restored afterwards).
- ``toy_plugin``: registers the ``toy`` and ``toy-variation`` targets.
- ``toy_target``: a tiny grey-box target whose noise predictor you control.
- ``image_folder``: writes small PNG images into a folder.
- ``audit_cli``: runs the ``audit`` CLI in-process and returns ``(exit_code, output)``.
- ``write_config``: writes an audit.yaml from a dict and returns its path.
- ``toy_run_config``: ``toy_run_config(attacks, target="toy", **run)`` writes a small audit.yaml
  (4 + 4 images, toy target, cache off) for ``audit run`` tests of an attack plugin.
- ``one_torch_thread``: torch on one intra-op thread for the test (tiny tensors on a shared CPU
  only lose time to more threads); use it with ``pytestmark = pytest.mark.usefixtures(...)``.

Helpers: ``make_attack(cls, target, **params)`` (an attack built and checked as the runner builds
it), ``FakeLatentTarget`` (a latent grey-box target with a non-linear, caption-dependent noise
predictor) and its numpy twin ``fake_latent_eps``, ``abar_linear``/``abar_scaled`` (the two
usual schedules computed in plain Python), ``make_batch``, ``write_images``, ``registered``,
``plugin_of``, ``invoke``, ``no_traceback`` and ``assert_batch_size_independent``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

#: names served by audit_core.testkit (imported on first use: it imports torch)
_KIT = (
    "ToyParams", "ToyTarget", "VariationOnlyTarget", "ToyPlugin", "write_images", "FakeLatentTarget",
    "fake_latent_eps", "abar_linear", "abar_scaled", "make_batch", "assert_batch_size_independent",
    "make_attack", "T_DEFAULT",
)


def __getattr__(name: str) -> Any:
    if name in _KIT:
        from . import toys as testkit

        return getattr(testkit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def plugin_of(kind: str, *items: Any) -> Any:
    """An in-memory plugin whose ``register_<kind>`` hook registers each item: a class, or a
    tuple of ``register``'s arguments (``("my-l2", fn)`` for a distance, ``("name", "module:Class")``
    by reference). Pass it to ``register_plugin`` or :func:`registered`."""
    from ..plugin.hookspecs import hookimpl

    class InMemoryPlugin:
        pass

    def hook(self, register):
        for item in items:
            register(*item) if isinstance(item, tuple) else register(item)

    hook.__name__ = f"register_{kind}"
    setattr(InMemoryPlugin, hook.__name__, hookimpl(hook))
    return InMemoryPlugin()


@contextlib.contextmanager
def registered(plugin: Any, name: str | None = None) -> Iterator[Any]:
    """Register ``plugin`` with the audit plugin manager for the duration of the block. A
    hookimpl that matches no hook (a typo) raises ``PluginError`` naming the closest hook."""
    from ..plugin.manager import load_plugins, pm, validate_plugin

    load_plugins()
    validate_plugin(plugin, name or repr(plugin))
    pname = pm.register(plugin, name=name)
    try:
        yield plugin
    finally:
        if pm.get_plugin(pname) is not None:  # a broken plugin was already disabled (unregistered)
            pm.unregister(name=pname)


def invoke(args: list[str]) -> tuple[int, str]:
    """Run the CLI in-process: ``(exit code, stdout + stderr)``."""
    from ..cli import main

    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue()


def no_traceback(output: str) -> bool:
    return "Traceback (most recent call last)" not in output


@pytest.fixture
def register_plugin() -> Iterator[Callable[..., Any]]:
    stack = contextlib.ExitStack()

    def _register(plugin: Any, name: str | None = None) -> Any:
        return stack.enter_context(registered(plugin, name))

    with stack:
        yield _register


@pytest.fixture
def isolated_plugins() -> Iterator[None]:
    """Hide every installed plugin for the test (the core's built-ins stay): the test sees only
    what it registers with ``register_plugin``. Use it before ``register_plugin``/``toy_plugin``
    in the fixture list."""
    from ..plugin.manager import isolated

    with isolated():
        yield


@pytest.fixture
def toy_plugin(register_plugin) -> Any:
    from .toys import ToyPlugin

    return register_plugin(ToyPlugin(), name="toy-targets")


@pytest.fixture
def toy_target() -> Any:
    from .toys import ToyParams, ToyTarget

    return ToyTarget(ToyParams())


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    def _make(name: str = "images", n: int = 8, size: int = 8, channels: int = 1, seed: int = 0) -> Path:
        from .toys import write_images

        folder = tmp_path / name
        write_images(folder, n, size, channels, seed)
        return folder

    return _make


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict], Path]:
    def _write(cfg: dict, name: str = "audit.yaml") -> Path:
        import yaml

        p = tmp_path / name
        p.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        return p

    return _write


@pytest.fixture
def toy_run_config(toy_plugin, image_folder, write_config) -> Callable[..., Path]:
    """``toy_run_config(attacks, target="toy", **run)``: an audit.yaml over 4 + 4 small images on
    a toy target (cache off, 20 bootstrap resamples); ``run`` keys override the run section
    (name, seed 3, cpu, batch size 3)."""
    members = image_folder("members", n=4, seed=1)
    nonmembers = image_folder("nonmembers", n=4, seed=2)

    def make(attacks: list[dict], target: str = "toy", **run: Any) -> Path:
        return write_config({
            "run": {"name": "test", "seed": 3, "device": "cpu", "batch_size": 3, **run},
            "target": {"plugin": target},
            "data": {"members": str(members), "nonmembers": str(nonmembers)},
            "attacks": attacks,
            "cache": {"enabled": False},
            "metrics": {"bootstrap": 20},
        })

    return make


@pytest.fixture
def audit_cli() -> Callable[..., tuple[int, str]]:
    return lambda *args: invoke(list(args))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread for the test (restored afterwards)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


__all__ = [*_KIT, "registered", "invoke", "no_traceback"]
