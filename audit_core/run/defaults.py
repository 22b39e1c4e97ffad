"""What a config that does not say gets: ``run.name`` from the config file's name and, without a
``reports:`` key, the default reporters (an HTML report and summary.md)."""

from __future__ import annotations

import re
from pathlib import Path

from ..plugin import manager as plugins
from ..base.config import LoadedConfig, ReportCfg

#: reporters a config without a ``reports:`` key gets (those installed)
DEFAULT_REPORTS = ("html-report", "markdown-report", "evidence-report")


def with_defaults(loaded: LoadedConfig) -> LoadedConfig:
    """The config with what the user did not say filled in: ``run.name`` from the config file's
    name (``my-audit.yaml`` -> ``my-audit``, so the default output is ``reports/my-audit``) and,
    without a ``reports:`` key, the default reporters. An explicit value (``reports: []``) stays.
    Applied once: a config it returned comes back as it is (the CLI and the Runner both call it)."""
    if getattr(loaded, "defaults_applied", False):
        return loaded
    raw = loaded.raw if isinstance(loaded.raw, dict) else {}
    run_raw = raw.get("run") if isinstance(raw.get("run"), dict) else {}
    cfg = loaded.cfg
    if "name" not in run_raw:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(loaded.source)).stem).strip(".-")
        if stem:
            cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"name": stem})})
    if "reports" not in raw:
        installed = plugins.registry("reporters")
        cfg = cfg.model_copy(update={"reports": [ReportCfg(plugin=n) for n in DEFAULT_REPORTS if n in installed]})
    out = loaded if cfg is loaded.cfg else LoadedConfig(cfg, loaded.raw, loaded.lines, loaded.source, loaded.base_dir)
    out.defaults_applied = True  # type: ignore[attr-defined]
    return out
