"""`audit reference check`: the split-reference sanity check as one command (the split and the
test are :mod:`audit_core.run.sanity`'s). Registered on the copyright layer's `audit reference`
group from here, the CLI layer, because it runs the Runner."""

from __future__ import annotations

from pathlib import Path
import hashlib
from typing import Annotated, Any, Optional

import typer

from ..copyright import reference
from ..run.sanity import outcome, split_records


def run_check(config: Any, set_: list[str], output: Any = None, resume: bool | None = None, force: bool = False) -> int:
    """``audit reference check CONFIG``: score the reference's halves with the config's target and
    attacks (a run of its own), print the usual summary and the check's result; returns the exit
    code, 0 when the check passes and 1 when it fails (or nothing could be tested)."""

    from ..base.config import load_config
    from ..base.errors import ConfigError, Interrupted
    from ..run import console as term
    from ..run.defaults import with_defaults
    from ..run.runner import Runner

    # the check is a plain run of half against half: no second stage, no check inside the check
    loaded = with_defaults(load_config(config, [*set_, "inference.sanity=false", "inference.max_queries=null"]))
    if loaded.cfg.data.mode != "copyright":
        raise ConfigError(
            f"audit reference check {config}: the config is in evaluation mode; the check needs a copyright-mode "
            f"config (data.suspects and data.reference)"
        )
    default = loaded.run_dir()
    out = Path(output) if output is not None else default.with_name(default.name + "-reference-check")
    seed = loaded.cfg.run.seed

    class ReferenceCheck(Runner):
        def load_data(self):  # the reference alone, in two halves
            return split_records(super().load_data(), seed)

        def _fingerprint(self, *args) -> str:  # never mistaken for (or resumed as) the audit itself
            return hashlib.sha256((super()._fingerprint(*args) + "\0reference-check").encode()).hexdigest()

    runner = ReferenceCheck(loaded, output=out, resume=resume, force=force, console=term.err)
    try:
        run_dir = runner.run()
    except (Interrupted, KeyboardInterrupt):
        saved = (out / "state.sqlite").exists()
        resume_cmd = " ".join(["audit", "reference", "check", str(config), *(f"--set {s}" for s in set_), "--output", str(out), "--resume"])
        term.interrupted(term.err, out, resume_cmd if saved else None)
        return 130
    term.summary(runner.results, term.out)
    result = outcome(runner.results.get("set_inference") or {}, loaded.cfg.inference.alpha)
    term.run_finished(run_dir, term.out)
    term.sanity_line(result, term.out)
    return 0 if result["passed"] else 1


@reference.app.command("check")
def check_cmd(
    config: Annotated[Path, typer.Argument(help="A copyright-mode audit.yaml (data.suspects and data.reference).")],
    set_: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE", help="Override a key: dotted.key=value (repeatable).")] = [],  # noqa: B006
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="DIR", help="Run directory (default reports/<run.name>-reference-check).")] = None,
    resume: Annotated[Optional[bool], typer.Option("--resume/--no-resume", help="Continue an interrupted check (--no-resume: start it over).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a finished check of a different config in the run directory.")] = False,
) -> None:
    """The split-reference sanity check: the reference split in two halves by a seeded hash of the
    image ids, one half tested as suspects against the other with the config's target and attacks.
    It must come out "no evidence" (it fails by chance at most alpha of the time when every score
    depends on its image alone). Exit 0 when it passes, 1 when it fails, 2 on bad input."""
    code = run_check(config, set_, output, resume, force)
    if code:
        raise typer.Exit(code)
