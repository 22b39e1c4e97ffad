"""Offline signing of a run's attestations: PEM keys (ECDSA P-256 or Ed25519, as ``openssl
genpkey`` writes them) and DSSE envelopes (securesystemslib), collected in an in-toto bundle
(``signatures.intoto.jsonl``, one envelope per line).

A key is named by its fingerprint: ``sha256:`` + the SHA-256 of its public key's DER
SubjectPublicKeyInfo, which anyone can recompute with
``openssl pkey -pubin -in PUB.pem -outform DER | sha256sum``. It is the envelopes' ``keyid``.

Every problem with a key (missing, unreadable, not a PEM key, encrypted without a passphrase, a
wrong passphrase, a public key where a private one is needed, an unsupported algorithm) is an
:class:`~audit_core.errors.AuditError` of one line naming the file (exit 2)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import AuditError

#: the media type of an in-toto Statement inside a DSSE envelope
PAYLOAD_TYPE = "application/vnd.in-toto+json"
SUPPORTED = "ECDSA P-256 or Ed25519"


def _pem(path: Path) -> bytes:
    path = Path(path)
    if not path.exists():
        raise AuditError(f"key {path}: no such file")
    if not path.is_file():
        raise AuditError(f"key {path}: not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditError(f"key {path}: cannot be read ({exc.strerror or exc})") from None
    if b"-----BEGIN" not in data:
        raise AuditError(f"key {path}: not a PEM key (make one with `openssl genpkey -algorithm ed25519 -out {path.name}`)")
    return data


def _check_algorithm(key: Any, path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.name == "secp256r1":
        return
    kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "").replace("PublicKey", "")
    curve = getattr(getattr(key, "curve", None), "name", "")
    raise AuditError(f"key {path}: a {kind}{' ' + curve if curve else ''} key; only {SUPPORTED} keys are supported")


def load_private_key(path: Path, passphrase_env: str | None = None) -> Any:
    """The private key in ``path`` (PEM), decrypted with the passphrase in the environment
    variable ``passphrase_env`` when it is encrypted."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    data = _pem(path)
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise AuditError(f"key {path}: a public key; `audit sign` needs the private key (`audit verify --key` takes the public one)")
    password = None
    if passphrase_env:
        value = os.environ.get(passphrase_env)
        if value is None:
            raise AuditError(f"--passphrase-env {passphrase_env}: the environment variable is not set")
        password = value.encode()
    encrypted = b"ENCRYPTED" in data
    if encrypted and password is None:
        raise AuditError(f"key {path}: encrypted; give its passphrase in an environment variable with --passphrase-env VAR")
    try:
        key = serialization.load_pem_private_key(data, password=password if encrypted else None)
    except TypeError:
        raise AuditError(f"key {path}: encrypted; give its passphrase in an environment variable with --passphrase-env VAR") from None
    except ValueError:
        if encrypted:
            raise AuditError(f"key {path}: the passphrase in ${passphrase_env} does not decrypt it") from None
        raise AuditError(f"key {path}: not a readable PEM private key") from None
    except Exception as exc:  # noqa: BLE001 - unsupported or damaged key material
        raise AuditError(f"key {path}: cannot be loaded ({type(exc).__name__}: {exc})") from None
    _check_algorithm(key, path)
    return key


def load_public_key(path: Path) -> Any:
    """The public key in ``path`` (PEM); a private key is refused (give the public half)."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    data = _pem(path)
    if b"PRIVATE KEY-----" in data:
        raise AuditError(
            f"key {path}: a private key; give the public key (`openssl pkey -in {path.name} -pubout -out public.pem`)"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except Exception:  # noqa: BLE001 - not a public key PEM
        raise AuditError(f"key {path}: not a readable PEM public key") from None
    _check_algorithm(key, path)
    return key


def fingerprint(public_key: Any) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo (``openssl pkey -pubin -outform DER | sha256sum``)."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _sslib_key(public_key: Any):
    from securesystemslib.signer import SSlibKey

    return SSlibKey.from_crypto(public_key, keyid=fingerprint(public_key))


def sign(payload: bytes, private_key: Any) -> dict[str, Any]:
    """A DSSE envelope (as a dict) over ``payload`` (an in-toto Statement's bytes)."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner

    signer = CryptoSigner(private_key, _sslib_key(private_key.public_key()))
    env = Envelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
    env.sign(signer)
    return env.to_dict()


def envelope_payload(env: dict[str, Any]) -> bytes:
    """The payload bytes of an envelope dict (ValueError when it is not one)."""
    from securesystemslib.dsse import Envelope

    return Envelope.from_dict(copy.deepcopy(env)).payload


def envelope_keyids(env: dict[str, Any]) -> list[str]:
    return [str(s.get("keyid", "")) for s in env.get("signatures") or [] if isinstance(s, dict)]


def verify(env: dict[str, Any], public_key: Any) -> bool:
    """Whether ``env`` carries a valid signature of ``public_key`` over its payload."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError

    try:
        Envelope.from_dict(copy.deepcopy(env)).verify([_sslib_key(public_key)], 1)
    except (VerificationError, ValueError, KeyError, TypeError):
        return False
    return True


def read_bundle(path: Path) -> list[dict[str, Any]]:
    """The envelopes of an in-toto bundle (JSON Lines); ValueError naming the line when damaged."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            env = json.loads(line)
            if not isinstance(env, dict):
                raise ValueError("not an object")
            envelope_payload(env)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"line {n} is not a DSSE envelope ({exc})") from None
        out.append(env)
    return out


def bundle_text(envelopes: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in envelopes)
