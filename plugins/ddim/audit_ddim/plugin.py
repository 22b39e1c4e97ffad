"""The hook implementations of audit-ddim: what the entry point ``audit = ddim`` points at.

Each hook receives a ``register`` callback (or, for commands, the root Typer app) and hands over
what this plugin provides. Keep this module import-light: every ``audit`` command imports it, so
it registers each name with a ``"module:attr"`` reference and the module (diffusers, torch) is
imported only when an audit.yaml uses the name.
"""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_targets(register):
    """``target: {plugin: ddim, model: ...}`` in audit.yaml."""
    register("ddim", "audit_ddim.target:DDIMTarget")


@hookimpl
def register_datasets(register):
    """``builtin:digits/members``, ``builtin:digits/nonmembers``, ``builtin:digits/all``."""
    register("digits", "audit_ddim.digits:load")


@hookimpl
def register_commands(cli):
    """``audit ddim train``, ``audit ddim info`` and ``audit ddim convert-pytorch-ddpm``."""
    from .cli import app

    cli.add_typer(app, name="ddim", help="The ddim target plugin: train the demo model, inspect a model folder.")
