"""SimA (Rao, Qu, Moyer, "Score-based Membership Inference on Diffusion Models", arXiv 2509.25003).

Grey-box: it needs the target's noise prediction ``eps(x, t)``. For every image, in the target's
model space (pixels, or scaled VAE latents with the caption as text condition):

1. ``e = eps(x, t)``: the **clean** image fed to the denoiser as if it were the noisy state at
   step ``t`` (no noise is added: the attack is deterministic);
2. score ``= -sum(|e|^p)`` (higher = more member-like): near a training image the predicted noise
   points at a kernel-weighted mean of nearby training images, and its norm is small.

The residual map ``|e|`` is returned too, so ``scorer: classifier`` can learn from it.

Choosing ``t``. The official script scores every ``t`` of a sweep (0, 10, ..., 200) and reports
the best AUC **measured on the evaluation images**: that choice uses the labels it is evaluated
on. Here ``t`` is either fixed in advance, or ``t: auto``: the runner scores the run's seeded
calibration split first at every ``candidates`` step (their per-step scores are kept as
features), :meth:`SimA.calibrated_params` picks the step with the highest AUC on those images
only, and every other image is scored at that one step (1 NFE). Metrics are then reported on the
held-out images only; a calibration image's stored score is its score at the first candidate.

Cost: 1 U-Net evaluation per image (``len(candidates)`` for a calibration image under ``t: auto``),
all images of a batch in one forward pass. No randomness: scores do not depend on the seed.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from audit_core import ddim, metrics, Attack, AttackOutput, AttackParams, Batch, flat_sum, ConfigError, NOISE

#: the official DDPM sweep (DDPM/attack.py with --interval 10 --attack_num 20): t = 0, 10, ..., 200
OFFICIAL_SWEEP: list[int] = list(range(0, 201, 10))

#: ``preset: paper``: the official sweep, chosen on the calibration split (not on the test images)
PRESETS: dict[str, dict[str, Any]] = {"paper": {"t": "auto", "candidates": OFFICIAL_SWEEP, "p": 4.0}}


class SimAParams(AttackParams):
    """``attacks[].params`` of ``plugin: sima`` (unknown keys are errors)."""

    preset: Literal["paper"] | None = Field(
        None, description="paper: t chosen among the official sweep 0, 10, ..., 200 on the calibration split; your own values win"
    )
    t: int | Literal["auto"] = Field(
        100, description="the step the clean image is fed at (0 <= t < T); auto: the calibration split's best of `candidates`"
    )
    p: float = Field(4.0, description="the exponent of the norm (p > 0)")
    candidates: list[int] = Field(
        default_factory=lambda: list(OFFICIAL_SWEEP),
        description="t: auto - the steps tried on the calibration images (each 0 <= t < T); the first wins ties",
    )


class SimA(Attack):
    name = "sima"
    requires = frozenset({NOISE})  # grey-box: refused on variation-only targets
    Params = SimAParams
    presets = PRESETS
    residual_maps = True  # |eps(x, t)|: `scorer: classifier` learns from it

    # ------------------------------------------------------------------ configuration
    def check(self) -> None:
        p = self.params
        if p.t == "auto":
            if not p.candidates:
                raise ConfigError(f"attack {self.context.name!r}: t=auto needs at least one step in candidates")
            if len(set(p.candidates)) < len(p.candidates):
                raise ConfigError(f"attack {self.context.name!r}: candidates {p.candidates} lists a step twice")
            for c in p.candidates:
                self._check_step(c, "candidates")
        else:
            self._check_step(p.t, "t")
        if not (p.p > 0 and math.isfinite(p.p)):
            raise ConfigError(f"attack {self.context.name!r}: p={p.p} must be a finite number > 0")

    def _check_step(self, t: int, label: str) -> None:
        """``0 <= t < T``: unlike the noising attacks, t = 0 (the clean image at the first step)
        is a valid SimA step and part of the official sweep."""
        problem = ddim.tk_problem(t, None, None, label)  # an integer, not negative
        T = self.target.num_train_timesteps
        if problem is None and not t < T:
            problem = f"{label} step {t} must satisfy 0 <= t < T={T}"
        if problem:
            raise ConfigError(f"attack {self.context.name!r}: {problem}")

    def describe(self) -> dict[str, Any]:
        p = self.params
        out: dict[str, Any] = {"statistic": f"-sum(|eps(x, t)|^{p.p:g}) with the clean image x fed at step t", "space": self.target.kind}
        if p.t == "auto":
            out["t_selection"] = (
                f"the highest AUC among candidates {p.candidates} on the calibration split only "
                "(scorer.calibrated_params.t); metrics on the other images"
            )
            out["expected_nfe_per_image"] = len(p.candidates)  # the calibration images, scored first
        else:
            out["expected_nfe_per_image"] = 1
        return out

    # ------------------------------------------------------------------ t: auto
    def needs_calibration(self) -> bool:
        return self.params.t == "auto"

    def calibrated_params(self, scores, labels, features=None) -> dict[str, Any]:
        """``t``: the candidate whose scores have the highest AUC on the calibration images
        (``features``: their ``[N, len(candidates)]`` per-step scores; labels 1 = member). The
        first candidate wins ties. Without features (not stored) the first candidate is used."""
        cands = self.params.candidates
        if features is None:
            return {"t": int(cands[0])}
        return {"t": int(cands[best_column(np.asarray(features, dtype=np.float64), np.asarray(labels))])}

    # ------------------------------------------------------------------ scoring
    def _scores(self, z0: torch.Tensor, t: int, captions) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.target.eps(z0, t, captions).abs()
        return -flat_sum(e.pow(self.params.p)), e

    def score(self, batch: Batch) -> AttackOutput:
        p = self.params
        z0 = self.target.encode(batch.images, batch.captions)  # model space, encoded once
        if p.t != "auto":
            scores, e = self._scores(z0, p.t, batch.captions)
            return AttackOutput(scores=scores, residuals=e)
        # a calibration image: every candidate step (one forward pass each), kept as features
        per_step, maps = [], None
        for c in p.candidates:
            s, e = self._scores(z0, c, batch.captions)
            per_step.append(s)
            maps = e if maps is None else maps
        features = torch.stack(per_step, dim=1)
        return AttackOutput(scores=features[:, 0], residuals=maps, features=features)


def best_column(features: np.ndarray, labels: np.ndarray) -> int:
    """The column of ``features`` ``[N, K]`` (scores, higher = member) with the highest AUC
    against ``labels`` (1 = member); the first of equal columns."""
    aucs = [metrics.point_metrics(features[:, j], labels)["auc"] for j in range(features.shape[1])]
    return int(np.argmax(aucs))
