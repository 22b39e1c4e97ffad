"""The report in a real browser: Debian's chromium, headless, offline.

Skipped only where chromium is missing and ``CI`` is unset (a developer machine); in CI
(``.ci/run`` installs chromium) a missing browser is a failure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,2000",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI is set: .ci/run should have installed Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); set CI=1 to make this a failure")
    return exe


def browse(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    profile.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(profile)}  # nothing read from or written to the real home
    return subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={profile / 'data'}", *args],
        capture_output=True, text=True, timeout=180, env=env, check=False,
    )


def test_report_renders_in_chromium(chromium, run_four, tmp_path):
    url = (run_four / "report.html").resolve().as_uri()
    res = browse(chromium, tmp_path / "dom", "--dump-dom", url)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    table = re.search(r'<table[^>]*id="metrics-table".*?<tbody>(.*?)</tbody>', dom, re.S)
    assert table, dom[:2000]
    assert table.group(1).count("<tr") == 4
    plots = re.findall(r'<(?:svg|img)[^>]*class="plot"', dom)
    assert len(plots) == 2 + 4  # ROC linear + log-log, one histogram per attack
    assert dom.count('src="data:image/png;base64,') >= 4 * 3
    assert "<script" not in dom.lower()

    shot = tmp_path / "report.png"
    res = browse(chromium, tmp_path / "shot", f"--screenshot={shot}", url)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        colours = im.convert("RGB").resize((160, 250)).getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # a rendered page, not a blank one


def test_copyright_report_on_a_phone_width(chromium, run_copyright, tmp_path):
    """400 px wide: the verdict, the notes box and the set-test table (as cards) render."""
    url = (run_copyright / "report.html").resolve().as_uri()
    res = browse(chromium, tmp_path / "dom", "--window-size=400,1600", "--dump-dom", url)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert 'id="notes"' in dom and "too small for alpha" in dom and 'class="data stack"' in dom
    shot = tmp_path / "phone.png"
    res = browse(chromium, tmp_path / "shot", "--window-size=400,1600", f"--screenshot={shot}", url)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (400, 1600)
        colours = im.convert("RGB").resize((100, 400)).getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50
