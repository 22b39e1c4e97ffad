"""Copyright mode's conclusion: ``"evidence"``, ``"no evidence"`` or ``"inconclusive"``, with reasons.

The set-level tests of :mod:`audit_core.inference` are valid when the suspects and the reference come
from one distribution apart from membership. When they do not (a noisier scanner, JPEG, another
generator), every attack's scores move with the difference and a small p-value measures the shift.
So "evidence" is concluded only when the membership signal survives the checks of the blind
baseline (:mod:`audit_core.copyright.blind`):

- **no common support** (fewer than ``inference.min_overlap`` of the suspects look like any reference
  image to the blind classifier), or a blind AUC (or the 14-statistic shift check) at or above
  ``inference.max_shift_auc`` (0.8): the sets are too different for either the plain or an adjusted
  test to be read; the conclusion is ``"inconclusive"`` whatever the p-values;
- otherwise ``"evidence"`` needs **both** the plain combined test and the **shift-adjusted** test
  (the suspects' residuals, after regressing each attack's score on the blind features on the
  reference alone, cross-fitted, against the reference's) to reach ``p <= alpha``. Requiring both is an
  intersection-union test: its false-positive rate is at most ``alpha`` when *either* test is valid
  (the plain one when there is no shift; the adjusted one under a shift the features capture);
- neither rejects: ``"no evidence"``; exactly one rejects: ``"inconclusive"``.

The **power figure** (``set_inference.power``) never resamples the suspects: it takes a per-image AUC
of the combined statistic, measured on a labelled calibration pair (``inference.power_calibration``:
an evaluation-mode run's scores.csv of the same model) or assumed (``inference.power_auc``, 0.75),
and simulates sets of true members under a binormal model against a reference of this run's size.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ..base.errors import ConfigError
from ..base.records import LABEL_NAMES, SET_INFERENCE_BLOCKS

EVIDENCE, NO_EVIDENCE, INCONCLUSIVE = "evidence", "no evidence", "inconclusive"
CONCLUSIONS = (EVIDENCE, NO_EVIDENCE, INCONCLUSIVE)
NEAR_ONE = 0.95  # blind or shift-check AUC at which the images alone tell the sets apart almost perfectly
#: default ``inference.max_shift_auc``: from this blind (or shift-check) AUC on, the sets are too different
#: for the adjusted test to be trusted (benchmarks/copyright_null_shift.py: JPEG and brightness shifts
#: at blind AUC 0.9-0.95 still gave false evidence after adjustment; true members stayed below 0.75)
MAX_SHIFT_AUC = 0.8
#: set_inference keys that are not attacks
NOT_ATTACKS = frozenset(SET_INFERENCE_BLOCKS)  # combined, blind, power, preflight, sanity
NEXT_STEP = (
    "Next: build a reference closer to the suspects (same source, style, size and processing; real rather than "
    "generated) and run the split-reference check on it (`audit reference check`), then audit again."
)
POWER_SIZES = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 500)
POWER_TARGET = 0.8
POWER_DRAWS = 400


def headline(conclusion: str | None) -> str:
    """The one-line headline of a conclusion: the wording every view (terminal, report, summary.md)
    takes from here."""
    return {
        EVIDENCE: "Evidence that the suspect set was used for training",
        NO_EVIDENCE: "No significant evidence that the suspect set was used",
        INCONCLUSIVE: "Inconclusive: these sets cannot tell membership from other differences between them",
    }.get(conclusion or "", "Not tested")


# --------------------------------------------------------------------------------- adjusted tests
def _tested(rows: list) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, scores, suspect mask) of one attack's tested rows (a learned scorer's calibration split left out)."""
    sus_name = LABEL_NAMES["copyright"][1]
    used = [r for r in rows if r.split != "calibration"]
    return [r.image_id for r in used], np.array([float(r.score) for r in used]), np.array([r.label == sus_name for r in used])


def adjusted_test(baseline: Any, rows: list, seed: int = 0) -> dict[str, Any] | None:
    """One attack's shift-adjusted test: its cross-fitted residuals (:meth:`Baseline.residuals`), the
    suspects in common support against every reference image, one-sided Mann-Whitney U."""
    from .inference import set_test

    ids, s, sus = _tested(rows)
    if baseline is None or not sus.any() or sus.all() or any(i not in baseline.index for i in ids):
        return None
    res = baseline.residuals(ids, s)
    keep = sus & baseline.in_support_of(ids)
    if not keep.any():
        return {"p_adjusted": None, "n_adjusted": 0}
    t = set_test(res[keep], res[~sus], seed)
    return {"p_adjusted": t["p_value"], "effect_auc_adjusted": t["effect_auc"], "n_adjusted": int(keep.sum())}


def adjusted_rank_p(baseline: Any, rows_by_attack: dict[str, list], seed: int, permutations: int) -> float | None:
    """The rank combination's test (:mod:`audit_core.rank_test`) on the attacks' residuals: images
    every attack tested, suspects outside common support left out."""
    from ..stats.rank_test import permutation_test, pooled_rank_statistic

    if baseline is None or not rows_by_attack:
        return None
    tested = {n: dict(zip(*_tested(rows)[:2])) for n, rows in rows_by_attack.items()}
    sus_of = {}
    for rows in rows_by_attack.values():
        ids, _, sus = _tested(rows)
        sus_of.update(zip(ids, sus))
    names = list(tested)
    ids = [i for i in tested[names[0]] if all(i in tested[n] for n in names) and i in baseline.index]
    sus = np.array([sus_of[i] for i in ids], dtype=bool)
    if not sus.any() or sus.all():
        return None
    table = np.column_stack([baseline.residuals(ids, np.array([tested[n][i] for i in ids])) for n in names])
    keep = ~sus | (sus & baseline.in_support_of(ids))
    if not (sus & keep).any():
        return None
    return float(permutation_test(pooled_rank_statistic(table[keep]), sus[keep], permutations, seed)["p_value"])


def combined_adjusted(block: dict[str, Any], rows: list, baseline: Any, method: str, alpha: float, seed: int,
                      permutations: int, exclude: set[str] | frozenset[str], stage2: tuple[list[str], set[str]] | None) -> float | None:
    """The combined shift-adjusted p-value, combined the way the plain one is (rank: the permutation
    test of the residuals' pooled ranks; bonferroni/fisher: of the per-attack adjusted p-values; none:
    Bonferroni), with the two-stage rule when a second stage ran."""
    from .inference import combine
    from .two_stage import two_stage_p

    attacks = [n for n in block if n not in NOT_ATTACKS and block[n].get("p_adjusted") is not None]
    by_attack: dict[str, list] = {}
    for r in rows:
        by_attack.setdefault(r.attack, []).append(r)
    if method == "rank":
        p1 = adjusted_rank_p(baseline, {n: by_attack[n] for n in attacks if n not in exclude}, seed, permutations)
    else:
        p1 = combine({n: block[n]["p_adjusted"] for n in attacks if n not in exclude},
                     "bonferroni" if method == "none" else method, alpha).get("p_value")
    ts = (block.get("combined") or {}).get("two_stage")
    if ts is None or p1 is None:
        return p1
    p2 = None
    if ts.get("stage2_ran") and stage2 is not None:
        names, ids = stage2
        p2 = adjusted_rank_p(baseline, {n: [r for r in by_attack.get(n, []) if r.image_id in ids] for n in names}, seed, permutations)
    return two_stage_p(p1, p2)


# --------------------------------------------------------------------------------- the conclusion
def decide(p_plain: float | None, p_adjusted: float | None, alpha: float, blind: dict[str, Any] | None,
           shift_auc: float | None, min_overlap: float, max_shift_auc: float = MAX_SHIFT_AUC) -> tuple[str, list[str]]:
    """``(conclusion, reasons)`` from the combined plain and adjusted p-values and the blind baseline
    (``set_inference.blind``) and shift check (see the module notes for the rule)."""
    from .blind import describe_strength

    if p_plain is None:
        return INCONCLUSIVE, ["No set-level test could be computed (too few suspects or reference images).", NEXT_STEP]
    plain = f"combined p = {p_plain:.3g}"
    adj = f"shift-adjusted p = {p_adjusted:.3g}" if p_adjusted is not None else "no shift-adjusted p-value"
    if blind is None:
        if p_plain <= alpha:
            return INCONCLUSIVE, [
                f"The suspects score higher than the reference ({plain} <= alpha = {alpha:g}), but there are too few "
                f"images for the blind baseline, so a difference between the sets cannot be ruled out.", NEXT_STEP]
        return NO_EVIDENCE, [f"The suspects do not score significantly higher than the reference ({plain} > alpha = {alpha:g}).",
                             "Too few images for the blind baseline: the sets' comparability was not checked."]
    images = describe_strength(blind["auc"], blind["ci"])
    images = images[:1].upper() + images[1:] + f"; {blind['overlap']:.0%} of the suspects lie in common support."
    worst = max(blind["auc"], shift_auc if shift_auc is not None else 0.0)
    if worst >= max_shift_auc:
        which = "the blind baseline" if blind["auc"] >= worst else "the shift check on image statistics"
        how = "almost perfectly" if worst >= NEAR_ONE else "well"
        return INCONCLUSIVE, [
            f"The images alone tell the suspects from the reference {how} ({which}: AUC {worst:.2f} >= {max_shift_auc:g}): "
            f"any attack's separation can come from that difference rather than from training, and at this level "
            f"the shift adjustment is not reliable ({plain}, {adj}).", images, NEXT_STEP]
    if blind["overlap"] < min_overlap:
        return INCONCLUSIVE, [
            f"Only {blind['overlap']:.0%} of the suspects resemble any reference image (common support below "
            f"{min_overlap:.0%}): adjusting for the difference would be extrapolation ({plain}, {adj}).", images, NEXT_STEP]
    hit_plain, hit_adj = p_plain <= alpha, p_adjusted is not None and p_adjusted <= alpha
    if hit_plain and hit_adj:
        return EVIDENCE, [
            f"The suspects score higher than the reference ({plain} <= alpha = {alpha:g}), and the signal survives "
            f"the shift adjustment ({adj}): what the images alone explain does not account for it.", images,
            "The test says neither which suspects nor how many were used."]
    if hit_plain:
        return INCONCLUSIVE, [
            f"The suspects score higher than the reference ({plain} <= alpha = {alpha:g}), but not once the scores "
            f"are adjusted for what the images alone explain ({adj} > alpha): the separation may come from a "
            f"difference between the sets rather than from training.", images, NEXT_STEP]
    if hit_adj:
        return INCONCLUSIVE, [
            f"Only the shift-adjusted test finds the suspects higher ({adj} <= alpha = {alpha:g}; {plain} > alpha): "
            f"a difference between the sets may be masking or mimicking a membership signal.", images, NEXT_STEP]
    return NO_EVIDENCE, [
        f"The suspects do not score significantly higher than the reference ({plain}, {adj}; alpha = {alpha:g}).", images,
        "This does not show the set was not used: the attacks may be too weak for this model, or only a few suspects "
        "may have been used (see the power figure)."]


# --------------------------------------------------------------------------------- power
def power_curve(per_image_auc: float, n_reference: int, alpha: float, seed: int = 0,
                target: float = POWER_TARGET, draws: int = POWER_DRAWS) -> tuple[int | None, dict[str, float]]:
    """Smallest set size of true members reaching ``p <= alpha`` in ``target`` of ``draws`` simulated
    sets (binormal scores with that AUC, a fresh reference of ``n_reference`` per set, the one-sided
    Mann-Whitney normal approximation), and the power at every size tried."""
    d = math.sqrt(2.0) * stats.norm.ppf(min(max(per_image_auc, 1e-6), 1 - 1e-6))
    rng = np.random.default_rng([seed, 0x9A])
    curve: dict[str, float] = {}
    for k in POWER_SIZES:
        x = rng.normal(d, 1.0, (draws, k))
        y = rng.normal(0.0, 1.0, (draws, n_reference))
        r = stats.rankdata(np.concatenate([x, y], axis=1), axis=1)
        u = r[:, :k].sum(axis=1) - k * (k + 1) / 2
        mu, sd = k * n_reference / 2, math.sqrt(k * n_reference * (k + n_reference + 1) / 12)
        power = float((stats.norm.sf((u - mu - 0.5) / sd) <= alpha).mean())
        curve[str(k)] = round(power, 3)
        if power >= target:
            return k, curve
    return None, curve


def calibration_auc(path: Path, attacks: list[str]) -> tuple[float, str]:
    """The per-image AUC of the rank combination of ``attacks`` on a labelled calibration pair: an
    evaluation-mode scores.csv (``attack, image_id, label (member | nonmember), score``); attacks
    matched by name, images every matched attack scored. Raises ValueError if nothing matches."""
    from .blind import auc
    from ..stats.rank_test import pooled_rank_statistic

    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_id: dict[str, dict] = {}
    for r in rows:
        if r.get("split") == "calibration":
            continue
        by_id.setdefault(r["image_id"], {"label": r["label"]})[r["attack"]] = float(r["score"])
    names = [n for n in attacks if any(n in v for v in by_id.values())]
    if not names:
        raise ValueError(f"{path} scores none of this run's attacks ({', '.join(attacks)})")
    ids = [i for i, v in by_id.items() if all(n in v for n in names)]
    labels = np.array([by_id[i]["label"] == "member" for i in ids])
    if labels.all() or not labels.any():
        raise ValueError(f"{path} needs both members and non-members (labels member / nonmember)")
    a = auc(pooled_rank_statistic(np.array([[by_id[i][n] for n in names] for i in ids])), labels.astype(int))
    return a, (f"per-image AUC {a:.3f} of the rank combination of {', '.join(names)}, measured on the labelled "
               f"calibration pair {path.name} ({int(labels.sum())} members, {int((~labels).sum())} non-members)")


def check_config(loaded: Any, mode: str) -> Path | None:
    """``inference.power_calibration``: in copyright mode only, an existing evaluation-mode scores.csv
    (or a run directory holding one). Returns its resolved path (ConfigError naming the line)."""
    spec = loaded.cfg.inference.power_calibration
    if spec is None:
        return None
    where = f"inference.power_calibration ({loaded.where('inference', 'power_calibration')})"
    if mode != "copyright":
        raise ConfigError(f"{where}: the power figure belongs to copyright mode (data: suspects/reference); remove it")
    path = Path(spec).expanduser()
    path = path if path.is_absolute() else Path(loaded.base_dir) / path
    if path.is_dir():
        path = path / "scores.csv"
    if not path.is_file():
        raise ConfigError(f"{where}: {path} does not exist; give an evaluation-mode run's scores.csv or its run directory")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            head = next(csv.reader(fh), [])
            labels = {r[head.index("label")] for r in csv.reader(fh) if len(r) == len(head)} if "label" in head else set()
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{where}: {path} cannot be read ({exc})") from None
    if not {"attack", "image_id", "label", "score"} <= set(head) or not {"member", "nonmember"} <= labels:
        raise ConfigError(
            f"{where}: {path} is not an evaluation-mode scores.csv (columns attack, image_id, label, score; labels "
            f"member and nonmember)")
    return path


def power_block(attacks: list[str], n_reference: int, alpha: float, seed: int, assumed_auc: float,
                calibration: Path | None) -> dict[str, Any]:
    """``set_inference.power``: how many true members a set needs for ``p <= alpha`` with 80 % power."""
    source, auc_value, assumption = "assumed", assumed_auc, None
    notes: list[str] = []
    if calibration is not None:
        try:
            auc_value, assumption = calibration_auc(calibration, attacks)
            source = "calibration"
        except (OSError, ValueError, KeyError) as exc:
            notes.append(f"the calibration pair could not be used ({exc}); the assumed AUC is used instead")
    if assumption is None:
        assumption = (f"an assumed per-image AUC of {assumed_auc:g} for true members against this reference "
                      f"(inference.power_auc; no labelled calibration pair given: inference.power_calibration)")
    needed, curve = power_curve(auc_value, n_reference, alpha, seed)
    out = {
        "images_needed": needed,
        "assumption": (f"{assumption}; every suspect a member, the reference ({n_reference} images) from the suspects' "
                       f"distribution; binormal scores, {POWER_DRAWS} simulated sets per size, 80% power at alpha = {alpha:g}"),
        "source": source,
        "per_image_auc": round(float(auc_value), 4),
        "target_power": POWER_TARGET,
        "alpha": alpha,
        "power_by_set_size": curve,
    }
    if notes:
        out["notes"] = notes
    return out


def describe_power(power: dict[str, Any]) -> str:
    """One line for the terminal and the report."""
    k = power.get("images_needed")
    size = f"about {k} images" if k is not None else f"more than {POWER_SIZES[-1]} images"
    return (f"a set of true members reaches p <= {power['alpha']:g} with 80% power from {size} "
            f"(per-image AUC {power['per_image_auc']:.2f}, {power['source']}: {power['assumption']})")


# --------------------------------------------------------------------------------- the whole block
def apply(block: dict[str, Any], rows: list, baseline: Any, *, alpha: float, method: str, seed: int, permutations: int,
          min_overlap: float, shift_auc: float | None, power_auc: float, power_calibration: Path | None,
          max_shift_auc: float = MAX_SHIFT_AUC,
          exclude: set[str] | frozenset[str] = frozenset(), stage2: tuple[list[str], set[str]] | None = None) -> dict[str, Any]:
    """Add to a ``set_inference`` block: ``p_adjusted`` per attack and in ``combined``, ``blind``,
    ``power``, and ``combined.conclusion`` / ``reasons`` (its ``verdict`` rewritten to match)."""
    out = {k: dict(v) for k, v in block.items()}
    by_attack: dict[str, list] = {}
    for r in rows:
        by_attack.setdefault(r.attack, []).append(r)
    for name, entry in out.items():
        if name in NOT_ATTACKS or entry.get("p_value") is None:
            continue
        adj = adjusted_test(baseline, by_attack.get(name, []), seed)
        entry.update(adj if adj is not None else {"p_adjusted": None})
    comb = out.get("combined", {})
    p_plain = comb.get("p_value")
    if p_plain is None and method == "none":  # each attack alone: Bonferroni over them for the conclusion
        ps = {n: e["p_value"] for n, e in out.items() if n not in NOT_ATTACKS and n not in exclude and e.get("p_value") is not None}
        p_plain = min(1.0, len(ps) * min(ps.values())) if ps else None
    p_adj = combined_adjusted(out, rows, baseline, method, alpha, seed, permutations, exclude, stage2)
    blind = baseline.block() if baseline is not None else None
    conclusion, reasons = decide(p_plain, p_adj, alpha, blind, shift_auc, min_overlap, max_shift_auc)
    comb.update(p_adjusted=p_adj, conclusion=conclusion, reasons=reasons,
                verdict=f"{headline(conclusion)}. " + " ".join(reasons))
    out["combined"] = comb
    if blind is not None:
        out["blind"] = blind
    n_ref = comb.get("n_reference") or next((e.get("n_reference") for n, e in out.items() if n not in NOT_ATTACKS and e.get("n_reference")), 0)
    attacks = comb.get("attacks") or [n for n in out if n not in NOT_ATTACKS]
    if n_ref:
        out["power"] = power_block(list(attacks), int(n_ref), alpha, seed, power_auc, power_calibration)
    return out
