"""Secrets: tokens are named in audit.yaml by the *environment variable* that holds them
(``token_env: MY_TOKEN``), resolved at run time, and never written anywhere.

Plugin authors resolve a secret with :func:`from_env`::

    from audit_core import secrets

    class Params(TargetParams):
        token_env: str | None = None          # the NAME of the variable, safe to log

    def __init__(self, params, context):
        self.token = secrets.from_env(params.token_env, "target.token_env") if params.token_env else None

Defence in depth: every value resolved this way, every value of a secret-looking ``*_env`` key in
the config (``token_env``, ``api_key_env``, ``password_env``...) and every literal value of a
secret-looking key (``token: ...``, which ``config.resolved.yaml`` shows as ``***``) is
*registered*; the runner scrubs registered values (replaced by ``***``) from everything it writes
(config.resolved.yaml, results.json, scores.csv, error messages) and finally from every text file
in the run directory, reports included."""

from __future__ import annotations

import os
import re
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError
from .atomic import atomic_write

MASK = "***"
MIN_LENGTH = 4  # shorter values would scrub ordinary text ("1", "on"...)
#: a key is secret-looking when one of its words (split at _ and -) is one of these...
SECRET_WORDS = {
    "token", "secret", "secrets", "password", "passwd", "pwd", "apikey", "auth", "authorization",
    "credential", "credentials", "bearer", "cookie",
}
#: ...or when it contains one of these (tokenizer, max_tokens and seed_key are not secrets)
SECRET_PARTS = ("api_key", "access_key", "private_key", "secret_key", "client_secret")
TEXT_SUFFIXES = {".json", ".csv", ".yaml", ".yml", ".html", ".htm", ".txt", ".log", ".md", ".svg", ".js", ".tex", ".xml"}

_values: set[str] = set()

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: prefixes of common token formats (GitHub, OpenAI, Hugging Face, Slack, GitLab, AWS, Stripe...)
TOKEN_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "sk-", "sk_", "hf_", "xox", "glpat-", "AKIA", "ASIA", "rk_", "pk_")


def looks_like_secret(name: str) -> bool:
    """Whether a value given where an environment-variable *name* belongs looks like a secret
    itself: not a valid variable name, a known token prefix, or long mixed-case text with digits
    (variable names are words: ``MY_TOKEN``, ``HF_TOKEN``). Such a value is never echoed."""
    if not isinstance(name, str):
        return False
    if not ENV_NAME.match(name):
        return True
    if len(name) >= 12 and name.startswith(TOKEN_PREFIXES):
        return True
    digits = sum(c.isdigit() for c in name)
    mixed = any(c.islower() for c in name) and any(c.isupper() for c in name)
    return len(name) >= 16 and digits >= 3 and (mixed or "_" not in name)


def is_secret_key(key: str) -> bool:
    """``token``, ``hf_token``, ``api_key``, ``password``, ``auth_header``... (also with ``_env``)."""
    k = str(key).lower()  # a trailing _env adds the word "env" and no secret part: no need to strip it
    words = set(k.replace("-", "_").split("_"))
    return bool(words & SECRET_WORDS) or any(p in k for p in SECRET_PARTS)


def redact(obj: Any) -> Any:
    """A copy with string values of secret-looking keys replaced by ``***`` (names of
    environment variables, ``*_env`` keys, are kept: they are not secret, unless the value
    looks like a secret pasted there)."""
    if isinstance(obj, dict):
        return {
            k: MASK
            if is_secret_key(k) and isinstance(v, str) and v and (not str(k).lower().endswith("_env") or looks_like_secret(v))
            else redact(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def register(value: Any) -> None:
    """Remember a secret value so that it is scrubbed from every file the run writes."""
    if isinstance(value, str) and len(value.strip()) >= MIN_LENGTH:
        _values.add(value)
        if value.strip() != value:
            _values.add(value.strip())


def registered() -> frozenset[str]:
    return frozenset(_values)


def forget_all() -> None:
    """Clear the registry (tests)."""
    _values.clear()


def from_env(var: str | None, key: str = "token_env", required: bool = True) -> str | None:
    """The value of the environment variable ``var`` (named by config key ``key``), registered
    for scrubbing. Missing or empty: a ConfigError naming the key and the variable (exit 2)."""
    if not var:
        if required:
            raise ConfigError(f"{key}: name the environment variable that holds the secret")
        return None
    if not isinstance(var, str) or looks_like_secret(var):
        register(var)  # scrubbed from anything written later, should it travel further
        raise ConfigError(
            f"{key}: the value given ({len(var) if isinstance(var, str) else 0} characters, not shown) is not an "
            f"environment variable name; it looks like a secret itself. Put the secret in an environment variable "
            f"and give its name here (e.g. {key}: MY_TOKEN), never the secret itself."
        )
    value = os.environ.get(var)
    if not value:
        if required:
            raise ConfigError(f"{key}: the environment variable {var} is not set (it should hold the secret)")
        return None
    register(value)
    return value


def register_config(obj: Any) -> None:
    """Register the secrets a config mentions: values of the environment variables named by
    secret-looking ``*_env`` keys (when set) and literal values of secret-looking keys."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            lk = str(k).lower()
            if lk.endswith("_env") and is_secret_key(lk) and isinstance(v, str):
                if looks_like_secret(v):
                    register(v)  # a secret pasted where its variable's name belongs
                else:
                    register(os.environ.get(v))
            elif is_secret_key(lk) and isinstance(v, str):  # not an *_env key: that is the branch above
                register(v)
            else:
                register_config(v)
    elif isinstance(obj, list):
        for v in obj:
            register_config(v)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    if not _values or not isinstance(text, str):
        return text
    for value in sorted(_values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


def scrub_obj(obj: Any) -> Any:
    """A copy of a JSON-like object with registered secrets scrubbed from keys and strings."""
    if not _values:
        return obj
    if isinstance(obj, dict):
        return {scrub(k): scrub_obj(v) for k, v in obj.items()}  # scrub passes non-strings through
    if isinstance(obj, (list, tuple)):
        return [scrub_obj(v) for v in obj]
    if isinstance(obj, str):
        return scrub(obj)
    return obj


def scrub_tree(folder: str | Path, max_bytes: int = 64 << 20) -> tuple[list[Path], list[Path]]:
    """:func:`scrub_files` over every file under ``folder`` (the runner scrubs only the files in
    its run directory's manifest; this is for folders wholly owned by the caller)."""
    return scrub_files(Path(folder).rglob("*"), max_bytes)


def scrub_files(paths: Iterable[Path], max_bytes: int = 64 << 20) -> tuple[list[Path], list[Path]]:
    """Rewrite every text file of ``paths`` that contains a registered secret (atomically);
    return ``(files scrubbed, binary files that hold a secret and were left alone)``."""
    changed: list[Path] = []
    binary: list[Path] = []
    if not _values:
        return changed, binary
    needles = [v.encode() for v in _values]
    for p in paths:
        p = Path(p)
        try:
            if p.is_symlink() or not p.is_file() or p.stat().st_size > max_bytes:
                continue
            data = p.read_bytes()
        except OSError:
            continue
        if not any(n in data for n in needles):
            continue
        if p.suffix.lower() in TEXT_SUFFIXES or p.name.startswith("."):
            try:
                text = data.decode()  # UTF-8, whatever the locale
            except UnicodeDecodeError:
                text = None
            if text is not None:
                atomic_write(p, scrub(text))  # UTF-8, whatever the locale
                changed.append(p)
                continue
        binary.append(p)
    return changed, binary
