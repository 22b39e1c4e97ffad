"""Terminal output while a run goes: the run's two consoles (``out``: standard output, the
summary; ``err``: standard error, progress, warnings and errors), the progress per attack, the
target's line, warnings, Ctrl-C and the secret scrub's findings. The finished run's summary is
:mod:`audit_core.run.console`'s (which re-exports everything here)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
