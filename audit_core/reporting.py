"""The reporter interface. A reporter reads a finished run directory (results.json, scores.csv,
artifacts/) and writes files into it; ``audit report RUN_DIR`` re-runs reporters without
running attacks."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from .errors import DataError


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
