"""Copyright mode's split-reference sanity check: does the test say "no evidence" where there is none?

The reference is split in two halves by a seeded hash of the image ids (never by score), and one
half is tested as "suspects" against the other with exactly the run's tests (per attack, and the
combined test). Both halves are non-members from one source, so the result must be "no evidence".

What it shows, and what it cannot: because the split is random, two halves of a reference are
exchangeable whenever each image's score depends on that image alone, and the check then fails
with probability exactly ``alpha`` (at most), however mixed the reference is. So it is a check of
the pipeline, run on the auditor's own data: it shows what "no evidence" looks like there, that a
reference of this size can or cannot reach ``alpha``, and it fails beyond chance when scores
depend on something else than the image (a remote model that changes between calls, per-batch
settings, a broken cache). It says nothing about whether the reference resembles the *suspects*:
that is what the shift check, the blind baseline and the data preflight are for.

Two ways to run it, with the same split and the same numbers:

- ``audit reference check CONFIG``: scores only the reference (a run of its own, in
  ``reports/<run.name>-reference-check`` by default; images already in the query cache cost
  nothing), prints the result and exits 0 when it passes, 1 when it fails;
- ``inference.sanity: true`` in a copyright run: the check is computed from the reference scores
  the run has anyway (no extra query) and recorded as ``set_inference.sanity``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from typing import Any

from ..base.errors import DataError
from ..base.records import LABEL_NAMES, SET_INFERENCE_BLOCKS

SPLIT = "reference split in two halves by a seeded hash of the image ids (sha256 of seed and id); the first half tested as suspects against the second"


def first_half(ids: list[str], seed: int) -> set[str]:
    """The ``len(ids) // 2`` ids tested as "suspects": those with the smallest seeded hash."""
    key = {i: hashlib.sha256(f"{seed}\0reference-check\0{i}".encode()).hexdigest() for i in ids}
    return set(sorted(ids, key=lambda i: (key[i], i))[: len(ids) // 2])


def split_records(data: Any, seed: int) -> Any:
    """The run's data reduced to its reference, relabelled: the first half (:func:`first_half`)
    becomes the suspects, the rest the reference. Ids, and so every per-image seed, are kept."""
    ref = [r for r in data.records if r.label == 0]
    if len(ref) < 2:
        raise DataError(f"the reference check needs at least 2 reference images; data.reference has {len(ref)}")
    half = first_half([r.id for r in ref], seed)
    records = [
        dataclasses.replace(r, label=1 if r.id in half else 0, group="suspects" if r.id in half else "reference")
        for r in ref
    ]
    notes = list(data.notes) + [f"reference check: {len(half)} of the {len(ref)} reference images tested as suspects against the other {len(ref) - len(half)} ({SPLIT})"]
    return dataclasses.replace(data, records=records, notes=notes)


def outcome(block: dict[str, Any], alpha: float) -> dict[str, Any]:
    """The check's result from a ``set_inference`` block of half against half: ``{"conclusion",
    "passed", "p_value", "method", "alpha", "attacks", "n_suspects", "n_reference", "note"}``.
    It passes when the combined p-value (Bonferroni over the attacks with ``combine: none``) is
    above ``alpha``."""
    attacks = {n: e for n, e in block.items() if n not in SET_INFERENCE_BLOCKS and isinstance(e, dict)}
    tested = {n: e["p_value"] for n, e in attacks.items() if e.get("p_value") is not None}
    comb = block.get("combined") or {}
    p, method = comb.get("p_value"), comb.get("method")
    if p is None and tested:
        p, method = min(1.0, len(tested) * min(tested.values())), "bonferroni"
    any_entry = next(iter(attacks.values()), {})
    out: dict[str, Any] = {
        "p_value": p, "method": method, "alpha": alpha,
        "attacks": {n: {"p_value": e.get("p_value"), "effect_auc": e.get("effect_auc")} for n, e in attacks.items()},
        "n_suspects": any_entry.get("n_suspects"), "n_reference": any_entry.get("n_reference"), "split": SPLIT,
    }
    if p is None:
        out.update(conclusion="not tested", passed=None, note="no attack could be tested on the halves of the reference")
    elif p > alpha:
        out.update(
            conclusion="no evidence", passed=True,
            note=f"one half of the reference does not score differently from the other (p = {p:.3g} > alpha = {alpha:g})",
        )
    else:
        out.update(
            conclusion="evidence", passed=False,
            note=f"one half of the reference scores differently from the other (p = {p:.3g} <= alpha = {alpha:g}). "
            f"Two halves drawn at random do that at most {alpha:.0%} of the time when every score depends on its image "
            f"alone, so the scores here probably depend on something else too (a remote model that changed between calls, "
            f"per-batch settings, a damaged cache), and a verdict from them is not trustworthy. Find the cause before "
            f"auditing; do not rerun with other seeds until it passes",
        )
    return out


def sanity_block(rows: list, alpha: float, method: str, seed: int, permutations: int, exclude: set[str], skip: set[str]) -> dict[str, Any]:
    """``set_inference.sanity`` from a copyright run's score rows (reference rows only, in run
    order, relabelled into halves; copies, the run's rows are left alone). ``exclude``: entries left
    out of the combined test (combining entries), ``skip``: entries left out altogether (stage-2
    rescorings, which cover only a share of the reference)."""
    from ..copyright.inference import set_inference

    ref_name, sus_name = LABEL_NAMES["copyright"]
    ref_rows = [r for r in rows if r.label == ref_name and r.attack not in skip]
    half = first_half(list(dict.fromkeys(r.image_id for r in ref_rows)), seed)
    relabelled = []
    for r in ref_rows:
        c = copy.copy(r)
        c.label = sus_name if r.image_id in half else ref_name
        relabelled.append(c)
    if not half or len(half) == len({r.image_id for r in ref_rows}):
        return {**outcome({}, alpha), "note": "the reference check needs at least 2 reference images"}
    return outcome(set_inference(relabelled, alpha, method, seed, permutations, exclude), alpha)
