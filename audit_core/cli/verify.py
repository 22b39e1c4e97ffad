"""``audit verify RUN_DIR``: re-check an attested run, offline.

Checks, each failure one line naming the file, image id or field:

1. the statements: ``attestation.intoto.json`` and ``reports.intoto.json`` are valid in-toto
   Statements v1 of the documented predicate types; the reports statement names this attestation;
2. the signatures (``signatures.intoto.jsonl``): with ``--key``, each statement is signed by
   that key, byte for byte; without, a signed statement must still be the one signed;
3. the subjects: every output (results.json, scores.csv, config.resolved.yaml, gallery PNGs,
   reports) has the sha256 the statements give;
4. the inputs: every image (``--data-root`` maps moved data), data manifest and model file
   (``--model-root``) has its recorded sha256; each set's digest matches its images;
5. the numbers: results.json's metrics (and copyright mode's p-values) recomputed from scores.csv;
6. ``--rescore N``: N images drawn by a seeded rule are scored again through the normal runner
   machinery with the recorded config, target, attacks, params and seeds, and compared with
   scores.csv: bit for bit on the recorded device type and dtype, else within :data:`RTOL`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base import signing
from ..run import attest
from ..base.errors import AuditError

#: relative tolerance of a re-score on another device type or dtype than the run's (float32
#: reductions differ in order between CPU and GPU kernels); |new - old| <= RTOL * max(1, |old|)
RTOL = 1e-3


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


def verify_run(
    run_dir: Path, key: Path | None = None, data_root: Path | None = None, model_root: Path | None = None,
    rescore: int = 0, rescore_seed: int | None = None,
) -> Outcome:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AuditError(f"{run_dir} is not a run directory (no such folder)")
    public = signing.load_public_key(key) if key is not None else None  # a bad key is bad input (exit 2)
    if data_root is not None and not Path(data_root).is_dir():
        raise AuditError(f"--data-root {data_root}: no such folder")
    if model_root is not None and not Path(model_root).is_dir():
        raise AuditError(f"--model-root {model_root}: no such folder")
    out = Outcome()
    att_path = run_dir / attest.ATTESTATION
    if not att_path.is_file():
        out.fail(f"{attest.ATTESTATION}: missing (the run was not attested)")
        return out
    att_bytes = att_path.read_bytes()
    try:
        stmt = attest.parse_statement(att_bytes, attest.ATTESTATION)
    except ValueError as exc:
        out.fail(str(exc))
        return out
    if stmt.get("predicateType") != attest.PREDICATE_TYPE:
        out.fail(f"{attest.ATTESTATION}: predicateType is {stmt.get('predicateType')!r}, not {attest.PREDICATE_TYPE}")
        return out
    out.passed.append(f"{attest.ATTESTATION}: an in-toto Statement v1, sha256 {_sha(att_bytes)}")
    reports_bytes = _reports_statement(run_dir, att_bytes, out)
    _signatures(run_dir, att_bytes, reports_bytes, public, key, out)
    _subjects(run_dir, stmt, attest.ATTESTATION, out)
    if reports_bytes is not None:
        _subjects(run_dir, json.loads(reports_bytes), attest.REPORTS_ATTESTATION, out)
    pred = stmt.get("predicate") or {}
    _inputs(run_dir, pred, data_root, model_root, out)
    _numbers(run_dir, pred, out)
    if rescore:
        _rescore(run_dir, pred, rescore, rescore_seed, data_root, model_root, out)
    return out


# --------------------------------------------------------------------------------- statements and signatures
def _reports_statement(run_dir: Path, att_bytes: bytes, out: Outcome) -> bytes | None:
    p = run_dir / attest.REPORTS_ATTESTATION
    if not p.is_file():
        out.notes.append(f"{attest.REPORTS_ATTESTATION}: none (the run has no reports)")
        return None
    data = p.read_bytes()
    try:
        stmt = attest.parse_statement(data, attest.REPORTS_ATTESTATION)
    except ValueError as exc:
        out.fail(str(exc))
        return None
    named = ((stmt.get("predicate") or {}).get("attestation") or {}).get("digest", {}).get("sha256")
    if stmt.get("predicateType") != attest.REPORTS_PREDICATE_TYPE:
        out.fail(f"{attest.REPORTS_ATTESTATION}: predicateType is {stmt.get('predicateType')!r}")
    elif named != _sha(att_bytes):
        out.fail(f"{attest.REPORTS_ATTESTATION}: predicate.attestation names sha256 {named}, not this {attest.ATTESTATION}")
    return data


def _signatures(run_dir: Path, att_bytes: bytes, reports_bytes: bytes | None, public: Any, key: Path | None, out: Outcome) -> None:
    p = run_dir / attest.SIGNATURES
    if not p.is_file():
        if public is not None:
            out.fail(f"{attest.SIGNATURES}: missing (the run is not signed; sign it with `audit sign {run_dir} --key KEY.pem`)")
        else:
            out.notes.append("not signed (no signatures.intoto.jsonl)")
        return
    try:
        envs = signing.read_bundle(p)
    except (OSError, ValueError) as exc:
        out.fail(f"{attest.SIGNATURES}: {exc}")
        return
    wanted = [(attest.ATTESTATION, att_bytes)] + ([(attest.REPORTS_ATTESTATION, reports_bytes)] if reports_bytes is not None else [])
    by_payload = {signing.envelope_payload(e): e for e in envs}
    signed_names = {}
    for env in envs:
        try:
            signed_names[signing.envelope_payload(env)] = json.loads(signing.envelope_payload(env)).get("predicateType")
        except ValueError:
            pass
    for name, data in wanted:
        env = by_payload.get(data)
        if env is None:
            ptype = attest.PREDICATE_TYPE if name == attest.ATTESTATION else attest.REPORTS_PREDICATE_TYPE
            if ptype in signed_names.values():
                out.fail(f"{name}: differs from the statement signed in {attest.SIGNATURES} (changed after signing)")
            else:
                out.fail(f"{name}: not signed in {attest.SIGNATURES}")
            continue
        signers = ", ".join(signing.envelope_keyids(env)) or "no key id"
        if public is None:
            out.notes.append(f"{name}: signed by {signers}; signature not checked (give --key PUBLIC.pem)")
            continue
        fpr = signing.fingerprint(public)
        if signing.verify(env, public):
            out.passed.append(f"{name}: signature by {fpr} verifies")
        elif fpr not in signing.envelope_keyids(env):
            out.fail(f"{attest.SIGNATURES}: {name} is signed by {signers}, not by the key {key} ({fpr})")
        else:
            out.fail(f"{attest.SIGNATURES}: the signature over {name} does not verify with {key} ({fpr})")


def _subjects(run_dir: Path, stmt: dict, name: str, out: Outcome) -> None:
    bad = 0
    subjects = stmt.get("subject") or []
    for s in subjects:
        rel = str(s.get("name", ""))
        want = (s.get("digest") or {}).get("sha256")
        p = run_dir / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            out.fail(f"{name}: subject {rel!r} is outside the run directory")
            bad += 1
        elif not p.is_file():
            out.fail(f"{rel}: missing (a subject of {name})")
            bad += 1
        elif attest.sha256_file(p) != want:
            out.fail(f"{rel}: sha256 differs from {name} (changed after the run)")
            bad += 1
    if not bad:
        out.passed.append(f"{name}: {len(subjects)} subject(s) match")


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
    from ..plugin import manager as plugins
    from ..data import content_hash, load_records

    try:
        loaded = _resolved_config(run_dir, pred, [], None, None)
        records = load_records(loaded.cfg.data, loaded.base_dir, plugins.registry("datasets")).records
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


# --------------------------------------------------------------------------------- rescoring
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
