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

import json
from pathlib import Path
from typing import Any

from ..base import signing
from ..run import attest
from ..base.errors import AuditError
from .verify_checks import (  # noqa: F401  (they lived here)
    Outcome, _array_images, _close, _combining, _csv_rows, _inputs, _mapped, _numbers, _resolved_config, _sha, _sources,
)
from .verify_rescore import RTOL, _rescore, draw_ids  # noqa: F401  (they lived here)


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


def show(outcome: Outcome, run_dir: Path, console: Any) -> bool:
    """Print an outcome, one line per check (``ok``, ``note``, ``FAIL``) and the verdict; True when
    every check held (``audit verify`` exits 0, else 1)."""
    for line in outcome.passed:
        console.print(f"ok    {line}", soft_wrap=True, highlight=False, markup=False)
    for line in outcome.notes:
        console.print(f"note  {line}", soft_wrap=True, highlight=False, markup=False)
    for line in outcome.failures:
        console.print(f"FAIL  {line}", soft_wrap=True, highlight=False, markup=False)
    if not outcome.ok:
        console.print(f"{run_dir}: {len(outcome.failures)} check(s) failed", soft_wrap=True, highlight=False, markup=False)
        return False
    console.print(f"{run_dir}: verified", soft_wrap=True, highlight=False, markup=False)
    return True


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
