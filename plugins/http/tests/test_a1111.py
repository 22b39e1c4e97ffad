"""``protocol: a1111`` against a small AUTOMATIC1111-style loopback server (tests/a1111_stub.py)
over a real target (the toy target, RGB): exact variations, the strength/steps mapping, seeds, the
model identity, and a complete ReDiffuse run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from audit_core.testing import ToyParams, ToyTarget
from audit_http.target import HTTPParams, HTTPTarget

sys.path.insert(0, str(Path(__file__).parent))
from a1111_stub import a1111_app  # noqa: E402


def rgb_toy() -> ToyTarget:
    return ToyTarget(ToyParams(channels=3, image_size=8))


def images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=g).float() / 127.5 - 1


def test_variations_match_the_target_behind_it(served):
    url = served(a1111_app(rgb_toy()))
    tg = HTTPTarget(HTTPParams(url=url, protocol="a1111", image_size=8, concurrency=3))
    assert (tg.channels, tg.num_train_timesteps, tg.kind) == (3, 1000, "latent")
    x = images(5)
    seeds = [3, 2**40 + 7, 11, 2**62 + 1, 5]
    out = tg.variation(x, 200, 100, [[s] for s in seeds], ["a cat", None, None, None, "a dog"])
    ref = rgb_toy().variation(x, 200, 100, [[s % 2**32] for s in seeds], clip=True)
    assert (out - ref).abs().max() <= 1 / 127.5 + 1e-6
    d = tg.describe()
    assert d["seeds"].startswith("honoured") and d["requests"] == 1 + 5
    assert d["server"]["model_id"] == "c0ffee1234" and "c0ffee1234" in tg.identity()
    assert tg.stats.nfe == 5 * 2
    tg.close()


def test_fix_steps_servers(served):
    url = served(a1111_app(rgb_toy(), fix_steps=True))
    tg = HTTPTarget(HTTPParams(url=url, protocol="a1111", image_size=8, a1111_fix_steps=True))
    x = images(2, seed=1)
    out = tg.variation(x, 300, 100, [[1, 3], [2, 4]])  # n=2: one request per variation
    ref = rgb_toy().variation(x, 300, 100, [[1, 3], [2, 4]], clip=True)
    assert out.shape == (2, 2, 3, 8, 8)
    assert (out - ref).abs().max() <= 1 / 127.5 + 1e-6
    tg.close()


def test_strength_and_steps_make_the_server_run_t_over_k_steps(served):
    url = served(a1111_app(rgb_toy()))
    tg = HTTPTarget(HTTPParams(url=url, protocol="a1111", image_size=8))
    for t in range(10, 1000, 10):
        for k in (1, 2, 5, 10, t):
            if t % k:
                continue
            strength, steps = tg.a1111_steps(t, k)
            assert strength == t / 1000
            assert int(min(strength, 0.999) * steps) == t // k, (t, k, steps)
            assert round(strength * 1000) == t
    assert tg.a1111_steps(290, 10) == (0.29, 101)  # int(0.29 * 100) == 28: one more step
    tg.close()


def test_a_server_that_ignores_seeds_is_recorded(served):
    url = served(a1111_app(rgb_toy(), honour_seeds=False))
    tg = HTTPTarget(HTTPParams(url=url, protocol="a1111", image_size=8))
    tg.variation(images(2), 100, 50, [[1], [2]])
    d = tg.describe()
    assert d["seeds"].startswith("not honoured") and any("own randomness" in n for n in d["notes"])
    tg.close()


def test_cfg_scale_unset_sends_a1111s_own_default(served):
    app = a1111_app(rgb_toy())
    url = served(app)
    unset = HTTPTarget(HTTPParams(url=url, protocol="a1111", image_size=8))
    unset.variation(images(1), 100, 50, [[1]])
    assert app.state.calls["cfg_scale"] == 7.0  # A1111's (and webuiapi's) default: every field is sent, as webuiapi does
    guided = HTTPTarget(HTTPParams(url=url, protocol="a1111", image_size=8, cfg_scale=7.5))
    guided.variation(images(1), 100, 50, [[1]])
    assert app.state.calls["cfg_scale"] == 7.5
    assert guided.identity() != unset.identity()  # the guidance changes the outputs: not the same cache entries
    unset.close(), guided.close()


def test_image_size_is_required():
    from audit_core.base.errors import ConfigError

    with pytest.raises(ConfigError, match="image_size"):
        HTTPTarget(HTTPParams(url="http://127.0.0.1:9", protocol="a1111"))


def test_a_rediffuse_run_through_an_a1111_server(served, image_folder, write_config, audit_cli, tmp_path):
    pytest.importorskip("audit_rediffuse")
    url = served(a1111_app(rgb_toy()))
    cfg = {
        "run": {"name": "a1111", "seed": 1, "device": "cpu", "batch_size": 8},
        "target": {"plugin": "http", "url": url, "protocol": "a1111", "image_size": 8, "concurrency": 4},
        "data": {"members": str(image_folder("m", n=6, channels=3, seed=1)), "nonmembers": str(image_folder("nm", n=6, channels=3, seed=2))},
        # a latent-kind target: ReDiffuse picks its latent variant (2n variations, SSIM)
        "attacks": [{"plugin": "rediffuse", "params": {"t": 100, "k": 50, "n": 2}}],
        "cache": {"enabled": True, "dir": str(tmp_path / "cache")},
        "metrics": {"bootstrap": 20},
    }
    code, output = audit_cli("run", write_config(cfg), "--output", tmp_path / "run")
    assert code == 0, output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    a = results["attacks"]["rediffuse"]
    assert a["n_members"] == 6 and a["queries_per_image"] == 4 and a["nfe_per_image"] == 8
    assert results["target"]["protocol"] == "a1111" and results["target"]["seeds"].startswith("honoured")
