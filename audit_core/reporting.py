"""Reports: the reporter interface, the read-only view of a run directory reporters get, finding
a run's reporters and rendering them. A reporter reads a finished run directory (results.json,
scores.csv, artifacts/) and writes files into it; ``audit report RUN_DIR`` re-runs reporters
without running attacks."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import AuditError, ConfigError, DataError


class ReporterParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Reporter:
    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = ReporterParams
    plugin_name: ClassVar[str] = ""

    def __init__(self, params: BaseModel):
        self.params = params

    def render(self, run: RunView) -> list[Path]:
        """Write report file(s) into ``run.dir`` and return their paths."""
        raise NotImplementedError


class RunView:
    """Read-only access to a run directory for reporters."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        try:
            with open(self.dir / "results.json", encoding="utf-8") as fh:
                self.results: dict[str, Any] = json.load(fh)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{self.dir / 'results.json'} is not valid JSON ({exc}); re-run the audit with --resume") from None
        if not isinstance(self.results, dict) or not isinstance(self.results.get("attacks"), dict):
            raise DataError(f"{self.dir / 'results.json'} is not an audit results file (no 'attacks' table)")
        self._scores: list[dict] | None = None

    @property
    def scores(self) -> list[dict]:
        """Rows of scores.csv with ``score`` as float."""
        if self._scores is None:
            with open(self.dir / "scores.csv", newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            for r in rows:
                r["score"] = float(r["score"])
            self._scores = rows
        return self._scores

    def scores_of(self, attack: str) -> list[dict]:
        return [r for r in self.scores if r["attack"] == attack]

    @property
    def config_text(self) -> str:
        p = self.dir / "config.resolved.yaml"
        return p.read_text(encoding="utf-8") if p.exists() else ""


# --------------------------------------------------------------------------------- finding and rendering
def reporters_from_config(run_dir: Path) -> list[Reporter]:
    """Rebuild the reporters named in a run's config.resolved.yaml (for ``audit report``)."""
    import yaml

    from . import plugins
    from .config import ReportCfg
    from .runner import lookup_plugin

    p = Path(run_dir) / "config.resolved.yaml"
    raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    reps = []
    for i, item in enumerate(raw.get("reports", []) or []):
        rc = ReportCfg.model_validate(item)
        rcls = lookup_plugin("reporters", rc.plugin, ("reports", i, "plugin"), str(p))
        params = plugins.validate(rcls, rc.params, at=("reports", i, "params"), label=str(p))
        reps.append(plugins.construct(rcls, params))
    return reps


def render_reports(view: RunView, reporters: list[Reporter], console: Any = None) -> list[Path]:
    """Render every reporter. A reporter that crashes (a bug in a plugin) costs its own report
    only: the scores and results are already saved, so it is a warning, not a failed run."""
    from . import console as term
    from . import guard

    paths: list[Path] = []
    for rep in reporters:
        try:
            paths.extend(rep.render(view))
        except (OSError, AuditError):
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not lose a finished run
            guard.set_log_dir(view.dir)
            guard.failure(rep, "failed", exc, resumable=False)  # its traceback to <run_dir>/audit.log
            term.reporter_failed(console, guard.who(rep).removeprefix("reporter "), exc, view.dir)
    return paths


def sweeps_markdown(sweeps_block: dict[str, Any]) -> str:
    """The ``sweeps`` block of results.json as Markdown: one table per sweep (for notes and docs)."""
    from .console import format_metric
    from .sweeps import format_value

    out = []
    for base, s in sweeps_block.items():
        q = s["queries"]
        out.append(f"**{base}** ({q['spent']} queries spent, {q['naive']} run separately without a cache)\n")
        head = [*s["params"], "AUC [95% CI]", "TPR@1%FPR [95% CI]", "queries/img", "NFE/img", "Pareto"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        front = set(s["pareto"])
        for p in s["points"]:
            row = [format_value(p["values"][k]) for k in s["params"]]
            row += [format_metric(p["auc"]), format_metric(p["tpr_at_1pct_fpr"]), f"{p['queries_per_image']:g}",
                    f"{p.get('nfe_per_image', 0):g}", "yes" if p["attack"] in front else ""]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)
