"""Readable tables of the configuration, the target, the environment and each attack's details:
plain labels ("network evaluations per image", not ``nfe_per_image``) and values written as
text ("t = 200 · k = 100", "yes", "10,000"), never raw JSON unless a value is deeply nested."""

from __future__ import annotations

import json
from typing import Any


#: labels of keys that are not self-explanatory; anything else shows as its key with spaces
LABELS = {
    "n": "n",
    "t": "t",
    "k": "k",
    "nfe_per_image": "network evaluations per image",
    "queries_per_image": "queries per image",
    "expected_queries_per_image": "expected queries per image",
    "seconds_per_100_images": "seconds per 100 images",
    "cache_hits": "cache hits",
    "n_members": "members",
    "n_nonmembers": "non-members",
    "n_suspects": "suspects",
    "n_reference": "reference images",
    "config_fingerprint": "config fingerprint",
    "weights_sha256": "weights SHA-256",
    "git_sha": "git commit",
    "cpu_count": "CPU cores",
    "torch_threads": "torch threads",
    "cuda": "CUDA available",
    "num_train_timesteps": "training timesteps",
    "T": "timesteps T",
    "image_size": "image size (px)",
    "max_pixels": "largest image (pixels)",
    "max_bytes": "size cap (bytes)",
    "on_error": "on unreadable image",
    "follow_symlinks": "follow symlinks",
    "calibration_fraction": "calibration fraction",
    "batch_size": "batch size",
    "bootstrap": "bootstrap resamples",
    "alpha": "α (false-positive rate)",
    "combine": "combine attacks",
    "model_path": "model folder",
    "latent_reference": "latent reference",
}

#: long hex digests shown shortened (the full value stays in the cell's title)
DIGESTS = {"config_fingerprint", "weights_sha256", "git_sha", "sha256"}


def label(key: Any) -> str:
    k = str(key)
    return LABELS.get(k, k.replace("_", " "))


def text(v: Any, depth: int = 0) -> str:
    """A value as plain text: yes/no, thousands separators, ``k = v · …`` for flat dicts,
    comma lists; compact JSON only below two levels of nesting."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        return f"{v:,.0f}" if v.is_integer() and abs(v) >= 10_000 else f"{v:.6g}"
    if isinstance(v, dict):
        if not v:
            return "none"
        if depth < 1:
            return " · ".join(f"{label(k)} = {text(x, depth + 1)}" for k, x in v.items())
        return json.dumps(v, default=str, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        if not v:
            return "none"
        if all(not isinstance(x, (dict, list, tuple)) for x in v):
            return ", ".join(text(x, depth + 1) for x in v)
        return json.dumps(v, default=str, ensure_ascii=False)
    return str(v)


def rows(d: Any, skip: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """``[{"label", "value", "title"}]`` of a flat-ish dict; digests shortened to 12 characters."""
    if not isinstance(d, dict):
        return []
    out = []
    for k, v in d.items():
        if k in skip:
            continue
        value = text(v)
        title = ""
        if str(k) in DIGESTS and isinstance(v, str) and len(v) > 16:
            value, title = v[:12] + "…", v
        out.append({"label": label(k), "value": value, "title": title})
    return out


def config_sections(config_text: str | None) -> dict[str, Any] | None:
    """The resolved config as sections of rows, plus one row per attack; None when the YAML is
    missing or unreadable (the raw text is still shown)."""
    if not config_text:
        return None
    from audit_core import load_yaml  # bounded: a deeply nested file is refused, not a RecursionError
    from audit_core import AuditError

    try:
        cfg = load_yaml(config_text, "config.resolved.yaml")[0]
    except AuditError:
        return None
    if not isinstance(cfg, dict):
        return None
    sections = []
    for key, title in (("run", "Run"), ("target", "Target"), ("data", "Data"), ("inference", "Copyright-mode inference"),
                       ("metrics", "Metrics"), ("cache", "Query cache")):
        if isinstance(cfg.get(key), dict) and cfg[key]:
            sections.append({"title": title, "rows": rows(cfg[key])})
    attacks = []
    for a in cfg.get("attacks") or []:
        if isinstance(a, dict):
            attacks.append({
                "name": str(a.get("name") or a.get("plugin") or ""),
                "plugin": str(a.get("plugin") or ""),
                "params": text(a.get("params") or {}),
                "scorer": text(a.get("scorer")),
            })
    reports = [str(r.get("plugin")) for r in cfg.get("reports") or [] if isinstance(r, dict)]
    return {"sections": sections, "attacks": attacks, "reports": ", ".join(reports) or "none"}


def environment(env: Any) -> dict[str, list[dict[str, str]]]:
    """``{"system", "packages", "plugins"}`` row lists of results.json's ``environment``."""
    env = env if isinstance(env, dict) else {}
    return {
        "system": rows(env, skip=("packages", "plugins")),
        "packages": rows(env.get("packages")),
        "plugins": rows(env.get("plugins")),
    }
