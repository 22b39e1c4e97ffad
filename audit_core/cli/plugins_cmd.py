"""``audit plugins``: the installed plugins as a table (the core's built-ins as one ``built-in``
row) or JSON, with disabled plugins, name clashes (and the qualified names that pick one) and
classes lacking a method their kind requires (``audit_core/plugin/listing.py`` builds the list)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..run.console import out as console


def register(app: typer.Typer) -> None:
    @app.command("plugins")
    def plugins_cmd(
        as_json: Annotated[bool, typer.Option("--json", help="Output JSON.")] = False,
        all_: Annotated[bool, typer.Option("--all", help="With --json: include the core's built-in plugins (the table always shows them as one 'built-in' row).")] = False,
    ) -> None:
        """List installed plugins: distribution, version, hooks and the names each registers (as
        written in audit.yaml; the core's built-in distances and executor in a 'built-in' row), plus
        disabled (broken) plugins, names registered twice (with the qualified names that pick one)
        and classes lacking a method their kind requires."""
        from ..plugin.listing import builtin_row, get_plugins
        from ..plugin.manager import DEFAULT_PLUGINS

        if as_json:
            typer.echo(json.dumps(get_plugins(all=all_), indent=2))
            return
        plugins = get_plugins(all=True)
        core = builtin_row(plugins)
        plugins = ([core] if core else []) + [p for p in plugins if p["name"] not in DEFAULT_PLUGINS]
        table = Table(
            title="audit plugins",
            caption="names as written in audit.yaml (attacks[].plugin, target.plugin, ...); any name may be qualified as <distribution>:<name>",
        )
        for col in ("plugin", "distribution", "version", "registers"):
            table.add_column(col, overflow="fold")
        for p in plugins:
            if p.get("broken"):
                continue
            regs = "\n".join(f"{kind}: {', '.join(names)}" for kind, names in p["registers"].items())
            if "register_commands" in p["hooks"]:
                regs += ("\n" if regs else "") + "commands (audit CLI)"
            table.add_row(escape(p["name"]), p.get("distribution", "-"), p.get("version", "-"), escape(regs or "-"))
        console.print(table)

        def line(tag: str, text: str) -> None:
            console.print(f"{tag} {escape(text)}", highlight=False, soft_wrap=True)

        def picks(p: dict, text: str) -> str:  # the qualified names of this one clash, not the plugin's others
            names = next((v for k, v in p.get("picks", {}).items() if text.startswith(k + " ")), p.get("qualified", []))
            return " or ".join(repr(q) for q in names)

        for p in plugins:
            for clash in p.get("clashes", []):
                line("[yellow]name clash:[/]", f"{p['name']}: {clash} (neither is used); pick one by its qualified name: {picks(p, clash)}")
            for shadow in p.get("shadowed", []):
                line("[yellow]built-in wins:[/]", f"{p['name']}: {shadow}; use it as {picks(p, shadow)}")
            for problem in p.get("problems", []):
                line("[red]problem:[/]", f"{p['name']}: {problem}")
        for p in plugins:
            if p.get("broken"):
                dist = f" ({p['distribution']} {p['version']})" if p.get("distribution") else ""
                line("[red]disabled:[/]", f"{p['name']}{dist}: {p['broken']}")
