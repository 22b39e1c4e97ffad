"""The hook implementations of audit-ddim: what the entry point ``audit = ddim`` points at.

Each hook receives a ``register`` callback (or, for commands, the root Typer app) and hands over
what this plugin provides. Keep this module import-light: heavy imports (diffusers, torch models)
happen only when a target is actually built.
"""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_targets(register):
    """``target: {plugin: ddim, model: ...}`` in audit.yaml."""
    from .target import DDIMTarget

    register(DDIMTarget)


@hookimpl
def register_datasets(register):
    """``builtin:digits/members``, ``builtin:digits/nonmembers``, ``builtin:digits/all``."""
    from . import digits

    register("digits", digits.load)


@hookimpl
def register_commands(cli):
    """``audit ddim train``, ``audit ddim info`` and ``audit ddim convert-pytorch-ddpm``."""
    from .cli import app

    cli.add_typer(app, name="ddim", help="The ddim target plugin: train the demo model, inspect a model folder.")
