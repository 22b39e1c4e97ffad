"""Parameter sweeps (audit_core.run.sweeps): expansion and naming, query sharing (an n-sweep costs its
largest n), equality with plain runs, t/k sweeps, the results.json ``sweeps`` block, `audit sweep`,
the html-report ablation section, and the ReDiffuse demo (when the demo model is present)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from audit_core.run import sweeps
from audit_core.base.config import load_config_text
from audit_core.base.errors import ConfigError
from audit_core.run.reporting import sweeps_markdown
from audit_core.testing import no_traceback

N_IMAGES = 4  # per class


@pytest.fixture
def sweep_config(toy_plugin, image_folder, write_config, tmp_path):
    members = image_folder("members", n=N_IMAGES, seed=1)
    nonmembers = image_folder("nonmembers", n=N_IMAGES, seed=2)

    def make(attacks, cache=False, name="audit.yaml", reports=None):
        cfg = {
            "run": {"name": "toy", "seed": 3, "device": "cpu", "batch_size": 3},
            "target": {"plugin": "toy-variation", "shift": 0.3},
            "data": {"members": str(members), "nonmembers": str(nonmembers)},
            "attacks": attacks,
            "cache": {"enabled": True, "dir": str(tmp_path / "qcache")} if cache else {"enabled": False},
            "metrics": {"bootstrap": 20},
        }
        if reports:
            cfg["reports"] = reports
        return write_config(cfg, name)

    return make


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _scores(run_dir: Path, attack: str) -> dict[str, float]:
    with open(run_dir / "scores.csv", newline="") as fh:
        return {r["image_id"]: float(r["score"]) for r in csv.DictReader(fh) if r["attack"] == attack}


VS = "variation-similarity"


# ------------------------------------------------------------------------------ expansion


class _Params(BaseModel):
    t: int = 100
    n: int = 2
    sizes: list[int] = [8]


class _Cls:
    Params = _Params


def _expand(params: dict, **extra):
    text = "target: {plugin: toy}\ndata: {members: m, nonmembers: n}\nattacks:\n  - {plugin: vs, params: %s}\n" % json.dumps(params)
    loaded = load_config_text(text, "audit.yaml", Path("."))
    acfg = loaded.cfg.attacks[0].model_copy(update=extra)
    return sweeps.expand([acfg], lambda i, a: _Cls, loaded)


def test_expansion_names_grid_points_and_shares_the_seed_key():
    sw, entries = _expand({"n": [1, 2, 5, 10], "t": [50, 100]})
    names = [e.key for _, e in entries]
    assert names[:3] == ["vs[n=1,t=50]", "vs[n=1,t=100]", "vs[n=2,t=50]"] and len(names) == 8
    assert {e.seed_key for _, e in entries} == {"vs"}
    assert entries[3][1].params == {"n": 2, "t": 100}
    assert sw["vs"].params == ["n", "t"] and len(sw["vs"].points) == 8
    # a named entry: the name is the base and the seed key; an explicit seed_key wins
    _, entries = _expand({"n": [1, 2]}, name="rd", seed_key="shared")
    assert [e.key for _, e in entries] == ["rd[n=1]", "rd[n=2]"]
    assert {e.seed_key for _, e in entries} == {"shared"}


def test_expansion_escape_for_list_typed_params_and_errors():
    # a list-typed param keeps a plain list as its value; {sweep: [...]} sweeps it
    sw, entries = _expand({"sizes": [8, 16]})
    assert not sw and entries[0][1].params == {"sizes": [8, 16]}
    sw, entries = _expand({"sizes": {"sweep": [[8, 16], [32]]}, "n": {"sweep": [3]}})
    assert [e.key for _, e in entries] == ["vs[sizes=[8,16],n=3]", "vs[sizes=[32],n=3]"]
    assert entries[1][1].params == {"sizes": [32], "n": 3}
    with pytest.raises(ConfigError, match=r"attacks\[0\]\.params\.n \(audit\.yaml, line 4\).*at least one value"):
        _expand({"n": []})
    with pytest.raises(ConfigError, match="appear twice"):
        _expand({"n": [1, 1]})
    with pytest.raises(ConfigError, match="sweep form"):
        _expand({"n": {"sweep": 3}})
    # a plain entry passes through untouched
    sw, entries = _expand({"n": 3})
    assert not sw and entries[0][1].name is None


def test_execution_order_runs_largest_values_first_but_results_keep_config_order():
    class PA:
        def __init__(self, name, seed_key):
            self.name, self.seed_key = name, seed_key

    sw, entries = _expand({"n": [1, 2, 5, 10]})
    pas = [PA("plain", "plain")] + [PA(e.key, e.seed_key) for _, e in entries] + [PA("last", "last")]
    order = [pa.name for pa in sweeps.execution_order(pas, sw)]
    assert order == ["plain", "vs[n=10]", "vs[n=5]", "vs[n=2]", "vs[n=1]", "last"]


def test_pareto_front():
    pts = [
        {"attack": "a", "auc": {"value": 0.6}, "queries_per_image": 1},
        {"attack": "b", "auc": {"value": 0.7}, "queries_per_image": 2},
        {"attack": "c", "auc": {"value": 0.65}, "queries_per_image": 5},  # dominated by b
        {"attack": "d", "auc": {"value": 0.8}, "queries_per_image": 10},
    ]
    assert sweeps.pareto_front(pts) == ["a", "b", "d"]


def test_param_option_parsing():
    assert sweeps.parse_param_option("rediffuse.n=1,2,5,10") == ("rediffuse", "n", [1, 2, 5, 10])
    assert sweeps.parse_param_option("my.attack.distance=l1, l2") == ("my.attack", "distance", ["l1", "l2"])
    assert sweeps.parse_param_option("a.sizes=[[8, 16], [32]]") == ("a", "sizes", [[8, 16], [32]])
    for bad in ("rediffuse.n", "n=1,2", "rediffuse.n=", "rediffuse.n=1,,2"):
        with pytest.raises(ConfigError):
            sweeps.parse_param_option(bad)


# ------------------------------------------------------------------------------ runs (toy target)


@pytest.mark.parametrize("cache", [False, True], ids=["cache-off", "cache-on"])
def test_n_sweep_costs_the_largest_n_and_matches_plain_runs(sweep_config, audit_cli, tmp_path, cache):
    ns = [1, 2, 5, 10]
    sweep_cfg = sweep_config([{"plugin": VS, "params": {"t": 100, "k": 50, "n": ns}}], cache=cache)
    out = tmp_path / "sweep"
    code, output = audit_cli("run", sweep_cfg, "--output", out)
    assert code == 0, output
    res = _results(out)
    s = res["sweeps"][VS]
    n_img = 2 * N_IMAGES
    assert s["params"] == ["n"] and [p["values"] for p in s["points"]] == [{"n": n} for n in ns]
    assert s["queries"] == {"spent": 10 * n_img, "naive": sum(ns) * n_img}
    assert sum(res["attacks"][f"{VS}[n={n}]"]["spent"]["queries"] for n in ns) == 10 * n_img
    assert res["attacks"][f"{VS}[n=10]"]["spent"]["queries"] == 10 * n_img  # ran first
    for p in s["points"]:
        assert p["queries_per_image"] == p["values"]["n"]
        assert set(p["auc"]) == {"value", "ci95"} and set(p["tpr_at_1pct_fpr"]) == {"value", "ci95"}
    assert s["pareto"] and set(s["pareto"]) <= {p["attack"] for p in s["points"]}
    assert list(res["attacks"]) == [f"{VS}[n={n}]" for n in ns]  # config order in results
    assert res["attacks"][f"{VS}[n=5]"]["sweep"] == {"base": VS, "values": {"n": 5}}
    if not cache:
        assert any("run-local in-memory cache" in note for note in res["run"]["notes"])
    assert "sweep variation-similarity" in output  # the CLI summary table
    md = sweeps_markdown(res["sweeps"])
    assert md.count("\n| ") == 1 + len(ns) and "| 10 | " in md

    # n=10 (and, with the exact in-memory cache, every n) equals a plain run with the same seed
    checks = ns if not cache else [10]
    for n in checks:
        plain_cfg = sweep_config([{"plugin": VS, "params": {"t": 100, "k": 50, "n": n}}], name=f"plain{n}.yaml")
        plain = tmp_path / f"plain{n}"
        assert audit_cli("run", plain_cfg, "--output", plain, "--set", "cache.enabled=false")[0] == 0
        assert _scores(out, f"{VS}[n={n}]") == _scores(plain, VS)


def test_t_and_k_sweeps_run_and_pair_their_noise(sweep_config, audit_cli, tmp_path):
    cfg = sweep_config(
        [
            {"plugin": VS, "name": "vs-t", "seed_key": "vs", "params": {"t": [50, 100, 200, 300], "k": 50, "n": 2}},
            {"plugin": VS, "name": "vs-k", "seed_key": "vs", "params": {"t": 200, "k": [10, 50, 100], "n": 2}},
        ]
    )
    out = tmp_path / "tk"
    code, output = audit_cli("run", cfg, "--output", out)
    assert code == 0, output
    res = _results(out)
    st, sk = res["sweeps"]["vs-t"], res["sweeps"]["vs-k"]
    assert [p["attack"] for p in st["points"]] == [f"vs-t[t={t}]" for t in (50, 100, 200, 300)]
    assert [p["attack"] for p in sk["points"]] == [f"vs-k[k={k}]" for k in (10, 50, 100)]
    n_img = 2 * N_IMAGES
    # t=200,k=50 is the same point in both sweeps (same seed key): its queries are shared
    assert st["queries"]["spent"] + sk["queries"]["spent"] == (4 + 3 - 1) * 2 * n_img
    assert _scores(out, "vs-t[t=200]") == _scores(out, "vs-k[k=50]")
    nfe = {p["attack"]: p["nfe_per_image"] for p in sk["points"]}
    assert nfe == {"vs-k[k=10]": 40, "vs-k[k=50]": 8, "vs-k[k=100]": 4}


def test_invalid_grid_point_is_a_config_error_naming_the_point(sweep_config, audit_cli, tmp_path):
    cfg = sweep_config([{"plugin": VS, "params": {"t": [100, 2000], "k": 50}}])
    code, output = audit_cli("run", cfg, "--output", tmp_path / "bad")
    assert code == 2 and no_traceback(output)
    assert "variation-similarity[t=2000]" in output
    assert not (tmp_path / "bad").exists()


def test_audit_sweep_cli(sweep_config, audit_cli, tmp_path):
    cfg = sweep_config(
        [
            {"plugin": VS, "name": "vs", "params": {"t": 100, "k": 50, "n": 2}},
            {"plugin": VS, "name": "other", "params": {"t": 100, "k": 50, "n": 1}},
        ]
    )
    out = tmp_path / "cli"
    code, output = audit_cli("sweep", cfg, "--param", "vs.n=1,2,4", "--param", "vs.k=50,100", "--output", out)
    assert code == 0, output
    res = _results(out)
    assert set(res["attacks"]) == {f"vs[n={n},k={k}]" for n in (1, 2, 4) for k in (50, 100)}  # `other` not run
    assert res["sweeps"]["vs"]["params"] == ["n", "k"]
    assert res["sweeps"]["vs"]["queries"]["spent"] == (4 + 4) * 2 * N_IMAGES
    # bad input: exit 2, one paragraph, no traceback
    for args in (["--param", "nope.n=1,2"], ["--param", "vs.n"], []):
        code, output = audit_cli("sweep", cfg, *args, "--output", tmp_path / "bad")
        assert code == 2 and no_traceback(output), output
    code, output = audit_cli("sweep", cfg, "--param", "vs.n=0,1", "--output", tmp_path / "bad")
    assert code == 2 and "attacks[0].params.n" in output, output
    # a swept param's error names the --param argument that set it, not the file's line
    assert "(--param vs.n=0,1)" in " ".join(output.split()), output
    code, output = audit_cli("sweep", cfg, "--param", "vs.nn=1,2", "--output", tmp_path / "bad")
    flat = " ".join(output.split())
    assert code == 2 and "attacks[0].params.nn (--param vs.nn=1,2): unknown key; did you mean 'n'?" in flat, output
    assert not (tmp_path / "bad").exists()
    code, output = audit_cli("sweep", "--help")
    assert code == 0 and "--param" in output


def test_default_sweep_output_dir(sweep_config):
    from audit_core.base.config import load_config

    loaded = load_config(sweep_config([{"plugin": VS, "params": {"n": 1}}]))
    assert sweeps.default_output(loaded) == Path("reports") / "toy-sweep"


# ------------------------------------------------------------------------------ html report


@pytest.mark.skipif(importlib.util.find_spec("audit_html_report") is None, reason="html-report plugin not installed")
def test_html_report_has_the_ablation_section(sweep_config, audit_cli, tmp_path):
    cfg = sweep_config(
        [
            {"plugin": VS, "name": "vs-t", "params": {"t": [50, 100, 200], "k": 50, "n": 1}},
            {"plugin": VS, "name": "vs-k", "params": {"t": 200, "k": [50, 100], "n": 1}},
        ],
        reports=[{"plugin": "html-report"}],
    )
    out = tmp_path / "html"
    code, output = audit_cli("run", cfg, "--output", out)
    assert code == 0, output
    html = (out / "report.html").read_text()
    low = html.lower()
    assert "ablation" in low
    for name in ("vs-t", "vs-k"):
        assert name in html
    for point in ("vs-t[t=50]", "vs-t[t=200]", "vs-k[k=100]"):
        assert point in html


# ------------------------------------------------------------------------------ ReDiffuse on the demo


def _demo_available() -> str | None:
    try:
        from audit_core.plugin import manager as plugins

        if "rediffuse" not in plugins.registry("attacks"):
            return "the rediffuse plugin is not installed"
        if "ddim" not in plugins.registry("targets"):
            return "the ddim plugin is not installed"
        from audit_ddim.loading import BUILTIN_MODELS

        if not (BUILTIN_MODELS["digits-ddpm"] / "model_index.json").exists():
            return "the demo model builtin:digits-ddpm is not built yet"
    except Exception as exc:  # pragma: no cover - depends on what is installed
        return f"demo unavailable: {exc}"
    return None


@pytest.mark.skipif(_demo_available() is not None, reason=str(_demo_available()))
def test_rediffuse_n_sweep_on_the_demo(write_config, audit_cli, tmp_path):
    base = {
        "run": {"name": "demo", "seed": 0, "device": "cpu", "batch_size": 16},
        "target": {"plugin": "ddim", "model": "builtin:digits-ddpm"},
        "data": {"members": "builtin:digits/members", "nonmembers": "builtin:digits/nonmembers", "limit": 6},
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 20},
    }
    ns = [1, 2, 5, 10]
    sweep_cfg = write_config({**base, "attacks": [{"plugin": "rediffuse", "params": {"t": 100, "k": 50, "n": ns}}]}, "s.yaml")
    plain_cfg = write_config({**base, "attacks": [{"plugin": "rediffuse", "params": {"t": 100, "k": 50, "n": 10}}]}, "p.yaml")
    code, output = audit_cli("sweep", plain_cfg, "--param", "rediffuse.n=1,2,5,10", "--output", tmp_path / "s")
    assert code == 0, output
    code, output = audit_cli("run", sweep_cfg, "--output", tmp_path / "s2")
    assert code == 0, output
    code, output = audit_cli("run", plain_cfg, "--output", tmp_path / "p")
    assert code == 0, output
    res = _results(tmp_path / "s")
    n_img = res["run"]["n_members"] + res["run"]["n_nonmembers"]
    assert res["sweeps"]["rediffuse"]["queries"] == {"spent": 10 * n_img, "naive": sum(ns) * n_img}
    assert _results(tmp_path / "s2")["sweeps"]["rediffuse"]["queries"]["spent"] == 10 * n_img
    assert _results(tmp_path / "p")["attacks"]["rediffuse"]["spent"]["queries"] == 10 * n_img
    assert _scores(tmp_path / "s", "rediffuse[n=10]") == _scores(tmp_path / "p", "rediffuse")
    assert _scores(tmp_path / "s2", "rediffuse[n=10]") == _scores(tmp_path / "p", "rediffuse")


def test_sharing_cache_without_the_query_cache():
    """cache disabled: in memory for the in-process executor, a temporary folder for remote workers."""
    import gc

    import torch

    from audit_core.data.cache import MemoryCache, QueryCache

    mem, note = sweeps.sharing_cache("inprocess", 1000)
    assert "in-memory" in note and isinstance(mem, MemoryCache)
    for i in range(5):  # 400 bytes each, cap 1000: the least recently used go
        mem.put(f"k{i}", torch.full((10, 10), float(i)))
    assert len(mem) == 2 and mem.get("k0") is None and torch.equal(mem.get("k4"), torch.full((10, 10), 4.0))

    cache, note = sweeps.sharing_cache("ray", 1000)
    assert "temporary cache folder" in note and isinstance(cache, QueryCache)
    folder = cache.dir
    assert folder.is_dir()
    del cache
    gc.collect()
    assert not folder.exists()


def test_one_cache_handle_per_target(sweep_config, tmp_path):
    """The runner hands the target one cache; Target.cache is the context's (no second handle);
    without sweeps and with the cache disabled there is none."""
    from audit_core.base.config import load_config
    from audit_core.run.runner import Runner

    runner = Runner(load_config(sweep_config([{"plugin": "variation-similarity", "params": {"n": [1, 2]}}])), output=tmp_path / "r")
    runner.prepare()
    assert runner.cache is runner.target.cache is runner.target.context.cache
    assert isinstance(runner.cache, sweeps.MemoryCache) and "in-memory" in runner.sweep_note
    runner = Runner(load_config(sweep_config([{"plugin": "variation-similarity"}], name="b.yaml")), output=tmp_path / "r")
    runner.prepare()
    assert runner.cache is None and runner.target.cache is None and runner.sweep_note is None
