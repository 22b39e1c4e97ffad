"""Executors run an attack over batches of images. The default runs in-process; plugins (Ray)
can spread batches over workers. Every executor must return the same scores: randomness only
comes from per-image seeds, so a batch's result does not depend on where it runs."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..plugin import guard
from ..base.errors import PluginFailure
from ..plugin.guard import PASS_THROUGH

if TYPE_CHECKING:  # numpy, torch and the attack interface load with the first batch, not the CLI
    import numpy as np
    import torch

    from ..plugin.attacks import Attack, AttackOutput, Batch

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
    features: np.ndarray | None = None  # [B, F] the attack's calibration features (float64)


def shrink(x: torch.Tensor | None) -> np.ndarray | None:
    if x is None:
        return None
    import numpy as np

    x = x.detach().float().cpu()
    if x.shape[-1] > MAP_SIZE or x.shape[-2] > MAP_SIZE:
        import torch.nn.functional as F

        x = F.adaptive_avg_pool2d(x, (min(x.shape[-2], MAP_SIZE), min(x.shape[-1], MAP_SIZE)))
    return x.numpy().astype(np.float16)


def execute_batch(target, attack: Attack, batch: WorkBatch, run_seed: int, seed_key: str, keep_maps: bool = True) -> BatchResult:
    """Score one batch and measure its NFEs and queries per image from the target's counters."""
    import numpy as np
    import torch

    from ..plugin.attacks import Batch

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
        out = _score(attack, b)
    seconds = time.perf_counter() - t0
    n = len(b)
    scores = checked_scores(attack, out, b)
    nfe_total = st.nfe - nfe0 + st.cached_nfe - c0
    nfe_per_image = nfe_total / n
    note = nfe_mismatch(attack, nfe_per_image)
    if note:
        out.extras = {**out.extras, "nfe_warning": note}
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
        features=None if out.features is None else out.features.detach().double().cpu().numpy().reshape(n, -1),
    )


def _score(attack: Attack, batch: Batch) -> AttackOutput:
    """``attack.score(batch)``; a failure inside the target names the attack that called it."""
    try:
        return attack.score(batch)
    except PluginFailure as exc:
        if not str(exc).startswith("attack "):
            exc.args = (f"{exc} (It happened while {guard.who(attack)} was scoring.)",)
        raise
    except PASS_THROUGH:
        raise
    except Exception as exc:  # noqa: BLE001 - an Attack subclass defined without the base's guard
        raise guard.failure(attack, "failed in score()", exc) from exc


def checked_scores(attack: Attack, out: Any, batch: Batch) -> np.ndarray:
    """The scores of ``out`` as float64 ``[B]``, or a PluginFailure saying what is wrong with
    what ``attack.score`` returned: not an AttackOutput, not one finite score per image, or maps
    of the wrong shape."""
    import numpy as np
    import torch

    from ..plugin.attacks import AttackOutput

    n = len(batch)
    if not isinstance(out, AttackOutput):
        kind = f"a {type(out).__module__}.{type(out).__qualname__}".replace("a torch.Tensor", "a bare torch.Tensor")
        raise guard.failure(
            attack, f"returned {kind} from score()",
            hint="score() must return AttackOutput(scores=...) (from audit_core import AttackOutput), scores a Tensor[B].",
        )
    if not isinstance(out.scores, torch.Tensor):
        raise guard.failure(attack, f"returned AttackOutput.scores of type {type(out.scores).__name__}", hint="It must be a torch.Tensor of shape [B].")
    if out.scores.dim() != 1 or out.scores.shape[0] != n:
        raise guard.failure(
            attack, f"returned scores of shape {list(out.scores.shape)} for a batch of {n} images",
            hint=f"score() must return one score per image, in batch order: a Tensor of shape [B] = [{n}] "
            "(a [B, 1] tensor is not flattened for you: use .squeeze(1) or .flatten()).",
        )
    if not out.scores.is_floating_point():
        raise guard.failure(
            attack, f"returned scores of dtype {out.scores.dtype}",
            hint="Scores must be a floating-point Tensor (e.g. .float()): integer or boolean scores tie by rounding "
            "and make the AUC meaningless.",
        )
    scores = out.scores.detach().double().cpu().numpy().reshape(-1)
    bad = ~np.isfinite(scores)
    if bad.any():
        ids = [batch.ids[i] for i in np.flatnonzero(bad)[:3]]
        kinds = sorted({"NaN" if np.isnan(v) else ("inf" if v > 0 else "-inf") for v in scores[bad]})
        raise guard.failure(
            attack, f"returned non-finite scores ({'/'.join(kinds)}) for {int(bad.sum())} of {n} images (e.g. {', '.join(ids)})",
            hint="Scores must be finite numbers, higher = more likely a member.",
        )
    for label, maps in (("residuals", out.residuals), ("reconstructions", out.reconstructions)):
        if maps is not None and (not isinstance(maps, torch.Tensor) or maps.dim() != 4 or maps.shape[0] != n):
            shape = list(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
            raise guard.failure(attack, f"returned AttackOutput.{label} of shape {shape} for {n} images", hint="Maps must be a Tensor [B, C, H, W] (or None).")
    return scores


def expected_nfe(attack: Attack) -> float | None:
    """The attack's :meth:`~audit_core.Attack.nfe_per_image` (else its ``expected_nfe_per_image``
    attribute, else its ``describe()`` entry)."""
    fn = getattr(attack, "nfe_per_image", None)
    value = fn() if callable(fn) else getattr(attack, "expected_nfe_per_image", None)
    if value is None:
        value = (attack.describe() or {}).get("expected_nfe_per_image")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def nfe_mismatch(attack: Attack, measured: float) -> str | None:
    """A warning (printed once per attack, returned for results.json) when the NFEs per image
    measured from the target's counters differ from what the attack expects."""
    if getattr(attack, "_nfe_checked", False):
        return None
    attack._nfe_checked = True
    expected = expected_nfe(attack)
    if expected is None or abs(measured - expected) <= 1e-6 * max(1.0, expected):
        return None
    note = (
        f"{guard.who(attack)} expects {expected:g} NFE per image, but {guard.who(attack.target)} counted "
        f"{measured:g} per image: nfe_per_image in results.json may be wrong. Either the attack's "
        f"expected_nfe_per_image is out of date or the target does not count its U-Net evaluations "
        f"(a variation served without calling eps must add them to self.stats.nfe)."
    )
    guard.warn(note)
    return note


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
    from ..plugin import factory, manager as plugins
    from ..plugin.attacks import AttackContext
    from ..data.cache import QueryCache
    from ..plugin.targets import TargetContext

    ctx = dict(job.target_context)
    cache = QueryCache(ctx.pop("cache_dir"), ctx.pop("cache_max_bytes")) if ctx.get("cache_dir") else None
    ctx.pop("cache_dir", None)
    ctx.pop("cache_max_bytes", None)
    target = factory.build("targets", job.target_plugin, job.target_params, TargetContext(cache=cache, **ctx), where="job.target_plugin")
    distances = plugins.registry("distances")
    actx = AttackContext(distances=distances, **job.attack_context)
    # params as the runner resolved them; validated, built and checked (as the runner does)
    attack = factory.build("attacks", job.attack_plugin, job.attack_params, target, actx, where="job.attack_plugin", check=True)
    return target, attack


class InProcessExecutor(Executor):
    """The default executor (``run.executor.plugin: inprocess``): batches run one after another
    in this process."""

    name = "inprocess"

    def run(self, job: Job, batches: Iterable[WorkBatch]) -> Iterator[BatchResult]:
        target, attack = job.local if job.local is not None else build_local(job)
        ctx = job.attack_context
        for batch in batches:
            yield execute_batch(target, attack, batch, ctx["run_seed"], ctx["seed_key"], job.keep_maps)


def checked_results(executor: Any, job: Job, batches: Iterable[WorkBatch], ids: list[str]) -> Iterator[BatchResult]:
    """``executor.run(job, batches)``, its bugs named like any plugin's (exit 1, everything
    committed kept): an exception in ``run()``, a result that is not the ``BatchResult`` of
    ``execute_batch``, and images of ``ids`` it returned no result for (a dropped batch would
    otherwise leave the metrics computed on part of the data)."""
    seen: set[str] = set()
    try:
        results = iter(executor.run(job, batches))
    except PASS_THROUGH:
        raise
    except Exception as exc:  # noqa: BLE001 - the plugin boundary
        raise guard.failure(executor, "failed in run()", exc) from exc
    while True:
        try:
            res = next(results)
        except StopIteration:
            break
        except PASS_THROUGH:
            raise
        except Exception as exc:  # noqa: BLE001 - the plugin boundary
            raise guard.failure(executor, "failed in run()", exc) from exc
        if not isinstance(res, BatchResult):
            raise guard.failure(
                executor, f"yielded a {type(res).__name__} from run()",
                hint="run() must yield the BatchResult that execute_batch returns, one per batch.",
            )
        seen.update(res.ids)
        yield res
    missing = [i for i in ids if i not in seen]
    if missing:
        raise guard.failure(
            executor, f"returned no result for {len(missing)} of {len(ids)} images (e.g. {missing[0]})",
            hint="run() must yield one BatchResult for every batch it is given.",
        )
