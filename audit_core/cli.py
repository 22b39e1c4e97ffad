"""The ``audit`` command line (Typer). Exit codes: 0 success, 2 bad input (one paragraph, no
traceback), 1 internal failure, 130 interrupted (resumable)."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import AuditError, Interrupted

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="audit",
    help="Membership-inference audits of diffusion models: was this image (or set) used to train that model?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cache_app = typer.Typer(help="The shared query cache of variation outputs.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"audit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.")
    ] = None,
) -> None:
    """Membership-inference audits of diffusion models."""


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="The audit.yaml to run.")],
    set_: Annotated[list[str], typer.Option("--set", help="Override a key: dotted.key=value (repeatable).")] = [],  # noqa: B006
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Run directory (default reports/<run.name>).")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue an interrupted run in the same directory.")] = False,
    force: Annotated[bool, typer.Option("--force", help="With --resume: discard results of a changed config.")] = False,
) -> None:
    """Run the audit described by CONFIG and write a run directory."""
    from .config import load_config
    from .runner import Runner

    loaded = load_config(config, set_)
    runner = Runner(loaded, output=output, resume=resume, force=force, console=err_console)
    runner._config_path = config  # for the resume hint
    try:
        run_dir = runner.run()
    except Interrupted:
        err_console.print(
            f"[yellow]Interrupted.[/] Everything scored so far is saved in {runner.run_dir}. Resume with:\n"
            f"  audit run {config} --resume" + (f" --output {output}" if output else "")
        )
        raise typer.Exit(130) from None
    _summary(runner.results)
    report = run_dir / "report.html"
    console.print(f"Run directory: {run_dir}")
    if report.exists():
        console.print(f"Report: {report.resolve()}")


def _summary(results: dict) -> None:
    table = Table(title=f"{results['run']['name']} ({results['run']['mode']} mode)")
    for col in ("attack", "AUC", "ASR", "TPR@1%FPR", "TPR@0.1%FPR", "NFE/img", "queries/img", "seconds"):
        table.add_column(col, justify="right" if col != "attack" else "left")
    for name, a in results["attacks"].items():
        m = a["metrics"]
        fmt = lambda k: f"{m[k]['value']:.3f} [{m[k]['ci95'][0]:.2f}, {m[k]['ci95'][1]:.2f}]"  # noqa: E731
        table.add_row(
            name, fmt("auc"), fmt("asr"), fmt("tpr_at_1pct_fpr"), fmt("tpr_at_0_1pct_fpr"),
            f"{a['nfe_per_image']:g}", f"{a['queries_per_image']:g}", f"{a['seconds']:.1f}",
        )
    console.print(table)


@app.command("plugins")
def plugins_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Output JSON.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Include the core's built-in plugins.")] = False,
) -> None:
    """List installed plugins: name, distribution, version and hooks."""
    from .plugins import get_plugins

    plugins = get_plugins(all=all_)
    if as_json:
        typer.echo(json.dumps(plugins, indent=2))
        return
    table = Table(title="audit plugins")
    for col in ("name", "distribution", "version", "hooks"):
        table.add_column(col)
    for p in plugins:
        table.add_row(p["name"], p.get("distribution", "-"), p.get("version", "-"), ", ".join(p["hooks"]))
    console.print(table)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")]) -> None:
    """Re-render the reports of a finished run without running attacks."""
    from .runner import render_reports, reporters_from_config

    if not (run_dir / "results.json").is_file():
        raise AuditError(f"{run_dir} is not a finished run directory (no results.json)")
    paths = render_reports(run_dir, reporters_from_config(run_dir))
    if not paths:
        console.print(f"{run_dir}: the run's config names no reporters")
    for p in paths:
        console.print(f"Wrote {p}")


@cache_app.command("info")
def cache_info(directory: Annotated[Optional[Path], typer.Option("--dir", help="Cache folder (default: the user cache).")] = None) -> None:
    """Show where the query cache is and how big it is."""
    from .cache import QueryCache

    info = QueryCache(directory).info()
    console.print(f"{info['dir']}: {info['entries']} entries, {info['bytes'] / 1e6:.1f} MB")


@cache_app.command("clear")
def cache_clear(directory: Annotated[Optional[Path], typer.Option("--dir", help="Cache folder (default: the user cache).")] = None) -> None:
    """Delete every cached variation."""
    from .cache import QueryCache

    n = QueryCache(directory).clear()
    console.print(f"removed {n} cached entries")


_commands_loaded = False


def build_app() -> typer.Typer:
    global _commands_loaded
    if not _commands_loaded:
        _commands_loaded = True
        from .plugins import register_commands

        register_commands(app)
    return app


def _fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    try:
        build_app()(args=argv, standalone_mode=True)
    except AuditError as exc:
        _fail(str(exc), 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except SystemExit:
        raise
    except Exception as exc:  # an internal failure: keep the traceback for a bug report
        traceback.print_exc()
        _fail(f"internal error: {type(exc).__name__}: {exc}", 1)


if __name__ == "__main__":
    main()
