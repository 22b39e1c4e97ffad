"""CLiD, the conditional likelihood discrepancy attack (Zhai, Chen, Wei, Wang, Yang, Wei,
"Membership Inference on Text-to-image Diffusion Models via Conditional Likelihood Discrepancy",
NeurIPS 2024; official code github zhaisf/CLiD, ``mia_CLiD_clip.py``, ``mia_CLiD_impt.py``,
``cal_clid_th.py``).

Grey-box and text-conditional: it needs the noise prediction under captions of its choice (the
target capabilities ``NOISE`` and ``TEXT``: stable-diffusion). Any other target is refused before
any query (exit 2). A model over-fits its training pairs *under their captions*: a member's loss
drops more when its own caption is given than when the caption is perturbed. For every image, in
the latent space, with its caption ``c``:

1. ``K`` timesteps ``ts`` and one noise ``z_j`` per timestep (seeded per image and draw,
   ``batch.seed_matrix(K)``), ``x_j = sqrt(abar[t_j]) x + sqrt(1 - abar[t_j]) z_j``;
2. the conditional loss ``L = mean_j mean((eps(x_j, t_j, c) - z_j)^2)``;
3. for each perturbation ``c'`` of the caption (:mod:`audit_clid.captions`: null, the thirds, or
   word clipping), the same loss under ``c'`` on the same noisy latents, and the discrepancy
   ``d' = L(c') - L``;
4. the combination of ``cal_clid_th.py``: ``S = -mean(d')`` (lower = member, like ``L``), both
   robust-scaled (median and interquartile range) on the calibration split, and
   ``score = -((1 - alpha) L_scaled + alpha S_scaled)``. ``alpha: auto`` picks alpha in
   0, 0.1, ..., 1 by AUC on the calibration split (the official code picks it on a shadow model's
   split); the runner scores the calibration images first and the others with the fitted alpha and
   scaler, and metrics are on those others only. ``alpha: 0`` is the plain loss and ``alpha: 1``
   the discrepancy alone (neither needs a calibration).

Per-image features ``[L, d'_1, ..., d'_m]`` are returned (``AttackOutput.features``) and kept with
the scores, so the calibration is recomputed identically on resume. Cost: ``K (1 + m)`` NFEs per
image (paper setting: 3 x 5 = 15), one U-Net call per timestep for the whole batch.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from audit_core import ddim, seeding
from audit_core import Attack, AttackOutput, AttackParams, Batch, flat_sum
from audit_core import ConfigError
from audit_core import NOISE, TEXT

from . import captions as perturbations

#: the official scripts' settings: mia_CLiD_clip.py (T // 2 - 15 + 10 j: 485, 495, 505; the
#: caption's character thirds and the null caption) and mia_CLiD_impt.py (Tmid 450 +- 10: 440, 450,
#: 460; the top 30 / 50 / 70 % of words clipped, and the null caption)
PRESETS: dict[str, dict[str, Any]] = {
    "paper-clip": {"ts": [485, 495, 505], "perturbations": ["third-1", "third-2", "third-3", "null"]},
    "paper-impt": {"ts": [440, 450, 460], "perturbations": ["clip-0.3", "clip-0.5", "clip-0.7", "null"]},
}
#: the alphas cal_clid_th.py tries
ALPHAS = [round(0.1 * i, 1) for i in range(11)]


class RobustScale(BaseModel):
    """Median and interquartile range of ``[L, S]`` on the calibration split (sklearn's RobustScaler)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    center: list[float] = Field(min_length=2, max_length=2)
    scale: list[float] = Field(min_length=2, max_length=2)


class CLiDParams(AttackParams):
    """``attacks[].params`` of ``plugin: clid`` (unknown keys are errors)."""

    preset: Literal["paper-clip", "paper-impt"] | None = Field(
        None, description="the official scripts' settings (paper-clip | paper-impt); your own values win"
    )
    ts: list[int] = Field([485, 495, 505], description="timestep indices the losses are measured at (0 <= t < T)")
    perturbations: list[str] = Field(
        ["third-1", "third-2", "third-3", "null"],
        description="caption perturbations: null, third-1/2/3 (character thirds), clip-R (R of the words clipped)",
    )
    alpha: float | Literal["auto"] = Field(
        "auto", description="weight of the discrepancy vs the plain loss (0..1); auto: chosen on the calibration split"
    )
    scaler: RobustScale | None = Field(None, description="set by the run's calibration (median and IQR of L and S)")


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a member > score of a non-member), ties counting 1/2 (the Mann-Whitney AUC)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels) == 1
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1
        i = j + 1
    n1, n0 = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def robust_scale(x: np.ndarray) -> RobustScale:
    """Median and 25-75 % interquartile range per column (1 where the range is 0), as sklearn's RobustScaler."""
    q25, med, q75 = np.percentile(x, [25, 50, 75], axis=0)
    iqr = q75 - q25
    iqr[iqr == 0] = 1.0
    return RobustScale(center=[float(v) for v in med], scale=[float(v) for v in iqr])


def statistics(features: np.ndarray) -> np.ndarray:
    """``[N, 1 + m]`` features -> ``[N, 2]``: ``L`` and ``S = -mean(d')`` (lower = member)."""
    f = np.asarray(features, dtype=np.float64)
    return np.stack([f[:, 0], -f[:, 1:].mean(axis=1)], axis=1)


def combined(features: np.ndarray, alpha: float, scaler: RobustScale | None) -> np.ndarray:
    """The score (higher = member) of ``cal_clid_th.py``'s weighted average."""
    st = statistics(features)
    if scaler is not None:
        st = (st - np.asarray(scaler.center)) / np.asarray(scaler.scale)
    return -((1.0 - alpha) * st[:, 0] + alpha * st[:, 1])


class CLiD(Attack):
    name = "clid"
    requires = frozenset({NOISE, TEXT})  # refused (exit 2) on targets that do not take captions as prompts
    Params = CLiDParams
    presets = PRESETS

    @property
    def expected_nfe_per_image(self) -> int:
        return len(self.params.ts) * (1 + len(self.params.perturbations))

    def check(self) -> None:
        p, name, T = self.params, self.context.name, self.target.num_train_timesteps
        if not p.ts:
            raise ConfigError(f"attack {name!r}: ts is empty; give at least one timestep index")
        bad = [t for t in p.ts if not 0 <= t < T]
        if bad:
            raise ConfigError(f"attack {name!r}: ts={bad[0]} is outside 0..{T - 1} (T={T})")
        if not p.perturbations:
            raise ConfigError(f"attack {name!r}: perturbations is empty; give at least one (e.g. null)")
        for spec in p.perturbations:
            problem = perturbations.spec_problem(spec)
            if problem:
                raise ConfigError(f"attack {name!r}: perturbations: {problem}")
        if p.alpha != "auto" and not 0.0 <= p.alpha <= 1.0:
            raise ConfigError(f"attack {name!r}: alpha={p.alpha} must be between 0 and 1, or auto")
        if p.alpha == "auto" and p.scaler is not None:
            raise ConfigError(f"attack {name!r}: a scaler is given, so give alpha too (auto is chosen with the scaler)")

    def describe(self) -> dict[str, Any]:
        p = self.params
        return {
            "timesteps": list(p.ts),
            "perturbations": list(p.perturbations),
            "features": ["L"] + [f"d[{s}]" for s in p.perturbations],
            "statistic": "-((1 - alpha) L + alpha (-mean d)), both robust-scaled on the calibration split",
            "space": self.target.kind,
            "expected_nfe_per_image": self.expected_nfe_per_image,
        }

    # ------------------------------------------------------------------ calibration
    def needs_calibration(self) -> bool:
        p = self.params
        return p.scaler is None and (p.alpha == "auto" or 0.0 < p.alpha < 1.0)

    def calibrated_params(self, scores, labels, features=None) -> dict[str, Any]:
        """The robust scaler of ``[L, S]`` and (``alpha: auto``) the alpha with the best AUC, both
        from the calibration images only (the first best in 0, 0.1, ..., 1, as cal_clid_th.py)."""
        if features is None:
            raise ConfigError(
                f"attack {self.context.name!r}: the calibration images' CLiD features are missing from the run "
                f"directory (written by an older version?); rerun without --resume"
            )
        features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
        scaler = robust_scale(statistics(features))
        alpha = self.params.alpha
        if alpha == "auto":
            best = -1.0
            for a in ALPHAS:
                value = auc(combined(features, a, scaler), labels)
                if value > best:
                    best, alpha = value, a
        return {"alpha": alpha, "scaler": scaler.model_dump()}

    # ------------------------------------------------------------------ scoring
    def features(self, batch: Batch) -> torch.Tensor:
        """``[B, 1 + m]``: ``L`` and the discrepancies ``d'`` of every image (module docstring)."""
        p, target = self.params, self.target
        ts, specs = list(p.ts), list(p.perturbations)
        k, m, b = len(ts), len(specs), len(batch)
        caps = [c or "" for c in batch.captions]
        # per image: its caption, then each perturbation (clip-R draws use draws k, k+1, ... of the image)
        variants = [caps]
        for j, spec in enumerate(specs):
            seeds = batch.seeds(k + j) if perturbations.is_random(spec) else [0] * b
            variants.append([perturbations.perturb(c, spec, s) for c, s in zip(caps, seeds)])
        row_captions = [variants[v][i] for i in range(b) for v in range(1 + m)]  # image-major, 1 + m rows each
        z0 = target.encode(batch.images, batch.captions)
        noise = seeding.randn(z0.shape[1:], batch.seed_matrix(k), device=z0.device, dtype=z0.dtype).view(b, k, *z0.shape[1:])
        loss = torch.zeros(b, 1 + m, dtype=torch.float64, device=z0.device)
        for j, t in enumerate(ts):  # one U-Net call per timestep: every image under every caption
            z_t = ddim.q_sample(z0, noise[:, j], ddim.abar_at(target.alphas_cumprod, t))
            rows = z_t.repeat_interleave(1 + m, dim=0)
            err = target.eps(rows, t, row_captions) - noise[:, j].repeat_interleave(1 + m, dim=0)
            per_row = flat_sum(err.double().square()) / err[0].numel()
            loss += per_row.view(b, 1 + m)
        loss /= k
        return torch.cat([loss[:, :1], loss[:, 1:] - loss[:, :1]], dim=1)

    def score(self, batch: Batch) -> AttackOutput:
        p = self.params
        feats = self.features(batch)
        f = feats.cpu().numpy()
        if self.needs_calibration():  # the calibration images, before the fit: the plain loss
            scores = -f[:, 0]
        else:
            alpha = 0.0 if p.alpha == "auto" else float(p.alpha)
            scores = combined(f, alpha, p.scaler)
        return AttackOutput(scores=torch.from_numpy(np.ascontiguousarray(scores)), features=feats.cpu())
