"""Adaptive query budget for ReDiffuse's pixel variant (``n: auto``): fewer variations for images
whose verdict is already clear.

Fixed ``n`` spends the same ``n`` variations on every image. Most images are far from the
decision threshold after a couple of draws; only the borderline ones need all of them. With
``n: auto`` each image starts with ``min_n`` draws and gets one more draw at a time, up to
``max_n``, until its estimated final distance is decisively on one side of the threshold:

- after ``m`` draws ``v_1 .. v_m`` with mean ``x_bar_m``, the l2 distance ``d_m = |x - x_bar_m|^2``
  overestimates the ``max_n``-draw distance by the noise that averaging more draws would remove:
  ``E[d_m] = |b|^2 + tr(S) / m`` (``b`` the bias of a variation, ``S`` the per-pixel covariance of
  the draws). With ``tr(S)`` estimated by the draws' summed sample variance ``s2``, the
  bias-corrected estimate ``d_hat = d_m - s2 (1/m - 1/max_n)`` has the expectation of
  ``d_{max_n}``; at ``m = max_n`` it is ``d_{max_n}`` itself, so an image that uses the whole
  budget gets exactly a fixed-``n`` run's score;
- its standard error ``se = 2 sqrt(b^T S b (1/m - 1/max_n))`` (the leading term of
  ``d_hat - d_{max_n}``, ``b`` estimated by ``x - x_bar_m``, ``b^T S b`` by the sample variance of
  ``b^T v_j``);
- the image stops when ``|d_hat - threshold| > stop_z * se``; its score is ``-d_hat``.

The threshold (``stop_threshold``, in distance units) is calibrated on the run's calibration
images: they are scored first with the whole budget and the threshold is set where members and
non-members separate best (the midpoint between neighbouring calibration scores that maximises
balanced accuracy). Metrics are then computed on the held-out images only.

Draws stay per-image seeded: image ``i``'s draw ``d`` has the seed of draw ``d`` in a fixed-``n``
run, whatever the batch and whichever other images are still drawing, so scores do not depend on
batching or resumption and the first ``m`` draws equal an ``m``-draw run's (the query cache shares
them with fixed-``n`` entries of the same ``seed_key``).
"""

from __future__ import annotations

import numpy as np
import torch

from audit_core.attacks import AttackOutput, Batch


def estimate(x: torch.Tensor, draws: torch.Tensor, max_n: int) -> tuple[float, float]:
    """``(d_hat, se)`` for one image ``x`` ``[C, H, W]`` and its ``m >= 2`` draws ``[m, C, H, W]``
    (float64 arithmetic; see the module notes)."""
    v = draws.double()
    m = v.shape[0]
    x_bar = v.mean(dim=0)
    b = x.double() - x_bar
    d = float((b * b).sum())
    s2 = float(v.var(dim=0, unbiased=True).sum())
    shrink = 1.0 / m - 1.0 / max_n
    q = ((v - x_bar) * b).flatten(1).sum(dim=1)  # b^T (v_j - x_bar)
    bsb = float(q.pow(2).sum()) / (m - 1)
    return d - s2 * shrink, 2.0 * (max(bsb, 0.0) * shrink) ** 0.5


def score_adaptive(attack, batch: Batch) -> AttackOutput:
    """Score ``batch`` with the adaptive budget of ``attack.params`` (``min_n``, ``max_n``,
    ``stop_z``, ``stop_threshold``; no threshold: every image gets ``max_n``). Per image, the
    draws spent go to ``AttackOutput.queries``."""
    p = attack.params
    x = batch.images.float()
    first = attack._variations(batch, p.min_n)  # [B, min_n, C, H, W]: draws 0 .. min_n - 1
    draws = [first[i] for i in range(len(batch))]
    result: dict[int, float] = {}
    active = list(range(len(batch)))
    m = p.min_n
    while active:
        still = []
        for i in active:
            d_hat, se = estimate(x[i], draws[i], p.max_n)
            done = m >= p.max_n or (p.stop_threshold is not None and abs(d_hat - p.stop_threshold) > p.stop_z * se)
            if done:
                result[i] = d_hat if m < p.max_n else float(attack.dist(x[i : i + 1], draws[i].mean(dim=0, keepdim=True)))
            else:
                still.append(i)
        active = still
        if not active:
            break
        sub = Batch(
            images=batch.images[active], ids=[batch.ids[i] for i in active],
            captions=[batch.captions[i] for i in active], run_seed=batch.run_seed, seed_key=batch.seed_key,
        )
        more = attack._variations(sub, 1, first_draw=m)  # draw m of each undecided image, one call
        for j, i in enumerate(active):
            draws[i] = torch.cat([draws[i], more[j]], dim=0)
        m += 1
    x_bar = torch.stack([d.mean(dim=0) for d in draws])
    scores = torch.tensor([-result[i] for i in range(len(batch))], dtype=torch.float64)
    spent = torch.tensor([d.shape[0] for d in draws], dtype=torch.float64)
    return AttackOutput(scores=scores, residuals=(x - x_bar).abs(), reconstructions=x_bar, queries=spent)


def calibrate_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The distance threshold separating the calibration members (label 1, higher score = smaller
    distance) from the non-members best: the midpoint between neighbouring distances that
    maximises balanced accuracy (the first such midpoint)."""
    d = -np.asarray(scores, dtype=np.float64)  # distances
    y = np.asarray(labels)
    order = np.sort(np.unique(d))
    if len(order) < 2 or y.min() == y.max():
        return float(np.median(d))
    cuts = (order[:-1] + order[1:]) / 2
    tpr = np.array([(d[y == 1] < c).mean() for c in cuts])
    tnr = np.array([(d[y == 0] >= c).mean() for c in cuts])
    return float(cuts[int(np.argmax(tpr + tnr))])
