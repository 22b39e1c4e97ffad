"""The heavy half of the test kit (torch, numpy): toy targets and helpers for checking an
attack's formula by hand. Import from :mod:`audit_core.testing`, which loads this module only
when one of these names is used, so the pytest plugin costs nothing in other projects' tests."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from ..plugin.hookspecs import hookimpl
from ..plugin.attacks import Attack, AttackContext, Batch
from ..plugin.targets import NOISE, VARIATION, Target, TargetContext, TargetParams


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




def make_attack(cls: type[Attack], target: Target, name: str | None = None, run_seed: int = 0, **params: Any) -> Attack:
    """An attack ready to score, built as the runner builds it (by the same factory,
    :func:`audit_core.plugin.factory.build`): the target-dependent defaults, then the named
    preset (``preset="..."``), then ``params``; ``cls.Params`` validated (strict types, unknown
    keys refused), the installed distances, and ``check()`` run. ``name`` (default ``cls.name``)
    is the entry name the per-image seeds derive from."""
    from ..plugin import factory, manager as plugins

    ctx = AttackContext(name=name or cls.name, seed_key=name or cls.name, run_seed=run_seed, distances=plugins.registry("distances"))
    return factory.build("attacks", cls, params, target, ctx, target=target, where="make_attack", check=True)
