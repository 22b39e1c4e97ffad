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

from ..base.errors import AuditError, ConfigError, DataError


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
        except RecursionError:  # not ours: results.json nests a few levels
            raise DataError(f"{self.dir / 'results.json'} is nested too deeply to be an audit results file; re-run the audit with --resume") from None
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
    def attestation(self) -> dict[str, Any]:
        """The run's attestation as reports show it (read now, so a report re-rendered after
        ``audit sign`` names the key): ``digest``, ``signed``, ``fingerprint``, ``verify_command``
        (see :func:`audit_core.run.attest.info`)."""
        from .attest import info

        return info(self.dir)

    @property
    def config_text(self) -> str:
        p = self.dir / "config.resolved.yaml"
        return p.read_text(encoding="utf-8") if p.exists() else ""


# --------------------------------------------------------------------------------- finding and rendering
def reporters_from_config(run_dir: Path) -> list[Reporter]:
    """Rebuild the reporters named in a run's config.resolved.yaml (for ``audit report``); a
    missing or damaged file is a DataError in one line."""
    from ..base.config import ReportCfg, load_yaml

    p = Path(run_dir) / "config.resolved.yaml"
    hint = f"name the reporters instead: audit report {run_dir} --reporter html-report"
    try:
        raw = load_yaml(p.read_text(encoding="utf-8"), str(p))[0]  # bounded: nesting, aliases, duplicates
    except OSError as exc:
        raise DataError(f"cannot read {p} ({exc.strerror or exc}), so the run's reporters are unknown; {hint}") from None
    except UnicodeDecodeError:
        raise DataError(f"{p} is not valid YAML (not UTF-8); {hint}") from None
    except ConfigError as exc:
        raise DataError(f"{p} is not valid YAML ({str(exc).removeprefix(str(p) + ', ').removeprefix(str(p) + ': ')}); {hint}") from None
    items = (raw or {}).get("reports") if isinstance(raw or {}, dict) else None
    if not isinstance(items or [], list):
        raise DataError(f"{p}: `reports` is not a list; {hint}")
    reps = []
    for i, item in enumerate(items or []):
        try:
            rc = ReportCfg.model_validate(item)
        except ValidationError as exc:
            raise DataError(f"{p}: reports[{i}] is not a reporter entry ({_one_line(exc)}); {hint}") from None
        reps.append(build_reporter(rc.plugin, rc.params, (f"reports[{i}]", str(p))))
    return reps


def build_reporter(name: str, params: dict | None = None, where: tuple[str, str] | None = None) -> Reporter:
    """The reporter plugin ``name`` with validated ``params``; errors name ``where`` (key,
    place), by default the command line's ``--reporter NAME --param KEY=VALUE``."""
    from ..plugin import factory

    key, place = where or (f"--reporter {name}", "command line")
    rcls = factory.lookup("reporters", name, where=f"{key} ({place})")
    params_at = (key, "params") if where else ("--param",)
    return factory.build("reporters", rcls, params or {}, where=place, params_at=params_at)


def _one_line(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())


def _written(result: Any, run_dir: Path) -> list[Path]:
    """What ``render`` returned, checked: a list of the paths it wrote, inside ``run_dir``. A
    bare path (a ``str`` would otherwise be read one character at a time, each joining the run's
    manifest), ``None``, or a path outside the run directory is the reporter's bug."""
    items = None
    if not isinstance(result, (str, bytes, Path, dict)):
        try:
            items = list(result)
        except TypeError:
            items = None
    if items is None or not all(isinstance(p, (str, Path)) for p in items):
        raise TypeError(
            f"render() returned {type(result).__name__} {str(result)[:80]!r}; "
            "it must return the list of the paths it wrote, e.g. [path] (or [] when it wrote none)"
        )
    paths = [Path(p) for p in items]  # as the reporter wrote them (relative ones: to the working directory)
    root = Path(run_dir).resolve()
    outside = [p for p in paths if not p.resolve().is_relative_to(root)]
    if outside:
        raise ValueError(
            f"render() wrote {outside[0]}, outside the run directory {run_dir}; a reporter writes only into "
            "run.dir (a file name param with '..' or an absolute path is the usual cause)"
        )
    return paths


def render_reports(
    view: RunView, reporters: list[Reporter], console: Any = None, keep_going: bool = False, own: Any = None
) -> list[Path]:
    """Render every reporter, each even when one before it failed; ``own(*paths)`` is called with
    the files written (so they join the run's manifest) before any error is raised.

    A reporter that crashes (a bug in a plugin) fails the command with a :class:`PluginFailure`
    (exit 1) naming the reporter, its distribution and the exception; with ``keep_going`` it is a
    warning instead (the old behaviour). A reporter that cannot write its file (a missing folder,
    permissions, a full disk) is an :class:`AuditError` (exit 2) naming the reporter and the path.
    Either way the scores and results are already saved and stay."""
    from ..base.errors import PluginFailure
    from ..plugin import guard
    from . import console as term

    paths: list[Path] = []
    bugs: list[str] = []
    io: list[str] = []
    logs: list[str] = []
    for rep in reporters:
        name = guard.who(rep)
        try:
            paths.extend(_written(rep.render(view), view.dir))
        except OSError as exc:
            where = exc.filename or view.dir
            io.append(f"{name} cannot write {where}: {exc.strerror or exc}")
        except AuditError as exc:
            io.append(f"{name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not lose a finished run
            guard.set_log_dir(view.dir)
            fail = guard.failure(rep, "failed", exc, resumable=False)  # its traceback to <run_dir>/audit.log
            if keep_going:
                term.reporter_failed(console, name.removeprefix("reporter "), exc, view.dir)
            else:
                bugs.append(f"{name} failed: {type(exc).__name__}: {exc}")
                if fail.log:
                    logs.append(fail.log)
    if own is not None and paths:
        own(*paths)
    if not bugs and not io:
        return paths
    written = f" The other reports were written ({len(paths)} file(s))." if paths else ""
    tail = (
        f" The scores and results are saved in {view.dir}; re-render with `audit report {view.dir}` once fixed."
        + written
    )
    if bugs:
        msg = "; ".join(bugs + io) + "." + tail + " This is a bug in that plugin, not in your config"
        msg += " (`--keep-going` turns a failed reporter into a warning)."
        if logs:
            msg += f" Traceback: {logs[0]}"
        raise PluginFailure(msg, logs[0] if logs else None)
    raise AuditError("; ".join(io) + "." + tail)


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
    out += queries_curve_markdown(sweeps_block)
    return "\n".join(out)


def queries_curve_markdown(sweeps_block: dict[str, Any]) -> list[str]:
    """The AUC-vs-queries curve of a run with an adaptive budget (:func:`audit_core.sweeps.queries_curve`)
    as Markdown lines: fixed and adaptive points on the same held-out images, cheapest first."""
    from .console import format_metric
    from .sweeps import format_value, queries_curve

    rows = queries_curve(sweeps_block)
    if not rows:
        return []
    out = [
        "**AUC vs queries per image** (every point on the adaptive entries' held-out images; "
        "adaptive calibration images get the whole budget, counted in the all-images column)\n",
        "| point | budget | queries/held-out img | queries/img, all images | AUC [95% CI] | TPR@1%FPR [95% CI] | held-out images by queries spent |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        values = ", ".join(f"{k}={format_value(v)}" for k, v in r["values"].items())
        hist = " ".join(f"{m}:{c}" for m, c in r["histogram"].items()) if r["histogram"] else ""
        out.append(
            f"| {r['attack']} | {'adaptive' if r['adaptive'] else 'fixed'} ({values}) | {r['queries_per_image']:.2f} "
            f"| {r['queries_per_image_all']:.2f} | {format_metric(r['auc'])} | {format_metric(r['tpr_at_1pct_fpr'])} | {hist} |"
        )
    out.append("")
    return out
