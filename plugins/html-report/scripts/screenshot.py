"""Screenshots of a report in Debian's headless chromium, at a desktop and a phone width.

    python plugins/html-report/scripts/screenshot.py RUN_DIR/report.html OUT_PREFIX [--height 2600]

writes OUT_PREFIX-1280.png and OUT_PREFIX-400.png (the docs/ screenshots are made this way).
Headless chromium lays a window out at least 500 px wide, so the report is shown in an iframe of
exactly the width asked for, inside a window at least 500 px wide, and the picture is cropped to
that width (needs Pillow, e.g. the project's .venv/bin/python). Offline: the report's CSP forbids
network fetches, and chromium runs with a throwaway profile."""

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
MIN_WINDOW = 500  # headless chromium's narrowest layout viewport

FRAME = (
    '<!DOCTYPE html><html><body style="margin:0;background:#fff">'
    '<iframe src="{src}" style="border:0;display:block;width:{w}px;height:{h}px"></iframe></body></html>'
)


def shoot(report: Path, out: Path, width: int, height: int) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        sys.exit("chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        frame = Path(profile) / "frame.html"
        frame.write_text(FRAME.format(src=report.resolve().as_uri(), w=width, h=height), encoding="utf-8")
        subprocess.run(
            [exe, *FLAGS, f"--user-data-dir={profile}/data", f"--window-size={max(width, MIN_WINDOW)},{height}",
             "--allow-file-access-from-files", "--virtual-time-budget=3000", f"--screenshot={out}", frame.as_uri()],
            check=True, capture_output=True, timeout=120, env={"HOME": profile, "PATH": "/usr/bin:/bin"},
        )
    if width < MIN_WINDOW:
        from PIL import Image

        with Image.open(out) as im:
            im.crop((0, 0, width, height)).save(out, optimize=True)


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
