"""report.html (and summary.md) rendered from toy runs: offline, escaped, complete."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from audit_core.run.reporting import RunView
from audit_core.testing import invoke, no_traceback
from audit_html_report import images, summary
from audit_html_report.html import HtmlParams, HtmlReport
from audit_html_report.markdown import render_markdown

EVIL = '<script>alert("caption")</script>'  # the members' captions (conftest.py)

# a resource reference to anything but a data: URI or a fragment: src/href/xlink:href/srcset/
# poster/action attributes and CSS url() / @import pointing at http(s) or protocol-relative URLs
REMOTE = re.compile(
    r"""(?:\b(?:src|href|srcset|poster|action|data)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:url\(\s*["']?\s*(?:https?:)?//)|(?:@import)""",
    re.I,
)


def html_of(run: Path) -> str:
    return (run / "report.html").read_text(encoding="utf-8")


def plots_in(html: str) -> int:
    return len(re.findall(r'<(?:svg|img) class="plot"', html))


def table_rows(html: str, table_id: str) -> int:
    m = re.search(rf'<table[^>]*id="{table_id}".*?<tbody>(.*?)</tbody>', html, re.S)
    assert m, f"no table {table_id}"
    return m.group(1).count("<tr")


@pytest.mark.parametrize("which", ["run_one", "run_four", "run_copyright", "run_sweep"])
def test_no_remote_resources_and_no_scripts(which, request):
    html = html_of(request.getfixturevalue(which))
    if which == "run_copyright":  # its one script, sorting the per-suspect table, allowed by its hash
        from audit_html_report.copyright import SORT_JS, script_csp

        assert html.count("<script") == 1 and f"<script>{SORT_JS}</script>" in html and script_csp() in html
        html = html.replace(f"<script>{SORT_JS}</script>", "")
    else:
        assert "script-src" not in html
    assert not REMOTE.search(html), REMOTE.search(html).group(0)
    assert not re.search(r"<script|<link\b|<iframe|<object|<embed|\bon\w+\s*=\s*[\"']", html, re.I)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    for src in re.findall(r'\bsrc="([^"]*)"', html):
        assert src.startswith("data:image/"), src[:60]


def test_one_attack(run_one):
    html = html_of(run_one)
    for section in ("verdict", "metrics", "roc", "histograms", "gallery", "attacks", "config", "environment"):
        assert f'id="{section}"' in html
    assert table_rows(html, "metrics-table") == 1
    assert plots_in(html) == 3  # ROC linear + log-log, one histogram
    assert html.count('src="data:image/png;base64,') == 36  # 12 gallery items x (original, reconstruction, residual)
    results = json.loads((run_one / "results.json").read_text())
    auc = results["attacks"]["variation-similarity"]["metrics"]["auc"]
    assert summary.num(auc["value"]) in html and summary.ci(auc) in html
    assert "TPR@0.1%FPR" in html and "unsupported" in html  # 10 non-members cannot resolve 0.1 %
    assert "tpr_at_1pct_fpr" not in html.split('id="metrics"')[1].split("</section>")[0]  # titles, not keys
    assert "resolved config" in html.lower() and "variation-similarity" in html
    assert (run_one / "summary.md").exists()
    assert len(html) < 3_000_000


def test_captions_and_names_are_escaped(run_one, run_four):
    html = html_of(run_one)
    assert "&lt;script&gt;alert(&#34;caption&#34;)&lt;/script&gt;" in html
    assert EVIL not in html and "<script" not in html.lower()
    four = html_of(run_four)
    assert "vs&lt;script&gt;d" in four and "<script" not in four.lower()
    md = (run_one / "summary.md").read_text(encoding="utf-8")
    assert "<script" not in md


def test_four_attacks(run_four):
    html = html_of(run_four)
    assert table_rows(html, "metrics-table") == 4
    assert plots_in(html) == 2 + 4
    for name in ("vs-a", "vs-b", "vs-c"):
        assert f"<strong>{name}</strong>" in html
    assert html.count("<summary>") >= 8  # a gallery and a details block per attack
    assert len(html) < 3_000_000


def section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}"[^>]*>(.*?)</section>', html, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


def test_verdict_comes_first_in_plain_language(run_one):
    html = html_of(run_one)
    body = html.split("<main>", 1)[1]
    assert body.index('id="verdict"') < body.index('id="metrics"')
    v = section(html, "verdict")
    assert re.search(r"<h2>(No e|E)vidence that these images were used in training</h2>", v)
    assert "What this means" in v and "What it does not mean" in v
    assert 'id="key-numbers"' in v and "attacks with evidence" in v


def test_unsupported_footnote_points_to_the_metric_notes(run_one):
    m = section(html_of(run_one), "metrics")
    assert "metrics.&lt;metric&gt;.note" in m and "results.json notes" not in m
    assert "TPR@0.1%FPR (variation-similarity): unsupported" in m  # the note itself, readable without hovering


def test_gallery_residuals_are_coloured_with_a_legend(run_one):
    html = html_of(run_one)
    g = section(html, "gallery")
    assert 'id="residual-scale"' in g and "linear-gradient" in g and "largest residual" in g
    uris = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="residual of', g)
    assert len(uris) == 12
    import numpy as np

    rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(uris[0]))).convert("RGB")).astype(int)
    assert (np.abs(rgb[..., 0] - rgb[..., 2]) > 20).any()  # the colour scale, not grey


def test_configuration_and_environment_are_readable_tables(run_one):
    html = html_of(run_one)
    for sid in ("config", "environment"):
        s = section(html, sid)
        assert '<table class="kv">' in s
        visible = re.sub(r"<details>.*?</details>", "", s, flags=re.S)  # the raw YAML stays, folded away
        assert "{&#34;" not in visible and '{"' not in visible  # no JSON dumps
    c = section(html, "config")
    assert "variation-similarity" in c and "t = 100 · k = 50 · n = 2" in c and "bootstrap resamples" in c
    assert "<h3>Packages</h3>" in section(html, "environment")


def test_audit_report_rerenders_without_attacks(run_one, copy_run):
    run = copy_run(run_one)
    before = html_of(run)
    scores = (run / "scores.csv").read_bytes()
    (run / "report.html").unlink()
    (run / "summary.md").unlink()
    code, output = invoke(["report", run])
    assert code == 0, output
    assert html_of(run) == before  # deterministic: same results, same file
    assert (run / "summary.md").exists()
    assert (run / "scores.csv").read_bytes() == scores


def test_audit_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hello")
    code, output = invoke(["report", tmp_path / "stuff"])
    assert code == 2 and no_traceback(output)
    assert not (tmp_path / "stuff" / "report.html").exists()


def test_copyright_mode(run_copyright):
    html = html_of(run_copyright)
    assert 'id="set-inference"' in html and table_rows(html, "set-inference-table") == 2
    assert "Combined (rank)" in html  # the rank combination is the default set test (issue 23)
    # the verdict once: the plain-language title, not the set tests' verdict sentences again
    results = json.loads((run_copyright / "results.json").read_text())
    # the title follows the run's three-way conclusion (issue 30)
    titles = {"evidence": "Evidence that these images were used in training",
              "no evidence": "No evidence that these images were used in training",
              "inconclusive": "Inconclusive: this comparison cannot tell whether these images were used in training"}
    want = titles[results["set_inference"]["combined"]["conclusion"]]
    assert f"<h2>{want}</h2>" in html and html.count(want) == 1
    for name, entry in results["set_inference"].items():  # combined's verdict opens with the title itself
        if name != "combined" and entry.get("verdict"):
            assert entry["verdict"][:40] not in html
    # 10 reference images cannot resolve alpha = 0.01: the warning is in the visible notes box
    notes = section(html, "notes")
    assert "too small for alpha" in notes and "(every attack)" in notes
    assert notes.count("too small for alpha") == 1
    assert "copyright-holder mode" in html and "10 suspects / 10 reference" in html
    assert "Score distributions: suspects vs reference" in html
    assert plots_in(html) == 2 + 2
    md = (run_copyright / "summary.md").read_text(encoding="utf-8")
    assert "## Set-level inference" in md and "| vs-a |" in md
    assert md.count(want) == 1 and "too small for alpha" in md


def test_sweep_ablation_section(run_sweep):
    html = html_of(run_sweep)
    results = json.loads((run_sweep / "results.json").read_text())
    sweep = results["sweeps"]["vs"]
    assert set(sweep["params"]) == {"t", "n"} and len(sweep["points"]) == 4
    assert 'id="ablations"' in html
    section = html.split('id="ablations"')[1].split("</section>")[0]
    assert plots_in(section) == 2 + 1  # one per swept param + AUC vs queries with the Pareto front
    assert section.count("<tr>") == 1 + 4
    assert "Pareto front" in section and "★" in section
    assert plots_in(html) == 2 + 4 + 3
    md = (run_sweep / "summary.md").read_text(encoding="utf-8")
    assert "## Ablations" in md and "Pareto" in md


def test_auc_vs_queries_curve_when_a_sweep_has_an_adaptive_budget(run_sweep, copy_run):
    assert 'id="queries-curve"' not in html_of(run_sweep)  # fixed budgets only: no curve
    run = copy_run(run_sweep)
    results = json.loads((run / "results.json").read_text())
    points = results["sweeps"]["vs"]["points"]
    for p in points:  # as a run with an adaptive entry writes them: metrics on its held-out images
        p["held_out"] = {"auc": {"value": 0.75, "ci95": [0.6, 0.9]}, "tpr_at_1pct_fpr": {"value": 0.1, "ci95": [0.0, 0.2]}}
    points[0]["queries_per_image_evaluation"] = 0.5
    points[0]["queries_histogram_evaluation"] = {"1": 3, "2": 1}
    (run / "results.json").write_text(json.dumps(results))
    html = HtmlReport(HtmlParams()).render_html(RunView(run))
    curve = html.split('id="queries-curve"')[1].split("</table>")[0]
    assert curve.count("<tr>") == 1 + 4 and curve.count("<td>adaptive</td>") == 1 and "1:3 2:1" in curve
    assert curve.index(points[0]["attack"]) < min(curve.index(p["attack"]) for p in points[1:])  # cheapest first
    md = render_markdown(results)
    assert "### AUC vs queries per image (same held-out images)" in md and "| adaptive | 0.50 |" in md


def test_missing_pieces_still_render(run_one, copy_run):
    run = copy_run(run_one)
    results = json.loads((run / "results.json").read_text())
    a = results["attacks"]["variation-similarity"]
    del a["metrics"]["asr"], a["roc"], a["calibrated"]
    a["metrics"]["auc"] = {"value": None}
    a["gallery"][0]["original"] = "../../../../../../etc/passwd"  # never read from outside the run
    a["gallery"][1]["reconstruction"] = "/etc/hostname"
    results["attacks"]["bare"] = {"plugin": "someone-elses"}
    del results["environment"]
    (run / "results.json").write_text(json.dumps(results))
    (run / "scores.csv").unlink()
    (run / "config.resolved.yaml").unlink()
    html = HtmlReport(HtmlParams()).render_html(RunView(run))
    assert "scores.csv is missing" in html and "config.resolved.yaml is missing" in html
    assert table_rows(html, "metrics-table") == 2
    assert "root:" not in html and html.count(">missing<") == 2
    assert plots_in(html) == 0


def test_reference_to_a_file_outside_the_run_is_not_embedded(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    Image.new("L", (4, 4), 128).save(tmp_path / "outside.png")
    Image.new("L", (4, 4), 128).save(run / "inside.png")
    assert images.data_uri(run, "inside.png")
    assert images.data_uri(run, "../outside.png") is None
    assert images.data_uri(run, str(tmp_path / "outside.png")) is None
    (run / "link.png").symlink_to(tmp_path / "outside.png")
    assert images.data_uri(run, "link.png") is None


def test_large_gallery_images_are_downsized(tmp_path):
    import numpy as np

    arr = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "big.png")
    uri = images.data_uri(tmp_path, "big.png", max_side=128)
    head, data = uri.split(",", 1)
    im = Image.open(io.BytesIO(base64.b64decode(data)))
    assert max(im.size) == 128 and len(uri) < 60_000


def test_both_reporters_are_listed_by_audit_plugins():
    from audit_core.plugin import manager as plugins

    listed = {p["name"]: p for p in plugins.get_plugins()}
    for name in ("html-report", "markdown-report", "evidence-report"):
        assert listed[name]["distribution"] == "audit-html-report" and listed[name]["hooks"] == ["register_reporters"]
    assert {"html-report", "markdown-report", "evidence-report"} <= set(plugins.registry("reporters"))


def test_params_are_validated():
    with pytest.raises(ValueError):
        HtmlParams(filename="../report.html")
    with pytest.raises(ValueError):
        HtmlParams(colour="red")


# ---------------------------------------------------------------------------------- verdicts
def _res(*aucs, mode="evaluation", tpr=None):
    attacks = {}
    for i, (v, lo, hi) in enumerate(aucs):
        m = {"auc": {"value": v, "ci95": [lo, hi]}}
        if tpr is not None:
            m["tpr_at_1pct_fpr"] = {"value": tpr[0], "ci95": list(tpr[1:]), "supported": True}
        attacks[f"a{i}"] = {"metrics": m}
    return {"run": {"mode": mode}, "attacks": attacks}


def _verdicts(r):
    return [summary.attack_verdict(n, a, r) for n, a in r["attacks"].items()]


def test_verdict_levels():
    r = _res((0.93, 0.9, 0.95), (0.52, 0.47, 0.57), (0.3, 0.25, 0.35), tpr=(0.4, 0.3, 0.5))
    v = _verdicts(r)
    assert [x["level"] for x in v] == ["leak", "none", "inverted"]
    assert "strongly" in v[0]["text"] and "40.0%" in v[0]["text"]
    head = summary.headline(r, v)
    assert head["level"] == "leak" and "1 of 3" in head["text"] and "a0" in head["text"]
    r2 = _res((0.52, 0.47, 0.57))
    assert summary.headline(r2, _verdicts(r2))["level"] == "none"


def test_copyright_verdict_uses_set_inference():
    r = _res((0.6, 0.4, 0.8), mode="copyright")
    r["set_inference"] = {
        "a0": {"p_value": 0.001, "alpha": 0.01, "effect_auc": 0.8, "flagged": 3, "n_suspects": 10},
        "combined": {"p_value": 0.001, "alpha": 0.01, "method": "bonferroni", "verdict": "Evidence that ..."},
    }
    v = _verdicts(r)
    assert v[0]["level"] == "evidence" and "3 of 10" in v[0]["text"]
    assert summary.headline(r, v)["level"] == "leak"
    r["set_inference"]["combined"]["p_value"] = 0.5
    assert summary.headline(r, v)["level"] == "none"


def test_markdown_escapes_user_strings():
    r = _res((0.9, 0.85, 0.95))
    r["attacks"]["x|<b>y</b>"] = r["attacks"].pop("a0")
    r["run"]["name"] = "n[a](https://example.com)"
    md = render_markdown(r)
    assert "x\\|&lt;b&gt;y&lt;/b&gt;" in md and "<b>" not in md and "](https" not in md


def test_a_failing_plot_leaves_a_note_not_a_broken_report(run_one, monkeypatch):
    from audit_html_report import plots

    def boom(*args):
        raise ValueError("odd data")

    monkeypatch.setattr(plots, "histogram", boom)
    html = HtmlReport(HtmlParams()).render_html(RunView(run_one))
    assert "the plot failed (ValueError: odd data)" in html and plots_in(html) == 2


def test_sweep_plots_with_categorical_values_and_missing_numbers():
    from audit_html_report import plots

    sweep = {
        "params": ["distance", "n"],
        "points": [
            {"attack": f"rd[distance={d},n={n}]", "values": {"distance": d, "n": n},
             "auc": {"value": 0.5 + 0.1 * n, "ci95": [0.4, 0.9]}, "tpr_at_1pct_fpr": {"value": None},
             "queries_per_image": 10 * n}
            for d in ("l1", "l2") for n in (1, 2)
        ],
        "pareto": ["rd[distance=l1,n=1]", "rd[distance=l1,n=2]"],
    }
    for p in ("distance", "n"):
        svg = plots.sweep_param_plot("rd", 0, sweep, p)
        assert svg.startswith('<svg class="plot"') and "l2" in svg and "<?xml" not in svg and "xmlns" not in svg
    assert plots.sweep_cost_plot("rd", 0, sweep).startswith('<svg class="plot"')
