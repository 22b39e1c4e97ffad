"""The ``html-report`` reporter: ``report.html``, one offline file.

Reads only the run directory (results.json, scores.csv, config.resolved.yaml, artifacts/), so
``audit report RUN_DIR`` re-renders it without running attacks. Jinja2 renders with autoescaping
on: every string from the run (names, paths, captions, config values) is escaped; only the SVG
written by svgchart (which escapes every text it draws) or by matplotlib for ablation plots (which
escapes its own text) and the data URIs built here are inlined as markup. A Content-Security-Policy meta tag forbids any network fetch and every script
but one: in copyright mode, the few lines that sort the per-suspect table (``copyright.SORT_JS``),
allowed by their sha256. So even a mistake elsewhere cannot make the file load or run anything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from pydantic import Field, field_validator

from audit_core import Reporter, ReporterParams, RunView

from . import __version__, copyright, images, plots, summary, tables
from .summary import as_float


class FileReporterParams(ReporterParams):
    """Params of a reporter that writes one file into the run directory."""

    filename: str

    @field_validator("filename")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or "/" in v or "\\" in v or v in (".", ".."):
            raise ValueError("must be a plain file name (the report is written into the run directory)")
        return v


class HtmlParams(FileReporterParams):
    filename: str = Field("report.html", description="file name of the report inside the run directory")
    title: str | None = Field(None, description="page title (default: the run's name)")
    gallery_max_px: int = Field(images.MAX_SIDE, ge=16, le=1024, description="longest side of embedded gallery images")


def _env() -> Environment:
    return Environment(
        loader=PackageLoader("audit_html_report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def safe_plot(label: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or a visible note (not a plot) when matplotlib fails on odd data: one
    broken figure must not cost the whole report."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - shown in the report, never silent
        return Markup('<p class="plot-error">{}</p>').format(f"{label}: the plot failed ({type(exc).__name__}: {exc})")


class HtmlReport(Reporter):
    """report.html: the verdict in plain language with the key numbers and the warnings, then
    metrics, ROC curves, score histograms, optional copyright-mode and ablation sections, gallery,
    per-attack details, configuration and environment as tables."""

    name = "html-report"
    Params = HtmlParams

    def render(self, run: RunView) -> list[Path]:
        from audit_core import write_text  # the core's atomic writer (secrets scrubbed)

        html = self.render_html(run)
        path = run.dir / self.params.filename
        write_text(path, html)
        return [path]

    # ------------------------------------------------------------------ context
    def render_html(self, run: RunView) -> str:
        return _env().get_template("report.html.j2").render(**self.context(run))

    def context(self, run: RunView) -> dict[str, Any]:
        results = run.results if isinstance(run.results, dict) else {}
        info = results.get("run") if isinstance(results.get("run"), dict) else {}
        attacks = {str(k): v for k, v in (results.get("attacks") or {}).items() if isinstance(v, dict)}
        mode = summary.mode(results)
        titles = summary.group_titles(results)
        verdicts = [summary.attack_verdict(n, a, results) for n, a in attacks.items()]
        skipped = [s for s in info.get("skipped") or [] if isinstance(s, dict)]
        hist, hist_note = self._histograms(run, attacks, results, mode, titles)
        rows = summary.metrics_rows(results)
        target = results.get("target") if isinstance(results.get("target"), dict) else {}
        suspects = copyright.suspect_table(run, results, list(attacks)) if mode == "copyright" else None
        return {
            # the one script (sorting the per-suspect table) is allowed by its hash, nothing else runs
            "csp": Markup(copyright.script_csp() if suspects else copyright.CSP),  # noqa: S704 - a constant
            "script": Markup(copyright.SORT_JS) if suspects else None,  # noqa: S704 - a constant
            "checks": copyright.checks(results),
            "suspects": suspects,
            "title": self.params.title or str(info.get("name") or run.dir.name),
            "run": info,
            "finished": summary.when(info.get("finished")),
            "run_rows": tables.rows(info, skip=("notes", "skipped", "executor")),
            "mode": mode,
            "titles": titles,
            "plain": summary.plain_verdict(results, verdicts),
            "key_numbers": summary.key_numbers(results, verdicts),
            "verdicts": verdicts,
            "warnings": summary.run_warnings(results),
            "skipped": skipped,
            "metric_heads": [t for _, t in summary.METRICS],
            "metrics_rows": rows,
            "unsupported": self._unsupported(attacks),
            "metric_notes": sorted({str(a["metrics_note"]) for a in attacks.values() if a.get("metrics_note")}),
            "roc_plots": safe_plot("ROC curves", plots.roc_plots, attacks, titles),
            "histograms": hist,
            "hist_note": hist_note,
            "set_inference": self._set_inference(results),
            "reference": results.get("reference"),
            "sweeps": self._sweeps(results),
            "queries_curve": summary.queries_curve_rows(results),
            "galleries": self._galleries(run, attacks, results),
            "residual_stops": ", ".join(f"{c} {100 * p:g}%" for p, c in images.RESIDUAL_STOPS),
            "details": self._details(attacks),
            "target": target,
            "target_rows": tables.rows(target),
            "config": tables.config_sections(run.config_text),
            "config_text": run.config_text,
            "env": tables.environment(results.get("environment")),
            "attestation": getattr(run, "attestation", None) or {"digest": None},
            "version": __version__,
        }

    @staticmethod
    def _unsupported(attacks: dict) -> list[str]:
        """``METRIC (attacks): note`` for every metric marked unsupported (its metrics.<name>.note),
        one line per distinct note."""
        by_note: dict[tuple[str, str], list[str]] = {}
        for name, a in attacks.items():
            for key, title in summary.METRICS:
                m = (a.get("metrics") or {}).get(key)
                if isinstance(m, dict) and m.get("supported") is False:
                    by_note.setdefault((title, str(m.get("note") or "unsupported")), []).append(name)
        return [f"{title} ({', '.join(names)}): {note}" for (title, note), names in by_note.items()]

    def _histograms(
        self, run: RunView, attacks: dict, results: dict, mode: str, titles: tuple[str, str]
    ) -> tuple[list[dict], str]:
        pos_label, neg_label = summary.group_names(results)
        try:
            rows = run.scores
        except FileNotFoundError:
            return [], "scores.csv is missing from the run directory: no score histograms."
        except (ValueError, KeyError, TypeError) as exc:
            return [], f"scores.csv could not be read ({exc}): no score histograms."
        by_attack: dict[str, tuple[list[float], list[float]]] = {}
        held_out = False
        for r in rows:
            if r.get("split") == "calibration":  # a learned scorer's training images
                held_out = True
                continue
            pos, neg = by_attack.setdefault(str(r.get("attack")), ([], []))
            if r.get("label") == pos_label:  # non-finite scores are left out by plots.histogram
                pos.append(r["score"])
            elif r.get("label") == neg_label:
                neg.append(r["score"])
        si = results.get("set_inference") or {}
        out = []
        for i, name in enumerate(attacks):
            if name not in by_attack:
                continue
            # the threshold drawn: copyright mode's flag threshold, else the calibrated operating point
            if mode == "copyright" and isinstance(si.get(name), dict):
                source, what = si[name], "flag threshold"
            else:
                source, what = attacks[name].get("calibrated"), "calibrated threshold"
            thr, thr_label = None, ""
            if isinstance(source, dict):
                thr, alpha = as_float(source.get("threshold")), as_float(source.get("alpha"))
                thr_label = f"{what} (α = {alpha:g})" if alpha is not None else what
            pos, neg = by_attack[name]
            svg = safe_plot(f"score histogram of {name}", plots.histogram, name, i, pos, neg, titles, thr, thr_label)
            out.append({"name": name, "svg": svg})
        note = "Learned-scorer attacks: only the held-out evaluation split is shown." if held_out else ""
        return out, note

    def _set_inference(self, results: dict) -> dict | None:
        si = results.get("set_inference")
        if not isinstance(si, dict) or not si:
            return None
        rows = []
        for row in summary.set_inference_rows(si):
            e = row.pop("entry")
            rows.append(
                {
                    **row,
                    "threshold": summary.num(e.get("threshold"), 4),
                    "per_image_fpr": summary.num(e.get("per_image_fpr")),
                    "expected_false_flags": summary.num(e.get("expected_false_flags"), 2),
                    "per_image_pct": summary.pct(e.get("per_image_fpr")),
                    "test": str(e.get("test") or ""),
                    "warned": bool(e.get("notes")),
                }
            )
        comb = si.get("combined") if isinstance(si.get("combined"), dict) else None
        combined = None
        if comb:
            p, alpha = as_float(comb.get("p_value")), as_float(comb.get("alpha"))
            combined = {
                "method": str(comb.get("method") or ""),
                "p_value": summary.pval(p),
                "p_adjusted": summary.pval(comb.get("p_adjusted")),
                "alpha": f"{alpha:g}" if alpha is not None else "–",
                "evidence": summary.evidence(comb),
                "note": str(comb.get("note") or ""),
                "attacks": ", ".join(str(a) for a in comb.get("attacks") or []),
            }
        tests: dict[str, list[str]] = {}
        for r in rows:
            if r["test"]:
                tests.setdefault(r["test"], []).append(r["name"])
        tests_text = [
            ("every attack" if len(names) == len(rows) and len(rows) > 1 else ", ".join(names), t) for t, names in tests.items()
        ]
        adjusted = any(r["p_adjusted"] != "–" for r in rows)
        return {"rows": rows, "combined": combined, "tests": tests_text, "adjusted": adjusted}

    def _sweeps(self, results: dict) -> list[dict]:
        sw = results.get("sweeps")
        if not isinstance(sw, dict):
            return []
        out = []
        for bi, (base, s) in enumerate(sw.items()):
            if not isinstance(s, dict):
                continue
            params = [str(p) for p in s.get("params") or []]
            points = [p for p in s.get("points") or [] if isinstance(p, dict)]
            if not points:
                continue
            cost = str(s.get("pareto_cost") or "queries_per_image")
            rows = summary.sweep_rows(s, params)
            q = s.get("queries") if isinstance(s.get("queries"), dict) else {}
            spent, naive = as_float(q.get("spent")), as_float(q.get("naive"))
            saved = f"{100 * (1 - spent / naive):.0f}%" if spent is not None and naive else None
            out.append(
                {
                    "base": str(base),
                    "plugin": str(s.get("plugin") or ""),
                    "params": params,
                    "plots": [safe_plot(f"{base}: {p}", plots.sweep_param_plot, str(base), bi, s, p) for p in params],
                    "cost_plot": safe_plot(f"{base}: cost", plots.sweep_cost_plot, str(base), bi, s),
                    "cost": "queries / image" if cost == "queries_per_image" else "NFEs / image",
                    "rows": rows,
                    "spent": summary.count(spent),
                    "naive": summary.count(naive),
                    "saved": saved,
                    "pareto": [str(x) for x in s.get("pareto") or []],
                }
            )
        return out

    def _galleries(self, run: RunView, attacks: dict, results: dict) -> list[dict]:
        pos, neg = summary.group_singular(results)
        out = []
        for name, a in attacks.items():
            items = []
            for g in a.get("gallery") or []:
                if not isinstance(g, dict):
                    continue
                pics = []
                for key, title in (("original", "original"), ("reconstruction", "reconstruction"), ("residual", "residual")):
                    if g.get(key):
                        uri = images.data_uri(run.dir, g.get(key), self.params.gallery_max_px, residual=key == "residual")
                        pics.append({"title": title, "uri": uri, "path": str(g.get(key))})
                rmax = as_float(g.get("residual_max"))
                label = g.get("label")
                items.append(
                    {
                        "kind": str(g.get("kind") or ""),
                        "image_id": str(g.get("image_id") or ""),
                        "label": pos if label == 1 else (neg if label == 0 else str(label or "")),
                        "positive": label == 1,
                        "score": summary.num(g.get("score"), 4),
                        "caption": None if g.get("caption") is None else str(g.get("caption")),
                        "pics": pics,
                        # |x - x̂| in [-1, 1] pixel units: half of it is the fraction of the pixel range
                        "residual_max": f"{50 * rmax:.0f}%" if rmax is not None else None,
                    }
                )
            if items:
                out.append({"name": name, "entries": items})
        return out

    def _details(self, attacks: dict) -> list[dict]:
        shown = {
            "metrics", "roc", "gallery", "params", "scorer", "calibrated", "threshold_scorer_metrics", "extras",
            "metrics_note", "sweep",
        }
        out = []
        for name, a in attacks.items():
            tsm = a.get("threshold_scorer_metrics")
            out.append(
                {
                    "name": name,
                    "params": tables.rows(a.get("params")),
                    "scorer": tables.rows(a.get("scorer")),
                    "calibrated": tables.rows(a.get("calibrated")),
                    "threshold_metrics": summary.metric_cells(tsm) if isinstance(tsm, dict) else None,
                    "other": tables.rows({k: v for k, v in a.items() if k not in shown}),
                    "extras": tables.rows(a.get("extras")),
                    "sweep": tables.rows(a.get("sweep")),
                }
            )
        return out
