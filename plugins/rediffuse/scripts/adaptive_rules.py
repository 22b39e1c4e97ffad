"""Stopping rules for ReDiffuse ``n: auto``, compared offline on recorded draws.

    .venv/bin/python plugins/rediffuse/scripts/adaptive_draws.py --out /tmp/adaptive-draws.npz
    .venv/bin/python plugins/rediffuse/scripts/adaptive_rules.py /tmp/adaptive-draws.npz

The draws of an image are per-image seeded and the first m of them are an m-draw run's, so the
fixed-n curve and every stopping rule are functions of one recording of ``max_n`` draws. Every
rule is fitted on the recording's calibration split (labels there only) and evaluated on the other
images (AUC); queries are per held-out image (the calibration images always cost ``max_n``).

Printed: the fixed-n curve; the shipped rule (``adaptive.py``: log d_max predicted from each prefix
by a line fitted on the calibration images, stop once the prediction is ``stop_z`` residual sds
from the threshold); the previous rule (bias-corrected distance with a per-image standard error);
and an oracle bound: a two-stage rule told in advance which held-out images are borderline at
``max_n`` (``|log d_max - log threshold|`` smallest), giving them ``max_n`` draws and the others ``m0``.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("draws", nargs="?", default="/tmp/adaptive-draws.npz")
    args = ap.parse_args()
    from audit_rediffuse.adaptive import calibrate_threshold, fit_stop_model

    d = np.load(args.draws)
    x, v, y, cal = d["x"].astype(np.float64), d["draws"].astype(np.float64), d["labels"], d["calibration"]
    n_img, max_n = v.shape[:2]
    x, v = x.reshape(n_img, -1), v.reshape(n_img, max_n, -1)
    ev = ~cal
    means = np.cumsum(v, axis=1) / np.arange(1, max_n + 1)[None, :, None]
    u = np.log(((x[:, None] - means) ** 2).sum(-1))  # [N, max_n] prefix log distances
    auc = lambda s: roc_auc_score(y[ev], s[ev])  # noqa: E731
    print(f"{n_img} images ({ev.sum()} held out), max_n {max_n}\n")
    print("| rule | queries per held-out image | held-out AUC |\n|---|---|---|")
    for m in range(1, max_n + 1):
        print(f"| fixed n={m} | {m} | {auc(-u[:, m - 1]):.4f} |")

    model = fit_stop_model(u[cal])
    log_tau = np.log(calibrate_threshold(-np.exp(u[cal, -1]), y[cal]))

    def sequential(z: float, min_n: int = 1):
        score, spent, active = -np.exp(u[:, -1]), np.full(n_img, max_n), np.ones(n_img, bool)
        for m in range(min_n, max_n):
            a, b, s = model[m - 1]
            u_hat = a * u[:, m - 1] + b
            stop = active & (np.abs(u_hat - log_tau) > z * s)
            score[stop], spent[stop] = -np.exp(u_hat[stop]), m
            active &= ~stop
        return score, spent

    for z in (1.0, 1.5, 2.0, 2.5, 3.0):
        score, spent = sequential(z)
        print(f"| calibrated (shipped), stop_z {z:g} | {spent[ev].mean():.2f} | {auc(score):.4f} |")

    tau = np.exp(log_tau)
    for z in (1.0, 2.0, 3.0):  # the previous rule: d_hat = d_m - s2 (1/m - 1/max_n), per-image se
        score, spent, active = -np.exp(u[:, -1]), np.full(n_img, max_n), np.ones(n_img, bool)
        for m in range(2, max_n):
            vm = v[:, :m]
            b = x - vm.mean(1)
            s2 = vm.var(1, ddof=1).sum(1)
            shrink = 1 / m - 1 / max_n
            d_hat = (b * b).sum(1) - s2 * shrink
            q = ((vm - vm.mean(1, keepdims=True)) * b[:, None]).sum(-1)
            se = 2 * np.sqrt(np.maximum((q**2).sum(1) / (m - 1), 0) * shrink)
            stop = active & (np.abs(d_hat - tau) > z * se)
            score[stop], spent[stop] = -d_hat[stop], m
            active &= ~stop
        print(f"| previous (per-image se), stop_z {z:g} | {spent[ev].mean():.2f} | {auc(score):.4f} |")

    gap = np.abs(u[:, -1] - log_tau)
    for m0 in (2, 3, 4):
        a, b, _ = model[m0 - 1]
        for frac in (0.3, 0.4, 0.5):
            borderline = gap < np.quantile(gap[ev], frac)
            score = np.where(borderline, -np.exp(u[:, -1]), -np.exp(a * u[:, m0 - 1] + b))
            spent = np.where(borderline, max_n, m0)
            print(f"| oracle two-stage: {frac:.0%} borderline get {max_n}, the rest {m0} | {spent[ev].mean():.2f} | {auc(score):.4f} |")


if __name__ == "__main__":
    main()
