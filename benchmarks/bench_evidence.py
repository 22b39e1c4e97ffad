"""What evidence-grade runs cost on the demo: the hashing and the attestation against the whole run.

    python benchmarks/bench_evidence.py [--config audit.yaml] [--output DIR] [--images-as-files] [--no-record]

Runs ``audit run CONFIG --set cache.enabled=false`` in this process with timers around

- ``loader``: the sha256 the ImageLoader takes of each image's bytes while decoding it (the bytes
  are read once; only the hashing is timed);
- ``start``: the content hashes taken when the run starts (the run store's, for --resume; they
  existed before the attestation and are what it records);
- ``attest``: writing attestation.intoto.json (model files, resolved config and every output
  hashed, the predicate, the in-toto Statement) and reports.intoto.json;

then ``audit verify RUN --rescore 5`` (timed, not counted in the run). ``--images-as-files``
exports the demo's images as PNG files first and runs on those folders (the loader then hashes
file bytes, as it does for a user's data). Prints the numbers and appends a row to
benchmarks/RESULTS.md. Target: loader + attest < 2 % of the run (the start hashes are the run
store's, kept as before, and reported beside it)."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="audit.yaml")
    ap.add_argument("--output", default=None)
    ap.add_argument("--images-as-files", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)

    from audit_core import attest, data, runner
    from audit_core.cli import main as cli_main

    spent = {"loader": 0.0, "start": 0.0, "attest": 0.0}

    def timed(key, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.perf_counter() - t
        return wrapper

    real_sha = hashlib.sha256

    class TimedSha:  # the loader's hashlib.sha256(data) of file bytes (content_hash calls it without)
        def __call__(self, *a, **k):
            if not a:
                return real_sha()
            t = time.perf_counter()
            h = real_sha(*a, **k)
            spent["loader"] += time.perf_counter() - t
            return h

    data.hashlib = type("H", (), {"sha256": staticmethod(TimedSha())})  # only data.py's calls are timed
    data.content_hash = timed("loader", data.content_hash)  # arrays: the loader's hash
    runner.content_hash = timed("start", runner.content_hash)  # runner's own reference: the start pass
    attest.write_run_attestation = timed("attest", attest.write_run_attestation)
    attest.write_reports_attestation = timed("attest", attest.write_reports_attestation)

    out = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="bench-evidence-")) / "run"
    sets = ["--set", "cache.enabled=false"]
    if args.images_as_files:
        folder = Path(tempfile.mkdtemp(prefix="bench-evidence-images-"))
        export(folder)
        sets += ["--set", f"data.members={folder / 'members'}", "--set", f"data.nonmembers={folder / 'nonmembers'}"]
    t0 = time.perf_counter()
    try:
        cli_main(["run", args.config, *sets, "--output", str(out)])
    except SystemExit as exc:
        if exc.code not in (0, None):
            return int(exc.code)
    whole = time.perf_counter() - t0
    t1 = time.perf_counter()
    try:
        cli_main(["verify", str(out), "--rescore", "5"])
    except SystemExit as exc:
        verify_rc = exc.code
    verify_s = time.perf_counter() - t1
    share = 100 * (spent["loader"] + spent["attest"]) / whole
    cells = (
        f"run {whole:.1f} s; loader hashing {spent['loader'] * 1000:.1f} ms, attestation {spent['attest'] * 1000:.1f} ms: "
        f"{share:.3f} % of the run ({'PASS' if share < 2 else 'FAIL'} < 2 %); start hashes (run store, as before) "
        f"{spent['start'] * 1000:.1f} ms; `audit verify --rescore 5` {verify_s:.1f} s (exit {verify_rc})"
    )
    print(cells)
    if not args.no_record:
        from _results import append_result

        setup = f"{args.config}, cache off, {'images as PNG files' if args.images_as_files else 'builtin arrays'}, cpu x{os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}"
        append_result("bench_evidence", setup, cells)
    return 0


def export(folder: Path) -> None:
    """The demo's members and non-members as PNG files (ids keep their names)."""
    from PIL import Image

    from audit_core import plugins

    ds = plugins.registry("datasets")["digits"]
    for g in ("members", "nonmembers"):
        (folder / g).mkdir(parents=True, exist_ok=True)
        for r in ds(g, {}):
            Image.fromarray(r.array).save(folder / g / f"{Path(r.id).name}.png")


if __name__ == "__main__":
    raise SystemExit(main())
