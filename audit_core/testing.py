"""A pytest fixture kit for plugin authors (loaded automatically through the ``pytest11`` entry
point of audit-core).

Fixtures:
- ``register_plugin``: register an in-memory plugin (a module or an object with @hookimpl
  functions) for one test; it is unregistered afterwards.
- ``toy_target``: a tiny grey-box target whose noise predictor you control.
- ``image_folder``: writes small PNG images into a folder.
- ``audit_cli``: runs the ``audit`` CLI in-process and returns ``(exit_code, output)``.
- ``write_config``: writes an audit.yaml from a dict and returns its path.
- ``toy_run_config``: ``toy_run_config(attacks, target="toy", **run)`` writes a small audit.yaml
  (4 + 4 images, toy target, cache off) for ``audit run`` tests of an attack plugin.
- ``one_torch_thread``: torch on one intra-op thread for the test (tiny tensors on a shared CPU
  only lose time to more threads); use it with ``pytestmark = pytest.mark.usefixtures(...)``.

Helpers for checking an attack's formula by hand: ``FakeLatentTarget`` (a latent grey-box target
with a non-linear, caption-dependent noise predictor) and its numpy twin ``fake_latent_eps``,
``abar_linear``/``abar_scaled`` (the two usual schedules computed in plain Python), and
``make_batch``.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from pydantic import BaseModel, ConfigDict

from . import hookimpl
from .attacks import Batch
from .targets import NOISE, VARIATION, Target, TargetContext, TargetParams


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


def no_traceback(output: str) -> bool:
    return "Traceback (most recent call last)" not in output


# ----------------------------------------------------------------- formulas by hand (for tests)
T_DEFAULT = 1000


def abar_linear(t: int, T: int = T_DEFAULT) -> float:
    """abar[t] of the linear DDPM schedule (betas 1e-4 .. 0.02), in plain Python; 1 below 0."""
    return math.prod(1.0 - (1e-4 + i * (0.02 - 1e-4) / (T - 1)) for i in range(t + 1))


def abar_scaled(t: int, T: int = T_DEFAULT) -> float:
    """abar[t] of the scaled-linear schedule (Stable Diffusion's), in plain Python."""
    lo, hi = math.sqrt(0.00085), math.sqrt(0.012)
    return math.prod(1.0 - (lo + i * (hi - lo) / (T - 1)) ** 2 for i in range(t + 1))


def fake_latent_eps(z: np.ndarray, t: int, captions, T: int = T_DEFAULT) -> np.ndarray:
    """What :class:`FakeLatentTarget` predicts, in numpy: ``tanh(z) (1 + t/T) + 0.05 len(caption)``."""
    c = np.array([0.05 * len(cap or "") for cap in captions]).reshape(-1, 1, 1, 1)
    return np.tanh(z) * (1 + t / T) + c


class FakeLatentTarget(Target):
    """A hand-built "latent" grey-box target: ``encode(x) = 0.5 x + 0.1``, a non-linear noise
    predictor that depends on t and on each row's caption (:func:`fake_latent_eps`), and a
    scaled-linear schedule. Records every ``eps`` call as ``(rows, t, captions)`` in ``calls``
    and the number of encoded rows in ``encoded``."""

    name = "fake-latent"
    kind = "latent"
    capabilities = frozenset({NOISE})
    Params = TargetParams

    def __init__(self, params=None, context=None):
        super().__init__(params or TargetParams(), context)
        self.image_size, self.channels, self.num_train_timesteps = 8, 1, T_DEFAULT
        lo, hi = math.sqrt(0.00085), math.sqrt(0.012)
        self.alphas_cumprod = torch.cumprod(1 - torch.linspace(lo, hi, T_DEFAULT, dtype=torch.float64) ** 2, 0)
        self.calls: list[tuple[int, int, list]] = []
        self.encoded = 0

    def encode(self, x, captions=None):
        self.encoded += x.shape[0]
        return 0.5 * x + 0.1

    def eps(self, z_t, t, captions=None):
        self.stats.nfe += z_t.shape[0]
        caps = list(captions) if captions is not None else [None] * z_t.shape[0]
        self.calls.append((z_t.shape[0], int(t), caps))
        c = torch.tensor([0.05 * len(cap or "") for cap in caps], dtype=z_t.dtype).view(-1, 1, 1, 1)
        return torch.tanh(z_t) * (1 + t / self.num_train_timesteps) + c


def make_batch(b: int = 3, seed: int = 0, captions=None, dtype=torch.float64, run_seed: int = 0, seed_key: str = "") -> Batch:
    """``b`` random 1x8x8 images in [-1, 1] with ids ``img0..``."""
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(b, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
    return Batch(images=images, ids=[f"img{i}" for i in range(b)], captions=captions or [None] * b,
                 run_seed=run_seed, seed_key=seed_key)


def assert_batch_size_independent(audit_cli, config, out_dir: Path, sizes=(1, 8), rtol: float = 1e-5) -> list[dict]:
    """Run ``config`` twice at batch size ``sizes[0]`` (the scores must be byte-identical: seeded
    per image) and once at ``sizes[1]`` (equal to float rounding: batching changes nothing but
    the order of float operations). Returns the rows of the first scores.csv."""
    import csv

    dirs = [Path(out_dir) / f"bs{size}-{i}" for i, size in enumerate((sizes[0], sizes[0], sizes[1]))]
    for d, size in zip(dirs, (sizes[0], sizes[0], sizes[1])):
        code, output = audit_cli("run", config, "--output", d, "--set", f"run.batch_size={size}")
        assert code == 0, output
    assert (dirs[0] / "scores.csv").read_text() == (dirs[1] / "scores.csv").read_text()
    a, c = (list(csv.DictReader((d / "scores.csv").open())) for d in (dirs[0], dirs[2]))
    assert [(r["attack"], r["image_id"]) for r in a] == [(r["attack"], r["image_id"]) for r in c]
    np.testing.assert_allclose([float(r["score"]) for r in a], [float(r["score"]) for r in c], rtol=rtol)
    return a


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread for the test (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



__all__ = [
    "ToyTarget", "VariationOnlyTarget", "ToyPlugin", "ToyParams", "write_images", "registered", "invoke",
    "no_traceback", "FakeLatentTarget", "fake_latent_eps", "abar_linear", "abar_scaled", "make_batch",
    "assert_batch_size_independent",
]
