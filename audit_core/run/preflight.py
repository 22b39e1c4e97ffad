"""Checks of a prepared run that need the data, the target and the attacks together, run before
the first query: the minimum set sizes of entries fitted on the calibration split (learned
scorer, ensembles, calibrated params), a lower bound on the memory one batch needs
(``run.batch_size`` x variations per image), and a warning when members and non-members share
identical files (the audit then cannot tell them apart).

Refusals are ``ConfigError`` (exit 2) naming the key and the numbers; warnings are printed and
kept in results.json (``run.notes``)."""

from __future__ import annotations

import os
from typing import Any

from ..base.errors import ConfigError
from ..base.records import content_hash  # the one content digest (also importable here, as before)
from ..plugin.prepared import ROW_PARAMS, rows_per_image  # noqa: F401  (they lived here)

#: float32 copies of every variation row alive at once in a scoring step (the repeated input,
#: the noise, the noised image, the model's output, the returned variation, their mean):
#: a lower bound, the model's own activations come on top
WORK_COPIES = 6


def physical_memory() -> int | None:
    """Bytes of RAM on this machine (None when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def estimate(batch_size: int, rows: int, channels: int, image_size: int) -> int:
    """Lower bound in bytes of the memory one scoring step needs: ``batch_size * rows`` float32
    images of ``channels x image_size x image_size``, ``WORK_COPIES`` times."""
    return int(batch_size) * int(rows) * int(channels) * int(image_size) ** 2 * 4 * WORK_COPIES


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_memory(
    loaded: Any, attacks: list, target: Any, limit: int | None = None, batch_size: int | None = None
) -> None:
    """Refuse (ConfigError) an attack whose batch cannot fit in this machine's memory.
    ``batch_size`` is the run's resolved batch size (``run.batch_size: auto`` resolved against
    the target); without it the configured value is used, and an unresolved ``auto`` is skipped."""
    limit = physical_memory() if limit is None else limit
    if not limit:
        return
    configured = loaded.cfg.run.batch_size
    bs = configured if batch_size is None else batch_size
    if isinstance(bs, bool) or not isinstance(bs, int):
        return  # "auto" not resolved yet: nothing to estimate from
    shown = f"{bs} (auto)" if configured == "auto" else f"{bs}"
    c, s = int(getattr(target, "channels", 3) or 3), int(getattr(target, "image_size", 0) or 0)
    if s <= 0:
        return
    for i, pa in enumerate(attacks):
        rows = rows_per_image(pa.attack, pa.params)
        need = estimate(bs, rows, c, s)
        if need > limit:
            raise ConfigError(
                f"attack {pa.name!r}: one batch needs at least {_gb(need)} of memory (run.batch_size {shown} x {rows} "
                f"variation(s) per image x {c}x{s}x{s} float32 x {WORK_COPIES} working copies), more than this "
                f"machine's {_gb(limit)}. Lower run.batch_size ({loaded.where('run', 'batch_size')}) or the "
                f"attack's n ({loaded.where('attacks')})."
            )


def classifier_minimum(fraction: float) -> int:
    """The fewest images of one class for ``scorer: classifier``: the calibration split takes
    ``max(1, round(n * fraction))`` of each class and at least one must remain for evaluation."""
    n = 2
    while n - max(1, int(round(n * fraction))) < 1:
        n += 1
    return n


def _splits(pa: Any) -> bool:
    """Whether a prepared entry is fitted on the calibration split (learned scorer, combining
    entry, params calibrated on labelled images): ``PreparedAttack.splits`` where there is one."""
    splits = getattr(pa, "splits", None)
    return bool(pa.cfg.learned if splits is None else splits)


def check_classifier_sizes(loaded: Any, data: Any, attacks: list) -> None:
    """Refuse an entry fitted on the calibration split (``scorer: classifier``, an ensemble, an
    attack calibrating its params) when a set is smaller than :func:`classifier_minimum`: no
    member or no non-member would be left to evaluate on."""
    users = [pa for pa in attacks if _splits(pa)]
    if not users:
        return
    fraction = loaded.cfg.inference.calibration_fraction
    need = classifier_minimum(fraction)
    n_pos = sum(1 for r in data.records if r.label == 1)
    n_neg = len(data.records) - n_pos
    if min(n_pos, n_neg) < need:
        names = ("suspects", "reference") if data.mode == "copyright" else ("members", "non-members")
        first = users[0]
        if first.cfg.learned:
            what, instead = "uses `scorer: classifier`, which", " or use `scorer: threshold`"
        elif getattr(first.cls, "combines", False):
            what, instead = "combines other entries' scores fitted on a calibration split, which", ""
        else:
            what, instead = "sets params from a calibration split of labelled images, which", ""
        raise ConfigError(
            f"attack {first.name!r} {what} needs at least {need} {names[0]} and {need} "
            f"{names[1]} (inference.calibration_fraction {fraction} trains on max(1, round(n x {fraction})) of each "
            f"and evaluates on the rest); the data has {n_pos} and {n_neg}. Add images{instead}."
        )


def _digest(record: Any) -> str | None:
    """The record's :func:`~audit_core.base.records.content_hash`; None when unreadable (the
    file checks report it)."""
    try:
        return content_hash(record)
    except (OSError, TypeError, ValueError):
        return None


def identical_across_sets(data: Any) -> str | None:
    """A warning when an image of the positive set has the same bytes as one of the other set."""
    pos: dict[str, str] = {}
    for r in data.records:
        if r.label == 1:
            h = _digest(r)
            if h:
                pos.setdefault(h, r.id)
    pairs = []
    for r in data.records:
        if r.label == 0:
            h = _digest(r)
            if h and h in pos:
                pairs.append((pos[h], r.id))
    if not pairs:
        return None
    names = ("suspect", "reference") if data.mode == "copyright" else ("member", "non-member")
    example = ", ".join(f"{a} = {b}" for a, b in pairs[:3])
    return (
        f"{len(pairs)} {names[1]} image(s) have exactly the same content as a {names[0]} image (e.g. {example}): "
        f"identical images get identical scores, so the two sets cannot be told apart there"
    )


def check(
    loaded: Any, data: Any, attacks: list, target: Any, console: Any = None, batch_size: int | None = None
) -> None:
    """Every check of this module, in the runner's preparation phase (before any query);
    ``batch_size`` is the resolved one (see :func:`check_memory`)."""
    check_classifier_sizes(loaded, data, attacks)
    check_memory(loaded, attacks, target, batch_size=batch_size)
    warning = identical_across_sets(data)
    if warning:
        data.notes.append(f"warning: {warning}")
        if console is not None:
            from . import console as term

            term.warn(console, warning)
