"""Parameter sweeps (ablations) with shared queries.

In audit.yaml any attack param may be a list; the entry then expands into a grid of attack
entries, one per combination, named by their values::

    attacks:
      - {plugin: rediffuse, params: {n: [1, 2, 5, 10], t: [100, 200]}}
    # -> rediffuse[n=1,t=100], rediffuse[n=1,t=200], ..., rediffuse[n=10,t=200]

``audit sweep CONFIG --param rediffuse.n=1,2,5,10`` does the same from the command line (and runs
only the swept entries).

Rules
- A plain list sweeps, unless the param's own schema takes a list as its value (then the list is
  that value, as before). ``{sweep: [...]}`` always sweeps, e.g. a list-typed param over several
  lists: ``sizes: {sweep: [[8, 16], [32]]}``.
- Every grid point gets ``seed_key`` = the entry's name (or the entry's own ``seed_key``), so
  all points draw the same per-image noise: draw ``d`` of image ``i`` is the same everywhere.
  Give two separate entries the same ``seed_key`` to share draws between them too.

Query sharing
- ``batch.seed_matrix(n)`` is image-major and prefix-stable, so the first m of n draws are exactly
  an m-draw run's. The runner runs each sweep's points in descending order of their values
  (n=10 before n=5 ...), so the smaller n are served from the query cache (keys: image, t, k,
  seed): an n-sweep spends the queries of its largest n.
- With ``cache.enabled: false`` a sweep still shares: a run-local cache is used (in memory for the
  in-process executor, capped at ``cache.max_bytes``; a temporary folder removed after the run for
  executors with remote workers). Nothing persists across runs.
- Points with different t or k share nothing but their noise draws (a DDIM trajectory depends on
  both), which pairs the comparison: differences between t (or k) values are not blurred by
  different noise.

results.json gains ``"sweeps": {base: {"params", "points", "queries": {"spent", "naive"},
"pareto"}}``; see :func:`summarize`.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..data.cache import MemoryCache  # noqa: F401  (re-exported: it lived here before)
from ..base.config import AttackCfg, LoadedConfig
from ..base.params import is_list_typed
from ..base.errors import ConfigError

SWEEP_KEY = "sweep"


@dataclass
class Sweep:
    """One expanded config entry: its swept params and its grid points, in config order."""

    base: str  # the entry's name (key in results.json "sweeps")
    plugin: str
    index: int  # the entry's index in the config's attacks list
    params: list[str]
    points: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (entry name, values)


# --------------------------------------------------------------------------------- expansion


def format_value(v: Any) -> str:
    """How a value appears in a grid point's name: ``5``, ``0.5``, ``l2``, ``true``, ``[8,16]``."""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, float, str)):
        return str(v) if not isinstance(v, float) else repr(v)
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


def point_name(base: str, values: dict[str, Any]) -> str:
    return f"{base}[{','.join(f'{k}={format_value(v)}' for k, v in values.items())}]"


def _schema_takes(params_model: Any, key: str, value: list) -> bool:
    """Whether the attack's param ``key`` takes a list as its value: its annotation is
    list-typed (then a plain list is that value, even a mixed one, and validation names the
    param), or it takes anything (``Any``). Otherwise a plain list sweeps."""
    fields = getattr(params_model, "model_fields", {}) or {}
    f = fields.get(key)
    if f is None:
        return False  # an unknown key: expand, and let validation name it
    if is_list_typed(f.annotation):
        return True
    return f.annotation is Any


def swept_values(acfg: AttackCfg, params_model: Any, where: Callable[..., str], index: int) -> dict[str, list]:
    """The entry's swept params and their values, in the order the params were written."""
    out: dict[str, list] = {}
    for key, value in acfg.params.items():
        path = ("attacks", index, "params", key)
        if isinstance(value, dict) and SWEEP_KEY in value:
            if set(value) != {SWEEP_KEY} or not isinstance(value[SWEEP_KEY], list):
                raise ConfigError(
                    f"attacks[{index}].params.{key} ({where(*path)}): the sweep form is "
                    f"{{sweep: [value, value, ...]}} with nothing else in the mapping"
                )
            values = value[SWEEP_KEY]
        elif isinstance(value, list) and not _schema_takes(params_model, key, value):
            values = value
        else:
            continue
        if not values:
            raise ConfigError(f"attacks[{index}].params.{key} ({where(*path)}): a sweep needs at least one value")
        names = [format_value(v) for v in values]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"attacks[{index}].params.{key} ({where(*path)}): value(s) {', '.join(dup)} appear twice")
        out[key] = list(values)
    return out


def expand(
    attacks: Sequence[AttackCfg], lookup: Callable[[int, AttackCfg], Any], loaded: LoadedConfig
) -> tuple[dict[str, Sweep], list[tuple[int, AttackCfg]]]:
    """Expand list-valued params into grid entries.

    ``lookup(i, acfg)`` returns the attack class (its ``Params`` schema decides whether a plain
    list is a sweep). Returns the sweeps by base name and ``(config index, entry)`` pairs in
    config order; an entry without swept params passes through unchanged."""
    sweeps: dict[str, Sweep] = {}
    entries: list[tuple[int, AttackCfg]] = []
    for i, acfg in enumerate(attacks):
        acls = lookup(i, acfg)
        swept = swept_values(acfg, getattr(acls, "Params", None), loaded.where, i)
        if not swept:
            entries.append((i, acfg))
            continue
        base = acfg.key
        sweep = Sweep(base=base, plugin=acfg.plugin, index=i, params=list(swept))
        for combo in itertools.product(*swept.values()):
            values = dict(zip(swept, combo))
            name = point_name(base, values)
            params = {**acfg.params, **values}
            point = acfg.model_copy(update={"name": name, "params": params, "seed_key": acfg.draw_key(getattr(acls, "name", None))})
            sweep.points.append((name, values))
            entries.append((i, point))
        sweeps[base] = sweep
    seen: dict[str, int] = {}
    for i, e in entries:
        if e.key in seen and seen[e.key] != i:
            raise ConfigError(
                f"attacks[{seen[e.key]}] and attacks[{i}] both yield an entry named {e.key!r} "
                f"({loaded.where('attacks', i)}): give one a distinct `name`"
            )
        seen[e.key] = i
    return sweeps, entries


# --------------------------------------------------------------------------------- execution


def _desc_key(values: dict[str, Any]) -> tuple:
    """Larger numeric values first (n=10 before n=5); non-numeric values keep config order."""
    key = []
    for v in values.values():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            key.append(-float(v))
        else:
            key.append(0.0)
    return tuple(key)


def points_by_name(sweeps: dict[str, Sweep]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every grid point's entry name -> (its sweep's base name, its swept values)."""
    return {name: (s.base, values) for s in sweeps.values() for name, values in s.points}


def execution_order(attacks: Sequence[Any], sweeps: dict[str, Sweep]) -> list[Any]:
    """The prepared attacks in the order to run them: each sweep's points largest values first,
    so that points needing a prefix of the draws find them in the cache. Results keep config order."""
    # point name -> (sweep base, descending key)
    point_of = {name: (base, _desc_key(values)) for name, (base, values) in points_by_name(sweeps).items()}
    indexed = list(enumerate(attacks))
    first: dict[str, int] = {}  # a sweep's (or a plain entry's) first position
    for pos, pa in indexed:
        first.setdefault(point_of[pa.name][0] if pa.name in point_of else f"\x00{pa.name}", pos)

    def sort_key(item: tuple[int, Any]) -> tuple:
        pos, pa = item
        if pa.name not in point_of:
            return (first[f"\x00{pa.name}"], (), pos)
        base, desc = point_of[pa.name]
        return (first[base], desc, pos)

    return [pa for _, pa in sorted(indexed, key=sort_key)]


def sharing_cache(executor: str, max_bytes: int) -> tuple[Any, str]:
    """The run-local cache a run with sweeps uses when the user disabled the query cache, so the
    points still share queries, and the note for results.json. In memory for the in-process
    executor; a temporary folder (removed when the cache object goes) for remote workers, which
    rebuild the target from the job and need a folder. The runner hands it to the target once."""
    if executor == "inprocess":
        note = "cache disabled: the sweep shared queries through a run-local in-memory cache (not persisted)"
        return MemoryCache(max_bytes), note
    from ..data.cache import QueryCache

    folder = tempfile.mkdtemp(prefix="audit-sweep-cache-")
    cache = QueryCache(folder, max_bytes)
    weakref.finalize(cache, shutil.rmtree, folder, True)
    return cache, "cache disabled: the sweep shared queries through a temporary cache folder, removed after the run"


# --------------------------------------------------------------------------------- results
# (the terminal and Markdown tables of this block: audit_core.console / audit_core.reporting)


def _metric(m: dict) -> dict:
    return {"value": m["value"], "ci95": m["ci95"]}


def pareto_front(points: list[dict], cost: str = "queries_per_image") -> list[str]:
    """Names of the points no other point beats on both AUC (higher) and cost (lower), cheapest first."""
    front = []
    for p in points:
        a, c = p["auc"]["value"], p[cost]
        dominated = any(
            q is not p
            and q[cost] <= c
            and q["auc"]["value"] >= a
            and (q[cost] < c or q["auc"]["value"] > a)
            for q in points
        )
        if not dominated:
            front.append(p)
    front.sort(key=lambda p: (p[cost], -p["auc"]["value"]))
    return [p["attack"] for p in front]


def summarize(sweeps: dict[str, Sweep], attacks: dict[str, dict], held_out: dict[str, dict] | None = None) -> dict[str, Any]:
    """The results.json ``sweeps`` block from the finished per-attack entries::

        {base: {"params": [names], "points": [{"attack", "values", "auc", "tpr_at_1pct_fpr",
                "queries_per_image", "nfe_per_image"}], "queries": {"spent", "naive"},
                "pareto": [attack names on the AUC-vs-queries front], "pareto_cost": key}}

    ``queries.naive`` is what the points would cost run separately without a cache (every
    variation row they use); ``queries.spent`` is what reached the target (cache hits excluded).
    For grey-box attacks (no variation queries) the Pareto front uses NFEs per image instead.

    Points of an adaptive budget (params calibrated on the run's calibration split) also carry
    ``queries_per_image_evaluation`` and ``queries_histogram_evaluation`` (queries spent per held-out
    image); when the run has such entries, ``held_out`` (entry name -> ``{"auc",
    "tpr_at_1pct_fpr"}`` on those held-out images, from the runner) gives every point its metrics on
    the same images, so the AUC-vs-queries curve compares like with like (:func:`queries_curve`)."""
    out: dict[str, Any] = {}
    for base, s in sweeps.items():
        points, spent, naive = [], 0, 0
        for name, values in s.points:
            a = attacks.get(name)
            if a is None:
                continue
            m = a["metrics"]
            points.append(
                {
                    "attack": name,
                    "values": values,
                    "auc": _metric(m["auc"]),
                    "tpr_at_1pct_fpr": _metric(m["tpr_at_1pct_fpr"]),
                    "queries_per_image": a["queries_per_image"],
                    "nfe_per_image": a["nfe_per_image"],
                }
            )
            for key in ("queries_per_image_evaluation", "queries_histogram_evaluation"):
                if a.get(key) is not None:
                    points[-1][key] = a[key]
            if held_out and name in held_out:
                points[-1]["held_out"] = {k: _metric(v) for k, v in held_out[name].items()}
            spent += int(a["spent"]["queries"])
            naive += int(a["spent"]["queries"]) + int(a["cache_hits"])
        cost = "queries_per_image" if any(p["queries_per_image"] > 0 for p in points) else "nfe_per_image"
        out[base] = {
            "plugin": s.plugin,
            "params": list(s.params),
            "points": points,
            "queries": {"spent": spent, "naive": naive},
            "pareto": pareto_front(points, cost) if points else [],
            "pareto_cost": cost,
        }
    return out


def queries_curve(sweeps_block: dict[str, Any]) -> list[dict[str, Any]]:
    """Every point of every sweep that has held-out metrics, as one AUC-vs-queries curve in
    increasing queries per held-out image: ``[{"attack", "sweep", "values", "adaptive",
    "queries_per_image" (held-out), "queries_per_image_all", "auc", "tpr_at_1pct_fpr",
    "histogram"}]``. Fixed-budget points spend the same on every image; adaptive ones report
    their held-out spend (their calibration images always get the whole budget, which
    ``queries_per_image_all`` includes)."""
    rows = []
    for base, s in sweeps_block.items():
        for p in s["points"]:
            if "held_out" not in p:
                continue
            adaptive = p.get("queries_per_image_evaluation") is not None
            rows.append({
                "attack": p["attack"], "sweep": base, "values": p["values"], "adaptive": adaptive,
                "queries_per_image": p["queries_per_image_evaluation"] if adaptive else p["queries_per_image"],
                "queries_per_image_all": p["queries_per_image"],
                "auc": p["held_out"]["auc"], "tpr_at_1pct_fpr": p["held_out"]["tpr_at_1pct_fpr"],
                "histogram": p.get("queries_histogram_evaluation"),
            })
    rows.sort(key=lambda r: (r["queries_per_image"], -r["auc"]["value"]))
    return rows


# --------------------------------------------------------------------------------- `audit sweep`


def parse_param_option(item: str) -> tuple[str, str, list]:
    """``NAME.param=v1,v2,...`` (or ``NAME.param=[v1, v2]``) -> (attack name, param, values)."""
    if "=" not in item:
        raise ConfigError(f"--param {item!r}: expected ATTACK.param=v1,v2,... (e.g. rediffuse.n=1,2,5,10)")
    key, text = item.split("=", 1)
    if "." not in key:
        raise ConfigError(f"--param {item!r}: expected ATTACK.param=v1,v2,... (the attack entry's name, a dot, the param)")
    attack, param = key.strip().rsplit(".", 1)
    if not attack or not param:
        raise ConfigError(f"--param {item!r}: empty attack name or param")
    text = text.strip()
    try:
        if text.startswith("["):
            values = yaml.safe_load(text)
        else:
            values = [yaml.safe_load(v) if v.strip() else "" for v in text.split(",")]
    except yaml.YAMLError as exc:
        raise ConfigError(f"--param {item!r}: cannot read the values: {exc}") from None
    if not isinstance(values, list) or not values or any(v == "" for v in values):
        raise ConfigError(f"--param {item!r}: give one or more comma-separated values")
    return attack, param, values


def apply_sweep_options(loaded: LoadedConfig, items: Sequence[str]) -> LoadedConfig:
    """The config ``audit sweep`` runs: the entries named by ``--param`` with those params swept
    (``{sweep: [...]}`` form), the other entries dropped. Error lines still point into the file, except
    a swept param's, which name its ``--param`` argument."""
    if not items:
        raise ConfigError("audit sweep needs at least one --param ATTACK.param=v1,v2,...")
    cfg = loaded.cfg
    by_name = {a.key: i for i, a in enumerate(cfg.attacks)}
    chosen: dict[int, dict[str, Any]] = {}
    blame: dict[tuple[int, str], str] = {}  # (entry, param) -> the --param argument that set it
    for item in items:
        attack, param, values = parse_param_option(item)
        if attack not in by_name:
            raise ConfigError(
                f"--param {item!r}: no attack entry named {attack!r} in {loaded.source} "
                f"(entries: {', '.join(by_name)})"
            )
        chosen.setdefault(by_name[attack], {})[param] = {SWEEP_KEY: values}
        blame[(by_name[attack], param)] = f"--param {item}"
    keep = sorted(chosen)
    attacks = [
        cfg.attacks[i].model_copy(
            update={"params": {**{k: v for k, v in cfg.attacks[i].params.items() if k not in chosen[i]}, **chosen[i]}}
        )  # swept params last, in --param order (it names the points)
        for i in keep
    ]
    new_cfg = cfg.model_copy(update={"attacks": attacks})
    lines = {}
    for path, line in loaded.lines.items():
        if len(path) >= 2 and path[0] == "attacks" and isinstance(path[1], int):
            if path[1] in chosen:
                lines[("attacks", keep.index(path[1]), *path[2:])] = line
        else:
            lines[path] = line
    for (i, param), arg in blame.items():  # a swept param's errors blame the command line, not the file
        for k in [k for k in lines if k[:4] == ("attacks", keep.index(i), "params", param)]:
            lines[k] = arg
        lines[("attacks", keep.index(i), "params", param)] = arg
    return LoadedConfig(new_cfg, loaded.raw, lines, loaded.source, loaded.base_dir)


def default_output(loaded: LoadedConfig):
    """``audit sweep``'s default run directory: the run's usual one with ``-sweep`` appended."""
    base = loaded.run_dir()
    return base.with_name(base.name + "-sweep")
