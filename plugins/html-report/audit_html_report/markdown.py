"""The ``markdown-report`` reporter: ``summary.md``, the verdict and tables as GitHub-flavoured
Markdown for CI logs and job summaries (``cat summary.md >> "$GITHUB_STEP_SUMMARY"``).

User strings are made inert: table cells escape ``|``, ``<``, ``>``, ``&`` and backticks, and
newlines are folded, so a caption or a name cannot break the table or inject HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from audit_core import Reporter, RunView

from . import __version__, copyright, summary
from .summary import run_warnings
from .html import FileReporterParams


class MarkdownParams(FileReporterParams):
    filename: str = Field("summary.md", description="file name of the summary inside the run directory")


def md(text: Any) -> str:
    """Inline-safe Markdown text."""
    s = " ".join(str(text).split())
    for a, b in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("`", "\\`"), ("*", "\\*"), ("_", "\\_")):
        s = s.replace(a, b)
    return s.replace("](", "]\\(")  # no links


def table(head: list[str], rows: list[list[str]], align: list[str] | None = None) -> list[str]:
    align = align or ["l"] + ["r"] * (len(head) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    return ["| " + " | ".join(head) + " |", "| " + " | ".join(sep) + " |"] + ["| " + " | ".join(r) + " |" for r in rows]


def attestation_markdown(att: dict | None) -> list[str]:
    """The attestation section: its digest, whether (and by which key) it is signed, the verify command."""
    if not att or not att.get("digest"):
        return []
    signed = f"yes, key fingerprint `{att['fingerprint']}`" if att.get("signed") else "no (`audit sign RUN_DIR --key KEY.pem`)"
    return [
        "## Attestation", "",
        f"- attestation.intoto.json sha256: `{att['digest']}`",
        f"- signed: {signed}",
        f"- verify: `{att['verify_command']}`", "",
    ]


def render_markdown(results: dict, attestation: dict | None = None) -> str:
    info = results.get("run") if isinstance(results.get("run"), dict) else {}
    attacks = {str(k): v for k, v in (results.get("attacks") or {}).items() if isinstance(v, dict)}
    verdicts = [summary.attack_verdict(n, a, results) for n, a in attacks.items()]
    head = summary.plain_verdict(results, verdicts)
    icon = {"leak": "🔴", "evidence": "🔴", "none": "🟢", "inverted": "🟠", "inconclusive": "🟠"}.get(head["level"], "⚪")
    pos, neg = summary.group_titles(results)
    out = [f"# Privacy audit: {md(info.get('name') or 'run')}", ""]
    counts = (
        f"{info.get('n_suspects', '?')} suspects / {info.get('n_reference', '?')} reference"
        if summary.mode(results) == "copyright"
        else f"{info.get('n_members', '?')} members / {info.get('n_nonmembers', '?')} non-members"
    )
    out += [f"_{md(summary.mode(results))} mode · {md(counts)}_", ""]
    out += [f"## {icon} {md(head['title'])}", "", md(head["lead"]), ""]
    if head.get("reasons"):
        out += [f"- {md(r)}" for r in head["reasons"]] + [""]
    if head["means"]:
        out += [f"**What this means:** {md(head['means'])}", ""]
    if head["not_means"]:
        out += [f"**What it does not mean:** {md(head['not_means'])}", ""]
    if summary.mode(results) != "copyright":  # copyright mode: the verdict once, the per-attack tests in the table
        for v in verdicts:
            out.append(f"- **{md(v['name'])}** ({md(v['level'])}): {md(v['text'])}")
        out.append("")
    si = results.get("set_inference")
    if isinstance(si, dict) and si:
        out += ["## Set-level inference", ""]
        rows = [
            [md(r["name"]), md(r["n_suspects"]), md(r["n_reference"]), md(r["flagged"]), r["p_value"], r["effect_auc"],
             {None: "–", True: "**yes**", False: "no"}[r["evidence"]]]
            for r in summary.set_inference_rows(si)
        ]
        out += table(["attack", "suspects", "reference", "flagged", "p-value", "effect AUC", "evidence"], rows)
        comb = si.get("combined")
        if isinstance(comb, dict) and summary.as_float(comb.get("p_value")) is not None:
            adj = summary.as_float(comb.get("p_adjusted"))
            out += ["", f"Combined ({md(comb.get('method', ''))}): p = {summary.pval(comb.get('p_value'))}"
                    + (f", shift-adjusted p = {summary.pval(adj)}" if adj is not None else "") + f", α = {md(comb.get('alpha', '–'))}"]
        checks = copyright.checks(results) or {}
        for c in checks.get("shift") or []:
            out += ["", f"**Shift check** ({md(c['what'])}): AUC {c['auc']} {c['ci']}".rstrip()]
        pre = checks.get("preflight")
        if pre:
            out += ["", "**Data preflight:** " + ("; ".join(md(w) for w in pre["warnings"]) if pre["warnings"] else "the files agree")]
        if checks.get("power"):
            pw = checks["power"]
            out += ["", f"**Power:** {md(pw['value'])} images" + (f" ({md(pw['assumption'])})" if pw["assumption"] else "")]
        if checks.get("sanity"):
            out += ["", f"**Split-reference check:** {md(checks['sanity']['word'])}, p = {checks['sanity']['p_value']}"]
        out.append("")
    out += ["## Metrics", ""]
    rows = []
    for r in summary.metrics_rows(results):
        cells = [f"{c['value']}{'†' if not c['supported'] else ''} {c['ci']}".strip() for c in r["cells"]]
        rows.append([f"**{md(r['name'])}**"] + cells + [r["nfe"], r["queries"], r["seconds"]])
    out += table(["attack"] + [t for _, t in summary.METRICS] + ["NFE/img", "queries/img", "seconds"], rows)
    out += ["", f"95% bootstrap intervals in brackets; † unsupported (too few {neg} for that FPR; the reason is in results.json, `metrics.<metric>.note`). Higher score = more member-like ({pos})."]
    sw = results.get("sweeps")
    if isinstance(sw, dict) and sw:
        out += ["", "## Ablations", ""]
        for base, s in sw.items():
            if not isinstance(s, dict):
                continue
            params = [str(p) for p in s.get("params") or []]
            rows = [
                [md(r["attack"])] + [md(v) for v in r["vals"]]
                + [f"{r['auc']} {r['auc_ci']}", f"{r['tpr']} {r['tpr_ci']}", r["queries"], "★" if r["pareto"] else ""]
                for r in summary.sweep_rows(s, params)
            ]
            out += [f"### {md(base)}", ""] + table(["point"] + [md(p) for p in params] + ["AUC", "TPR@1%FPR", "queries/img", "Pareto"], rows) + [""]
        curve = summary.queries_curve_rows(results)
        if curve:
            rows = [
                [md(r["attack"]), r["budget"], r["queries"], r["queries_all"], f"{r['auc']} {r['auc_ci']}",
                 f"{r['tpr']} {r['tpr_ci']}", r["histogram"]]
                for r in curve
            ]
            out += ["### AUC vs queries per image (same held-out images)", ""] + table(
                ["point", "budget", "queries/held-out img", "queries/img, all", "AUC", "TPR@1%FPR", "held-out images by queries"], rows
            ) + [""]
    notes = run_warnings(results)
    if info.get("skipped"):
        notes.append(f"{len(info['skipped'])} image(s) skipped (see results.json)")
    if notes:
        out += ["", "## ⚠ Notes", ""] + [f"- {md(n)}" for n in notes]
    att = attestation_markdown(attestation)
    if att:
        out += [""] + att
    out += ["", f"_audit-html-report {__version__}; full report: report.html (html-report)_", ""]
    return "\n".join(out)


class MarkdownReport(Reporter):
    """summary.md: verdict, metrics table, set-level inference and ablations in Markdown."""

    name = "markdown-report"
    Params = MarkdownParams

    def render(self, run: RunView) -> list[Path]:
        from audit_core import write_text  # the core's atomic writer (secrets scrubbed)

        path = run.dir / self.params.filename
        write_text(path, render_markdown(run.results if isinstance(run.results, dict) else {}, getattr(run, "attestation", None)))
        return [path]
