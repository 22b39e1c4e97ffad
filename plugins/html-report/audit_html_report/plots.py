"""The report's figures as inline SVG. ROC curves and score histograms (every report) are drawn
directly by ``svgchart``: no matplotlib import, milliseconds per figure. The ablation plots (sweep
runs only) are matplotlib figures (no pyplot, no global state, no files), serialised as below.

Each figure comes back as ``Markup`` holding one ``<svg class="plot">`` element ready to inline in
HTML: the XML prolog, DOCTYPE, metadata and namespace declarations are dropped (the HTML parser
supplies the SVG namespace), ``xlink:href`` becomes ``href``, text stays text (``svg.fonttype:
none``) and element ids are salted per figure, so several plots on one page never share an id.
Text such as attack names is escaped by matplotlib's SVG writer; mathtext is off, so a ``$`` in a
name is drawn as is."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from markupsafe import Markup, escape

from . import summary
from .svgchart import Chart, Scale
from .summary import as_float

PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
    "#7f7f7f", "#aec7e8", "#ff9896", "#98df8a", "#ffbb78", "#c5b0d5", "#c49c94", "#f7b6d2", "#9edae5",
)
MEMBER_COLOR, NONMEMBER_COLOR = "#d62728", "#1f77b4"

_RC = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "path.simplify": True,
    "path.simplify_threshold": 0.2,
}


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


@contextmanager
def _style(salt: str) -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context({**_RC, "svg.hashsalt": salt}):
        yield


def _figure(w: float, h: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_XMLNS = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')
_SIZE = re.compile(r'\s+(width|height)="[^"]*"')


def to_svg(fig: Any, label: str) -> Markup:
    """Serialise ``fig`` (inside the ``_style`` block that made it) as an inline ``<svg class="plot">``."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = _METADATA.sub("", _PROLOG.sub("", buf.getvalue(), count=1))
    head_end = text.index(">")
    head = _SIZE.sub("", _XMLNS.sub("", text[:head_end]))
    head = head.replace("<svg", f'<svg class="plot" role="img" aria-label="{escape(label)}"', 1)
    text = head + text[head_end:]
    text = text.replace("xlink:href=", "href=")
    return Markup(text.strip())


def _plain_log_ticks(axis: Any) -> None:
    """Log-axis labels as plain numbers (the default formatter emits mathtext, which is off)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _finite(values: Sequence[Any]) -> np.ndarray:
    """Floats, NaN where a value is missing or not a number."""
    return np.array([np.nan if (f := as_float(v)) is None else f for v in values], dtype=np.float64)


# ------------------------------------------------------------------------------------ ROC
def _roc(entry: dict) -> tuple[np.ndarray, np.ndarray] | None:
    roc = entry.get("roc") if isinstance(entry, dict) else None
    if not isinstance(roc, dict):
        return None
    fpr, tpr = roc.get("fpr"), roc.get("tpr")
    if not isinstance(fpr, list) or not isinstance(tpr, list) or len(fpr) != len(tpr) or len(fpr) < 2:
        return None
    f, t = _finite(fpr), _finite(tpr)
    ok = np.isfinite(f) & np.isfinite(t)
    if ok.sum() < 2:
        return None
    return np.clip(f[ok], 0, 1), np.clip(t[ok], 0, 1)


def roc_plots(attacks: dict[str, dict], titles: tuple[str, str] = ("members", "non-members")) -> list[Markup]:
    """ROC curves of every attack: linear axes, then log-log (the low-FPR regime). Drawn as
    inline SVG directly (svgchart), one path per curve."""
    curves = []
    for i, (name, entry) in enumerate(attacks.items()):
        r = _roc(entry)
        if r is not None:
            auc = summary.metric(entry, "auc")
            v = float(auc["value"]) if auc else None
            curves.append((i, name, r[0], r[1], v, entry))
    if not curves:
        return []
    pos, neg = titles
    lin = Chart(
        Scale(0, 1), Scale(0, 1), "ROC (linear)", f"false-positive rate ({neg} flagged)",
        f"true-positive rate ({pos} found)", "ROC curves, linear axes", height=340,
    )
    lin.line([0, 1], [0, 1], "#999", 1, dash="5 4", legend="chance")
    for i, name, f, t, v, _ in curves:
        lin.line(f, t, color(i), legend=f"{name} (AUC {v:.3f})" if v is not None else name)
    n_neg = min((int(e.get("n_nonmembers") or 0) for *_, e in curves), default=0) or 1000
    n_pos = min((int(e.get("n_members") or 0) for *_, e in curves), default=0) or 1000
    xlo = min(1e-3, 0.5 / max(n_neg, 1))
    ylo = min(1e-3, 0.5 / max(n_pos, 1))
    log = Chart(
        Scale(xlo, 1, log=True), Scale(ylo, 1, log=True), "ROC (log-log: the low-FPR regime)",
        "false-positive rate (log)", "true-positive rate (log)", "ROC curves, log-log axes", height=340,
    )
    log.line([xlo, 1], [xlo, 1], "#999", 1, dash="5 4", legend="chance")
    for i, name, f, t, _v, _ in curves:
        log.line(np.maximum(f, xlo), np.maximum(t, ylo), color(i), legend=name)
    for level, txt in ((0.01, "1%"), (0.001, "0.1%")):
        if level >= xlo:
            log.vline(level, "#666", dash="2 3", text=f"FPR {txt}")
    return [lin.svg(), log.svg()]


# ------------------------------------------------------------------------------------ histograms
def histogram(
    name: str,
    index: int,
    positives: Sequence[float],
    negatives: Sequence[float],
    titles: tuple[str, str],
    threshold: float | None = None,
    threshold_label: str = "",
) -> Markup:
    """Score distributions of the two groups (fractions of each group, shared bins), as inline
    SVG: one filled step outline per group (numpy bins the scores)."""
    p = np.asarray(positives, dtype=np.float64)
    n = np.asarray(negatives, dtype=np.float64)
    p, n = p[np.isfinite(p)], n[np.isfinite(n)]
    both = np.concatenate([p, n])
    xlabel = "score (higher = more member-like)"
    if not len(both):
        chart = Chart(Scale(0, 1), Scale(0, 1), name, xlabel, "fraction of group", f"score histogram of {name}", height=260)
        return chart.svg(extra_marks=['<text x="230" y="130" text-anchor="middle">no finite scores</text>'])
    lo, hi = float(both.min()), float(both.max())
    q_lo, q_hi = (float(q) for q in np.quantile(both, [0.01, 0.99]))
    clipped = 0
    if q_hi > q_lo and (hi - lo) > 1.5 * (q_hi - q_lo):  # a long tail would squash the bulk
        lo, hi = q_lo, q_hi
        clipped = int(((both < lo) | (both > hi)).sum())
        p, n = np.clip(p, lo, hi), np.clip(n, lo, hi)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.histogram_bin_edges(both, bins=min(40, max(8, int(math.sqrt(len(both))))), range=(lo, hi))
    groups = []
    for arr, col, label in ((n, NONMEMBER_COLOR, titles[1]), (p, MEMBER_COLOR, titles[0])):
        if len(arr):
            groups.append((np.histogram(arr, bins=edges)[0] / len(arr), col, f"{label} (n={len(arr)})"))
    top = max(float(h.max()) for h, _, _ in groups)
    chart = Chart(
        Scale(float(edges[0]), float(edges[-1])), Scale(0, top * 1.35 or 1), name, xlabel, "fraction of group",
        f"score histogram of {name}", height=260,
        xnote=f"{clipped} outlying score(s) counted in the end bins" if clipped else "",
    )
    for h, col, label in groups:
        chart.steps(edges, h, col, legend=label)
    if threshold is not None and math.isfinite(threshold) and lo <= threshold <= hi:
        chart.vline(threshold, "#333", legend=threshold_label or "threshold")
    return chart.svg(legend="upper left")


# ------------------------------------------------------------------------------------ sweeps
def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _metric_xy(points: list[dict], key: str) -> tuple[list[float], list[float], list[float]]:
    ys, lo, hi = [], [], []
    for pt in points:
        m = pt.get(key)
        v = as_float(m.get("value")) if isinstance(m, dict) else None
        v = np.nan if v is None else v
        ys.append(v)
        c_lo, c_hi = summary.ci_bounds(m)
        if c_lo is not None and c_hi is not None:
            lo.append(max(0.0, v - c_lo))
            hi.append(max(0.0, c_hi - v))
        else:
            lo.append(0.0)
            hi.append(0.0)
    return ys, lo, hi


def sweep_param_plot(base: str, index: int, sweep: dict, param: str) -> Markup:
    """AUC and TPR@1%FPR (95% CI error bars) against one swept parameter; with several swept
    parameters, one line per combination of the others."""
    points = [p for p in sweep.get("points") or [] if isinstance(p, dict)]
    params = [str(x) for x in sweep.get("params") or []]
    others = [q for q in params if q != param]
    groups: dict[tuple, list[dict]] = {}
    for pt in points:
        vals = pt.get("values") or {}
        groups.setdefault(tuple(str(vals.get(q)) for q in others), []).append(pt)
    xs_all = [(p.get("values") or {}).get(param) for p in points]
    numeric = _numeric(xs_all)
    cats = [] if numeric else list(dict.fromkeys(str(x) for x in xs_all))
    from matplotlib.transforms import ScaledTranslation

    with _style(f"sweep-{index}-{param}"):
        fig, axes = _figure(7.0, 2.8, ncols=2)
        for ax, key, title in ((axes[0], "auc", "AUC"), (axes[1], "tpr_at_1pct_fpr", "TPR@1%FPR")):
            for gi, (gkey, pts) in enumerate(groups.items()):
                if numeric:
                    pts = sorted(pts, key=lambda p: (p.get("values") or {}).get(param))
                    xs = [float((p.get("values") or {}).get(param)) for p in pts]
                else:
                    xs = [cats.index(str((p.get("values") or {}).get(param))) for p in pts]
                ys, lo, hi = _metric_xy(pts, key)
                label = ", ".join(f"{q}={v}" for q, v in zip(others, gkey)) or None
                # dodge the groups sideways by a few points so equal values stay visible
                shift = ScaledTranslation((gi - (len(groups) - 1) / 2) * 7 / 72, 0, fig.dpi_scale_trans)
                ax.errorbar(
                    xs, ys, yerr=[lo, hi], marker="o", ms=4, capsize=3, lw=1.3, color=color(gi), label=label,
                    transform=ax.transData + shift,
                )
            if key == "auc":
                ax.axhline(0.5, color="#999", lw=0.8, ls="--")
            if numeric:
                xv = [float(x) for x in xs_all]
                if xv and min(xv) > 0 and max(xv) / min(xv) >= 20:
                    ax.set_xscale("log")
                    _plain_log_ticks(ax.xaxis)
                ax.set_xticks(sorted(set(xv)))
                ax.set_xticklabels([f"{x:g}" for x in sorted(set(xv))])
                ax.minorticks_off()
            else:
                ax.set_xticks(range(len(cats)))
                ax.set_xticklabels(cats)
            ax.set(xlabel=param, ylabel=title)
            ax.set_title(f"{title} vs {param}")
            if others and len(groups) > 1:
                ax.legend(frameon=False)
        fig.suptitle(f"{base}: {param}", fontsize=10)
        return to_svg(fig, f"{base}: AUC and TPR at 1% FPR versus {param}")


def sweep_cost_plot(base: str, index: int, sweep: dict) -> Markup:
    """AUC (95% CI) against the cost per image, with the Pareto front."""
    cost = str(sweep.get("pareto_cost") or "queries_per_image")
    points = [p for p in sweep.get("points") or [] if isinstance(p, dict)]
    pareto = [str(x) for x in sweep.get("pareto") or []]
    xs = [as_float(p.get(cost)) for p in points]
    ys, lo, hi = _metric_xy(points, "auc")
    label = "queries / image" if cost == "queries_per_image" else "NFEs / image"
    with _style(f"sweep-cost-{index}"):
        fig, (ax,) = _figure(5.0, 3.2)
        good = [i for i, x in enumerate(xs) if x is not None]
        ax.errorbar(
            [xs[i] for i in good], [ys[i] for i in good], yerr=[[lo[i] for i in good], [hi[i] for i in good]],
            fmt="o", ms=4, capsize=3, color="#555", ecolor="#aaa", label="grid points",
        )
        for i in good:
            ax.annotate(str(points[i].get("attack", "")), (xs[i], ys[i]), xytext=(3, 3), textcoords="offset points", fontsize=6, color="#555")
        by_name = {str(p.get("attack")): (xs[i], ys[i]) for i, p in enumerate(points) if xs[i] is not None}
        front = [by_name[n] for n in pareto if n in by_name]
        if front:
            ax.plot([f[0] for f in front], [f[1] for f in front], color="#d62728", lw=1.5, marker="o", ms=5, label="Pareto front", drawstyle="steps-post")
        positive = [xs[i] for i in good if xs[i] > 0]
        if positive and len(positive) == len(good) and max(positive) / min(positive) >= 20:
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis)
        ax.axhline(0.5, color="#999", lw=0.8, ls="--")
        ax.set(xlabel=label, ylabel="AUC")
        ax.set_title(f"{base}: AUC vs {label}")
        ax.legend(frameon=False, loc="lower right")
        return to_svg(fig, f"{base}: AUC versus {label} with the Pareto front")
