"""Result blocks computed across attacks once scores are final: copyright-holder mode.

In copyright mode (``data: {suspects: ..., reference: ...}``) the auditor holds a set of works
("suspects") and reference images that were certainly *not* in the training data (e.g. made
after the model's release). Nothing here uses labelled members. Per attack:

- **per-image p-values** against the reference: ``p_i = (1 + #{reference >= s_i}) / (1 + n_ref)``.
  If suspect i is exchangeable with the reference (a non-member from the same distribution),
  ``P(p_i <= a) <= a`` for every a: this is the conformal / permutation p-value.
- **a calibrated threshold** at false-positive rate ``alpha``: a suspect is flagged exactly when
  ``p_i <= alpha``, i.e. when at most ``floor(alpha * (n_ref + 1)) - 1`` reference scores reach
  its score. So a non-member suspect is flagged with probability at most ``alpha`` (over the
  draw of the reference and the suspect). This is slightly stricter than "at most alpha of the
  reference above the threshold" (``metrics.threshold_at_fpr``), whose out-of-sample false-positive
  rate is ``(floor(alpha * n_ref) + 1) / (n_ref + 1)`` - up to twice alpha for a small reference.
  When the reference is too small (``n_ref + 1 < 1 / alpha``) no image can reach ``alpha``; the
  threshold is then the largest reference score and the note says which rate it does guarantee.
- **a set-level test**: one-sided Mann-Whitney U (suspect scores stochastically greater than the
  reference scores). Why this test: under the null hypothesis that suspects and reference come
  from one distribution (same source, same processing, none of them trained on) all images are
  exchangeable and the rank statistic has a known distribution, whatever the attack's score
  scale (scores are distances, losses, classifier outputs: skewed, heavy-tailed, not normal), so
  the p-value needs no distributional assumption; it is invariant to any monotone transform of
  the score; and its statistic is exactly the effect size we report, ``U / (n_s * n_r)`` = the
  AUC of suspects vs reference. Counting flagged suspects with a binomial test would not be
  valid: every flag is against the same reference, so flags are dependent.
- **combining attacks** (``inference.combine``): ``rank`` (default) averages every attack's pooled
  rank per image and calibrates the suspects' mean by permutation (:mod:`audit_core.rank_test`):
  valid under any dependence between attacks and more powerful than Bonferroni when they agree;
  it also estimates the smallest set of true members that would be flagged. Bonferroni
  (``min(1, m * min p)``) keeps the error rate under any dependence between attacks too; Fisher's method is more powerful when several
  attacks carry evidence but assumes independent p-values, and attacks scored on the same images
  are positively dependent, so its p-value can be too small.

The per-attack ``metrics`` block (AUC, ASR, TPR@FPR) of a copyright run compares suspects
(positive class) with the reference: it is a membership metric only if every suspect is a member.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from ..base.records import LABEL_NAMES

#: below this group size, ties make the normal approximation unreliable: use a permutation test
SMALL_SAMPLE = 10
PERMUTATIONS = 9999

ASSUMPTION = (
    "This assumes the reference images and the suspects come from the same distribution apart from "
    "membership (same source, style, size and processing) and that no reference image was used for "
    "training; any other systematic difference between the two sets can also produce a small p-value."
)


# --------------------------------------------------------------------------------- per image
def empirical_p_values(scores, reference_scores) -> np.ndarray:
    """``(1 + #{reference >= s}) / (1 + n_ref)`` for every score ``s`` (higher = member)."""
    ref = np.sort(np.asarray(reference_scores, dtype=np.float64))
    s = np.asarray(scores, dtype=np.float64)
    at_or_above = len(ref) - np.searchsorted(ref, s, side="left")
    return (1.0 + at_or_above) / (1.0 + len(ref))


def calibrated_threshold(reference_scores, alpha: float) -> dict[str, Any]:
    """The score threshold at false-positive rate ``alpha`` calibrated on the reference alone.

    ``score > threshold`` <=> the image's empirical p-value is <= alpha (see the module notes).
    Returns ``{"threshold", "per_image_fpr", "reference_fpr", "note"?}``: ``per_image_fpr`` is the
    false-positive rate the flag guarantees for a fresh non-member (``alpha``, or ``1/(n+1)`` when the
    reference is too small), ``reference_fpr`` the fraction of the reference above the threshold."""
    ref = np.sort(np.asarray(reference_scores, dtype=np.float64))[::-1]  # descending
    n = len(ref)
    if n == 0:
        raise ValueError("the reference is empty")
    allowed = math.floor(alpha * (n + 1) + 1e-9) - 1  # reference scores allowed at or above a flagged score
    out: dict[str, Any] = {}
    if allowed < 0:
        allowed = 0
        need = math.ceil(1 / alpha - 1 - 1e-9)
        out["note"] = (
            f"the reference ({n} images) is too small for alpha = {alpha:g}: the smallest possible "
            f"per-image p-value is 1/{n + 1} = {1 / (n + 1):.3g}. Flags mark suspects above every "
            f"reference score, which guarantees a false-positive rate of {1 / (n + 1):.3g}, not {alpha:g}; "
            f"use at least {need} reference images for alpha = {alpha:g}"
        )
        out["per_image_fpr"] = 1 / (n + 1)
    else:
        out["per_image_fpr"] = alpha
    thr = float(ref[allowed])
    out["threshold"] = thr
    out["reference_fpr"] = float((ref > thr).mean())
    return {"threshold": out.pop("threshold"), **out}


# --------------------------------------------------------------------------------- set level
def set_test(suspect_scores, reference_scores, seed: int = 0) -> dict[str, Any]:
    """One-sided Mann-Whitney U test (suspects > reference): ``{"p_value", "effect_auc", "test",
    "u_statistic", "min_p_value"}``."""
    x = np.asarray(suspect_scores, dtype=np.float64)
    y = np.asarray(reference_scores, dtype=np.float64)
    if len(x) == 0 or len(y) == 0:
        raise ValueError("the set-level test needs at least one suspect and one reference image")
    ties = len(np.unique(np.concatenate([x, y]))) < len(x) + len(y)
    if ties and min(len(x), len(y)) < SMALL_SAMPLE:
        method: Any = stats.PermutationMethod(n_resamples=PERMUTATIONS, rng=np.random.default_rng(seed))
        how = f"permutation distribution ({PERMUTATIONS} seeded resamples, or exact when fewer), because of ties in a small sample"
    elif not ties and min(len(x), len(y)) <= 8:
        method, how = "exact", "exact null distribution"
    else:
        method, how = "asymptotic", "normal approximation with tie and continuity correction"
    if ties and min(len(x), len(y)) == 1:  # scipy's permutation test needs two per side
        pvalue, how = _one_vs_many_p(x, y), "exact permutation distribution (every assignment of the single image enumerated), because of ties"
        u = float(_u_statistic(x, y))
    else:
        res = stats.mannwhitneyu(x, y, alternative="greater", method=method)
        pvalue, u = float(res.pvalue), float(res.statistic)
    return {
        "p_value": float(min(1.0, pvalue)),
        "effect_auc": u / (len(x) * len(y)),
        "u_statistic": u,
        # the smallest p-value any outcome could give (all suspects above all reference images)
        "min_p_value": 1.0 / math.comb(len(x) + len(y), len(x)),
        "test": f"one-sided Mann-Whitney U (suspect scores stochastically greater than reference scores), {how}",
    }


def _u_statistic(x: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney U of ``x`` over ``y``: pairs with x > y, ties counting one half."""
    return float((x[:, None] > y[None, :]).sum() + 0.5 * (x[:, None] == y[None, :]).sum())


def _one_vs_many_p(x: np.ndarray, y: np.ndarray) -> float:
    """Exact one-sided permutation p-value of U when one side holds a single image: the share of
    the ``len(x) + len(y)`` equally likely assignments of that image whose U is at least the
    observed one (ties included)."""
    pooled = np.concatenate([x, y])
    observed = _u_statistic(x, y)
    single_is_suspect = len(x) == 1
    hits = 0
    for i in range(len(pooled)):
        rest = np.delete(pooled, i)
        one = pooled[i : i + 1]
        u = _u_statistic(one, rest) if single_is_suspect else _u_statistic(rest, one)
        hits += u >= observed  # U is a sum of halves: exact in floating point
    return hits / len(pooled)


def verdict(p_value: float, alpha: float, effect_auc: float | None = None, what: str = "this attack") -> str:
    """A plain-language reading of a set-level p-value, stating the assumption."""
    auc = (
        f"; AUC {effect_auc:.2f}: a random suspect outscores a random reference image "
        f"{effect_auc:.0%} of the time" if effect_auc is not None else ""
    )
    if p_value <= alpha:
        return (
            f"Evidence that the suspect set was used for training: with {what} the suspects score "
            f"higher than the reference (p = {p_value:.3g} <= alpha = {alpha:g}{auc}). At least some "
            f"suspects look like training members; the test does not say which or how many. {ASSUMPTION}"
        )
    return (
        f"No significant evidence at alpha = {alpha:g} that the suspect set was used "
        f"(with {what}: p = {p_value:.3g}{auc}). This does not show the set was not used: the attack "
        f"may be too weak for this model or only a few suspects may have been used. {ASSUMPTION}"
    )


def combine(p_values: dict[str, float], method: str, alpha: float) -> dict[str, Any]:
    """Combine per-attack p-values: ``bonferroni`` | ``fisher`` | ``none``."""
    names = list(p_values)
    m = len(names)
    out: dict[str, Any] = {"method": method, "attacks": names, "n_attacks": m, "alpha": alpha}
    if method == "none" or m == 0:
        out.update(p_value=None, verdict="Attacks not combined (inference.combine: none): read each attack's verdict.")
        return out
    ps = np.array([p_values[n] for n in names], dtype=np.float64)
    if m == 1:
        out.update(p_value=float(ps[0]), note="a single attack: its p-value, nothing combined")
    elif method == "bonferroni":
        out["p_value"] = float(min(1.0, m * ps.min()))
        out["note"] = (
            f"Bonferroni: {m} x the smallest per-attack p-value; keeps the false-positive rate at alpha "
            f"whatever the dependence between attacks (conservative when they agree)"
        )
    elif method == "fisher":
        stat, p = stats.combine_pvalues(np.clip(ps, 1e-300, 1.0), method="fisher")
        out["p_value"] = float(p)
        out["statistic"] = float(stat)
        out["note"] = (
            f"Fisher's method (-2 sum log p against chi-square with {2 * m} degrees of freedom) assumes "
            f"independent p-values. The attacks score the same images, so their p-values are positively "
            f"dependent and this combined p-value can be too small (anti-conservative); use bonferroni "
            f"for a guaranteed error rate"
        )
    else:
        raise ValueError(f"unknown combination method {method!r}")
    what = f"attack {names[0]!r}" if m == 1 else f"{m} attacks combined ({method})"
    out["verdict"] = verdict(out["p_value"], alpha, None, what=what)
    return out


def copyright_inference(
    suspect_scores, reference_scores, alpha: float = 0.01, seed: int = 0, name: str | None = None
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The ``set_inference`` entry of one attack, plus the per-suspect p-values and flags."""
    s = np.asarray(suspect_scores, dtype=np.float64)
    r = np.asarray(reference_scores, dtype=np.float64)
    cal = calibrated_threshold(r, alpha)
    p_img = empirical_p_values(s, r)
    flags = s > cal["threshold"]
    test = set_test(s, r, seed)
    notes = [cal["note"]] if "note" in cal else []
    if test["min_p_value"] > alpha:
        notes.append(
            f"with {len(s)} suspects and {len(r)} reference images the set-level test cannot reach "
            f"alpha = {alpha:g} (smallest possible p = {test['min_p_value']:.3g}): add images"
        )
    entry = {
        "p_value": test["p_value"],
        "effect_auc": test["effect_auc"],
        "n_suspects": int(len(s)),
        "n_reference": int(len(r)),
        "alpha": alpha,
        "threshold": cal["threshold"],
        "flagged": int(flags.sum()),
        "verdict": verdict(test["p_value"], alpha, test["effect_auc"], f"attack {name!r}" if name else "this attack"),
        "test": test["test"],
        "u_statistic": test["u_statistic"],
        "per_image_fpr": cal["per_image_fpr"],
        "expected_false_flags": cal["per_image_fpr"] * len(s),
        "reference_above_threshold": cal["reference_fpr"],
        "notes": notes,
    }
    return entry, p_img, flags


def _loo_p_values(reference_scores) -> np.ndarray:
    """Leave-one-out p-values of the reference images (each against the others)."""
    r = np.asarray(reference_scores, dtype=np.float64)
    ref = np.sort(r)
    at_or_above = len(ref) - np.searchsorted(ref, r, side="left") - 1  # minus itself
    return (1.0 + at_or_above) / len(ref)


# --------------------------------------------------------------------------------- the results block
def set_inference(
    rows, alpha: float, method: str, seed: int, permutations: int = 9999, exclude: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Copyright mode's ``set_inference`` block from plain score rows, filling each row's
    ``flagged`` and ``p_value`` (scores.csv columns) in place.

    ``rows``: objects with ``attack``, ``image_id``, ``label`` (``suspect`` | ``reference``), ``score`` and
    ``split`` (e.g. :class:`audit_core.results.ScoreRow`). Suspect rows: flagged at the calibrated
    threshold and their p-value against the reference; reference rows: whether they exceed the
    threshold (the calibration's in-sample false positives) and their leave-one-out p-value; rows
    of a learned scorer's training split (``split == calibration``) take no part in the inference
    and keep empty values."""
    ref_name, sus_name = LABEL_NAMES["copyright"]
    by_attack: dict[str, list] = {}
    for row in rows:
        by_attack.setdefault(row.attack, []).append(row)
    block: dict[str, Any] = {}
    for name, group in by_attack.items():
        used = [row for row in group if row.split != "calibration"]
        sus = [row for row in used if row.label == sus_name]
        ref = [row for row in used if row.label == ref_name]
        if not sus or not ref:
            block[name] = {"p_value": None, "verdict": "not enough suspects or reference images to test", "notes": []}
            continue
        s = np.array([float(row.score) for row in sus])
        r = np.array([float(row.score) for row in ref])
        entry, p_img, flags = copyright_inference(s, r, alpha, seed, name)
        if len(used) < len(group):
            entry["notes"].append(
                "only the held-out (evaluation) split is tested; the images its learned scorer or combination "
                "was fitted on are left out"
            )
        for row, p, f in zip(sus, p_img, flags):
            row.flagged, row.p_value = ("true" if f else "false"), repr(float(p))
        for row, p, v in zip(ref, _loo_p_values(r), r):
            row.flagged, row.p_value = ("true" if v > entry["threshold"] else "false"), repr(float(p))
        block[name] = entry
    tested = {n: e["p_value"] for n, e in block.items() if e.get("p_value") is not None}
    if method == "rank":  # combining entries (ensembles) would count their components twice
        block["combined"] = rank_block(
            {n: g for n, g in by_attack.items() if n in tested and n not in exclude}, alpha, seed, permutations
        )
    else:
        block["combined"] = combine(tested, method, alpha)
    return block


def rank_block(rows_by_attack: dict[str, list], alpha: float, seed: int, permutations: int) -> dict[str, Any]:
    """``combine: rank``: the permutation test of the attacks' mean pooled rank on the images every
    attack tested (a learned scorer's or an ensemble's calibration rows are left out), with its
    verdict and the power estimate (:mod:`audit_core.rank_test`)."""
    from ..stats.rank_test import combined_rank_test

    names = list(rows_by_attack)
    empty = {"method": "rank", "attacks": names, "n_attacks": len(names), "alpha": alpha, "p_value": None}
    if not names:
        return {**empty, "verdict": "no attack could be tested"}
    _, sus_name = LABEL_NAMES["copyright"]
    tested = {
        n: {row.image_id: (row.label, float(row.score)) for row in rows if row.split != "calibration"}
        for n, rows in rows_by_attack.items()
    }
    ids = [i for i in tested[names[0]] if all(i in tested[n] for n in names)]
    suspect = np.array([tested[names[0]][i][0] == sus_name for i in ids], dtype=bool)
    if not suspect.any() or suspect.all():
        return {**empty, "verdict": "not enough suspects or reference images to test"}
    table = np.array([[tested[n][i][1] for n in names] for i in ids], dtype=np.float64)
    out = combined_rank_test(table, suspect, names, alpha, seed, permutations)
    what = f"attack {names[0]!r}" if len(names) == 1 else f"{len(names)} attacks combined (rank, permutation)"
    out["verdict"] = verdict(out["p_value"], alpha, None, what=what)
    return out
