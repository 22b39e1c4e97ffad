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



#: a page holding the report in an iframe ``WIDTH`` px wide (headless chromium lays a window out
#: at least 500 px wide, an iframe at any width): once the report has loaded, it sorts the
#: per-suspect table by vs-a's score through the report's own script (click, click) and records
#: both orders, the report's width and its viewport's as attributes of <body> for --dump-dom
FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" src="REPORT" style="border:0;display:block;width:WIDTHpx;height:1600px"></iframe>
<script>
document.getElementById("f").addEventListener("load", function () {
  var d = this.contentDocument, b = document.body;
  var th = d.querySelector('#suspects-table th[data-col="1"]');
  function order() { return [].map.call(d.querySelectorAll("#suspects-table tbody tr"),
    function (r) { return r.cells[1].getAttribute("data-v"); }).join(","); }
  b.setAttribute("data-focusable", d.querySelectorAll("#suspects-table th[tabindex]").length);
  th.click(); b.setAttribute("data-asc", order());
  th.click(); b.setAttribute("data-desc", order());
  b.setAttribute("data-sw", d.documentElement.scrollWidth);
  b.setAttribute("data-vw", this.contentWindow.innerWidth);
});
</script></body></html>"""


def test_copyright_report_table_sorts_and_nothing_scrolls_sideways(chromium, run_copyright, tmp_path):
    """The report as written (its CSP and its one hashed script), at 1280 and 400 px: clicking a
    column head sorts the per-suspect table both ways, and the page is never wider than the window."""
    for width in (1280, 400):
        page = tmp_path / f"frame-{width}.html"
        page.write_text(FRAME.replace("REPORT", (run_copyright / "report.html").resolve().as_uri()).replace("WIDTH", str(width)))
        res = browse(
            chromium, tmp_path / f"p{width}", f"--window-size={max(width, 500)},1700", "--allow-file-access-from-files",
            "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri(),
        )
        assert res.returncode == 0, res.stderr[-2000:]
        body = dict(re.findall(r'data-(\w+)="([^"]*)"', re.search(r"<body([^>]*)>", res.stdout).group(1)))
        assert body.get("vw") == str(width), body  # the report was laid out at this width
        assert body["focusable"] == "7"  # the report's script ran under its own CSP
        asc = [float(x) for x in body["asc"].split(",")]
        desc = [float(x) for x in body["desc"].split(",")]
        assert len(asc) == 10 and asc == sorted(asc) and desc == sorted(asc, reverse=True)
        assert int(body["sw"]) <= width  # no sideways scroll
