"""YAML read strictly and within bounds (``load_yaml``), with each key's line, and the
``dotted.key (file, line N)`` way every config error names where it is."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigError

#: nodes a config may have once aliases are expanded (every use of an alias counts its whole
#: subtree): an 800-byte "billion laughs" alias bomb is refused before anything is expanded
MAX_YAML_NODES = 200_000


#: flow collections (``[``/``{``) nested deeper than this are refused before parsing: PyYAML's
#: scanner is quadratic in the flow depth (3000 levels take seconds, 100 000 hours)
MAX_FLOW_DEPTH = 100


def _flow_depth(text: str, limit: int) -> int | None:
    """The 1-based line where ``[``/``{`` nest deeper than ``limit`` (quoted strings and comments
    skipped), or None. A linear pre-scan; close enough to YAML's rules to bound the real parser."""
    depth, line, quote, prev = 0, 1, "", "\n"
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        if quote == '"':
            if ch == "\\":
                i += 1
            elif ch == '"':
                quote = ""
        elif quote == "'":
            if ch == "'":
                quote = ""
        elif quote == "#":
            if ch == "\n":
                quote = ""
        elif ch in "\"'" and (prev in " \t\n[{,:" or depth):
            quote = ch
        elif ch == "#" and prev in " \t\n":
            quote = "#"
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return line
        elif ch in "]}":
            depth = max(0, depth - 1)
        prev = ch
        i += 1
    return None


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader; composition is checked (``_check_nodes``) before any object is built."""


def _yaml_error(exc: yaml.YAMLError, source: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    where = f", line {mark.line + 1} column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return ConfigError(f"{source}{where}: broken YAML: {problem}")


def _check_nodes(root: yaml.Node, source: str) -> dict[tuple, int]:
    """Walk the composed YAML once (an aliased node is entered once, so this is linear in the
    text) and return the line map: each key path (tuple of str/int) -> its 1-based line.

    Refused with a ConfigError naming the lines: a key repeated in one mapping (YAML says keys
    are unique; PyYAML would silently keep the last), more than ``MAX_YAML_NODES`` nodes once
    aliases are expanded, a recursive alias, a NUL character in a value."""
    lines: dict[tuple, int] = {}
    sizes: dict[int, int] = {}  # id(node) -> expanded size, once known
    open_: set[int] = set()  # nodes being walked (an alias back to one of them is recursive)
    total = 0

    def walk(node: yaml.Node, path: tuple) -> int:
        nonlocal total
        lines.setdefault(path, node.start_mark.line + 1)
        key = id(node)
        if key in sizes:  # an alias of a node already walked: count its expansion, don't re-walk
            total += sizes[key]
            if total > MAX_YAML_NODES:
                raise ConfigError(
                    f"{source}, line {node.start_mark.line + 1}: aliases expand to more than {MAX_YAML_NODES} "
                    f"YAML nodes (an alias bomb?); write the values out or use fewer aliases"
                )
            return sizes[key]
        if key in open_:
            raise ConfigError(f"{source}, line {node.start_mark.line + 1}: a recursive YAML alias (a value that contains itself)")
        open_.add(key)
        total += 1
        if total > MAX_YAML_NODES:
            raise ConfigError(f"{source}: more than {MAX_YAML_NODES} YAML nodes (with aliases expanded)")
        size = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges, by design
                        size += walk(v, path)
                        continue
                    if "\x00" in k.value:
                        raise ConfigError(f"{source}, line {k.start_mark.line + 1}: a key contains a NUL character")
                    ident = (k.tag, k.value)
                    if ident in seen:
                        raise ConfigError(
                            f"{source}, lines {seen[ident]} and {k.start_mark.line + 1}: duplicate key "
                            f"{dotted((*path, k.value))!r} (YAML keys must be unique; the second would silently "
                            f"replace the first). Remove or merge one of them."
                        )
                    seen[ident] = k.start_mark.line + 1
                    child = (*path, k.value)
                    lines[child] = k.start_mark.line + 1
                else:
                    child = (*path, "?")
                    size += walk(k, child)
                size += walk(v, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                size += walk(v, (*path, i))
        elif isinstance(node, yaml.ScalarNode) and "\x00" in node.value:
            raise ConfigError(
                f"{dotted(path)} ({source}, line {node.start_mark.line + 1}): contains a NUL character, which no "
                f"name, path or value may hold"
            )
        open_.discard(key)
        sizes[key] = size
        return size

    walk(root, ())
    return lines


def load_yaml(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """``(data, line map)`` of a YAML text, bounded and strict (see ``_check_nodes``): duplicate
    keys, alias bombs, recursive aliases, NUL characters and nesting too deep for the parser
    are ConfigErrors naming the source and line, before any Python object is built."""
    deep = _flow_depth(text, MAX_FLOW_DEPTH)
    if deep is not None:
        raise ConfigError(f"{source}, line {deep}: brackets nested deeper than {MAX_FLOW_DEPTH} levels")
    loader = None
    try:
        loader = _BoundedLoader(text)  # the reader already refuses control characters
        root = loader.get_single_node()  # composition only: aliases are shared nodes here
        if root is None:
            return None, {}
        lines = _check_nodes(root, source)
        return loader.construct_document(root), lines
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _refuse_nul(obj: Any, path: tuple, lines: dict[tuple, int], source: str, depth: int = 0) -> None:
    """ConfigError naming the key when a key or string value holds a NUL character (no name,
    path or value may: the OS refuses such paths with a ValueError deep inside the run)."""
    if depth > 100:
        return
    if isinstance(obj, str) and "\x00" in obj:
        raise ConfigError(f"{dotted(path)} ({_where(path, lines, source)}): contains a NUL character, which no name, path or value may hold")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _refuse_nul(k, path, lines, source, depth + 1)
            _refuse_nul(v, (*path, k), lines, source, depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _refuse_nul(v, (*path, i), lines, source, depth + 1)


def _line_map(text: str) -> dict[tuple, int]:
    """Map each key path (tuple of str/int) to its 1-based line in the YAML text ({} when the
    text is not a valid, bounded YAML document)."""
    try:
        return load_yaml(text, "<yaml>")[1]
    except ConfigError:
        return {}


def _where(path: tuple, lines: dict[tuple, int | str], source: str) -> str:
    """``source, line N`` of the closest enclosing key; a key set on the command line maps to
    its ``--set key=value`` argument instead (it is not in the file)."""
    probe = tuple(path)
    while probe and probe not in lines:
        probe = probe[:-1]
    line = lines.get(probe)
    if isinstance(line, str):
        return line
    place = f"{source}, line {line}" if line else source
    # a block (``attacks[0].params``) whose keys were partly set on the command line: name those too
    path = tuple(path)
    sets = sorted({v for k, v in lines.items() if isinstance(v, str) and len(k) > len(path) and k[: len(path)] == path})
    return "; ".join([place, *sets]) if path and sets else place


def dotted(path: tuple) -> str:
    out = ""
    for p in path:
        if out == "--param":  # a command-line param: `--param KEY`
            out += f" {p}"
        else:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"
