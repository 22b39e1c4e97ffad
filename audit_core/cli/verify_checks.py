"""``audit verify``: the outcome of the checks, and the checks of the run's inputs (images,
manifests, model files, with ``--data-root`` / ``--model-root``) and of its numbers (metrics and
p-values recomputed from scores.csv). See :mod:`audit_core.cli.verify`."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..run import attest
from ..base.errors import AuditError


@dataclass
class Outcome:
    failures: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, line: str) -> None:
        self.failures.append(line)

    @property
    def ok(self) -> bool:
        return not self.failures


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------- inputs
def _mapped(path: str, recorded_root: str | None, new_root: Path | None) -> Path:
    """A recorded path (relative to ``recorded_root``, or absolute) where it is now."""
    p = Path(path)
    if p.is_absolute():
        if new_root is not None and recorded_root:
            try:
                return new_root / p.relative_to(recorded_root)
            except ValueError:
                return p
        return p
    return (new_root if new_root is not None else Path(recorded_root or ".")) / p


def _inputs(run_dir: Path, pred: dict, data_root: Path | None, model_root: Path | None, out: Outcome) -> None:
    inputs = pred.get("inputs") or {}
    data = inputs.get("data") or {}
    images = [i for i in data.get("images") or [] if isinstance(i, dict)]
    root = data.get("root")
    bad, arrays = 0, []
    for img in images:
        if img.get("path") is None:
            arrays.append(img)
            continue
        p = _mapped(str(img["path"]), root, data_root)
        if not p.is_file():
            hint = "" if data_root is not None else " (moved? map the data with --data-root DIR)"
            out.fail(f"image {img.get('id')}: {p} is missing{hint}")
            bad += 1
        elif attest.sha256_file(p) != img.get("sha256"):
            out.fail(f"image {img.get('id')}: {p}: sha256 differs from the attestation")
            bad += 1
    if arrays:
        bad += _array_images(run_dir, pred, arrays, out)
    for g, info in (data.get("groups") or {}).items():
        members = [i for i in images if i.get("group") == g]
        if info.get("count") != len(members) or info.get("digest") != attest.set_digest(members):
            out.fail(f"{attest.ATTESTATION}: predicate.inputs.data.groups.{g} does not match its images (count or digest)")
            bad += 1
    for src in data.get("sources") or []:
        m = src.get("manifest") if isinstance(src, dict) else None
        if isinstance(m, dict):
            p = _mapped(m["path"], root, data_root) if data_root is not None else Path(m["path"])
            if not p.is_file():
                out.fail(f"data manifest {p} ({src.get('group')}): missing")
                bad += 1
            elif attest.sha256_file(p) != m.get("sha256"):
                out.fail(f"data manifest {p} ({src.get('group')}): sha256 differs from the attestation")
                bad += 1
    if not bad:
        out.passed.append(f"inputs: {len(images)} image(s) match their recorded sha256")
    model = inputs.get("model") or {}
    mbad = 0
    for f in model.get("files") or []:
        p = _mapped(str(f["path"]), model.get("root"), model_root)
        if not p.is_file():
            out.fail(f"model file {p}: missing" + ("" if model_root is not None else " (moved? map it with --model-root DIR)"))
            mbad += 1
        elif attest.sha256_file(p) != f.get("sha256"):
            out.fail(f"model file {p}: sha256 differs from the attestation")
            mbad += 1
    if not model.get("files"):
        out.notes.append(f"model: no local model files recorded (target {model.get('target')}: identity {model.get('identity')})")
    elif not mbad:
        out.passed.append(f"model: {len(model['files'])} file(s) match their recorded sha256")
    conf = (inputs.get("config") or {})
    resolved = conf.get("resolved") or {}
    p = run_dir / "config.resolved.yaml"
    if resolved and p.is_file() and attest.sha256_file(p) != resolved.get("sha256"):
        out.fail("config.resolved.yaml: sha256 differs from predicate.inputs.config.resolved")
    source = conf.get("source")
    if isinstance(source, dict):
        sp = Path(source.get("path", ""))
        if not sp.is_file():
            out.notes.append(f"config source {sp}: not here (the resolved config in the run directory is what was run)")
        elif attest.sha256_file(sp) != source.get("sha256"):
            out.fail(f"config source {sp}: sha256 differs from the attestation (edited since the run)")


def _array_images(run_dir: Path, pred: dict, arrays: list[dict], out: Outcome) -> int:
    """In-memory images (a registered dataset's arrays): rebuilt through the dataset plugin."""
    from ..plugin import factory
    from ..data import content_hash

    try:
        loaded = _resolved_config(run_dir, pred, [], None, None)
        records = factory.load_data(loaded.cfg.data, loaded.base_dir).records
    except AuditError as exc:
        out.fail(f"images from {_sources(pred)}: cannot be rebuilt to check them ({exc})")
        return 1
    by_id = {r.id: r for r in records}
    bad = 0
    for img in arrays:
        r = by_id.get(img.get("id"))
        if r is None:
            out.fail(f"image {img.get('id')}: no longer in {_sources(pred)}")
            bad += 1
        elif content_hash(r) != img.get("sha256"):
            out.fail(f"image {img.get('id')}: sha256 differs from the attestation ({_sources(pred)})")
            bad += 1
    return bad


def _sources(pred: dict) -> str:
    srcs = ((pred.get("inputs") or {}).get("data") or {}).get("sources") or []
    return ", ".join(str(s.get("source")) for s in srcs if isinstance(s, dict)) or "the data"


# --------------------------------------------------------------------------------- numbers
def _csv_rows(run_dir: Path) -> list[dict] | None:
    try:
        with open(run_dir / "scores.csv", newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is None and b is None
    try:
        fa, fb = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    return math.isclose(fa, fb, rel_tol=1e-12, abs_tol=1e-15)


def _numbers(run_dir: Path, pred: dict, out: Outcome) -> None:
    """results.json's metrics (and p-values) recomputed from scores.csv with the recorded settings."""
    import yaml

    from ..copyright import inference
    from ..stats import metrics
    from ..stats.results import ScoreRow

    try:
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        cfg = yaml.safe_load((run_dir / "config.resolved.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        out.fail(f"results.json / config.resolved.yaml: cannot be read to recompute the metrics ({exc})")
        return
    rows = _csv_rows(run_dir)
    if rows is None:
        out.fail("scores.csv: cannot be read")
        return
    run = pred.get("run") or {}
    pos = (run.get("labels") or {}).get("positive", "member")
    seed = int((cfg.get("run") or {}).get("seed", 0))
    bootstrap = int((cfg.get("metrics") or {}).get("bootstrap", 1000))
    attacks = results.get("attacks") or {}
    bad = 0
    for name, entry in attacks.items():
        mine = [r for r in rows if r.get("attack") == name and r.get("split", "all") != "calibration"]
        if not mine:
            out.fail(f"scores.csv: no rows of attack {name}")
            bad += 1
            continue
        try:
            scores = [float(r["score"]) for r in mine]
        except (KeyError, ValueError):
            out.fail(f"scores.csv: a score of attack {name} is not a number")
            bad += 1
            continue
        import numpy as np

        labels = np.array([1 if r.get("label") == pos else 0 for r in mine])
        try:
            got = metrics.compute(np.array(scores), labels, bootstrap, seed)
        except Exception as exc:  # noqa: BLE001 - e.g. one class only: the recorded metrics cannot hold
            out.fail(f"scores.csv: metrics of {name} cannot be recomputed ({exc})")
            bad += 1
            continue
        for key, m in (entry.get("metrics") or {}).items():
            if not isinstance(m, dict) or key not in got:
                continue
            for part in ("value", "ci95"):
                if not _close(m.get(part), got[key].get(part)):
                    out.fail(f"results.json: attacks.{name}.metrics.{key}.{part} is {m.get(part)}, scores.csv gives {got[key].get(part)}")
                    bad += 1
        recorded = (pred.get("metrics") or {}).get(name) or {}
        for key, v in recorded.items():
            if key in got and not _close(v, got[key]["value"]):
                out.fail(f"{attest.ATTESTATION}: predicate.metrics.{name}.{key} is {v}, scores.csv gives {got[key]['value']}")
                bad += 1
    si = results.get("set_inference")
    if isinstance(si, dict) and si:
        inf = cfg.get("inference") or {}
        score_rows = []
        for r in rows:
            try:
                score_rows.append(ScoreRow(r["attack"], r["image_id"], r.get("path", ""), r["label"], float(r["score"]), r.get("split", "all")))
            except (KeyError, ValueError):
                continue
        block = inference.set_inference(score_rows, float(inf.get("alpha", 0.05)), str(inf.get("combine", "rank")), seed,
                                        int(inf.get("permutations", 9999)), _combining(results))
        for name, e in si.items():
            if name == "combined" or not isinstance(e, dict) or name not in block:
                continue
            if not _close(e.get("p_value"), block[name].get("p_value")):
                out.fail(f"results.json: set_inference.{name}.p_value is {e.get('p_value')}, scores.csv gives {block[name].get('p_value')}")
                bad += 1
        for r, row in zip([r for r in rows if "p_value" in r], score_rows):
            if r.get("p_value", "") != row.p_value or r.get("flagged", "") != row.flagged:
                out.fail(f"scores.csv: {row.attack} / image {row.image_id}: flagged/p_value do not follow from the scores")
                bad += 1
                break
        comb, mine = si.get("combined"), block.get("combined")
        if isinstance(comb, dict) and isinstance(mine, dict) and "stage2" not in comb and "stages" not in comb:
            if not _close(comb.get("p_value"), mine.get("p_value")):
                out.fail(f"results.json: set_inference.combined.p_value is {comb.get('p_value')}, scores.csv gives {mine.get('p_value')}")
                bad += 1
    if not bad:
        out.passed.append(f"results.json: the metrics of {len(attacks)} attack(s) recomputed from scores.csv")


def _combining(results: dict) -> set[str]:
    from ..plugin import manager as plugins

    reg = plugins.registry("attacks")
    out = set()
    for name, a in (results.get("attacks") or {}).items():
        cls = reg.get(a.get("plugin")) if isinstance(a, dict) else None
        try:
            if cls is not None and getattr(cls, "combines", False):
                out.add(name)
        except Exception:  # noqa: BLE001 - an unimportable plugin: treated as not combining
            pass
    return out


def _resolved_config(run_dir: Path, pred: dict, overrides: list[str], data_root: Path | None, model_root: Path | None):
    """The run's config.resolved.yaml, relative paths resolved against the original config's
    folder, data and model paths mapped to ``data_root`` / ``model_root`` when given."""
    from ..base.config import load_config_text

    text = (run_dir / "config.resolved.yaml").read_text(encoding="utf-8")
    source = ((pred.get("inputs") or {}).get("config") or {}).get("source") or {}
    base = Path(source["path"]).parent if source.get("path") else run_dir
    data = (pred.get("inputs") or {}).get("data") or {}
    sets = list(overrides)
    if data_root is not None and data.get("root"):
        for src in data.get("sources") or []:
            spec = str(src.get("source", ""))
            if src.get("group") == "dataset" or spec.startswith("builtin:"):
                continue
            p = Path(spec).expanduser()
            p = p if p.is_absolute() else base / p
            sets.append(f"data.{src['group']}={_mapped(str(p.resolve()), data['root'], data_root)}")
    model = (pred.get("inputs") or {}).get("model") or {}
    if model_root is not None and model.get("root"):
        sets.append(f"target.model={model_root}")
    return load_config_text(text, str(run_dir / "config.resolved.yaml"), base, sets)
