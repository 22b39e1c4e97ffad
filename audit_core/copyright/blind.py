"""Copyright mode's model-free ("blind") baseline: how well do the images alone tell the suspects
from the reference, and what does that leave of the attacks' separation?

A membership attack compares suspects with a reference. When the two sets differ for reasons that
have nothing to do with the audited model (another scanner, added noise, JPEG, a generated
reference), the attacks' scores move with that difference and the set-level test measures the
shift, not membership. This module looks at the images only (never at the model):

1. **features** per image: the 14 image statistics of :mod:`audit_core.shift` (at 64x64) plus three
   taken on a native-resolution central crop (so noise or blur in a large image is not averaged
   away by the downscale), and the image itself downscaled to 32x32 plus a native 32x32 central crop
   (6 channels) for a small CNN;
2. **the blind classifier**: a logistic regression on the standardised statistics (class-balanced),
   and on top of its logit a tiny CNN (three 3x3 convolutions, 8-16 channels, global average
   pooling; its last layer also sees the statistics, initialised at zero so training starts from the
   regression's solution) trained from scratch to tell suspects from reference, **cross-fitted** over
   ``k`` stratified folds (each image is scored by the models trained on the other folds); its AUC
   over those out-of-fold scores, with a stratified bootstrap interval, is ``set_inference.blind``.
   Seeded per fold; CPU seconds for a few hundred images;
3. **common support** (``overlap``): the share of suspects whose out-of-fold blind score lies within
   the reference's (its 1st to 99th percentile). A suspect outside it looks like no reference image,
   so any adjustment for it would be extrapolation;
4. **the shift-adjusted scores** (:meth:`Baseline.residuals`): an attack's score, as a normal score of
   its pooled rank, is regressed on the blind features (statistics and blind score; ridge) **on the
   reference alone**, cross-fitted over the same folds: the images of fold ``j``, suspects and
   reference alike, are scored by the fit on the reference of the other folds. The residual is what
   the images do not explain; :mod:`audit_core.copyright.conclusion` tests the suspects' residuals (those in
   common support) against the reference's.

The assumption behind the adjustment: the shift is visible in the images (the features see it),
and a non-member's score depends on the image only through those features, the same way in both
sets. docs/copyright-mode.md says what that does and does not cover.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import shift
from .shift import bootstrap_auc_ci  # noqa: F401  (lives beside the shift check, which uses it too)

NATIVE = 64  # side of the native-resolution central crop for the NATIVE_FEATURES
NATIVE_FEATURES = (
    "native_gradient_mean", "native_laplacian_mean", "native_high_freq_ratio", "native_noise_median", "native_blockiness",
)
FEATURES = tuple(shift.FEATURES) + NATIVE_FEATURES
CNN_SIZE = 16
FOLDS = 5
EPOCHS = 30
MAX_TRAIN = 2000  # the CNN of each fold trains on at most this many images (a seeded subsample)
BOOTSTRAP = 1000
SUPPORT_QUANTILES = (0.01, 0.99)
METHOD = (
    "logistic regression on {n} image statistics plus a small CNN (3 conv layers, 8-16 channels; 16x16 downscaled "
    "image and native 16x16 crop) trained from scratch on what the regression leaves over; {k}-fold cross-fitted "
    "(every image scored by the models trained on the other folds); AUC of the out-of-fold scores, stratified "
    "bootstrap interval ({b} resamples)"
)


# --------------------------------------------------------------------------------- features
def _native_stats(gray: np.ndarray) -> np.ndarray:
    """Gradient and Laplacian energy, high-frequency share, a robust noise level (the median absolute
    response of Immerkaer's noise-estimation mask, which edges hardly move) and the JPEG blockiness
    (mean step across 8-pixel block borders over the mean step elsewhere) of a gray image in [0, 1]."""
    gx, gy = np.diff(gray, axis=1), np.diff(gray, axis=0)
    grad = (np.abs(gx).mean() + np.abs(gy).mean()) / 2 if gray.shape[0] > 1 and gray.shape[1] > 1 else 0.0
    if min(gray.shape) >= 3:
        lap = np.abs(4 * gray[1:-1, 1:-1] - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:]).mean()
    else:
        lap = 0.0
    h, w = gray.shape
    spec = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) ** 2
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy - h // 2) / max(h, 1), (xx - w // 2) / max(w, 1))
    high = spec[r > 0.25].sum() / max(spec.sum(), 1e-12)
    if min(h, w) >= 3:
        g = gray
        mask = (g[:-2, :-2] - 2 * g[:-2, 1:-1] + g[:-2, 2:] - 2 * g[1:-1, :-2] + 4 * g[1:-1, 1:-1] - 2 * g[1:-1, 2:]
                + g[2:, :-2] - 2 * g[2:, 1:-1] + g[2:, 2:])
        noise = float(np.median(np.abs(mask)))
    else:
        noise = 0.0
    steps = np.abs(np.diff(gray, axis=1)) if w > 1 else np.zeros((h, 0))
    border = np.arange(steps.shape[1]) % 8 == 7
    blocky = steps[:, border].mean() / max(steps[:, ~border].mean(), 1e-6) if border.any() and (~border).any() else 1.0
    return np.array([grad, lap, high, noise, blocky], dtype=np.float64)


def _center_crop(img, side: int):
    w, h = img.size
    if w <= side and h <= side:
        return img
    left, top = max(0, (w - side) // 2), max(0, (h - side) // 2)
    return img.crop((left, top, left + min(side, w), top + min(side, h)))


def image_inputs(img) -> tuple[np.ndarray, np.ndarray]:
    """(the FEATURES of one PIL image, its CNN input ``uint8 [6, 16, 16]``: the image downscaled to
    16x16 and its native-resolution central 16x16 crop, both RGB)."""
    from PIL import Image

    rgb = img.convert("RGB")
    stats = shift.image_stats(rgb)
    crop = np.asarray(_center_crop(rgb, NATIVE), dtype=np.float64).mean(axis=2) / 255.0
    small = np.asarray(rgb.resize((CNN_SIZE, CNN_SIZE), Image.Resampling.BOX if min(rgb.size) >= CNN_SIZE else Image.Resampling.BICUBIC))
    patch = _center_crop(rgb, CNN_SIZE)
    if patch.size != (CNN_SIZE, CNN_SIZE):
        patch = patch.resize((CNN_SIZE, CNN_SIZE), Image.Resampling.NEAREST)
    cnn = np.concatenate([small.transpose(2, 0, 1), np.asarray(patch).transpose(2, 0, 1)]).astype(np.uint8)
    return np.concatenate([stats, _native_stats(crop)]), cnn


# --------------------------------------------------------------------------------- the classifier
def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu, sd = train.mean(axis=0), train.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return [(a - mu) / sd for a in (train, *others)]


def _fit_predict_cnn(images: np.ndarray, stats: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                     seed: int, epochs: int = EPOCHS) -> np.ndarray:
    """Train the blind CNN on ``train`` rows (seeded), return its logits for ``test`` rows."""
    import torch
    from torch import nn

    from sklearn.linear_model import LogisticRegression

    if len(train) > MAX_TRAIN:
        train = np.sort(np.random.default_rng(seed).choice(train, MAX_TRAIN, replace=False))
    s_train, s_test = _standardise(stats[train], stats[test])
    # the statistics' logistic regression first (converged); the CNN learns what it leaves over
    lin = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(s_train, y[train])
    off_train, off_test = lin.decision_function(s_train), lin.decision_function(s_test)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few hundred 16x16 images: one thread is faster than several
    try:
        return off_test + _train_and_score(images, s_train, s_test, off_train, y, train, test, seed, epochs)
    finally:
        torch.set_num_threads(threads)


def _train_and_score(images, s_train, s_test, off_train, y, train, test, seed, epochs) -> np.ndarray:
    """The CNN's logits for ``test``, trained on ``train`` on top of the fixed offsets ``off_train``."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        conv = nn.Sequential(
            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        head = nn.Linear(16 + s_train.shape[1], 1)
        nn.init.zeros_(head.weight)  # start from the logistic regression's solution
        nn.init.zeros_(head.bias)
        params = list(conv.parameters()) + list(head.parameters())
        opt = torch.optim.Adam(params, lr=0.01, weight_decay=1e-3)
        x = torch.from_numpy(images[train].astype(np.float32) / 255.0 - 0.5)
        s = torch.from_numpy(s_train.astype(np.float32))
        t = torch.from_numpy(y[train].astype(np.float32))
        off = torch.from_numpy(np.asarray(off_train, dtype=np.float32))
        pos = max(float(t.sum()), 1.0)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(t) - pos) / pos))
        gen = torch.Generator().manual_seed(seed)
        batch = 64
        for _ in range(epochs):
            order = torch.randperm(len(t), generator=gen)
            for start in range(0, len(t), batch):
                idx = order[start : start + batch]
                opt.zero_grad()
                logit = off[idx] + head(torch.cat([conv(x[idx]), s[idx]], dim=1)).squeeze(1)
                loss_fn(logit, t[idx]).backward()
                opt.step()
        with torch.no_grad():
            xt = torch.from_numpy(images[test].astype(np.float32) / 255.0 - 0.5)
            st = torch.from_numpy(s_test.astype(np.float32))
            return head(torch.cat([conv(xt), st], dim=1)).squeeze(1).double().numpy()


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC of ``scores`` for ``y == 1`` against ``y == 0`` (ties count one half)."""
    from scipy import stats as st

    r = st.rankdata(scores)
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


# --------------------------------------------------------------------------------- the baseline
@dataclass
class Baseline:
    """The fitted blind baseline of one run: per image id its features, fold, out-of-fold blind score
    and whether it lies in common support; :meth:`block` is ``set_inference.blind``."""

    ids: list[str]
    suspect: np.ndarray  # bool per id
    stats: np.ndarray  # [N, len(FEATURES)]
    fold: np.ndarray  # int per id
    score: np.ndarray  # out-of-fold blind logit per id
    folds: int
    auc: float
    ci: list[float]
    support: tuple[float, float]
    seed: int
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {i: k for k, i in enumerate(self.ids)}

    @property
    def in_support(self) -> np.ndarray:
        lo, hi = self.support
        return (self.score >= lo) & (self.score <= hi)

    @property
    def overlap(self) -> float:
        """The share of suspects within the reference's range of blind scores (common support)."""
        return float(self.in_support[self.suspect].mean())

    def block(self) -> dict[str, Any]:
        return {
            "auc": round(self.auc, 4),
            "ci": [round(v, 4) for v in self.ci],
            "method": METHOD.format(n=len(FEATURES), k=self.folds, b=BOOTSTRAP),
            "folds": self.folds,
            "features": list(FEATURES),
            "overlap": round(self.overlap, 4),
            "n_suspects": int(self.suspect.sum()),
            "n_reference": int((~self.suspect).sum()),
            "support": "suspects whose out-of-fold blind score lies within the reference's 1st-99th percentile",
        }

    def residuals(self, ids: list[str], scores: np.ndarray) -> np.ndarray:
        """The shift-adjusted scores of ``ids``: each score's pooled normal score minus its cross-fitted
        prediction from the blind features, fitted on the reference of the other folds (ridge)."""
        from scipy import stats as st
        from sklearn.linear_model import RidgeCV

        rows = np.array([self.index[i] for i in ids])
        s = np.asarray(scores, dtype=np.float64)
        z = st.norm.ppf((st.rankdata(s) - 0.5) / len(s))  # label-free normal scores
        x = np.column_stack([self.stats[rows], self.score[rows]])
        ref = ~self.suspect[rows]
        fold = self.fold[rows]
        out = np.empty(len(s))
        for j in np.unique(fold):
            train, test = ref & (fold != j), fold == j
            if train.sum() < 3:
                out[test] = z[test] - (z[train].mean() if train.any() else 0.0)
                continue
            xtr, xte = _standardise(x[train], x[test])
            model = RidgeCV(alphas=np.logspace(-2, 3, 12)).fit(xtr, z[train])
            out[test] = z[test] - model.predict(xte)
        return out

    def in_support_of(self, ids: list[str]) -> np.ndarray:
        rows = np.array([self.index[i] for i in ids])
        return self.in_support[rows]


def fit(ids: list[str], suspect: np.ndarray, stats: np.ndarray, images: np.ndarray, seed: int = 0,
        folds: int = FOLDS, epochs: int = EPOCHS) -> Baseline | None:
    """The cross-fitted blind baseline from precomputed inputs, or None with fewer than two images
    in one set."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(suspect, dtype=int)
    n_min = int(min(y.sum(), (1 - y).sum()))
    if n_min < 2:
        return None
    k = min(folds, n_min)
    fold = np.empty(len(y), dtype=int)
    score = np.empty(len(y))
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for j, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
        fold[test] = j
        score[test] = _fit_predict_cnn(images, stats, y, train, test, seed=seed * 1009 + j, epochs=epochs)
    ref = score[y == 0]
    lo, hi = np.quantile(ref, SUPPORT_QUANTILES)
    return Baseline(
        ids=list(ids), suspect=y.astype(bool), stats=np.asarray(stats, dtype=np.float64), fold=fold, score=score,
        folds=k, auc=auc(score, y), ci=bootstrap_auc_ci(score, y, seed), support=(float(lo), float(hi)), seed=seed,
    )


def inputs(records: list, open_image: Callable) -> tuple[np.ndarray, np.ndarray]:
    """(``[N, len(FEATURES)]`` statistics, ``uint8 [N, 6, 16, 16]`` CNN inputs) of ``records``."""
    feats, imgs = zip(*(image_inputs(open_image(r)) for r in records)) if records else ((), ())
    n = len(FEATURES)
    return (np.stack(feats) if feats else np.zeros((0, n)),
            np.stack(imgs) if imgs else np.zeros((0, 6, CNN_SIZE, CNN_SIZE), dtype=np.uint8))


def for_records(records: list, seed: int = 0) -> tuple[Baseline | None, np.ndarray]:
    """The blind baseline of a copyright run's records (label 1 = suspect), and the 14 shift-check
    statistics of every record (so the shift check need not decode the images again)."""
    from ..data import open_image

    stats, images = inputs(records, open_image)
    suspect = np.array([r.label == 1 for r in records], dtype=bool)
    base = fit([r.id for r in records], suspect, stats, images, seed)
    return base, stats[:, : len(shift.FEATURES)]


def describe_strength(a: float, ci: list[float]) -> str:
    """A short reading of the blind AUC and its interval."""
    lo = ci[0]
    if lo > 0.5 and a >= 0.9:
        return f"the images alone tell the suspects from the reference (AUC {a:.2f}, 95% CI {ci[0]:.2f}-{ci[1]:.2f})"
    if lo > 0.5:
        return f"the images alone partly tell the suspects from the reference (AUC {a:.2f}, 95% CI {ci[0]:.2f}-{ci[1]:.2f})"
    return f"the images alone do not tell the suspects from the reference beyond chance (AUC {a:.2f}, 95% CI {ci[0]:.2f}-{ci[1]:.2f})"


__all__ = ["Baseline", "FEATURES", "fit", "for_records", "image_inputs", "inputs", "auc", "bootstrap_auc_ci"]
