"""The run's attestation: an in-toto Statement (v1) written with every run.

Two statements, both built and validated with the ``in-toto-attestation`` library:

- ``attestation.intoto.json`` (predicate type :data:`PREDICATE_TYPE`): its subjects are the run's
  outputs (config.resolved.yaml, results.json, scores.csv, the gallery PNGs under artifacts/); its
  predicate holds the inputs (the sha256 of every scored image, of the data manifests, of every
  model file the target read, of the resolved config), the software versions, the per-image seed
  rule, the metrics and the conclusion. Its sha256 is *the attestation digest* the reports show.
- ``reports.intoto.json`` (:data:`REPORTS_PREDICATE_TYPE`): its subjects are the rendered reports
  (which show the attestation digest, so they cannot be subjects of the statement they quote);
  its predicate names the attestation digest. Rewritten whenever the reports are re-rendered.

``audit sign`` adds ``signatures.intoto.jsonl`` (an in-toto bundle: one DSSE envelope per line,
one per statement, see :mod:`audit_core.base.signing`); ``audit verify`` (:mod:`audit_core.cli.verify`)
checks them all. docs/evidence.md documents the predicate."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..base.errors import AuditError

ATTESTATION = "attestation.intoto.json"
REPORTS_ATTESTATION = "reports.intoto.json"
SIGNATURES = "signatures.intoto.jsonl"
#: the predicate types (documented in docs/evidence.md)
PREDICATE_TYPE = "urn:audit-core:predicate:run:v1"
REPORTS_PREDICATE_TYPE = "urn:audit-core:predicate:reports:v1"
#: the rule every per-image random draw follows (audit_core.seeding.derive_seed)
SEED_RULE = (
    "seed(draw) = blake2b(f'{run_seed}\\x1f{seed_key}\\x1f{image_id}\\x1f{draw}', digest_size=8) as a big-endian "
    "integer >> 1 (63 bits); each draw is torch.randn on a CPU generator seeded with it"
)
#: files of the run that are never subjects (they change after the run, or are its working state)
NOT_SUBJECTS = {ATTESTATION, REPORTS_ATTESTATION, SIGNATURES, ".audit-run.json", ".lock", "audit.log",
                "state.sqlite", "state.sqlite-wal", "state.sqlite-shm"}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def set_digest(images: list[dict[str, Any]]) -> str:
    """One digest for a set of images: sha256 over its sorted ``id<TAB>sha256`` lines."""
    lines = sorted(f"{i['id']}\t{i['sha256']}\n" for i in images)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# --------------------------------------------------------------------------------- statements
def statement_bytes(subjects: list[tuple[str, str]], predicate_type: str, predicate: dict[str, Any]) -> bytes:
    """An in-toto Statement v1 as JSON bytes. Built and validated by ``in-toto-attestation``; the
    predicate is written as given (the library's protobuf Struct would turn integers into floats
    and lose the low bits of 63-bit seeds), which the check below proves is the same value."""
    from google.protobuf import json_format
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    predicate = _printable(json.loads(json.dumps(predicate)))  # plain JSON values only, valid UTF-8
    stmt = Statement([ResourceDescriptor(name=n, digest={"sha256": d}).pb for n, d in subjects], predicate_type, predicate)
    stmt.validate()
    out = json_format.MessageToDict(stmt.pb)
    if json.loads(json.dumps(out["predicate"])) != _floats(predicate):  # pragma: no cover - a library change
        raise AssertionError("the in-toto library changed the predicate")
    out["predicate"] = predicate
    return (json.dumps(out, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def _printable(v: Any) -> Any:
    """Every string as UTF-8 can hold it: a file name that is not UTF-8 (lone surrogates) as
    ``\\xNN`` escapes, as image ids are (:func:`audit_core.data.printable_name`)."""
    from ..data import printable_name

    if isinstance(v, str):
        return printable_name(v)
    if isinstance(v, dict):
        return {printable_name(str(k)): _printable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_printable(x) for x in v]
    return v


def _floats(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, list):
        return [_floats(x) for x in v]
    return {k: _floats(x) for k, x in v.items()}


def parse_statement(data: bytes, name: str) -> dict[str, Any]:
    """A statement file's content, checked by ``in-toto-attestation`` (type, subjects with
    digests, predicate type and predicate); ValueError naming the file otherwise."""
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    try:
        obj = json.loads(data.decode("utf-8"))
        pb = json_format.ParseDict(obj, statement_pb2.Statement())
        Statement.copy_from_pb(pb).validate()
    except (ValueError, UnicodeDecodeError, json_format.ParseError) as exc:
        raise ValueError(f"{name}: not a valid in-toto Statement v1 ({exc})") from None
    return obj


def subjects_of(run_dir: Path, names: list[str]) -> list[tuple[str, str]]:
    return [(n, sha256_file(run_dir / n)) for n in sorted(names) if (run_dir / n).is_file()]


def run_subjects(run_dir: Path, manifest_files: set[str], report_files: set[str]) -> list[str]:
    """The run's outputs: every file of its manifest but the working state, the statements, the
    signatures and the reports (covered by the reports statement)."""
    return sorted(
        f for f in manifest_files
        if f not in NOT_SUBJECTS and f not in report_files and not f.startswith(".") and (run_dir / f).is_file()
    )


# --------------------------------------------------------------------------------- the predicate
def _model_files(target: Any) -> tuple[str | None, list[Path]]:
    """(root, files) of the model the target read: the target's own ``model_files()`` when it
    has one, else every file under its local model folder (``describe()["model_path"]`` or
    ``target.path``); none for a remote or in-memory model."""
    fn = getattr(target, "model_files", None)
    if callable(fn):
        files = [Path(f) for f in fn()]
        root = os.path.commonpath([str(f.parent) for f in files]) if files else None
        return root, sorted(files)
    p = None
    try:
        p = target.describe().get("model_path")
    except Exception:  # noqa: BLE001 - describe is the plugin's; a failure leaves no files to list
        p = None
    p = p or getattr(target, "path", None)
    if not p or not isinstance(p, (str, Path)):
        return None, []
    p = Path(p)
    if p.is_file():
        return str(p.parent), [p]
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)]
        return str(p), sorted(files)
    return None, []


def _rel(path: str, root: str | None) -> str:
    if root:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def data_sources(cfg_data: Any, base_dir: Path) -> list[dict[str, Any]]:
    """The ``data:`` entries as written, with the sha256 of each manifest file (CSV/JSONL)."""
    from ..data import MANIFEST_EXTS

    out = []
    for group in ("members", "nonmembers", "suspects", "reference"):
        spec = getattr(cfg_data, group, None)
        if spec is None:
            continue
        entry: dict[str, Any] = {"group": group, "source": spec}
        if not spec.startswith("builtin:"):
            p = Path(spec).expanduser()
            p = p if p.is_absolute() else base_dir / p
            if p.is_file() and p.suffix.lower() in MANIFEST_EXTS:
                entry["manifest"] = {"path": str(p), "sha256": sha256_file(p)}
        out.append(entry)
    if getattr(cfg_data, "dataset", None):
        out.append({"group": "dataset", "source": cfg_data.dataset, "root": cfg_data.root, "split": cfg_data.split})
    return out


def predicate(plan: Any, image_hashes: dict[str, str], results: dict[str, Any]) -> dict[str, Any]:
    """The run predicate from a finished run's plan: inputs, software, seeds, metrics, conclusion."""
    from ..base.version import __version__
    from ..base.records import LABEL_NAMES

    cfg, records = plan.cfg, plan.data.records
    paths = [r.path for r in records if r.path]
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else None
    images = []
    for r in records:
        h = image_hashes.get(r.id)
        if h is None:  # every scored image's hash is in the store (rescore_changed at start)
            raise AuditError(f"image {r.id}: no content hash in the run store; run again with --resume")
        images.append({"id": r.id, "group": r.group, "path": _rel(os.path.abspath(r.path), root) if r.path else None, "sha256": h})
    groups = {}
    for g in dict.fromkeys(r.group for r in records):
        members = [i for i in images if i["group"] == g]
        groups[g] = {"count": len(members), "digest": set_digest(members)}
    model_root, files = _model_files(plan.target)
    env = results.get("environment") or {}
    target_desc = results.get("target") or {}
    source = Path(str(plan.loaded.source)) if plan.loaded.source else None
    attacks = {}
    for pa in plan.attacks:
        attacks[pa.name] = {
            "plugin": pa.cls.name, "seed_key": pa.seed_key,
            "params": (results.get("attacks") or {}).get(pa.name, {}).get("params", {}),
        }
    metrics = {
        name: {k: v.get("value") for k, v in (a.get("metrics") or {}).items() if isinstance(v, dict)}
        for name, a in (results.get("attacks") or {}).items()
    }
    si = results.get("set_inference") or {}
    conclusion: dict[str, Any] = {"mode": plan.data.mode}
    if isinstance(si.get("combined"), dict):
        comb = si["combined"]
        conclusion.update({k: comb[k] for k in ("method", "p_value", "alpha", "evidence", "conclusion") if k in comb})
    if plan.data.mode == "copyright":
        conclusion["per_attack"] = {
            n: {k: e.get(k) for k in ("p_value", "flagged", "evidence") if k in e}
            for n, e in si.items() if n != "combined" and isinstance(e, dict)
        }
    pos, neg = LABEL_NAMES[plan.data.mode][1], LABEL_NAMES[plan.data.mode][0]
    return {
        "run": {
            "name": cfg.run.name, "mode": plan.data.mode, "seed": cfg.run.seed,
            "started": results["run"].get("started"), "finished": results["run"].get("finished"),
            "config_fingerprint": plan.fingerprint, "labels": {"positive": pos, "negative": neg},
        },
        "inputs": {
            "config": {
                "resolved": {"path": "config.resolved.yaml", "sha256": sha256_file(plan.run_dir / "config.resolved.yaml")},
                "source": (
                    {"path": str(source.resolve()), "sha256": sha256_file(source)} if source and source.is_file() else None
                ),
            },
            "data": {
                "root": root,
                "sources": data_sources(cfg.data, plan.loaded.base_dir),
                "groups": groups,
                "images": images,
                "skipped": results["run"].get("skipped") or [],
            },
            "model": {
                "target": cfg.target.plugin,
                "identity": plan.target.identity(),
                "root": model_root,
                "files": [{"path": _rel(str(f), model_root), "sha256": sha256_file(f), "bytes": f.stat().st_size} for f in files],
                "weights_sha256": target_desc.get("weights_sha256"),
            },
        },
        "software": {
            "audit-core": __version__,
            "plugins": env.get("plugins") or {},
            "packages": env.get("packages") or {},
            "python": env.get("python"),
            "git_sha": env.get("git_sha"),
        },
        "execution": {
            "device": env.get("device"),
            "dtype": target_desc.get("dtype"),
            "executor": (results["run"].get("executor") or {}),
            "batch_size": plan.batch_size,
            "platform": env.get("platform"),
        },
        "seeds": {"run_seed": cfg.run.seed, "rule": SEED_RULE, "attacks": attacks},
        "inference": {"alpha": cfg.inference.alpha, "combine": cfg.inference.combine},
        "metrics": metrics,
        "conclusion": conclusion,
    }


def write_run_attestation(plan: Any, image_hashes: dict[str, str], results: dict[str, Any], manifest: Any) -> Path:
    """Write ``attestation.intoto.json`` for a finished run (after results.json and scores.csv;
    before the reports, which show its digest) from its :class:`~audit_core.run.plan.RunPlan`,
    results and manifest (the run directory's own files). A new attestation voids earlier signatures."""
    run_dir = plan.run_dir
    pred = predicate(plan, image_hashes, results)
    subjects = subjects_of(run_dir, run_subjects(run_dir, manifest.files, set()))
    manifest.add(ATTESTATION, REPORTS_ATTESTATION, SIGNATURES)
    (run_dir / SIGNATURES).unlink(missing_ok=True)
    write_bytes(run_dir / ATTESTATION, statement_bytes(subjects, PREDICATE_TYPE, pred))
    return run_dir / ATTESTATION


def write_reports_attestation(run_dir: Path, report_paths: list[Path]) -> Path | None:
    """Write ``reports.intoto.json`` over the rendered reports (and those an earlier statement
    listed that still exist); none when the run has no attestation or no reports."""
    run_dir = Path(run_dir)
    att = run_dir / ATTESTATION
    if not att.is_file():
        return None
    names = set()
    for p in report_paths:
        try:
            names.add(Path(p).resolve().relative_to(run_dir.resolve()).as_posix())
        except ValueError:
            continue
    old = run_dir / REPORTS_ATTESTATION
    if old.is_file():
        try:
            names |= {s["name"] for s in json.loads(old.read_text(encoding="utf-8")).get("subject", [])}
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
    subjects = subjects_of(run_dir, [n for n in names if n not in NOT_SUBJECTS])
    if not subjects:
        old.unlink(missing_ok=True)
        return None
    pred = {"attestation": {"name": ATTESTATION, "digest": {"sha256": sha256_file(att)}}, "signer": info(run_dir).get("fingerprint")}
    write_bytes(old, statement_bytes(subjects, REPORTS_PREDICATE_TYPE, pred))
    return old


def write_bytes(path: Path, data: bytes) -> None:
    """Atomic write of a statement, registered secrets scrubbed *before* its bytes exist (they are
    signed byte for byte, so the run's final scrub must find nothing to change in them; they hold
    hashes, paths and versions, and a target's identity, which must not carry a token anyway)."""
    from ..base import secrets
    from ..base.atomic import atomic_write

    atomic_write(path, secrets.scrub(data.decode("utf-8")))


# --------------------------------------------------------------------------------- what reports show
def info(run_dir: str | Path) -> dict[str, Any]:
    """What a report shows about the run's attestation: ``digest`` (sha256 of
    attestation.intoto.json, None without one), ``signed`` (a signature bundle whose first
    envelope carries exactly these bytes), ``fingerprint`` of the signing key, and the exact
    ``verify_command`` (naming the run directory by its name, to run from the folder holding it).
    Reads the files at render time: ``audit sign`` re-renders the reports."""
    import shlex

    from ..base import signing

    run_dir = Path(run_dir)
    att = run_dir / ATTESTATION
    if not att.is_file():
        return {"digest": None, "signed": False, "fingerprint": None, "verify_command": None}
    data = att.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    fpr = None
    sig = run_dir / SIGNATURES
    if sig.is_file():
        try:
            envs = signing.read_bundle(sig)
            if envs and signing.envelope_payload(envs[0]) == data:
                fpr = (signing.envelope_keyids(envs[0]) or [None])[0]
        except (OSError, ValueError):
            fpr = None
    # the run directory by its name (run from the folder that holds it): a report does not depend on
    # where the run directory lies, and is the same file after it is copied or handed over
    cmd = ["audit", "verify", run_dir.resolve().name] + (["--key", "PUBLIC_KEY.pem"] if fpr else []) + ["--rescore", "5"]
    return {"digest": digest, "signed": fpr is not None, "fingerprint": fpr, "verify_command": shlex.join(cmd)}


# --------------------------------------------------------------------------------- audit sign
