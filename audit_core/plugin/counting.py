"""What a target costs, counted by the core: ``Stats`` (NFEs, queries, cache hits) and the wrapper
that counts one NFE per row of a subclass's ``eps`` and one query per row of its ``variation``
unless the implementation counted itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


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
        if counter == "nfe":
            _check_eps(self, out, args[0] if args else next(iter(kwargs.values()), None))
        return out

    counted.__audit_counted__ = True
    return counted


def _check_eps(target: Any, out: Any, z_t: Any) -> None:
    """A noise prediction has the shape of its input: another shape (or not a Tensor) is the
    target's bug, named (exit 1), not an error inside whichever attack called ``eps``."""
    if not isinstance(z_t, torch.Tensor) or (isinstance(out, torch.Tensor) and out.shape == z_t.shape):
        return
    from .guard import failure

    got = f"shape {list(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
    raise failure(
        target, f"returned {got} from eps() for an input of shape {list(z_t.shape)}",
        hint="eps(z_t, t, captions) must return the predicted noise, a Tensor of z_t's shape.",
    )
