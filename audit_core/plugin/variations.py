"""The variation API of a target (:class:`~audit_core.plugin.targets.Target` inherits it):
``variation(x, t, k, seeds[B][n])`` behind the query cache (only missing draws computed), the
cache keys, and the default ``_variations``, the core's DDIM on the grey-box methods."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from ..base import ddim, seeding
from .capabilities import VARIATION


class VariationAPI:
    """The black-box half of :class:`~audit_core.plugin.targets.Target` (a mixin: it uses the
    target's ``cache``, ``stats``, ``identity``, ``nfe_per_query`` and grey-box methods)."""

    # ----- black-box --------------------------------------------------------------------
    #: True when every variation the target returns already lies in [-1, 1] (e.g. images decoded
    #: from 8-bit files, or a VAE decoder's clamped output): ``clip`` then changes nothing
    bounded_variations: ClassVar[bool] = False

    def variation(
        self,
        x: torch.Tensor,
        t: int,
        k: int,
        seeds: Any,
        captions: Sequence[str | None] | None = None,
        *,
        clip: bool = False,
    ) -> torch.Tensor:
        """V(x, t, k), ``n`` times per image: ``x [B, C, H, W]`` and ``seeds [B][n]`` (nested
        lists, or an integer tensor ``[B, n]``) -> ``[B, n, C, H, W]`` float32 on ``x``'s device.

        Draw ``j`` of image ``i`` noises ``x[i]`` with ``seeds[i][j]``; ``captions`` has one entry
        per image. ``clip``: clip every variation to [-1, 1] (the default, False, returns the DDIM
        output as it is, like the official ReDiffuse code, which averages unclipped variations).
        Served from the query cache when one is configured; only cache misses reach
        :meth:`_variations` and count as queries (one per variation).

        Deprecated form: ``seeds`` a flat list with one seed per row of ``x`` (rows repeating an
        image n times) -> ``[B, C, H, W]``; it warns and runs as ``n = 1``."""
        if VARIATION not in self.capabilities:
            raise NotImplementedError(f"target {self.name!r} has no variation API")
        grid, flat = _seed_grid(seeds, x.shape[0])
        if flat:
            warnings.warn(
                "Target.variation(x, t, k, seeds) with one seed per row is deprecated: pass seeds[B][n] "
                "(e.g. batch.seed_grid(n)) with each image once and get [B, n, C, H, W] back: "
                "target.variation(batch.images, t, k, batch.seed_grid(n), batch.captions)",
                DeprecationWarning,
                stacklevel=2,
            )
        ddim.check_tk(t, k, self.num_train_timesteps)
        captions = list(captions) if captions is not None else [None] * x.shape[0]
        if len(captions) != x.shape[0]:
            raise ValueError(f"{len(captions)} captions for {x.shape[0]} images: one caption per image is required")
        clip = bool(clip) and not self.bounded_variations
        out = self._cached_variations(x, int(t), int(k), grid, captions, clip)
        return out[:, 0] if flat else out

    def _cached_variations(
        self, x: torch.Tensor, t: int, k: int, seeds: list[list[int]], captions: list[str | None], clip: bool
    ) -> torch.Tensor:
        """:meth:`variation` behind the query cache: only the missing draws are computed."""
        B, n = len(seeds), len(seeds[0])
        if self.cache is None:
            out = self._shape_checked(self._variations(x, t, k, seeds, captions, clip), B, n, x)
            self.stats.queries += B * n
            return out.to(x.device, torch.float32)  # same dtype as a cached answer
        identity = self.identity()
        keys = [self._cache_keys(x[i], t, k, seeds[i], captions[i], identity, clip) for i in range(B)]
        found = [[self._from_cache(key, tuple(x.shape[1:])) for key in row] for row in keys]
        missing = [[j for j, f in enumerate(row) if f is None] for row in found]
        hits = B * n - sum(len(m) for m in missing)
        self.stats.cache_hits += hits
        self.stats.cached_nfe += hits * self.nfe_per_query(t, k)
        # images missing the same number of draws (usually all, or the draws a sweep added) are
        # computed together, in image order
        for m in sorted({len(m) for m in missing} - {0}):
            images = [i for i in range(B) if len(missing[i]) == m]
            fresh = self._variations(
                x[images], t, k, [[seeds[i][j] for j in missing[i]] for i in images], [captions[i] for i in images], clip
            )
            fresh = self._shape_checked(fresh, len(images), m, x)
            self.stats.queries += len(images) * m
            for a, i in enumerate(images):
                for b, j in enumerate(missing[i]):
                    # the cache stores float32 losslessly, so a later hit is bit-identical to this one
                    found[i][j] = fresh[a, b].detach().to("cpu", torch.float32)
                    self.cache.put(keys[i][j], found[i][j])
        return torch.stack([torch.stack([f.to(x.device, torch.float32) for f in row]) for row in found])

    def _shape_checked(self, out: Any, b: int, n: int, x: torch.Tensor) -> torch.Tensor:
        """``out`` of ``_variations`` when it is ``[b, n, C, H, W]`` (C, H, W: the images'); else the
        target's bug, named (exit 1), never n draws silently served as fewer or reshaped."""
        want = (b, n, *x.shape[1:])
        if isinstance(out, torch.Tensor) and tuple(out.shape) == want:
            return out
        from .guard import failure

        got = f"shape {list(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise failure(
            self, f"returned {got} from _variations() for {b} image(s) x {n} seed(s)",
            hint=f"_variations(x, t, k, seeds, captions, clip) must return [B, n, C, H, W] = {list(want)}.",
        )

    def _from_cache(self, key: str, shape: tuple[int, ...]) -> torch.Tensor | None:
        """The cached variation of ``key``, or None: an entry of another shape than the image's
        (a valid header and checksum, written by other code or edited) is a miss, recomputed and
        replaced, never served to the attack."""
        found = self.cache.get(key)
        if found is not None and tuple(found.shape) != shape:
            reject = getattr(self.cache, "reject", None)
            if reject is not None:
                reject(key, f"shape {list(found.shape)}, expected {list(shape)}")
            return None
        return found

    def cache_key(
        self, image: torch.Tensor, t: int, k: int, seed: int, caption: str | None, identity: str | None = None,
        clip: bool = True,
    ) -> str:
        """The query-cache key of one variation (``identity``: :meth:`identity`, when at hand).
        Unclipped variations of an unbounded target get their own keys."""
        return self._cache_keys(image, t, k, [seed], caption, identity, clip)[0]

    def _cache_keys(
        self, image: torch.Tensor, t: int, k: int, seeds: Sequence[int], caption: str | None,
        identity: str | None, clip: bool,
    ) -> list[str]:
        h = hashlib.sha256()
        h.update((self.identity() if identity is None else identity).encode())
        h.update(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())  # hashed once per image
        tail = "" if clip or self.bounded_variations else "|unclipped"  # clipped: the keys of earlier versions
        keys = []
        for seed in seeds:
            row = h.copy()
            row.update(f"|{t}|{k}|{seed}|{caption or ''}{tail}".encode())
            keys.append(row.hexdigest())
        return keys

    def _variations(
        self, x: torch.Tensor, t: int, k: int, seeds: list[list[int]], captions: list[str | None], clip: bool
    ) -> torch.Tensor:
        """Compute ``[B, n, C, H, W]`` variations (``seeds[B][n]``, one caption per image): what a
        target overrides to serve the variation API. The default runs the core's DDIM on the
        grey-box methods: each image encoded once, noised with each of its seeds in model space,
        DDIM back to 0 and decoded, all ``B * n`` rows together (on the target's device)."""
        if type(self)._variation is not VariationAPI._variation:  # a target written for the flat hook
            B, n = len(seeds), len(seeds[0])
            rows = self._variation(
                x.repeat_interleave(n, dim=0), t, k, [s for row in seeds for s in row], [c for c in captions for _ in range(n)]
            )
            rows = rows.clamp(-1.0, 1.0) if clip else rows
            return rows.reshape(B, n, *rows.shape[1:])
        return self._ddim_variations(x, t, k, seeds, captions, clip)

    def _ddim_variations(
        self, x: torch.Tensor, t: int, k: int, seeds: list[list[int]], captions: list[str | None], clip: bool
    ) -> torch.Tensor:
        B, n = len(seeds), len(seeds[0])
        x = x.to(self.device)
        z0 = self.encode(x, captions).repeat_interleave(n, dim=0)  # image-major rows: i*n .. i*n+n-1
        row_captions = [c for c in captions for _ in range(n)]
        noise = seeding.randn(z0.shape[1:], [s for row in seeds for s in row], device=z0.device, dtype=z0.dtype)
        eps = lambda z, step: self.eps(z, step, row_captions)  # noqa: E731
        assert self.alphas_cumprod is not None
        z_hat = ddim.variation(eps, z0, noise, t, k, self.alphas_cumprod)
        out = self.decode(z_hat, row_captions)
        if clip:
            out = out.clamp(-1.0, 1.0)
        return out.reshape(B, n, *out.shape[1:])

    def _variation(
        self, x: torch.Tensor, t: int, k: int, seeds: list[int], captions: list[str | None]
    ) -> torch.Tensor:
        """Deprecated flat hook (one seed per row of ``x``, ``[N, C, H, W]`` out, unclipped):
        override :meth:`_variations` instead."""
        out = self._ddim_variations(x, t, k, [[int(s)] for s in seeds], list(captions), False)
        return out[:, 0]


def _seed_grid(seeds: Any, images: int) -> tuple[list[list[int]], bool]:
    """``seeds[B][n]`` (nested lists or an integer tensor) -> (the grid, False); a flat list of
    one seed per row (the deprecated form) -> (``[[s] for s in seeds]``, True)."""
    if isinstance(seeds, torch.Tensor):
        if seeds.is_floating_point() or seeds.ndim not in (1, 2):
            raise ValueError(f"seeds must be an integer tensor [B, n], got {seeds.dtype} {list(seeds.shape)}")
        seeds = seeds.tolist()
    seeds = list(seeds)
    if len(seeds) != images:
        raise ValueError(f"seeds has {len(seeds)} rows for {images} images: one row of n seeds per image is required")
    if images == 0:
        raise ValueError("no images to vary")
    flat = not isinstance(seeds[0], (list, tuple, torch.Tensor))
    grid = [[int(s)] for s in seeds] if flat else [[int(s) for s in row] for row in seeds]
    n = len(grid[0])
    if n == 0 or any(len(row) != n for row in grid):
        raise ValueError("seeds must have the same number n >= 1 of seeds for every image")
    return grid, flat
