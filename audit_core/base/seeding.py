"""Per-image seeding: every random draw depends only on (run seed, attack key, image id, draw).

So results do not depend on batching, resumption, ordering or the number of workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

SEED_BITS = 63


def hash_seed(text: str) -> int:
    """A ``SEED_BITS``-bit seed hashed from ``text`` (blake2b)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "big")  # pragma: no mutate ("big" is the default byte order since 3.11)
    return value >> (64 - SEED_BITS)


def derive_seed(run_seed: int, attack_key: str, image_id: str, draw: int = 0) -> int:
    """A 63-bit seed from the run seed, the attack's seed key, the image id and the draw index."""
    return hash_seed(f"{int(run_seed)}\x1f{attack_key}\x1f{image_id}\x1f{int(draw)}")


def randn(
    shape: Sequence[int],
    seeds: Sequence[int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Stack one standard-normal tensor of ``shape`` per seed, each drawn on the CPU from its own
    generator (bit-identical whatever the device or batch), then move the stack to ``device``."""
    # a float64 buffer would hold the float32 draws exactly: the buffer's dtype cannot show
    out = torch.empty((len(seeds), *shape), dtype=torch.float32)  # pragma: no mutate
    for i, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(int(seed))  # a CPU generator
        out[i] = torch.randn(tuple(shape), generator=gen, dtype=torch.float32)
    return out.to(device=device, dtype=dtype)
