"""Warnings on the terminal from anywhere in the core: :func:`warn` prints a yellow ``warning:``
line on stderr, once per message. The plugin manager and the plugin boundary
(:mod:`audit_core.plugin.guard`) use it; a run's own output is :mod:`audit_core.run.console`'s."""

from __future__ import annotations

_warned: set[str] = set()


def warn(message: str, once: bool = True) -> None:
    """A warning on stderr (shown above a live progress bar, which redirects stderr)."""
    if once:
        if message in _warned:
            return
        _warned.add(message)
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
