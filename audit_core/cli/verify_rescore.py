"""``audit verify --rescore N``: N images drawn by a seeded rule scored again through the runner
with the recorded config, compared with scores.csv (bit for bit on the recorded device type and
dtype, else within :data:`RTOL`). See :mod:`audit_core.cli.verify`."""

from __future__ import annotations

import hashlib
import io
import tempfile
from pathlib import Path

from ..base.errors import AuditError
from .verify_checks import Outcome, _csv_rows, _resolved_config

#: relative tolerance of a re-score on another device type or dtype than the run's (float32
#: reductions differ in order between CPU and GPU kernels); |new - old| <= RTOL * max(1, |old|)
RTOL = 1e-3


# --------------------------------------------------------------------------------- rescoring
def draw_ids(ids: list[str], n: int, seed: int) -> list[str]:
    """The rescore rule: the ``n`` image ids with the smallest sha256(f"rescore\\x1f{seed}\\x1f{id}")."""
    key = lambda i: hashlib.sha256(f"rescore\x1f{seed}\x1f{i}".encode()).hexdigest()  # noqa: E731
    return sorted(sorted(set(ids), key=key)[:n], key=ids.index)


def _rescore(run_dir: Path, pred: dict, n: int, seed: int | None, data_root: Path | None, model_root: Path | None, out: Outcome) -> None:
    from rich.console import Console

    from ..run.runner import Runner

    rows = _csv_rows(run_dir) or []
    images = [i["id"] for i in ((pred.get("inputs") or {}).get("data") or {}).get("images") or []]
    seed = int((pred.get("run") or {}).get("seed", 0)) if seed is None else seed
    chosen = draw_ids(images, n, seed)
    out.notes.append(
        f"rescore: {len(chosen)} image(s) drawn with seed {seed} (smallest sha256('rescore\\x1f{seed}\\x1f<image id>')): "
        + ", ".join(chosen)
    )
    execution = pred.get("execution") or {}
    recorded = str(execution.get("device") or "cpu")
    device = recorded
    if recorded.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            device = "cpu"
    overrides = ["cache.enabled=false", f"run.device={device}"]
    if execution.get("batch_size"):  # the run's batches again: a batch's shape can change float results
        overrides.append(f"run.batch_size={int(execution['batch_size'])}")
    try:
        loaded = _resolved_config(run_dir, pred, overrides, data_root, model_root)
    except AuditError as exc:
        out.fail(f"rescore: config.resolved.yaml cannot be loaded ({exc})")
        return
    sink = Console(file=io.StringIO(), width=120)
    with tempfile.TemporaryDirectory(prefix="audit-verify-") as tmp:
        runner = Runner(loaded, output=Path(tmp) / "rescore", resume=False, console=sink)
        try:
            runner.prepare()
        except AuditError as exc:
            out.fail(f"rescore: the run cannot be rebuilt ({exc})")
            return
        try:
            exact = str(runner.target.device).split(":")[0] == recorded.split(":")[0] and (
                str(getattr(runner.target, "dtype", "")).replace("torch.", "") == str(execution.get("dtype") or "")
                or not execution.get("dtype")
            )
            exact = exact and (execution.get("executor") or {}).get("plugin", "inprocess") == "inprocess"
            csv_scores = {(r.get("attack"), r.get("image_id")): r.get("score") for r in rows}
            # each chosen image is scored in the batch it was scored in: the in-process executor
            # scores the records in order, in chunks of the batch size (a resumed run too: batches
            # commit whole), and CPU/GPU kernels may round differently for another batch shape
            order = {r.id: k for k, r in enumerate(runner.data.records)}
            bs = runner.batch_size
            chunks = sorted({order[i] // bs for i in chosen if i in order})
            records = [r for c in chunks for r in runner.data.records[c * bs:(c + 1) * bs]]
            missing = sorted(i for i in chosen if i not in order)
            for i in missing:
                out.fail(f"rescore: image {i} is not in the run's data any more")
            recorded_hash = {i["id"]: i["sha256"] for i in ((pred.get("inputs") or {}).get("data") or {}).get("images") or []}
            for pa in runner.attacks:
                if pa.cls.combines or pa.cfg.learned or pa.attack.needs_calibration():
                    out.notes.append(f"rescore: {pa.name} skipped (its scores are fitted on the run's calibration split)")
                    continue
                done = 0
                for res in runner.executor.run(runner._job(pa), runner._batches(records)):
                    for i, s in zip(res.ids, res.scores):
                        if i not in chosen:
                            continue
                        if runner.images.hashes.get(i) not in (None, recorded_hash.get(i)):
                            out.fail(f"rescore: image {i}: the bytes scored now differ from the attestation")
                        old = csv_scores.get((pa.name, i))
                        if old is None:
                            out.fail(f"rescore: scores.csv has no score of {pa.name} / image {i}")
                        elif exact and repr(float(s)) != old:
                            out.fail(f"rescore: {pa.name} / image {i}: scored {float(s)!r}, scores.csv says {old}")
                        elif not exact and abs(float(s) - float(old)) > RTOL * max(1.0, abs(float(old))):
                            out.fail(f"rescore: {pa.name} / image {i}: scored {float(s)!r}, scores.csv says {old} (beyond rtol {RTOL:g})")
                        else:
                            done += 1
                how = "bit for bit" if exact else f"within rtol {RTOL:g} (device {runner.target.device}, the run's was {recorded})"
                if done == len(chosen) - len(missing):
                    out.passed.append(f"rescore: {pa.name}: {done} score(s) equal scores.csv {how}")
        finally:
            runner.target.close()
            runner.executor.close()
