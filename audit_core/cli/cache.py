"""``audit cache info`` and ``audit cache clear``: the shared query cache
(:mod:`audit_core.data.cache`) from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..run.console import out as console

cache_app = typer.Typer(help="The shared query cache of variation outputs.", no_args_is_help=True)

_CacheDir = Annotated[
    Optional[Path], typer.Option("--dir", help="Cache folder (default: $AUDIT_CACHE_DIR, else the user cache dir).")
]
_CacheConfig = Annotated[Optional[Path], typer.Option("--config", help="Use the cache.dir of this audit.yaml.")]


def _cache_at(directory: Optional[Path], config: Optional[Path]):
    from ..data.cache import QueryCache

    if directory is None and config is not None:
        from ..base.config import load_config

        return QueryCache.for_config(load_config(config), create=False)
    return QueryCache(directory, create=False)


@cache_app.command("info")
def cache_info(directory: _CacheDir = None, config: _CacheConfig = None) -> None:
    """Show where the query cache is and how big it is."""
    cache = _cache_at(directory, config)
    info = cache.info()
    console.print(
        f"{info['dir']}: {info['entries']} entries, {_size(info['bytes'])}"
        + (f" (cap {_size(info['max_bytes'])})" if config is not None and info["max_bytes"] else ""),
        highlight=False, soft_wrap=True,  # a path is never broken over lines
    )
    if info["legacy_entries"]:
        console.print(
            f"{info['legacy_entries']} entries ({_size(info['legacy_bytes'])}) from an earlier version have no "
            f"checksum and are not used; `audit cache clear --legacy` removes them",
            highlight=False, soft_wrap=True,
        )
    foreign = cache.foreign_example() if not info["marker"] else None
    if foreign is not None:
        console.print(
            f"note: {info['dir']} is not an audit query cache (no marker; it holds other files such as {foreign})",
            highlight=False, soft_wrap=True,
        )


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@cache_app.command("clear")
def cache_clear(
    directory: _CacheDir = None,
    config: _CacheConfig = None,
    legacy: Annotated[
        bool, typer.Option("--legacy", help="Also delete the unverifiable <key>.npy entries an earlier version wrote.")
    ] = False,
) -> None:
    """Delete every cached variation (only the cache's own entries: nothing else in the folder)."""
    cache = _cache_at(directory, config)
    n = cache.clear(legacy=legacy)
    console.print(f"removed {n} cached entries from {cache.dir}", highlight=False, soft_wrap=True)
