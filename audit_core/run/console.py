"""Terminal output: progress while attacks run, warnings during a run, and the summary of a
finished run (metrics table, copyright verdict, sweep tables). Nothing else in the core prints.

``out`` is standard output (the summary, where the run directory is); ``err`` is standard error
(progress, warnings, errors), so ``audit run ... > summary.txt`` keeps the summary clean."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..base.records import SET_INFERENCE_BLOCKS

out = Console()
err = Console(stderr=True)


# --------------------------------------------------------------------------------- during a run
#: seconds between plain progress lines when the output is not a terminal (CI logs)
PROGRESS_SECONDS = 10.0


class Tracker:
    """Progress per attack: a live bar on a terminal (or with ``AUDIT_PROGRESS=1``); otherwise a
    plain line every ``AUDIT_PROGRESS_SECONDS`` (default 10) and when an attack finishes, so a
    log shows work: ``rediffuse: 120/1000 images, 3.2 img/s, NFE/img 20``."""

    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal or os.environ.get("AUDIT_PROGRESS") == "1"
        try:
            self.every = float(os.environ.get("AUDIT_PROGRESS_SECONDS", PROGRESS_SECONDS))
        except ValueError:
            self.every = PROGRESS_SECONDS
        self._bar = _bar(console) if self.live else None
        self._task: Any = None

    def __enter__(self) -> Tracker:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def start(self, name: str, total: int, done: int) -> None:
        """A new attack: ``done`` of ``total`` images already scored (a resumed run)."""
        self.name, self.total, self.done, self.new = name, total, done, 0
        self.t0 = self.last = time.perf_counter()
        if self._bar is not None:
            self._task = self._bar.add_task(escape(name), total=total, completed=done, nfe=0.0, rate="")
        elif done >= total:
            self._line(0.0, None, "already scored")

    def advance(self, n: int, nfe: float) -> None:
        """``n`` more images scored at ``nfe`` U-Net evaluations per image."""
        self.done += n
        self.new += n
        now = time.perf_counter()
        rate = self.new / max(now - self.t0, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, advance=n, nfe=nfe, rate=f"{rate:6.1f} img/s")
        elif self.done >= self.total or now - self.last >= self.every:
            self.last = now
            self._line(rate, nfe)

    def _line(self, rate: float, nfe: float | None, extra: str = "") -> None:
        parts = [f"{self.name}: {self.done}/{self.total} images"]
        parts += [f"{rate:.1f} img/s", f"NFE/img {nfe:.0f}"] if nfe is not None else [extra]
        self.console.print(", ".join(parts), markup=False, highlight=False, soft_wrap=True)


def _bar(console: Console) -> Progress:
    """One bar per attack: images done, img/s, NFE per image, elapsed, ETA."""
    return Progress(
        TextColumn("[bold]{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("NFE/img {task.fields[nfe]:.0f}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def target_ready(console: Console, target: Any, batch_size: int, batch_why: str | None = None) -> None:
    """One line once the target is built: its device, the precision used and why, the batch size;
    a second with the target's peak-memory estimate when it makes one (before the first query)."""
    precision = getattr(target, "precision", None)
    console.print(
        f"target {escape(target.name)} on {target.device}"
        + (f", {precision['dtype']} ({escape(precision['reason'])})" if precision else "")
        + f"; batch size {batch_size}" + (f" ({escape(batch_why)})" if batch_why else ""),
        highlight=False, soft_wrap=True,
    )
    plan = getattr(target, "memory", None)  # a target that estimates its peak memory (Stable Diffusion)
    summary = getattr(plan, "summary", None)
    if callable(summary):
        console.print(f"memory: {escape(str(summary()))}", highlight=False, soft_wrap=True)


def warn(console: Console, message: str) -> None:
    """A yellow ``warning:`` line (``message`` is plain text, escaped here)."""
    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def stopping(console: Console) -> None:
    console.print("[yellow]Ctrl-C: stopping after the current batch (press again to abort now)…[/]")


def scrubbed(console: Console, changed: list[Path], binary: list[Path]) -> None:
    """What the final secret scrub of the run directory found."""
    for p in changed:
        warn(console, f"removed a secret from {p}")
    for p in binary:
        console.print(
            f"[bold red]warning:[/] the binary file {escape(str(p))} contains a secret value; delete it",
            highlight=False,
        )


def reporter_failed(console: Console | None, name: str, exc: BaseException, run_dir: Path) -> None:
    warn(
        console or err,
        f"reporter {name} failed ({type(exc).__name__}: {exc}); the results are saved in {run_dir}; "
        f"re-render with `audit report {run_dir}`",
    )


def interrupted(console: Console, run_dir: Path | None, resume_command: str | None) -> None:
    if run_dir is None or resume_command is None:
        console.print("[yellow]Interrupted[/] before anything was scored.")
        return
    console.print(
        f"[yellow]Interrupted.[/] Everything scored so far is saved in {escape(str(run_dir))}. Resume with:\n"
        f"  {escape(resume_command)}",
        highlight=False, soft_wrap=True,
    )


# --------------------------------------------------------------------------------- after a run
def format_metric(m: dict) -> str:
    """``0.900 [0.83, 0.95]``: a metric with its 95 % interval."""
    return f"{m['value']:.3f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]"


def summary(results: dict, console: Console | None = None) -> None:
    """The finished run's summary. Evaluation mode: the metrics table, its notes, a verdict per
    attack, the sweep tables. Copyright mode: the set-level tests, the preflight, the notes and
    the sanity check, then as the last lines the conclusion with its reasons, the p-values (plain
    and shift-adjusted), the shift check with its interval and the power figure (the run
    directory and report path follow, :func:`run_finished`). Copyright mode prints no metrics
    table: AUC or ASR of suspects vs reference would treat every suspect as a member, which is
    exactly what is unknown (results.json and the report keep them, with that warning)."""
    console = console or out
    if results["run"]["mode"] == "copyright":
        copyright_summary(results, console)
        return
    fair = sweep_seconds(results.get("sweeps") or {}, results["attacks"])
    caption = "value over its 95% bootstrap interval; TPR at 1% / 0.1% FPR; NFE and queries (qry) per image; s = seconds"
    if fair:
        caption += "; sweep points share queries, so a sweep's seconds are split by the queries each point uses"
    table = Table(
        title=f"{results['run']['name']} ({results['run']['mode']} mode)",
        caption=caption, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False,
    )
    width = max((len(n) for n in results["attacks"]), default=6)
    table.add_column("attack", no_wrap=True, min_width=min(width, 28), overflow="fold")
    for col in ("AUC", "ASR", "TPR@1%", "TPR@.1%"):
        table.add_column(col, justify="right", no_wrap=True, min_width=9)
    for col in ("NFE", "qry", "s"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, a in results["attacks"].items():
        m = a["metrics"]

        def fmt(k: str) -> str:
            mark = "*" if m[k].get("supported") is False else ""
            return f"{m[k]['value']:.3f}{mark}\n{m[k]['ci95'][0]:.2f}-{m[k]['ci95'][1]:.2f}"

        table.add_row(
            escape(name), fmt("auc"), fmt("asr"), fmt("tpr_at_1pct_fpr"), fmt("tpr_at_0_1pct_fpr"),
            f"{a['nfe_per_image']:g}", f"{a['queries_per_image']:g}", f"{fair.get(name, a['seconds']):.1f}",
        )
    console.print(table)
    if any(v.get("supported") is False for a in results["attacks"].values() for v in a["metrics"].values() if isinstance(v, dict)):
        console.print("* unsupported: fewer non-members than the FPR level resolves (results.json: metrics.*.note)", highlight=False)
    for note in results["run"].get("notes", []):
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    for line in verdicts(results):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if results.get("sweeps"):
        sweep_tables(results["sweeps"], console)


def copyright_summary(results: dict, console: Console) -> None:
    """Copyright mode's summary (see :func:`summary`)."""
    si = results.get("set_inference") or {}
    if si:
        set_inference_summary(si, console)
    pre = si.get("preflight") or {}
    for w in pre.get("warnings") or []:
        console.print(f"[yellow]preflight:[/] {escape(str(w))}", highlight=False, soft_wrap=True)
    ref = results.get("reference") or {}
    if ref.get("generated"):
        console.print(f"[bold]Reference:[/] generated by {escape(str(ref.get('generator')))} at "
                      f"{ref.get('generated_at') or 'an unknown time'}. {escape(ref.get('warning') or '')}", highlight=False, soft_wrap=True)
    for note in results["run"].get("notes", []):
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    sanity = si.get("sanity")
    if isinstance(sanity, dict):
        sanity_line(sanity, console)
    console.print(
        "Evaluation metrics (AUC, ASR, TPR@FPR of suspects vs reference) are not shown: they would count every "
        "suspect as a member, which is what the test asks. results.json and the report keep them, with that warning.",
        markup=False, highlight=False, soft_wrap=True, style="dim",
    )
    if results.get("sweeps"):
        sweep_tables(results["sweeps"], console)
    from ..copyright.inference import ASSUMPTION

    console.print(f"Assumption: {ASSUMPTION}", markup=False, highlight=False, soft_wrap=True, style="dim")
    for line in copyright_last_lines(results):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _p(v: Any) -> str:
    return "–" if v is None else f"{float(v):.3g}"


def conclusion_of(si: dict) -> tuple[str | None, list[str]]:
    """``(conclusion, reasons)`` of a ``set_inference`` block: ``combined.conclusion`` when the run
    wrote one, else (older runs) "evidence" / "no evidence" from the combined p-value against
    alpha; None when nothing was tested."""
    c = si.get("combined") or {}
    if c.get("conclusion"):
        return str(c["conclusion"]), [str(r) for r in c.get("reasons") or []]
    p, alpha = c.get("p_value"), c.get("alpha")
    if p is None or alpha is None:
        tested = [e for n, e in si.items() if n not in SET_INFERENCE_BLOCKS and isinstance(e, dict) and e.get("p_value") is not None]
        if not tested:
            return None, []
        hit = any(e["p_value"] <= e["alpha"] for e in tested)
        return ("evidence" if hit else "no evidence"), ["per-attack tests only (combine: none)"]
    return ("evidence" if p <= alpha else "no evidence"), [f"combined p = {p:.3g} {'<=' if p <= alpha else '>'} alpha = {alpha:g}"]


def copyright_last_lines(results: dict) -> list[str]:
    """The last lines of a copyright run's summary: conclusion (with reasons), p-values, shift
    check with its interval, power figure."""
    si = results.get("set_inference") or {}
    lines: list[str] = []
    conclusion, reasons = conclusion_of(si)
    if conclusion is None:
        lines.append("Conclusion: not tested (no attack could be tested; see the notes above)")
    else:
        lines.append(f"Conclusion: {conclusion.upper()}" + (f": {'; '.join(reasons)}" if reasons else ""))
    c = si.get("combined") or {}
    parts = []
    if c.get("p_value") is not None:
        parts.append(f"combined ({c.get('method')}) p = {_p(c['p_value'])}" + (f", shift-adjusted p = {_p(c['p_adjusted'])}" if c.get("p_adjusted") is not None else ""))
    for name, e in si.items():
        if name in SET_INFERENCE_BLOCKS or not isinstance(e, dict) or e.get("p_value") is None:
            continue
        parts.append(f"{name} p = {_p(e['p_value'])}" + (f" (adjusted {_p(e['p_adjusted'])})" if e.get("p_adjusted") is not None else ""))
    if parts:
        lines.append("p-values: " + "; ".join(parts))
    shift = shift_line(si, results.get("reference") or {})
    if shift:
        lines.append(shift)
    power = power_line(si)
    if power:
        lines.append(power)
    return lines


def _interval(ci: Any) -> str:
    return f" [{float(ci[0]):.2f}, {float(ci[1]):.2f}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci else ""


def shift_line(si: dict, ref: dict) -> str | None:
    """The shift check as one line: the blind baseline (AUC and its interval) when the run has
    one, and the image-statistics check."""
    blind = si.get("blind") if isinstance(si.get("blind"), dict) else None
    sc = ref.get("shift_check") if isinstance(ref.get("shift_check"), dict) else None
    bits = []
    if blind and blind.get("auc") is not None:
        how = blind.get("method") or "a classifier"
        folds = f", {blind['folds']}-fold cross-fitted" if blind.get("folds") else ""
        bits.append(f"images alone tell suspects from reference with AUC {float(blind['auc']):.2f}{_interval(blind.get('ci'))} ({how}{folds}; 0.5 = alike)")
    if sc and sc.get("auc") is not None:
        bits.append(f"image statistics: AUC {float(sc['auc']):.2f}{_interval(sc.get('ci'))}")
    if not bits:
        return f"Shift check: {sc['note']}" if sc and sc.get("note") else None
    overlap = blind.get("overlap") if blind else None
    if isinstance(overlap, (int, float)) and not isinstance(overlap, bool):
        bits.append(f"share of suspects in common support with the reference {overlap:.2f}")
    return "Shift check: " + "; ".join(bits)


def power_line(si: dict) -> str | None:
    """The power figure with its assumption (``set_inference.power``); an older run's resampled
    estimate (``combined.power``) is shown with its own note."""
    pw = si.get("power") if isinstance(si.get("power"), dict) else None
    if pw:
        n = pw.get("images_needed")
        size = f"about {n} true members" if n is not None else "more true members than any set size tried"
        extra = "; ".join(x for x in (str(pw.get("assumption") or ""), f"source: {pw['source']}" if pw.get("source") else "") if x)
        return f"Power: {size} would be needed for evidence at this alpha" + (f" ({extra})" if extra else "")
    old = (si.get("combined") or {}).get("power")
    if isinstance(old, dict) and "power_by_set_size" in old:
        k = old.get("smallest_set_size")
        size = f"about {k} images" if k is not None else f"more than {max(int(s) for s in old['power_by_set_size'])} images"
        return (f"Power: a set of true members would be flagged at alpha = {old.get('alpha', 0):g} with probability "
                f">= {old.get('target_power', 0.8):.0%} from {size} ({old.get('note', '')}).")
    return None


def sanity_line(result: dict, console: Console | None = None) -> None:
    """The split-reference sanity check's result (``audit reference check``, ``inference.sanity``)."""
    console = console or out
    colour = {True: "green", False: "bold red"}.get(result.get("passed"), "yellow")
    word = {True: "passed", False: "FAILED"}.get(result.get("passed"), "not tested")
    console.print(f"[{colour}]Reference check {word}:[/] {escape(str(result.get('note') or ''))}", highlight=False, soft_wrap=True)


def verdicts(results: dict) -> list[str]:
    """Plain one-line verdicts: per attack in evaluation mode (is AUC's interval above chance?);
    the set-level verdict in copyright mode (combined, else per attack)."""
    if results["run"]["mode"] == "copyright":
        from ..copyright.conclusion import NOT_ATTACKS, headline

        si = results.get("set_inference") or {}
        c = si.get("combined") or {}
        if c.get("conclusion"):
            ps = [f"p = {c['p_value']:.3g}"] if c.get("p_value") is not None else []
            ps += [f"shift-adjusted p = {c['p_adjusted']:.3g}"] if c.get("p_adjusted") is not None else []
            how = f"Combined ({c['method']}, {', '.join(ps)})" if ps else f"Combined ({c['method']})"
            return [f"Conclusion: {c['conclusion'].upper()}. {headline(c['conclusion'])}. {how}."] + [f"  - {r}" for r in c.get("reasons") or []]
        if c.get("p_value") is not None:
            return [f"Verdict: Combined ({c['method']}, p = {c['p_value']:.3g}): {c['verdict']}"]
        return [f"Verdict ({name}): {e['verdict']}" for name, e in si.items() if name not in SET_INFERENCE_BLOCKS and isinstance(e, dict)]
    lines = []
    for name, a in results["attacks"].items():
        auc = a["metrics"]["auc"]
        lo, hi = auc["ci95"]
        if lo > 0.5:
            what = "members and non-members are told apart: the model leaks membership"
        elif hi < 0.5:
            what = "scores are reversed (members score lower): check the attack's direction"
        else:
            what = "no evidence of membership leakage (the interval includes chance, 0.5)"
        lines.append(f"Verdict ({name}): {what}; AUC {auc['value']:.3f} [{lo:.2f}, {hi:.2f}]")
    return lines


def sweep_seconds(sweeps: dict[str, Any], attacks: dict[str, Any]) -> dict[str, float]:
    """Seconds per sweep point with shared queries charged fairly: the sweep's total time split in
    proportion to the queries (NFEs for grey-box attacks) each point uses. The largest point
    computes what the smaller ones read from the cache, so raw seconds would charge it all."""
    out: dict[str, float] = {}
    for s in sweeps.values():
        names = [p["attack"] for p in s["points"] if p["attack"] in attacks]
        key = "queries_per_image" if any(attacks[n]["queries_per_image"] > 0 for n in names) else "nfe_per_image"
        weight = {n: float(attacks[n][key]) for n in names}
        total, wsum = sum(float(attacks[n]["seconds"]) for n in names), sum(weight.values())
        for n in names:
            out[n] = total * weight[n] / wsum if wsum > 0 else float(attacks[n]["seconds"])
    return out


def set_inference_summary(si: dict, console: Console | None = None) -> None:
    """Copyright mode: the set-level test per attack (with the shift-adjusted p-value when the run
    has one) and the tests' notes."""
    console = console or out
    entries = {n: e for n, e in si.items() if n not in SET_INFERENCE_BLOCKS and isinstance(e, dict)}
    adjusted = any(e.get("p_adjusted") is not None for e in entries.values())
    table = Table(title="Was the suspect set used?", caption="suspects vs reference, one-sided Mann-Whitney U; evidence: p <= alpha; flagged at FPR alpha"
                  + ("; adjusted: the shift-adjusted test" if adjusted else ""))
    for col in ("attack", "suspects", "reference", "flagged", "p-value", *(("adjusted p",) if adjusted else ()), "AUC", "evidence"):
        table.add_column(col, justify="left" if col == "attack" else "right")
    for name, e in entries.items():
        if e.get("p_value") is None:
            continue
        table.add_row(
            escape(name), str(e["n_suspects"]), str(e["n_reference"]), str(e["flagged"]), f"{e['p_value']:.3g}",
            *((_p(e.get("p_adjusted")),) if adjusted else ()),
            f"{e['effect_auc']:.3f}", "yes" if e["p_value"] <= e["alpha"] else "no",
        )
    console.print(table)
    for name, e in entries.items():
        for note in e.get("notes") or []:
            console.print(f"[yellow]{escape(name)}:[/] {escape(note)}", highlight=False)


def reference_summary(ref: dict, console: Console | None = None) -> None:
    """Copyright mode: where the reference came from and the model-free shift check."""
    console = console or out
    if ref.get("generated"):
        console.print(f"[bold]Reference:[/] generated by {escape(str(ref.get('generator')))} at "
                      f"{ref.get('generated_at') or 'an unknown time'}. {escape(ref.get('warning') or '')}", highlight=False)
    sc = ref.get("shift_check") or {}
    if sc.get("note"):
        ci = f" (95% CI {sc['ci'][0]:.2f}-{sc['ci'][1]:.2f})" if sc.get("ci") else ""
        console.print(f"[bold]Shift check[/] (suspects vs reference, image statistics only){ci}: {escape(sc['note'])}", highlight=False)


def sweep_tables(sweeps: dict[str, Any], console: Console | None = None) -> None:
    """One table per sweep: AUC and TPR@1%FPR per point, queries spent vs naive, the Pareto front."""
    from .sweeps import format_value

    console = console or out
    for base, s in sweeps.items():
        q = s["queries"]
        table = Table(
            title=escape(f"sweep {base}: {q['spent']} queries spent vs {q['naive']} run separately without a cache")
        )
        for col in (*s["params"], "AUC", "TPR@1%FPR", "queries/img", "Pareto"):
            table.add_column(escape(col), justify="right")
        front = set(s["pareto"])
        for p in s["points"]:
            table.add_row(
                *(escape(format_value(p["values"][k])) for k in s["params"]),
                format_metric(p["auc"]), format_metric(p["tpr_at_1pct_fpr"]), f"{p['queries_per_image']:g}",
                "*" if p["attack"] in front else "",
            )
        console.print(table)
    from .sweeps import queries_curve

    curve = queries_curve(sweeps)
    if curve:
        table = Table(title="AUC vs queries per image, fixed and adaptive budgets on the same held-out images")
        for col in ("point", "budget", "queries/img", "AUC", "TPR@1%FPR"):
            table.add_column(col, justify="right")
        for r in curve:
            table.add_row(escape(r["attack"]), "adaptive" if r["adaptive"] else "fixed", f"{r['queries_per_image']:.2f}",
                          format_metric(r["auc"]), format_metric(r["tpr_at_1pct_fpr"]))
        console.print(table)


def run_finished(run_dir: Path, console: Console | None = None) -> None:
    """Where the run directory and its HTML report are."""
    console = console or out
    console.print(f"Run directory: {run_dir}", soft_wrap=True, highlight=False)
    report = run_dir / "report.html"
    if report.exists():
        console.print(f"Report: {report.resolve()}", soft_wrap=True, highlight=False)
