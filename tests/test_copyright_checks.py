"""Copyright mode's checks around the set-level test (issue 30): the data preflight before any
query, the split-reference sanity check (``audit reference check`` and ``inference.sanity``), and
the terminal's last lines (conclusion, p-values, shift check with its interval, power, report).

The statistics are the real ones on the toy target; the attacks are stand-ins whose separation
the tests control (mean brightness of the image as the score)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from audit_core import hookimpl
from audit_core.plugin.attacks import Attack, AttackOutput
from audit_core.run.data_preflight import compare, describe, jpeg_quality, preflight
from audit_core.base.records import ImageRecord
from audit_core.run.sanity import first_half, outcome
from audit_core.testing import no_traceback

CALLS: list[int] = []  # images scored by the recording attack, per batch


class Brightness(Attack):
    """Score = mean pixel value; records every batch it scores (so a test can see no query ran)."""

    name = "brightness-rec"

    def score(self, batch):
        CALLS.append(len(batch.images))
        return AttackOutput(scores=batch.images.flatten(1).mean(1))


class Plugin:
    @hookimpl
    def register_attacks(self, register):
        register(Brightness)


def _images(folder: Path, n: int, seed: int, fmt: str = "PNG", sizes=((8, 8),), low: int = 0, high: int = 256, quality: int = 75) -> Path:
    """``n`` noise images (seeded per image), cycling through ``sizes``, saved as ``fmt``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        rng = np.random.default_rng([seed, i])
        im = Image.fromarray(rng.integers(low, high, size=(h, w, 3), dtype=np.uint8))
        im.save(folder / f"img{i:04d}.{ext}", **({"quality": quality} if fmt == "JPEG" else {}))
    return folder


@pytest.fixture
def config(toy_plugin, register_plugin, write_config):
    register_plugin(Plugin(), name="brightness-rec-plugin")
    CALLS.clear()

    def make(suspects: Path, reference: Path, **inference):
        return write_config({
            "run": {"name": "checks", "seed": 3, "device": "cpu", "batch_size": 16},
            "target": {"plugin": "toy"},
            "data": {"suspects": str(suspects), "reference": str(reference)},
            "attacks": [{"plugin": "brightness-rec"}],
            "cache": {"enabled": False},
            "metrics": {"bootstrap": 20},
            "inference": {"alpha": 0.05, **inference},
            "reports": [{"plugin": "html-report"}],
        })

    return make


# ================================================================= the data preflight
@pytest.mark.parametrize("quality", [20, 50, 75, 90, 95])
def test_jpeg_quality_is_read_back_from_the_quantisation_tables(quality, tmp_path):
    from PIL import Image

    path = tmp_path / "x.jpg"
    Image.fromarray(np.random.default_rng(quality).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path, quality=quality)
    with Image.open(path) as im:
        assert jpeg_quality(im.quantization) == quality
    assert describe(ImageRecord(id="x", path=str(path)))["quality"] == quality
    assert jpeg_quality(None) is None and jpeg_quality({}) is None


def test_preflight_names_every_difference_of_jpegs_of_mixed_sizes_against_pngs(tmp_path):
    sus = _images(tmp_path / "s", 10, 1, "JPEG", sizes=((40, 30), (64, 64), (23, 31)), quality=70)
    ref = _images(tmp_path / "r", 30, 2, "PNG", sizes=((32, 32),))
    recs = [ImageRecord(id=f"s{i}", path=str(p), label=1) for i, p in enumerate(sorted(sus.iterdir()))]
    recs += [ImageRecord(id=f"r{i}", path=str(p), label=0) for i, p in enumerate(sorted(ref.iterdir()))]
    block = preflight(recs)
    text = " | ".join(block["warnings"])
    assert "file format differs: suspects JPEG 100%; reference PNG 100%" in text
    assert "pixel size differs: suspects 3 sizes from 23x31 to 64x64; reference 32x32" in text
    assert "only the suspects are JPEG-compressed (100% of them, quality about 70)" in text
    assert block["suspects"]["formats"] == {"JPEG": 10} and block["reference"]["sizes"]["distinct"] == 1
    assert block["suspects"]["jpeg_quality"]["median"] == 70


def test_preflight_is_quiet_for_alike_sets_and_catches_quality_size_mode_and_depth(tmp_path):
    from PIL import Image

    d = lambda **kw: {"format": "PNG", "mode": "RGB", "bits": 8, "width": 64, "height": 64, "quality": None, **kw}  # noqa: E731
    assert compare([d()] * 10, [d()] * 30) == []
    jpg = lambda q: d(format="JPEG", quality=q)  # noqa: E731
    assert any("JPEG quality differs: suspects about 60; reference about 95" in w for w in compare([jpg(60)] * 8, [jpg(95)] * 20))
    assert compare([jpg(90)] * 8, [jpg(95)] * 20) == []  # within QUALITY_GAP
    assert any("pixel size differs" in w and "4x apart" in w for w in compare([d(width=128, height=128)] * 8, [d()] * 20))
    assert any(w.startswith("image mode differs: suspects L 100%") for w in compare([d(mode="L")] * 8, [d()] * 20))
    assert any(w.startswith("bit depth differs: suspects 16 100%") for w in compare([d(bits=16)] * 8, [d()] * 20))
    assert compare([d(mode="L")] + [d()] * 9, [d()] * 20) == []  # 10 %: below MISMATCH
    # a 16-bit RGB PNG is 16 bits deep even though Pillow opens it as 8-bit RGB
    path = tmp_path / "deep.png"
    Image.fromarray(np.zeros((4, 4), dtype=np.uint16)).save(path)
    assert describe(ImageRecord(id="d", path=str(path)))["bits"] == 16


def test_the_issues_jpeg_case_warns_before_scoring(config, audit_cli, tmp_path):
    """True members saved as JPEGs of mixed sizes against a PNG reference: the warning is printed
    before the first image is scored, kept in results.json and shown in the report."""
    sus = _images(tmp_path / "s", 12, 1, "JPEG", sizes=((12, 12), (20, 16), (9, 14)), low=60)
    ref = _images(tmp_path / "r", 40, 2, "PNG")
    out = tmp_path / "run"
    code, text = audit_cli("run", config(sus, ref), "--output", out)
    assert code == 0, text
    lines = text.splitlines()
    warn = [i for i, ln in enumerate(lines) if "preflight: file format differs" in ln]
    scored = [i for i, ln in enumerate(lines) if ln.startswith("brightness-rec: ")]
    assert warn and scored and warn[0] < scored[0], text
    pre = json.loads((out / "results.json").read_text())["set_inference"]["preflight"]
    assert any(w.startswith("file format differs") for w in pre["warnings"])
    assert any(w.startswith("pixel size differs") for w in pre["warnings"])
    assert pre["suspects"]["n"] == 12 and pre["reference"]["formats"] == {"PNG": 40}
    html = (out / "report.html").read_text()
    assert 'id="preflight"' in html and "file format differs" in html


def test_strict_preflight_stops_before_any_query_naming_the_mismatch(config, audit_cli, tmp_path):
    sus = _images(tmp_path / "s", 6, 1, "JPEG", sizes=((12, 12), (20, 16)))
    ref = _images(tmp_path / "r", 20, 2, "PNG")
    out = tmp_path / "run"
    code, text = audit_cli("run", config(sus, ref, strict_preflight=True), "--output", out)
    assert code == 2, text
    assert "inference.strict_preflight" in text and "file format differs: suspects JPEG 100%; reference PNG 100%" in text
    assert no_traceback(text) and CALLS == [] and not (out / "results.json").exists() and not (out / "state.sqlite").exists()
    # alike sets pass the strict preflight
    same = _images(tmp_path / "s2", 6, 3, "PNG")
    code, text = audit_cli("run", config(same, ref, strict_preflight=True), "--output", tmp_path / "run2")
    assert code == 0, text
    assert json.loads((tmp_path / "run2" / "results.json").read_text())["set_inference"]["preflight"]["warnings"] == []


# ================================================================= the split-reference check
def test_halves_are_seeded_exact_and_independent_of_order():
    ids = [f"img{i}" for i in range(101)]
    a = first_half(ids, 0)
    assert len(a) == 50 and a == first_half(list(reversed(ids)), 0)
    assert a != first_half(ids, 1)
    assert first_half(ids[:2], 0) < set(ids[:2])


def test_outcome_passes_only_above_alpha():
    block = {"x": {"p_value": 0.2, "n_suspects": 5, "n_reference": 5}, "combined": {"p_value": 0.3, "method": "rank"}}
    assert outcome(block, 0.05)["passed"] is True and outcome(block, 0.05)["conclusion"] == "no evidence"
    block["combined"]["p_value"] = 0.01
    r = outcome(block, 0.05)
    assert r["passed"] is False and r["conclusion"] == "evidence" and "not trustworthy" in r["note"]
    # combine: none -> Bonferroni over the attacks
    r = outcome({"x": {"p_value": 0.03}, "y": {"p_value": 0.5}, "combined": {"p_value": None, "method": "none"}}, 0.05)
    assert r["p_value"] == pytest.approx(0.06) and r["passed"] is True


def test_reference_check_passes_on_one_source_and_fails_when_the_halves_differ(config, audit_cli, tmp_path):
    sus = _images(tmp_path / "s", 8, 1, "PNG")
    ref = _images(tmp_path / "r", 60, 2, "PNG")
    code, text = audit_cli("reference", "check", config(sus, ref), "--output", tmp_path / "check")
    assert code == 0, text
    assert "Reference check passed" in " ".join(text.split())
    res = json.loads((tmp_path / "check" / "results.json").read_text())
    assert (res["run"]["n_suspects"], res["run"]["n_reference"]) == (30, 30)  # the reference alone, halved
    assert CALLS and sum(CALLS) == 60  # only the reference was scored

    # a reference made of two sources (dark and bright images) that the seeded split happens to
    # separate: the halves differ, so the check must fail
    mixed = tmp_path / "mixed"
    from PIL import Image

    half = first_half([f"reference/img{i:04d}.png" for i in range(60)], 3)  # ids as the folder loader makes them
    mixed.mkdir()
    for i in range(60):
        rid = f"reference/img{i:04d}.png"
        rng = np.random.default_rng([7, i])
        lo = 120 if rid in half else 0
        Image.fromarray(rng.integers(lo, lo + 136, size=(8, 8, 3), dtype=np.uint8)).save(mixed / f"img{i:04d}.png")
    code, text = audit_cli("reference", "check", config(sus, mixed), "--output", tmp_path / "check2")
    flat = " ".join(text.split())
    assert code == 1, text
    assert "Reference check FAILED" in flat and "not trustworthy" in flat and no_traceback(text)


def test_reference_check_refuses_an_evaluation_config(config, audit_cli, tmp_path):
    import yaml

    path = config(_images(tmp_path / "s", 4, 1), _images(tmp_path / "r", 4, 2))
    cfg = yaml.safe_load(path.read_text())
    cfg["data"] = {"members": cfg["data"]["suspects"], "nonmembers": cfg["data"]["reference"]}
    path.write_text(yaml.safe_dump(cfg))
    code, text = audit_cli("reference", "check", path)
    assert code == 2 and "evaluation mode" in text and no_traceback(text) and CALLS == []


def test_sanity_in_a_run_matches_the_standalone_check(config, audit_cli, tmp_path):
    sus = _images(tmp_path / "s", 10, 1, "PNG", low=40)
    ref = _images(tmp_path / "r", 50, 2, "PNG")
    cfg = config(sus, ref, sanity=True)
    code, text = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, text
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    inside = res["set_inference"]["sanity"]
    assert inside["conclusion"] in ("no evidence", "evidence") and inside["n_suspects"] == 25 and inside["n_reference"] == 25
    assert "Reference check" in text
    code, text = audit_cli("reference", "check", cfg, "--output", tmp_path / "check")
    alone = json.loads((tmp_path / "check" / "results.json").read_text())["set_inference"]
    assert alone["combined"]["p_value"] == inside["p_value"]  # same split, same scores, same test
    assert alone["brightness-rec"]["p_value"] == inside["attacks"]["brightness-rec"]["p_value"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert 'id="sanity"' in html


# ================================================================= the terminal's last lines
def test_copyright_terminal_ends_with_conclusion_p_values_shift_power_and_report(config, audit_cli, tmp_path):
    sus = _images(tmp_path / "s", 12, 1, "PNG", low=80)
    ref = _images(tmp_path / "r", 40, 2, "PNG")
    code, text = audit_cli("run", config(sus, ref), "--output", tmp_path / "run")
    assert code == 0, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    tail = lines[-6:]
    assert tail[0].startswith("Conclusion: "), tail
    assert tail[1].startswith("p-values: combined (rank) p = ") and "brightness-rec p = " in tail[1]
    assert tail[2].startswith("Shift check: ") and re.search(r"AUC \d\.\d\d", tail[2])
    assert tail[3].startswith("Power: ")
    assert tail[4].startswith("Run directory: ") and tail[5].startswith("Report: ") and tail[5].endswith("report.html")
    # no evaluation-metrics table in copyright mode (its ASR on suspects vs reference would mislead)
    assert "checks (copyright mode)" not in text and "TPR@1%" not in text and "TPR@.1%" not in text
    assert "Evaluation metrics (AUC, ASR, TPR@FPR of suspects vs reference) are not shown" in " ".join(text.split())


def test_last_lines_follow_the_conclusion_and_the_new_fields():
    """Fields the shift-adjusted statistics write (conclusion, reasons, p_adjusted, blind, power)."""
    from audit_core.run.console import copyright_last_lines

    results = {
        "run": {"mode": "copyright"},
        "set_inference": {
            "pia": {"p_value": 1e-9, "p_adjusted": 0.41, "alpha": 0.01},
            "combined": {"method": "rank", "p_value": 1e-4, "p_adjusted": 0.38, "alpha": 0.01,
                         "conclusion": "inconclusive", "reasons": ["images alone separate the sets", "adjusted p = 0.38"]},
            "blind": {"auc": 0.97, "ci": [0.93, 1.0], "method": "tiny CNN + statistics", "folds": 5, "overlap": 0.12},
            "power": {"images_needed": 14, "assumption": "per-image AUC 0.75 assumed", "source": "assumed"},
            "preflight": {"warnings": [], "suspects": {}, "reference": {}},
        },
        "reference": {"shift_check": {"auc": 0.95, "note": "..."}},
    }
    lines = copyright_last_lines(results)
    assert lines[0] == "Conclusion: INCONCLUSIVE: images alone separate the sets; adjusted p = 0.38"
    assert lines[1] == "p-values: combined (rank) p = 0.0001, shift-adjusted p = 0.38; pia p = 1e-09 (adjusted 0.41)"
    assert lines[2].startswith("Shift check: images alone tell suspects from reference with AUC 0.97 [0.93, 1.00]")
    assert "image statistics: AUC 0.95" in lines[2] and "common support with the reference 0.12" in lines[2]
    assert lines[3] == "Power: about 14 true members would be needed for evidence at this alpha (per-image AUC 0.75 assumed; source: assumed)"
    # an older run (no conclusion): evidence from p <= alpha, and the preflight never counts as an attack
    del results["set_inference"]["combined"]["conclusion"]
    assert copyright_last_lines(results)[0].startswith("Conclusion: EVIDENCE: combined p = 0.0001 <= alpha = 0.01")
