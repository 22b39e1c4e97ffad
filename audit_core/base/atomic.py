"""The core's one atomic file writer: every file the core writes whole (run outputs, the
attestation, the query cache's entries, generated reference sets, the final secrets scrub) goes
through :func:`atomic_write`, so a full disk or a killed process leaves the old file intact (or
no file), never half of a new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(
    path: str | Path,
    data: bytes | str,
    *,
    errors: str = "strict",
    fsync: bool = True,
    temp_prefix: str | None = None,
    temp_suffix: str = ".tmp",
) -> None:
    """Write ``data`` (``str``: as UTF-8, ``errors`` for what UTF-8 cannot encode) to ``path``
    atomically: a temporary file in the same folder, written, flushed and (``fsync``) synced to
    disk, then renamed over ``path`` (``os.replace``). On any failure the temporary file is removed
    and the exception raised; ``path`` is then as it was.

    The temporary file is ``.<name>.tmp`` beside ``path`` (created with the folder's usual
    permissions); with ``temp_prefix`` it is a unique ``<temp_prefix><random><temp_suffix>``
    instead (``tempfile.mkstemp``, owner-only permissions), for paths that several processes may
    write at once, such as a shared cache's entries."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8", errors)
    if temp_prefix is None:
        tmp = path.with_name(f".{path.name}{temp_suffix}")
        opened = lambda: open(tmp, "wb")  # noqa: E731
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix, suffix=temp_suffix)
        tmp = Path(name)
        opened = lambda: os.fdopen(fd, "wb")  # noqa: E731
    try:
        with opened() as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename == str(tmp):
            exc.filename = str(path)  # name the file being written, not its temporary file
        raise
