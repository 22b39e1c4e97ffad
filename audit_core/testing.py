"""A pytest fixture kit for plugin authors (loaded automatically through the ``pytest11`` entry
point of audit-core).

Fixtures:
- ``register_plugin``: register an in-memory plugin (a module or an object with @hookimpl
  functions) for one test; it is unregistered afterwards.
- ``toy_target``: a tiny grey-box target whose noise predictor you control.
- ``image_folder``: writes small PNG images into a folder.
- ``audit_cli``: runs the ``audit`` CLI in-process and returns ``(exit_code, output)``.
- ``write_config``: writes an audit.yaml from a dict and returns its path.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from pydantic import BaseModel, ConfigDict

from . import hookimpl
from .targets import NOISE, VARIATION, Target, TargetContext


class ToyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    image_size: int = 8
    channels: int = 1
    scale: float = 0.5  # eps(x, t) = scale * x + shift * t / T
    shift: float = 0.0
    num_train_timesteps: int = 1000
    variation_only: bool = False


class ToyTarget(Target):
    """A grey-box pixel target with a closed-form noise predictor ``eps(x, t) = scale * x +
    shift * t / T`` and the linear DDPM schedule (betas 1e-4 .. 0.02). Cheap, exact, and its NFEs
    are counted like a real U-Net's."""

    name = "toy"
    kind = "pixel"
    capabilities = frozenset({VARIATION, NOISE})
    Params = ToyParams

    def __init__(self, params: ToyParams, context: TargetContext | None = None):
        super().__init__(params, context)
        self.image_size = params.image_size
        self.channels = params.channels
        self.num_train_timesteps = params.num_train_timesteps
        betas = torch.linspace(1e-4, 0.02, params.num_train_timesteps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)
        self.eps_calls: list[tuple[int, int]] = []  # (rows, t) of every call

    def eps(self, z_t, t, captions=None):
        self.stats.nfe += z_t.shape[0]
        self.eps_calls.append((z_t.shape[0], int(t)))
        return self.params.scale * z_t + self.params.shift * (int(t) / self.num_train_timesteps)


class VariationOnlyTarget(ToyTarget):
    """The same model behind a variation API only (black-box)."""

    name = "toy-variation"
    capabilities = frozenset({VARIATION})

    def nfe_per_query(self, t: int, k: int) -> int:
        return t // k


class ToyPlugin:
    """Registers the toy targets; use with the ``register_plugin`` fixture."""

    @hookimpl
    def register_targets(self, register):
        register(ToyTarget)
        register(VariationOnlyTarget)


def write_images(folder: Path, n: int, size: int = 8, channels: int = 1, seed: int = 0, prefix: str = "img") -> list[Path]:
    """``n`` random PNG images of ``size`` x ``size`` in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        shape = (size, size) if channels == 1 else (size, size, channels)
        arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
        p = folder / f"{prefix}{i:04d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


@contextlib.contextmanager
def registered(plugin: Any, name: str | None = None) -> Iterator[Any]:
    """Register ``plugin`` with the audit plugin manager for the duration of the block."""
    from .plugins import check_pending, load_plugins, pm

    load_plugins()
    pname = pm.register(plugin, name=name)
    try:
        check_pending()
        yield plugin
    finally:
        pm.unregister(name=pname)


def invoke(args: list[str]) -> tuple[int, str]:
    """Run the CLI in-process: ``(exit code, stdout + stderr)``."""
    from .cli import main

    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue()


@pytest.fixture
def register_plugin() -> Iterator[Callable[..., Any]]:
    stack = contextlib.ExitStack()

    def _register(plugin: Any, name: str | None = None) -> Any:
        return stack.enter_context(registered(plugin, name))

    with stack:
        yield _register


@pytest.fixture
def toy_plugin(register_plugin) -> ToyPlugin:
    return register_plugin(ToyPlugin(), name="toy-targets")


@pytest.fixture
def toy_target() -> ToyTarget:
    return ToyTarget(ToyParams())


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    def _make(name: str = "images", n: int = 8, size: int = 8, channels: int = 1, seed: int = 0) -> Path:
        folder = tmp_path / name
        write_images(folder, n, size, channels, seed)
        return folder

    return _make


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict], Path]:
    def _write(cfg: dict, name: str = "audit.yaml") -> Path:
        p = tmp_path / name
        p.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        return p

    return _write


@pytest.fixture
def audit_cli() -> Callable[..., tuple[int, str]]:
    return lambda *args: invoke(list(args))


def no_traceback(output: str) -> bool:
    return "Traceback (most recent call last)" not in output


__all__ = [
    "ToyTarget", "VariationOnlyTarget", "ToyPlugin", "ToyParams", "write_images", "registered", "invoke",
    "no_traceback",
]
