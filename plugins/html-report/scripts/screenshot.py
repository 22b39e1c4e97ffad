"""Screenshots of a report in Debian's headless chromium, at a desktop and a phone width.

    python plugins/html-report/scripts/screenshot.py RUN_DIR/report.html OUT_PREFIX [--height 2600]

writes OUT_PREFIX-1280.png and OUT_PREFIX-400.png (the docs/ screenshots are made this way).
Offline: the report's CSP forbids network fetches, and chromium runs with a throwaway profile."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1",
]


def shoot(report: Path, out: Path, width: int, height: int) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        sys.exit("chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             f"--screenshot={out}", report.resolve().as_uri()],
            check=True, capture_output=True, timeout=120, env={"HOME": profile, "PATH": "/usr/bin:/bin"},
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("prefix")
    ap.add_argument("--height", type=int, default=2600)
    ap.add_argument("--widths", default="1280,400")
    args = ap.parse_args()
    for w in (int(x) for x in args.widths.split(",")):
        out = Path(f"{args.prefix}-{w}.png")
        shoot(args.report, out, w, args.height)
        print(out)


if __name__ == "__main__":
    main()
