"""Executors run an attack over batches of images. The default runs in-process; plugins (Ray)
can spread batches over workers. Every executor must return the same scores: randomness only
comes from per-image seeds, so a batch's result does not depend on where it runs."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from .attacks import Attack, AttackContext, Batch

MAP_SIZE = 64  # residual maps and reconstructions are kept at most this size (gallery, scorer)


class ExecutorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class Job:
    """Everything needed to rebuild the target and the attack anywhere (picklable), plus the
    already-built objects for in-process use (``local``, never sent to workers)."""

    target_plugin: str
    target_params: dict
    target_context: dict
    attack_plugin: str
    attack_params: dict
    attack_context: dict
    keep_maps: bool = True
    local: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["local"] = None
        return state


@dataclass
class WorkBatch:
    index: int
    ids: list[str]
    captions: list[str | None]
    images: torch.Tensor  # preprocessed, [B, C, H, W] in [-1, 1]


@dataclass
class BatchResult:
    index: int
    ids: list[str]
    scores: np.ndarray
    nfe: np.ndarray  # per image: U-Net evaluations the attack costs (cached ones included)
    queries: np.ndarray  # per image: variation calls the attack makes (cached ones included)
    residuals: np.ndarray | None
    reconstructions: np.ndarray | None
    seconds: float
    cache_hits: int = 0  # variation rows served from the cache (not paid for)
    nfe_saved: int = 0  # NFEs those rows would have cost
    extras: dict = field(default_factory=dict)


def shrink(x: torch.Tensor | None) -> np.ndarray | None:
    if x is None:
        return None
    x = x.detach().float().cpu()
    if x.shape[-1] > MAP_SIZE or x.shape[-2] > MAP_SIZE:
        x = F.adaptive_avg_pool2d(x, (min(x.shape[-2], MAP_SIZE), min(x.shape[-1], MAP_SIZE)))
    return x.numpy().astype(np.float16)


def execute_batch(target, attack: Attack, batch: WorkBatch, run_seed: int, seed_key: str, keep_maps: bool = True) -> BatchResult:
    """Score one batch and measure its NFEs and queries per image from the target's counters."""
    b = Batch(
        images=batch.images.to(target.device),
        ids=list(batch.ids),
        captions=list(batch.captions),
        run_seed=run_seed,
        seed_key=seed_key,
    )
    st = target.stats
    nfe0, q0, h0, c0 = st.nfe, st.queries, st.cache_hits, st.cached_nfe
    t0 = time.perf_counter()
    with torch.no_grad():
        out = attack.score(b)
    seconds = time.perf_counter() - t0
    n = len(b)
    scores = out.scores.detach().double().cpu().numpy().reshape(-1)
    if scores.shape[0] != n:
        raise RuntimeError(f"attack {attack.context.name!r} returned {scores.shape[0]} scores for {n} images")
    nfe_total = st.nfe - nfe0 + st.cached_nfe - c0
    share = np.full(n, 1.0 / n)
    if out.queries is not None:  # unequal budgets: split the measured cost by the attack's own count
        q = out.queries.detach().double().cpu().numpy().reshape(-1)
        share = q / q.sum() if q.sum() > 0 else share
    return BatchResult(
        index=batch.index,
        ids=list(batch.ids),
        scores=scores,
        nfe=nfe_total * share,
        queries=(st.queries - q0 + st.cache_hits - h0) * share,
        residuals=shrink(out.residuals) if keep_maps else None,
        reconstructions=shrink(out.reconstructions) if keep_maps else None,
        seconds=seconds,
        cache_hits=st.cache_hits - h0,
        nfe_saved=st.cached_nfe - c0,
        extras=out.extras,
    )


class Executor:
    """Base class of executors, selected by ``run.executor.plugin``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = ExecutorParams
    plugin_name: ClassVar[str] = ""

    def __init__(self, params: BaseModel):
        self.params = params

    def run(self, job: Job, batches: Iterable[WorkBatch]) -> Iterator[BatchResult]:
        """Yield one BatchResult per batch, in any order."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"plugin": self.name, **self.params.model_dump()}

    def close(self) -> None:
        pass


def build_local(job: Job):
    """Rebuild (target, attack) from a Job, e.g. inside a remote worker."""
    from . import plugins
    from .cache import QueryCache
    from .targets import TargetContext

    tcls = plugins.lookup("targets", job.target_plugin)
    acls = plugins.lookup("attacks", job.attack_plugin)
    ctx = dict(job.target_context)
    cache = QueryCache(ctx.pop("cache_dir"), ctx.pop("cache_max_bytes")) if ctx.get("cache_dir") else None
    ctx.pop("cache_dir", None)
    ctx.pop("cache_max_bytes", None)
    target = tcls(tcls.Params.model_validate(job.target_params), TargetContext(cache=cache, **ctx))
    distances = plugins.registry("distances")
    actx = AttackContext(distances=distances, **job.attack_context)
    attack = acls(acls.Params.model_validate(job.attack_params), target, actx)
    attack.check()  # validates and prepares the attack, as the runner does
    return target, attack
