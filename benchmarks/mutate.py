"""Mutation testing of the core (``make mutate``): mutmut's mutants of the modules named by
``--modules`` (mutmut name globs), each run against the fast property tests configured in
``[tool.mutmut]`` of pyproject.toml, within a wall-clock budget (seconds). Writes the score and
every surviving mutant's diff to ``--output`` (default benchmarks/mutation.txt).

Score = killed / (killed + survived + timeouts + no tests): a mutant no test reaches counts as
a survivor. Mutants not checked when the budget ran out are reported, not scored.
Not part of ``make test``: a full run takes tens of minutes on two cores."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = [sys.executable, "-m", "mutmut"]
#: the DDIM maths, seeding, metrics, copyright inference, the query-cache keys and secrets
DEFAULT = [
    "audit_core.base.ddim.*", "audit_core.base.seeding.*", "audit_core.stats.metrics.*", "audit_core.copyright.inference.*",
    "audit_core.plugin.variations.*cache_key*", "audit_core.copyright.reference.*cache_key*", "audit_core.base.secrets.*",
    # issue 35: the run directory, the query cache's folder ownership, the store's changed-image hashes
    "audit_core.run.rundir.*", "audit_core.data.cache.*foreign_example*", "audit_core.data.cache.*_claim*",
    "audit_core.data.cache.*_require_owned*", "audit_core.run.store.*rescore_changed*", "audit_core.run.store.*image_hashes*",
    "audit_core.run.store.*forget_images*",
]
KILLED = {"killed"}
SURVIVED = {"survived", "no tests", "timeout", "suspicious"}


def _diffs(names: list[str]) -> list[str]:
    """Each mutant's diff, from one process (``mutmut show`` per mutant costs a second each)."""
    code = (
        "import json, sys\n"
        "from mutmut.mutation.diff_apply import get_diff_for_mutant\n"
        "print(json.dumps([get_diff_for_mutant(n) for n in json.load(sys.stdin)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, input=json.dumps(names), capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else [f"(no diff: {out.stderr.strip()[-200:]})"] * len(names)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", nargs="+", default=DEFAULT, help="mutmut name globs (default: %(default)s)")
    ap.add_argument("--budget", type=float, default=1800, help="wall-clock seconds for the run (default: %(default)s)")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "mutation.txt")
    ap.add_argument("--incremental", action="store_true",
                    help="keep mutmut's earlier results (mutants/); by default a fresh run, since mutmut does not "
                         "re-check a mutant when only the tests changed")
    args = ap.parse_args()
    if not args.incremental:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)  # mutmut's own work folder, recreated by the run

    start = time.monotonic()
    try:
        run = subprocess.run([*MUTMUT, "run", *args.modules], cwd=ROOT, timeout=args.budget,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if run.returncode != 0:
            print(run.stderr[-4000:], file=sys.stderr)
            print(f"mutmut run failed (exit {run.returncode})", file=sys.stderr)
            return 1
        out_of_time = False
    except subprocess.TimeoutExpired:
        out_of_time = True
    elapsed = time.monotonic() - start

    listing = subprocess.run([*MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    globs = [re.compile(re.escape(g).replace(r"\*", ".*") + "$") for g in args.modules]
    status: dict[str, str] = {}
    for line in listing.splitlines():
        name, _, st = line.strip().partition(": ")
        if name and any(g.match(name) for g in globs):
            status[name] = st.strip()
    counts = Counter(status.values())
    killed = sum(counts[s] for s in KILLED)
    survived = sorted(n for n, s in status.items() if s in SURVIVED)
    scored = killed + len(survived)
    score = killed / scored if scored else float("nan")

    per_module: dict[str, Counter] = {}
    for name, st in status.items():
        if st in KILLED | SURVIVED:
            per_module.setdefault(name.split(".x")[0], Counter())[st in KILLED] += 1
    lines = [
        f"mutmut over {' '.join(args.modules)}: score {score:.1%} ({killed} killed of {scored} checked; "
        f"{counts['not checked']} not checked{' (budget spent)' if out_of_time else ''}), {elapsed:.0f} s",
        f"statuses: {dict(sorted(counts.items()))}",
        "per module: " + "; ".join(
            f"{m} {c[True] / (c[True] + c[False]):.1%} ({c[True]}/{c[True] + c[False]})" for m, c in sorted(per_module.items())
        ),
        "",
        f"surviving mutants ({len(survived)}):",
    ]
    for name, diff in zip(survived, _diffs(survived)):
        changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
        lines += [f"- {name} ({status[name]})", *(f"    {ln}" for ln in changed)]
    args.output.write_text("\n".join(lines) + "\n")
    print(lines[0])
    print(f"survivors and diffs: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
