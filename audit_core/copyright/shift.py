"""Copyright mode: where the reference set came from, and a model-free distribution-shift check.

A membership test compares suspects with a reference. If the reference differs from the suspects
in ways that have nothing to do with the audited model (a generated reference in another style,
other cameras, other resolutions), every attack can tell them apart and the verdict measures the
shift, not membership. This module reports, under results.json's top-level ``"reference"``:

- ``generated`` / ``generator`` / ``generated_at``: read from the ``reference.json`` that
  ``audit reference build`` writes next to its manifest (or a ``generator`` column);
- ``shift_check``: a logistic regression on simple image statistics (per-channel mean and spread,
  saturation, edge and high-frequency energy, histogram entropy, clipped pixels; no model involved)
  trained to tell suspects from reference, with its stratified cross-validated ROC AUC. Near 0.5 the
  two sets look alike to these statistics; well above it (>= 0.8) the reference is easy to tell
  apart and the attacks' separation may reflect that shift rather than membership.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..base.records import ImageRecord

SIZE = 64  # statistics are computed at SIZE x SIZE RGB so image size itself is not a feature
FEATURES = (
    "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "saturation_mean", "saturation_std",
    "gradient_mean", "laplacian_mean", "high_freq_ratio", "entropy", "clipped_dark", "clipped_bright",
)
EASY = 0.8  # AUC from which the reference counts as easy to tell apart


def image_stats(img) -> np.ndarray:
    """The FEATURES of one PIL image (RGB, resized to SIZE x SIZE), as float64."""
    from PIL import Image

    a = np.asarray(img.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC), dtype=np.float64) / 255.0
    gray = a.mean(axis=2)
    mx, mn = a.max(axis=2), a.min(axis=2)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-8), 0.0)
    gx, gy = np.diff(gray, axis=1), np.diff(gray, axis=0)
    lap = np.abs(4 * gray[1:-1, 1:-1] - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:])
    spec = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) ** 2
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE // 2
    high = spec[np.hypot(yy, xx) > SIZE / 4].sum() / max(spec.sum(), 1e-12)
    hist = np.histogram(gray, bins=32, range=(0, 1))[0] / gray.size
    entropy = -(hist[hist > 0] * np.log2(hist[hist > 0])).sum()
    return np.array([
        *a.mean(axis=(0, 1)), *a.std(axis=(0, 1)), sat.mean(), sat.std(),
        (np.abs(gx).mean() + np.abs(gy).mean()) / 2, lap.mean(), high, entropy,
        (gray < 0.02).mean(), (gray > 0.98).mean(),
    ])


def shift_check(records: list[ImageRecord], seed: int = 0, stats: np.ndarray | None = None) -> dict[str, Any]:
    """Cross-validated AUC of a suspects-vs-reference classifier on :func:`image_stats` (``stats``:
    those statistics already computed, one row per record), with a stratified bootstrap interval."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..data import open_image

    y = np.array([r.label for r in records], dtype=int)
    n_min = int(min((y == 1).sum(), (y == 0).sum()))
    if n_min < 2:
        return {"auc": None, "note": "too few images in one set for a cross-validated shift check", "features": list(FEATURES)}
    x = np.asarray(stats) if stats is not None else np.stack([image_stats(open_image(r)) for r in records])
    folds = min(5, n_min)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(clf, x, y, cv=cv, method="decision_function")
    auc = float(roc_auc_score(y, scores))
    ci = bootstrap_auc_ci(np.asarray(scores, dtype=np.float64), y, seed)
    if auc >= EASY:
        note = (f"AUC {auc:.2f}: simple image statistics alone tell the suspects from the reference; the attacks' "
                f"separation may reflect this distribution shift rather than membership. Prefer a reference closer "
                f"to the suspects (same source, style and processing).")
    elif auc >= 0.6:
        note = f"AUC {auc:.2f}: some distribution shift between suspects and reference; read the verdict with care."
    else:
        note = f"AUC {auc:.2f}: simple image statistics hardly tell the suspects from the reference."
    if auc >= 0.6 and ci[0] <= 0.5:
        note += f" Its 95% interval ({ci[0]:.2f}-{ci[1]:.2f}) includes 0.5: with these set sizes that may be chance."
    return {"auc": round(auc, 4), "ci": [round(v, 4) for v in ci], "note": note, "folds": folds, "classifier": "logistic regression on image statistics",
            "features": list(FEATURES)}


def provenance(spec: str | None, base_dir: Path, records: list[ImageRecord]) -> dict[str, Any]:
    """Whether the reference was generated, by which generator and when (from the reference.json
    next to its manifest, else a manifest ``generator`` column)."""
    out: dict[str, Any] = {"generated": False, "generator": None, "generated_at": None}
    if spec and not str(spec).startswith("builtin:"):
        path = Path(spec).expanduser()
        path = path if path.is_absolute() else base_dir / path
        state = (path if path.is_dir() else path.parent) / "reference.json"
        if state.is_file():
            try:
                info = json.loads(state.read_text(encoding="utf-8"))
                out.update(generated=True, generator=info.get("describe") or info.get("generator"),
                           generated_at=info.get("finished") or info.get("started"))
            except (OSError, json.JSONDecodeError):
                pass
    if not out["generated"]:
        names = sorted({r.extra["generator"] for r in records if r.label == 0 and r.extra.get("generator")})
        if names:
            out.update(generated=True, generator=", ".join(names))
    if out["generated"]:
        out["warning"] = (
            "The reference set was generated by a text-to-image model. Generated images can differ in "
            "distribution from real non-members (style, texture, processing), which can make suspects look "
            "like members for reasons other than training; see shift_check."
        )
    return out


def reference_block(
    records: Any, spec: str | None = None, base_dir: Any = ".", seed: int = 0, stats: np.ndarray | None = None
) -> dict[str, Any]:
    """Copyright mode's results["reference"]: provenance (``spec``: ``data.reference``, relative
    to ``base_dir``) + shift check (``stats``: the records' :func:`image_stats`, when already
    computed). Takes the run plan's pieces, never the Runner."""
    block = provenance(spec, Path(base_dir), records)
    block["shift_check"] = shift_check(records, seed, stats)
    return block


def bootstrap_auc_ci(scores: np.ndarray, y: np.ndarray, seed: int, draws: int = 1000) -> list[float]:
    """95 % stratified bootstrap interval of :func:`auc` (suspects and reference resampled apart)."""
    from scipy import stats as st

    rng = np.random.default_rng([seed, 0xB1])
    pos, neg = scores[y == 1], scores[y == 0]
    n1, n0 = len(pos), len(neg)
    vals = np.empty(draws)
    for b in range(draws):
        both = np.concatenate([pos[rng.integers(0, n1, n1)], neg[rng.integers(0, n0, n0)]])
        r = st.rankdata(both)
        vals[b] = (r[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return [float(lo), float(hi)]
