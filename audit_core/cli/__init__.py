"""The ``audit`` command line (Typer). Exit codes: 0 success, 2 bad input (one paragraph, no
traceback), 1 internal failure, 130 interrupted (resumable)."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .. import __version__
from ..copyright import reference
from ..base.errors import AuditError, Interrupted, PluginFailure

from ..run.console import err as err_console
from ..run.console import out as console

app = typer.Typer(
    name="audit",
    help="Membership-inference audits of diffusion models: was this image (or set) used to train that model?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
from .cache import _cache_at, _size, cache_app, cache_clear, cache_info  # noqa: E402,F401  (`audit cache`; they lived here)

app.add_typer(cache_app, name="cache")
from . import reference_check as _reference_check  # noqa: E402,F401  (registers `audit reference check`)

reference.register(app)  # audit reference build, audit reference check


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"audit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.")
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Also print the traceback of a plugin failure (it always goes to the run's audit.log).")
    ] = False,
) -> None:
    """Membership-inference audits of diffusion models."""
    if debug:
        from ..plugin import guard

        guard.debug = True


_KEEP_GOING = typer.Option(
    "--keep-going", help="A reporter that crashes is a warning (exit 0) instead of a failed command (exit 1); the other reports are written either way."
)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="The audit.yaml to run.")],
    set_: Annotated[
        list[str], typer.Option("--set", metavar="KEY=VALUE", help="Override a key: dotted.key=value (repeatable).")
    ] = [],  # noqa: B006
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", metavar="DIR", help="Run directory (default reports/<run.name>; run.name defaults to the config file's name)."),
    ] = None,
    resume: Annotated[
        Optional[bool],
        typer.Option(
            "--resume/--no-resume",
            help="Continue an interrupted run in the same directory (--no-resume: start it over). With neither, "
            "an unfinished run in the way is an error.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a finished run of a different config in the run directory (with --resume: discard its results).")
    ] = False,
    keep_going: Annotated[bool, _KEEP_GOING] = False,
) -> None:
    """Run the audit described by CONFIG and write a run directory."""
    from ..base.config import load_config
    from ..run.defaults import with_defaults
    from ..run.runner import Runner

    runner = Runner(
        with_defaults(load_config(config, set_)), output=output, resume=resume, force=force, console=err_console, keep_going=keep_going
    )
    _execute(runner, ["audit", "run", str(config)], set_)


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="The audit.yaml whose attacks to sweep.")],
    param: Annotated[
        list[str],
        typer.Option(
            "--param", "-p", metavar="ATTACK.PARAM=V1,V2", help="e.g. rediffuse.n=1,2,5,10 (repeatable: a grid)."
        ),
    ] = [],  # noqa: B006
    set_: Annotated[
        list[str], typer.Option("--set", metavar="KEY=VALUE", help="Override a key: dotted.key=value (repeatable).")
    ] = [],  # noqa: B006
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", metavar="DIR", help="Run directory (default reports/<run.name>-sweep).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue an interrupted sweep in the same directory.")] = False,
) -> None:
    """Run a parameter sweep (ablation): only the attacks named in --param, one entry per value,
    sharing queries between points (an n-sweep costs what its largest n costs)."""
    from ..base.config import load_config
    from ..run.defaults import with_defaults
    from ..run.runner import Runner
    from ..run.sweeps import apply_sweep_options, default_output

    loaded = apply_sweep_options(with_defaults(load_config(config, set_)), param)
    runner = Runner(loaded, output=output or default_output(loaded), resume=resume, console=err_console)
    _execute(runner, ["audit", "sweep", str(config), *(a for p in param for a in ("--param", p))], set_)


def _execute(runner, command: list[str], set_: list[str]) -> None:
    """Run, print the summary and where the run directory and report are; on Ctrl-C say what was
    kept and print the command (``command`` + the --set overrides) that resumes it."""
    from ..run import console as term

    try:
        run_dir = runner.run()
    except (AuditError, PluginFailure):
        if getattr(runner, "reports_failed", False):  # the run itself finished: show what it found
            term.summary(runner.results, console)
        raise
    except (Interrupted, KeyboardInterrupt):
        run_dir = getattr(runner, "run_dir", None)
        saved = run_dir is not None and (run_dir / "state.sqlite").exists()
        term.interrupted(err_console, run_dir, _resume_command(command, set_, run_dir) if saved else None)
        raise typer.Exit(130) from None
    term.summary(runner.results, console)
    term.run_finished(run_dir, console)


def _resume_command(command: list[str], set_: list[str], run_dir: Path) -> str:
    """The command line that resumes a run (values of secret-looking --set keys masked)."""
    import shlex

    from ..base.secrets import is_secret_key

    parts = list(command)
    for item in set_:
        key = item.split("=", 1)[0].strip()
        leaf = key.rsplit(".", 1)[-1]
        if is_secret_key(leaf) and not leaf.lower().endswith("_env"):
            item = f"{key}=***"
        parts += ["--set", item]
    parts += ["--output", str(run_dir), "--resume"]
    return " ".join(shlex.quote(p) for p in parts)


from . import plugins_cmd as _plugins_cmd  # noqa: E402

_plugins_cmd.register(app)  # audit plugins (here, to keep its place in `audit --help`)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    reporter: Annotated[
        list[str],
        typer.Option("--reporter", "-r", metavar="NAME", help="Render this reporter (repeatable), e.g. html-report; default: the run's own."),
    ] = [],  # noqa: B006
    param: Annotated[
        list[str],
        typer.Option(
            "--param", "-p", metavar="KEY=VALUE",
            help="A param of the --reporter (repeatable; the value is read as YAML, e.g. title=Audit or open=true); the run's config's params for it are not merged in.",
        ),
    ] = [],  # noqa: B006
    keep_going: Annotated[bool, _KEEP_GOING] = False,
) -> None:
    """Re-render the reports of a finished run without running attacks, or add a reporter."""
    from ..run.reporting import RunView, build_reporter, render_reports, reporters_from_config
    from ..run.rundir import Manifest

    if not (run_dir / "results.json").is_file():
        raise AuditError(f"{run_dir} is not a finished run directory (no results.json)")
    view = RunView(run_dir)  # a corrupt results.json is an error even when no reporter is configured
    params = _reporter_params(param, reporter)
    reps = [build_reporter(name, params) for name in reporter] if reporter else reporters_from_config(run_dir)
    paths = render_reports(view, reps, keep_going=keep_going, own=lambda *p: Manifest.load(run_dir).add(*p))  # the run's files
    if paths:
        from ..run import attest

        Manifest.load(run_dir).add(attest.REPORTS_ATTESTATION)  # the run's files: scrubbed and cleared with it
        attest.write_reports_attestation(run_dir, paths)  # the reports statement follows the new reports
        if (run_dir / attest.SIGNATURES).is_file():
            console.print(
                f"note: the reports changed since {run_dir} was signed; sign it again with `audit sign {run_dir} --key KEY.pem`",
                soft_wrap=True, highlight=False, markup=False,
            )
    elif not reps:  # (not when its reporters failed under --keep-going: each said so in a warning)
        console.print(
            f"{run_dir}: the run's config names no reporters; add one with "
            f"`audit report {run_dir} --reporter html-report`", soft_wrap=True, highlight=False, markup=False,
        )
    for p in paths:
        console.print(f"Wrote {p}", soft_wrap=True, highlight=False)


@app.command()
def sign(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory (with attestation.intoto.json).")],
    key: Annotated[Path, typer.Option("--key", metavar="KEY.pem", help="Private key (PEM, ECDSA P-256 or Ed25519, e.g. `openssl genpkey -algorithm ed25519`).")],
    passphrase_env: Annotated[
        Optional[str], typer.Option("--passphrase-env", metavar="VAR", help="Environment variable holding the passphrase of an encrypted key.")
    ] = None,
) -> None:
    """Sign a run's attestation offline (DSSE envelopes in signatures.intoto.jsonl) and re-render
    its reports to show the key's fingerprint."""
    from .sign import sign_run

    fpr, paths = sign_run(run_dir, key, passphrase_env, err_console)
    for p in paths:
        console.print(f"Wrote {p}", soft_wrap=True, highlight=False, markup=False)
    console.print(f"Signed by {fpr}. Check with: audit verify {run_dir} --key PUBLIC.pem", soft_wrap=True, highlight=False, markup=False)


@app.command()
def verify(
    run_dir: Annotated[Path, typer.Argument(help="A run directory to check.")],
    key: Annotated[Optional[Path], typer.Option("--key", metavar="PUB.pem", help="The signer's public key: the signatures must verify with it.")] = None,
    data_root: Annotated[
        Optional[Path], typer.Option("--data-root", metavar="DIR", help="Where the run's images are now (the recorded data root maps to DIR).")
    ] = None,
    model_root: Annotated[
        Optional[Path], typer.Option("--model-root", metavar="DIR", help="Where the model's files are now (the recorded model folder maps to DIR).")
    ] = None,
    rescore: Annotated[int, typer.Option("--rescore", metavar="N", min=0, help="Score N images again (drawn by a seeded rule) and compare with scores.csv.")] = 0,
    rescore_seed: Annotated[
        Optional[int], typer.Option("--rescore-seed", metavar="S", help="Seed of the rescore draw (default: the run's seed).")
    ] = None,
) -> None:
    """Check an attested run: signatures, outputs, every input's hash, the metrics recomputed from
    scores.csv and, with --rescore N, N images scored again. Exit 0 when all holds, else 1 with
    one line per failure."""
    from .verify import show, verify_run

    if not show(verify_run(run_dir, key, data_root, model_root, rescore, rescore_seed), run_dir, console):
        raise typer.Exit(1)


def _reporter_params(items: list[str], reporters: list[str]) -> dict:
    """``--param key=value`` items as a dict (values read as YAML scalars, as ``--set`` does)."""
    from ..base.config import parse_value

    if items and len(reporters) != 1:
        raise AuditError("--param needs exactly one --reporter NAME to apply to, e.g. audit report RUN --reporter html-report --param title=X")
    params: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise AuditError(f"--param {item!r}: expected KEY=VALUE, e.g. --param title=Audit")
        params[key] = parse_value(value)
    return params


def build_app() -> typer.Typer:
    from ..plugin.manager import register_commands

    register_commands(app)  # each plugin's commands once; a plugin registered since the last call too
    return app


def _fail(message: str, code: int) -> None:
    from ..base.secrets import scrub

    # escape: messages quote names like rediffuse[n=5], which rich would read as markup
    err_console.print(f"[bold red]Error:[/] {escape(scrub(message))}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _plain_help(cmd) -> None:
    """Plain metavars in every ``--help``: Typer 0.29 prints ``<bool>`` after flags (``--version``,
    ``--help``), ``{config}`` for a required argument in the usage line and ``<list[str]>`` for a
    repeatable option. Flags get no metavar, arguments their name in capitals, and any remaining
    repeatable option VALUE (the options above name theirs, e.g. KEY=VALUE)."""
    import typer._click as tclick
    from typer.core import TyperArgument, TyperOption

    help_opt = cmd.get_help_option(tclick.Context(cmd, info_name=cmd.name))
    for p in [*cmd.params, *([help_opt] if help_opt is not None else [])]:
        if isinstance(p, TyperArgument):
            p.metavar = p.metavar or (p.name or "arg").upper()
            # bound per argument: the usage line shows CONFIG (or [DIR] when optional), not {config}
            p._usage_display_name = lambda p=p: (p.metavar if p.required else f"[{p.metavar}]") + ("..." if p.nargs != 1 else "")
        elif isinstance(p, TyperOption) and p.metavar is None:
            if p.is_flag or p.count:
                p.metavar = ""
            elif p.multiple:
                p.metavar = "VALUE"
    for sub in (getattr(cmd, "commands", None) or {}).values():
        _plain_help(sub)


def main(argv: list[str] | None = None, prog_name: str | None = None) -> None:
    """The ``audit`` command (also ``python -m audit_core``, which passes its own ``prog_name``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[1:]:  # `audit run x.yaml --debug` works like `audit --debug run x.yaml`
        from ..plugin import guard

        guard.debug = True
        args = [a for i, a in enumerate(args) if a != "--debug" or i == 0]
    try:
        cmd = typer.main.get_command(build_app())
        _plain_help(cmd)
        cmd(args=args, prog_name=prog_name, standalone_mode=True)
    except AuditError as exc:
        _fail(str(exc), 2)
    except PluginFailure as exc:  # a plugin's bug: one paragraph naming it, traceback in the log
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except SystemExit:
        raise
    except Exception as exc:  # an internal failure: keep the traceback for a bug report
        from ..base.secrets import scrub

        sys.stderr.write(scrub(traceback.format_exc()))
        _fail(f"internal error: {type(exc).__name__}: {exc}", 1)


if __name__ == "__main__":
    main()
