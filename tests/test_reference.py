"""`audit reference build` with a registered test generator, and the copyright report's
reference block (provenance + model-free shift check)."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from audit_core import hookimpl
from audit_core.plugin.generators import Generator, GeneratorParams
from audit_core.base.records import ImageRecord
from audit_core.copyright.shift import shift_check
from audit_core.testing import no_traceback, write_images


class CountingParams(GeneratorParams):
    brightness: int = 128
    fail_after: int = -1  # raise after this many images (a build killed mid-way)
    max_batch: int = 2


class CountingGenerator(Generator):
    """Grey noise images whose pixels depend only on (prompt, seed); counts what it generates."""

    name = "counting"
    Params = CountingParams
    calls: list[tuple[str, int]] = []

    def generate(self, prompts, seeds):
        out = []
        for p, s in zip(prompts, seeds):
            if 0 <= self.params.fail_after <= len(CountingGenerator.calls):
                raise KeyboardInterrupt  # what a kill looks like from inside
            CountingGenerator.calls.append((p, s))
            rng = np.random.default_rng([s % (2**32), len(p)])
            arr = np.clip(rng.normal(self.params.brightness, 20, (8, 8, 3)), 0, 255).astype(np.uint8)
            out.append(Image.fromarray(arr))
        return out


class GenPlugin:
    @hookimpl
    def register_generators(self, register):
        register(CountingGenerator)


@pytest.fixture
def gen_plugin(register_plugin, monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    CountingGenerator.calls = []
    return register_plugin(GenPlugin(), name="test-generators")


def _captions(tmp_path, n=3):
    p = tmp_path / "suspects.csv"
    p.write_text("path,caption\n" + "".join(f"s{i}.png,caption number {i}\n" for i in range(n)))
    return p


def test_build_writes_images_manifest_and_state(gen_plugin, audit_cli, tmp_path):
    caps = _captions(tmp_path)
    out = tmp_path / "ref"
    code, text = audit_cli("reference", "build", "--captions", caps, "--generator", "counting", "--out", out, "--per-caption", "2", "--seed", "7")
    assert code == 0, text
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert [r["source_caption_id"] for r in rows] == ["s0.png", "s0.png", "s1.png", "s1.png", "s2.png", "s2.png"]
    assert list(rows[0]) == ["path", "caption", "source_caption_id", "generator"]
    assert all((out / r["path"]).is_file() for r in rows) and rows[2]["caption"] == "caption number 1"
    state = json.loads((out / "reference.json").read_text())
    assert state["generator"] == "counting" and state["per_caption"] == 2 and state["finished"]
    assert len(CountingGenerator.calls) == 6 and len({s for _, s in CountingGenerator.calls}) == 6
    # seeded: another folder, same settings, no cache -> byte-identical images
    code, _ = audit_cli("reference", "build", "--captions", caps, "--generator", "counting", "--out", tmp_path / "ref2",
                        "--per-caption", "2", "--seed", "7", "--no-cache")
    assert code == 0
    assert all((out / r["path"]).read_bytes() == (tmp_path / "ref2" / r["path"]).read_bytes() for r in rows)
    # cached: a third folder with the cache costs no generation
    n = len(CountingGenerator.calls)
    code, text = audit_cli("reference", "build", "--captions", caps, "--generator", "counting", "--out", tmp_path / "ref3",
                           "--per-caption", "2", "--seed", "7")
    assert code == 0 and len(CountingGenerator.calls) == n and "6 from the cache" in " ".join(text.split())


def test_interrupted_build_resumes_without_regenerating(gen_plugin, audit_cli, tmp_path):
    caps = _captions(tmp_path, 4)
    out = tmp_path / "ref"
    code, _ = audit_cli("reference", "build", "--captions", caps, "--generator", "counting", "--out", out, "--no-cache",
                        "--param", "fail_after=3")
    assert code != 0 and not (out / "manifest.csv").exists()
    done = sorted(p.name for p in (out / "images").glob("*.png"))
    assert len(done) == 2  # written in batches of 2: the third image's batch never completed
    before = {p: (out / "images" / p).stat().st_mtime_ns for p in done}
    CountingGenerator.calls = []  # the same settings again (fail_after counts this run's images only)
    code, text = audit_cli("reference", "build", "--captions", caps, "--generator", "counting", "--out", out, "--no-cache",
                           "--param", "fail_after=3")
    assert code == 0, text
    assert len(CountingGenerator.calls) == 2 and "2 done earlier, 2 generated now" in " ".join(text.split())
    assert {p: (out / "images" / p).stat().st_mtime_ns for p in done} == before  # never rewritten
    assert len(list(csv.DictReader(open(out / "manifest.csv")))) == 4


def test_bad_inputs_exit_2_before_generating(gen_plugin, audit_cli, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("path,caption\na.png,\n")
    code, text = audit_cli("reference", "build", "--captions", empty, "--generator", "counting", "--out", tmp_path / "r")
    assert code == 2 and "line 2" in text and "caption is empty" in text and no_traceback(text)
    caps = _captions(tmp_path)
    code, text = audit_cli("reference", "build", "--captions", caps, "--generator", "nope", "--out", tmp_path / "r")
    assert code == 2 and "counting" in text and no_traceback(text)
    code, text = audit_cli("reference", "build", "--captions", caps, "--generator", "counting", "--out", tmp_path / "r", "--param", "colour=3")
    assert code == 2 and "colour" in text
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("not yours")
    code, text = audit_cli("reference", "build", "--captions", caps, "--generator", "counting", "--out", tmp_path / "busy")
    assert code == 2 and "not a reference set" in text and (tmp_path / "busy" / "mine.txt").read_text() == "not yours"
    assert CountingGenerator.calls == []
    code, _ = audit_cli("reference", "build", "--captions", caps, "--generator", "counting", "--out", tmp_path / "r", "--seed", "1")
    assert code == 0
    code, text = audit_cli("reference", "build", "--captions", caps, "--generator", "counting", "--out", tmp_path / "r", "--seed", "2")
    assert code == 2 and "seed" in text


def _records(folder, label, brightness, n, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        arr = np.clip(rng.normal(brightness, rng.uniform(10, 40), (16, 16, 3)), 0, 255).astype(np.uint8)
        p = folder / f"{i}.png"
        Image.fromarray(arr).save(p)
        out.append(ImageRecord(id=f"{folder.name}/{i}", path=str(p), label=label))
    return out


def test_shift_check_sees_an_easy_reference_and_not_a_matched_one(tmp_path):
    same = _records(tmp_path / "a", 1, 120, 20, 1) + _records(tmp_path / "b", 0, 120, 20, 2)
    shifted = _records(tmp_path / "c", 1, 120, 20, 3) + _records(tmp_path / "d", 0, 200, 20, 4)
    matched, easy = shift_check(same), shift_check(shifted)
    print("shift-check AUC matched:", matched["auc"], "shifted:", easy["auc"])
    assert easy["auc"] > 0.9 and "tell the suspects from the reference" in easy["note"]
    assert matched["auc"] < 0.8


def test_copyright_run_reports_generator_and_shift_check(gen_plugin, toy_plugin, write_config, audit_cli, tmp_path):
    sus = tmp_path / "suspects"
    write_images(sus, 10, seed=1)
    caps = tmp_path / "suspects.csv"
    caps.write_text("path,caption\n" + "".join(f"suspects/{p.name},photo {i}\n" for i, p in enumerate(sorted(sus.iterdir()))))
    code, text = audit_cli("reference", "build", "--captions", caps, "--generator", "counting", "--out", tmp_path / "ref",
                           "--param", "brightness=230")
    assert code == 0, text
    cfg = write_config({
        "run": {"name": "cr", "seed": 0, "device": "cpu"}, "target": {"plugin": "toy"},
        "data": {"suspects": str(caps), "reference": str(tmp_path / "ref" / "manifest.csv")},
        "attacks": [{"plugin": "naive-loss", "params": {"t": 100}}], "cache": {"enabled": False},
        "metrics": {"bootstrap": 20}, "reports": [{"plugin": "html-report"}],
    })
    code, text = audit_cli("run", cfg, "--output", tmp_path / "run")
    assert code == 0, text
    ref = json.loads((tmp_path / "run" / "results.json").read_text())["reference"]
    assert ref["generated"] is True and ref["generator"] == "counting" and ref["generated_at"]
    assert "differ in distribution" in ref["warning"]
    assert ref["shift_check"]["auc"] > 0.9  # bright noise vs the toy images: trivially told apart
    # issue 30: a reference made by `audit reference build` that the images alone tell apart is never
    # "evidence", whatever the attack's p-value
    si = json.loads((tmp_path / "run" / "results.json").read_text())["set_inference"]
    assert si["combined"]["conclusion"] == "inconclusive" and si["blind"]["auc"] >= 0.8
    assert any("audit reference check" in r for r in si["combined"]["reasons"])
    flat = " ".join(text.split())
    assert "generated by counting" in flat and "Shift check" in flat
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Reference generated" in html and "Shift check" in html
