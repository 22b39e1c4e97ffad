"""CSV and JSONL manifests of a ``data:`` entry: read whole within bounds (size, field length,
nesting), one row per image (``path``, optional ``caption`` and ``id``, other columns kept)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..base.errors import DataError

#: manifests are read whole; a bigger one is refused (a manifest of a million images is ~100 MB)
MAX_MANIFEST_BYTES = 512 << 20
#: a CSV field longer than this is refused (the csv module's own default limit)
MAX_FIELD_CHARS = 131_072
#: JSONL rows nested deeper than this are refused before parsing (a row is a flat object)
MAX_JSON_DEPTH = 32


def _json_depth_exceeds(line: str, limit: int) -> bool:
    """Whether brackets nest deeper than ``limit`` (strings skipped): checked before
    ``json.loads`` so a row of 100 000 ``[`` is refused without recursion."""
    depth, in_str, esc = 0, False, False
    for ch in line:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _manifest_text(path: Path) -> str:
    """The manifest's text (a UTF-8 BOM is dropped); refuses NUL bytes naming the line."""
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise DataError(f"manifest {path} is {size} bytes; manifests over {MAX_MANIFEST_BYTES} bytes are refused")
        with open(path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise DataError(f"manifest {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"manifest {path} cannot be read: {exc.strerror or exc}") from None
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise DataError(f"manifest {path}, line {line}: contains a NUL byte (a binary file, or a damaged one?)")
    return text


def _row_field(path: Path, n: int, row: dict, key: str, required: bool = False) -> str | None:
    """``row[key]`` as text (numbers accepted for ids and captions); DataError naming the line otherwise."""
    v = row.get(key)
    if v is None or v == "":
        if required:
            raise DataError(f"manifest {path}, line {n}: the `{key}` is empty")
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int, float)) or (key == "path" and not isinstance(v, str)):
        raise DataError(f"manifest {path}, line {n}: `{key}` must be text, not {type(v).__name__}")
    return str(v)


def _extra(row: dict) -> dict[str, str]:
    """The row's other columns (metadata kept on the record), as text."""
    return {str(k): str(v) for k, v in row.items() if k not in ("path", "id", "caption") and v not in (None, "")}


def _read_manifest(path: Path) -> list[dict]:
    """Rows ``{"path", "caption", "id", "line"}`` of a CSV or JSONL manifest, bounded and checked:
    a UTF-8 BOM is accepted; NUL bytes, fields over ``MAX_FIELD_CHARS`` characters, rows nested
    deeper than ``MAX_JSON_DEPTH`` and non-text values are DataErrors naming the line."""
    text = _manifest_text(path)
    rows: list[dict] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            header = reader.fieldnames
            if header is None or "path" not in [h.strip() for h in header]:
                raise DataError(f"manifest {path}: needs a header with a `path` column (and optional `caption`)")
            reader.fieldnames = [h.strip() for h in header]
            for r in reader:
                n = reader.line_num
                if None in r:
                    raise DataError(f"manifest {path}, line {n}: more fields than the header has columns")
                for k, v in r.items():
                    if v is not None and len(v) > MAX_FIELD_CHARS:
                        raise DataError(f"manifest {path}, line {n}: field `{k}` is {len(v)} characters (limit {MAX_FIELD_CHARS})")
                rows.append({"path": _row_field(path, n, r, "path", True), "caption": _row_field(path, n, r, "caption"),
                             "id": _row_field(path, n, r, "id"), "line": n, "extra": _extra(r)})
        except csv.Error as exc:
            # line_num counts the lines read before the one that failed
            raise DataError(f"manifest {path}, line {reader.line_num + 1}: not valid CSV ({exc})") from None
        return rows
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 may sit inside a JSON string
        if not line.strip():
            continue
        if len(line) > MAX_FIELD_CHARS * 4:
            raise DataError(f"manifest {path}, line {n}: {len(line)} characters (limit {MAX_FIELD_CHARS * 4})")
        if _json_depth_exceeds(line, MAX_JSON_DEPTH):
            raise DataError(f"manifest {path}, line {n}: nested deeper than {MAX_JSON_DEPTH} levels (each line is one flat object)")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"manifest {path}, line {n}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise DataError(f"manifest {path}, line {n}: nested too deeply") from None
        if not isinstance(row, dict) or "path" not in row:
            raise DataError(f"manifest {path}, line {n}: each line needs an object with a `path`")
        rows.append({"path": _row_field(path, n, row, "path", True), "caption": _row_field(path, n, row, "caption"),
                     "id": _row_field(path, n, row, "id"), "line": n, "extra": _extra(row)})
    return rows


def manifest_id(group: str, given: str | None, path: str) -> str:
    """The id of a manifest row: ``<group>/<id column>``, else ``<group>/<path>``, where a path
    that already starts with the group's folder (``members/00.png`` in members.csv) is not
    prefixed twice (``members/00.png``, not ``members/members/00.png``)."""
    if given:
        return f"{group}/{given}"
    return path if path.startswith(f"{group}/") else f"{group}/{path}"
