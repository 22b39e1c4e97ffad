"""Record every image's ``max_n`` ReDiffuse draws on the demo once, so stopping rules for
``n: auto`` can be compared offline (the first m draws of an image are an m-draw run's, so every
fixed n <= max_n and every adaptive rule is a function of these draws).

    .venv/bin/python plugins/rediffuse/scripts/adaptive_draws.py [--limit 500] [--max-n 10]
        [--out /tmp/adaptive-draws.npz]

One ``audit run`` (the runner, the demo's data and seeds: run seed 0, ``seed_key`` rediffuse) with
one fixed ``n = max_n`` entry; the attack's variation call is wrapped to keep the draws. Writes an
``.npz`` with ``ids``, ``labels`` (1 = member), ``calibration`` (the run's seeded calibration
split), ``x`` ``[N, C, H, W]`` and ``draws`` ``[N, max_n, C, H, W]`` (float32).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--max-n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="/tmp/adaptive-draws.npz")
    args = ap.parse_args()

    import torch
    from audit_rediffuse.attack import ReDiffuse

    from audit_core.base.config import load_config_text
    from audit_core.run.runner import Runner
    from audit_core.stats.scorer import calibration_split

    torch.set_num_threads(args.threads)
    kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    original = ReDiffuse._variations

    def keep(self, batch, draws, first_draw=0):
        v = original(self, batch, draws, first_draw)
        for i, image_id in enumerate(batch.ids):
            kept[image_id] = (batch.images[i].float().numpy().copy(), v[i].float().numpy().copy())
        return v

    ReDiffuse._variations = keep
    cfg = {
        "run": {"name": "adaptive-draws", "seed": args.seed, "device": "cpu", "batch_size": 100},
        "target": {"plugin": "ddim", "model": "builtin:digits-ddpm"},
        "data": {"members": "builtin:digits/members", "nonmembers": "builtin:digits/nonmembers", "limit": args.limit},
        "attacks": [{"plugin": "rediffuse", "params": {"t": 200, "k": 100, "n": args.max_n, "distance": "l2"}}],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 0},
        "reports": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        text = yaml.safe_dump(cfg, sort_keys=False)
        runner = Runner(load_config_text(text, str(Path(tmp) / "audit.yaml"), Path(tmp)), output=Path(tmp) / "run")
        runner.run()
        records = runner.data.records
    ids = [r.id for r in records]
    labels = np.array([r.label for r in records])
    cal = calibration_split(labels, runner.cfg.inference.calibration_fraction, args.seed)
    np.savez_compressed(
        args.out, ids=np.array(ids), labels=labels, calibration=cal,
        x=np.stack([kept[i][0] for i in ids]), draws=np.stack([kept[i][1] for i in ids]),
    )
    print(f"wrote {args.out}: {len(ids)} images x {args.max_n} draws")


if __name__ == "__main__":
    main()
