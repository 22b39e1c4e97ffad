"""The environment record of a run: versions, the plugins that were loaded (and those disabled
because they failed to load), device, git SHA."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("audit-core", "torch", "diffusers", "transformers", "numpy", "scikit-learn", "scipy", "pydantic", "pluggy")


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def collect(target: Any = None) -> dict[str, Any]:
    import torch

    from ..plugin.manager import get_plugins

    plugins = get_plugins()
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "packages": {p: _version(p) for p in PACKAGES if _version(p)},
        "plugins": {p["name"]: p.get("version") for p in plugins if not p.get("broken")},
        "git_sha": git_sha(),
        "cuda": torch.cuda.is_available(),
    }
    disabled = {p["name"]: p["broken"] for p in plugins if p.get("broken")}
    if disabled:  # installed but not loaded: they took no part in the run
        env["disabled_plugins"] = disabled
    if target is not None:
        env["device"] = str(target.device)
        if target.device.type == "cuda":
            env["gpu"] = torch.cuda.get_device_name(target.device)
    return env
