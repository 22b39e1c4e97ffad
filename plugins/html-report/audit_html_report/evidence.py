"""The ``evidence-report`` reporter: ``evidence.html`` and ``evidence.md``, one printable page
each, for a reader who has to rely on the run (the other side's expert, a court, a regulator):
the question, the conclusion, the significance level fixed before the run, the image sets with
their counts and digests, the attacks and their p-values, the limitations, the tool versions and
the attestation that binds it all (with the command that re-checks it).

Everything comes from the run directory: results.json, and attestation.intoto.json for the set
digests and versions (read at render time, like the signature: ``audit sign`` re-renders it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from audit_core import Reporter, ReporterParams, RunView

from . import __version__, summary
from .markdown import md

#: what no run of this tool can show; printed on every evidence page
LIMITATIONS_ALL = [
    "A membership test gives statistical evidence, not proof: with no effect a test at level α still reports "
    "evidence in a fraction α of runs.",
    "The conclusion concerns the model that was audited (its files' sha256 are attested); it cannot show that a "
    "model served elsewhere, e.g. behind an API, is that model.",
    "The attestation proves which files were scored and what came out; it does not prove that the data's "
    "labels (member, suspect) are true.",
]
#: copyright mode adds
LIMITATIONS_COPYRIGHT = [
    "Copyright mode compares the suspects with the reference: a difference means the suspects are treated as "
    "more familiar than the reference, which can also come from a shift between the two sets (see the report's "
    "reference section).",
]


class EvidenceParams(ReporterParams):
    pass


def _attestation(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "attestation.intoto.json").read_text(encoding="utf-8")).get("predicate") or {}
    except (OSError, ValueError, AttributeError):
        return {}


def evidence_context(run: RunView) -> dict[str, Any]:
    results = run.results if isinstance(run.results, dict) else {}
    info = results.get("run") if isinstance(results.get("run"), dict) else {}
    target = results.get("target") if isinstance(results.get("target"), dict) else {}
    attacks = {str(k): v for k, v in (results.get("attacks") or {}).items() if isinstance(v, dict)}
    pred = _attestation(run.dir)
    mode = summary.mode(results)
    verdicts = [summary.attack_verdict(n, a, results) for n, a in attacks.items()]
    head = summary.plain_verdict(results, verdicts)
    model = target.get("model") or (pred.get("inputs") or {}).get("model", {}).get("target") or "the model"
    pos, neg = summary.group_titles(results)
    if mode == "copyright":
        question = f"Were the {info.get('n_suspects', '?')} suspect images used to train {model}?"
    else:
        question = f"Does {model} reveal which images it was trained on ({pos} vs {neg})?"
    si = results.get("set_inference") if isinstance(results.get("set_inference"), dict) else {}
    comb = si.get("combined") if isinstance(si.get("combined"), dict) else {}
    conclusion = comb.get("conclusion") or head["title"]
    groups = ((pred.get("inputs") or {}).get("data") or {}).get("groups") or {}
    sources = {s.get("group"): s.get("source") for s in ((pred.get("inputs") or {}).get("data") or {}).get("sources") or [] if isinstance(s, dict)}
    sets = [{"name": g, "count": v.get("count"), "digest": v.get("digest"), "source": sources.get(g, "")} for g, v in groups.items()]
    rows = []
    p_by = {r["name"]: r for r in summary.set_inference_rows(si)}
    for name, a in attacks.items():
        auc = summary.metric(a, "auc")
        rows.append({
            "name": name, "plugin": str(a.get("plugin") or ""),
            "auc": summary.num((auc or {}).get("value")) if auc else "–",
            "p_value": p_by[name]["p_value"] if name in p_by else "–",
            "evidence": {None: "–", True: "yes", False: "no"}[p_by[name]["evidence"]] if name in p_by else "–",
        })
    inference = pred.get("inference") or {}
    alpha = inference.get("alpha", comb.get("alpha"))
    software = pred.get("software") or {}
    packages = software.get("packages") or {}
    versions = {"audit-core": software.get("audit-core"), **{k: packages.get(k) for k in ("torch", "diffusers", "numpy") if packages.get(k)}}
    att = run.attestation if hasattr(run, "attestation") else {"digest": None}
    return {
        "title": str(info.get("name") or run.dir.name),
        "mode": mode,
        "question": question,
        "conclusion": str(conclusion),
        "lead": head["lead"],
        "combined": {"method": comb.get("method"), "p_value": summary.pval(comb.get("p_value"))} if comb else None,
        "alpha": alpha,
        "alpha_note": "fixed in config.resolved.yaml, written before the first query; its sha256 is in the attestation",
        "sets": sets,
        "rows": rows,
        "limitations": LIMITATIONS_ALL + (LIMITATIONS_COPYRIGHT if mode == "copyright" else []) + summary.run_warnings(results),
        "versions": {k: v for k, v in versions.items() if v},
        "model_files": len(((pred.get("inputs") or {}).get("model") or {}).get("files") or []),
        "model_identity": ((pred.get("inputs") or {}).get("model") or {}).get("identity"),
        "finished": summary.when(info.get("finished")),
        "attestation": att,
        "version": __version__,
    }


def render_evidence_markdown(c: dict[str, Any]) -> str:
    out = [f"# Evidence summary: {md(c['title'])}", "", f"_{md(c['mode'])} mode · finished {md(c['finished'])}_", ""]
    out += ["**Question.** " + md(c["question"]), "", "**Conclusion.** " + md(c["conclusion"]), "", md(c["lead"]), ""]
    if c["combined"]:
        out += [f"Combined test ({md(c['combined']['method'])}): p = {c['combined']['p_value']}", ""]
    out += [f"**Significance level α = {md(c['alpha'])}**, {md(c['alpha_note'])}.", ""]
    out += ["## Image sets", "", "| set | images | source | digest (sha256 over id + sha256 of each image) |", "| :--- | ---: | :--- | :--- |"]
    out += [f"| {md(s['name'])} | {s['count']} | {md(s['source'])} | `{s['digest']}` |" for s in c["sets"]]
    out += ["", "## Attacks", "", "| attack | plugin | AUC | p-value | evidence |", "| :--- | :--- | ---: | ---: | :--- |"]
    out += [f"| {md(r['name'])} | {md(r['plugin'])} | {r['auc']} | {r['p_value']} | {r['evidence']} |" for r in c["rows"]]
    out += ["", "## Limitations", ""] + [f"- {md(x)}" for x in c["limitations"]]
    out += ["", "## Tools and attestation", ""]
    out += ["- " + ", ".join(f"{md(k)} {md(v)}" for k, v in c["versions"].items())]
    if c["model_identity"]:
        out += [f"- model: {c['model_files']} file(s) hashed; identity `{c['model_identity']}`"]
    att = c["attestation"]
    if att.get("digest"):
        signed = f"signed, key fingerprint `{att['fingerprint']}`" if att.get("signed") else "not signed"
        out += [f"- attestation.intoto.json sha256 `{att['digest']}` ({signed})", f"- verify: `{att['verify_command']}`"]
    else:
        out += ["- no attestation in this run directory"]
    out += ["", f"_evidence-report (audit-html-report {__version__})_", ""]
    return "\n".join(out)


class EvidenceReport(Reporter):
    """evidence.html and evidence.md: one printable page summarising the evidence."""

    name = "evidence-report"
    Params = EvidenceParams

    def render(self, run: RunView) -> list[Path]:
        from audit_core import write_text  # the core's atomic writer (secrets scrubbed)

        c = evidence_context(run)
        env = Environment(loader=PackageLoader("audit_html_report", "templates"), autoescape=True, undefined=StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)
        html_path, md_path = run.dir / "evidence.html", run.dir / "evidence.md"
        write_text(html_path, env.get_template("evidence.html.j2").render(**c))
        write_text(md_path, render_evidence_markdown(c))
        return [html_path, md_path]
