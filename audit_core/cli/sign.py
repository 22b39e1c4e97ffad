"""``audit sign``: sign a run's attestation offline and re-render its reports with the key's
fingerprint. Here, in the CLI layer, because it renders reports (:mod:`audit_core.run.reporting`
reads the attestation that :mod:`audit_core.run.attest` writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..base.errors import AuditError
from ..run.attest import (
    ATTESTATION, REPORTS_ATTESTATION, SIGNATURES, parse_statement, sha256_file, write_reports_attestation,
)


def sign_run(run_dir: Path, key: Path, passphrase_env: str | None = None, console: Any = None) -> tuple[str, list[Path]]:
    """``audit sign``: sign the run's attestation (DSSE, offline), re-render the run's reports so
    they show the signing key's fingerprint, re-write the reports statement and sign it too.
    Returns (fingerprint, files written). Refuses (exit 2) a run whose outputs no longer match
    their attestation: a signature vouches for what was run, so nothing changed is signed."""
    from ..base import signing
    from ..run.reporting import RunView, render_reports, reporters_from_config
    from ..run.rundir import Manifest
    from ..run.store import write_text

    run_dir = Path(run_dir)
    private = signing.load_private_key(key, passphrase_env)  # every key problem first (exit 2)
    att = run_dir / ATTESTATION
    if not run_dir.is_dir() or not att.is_file():
        raise AuditError(f"{run_dir} is not an attested run directory (no {ATTESTATION}); run the audit first")
    data = att.read_bytes()
    try:
        stmt = parse_statement(data, ATTESTATION)
    except ValueError as exc:
        raise AuditError(str(exc)) from None
    for s in stmt.get("subject") or []:
        p = run_dir / s["name"]
        if not p.is_file() or sha256_file(p) != s["digest"].get("sha256"):
            raise AuditError(
                f"{s['name']} does not match {ATTESTATION} (changed or missing since the run); nothing is signed. "
                f"`audit verify {run_dir}` lists every difference"
            )
    fpr = signing.fingerprint(private.public_key())
    manifest = Manifest.load(run_dir)
    manifest.add(SIGNATURES, REPORTS_ATTESTATION)
    first = signing.sign(data, private)
    write_text(run_dir / SIGNATURES, signing.bundle_text([first]))  # the reports read the fingerprint from it
    reps = reporters_from_config(run_dir)
    paths = render_reports(RunView(run_dir), reps, console) if reps else []
    if paths:
        manifest.add(*paths)
    envelopes = [first]
    rep = write_reports_attestation(run_dir, paths)
    if rep is not None:
        envelopes.append(signing.sign(rep.read_bytes(), private))
    write_text(run_dir / SIGNATURES, signing.bundle_text(envelopes))
    return fpr, [*paths, *([rep] if rep else []), run_dir / SIGNATURES]
