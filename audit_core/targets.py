"""The target interface: a model adapter that serves a variation API and, where possible,
noise-prediction (grey-box) access.

A target plugin subclasses :class:`Target`, declares ``name``, ``kind``, ``capabilities`` and a
pydantic ``Params`` model for its ``target:`` mapping in audit.yaml, and implements
``_variation`` (black-box) and/or ``encode``/``eps`` (grey-box). The DDIM math lives in
``audit_core.ddim``; a pixel target's ``_variation`` is usually one call to
``ddim.variation(self.eps, ...)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel

from . import ddim, seeding
from .config import resolve_path
from .params import PluginParams
from .errors import ConfigError

VARIATION = "variation"  # black-box: V(x, t, k) only
NOISE = "noise"  # grey-box: eps(x_t, t[, text]) on inputs of the caller's choice

ACCESS_NAMES = {VARIATION: "variation API (black-box)", NOISE: "noise prediction (grey-box)"}
#: weight files that are pickles (loading one can run code): refused unless ``allow_pickle``
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class TargetParams(PluginParams):
    """Base for target params: unknown keys are errors, types are strict (see PluginParams)."""


@dataclass
class TargetContext:
    """What the runner hands a target: the device request, the query cache (or None) and the
    audit.yaml's folder. (Precision is each target's own ``dtype`` param.)"""

    device: str = "auto"
    cache: Any = None
    config_dir: Any = None  # folder of the audit.yaml, for relative model paths

    def path(self, p: str | Path) -> Path:
        """A model path from the config, relative to the audit.yaml's folder when known."""
        return resolve_path(p, self.config_dir)


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_sha256(files: Sequence[Path]) -> str:
    """SHA-256 over weight files' names and contents (each file hashed once per process, per path,
    size and mtime): a target identity that changes whenever the weights do."""
    h = hashlib.sha256()
    for f in files:
        st = Path(f).stat()
        h.update(Path(f).name.encode())
        h.update(_file_sha256(str(f), st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()


@dataclass
class Stats:
    nfe: int = 0  # U-Net evaluations, one per image per call
    queries: int = 0  # variation calls actually served (cache hits excluded), one per image
    cache_hits: int = 0  # variation rows served from the query cache
    cached_nfe: int = 0  # NFEs those cached rows would have cost
    notes: list[str] = field(default_factory=list)


def _rows(fn: Any, self: Any, args: tuple, kwargs: dict) -> int:
    """Rows of one eps/variation call: the number of seeds (variation), else of ``x``."""
    import inspect

    try:
        bound = inspect.signature(fn).bind(self, *args, **kwargs).arguments
    except TypeError:
        bound = {}
    seeds = bound.get("seeds")
    if seeds is not None:
        return int(seeds.numel()) if isinstance(seeds, torch.Tensor) else int(np.size(np.asarray(seeds, dtype=object)))
    values = list(bound.values())[1:] if bound else list(args)  # after self: x (or z_t) first
    x = values[0] if values else None
    return int(x.shape[0]) if hasattr(x, "shape") else 0


def _counted(fn: Any, counter: str) -> Any:
    """``fn`` guarded, adding one to ``self.stats.<counter>`` per row when ``fn`` did not
    count (``nfe`` for eps, ``queries`` for variation: cache hits count as answered)."""
    import functools

    from .guard import guarded

    if getattr(fn, "__audit_counted__", False):
        return fn
    inner = guarded(fn)

    @functools.wraps(fn)
    def counted(self, *args: Any, **kwargs: Any) -> Any:
        st = self.__dict__.get("stats")
        if st is None:  # a subclass that skipped Target.__init__
            st = self.stats = Stats()
        before = (st.nfe,) if counter == "nfe" else (st.queries, st.cache_hits)
        out = inner(self, *args, **kwargs)
        after = (st.nfe,) if counter == "nfe" else (st.queries, st.cache_hits)
        if after == before:
            setattr(st, counter, getattr(st, counter) + _rows(fn, self, args, kwargs))
        return out

    counted.__audit_counted__ = True
    return counted


def resolve_device(request: str = "auto") -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cpu``; ``cuda`` / ``cuda:N`` (checked)."""
    request = (request or "auto").strip()
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if request == "cpu":
        return torch.device("cpu")
    if request.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"run.device: {request!r} was requested but no CUDA device is available")
        dev = torch.device(request)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"run.device: {request!r} does not exist ({torch.cuda.device_count()} GPUs)")
        return dev
    raise ConfigError(f"run.device: {request!r} is not one of auto, cpu, cuda, cuda:N")


def resolve_dtype(request: str, device: torch.device) -> torch.dtype:
    table = {"auto": torch.float32, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if request not in table:
        raise ConfigError(f"target dtype {request!r} is not one of {', '.join(table)}")
    if device.type == "cpu" and request in ("fp16", "bf16"):
        return torch.float32  # fp32 on the CPU, always
    return table[request]


class Target:
    """Base class of every target. Images are float tensors ``[B, C, H, W]`` in [-1, 1]."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "pixel"  # "pixel" or "latent"
    capabilities: ClassVar[frozenset[str]] = frozenset({VARIATION})
    Params: ClassVar[type[BaseModel]] = TargetParams
    plugin_name: ClassVar[str] = ""

    #: set by subclasses in __init__
    image_size: int = 0
    channels: int = 0
    num_train_timesteps: int = 1000
    alphas_cumprod: torch.Tensor | None = None  # float64 on the CPU; None when unknown (remote)
    device: torch.device = torch.device("cpu")

    def __init__(self, params: BaseModel, context: TargetContext | None = None):
        self.params = params
        self.context = context or TargetContext()
        self.stats = Stats()

    @property
    def cache(self) -> Any:
        """The query cache (or None): the context's, the one handle the runner gave this target."""
        return self.context.cache

    @cache.setter
    def cache(self, value: Any) -> None:
        self.context.cache = value

    #: methods the core calls on a target; a subclass's own versions are guarded (a failure
    #: names the target and its distribution: see audit_core.guard)
    GUARDED: ClassVar[tuple[str, ...]] = (
        "_variation", "encode", "decode", "preprocess", "identity", "describe", "close", "nfe_per_query", "max_batch",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """The core counts: a subclass's ``eps`` counts one NFE per row and its ``variation``
        one query per row, unless the implementation counted itself (old-style targets that do
        ``self.stats.nfe += rows`` are not counted twice). Its methods are guarded."""
        super().__init_subclass__(**kwargs)
        from .guard import guard_methods

        if "eps" in cls.__dict__:
            cls.eps = _counted(cls.__dict__["eps"], "nfe")
        if "variation" in cls.__dict__:
            cls.variation = _counted(cls.__dict__["variation"], "queries")
        guard_methods(cls, cls.GUARDED)

    def _place(self, dtype: str = "fp32", auto: str = "fp32") -> None:
        """Set ``self.device`` from the run's device request and ``self.dtype`` from a ``dtype``
        param (``auto`` means ``auto``, e.g. fp16 for a big model on a GPU). Half precision only
        runs on a GPU: an explicit fp16/bf16 on the CPU runs fp32, noted in the results."""
        self.device = resolve_device(self.context.device)
        self.dtype = resolve_dtype(auto if dtype == "auto" else dtype, self.device)
        if dtype in ("fp16", "bf16") and self.device.type == "cpu":
            self.stats.notes.append(f"dtype {dtype} was requested but the CPU runs fp32")

    # ----- description ---------------------------------------------------------------------
    def identity(self) -> str:
        """A stable identity for the query cache: changes when the model's weights change."""
        return f"{self.name}:{self.params.model_dump_json()}"

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for results.json and reports (never secrets)."""
        return {
            "plugin": self.name,
            "kind": self.kind,
            "capabilities": sorted(self.capabilities),
            "image_size": self.image_size,
            "channels": self.channels,
            "num_train_timesteps": self.num_train_timesteps,
            "device": str(self.device),
        }

    def close(self) -> None:
        """Release resources (connections, GPU memory)."""

    # ----- black-box --------------------------------------------------------------------
    def variation(
        self,
        x: torch.Tensor,
        t: int,
        k: int,
        seeds: Sequence[int],
        captions: Sequence[str | None] | None = None,
    ) -> torch.Tensor:
        """V(x, t, k): one variation per row of ``x``, its noise fixed by ``seeds[i]``.

        Rows may repeat an image (n repetitions in one batch). Served from the query cache when
        one is configured; only cache misses reach ``_variation`` and count as queries."""
        if VARIATION not in self.capabilities:
            raise NotImplementedError(f"target {self.name!r} has no variation API")
        if len(seeds) != x.shape[0]:
            raise ValueError("one seed per row is required")
        captions = list(captions) if captions is not None else [None] * x.shape[0]
        if self.cache is None:
            out = self._variation(x, t, k, list(seeds), captions)
            self.stats.queries += x.shape[0]
            return out.to(x.device, torch.float32)  # same dtype as a cached answer
        identity = self.identity()
        keys = [self.cache_key(x[i], t, k, seeds[i], captions[i], identity) for i in range(x.shape[0])]
        found = [self.cache.get(key) for key in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        hits = x.shape[0] - len(missing)
        self.stats.cache_hits += hits
        self.stats.cached_nfe += hits * self.nfe_per_query(t, k)
        if missing:
            fresh = self._variation(
                x[missing], t, k, [seeds[i] for i in missing], [captions[i] for i in missing]
            )
            self.stats.queries += len(missing)
            for j, i in enumerate(missing):
                # the cache stores float32 losslessly, so a later hit is bit-identical to this row
                found[i] = fresh[j].detach().to("cpu", torch.float32)
                self.cache.put(keys[i], found[i])
        return torch.stack([f.to(x.device, torch.float32) for f in found])

    def nfe_per_query(self, t: int, k: int) -> int:
        """U-Net evaluations of one variation row (t/k for DDIM; 0 when unknown, e.g. remote)."""
        return t // k if VARIATION in self.capabilities and NOISE in self.capabilities else 0

    def cache_key(
        self, image: torch.Tensor, t: int, k: int, seed: int, caption: str | None, identity: str | None = None
    ) -> str:
        """The query-cache key of one row (``identity``: :meth:`identity`, when already at hand)."""
        h = hashlib.sha256()
        h.update((self.identity() if identity is None else identity).encode())
        h.update(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        h.update(f"|{t}|{k}|{seed}|{caption or ''}".encode())
        return h.hexdigest()

    def _variation(
        self, x: torch.Tensor, t: int, k: int, seeds: list[int], captions: list[str | None]
    ) -> torch.Tensor:
        """Default for grey-box targets: noise with the per-row seeds in model space, DDIM back
        (on the target's device). Rows that repeat the row before (an image's n variations, laid
        out image-major) are encoded once."""
        x = x.to(self.device)
        first = [i == 0 or captions[i] != captions[i - 1] or not torch.equal(x[i], x[i - 1]) for i in range(len(x))]
        owner = torch.cumsum(torch.tensor(first, dtype=torch.long), 0) - 1  # row -> its encoded image
        keep = [i for i, f in enumerate(first) if f]
        z0 = self.encode(x[keep], [captions[i] for i in keep])[owner.to(x.device)]
        noise = seeding.randn(z0.shape[1:], seeds, device=z0.device, dtype=z0.dtype)
        eps = lambda z, step: self.eps(z, step, captions)  # noqa: E731
        assert self.alphas_cumprod is not None
        z_hat = ddim.variation(eps, z0, noise, t, k, self.alphas_cumprod)
        return self.decode(z_hat, captions)

    # ----- grey-box -----------------------------------------------------------------------
    def encode(self, x: torch.Tensor, captions: Sequence[str | None] | None = None) -> torch.Tensor:
        """Image -> model space (identity for pixel targets, scaled VAE latents for latent ones)."""
        return x

    def decode(self, z: torch.Tensor, captions: Sequence[str | None] | None = None) -> torch.Tensor:
        """Model space -> image in [-1, 1]."""
        return z

    def eps(self, z_t: torch.Tensor, t: int, captions: Sequence[str | None] | None = None) -> torch.Tensor:
        """The noise prediction at index ``t``. The core counts one NFE per row of each call
        (a subclass that costs more per row, e.g. 2 with classifier-free guidance, adds to
        ``self.stats.nfe`` itself and is then left alone)."""
        raise NotImplementedError(f"target {self.name!r} has no noise-prediction access")

    def eps_fn(self, captions: Sequence[str | None] | None = None):
        """``eps`` bound to the captions, in the shape ``audit_core.ddim`` expects."""
        return lambda z, t: self.eps(z, t, captions)

    def preprocess(self, image) -> tuple[torch.Tensor, bool]:
        """PIL image -> ``([C, H, W]`` in [-1, 1], whether it was converted or resized). The
        default converts to the target's channels and centre-crops/resizes to its size."""
        from .data import to_tensor

        return to_tensor(image, self.channels, self.image_size)

    def max_batch(self) -> int:
        """How many rows one forward pass may hold (the runner splits larger work): the target's
        ``max_batch`` param when it has one, else 256."""
        return getattr(self.params, "max_batch", 256)
