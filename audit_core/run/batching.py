"""``run.batch_size: auto``: images per batch chosen from the free memory of the target's GPU."""

from __future__ import annotations

from typing import Any

CPU_DEFAULT = 64  # on the CPU memory bandwidth, not capacity, limits speed: the usual default
MAX_AUTO = 1024  # beyond this a GPU gains nothing measurable on the models audited here
PROBE_ROWS = 8
MEMORY_SHARE = 0.6  # of the free memory: headroom for the attack's own tensors and fragmentation


def resolve_batch_size(requested: int | str, target: Any) -> tuple[int, str]:
    """``(images per batch, why)``. An int is used as given; ``auto`` probes one forward pass of
    ``PROBE_ROWS`` rows on a CUDA target, measures its peak memory per row and fits as many rows as
    ``MEMORY_SHARE`` of the free memory holds (at most the target's ``max_batch`` and ``MAX_AUTO``,
    a multiple of 8). Elsewhere (CPU, remote targets) ``auto`` is ``CPU_DEFAULT``."""
    if requested != "auto":
        return int(requested), "run.batch_size"
    from ..plugin.targets import NOISE

    device = getattr(target, "device", None)
    if getattr(device, "type", "cpu") != "cuda" or NOISE not in target.capabilities:
        return CPU_DEFAULT, f"auto: {CPU_DEFAULT} (no local GPU network to size it by)"
    import torch

    per_row = _probe_bytes_per_row(target)
    free, _total = torch.cuda.mem_get_info(device)
    rows = int(MEMORY_SHARE * free // max(per_row, 1))
    size = max(1, min(rows, MAX_AUTO, int(target.max_batch())))
    if size >= 8:
        size -= size % 8
    why = f"auto: {size} ({free / 2**30:.1f} GiB free, {per_row / 2**20:.1f} MiB per row measured)"
    return size, why


def _probe_bytes_per_row(target: Any) -> int:
    """Peak CUDA memory of one noise prediction on ``PROBE_ROWS`` blank images, per row (the
    target's counters are left as they were: the probe is not an audit query)."""
    import torch

    stats = target.stats
    before = (stats.nfe, stats.queries)
    x = torch.zeros(PROBE_ROWS, target.channels, target.image_size, target.image_size, device=target.device)
    torch.cuda.synchronize(target.device)
    torch.cuda.reset_peak_memory_stats(target.device)
    base = torch.cuda.memory_allocated(target.device)
    with torch.no_grad():
        z = target.encode(x)
        target.eps(z, target.num_train_timesteps // 2)
    torch.cuda.synchronize(target.device)
    peak = torch.cuda.max_memory_allocated(target.device) - base
    stats.nfe, stats.queries = before
    return int(peak // PROBE_ROWS)
