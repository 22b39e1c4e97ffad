"""Copyright mode in report.html and summary.md (issue 30): the conclusion as the headline, in
its colour, with its reasons; the checks (shift check with its interval, data preflight, power
figure, split-reference check) above the per-suspect table; the table itself, one row per suspect
with thumbnail, file and per attack score, p-value and flag, sortable by its one hashed script.

The run is a real toy copyright run (conftest.py); the fields the shift-adjusted statistics add
(``conclusion``, ``reasons``, ``p_adjusted``, ``blind``, ``power``) are written into a copy of its
results.json and the report re-rendered, so each is pinned whatever the statistics decide."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import re

import pytest

from audit_core.run.reporting import RunView
from audit_html_report import summary
from audit_html_report.copyright import SORT_JS, script_csp
from audit_html_report.html import HtmlParams, HtmlReport
from audit_html_report.markdown import render_markdown


def _render(run) -> str:
    return HtmlReport(HtmlParams()).render_html(RunView(run))


def _with(copy_run, run, **combined):
    """A copy of ``run`` whose set_inference gets the given blocks (``combined`` keys merged)."""
    dest = copy_run(run)
    res = json.loads((dest / "results.json").read_text())
    si = res["set_inference"]
    for key in ("blind", "power", "sanity"):
        if key in combined:
            si[key] = combined.pop(key)
    si["combined"].update(combined)
    (dest / "results.json").write_text(json.dumps(res))
    return dest, res


def test_every_suspect_has_a_row_with_thumbnail_file_and_per_attack_numbers(run_copyright):
    html = _render(run_copyright)
    table = re.search(r'<table[^>]*id="suspects-table".*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
    with open(run_copyright / "scores.csv", newline="") as fh:
        scores = [r for r in csv.DictReader(fh) if r["label"] == "suspect"]
    ids = {r["image_id"] for r in scores}
    assert len(rows) == len(ids) == 10
    for row in rows:
        assert row.count('src="data:image/png;base64,') == 1  # the thumbnail, from the run directory
        assert row.count('data-label="vs-a: p-value"') == 1 and row.count('data-label="vs-b: flagged"') == 1
    # the numbers are scores.csv's: every suspect's p-value under vs-a appears in its row
    for r in scores:
        if r["attack"] == "vs-a":
            assert f'data-v="{float(r["p_value"])!r}"' in table
    # most member-like first: vs-a's p-values ascend down the table
    ps = [float(x) for x in re.findall(r'data-label="vs-a: p-value" data-v="([^"]+)"', table)]
    assert ps == sorted(ps)
    # sortable headers: file, then score / p-value / flagged per attack, indices matching the cells
    assert re.findall(r'data-col="(\d+)"', html) == [str(i) for i in range(7)]


def test_the_one_script_is_allowed_by_its_hash_and_nothing_else(run_copyright):
    html = _render(run_copyright)
    digest = base64.b64encode(hashlib.sha256(SORT_JS.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in html and script_csp() in html
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert scripts == [SORT_JS]
    assert "'unsafe-inline'" not in html.split("script-src")[1].split('"')[0]


@pytest.mark.parametrize("said, level, title", [
    ("evidence", "leak", "Evidence that these images were used in training"),
    ("no evidence", "none", "No evidence that these images were used in training"),
    ("inconclusive", "inconclusive", summary.INCONCLUSIVE),
])
def test_the_conclusion_is_the_headline_in_its_colour_with_its_reasons(copy_run, run_copyright, said, level, title):
    reasons = [f"reason one for {said}", "reason <two>"]
    run, _ = _with(copy_run, run_copyright, conclusion=said, reasons=reasons)
    html = _render(run)
    assert f'<section id="verdict" class="card verdict {level}">' in html
    assert f"<h2>{title}</h2>" in html
    listed = re.search(r'<ul class="reasons" id="reasons">(.*?)</ul>', html, re.S).group(1)
    assert f"reason one for {said}" in listed and "reason &lt;two&gt;" in listed
    md = render_markdown(json.loads((run / "results.json").read_text()))
    assert {"leak": "🔴", "none": "🟢", "inconclusive": "🟠"}[level] in md and f"- reason one for {said}" in md


def test_inconclusive_says_what_to_do_next_and_wins_over_a_small_p(copy_run, run_copyright):
    run, res = _with(copy_run, run_copyright, p_value=1e-4, conclusion="inconclusive", reasons=["images alone separate the sets"])
    plain = summary.plain_verdict(res, [summary.attack_verdict(n, a, res) for n, a in res["attacks"].items()])
    assert plain["level"] == "inconclusive" and "closer to the suspects" in plain["means"] and "audit reference check" in plain["means"]
    assert "Evidence that" not in _render(run).split('id="notes"')[0]


def test_checks_above_the_table_shift_with_interval_preflight_power_sanity(copy_run, run_copyright):
    run, _ = _with(
        copy_run, run_copyright, p_adjusted=0.38,
        blind={"auc": 0.97, "ci": [0.93, 1.0], "method": "tiny CNN on 32x32 images + statistics", "folds": 5, "overlap": 0.1},
        power={"images_needed": 14, "assumption": "a per-image AUC of 0.75 against this reference", "source": "assumed"},
        sanity={"conclusion": "no evidence", "passed": True, "p_value": 0.42, "note": "passed: ..."},
    )
    html = _render(run)
    checks = html.split('id="checks"')[1].split('id="suspects"')[0]
    assert checks.index('id="shift-check"') < checks.index('id="power"')  # all of them above the table
    shift = checks.split('id="shift-check"')[1].split("</div>")[0]
    assert "AUC 0.97" in shift and "95% interval [0.93, 1.00]" in shift and "5-fold cross-fitted" in shift
    assert 'class="check leak" id="shift-check"' in checks  # the images alone separate the sets: red
    assert "about 14" in checks and "a per-image AUC of 0.75" in checks
    assert 'id="preflight"' in checks and "file format" in checks
    assert 'id="sanity"' in checks and "Split-reference check: passed" in checks
    assert "shift-adjusted p = <strong>0.38</strong>" in html


def test_an_older_copyright_run_still_renders_its_power_and_no_table_without_scores(copy_run, run_copyright):
    run = copy_run(run_copyright)
    res = json.loads((run / "results.json").read_text())
    del res["set_inference"]["preflight"]
    for key in ("power", "blind"):  # an older run: no power block of its own, the resampled estimate in combined
        res["set_inference"].pop(key, None)
    res["set_inference"]["combined"]["power"] = {"power_by_set_size": {"5": 0.5, "10": 0.85}, "smallest_set_size": 10,
                                                  "alpha": 0.05, "target_power": 0.8, "note": "resampled"}
    (run / "results.json").write_text(json.dumps(res))
    html = _render(run)
    assert 'id="verdict"' in html and 'id="preflight"' not in html
    assert 'id="power"' in html and "resampling the suspects" in html  # the old estimate, labelled as such
    (run / "scores.csv").unlink()
    html = _render(run)
    assert 'id="suspects-table"' not in html and "<script" not in html and "script-src" not in html
