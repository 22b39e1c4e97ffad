"""What both reporters say, computed from results.json alone: verdicts, formatted metrics and the
optional blocks (copyright-mode ``set_inference``, ``sweeps``).

Everything here tolerates missing keys: a copyright-mode run, an older results.json or a
third-party attack may leave any block out, and a report must still render."""

from __future__ import annotations

import math
from typing import Any

from audit_core import LABEL_NAMES

try:  # the set_inference keys that are not attacks (older cores: the combined test only)
    from audit_core import SET_INFERENCE_BLOCKS
except ImportError:  # pragma: no cover - an audit-core without it
    SET_INFERENCE_BLOCKS = ("combined", "preflight", "sanity", "blind", "power")

#: the three conclusions of copyright mode (results.json ``set_inference.combined.conclusion``)
CONCLUSIONS = {"evidence": "leak", "no evidence": "none", "inconclusive": "inconclusive"}

#: keys of a ``set_inference`` block that are not attacks
SET_KEYS = frozenset({"combined", "blind", "power", "preflight", "sanity"})
#: the headline of each copyright-mode conclusion (results.json ``set_inference.combined.conclusion``)
CONCLUSION_TITLES = {
    "evidence": "Evidence that these images were used in training",
    "no evidence": "No evidence that these images were used in training",
    "inconclusive": "Inconclusive: this comparison cannot tell whether these images were used in training",
}
CONCLUSION_LEVELS = {"evidence": "leak", "no evidence": "none", "inconclusive": "inconclusive"}

#: (results.json key, column title)
METRICS: tuple[tuple[str, str], ...] = (
    ("auc", "AUC"),
    ("asr", "ASR"),
    ("tpr_at_1pct_fpr", "TPR@1%FPR"),
    ("tpr_at_0_1pct_fpr", "TPR@0.1%FPR"),
)


# ------------------------------------------------------------------------------------ numbers
def as_float(v: Any) -> float | None:
    """A finite float, or None (missing, null, non-numeric, NaN)."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def num(v: Any, digits: int = 3) -> str:
    f = as_float(v)
    if f is None:
        return "–"
    if math.isinf(f):
        return "∞" if f > 0 else "−∞"
    if f != 0 and (abs(f) >= 1e5 or abs(f) < 10 ** -digits):
        return f"{f:.{digits - 1}e}"
    return f"{f:.{digits}f}"


def count(v: Any) -> str:
    """An integer-ish quantity (NFEs, queries): no decimals when whole."""
    f = as_float(v)
    if f is None:
        return "–"
    if math.isinf(f):
        return "∞"
    return f"{f:,.0f}" if abs(f - round(f)) < 1e-9 else f"{f:,.2f}"


def seconds(v: Any) -> str:
    f = as_float(v)
    if f is None:
        return "–"
    if f < 10:
        return f"{f:.2f}"
    if f < 3600:
        return f"{f:.0f}"
    return f"{f / 3600:.1f} h"


def when(v: Any) -> str:
    """An ISO timestamp as ``2026-11-29 10:38 UTC`` (the string as it is when it does not parse)."""
    import datetime as dt

    if not v:
        return ""
    try:
        t = dt.datetime.fromisoformat(str(v))
    except ValueError:
        return str(v)
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc)
        return t.strftime("%Y-%m-%d %H:%M UTC")
    return t.strftime("%Y-%m-%d %H:%M")


def pval(v: Any) -> str:
    f = as_float(v)
    if f is None:
        return "–"
    return f"{f:.3g}" if f >= 1e-3 else f"{f:.2e}"


def ci(m: Any, digits: int = 3) -> str:
    """``[lo, hi]`` of a metric dict, or ''."""
    lo, hi = ci_bounds(m)
    if lo is None or hi is None:
        return ""
    return f"[{num(lo, digits)}, {num(hi, digits)}]"


def metric(entry: dict, key: str) -> dict | None:
    """``entry["metrics"][key]`` when it has a usable value, else None."""
    m = (entry.get("metrics") or {}).get(key) if isinstance(entry, dict) else None
    if not isinstance(m, dict) or as_float(m.get("value")) is None:
        return None
    return m


def ci_bounds(m: Any) -> tuple[float | None, float | None]:
    """The 95 % interval of a metric dict as floats (None where missing or unusable)."""
    if not isinstance(m, dict) or not m:
        return None, None
    c = m.get("ci95")
    if not isinstance(c, (list, tuple)) or len(c) != 2:
        return None, None
    return as_float(c[0]), as_float(c[1])


def supported(m: dict | None) -> bool:
    return bool(m) and m.get("supported", True) is not False


# ------------------------------------------------------------------------------------ labels
def mode(results: dict) -> str:
    return str((results.get("run") or {}).get("mode") or "evaluation")


def group_names(results: dict) -> tuple[str, str]:
    """(positive, negative) label names as in scores.csv."""
    negative, positive = LABEL_NAMES["copyright" if mode(results) == "copyright" else "evaluation"]
    return positive, negative


def group_titles(results: dict) -> tuple[str, str]:
    return ("suspects", "reference") if mode(results) == "copyright" else ("members", "non-members")


def group_singular(results: dict) -> tuple[str, str]:
    """(positive, negative) names of one image, for display."""
    return ("suspect", "reference") if mode(results) == "copyright" else ("member", "non-member")


def evidence(entry: Any) -> bool | None:
    """Whether a set-level test entry (``p_value``, ``alpha``) found evidence: p <= alpha; None
    when either is missing."""
    if not isinstance(entry, dict):
        return None
    p, alpha = as_float(entry.get("p_value")), as_float(entry.get("alpha"))
    return None if p is None or alpha is None else p <= alpha


# ------------------------------------------------------------------------------------ verdicts
def attack_verdict(name: str, entry: dict, results: dict) -> dict[str, Any]:
    """``{"name", "level", "text"}``; level is one of leak | inverted | none | unknown
    (evaluation) or evidence | none | unknown (copyright, from ``set_inference``)."""
    if mode(results) == "copyright":
        si = (results.get("set_inference") or {}).get(name)
        if isinstance(si, dict):
            p, alpha = as_float(si.get("p_value")), as_float(si.get("alpha"))
            eff = as_float(si.get("effect_auc"))
            if p is None:
                return {"name": name, "level": "unknown", "text": str(si.get("verdict") or "not tested")}
            hit = bool(evidence(si))
            text = (
                f"{'evidence' if hit else 'no significant evidence'} that the suspects were trained on: "
                f"p = {pval(p)}{f' ≤ α = {alpha:g}' if hit else (f' > α = {alpha:g}' if alpha is not None else '')}"
                + (f", suspects outscore the reference with AUC {num(eff)}" if eff is not None else "")
                + (f"; {si['flagged']} of {si.get('n_suspects', '?')} suspects flagged" if "flagged" in si else "")
            )
            return {"name": name, "level": "evidence" if hit else "none", "text": text}
    auc = metric(entry, "auc")
    if auc is None:
        return {"name": name, "level": "unknown", "text": "no AUC recorded"}
    lo, hi = ci_bounds(auc)
    v = float(auc["value"])
    pos, neg = group_titles(results)
    if lo is None or hi is None:
        return {"name": name, "level": "unknown", "text": f"AUC {num(v)} (no confidence interval recorded)"}
    if lo > 0.5:
        strength = "strongly" if v >= 0.9 else ("clearly" if v >= 0.7 else "weakly but significantly")
        text = f"{strength} separates {pos} from {neg}: AUC {num(v)}, 95% CI {ci(auc)} (lower bound > 0.5)"
        t1 = metric(entry, "tpr_at_1pct_fpr")
        if t1 is not None:
            t_lo, _ = ci_bounds(t1)
            if not supported(t1):
                text += "; too few non-members to judge the 1% false-positive regime"
            elif t_lo is not None and t_lo > 0.01:
                text += f"; at 1% FPR it finds {pct(t1['value'])} of {pos} (CI {ci_pct(t1)})"
            else:
                text += "; no confident detections at 1% FPR"
        return {"name": name, "level": "leak", "text": text}
    if hi < 0.5:
        return {
            "name": name,
            "level": "inverted",
            "text": f"{pos} score lower than {neg}: AUC {num(v)}, 95% CI {ci(auc)} (upper bound < 0.5). "
            f"The attack's score direction looks reversed on this model; the sets still differ.",
        }
    return {
        "name": name,
        "level": "none",
        "text": f"no evidence of separation at 95% confidence: AUC {num(v)}, CI {ci(auc)} contains 0.5",
    }


def pct(v: Any) -> str:
    f = as_float(v)
    return "–" if f is None else f"{100 * f:.1f}%"


def ci_pct(m: dict) -> str:
    lo, hi = ci_bounds(m)
    return "" if lo is None or hi is None else f"[{pct(lo)}, {pct(hi)}]"


def headline(results: dict, verdicts: list[dict]) -> dict[str, str]:
    """The one-paragraph verdict at the top: ``{"level", "title", "text"}``."""
    attacks = results.get("attacks") or {}
    n = len(verdicts)
    if mode(results) == "copyright":
        si = results.get("set_inference") or {}
        comb = si.get("combined") if isinstance(si, dict) else None
        hits = [v["name"] for v in verdicts if v["level"] == "evidence"]
        if isinstance(comb, dict) and comb.get("conclusion") in CONCLUSION_LEVELS:
            return {
                "level": CONCLUSION_LEVELS[comb["conclusion"]],
                "title": CONCLUSION_TITLES[comb["conclusion"]],
                "text": " ".join(str(r) for r in comb.get("reasons") or []),
            }
        said = conclusion(results)
        if isinstance(comb, dict) and as_float(comb.get("p_value")) is not None:
            hit = bool(evidence(comb)) if said is None else said[0] == "evidence"
            return {
                "level": "leak" if hit else "none",
                "title": "Evidence that the suspect set was used for training"
                if hit
                else "No significant evidence that the suspect set was used",
                "text": str(comb.get("verdict") or ""),
            }
        if hits:
            return {
                "level": "leak",
                "title": "Evidence that the suspect set was used for training",
                "text": f"{len(hits)} of {n} attack(s) find the suspects score higher than the reference: {', '.join(hits)}.",
            }
        return {
            "level": "none" if n else "unknown",
            "title": "No significant evidence that the suspect set was used" if n else "No attack results",
            "text": "See each attack's set-level test below. Absence of evidence does not show the set was not used.",
        }
    if not n:
        return {"level": "unknown", "title": "No attack results", "text": "results.json lists no attacks."}
    leaks = [v for v in verdicts if v["level"] == "leak"]
    inverted = [v for v in verdicts if v["level"] == "inverted"]
    if leaks:
        best = max(leaks, key=lambda v: float(metric(attacks[v["name"]], "auc")["value"]))
        b = attacks[best["name"]]
        auc = metric(b, "auc")
        t1 = metric(b, "tpr_at_1pct_fpr")
        text = (
            f"{len(leaks)} of {n} attack(s) tell members from non-members at 95% confidence "
            f"(AUC confidence interval above 0.5): {', '.join(v['name'] for v in leaks)}. "
            f"Strongest: {best['name']} with AUC {num(auc['value'])} {ci(auc)}"
        )
        if t1 is not None and supported(t1):
            text += f" and TPR {pct(t1['value'])} at 1% FPR"
        text += "."
        return {"level": "leak", "title": "The model leaks training-set membership", "text": text}
    text = (
        f"None of the {n} attack(s) separates members from non-members at 95% confidence. This does not "
        f"prove the model private: stronger attacks or more images may still find a leak."
    )
    if inverted:
        text += f" {', '.join(v['name'] for v in inverted)}: members score significantly lower (reversed score)."
    return {"level": "inverted" if inverted else "none", "title": "No membership leak detected", "text": text}


# ------------------------------------------------------------------------------------ rows
def metrics_rows(results: dict) -> list[dict[str, Any]]:
    """One row per attack for the metrics table (strings, plus flags for styling)."""
    rows = []
    for name, a in (results.get("attacks") or {}).items():
        if not isinstance(a, dict):
            continue
        rows.append(
            {
                "name": name,
                "plugin": str(a.get("plugin") or ""),
                "scorer": str((a.get("scorer") or {}).get("kind") or "") if isinstance(a.get("scorer"), dict) else "",
                "cells": metric_cells(a.get("metrics")),
                "nfe": count(a.get("nfe_per_image")),
                "queries": count(a.get("queries_per_image")),
                "seconds": seconds(a.get("seconds")),
                "n": f"{a.get('n_members', '–')} / {a.get('n_nonmembers', '–')}",
            }
        )
    return rows


def metric_cells(metrics: Any) -> list[dict[str, Any]]:
    """The formatted METRICS of one ``metrics`` block: value, interval, supported flag, note."""
    cells = []
    for key, _title in METRICS:
        m = metric({"metrics": metrics if isinstance(metrics, dict) else {}}, key)
        cells.append(
            {
                "value": num(m["value"]) if m else "–",
                "ci": ci(m) if m else "",
                "supported": supported(m) if m else True,
                "note": str(m.get("note") or "") if m else "",
            }
        )
    return cells


def attack_entries(si: Any) -> dict[str, dict]:
    """The per-attack entries of a ``set_inference`` block (combined test and run-level blocks,
    e.g. the preflight, left out)."""
    if not isinstance(si, dict):
        return {}
    return {str(n): e for n, e in si.items() if n not in SET_INFERENCE_BLOCKS and isinstance(e, dict)}


def set_inference_rows(si: Any) -> list[dict[str, Any]]:
    """One row per attack of a ``set_inference`` block (the ``combined`` entry left out)."""
    rows = []
    for name, e in attack_entries(si).items():
        alpha = as_float(e.get("alpha"))
        rows.append(
            {
                "name": name,
                "n_suspects": e.get("n_suspects", "–"),
                "n_reference": e.get("n_reference", "–"),
                "flagged": e.get("flagged", "–"),
                "p_value": pval(e.get("p_value")),
                "p_adjusted": pval(e.get("p_adjusted")),
                "effect_auc": num(e.get("effect_auc")),
                "alpha": f"{alpha:g}" if alpha is not None else "–",
                "evidence": evidence(e),
                "entry": e,
            }
        )
    return rows


def sweep_rows(sweep: dict, params: list[str]) -> list[dict[str, Any]]:
    """One row per grid point of a ``sweeps`` entry, formatted."""
    pareto = {str(x) for x in sweep.get("pareto") or []}
    return [
        {
            "attack": str(p.get("attack", "")),
            "vals": sweep_values(p, params),
            "auc": num((p.get("auc") or {}).get("value")),
            "auc_ci": ci(p.get("auc")),
            "tpr": num((p.get("tpr_at_1pct_fpr") or {}).get("value")),
            "tpr_ci": ci(p.get("tpr_at_1pct_fpr")),
            "queries": count(p.get("queries_per_image")),
            "nfe": count(p.get("nfe_per_image")),
            "pareto": str(p.get("attack", "")) in pareto,
        }
        for p in sweep.get("points") or []
        if isinstance(p, dict)
    ]


def queries_curve_rows(results: dict) -> list[dict[str, Any]]:
    """The AUC-vs-queries curve of a run with an adaptive budget (fixed and adaptive sweep points on
    the same held-out images, cheapest first; :func:`audit_core.run.sweeps.queries_curve`), formatted;
    [] when the run has none or the block is not as expected."""
    from audit_core import queries_curve

    sw = results.get("sweeps")
    if not isinstance(sw, dict) or not sw:
        return []
    try:
        curve = queries_curve(sw)
    except (KeyError, TypeError, AttributeError):
        return []
    return [
        {
            "attack": str(r["attack"]),
            "budget": "adaptive" if r["adaptive"] else "fixed",
            "queries": f"{r['queries_per_image']:.2f}",
            "queries_all": f"{r['queries_per_image_all']:.2f}",
            "auc": num(r["auc"].get("value")), "auc_ci": ci(r["auc"]),
            "tpr": num(r["tpr_at_1pct_fpr"].get("value")), "tpr_ci": ci(r["tpr_at_1pct_fpr"]),
            "histogram": " ".join(f"{m}:{c}" for m, c in (r["histogram"] or {}).items()),
        }
        for r in curve
    ]


def sweep_values(point: dict, params: list[str]) -> list[str]:
    vals = point.get("values") or {}
    return [str(vals.get(p, "–")) for p in params]


# ------------------------------------------------------------------------------------ plain language
def run_warnings(results: dict) -> list[str]:
    """Everything the reader must see before trusting the numbers, each once: the run's notes
    (converted images, limits, ...) and the set-level tests' notes (a reference too small for
    alpha, ...), the latter with the attacks they concern."""
    info = results.get("run") if isinstance(results.get("run"), dict) else {}
    out = [str(n) for n in info.get("notes") or []]
    si = results.get("set_inference") if isinstance(results.get("set_inference"), dict) else {}
    by_note: dict[str, list[str]] = {}
    entries = attack_entries(si)
    for name, e in entries.items():
        for n in e.get("notes") or []:
            by_note.setdefault(str(n), []).append(str(name))
    n_tested = len(entries)
    for note, names in by_note.items():
        who = "every attack" if len(names) == n_tested and n_tested > 1 else ", ".join(names)
        out.append(f"{note[:1].upper()}{note[1:]} ({who}).")
    return out


def _best_set_test(si: dict) -> tuple[str, dict] | None:
    """The attack whose set-level test has the smallest p-value."""
    tested = [(n, e) for n, e in attack_entries(si).items() if as_float(e.get("p_value")) is not None]
    return min(tested, key=lambda ne: float(ne[1]["p_value"])) if tested else None


def _most_flagged(si: dict) -> tuple[str, dict] | None:
    """The attack that flags the most suspects individually."""
    tested = [(n, e) for n, e in attack_entries(si).items() if isinstance(e.get("flagged"), int)]
    return max(tested, key=lambda ne: ne[1]["flagged"]) if tested else None


INCONCLUSIVE = "Inconclusive: this comparison cannot tell whether these images were used in training"


def conclusion(results: dict) -> tuple[str, list[str]] | None:
    """Copyright mode's ``(conclusion, reasons)``: ``set_inference.combined.conclusion`` and
    ``reasons`` when the run wrote them; for an older run, "evidence" / "no evidence" from the
    combined p-value against alpha (reasons empty); None when nothing was tested."""
    si = results.get("set_inference") if isinstance(results.get("set_inference"), dict) else {}
    comb = si.get("combined") if isinstance(si.get("combined"), dict) else {}
    said = comb.get("conclusion")
    if said in CONCLUSIONS:
        reasons = comb.get("reasons")
        return str(said), [str(r) for r in reasons] if isinstance(reasons, list) else []
    hit = evidence(comb)
    if hit is None:
        best = _best_set_test(si)
        hit = evidence(best[1]) if best else None
    return None if hit is None else ("evidence" if hit else "no evidence", [])


def plain_verdict(results: dict, verdicts: list[dict]) -> dict[str, Any]:
    """The verdict for a reader who is not a statistician: ``{"level", "title", "lead", "means",
    "not_means"}``. The title answers "were these images used in training?"; ``means`` and
    ``not_means`` say what the result does and does not support."""
    info = results.get("run") if isinstance(results.get("run"), dict) else {}
    attacks = results.get("attacks") or {}
    n = len(verdicts)
    yes, no = "Evidence that these images were used in training", "No evidence that these images were used in training"
    if not n:
        return {"level": "unknown", "title": "No attack results", "lead": "results.json lists no attacks.", "means": "", "not_means": ""}
    if mode(results) == "copyright":
        si = results.get("set_inference") if isinstance(results.get("set_inference"), dict) else {}
        comb = si.get("combined") if isinstance(si.get("combined"), dict) else {}
        best = _best_set_test(si)
        ns, nr = info.get("n_suspects", "?"), info.get("n_reference", "?")
        src = comb if as_float(comb.get("p_value")) is not None else (best[1] if best else {})
        p, alpha = as_float(src.get("p_value")), as_float(src.get("alpha"))
        if p is None or alpha is None:
            return {
                "level": "unknown", "title": "Not tested", "lead": "No attack produced a set-level test (see the notes).",
                "means": "", "not_means": "",
            }
        how = f"{comb.get('method')}-combined over {len(comb.get('attacks') or [])} attacks" if src is comb and len(comb.get("attacks") or []) > 1 else f"attack {best[0]}" if best else ""
        flags = ""
        top = _most_flagged(si)
        if top:
            e = top[1]
            fpr, exp = as_float(e.get("per_image_fpr")), as_float(e.get("expected_false_flags"))
            flags = (
                f" Individually, {top[0]} flags {e.get('flagged', '?')} of the {e.get('n_suspects', ns)} suspects"
                + (f" at a {100 * fpr:.2g}% false-positive rate (about {exp:.1f} expected by chance)" if fpr is not None and exp is not None else "")
                + "."
            )
        said, reasons = conclusion(results) or ("evidence" if p <= alpha else "no evidence", [])
        if said == "inconclusive":
            return {
                "level": "inconclusive", "title": INCONCLUSIVE, "reasons": reasons,
                "lead": f"The membership test on its own gives p = {pval(p)} (α = {alpha:g}{', ' + how if how else ''}), "
                f"but the checks on the two sets do not let that count either way.",
                "means": "Something other than training may explain how the suspects score against the reference: the two "
                "sets differ in ways the images alone reveal (source, processing, size, or a generated reference). What to "
                "do next: build a reference closer to the suspects (same source, processing and size) and run "
                "`audit reference check` on it, then audit again.",
                "not_means": "It does not show that the suspects were used, and it does not show that they were not.",
            }
        if said == "evidence":
            return {
                "level": "leak", "title": yes, "reasons": reasons,
                "lead": f"The {ns} suspect images score higher than the {nr} reference images, more than chance explains "
                f"(p = {pval(p)} {'≤' if p <= alpha else '>'} α = {alpha:g}{', ' + how if how else ''}).",
                "means": "If the reference set is comparable to the suspects (same source, style and processing) and was "
                "certainly not used, the likeliest explanation is that the model was trained on the suspects or on "
                "near-copies of them." + flags,
                "not_means": "It does not say which suspects were used, or how many: the test concerns the set as a whole. "
                "A reference that differs systematically from the suspects (another scanner, era, size or a generated "
                "reference) can produce the same result.",
            }
        return {
            "level": "none", "title": no, "reasons": reasons,
            "lead": f"The {ns} suspect images do not score significantly higher than the {nr} reference images "
            f"(p = {pval(p)} {'>' if p > alpha else '≤'} α = {alpha:g}{', ' + how if how else ''}).",
            "means": "With these attacks and these images, the model treats the suspects like images it never saw." + flags,
            "not_means": "It does not show that the suspects were not used: the attacks may be too weak for this model, "
            "only a few suspects may have been used, or the sets may be too small (see the notes).",
        }
    nm, nn = info.get("n_members", "?"), info.get("n_nonmembers", "?")
    leaks = [v for v in verdicts if v["level"] == "leak"]
    inverted = [v for v in verdicts if v["level"] == "inverted"]
    not_proof = (
        "It does not prove that the model is private or that other images were not used: stronger attacks, "
        "more queries or more images may still find evidence."
    )
    if leaks:
        best = max(leaks, key=lambda v: float(metric(attacks[v["name"]], "auc")["value"]))
        auc = metric(attacks[best["name"]], "auc")
        t1 = metric(attacks[best["name"]], "tpr_at_1pct_fpr")
        v = float(auc["value"])
        found = (
            f" At a 1% false-alarm rate it finds {pct(t1['value'])} of the members."
            if t1 is not None and supported(t1) else ""
        )
        return {
            "level": "leak", "title": yes,
            "lead": f"{len(leaks)} of {n} attacks tell the {nm} training images (members) from {nn} images the model "
            f"never saw (non-members), more than chance explains (95% confidence).",
            "means": f"The model's outputs reveal which images were in its training set: anyone with the same access "
            f"could test whether a given image was used. The strongest attack, {best['name']}, ranks a random member "
            f"above a random non-member {100 * v:.0f}% of the time (AUC {num(v)}; 50% is guessing).{found}",
            "not_means": "It does not prove that any single image was used: individual flags have false positives. "
            "It does not show that the model reproduces its training images.",
        }
    if inverted:
        return {
            "level": "inverted", "title": no,
            "lead": f"None of the {n} attacks finds members more member-like than non-members; "
            f"{', '.join(v['name'] for v in inverted)} find the reverse (members score lower).",
            "means": "A reversed score means the attack's direction does not fit this model: the two sets differ, but "
            "not in the way a training-set leak would show. Check the attack's parameters before reading it as evidence.",
            "not_means": not_proof,
        }
    return {
        "level": "none", "title": no,
        "lead": f"None of the {n} attacks tells the {nm} members from the {nn} non-members beyond chance (95% confidence).",
        "means": "On this model, with these attacks and images, membership does not show in the scores.",
        "not_means": not_proof,
    }


def conclusion_verdict(comb: dict, how: str) -> dict[str, Any]:
    """:func:`plain_verdict` of a copyright run with a three-way ``conclusion``: its title and colour
    from the conclusion, its lead and meaning from the reasons."""
    c = comb["conclusion"]
    reasons = [str(r) for r in comb.get("reasons") or []]
    p, pa, alpha = as_float(comb.get("p_value")), as_float(comb.get("p_adjusted")), as_float(comb.get("alpha"))
    ps = f"p = {pval(p)}" + (f", shift-adjusted p = {pval(pa)}" if pa is not None else "") + (f", α = {alpha:g}" if alpha is not None else "")
    lead = (reasons[0] if reasons else "") + (f" ({how}; {ps})" if how else f" ({ps})")
    means = " ".join(reasons[1:])
    not_means = {
        "evidence": "It does not say which suspects were used, or how many: the test concerns the set as a whole. It "
        "rests on a reference that is comparable to the suspects after what the images alone explain.",
        "no evidence": "It does not show that the suspects were not used: the attacks may be too weak for this model, "
        "only a few suspects may have been used, or the sets may be too small (see the power figure).",
        "inconclusive": "It is neither evidence of use nor evidence of non-use: the reference differs from the suspects "
        "in ways that move the attacks' scores by themselves.",
    }[c]
    return {"level": CONCLUSION_LEVELS[c], "title": CONCLUSION_TITLES[c], "lead": lead, "means": means, "not_means": not_means}


def key_numbers(results: dict, verdicts: list[dict]) -> list[dict[str, str]]:
    """The few numbers under the verdict: ``{"value", "label", "sub"}`` tiles."""
    info = results.get("run") if isinstance(results.get("run"), dict) else {}
    attacks = {k: v for k, v in (results.get("attacks") or {}).items() if isinstance(v, dict)}
    out: list[dict[str, str]] = []
    if mode(results) == "copyright":
        si = results.get("set_inference") if isinstance(results.get("set_inference"), dict) else {}
        comb = si.get("combined") if isinstance(si.get("combined"), dict) else {}
        best = _best_set_test(si)
        if as_float(comb.get("p_value")) is not None:
            out.append({"value": pval(comb["p_value"]), "label": "p-value", "sub": f"{comb.get('method', '')}, α = {as_float(comb.get('alpha')) or 0:g}"})
        elif best:
            out.append({"value": pval(best[1]["p_value"]), "label": "p-value", "sub": f"{best[0]}, α = {as_float(best[1].get('alpha')) or 0:g}"})
        top = _most_flagged(si)
        if top:
            e = top[1]
            out.append({"value": f"{e.get('flagged', '–')} / {e.get('n_suspects', '–')}", "label": "suspects flagged", "sub": f"{top[0]}, expected by chance {num(e.get('expected_false_flags'), 1)}"})
        if best:
            out.append({"value": num(best[1].get("effect_auc")), "label": "effect (AUC)", "sub": f"{best[0]}; 0.5 = no difference"})
        out.append({"value": f"{info.get('n_suspects', '?')} + {info.get('n_reference', '?')}", "label": "images", "sub": "suspects + reference"})
        return out
    scored = [(n, metric(a, "auc")) for n, a in attacks.items()]
    scored = [(n, m) for n, m in scored if m is not None]
    if scored:
        name, auc = max(scored, key=lambda nm: float(nm[1]["value"]))
        nb = "\u00a0"  # an interval never breaks inside its brackets
        out.append({"value": num(auc["value"]), "label": "best AUC", "sub": f"{name}, 95% CI {ci(auc).replace(' ', nb)}"})
        t1 = metric(attacks[name], "tpr_at_1pct_fpr")
        if t1 is not None and supported(t1):
            out.append({"value": pct(t1["value"]), "label": "members found at 1% false alarms", "sub": f"{name}, CI {ci_pct(t1).replace(' ', nb)}"})
    leaks = sum(v["level"] == "leak" for v in verdicts)
    out.append({"value": f"{leaks} / {len(verdicts)}", "label": "attacks with evidence", "sub": "AUC interval above 0.5"})
    out.append({"value": f"{info.get('n_members', '?')} + {info.get('n_nonmembers', '?')}", "label": "images", "sub": "members + non-members"})
    return out
