"""Copyright mode's parts of report.html: the checks shown above the per-suspect table (shift check
with its interval, data preflight, power figure, split-reference sanity check) and the
per-suspect table itself, one row per suspect with its thumbnail, file and, per attack, score,
per-image p-value and flag, sortable by any column.

Sorting is the report's only script: :data:`SORT_JS`, a few lines inlined in the page and allowed
by its sha256 in the Content-Security-Policy (``script-src 'sha256-...'``), so no other script, inline
or fetched, can run. Everything tolerates missing blocks: a run from an older core has no
preflight, blind baseline, power block or thumbnails, and the report still renders."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from . import images
from .summary import as_float, group_names, num, pval

#: sorts ``table.sortable`` by a header with ``data-col`` (click, or Enter/Space): numbers by
#: value (``data-v`` of the cell), text otherwise; empty values last either way
SORT_JS = """(function () {
  function key(row, col) { var c = row.cells[col]; return c ? c.getAttribute("data-v") : ""; }
  function sortBy(table, th) {
    var col = +th.getAttribute("data-col"), asc = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th[aria-sort]").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col), y = key(b, col);
      if (x === "" || y === "") { return x === y ? 0 : (x === "" ? 1 : -1); }
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("th[data-col]").forEach(function (th) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(table, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
      });
    });
  });
})();"""

#: the report's Content-Security-Policy; the copyright report adds its one script by hash
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

#: thumbnail side in the table (pixels)
THUMB_PX = 48


def script_csp() -> str:
    """The CSP that allows :data:`SORT_JS` (exactly that text) and nothing else."""
    digest = base64.b64encode(hashlib.sha256(SORT_JS.encode("utf-8")).digest()).decode("ascii")
    return f"{CSP}; script-src 'sha256-{digest}'"


def _interval(v: Any) -> str:
    if isinstance(v, (list, tuple)) and len(v) == 2 and as_float(v[0]) is not None and as_float(v[1]) is not None:
        return f"[{num(v[0], 2)}, {num(v[1], 2)}]"
    return ""


def _level_of_auc(auc: float | None, ci: Any) -> str:
    """"leak" when the images alone clearly separate the sets (interval, else value, from 0.8),
    "inconclusive" from 0.6, else "none"."""
    lo = as_float(ci[0]) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None
    x = lo if lo is not None else auc
    if x is None:
        return "unknown"
    return "leak" if x >= 0.8 else ("inconclusive" if x >= 0.6 else "none")


def checks(results: dict) -> dict[str, Any] | None:
    """The checks shown above the per-suspect table, formatted; None outside copyright mode."""
    info = results.get("run") if isinstance(results.get("run"), dict) else {}
    if info.get("mode") != "copyright":
        return None
    si = results.get("set_inference") if isinstance(results.get("set_inference"), dict) else {}
    ref = results.get("reference") if isinstance(results.get("reference"), dict) else {}
    out: dict[str, Any] = {"shift": [], "preflight": None, "power": None, "sanity": None}
    shift = []
    blind = si.get("blind") if isinstance(si.get("blind"), dict) else None
    if blind and as_float(blind.get("auc")) is not None:
        bits = [str(blind.get("method") or "a classifier trained on the images")]
        if blind.get("folds"):
            bits.append(f"{blind['folds']}-fold cross-fitted")
        if as_float(blind.get("overlap")) is not None:
            bits.append(f"share of suspects in common support with the reference {num(blind['overlap'], 2)}")
        shift.append({
            "what": "Blind baseline (images only)", "auc": num(blind["auc"], 2), "ci": _interval(blind.get("ci")),
            "how": "; ".join(bits), "level": _level_of_auc(as_float(blind["auc"]), blind.get("ci")),
        })
    sc = ref.get("shift_check") if isinstance(ref.get("shift_check"), dict) else None
    if sc:
        shift.append({
            "what": "Image statistics", "auc": num(sc.get("auc"), 2) if as_float(sc.get("auc")) is not None else "–",
            "ci": _interval(sc.get("ci")), "how": str(sc.get("note") or ""),
            "level": _level_of_auc(as_float(sc.get("auc")), sc.get("ci")),
        })
    out["shift"] = shift
    pre = si.get("preflight") if isinstance(si.get("preflight"), dict) else None
    if pre:
        rows = []
        s, r = pre.get("suspects") or {}, pre.get("reference") or {}
        for key, label in (("formats", "file format"), ("modes", "mode"), ("bit_depths", "bit depth")):
            rows.append({"label": label, "suspects": _counts(s.get(key), s.get("n")), "reference": _counts(r.get(key), r.get("n"))})
        rows.append({"label": "pixel size", "suspects": _sizes(s.get("sizes")), "reference": _sizes(r.get("sizes"))})
        rows.append({"label": "JPEG quality", "suspects": _quality(s.get("jpeg_quality")), "reference": _quality(r.get("jpeg_quality"))})
        out["preflight"] = {"warnings": [str(w) for w in pre.get("warnings") or []], "rows": rows}
    power = si.get("power") if isinstance(si.get("power"), dict) else None
    if power:
        n = power.get("images_needed")
        out["power"] = {
            "value": f"about {n}" if n is not None else "more than any size tried",
            "assumption": str(power.get("assumption") or ""), "source": str(power.get("source") or ""),
        }
    else:
        old = (si.get("combined") or {}).get("power") if isinstance(si.get("combined"), dict) else None
        if isinstance(old, dict) and isinstance(old.get("power_by_set_size"), dict):
            k = old.get("smallest_set_size")
            sizes = [int(x) for x in old["power_by_set_size"] if str(x).isdigit()]
            out["power"] = {
                "value": f"about {k}" if k is not None else f"more than {max(sizes)}" if sizes else "–",
                "assumption": "estimated by resampling the suspects themselves, so it assumes they are members and is optimistic "
                "when they are not (a run without a power block of its own)",
                "source": str(old.get("note") or ""),
            }
    sanity = si.get("sanity") if isinstance(si.get("sanity"), dict) else None
    if sanity:
        passed = sanity.get("passed")
        out["sanity"] = {
            "level": {True: "none", False: "leak"}.get(passed, "unknown"),
            "word": {True: "passed", False: "failed"}.get(passed, "not tested"),
            "p_value": pval(sanity.get("p_value")), "note": str(sanity.get("note") or ""),
        }
    return out


def _counts(counts: Any, n: Any) -> str:
    if not isinstance(counts, dict) or not counts:
        return "–"
    total = sum(v for v in counts.values() if isinstance(v, (int, float))) or 1
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in list(counts.items())[:4]) + (", …" if len(counts) > 4 else "")


def _sizes(s: Any) -> str:
    if not isinstance(s, dict) or not s.get("most_common"):
        return "–"
    if s.get("distinct") == 1:
        return str(s["most_common"])
    return f"{s.get('distinct')} sizes, {s.get('smallest')} to {s.get('largest')} (most common {s['most_common']})"


def _quality(q: Any) -> str:
    if not isinstance(q, dict) or as_float(q.get("median")) is None:
        return "–"
    return f"about {q['median']:.0f} ({q.get('min')}–{q.get('max')}, {q.get('n')} JPEGs)"


def suspect_table(run: Any, results: dict, attacks: list[str]) -> dict[str, Any] | None:
    """One row per suspect (thumbnail, file, per attack: score, per-image p-value, flagged) from
    scores.csv, most member-like first (smallest p-value of the first attack); None when there
    are no suspect rows (or no scores.csv)."""
    try:
        rows = run.scores
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    pos, _ = group_names(results)
    by_id: dict[str, dict[str, Any]] = {}
    seen: list[str] = []
    for r in rows:
        if r.get("label") != pos or r.get("split") == "calibration":
            continue
        name = str(r.get("attack"))
        if name not in seen:
            seen.append(name)
        item = by_id.setdefault(str(r.get("image_id")), {"path": str(r.get("path") or ""), "cells": {}})
        item["cells"][name] = r
    names = [a for a in attacks if a in seen] + [a for a in seen if a not in attacks]
    if not by_id:
        return None
    try:
        from audit_core import thumbnail_path
    except ImportError:  # an older core writes no thumbnails
        thumbnail_path = None  # type: ignore[assignment]
    out_rows = []
    for image_id, item in by_id.items():
        cells = []
        for name in names:
            r = item["cells"].get(name)
            score = as_float(r.get("score")) if r else None
            p = as_float(r.get("p_value")) if r else None
            flag = (r.get("flagged") if r else "") or ""
            cells.append({
                "score": num(score, 4), "score_v": "" if score is None else repr(score),
                "p": pval(p), "p_v": "" if p is None else repr(p),
                "flag": {"true": True, "false": False}.get(flag), "flag_v": {"true": "1", "false": "0"}.get(flag, ""),
            })
        path = item["path"]
        uri = images.data_uri(run.dir, thumbnail_path(image_id), THUMB_PX) if thumbnail_path else None
        out_rows.append({
            "id": image_id, "file": Path(path).name if path else image_id, "path": path or image_id, "thumb": uri, "cells": cells,
        })

    def order(row: dict) -> tuple:
        first = row["cells"][0] if row["cells"] else {}
        p = as_float(first.get("p_v"))
        s = as_float(first.get("score_v"))
        return (p if p is not None else 2.0, -(s if s is not None else float("-inf")), row["file"])

    out_rows.sort(key=order)
    return {"attacks": names, "rows": out_rows, "n": len(out_rows)}
