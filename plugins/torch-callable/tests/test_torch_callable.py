import json
from pathlib import Path

import pytest
import torch

from audit_core.plugin.targets import TargetContext
from audit_torch_callable import Params, TorchCallableTarget

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def factory_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def test_factory_builds_a_grey_box_target():
    t = TorchCallableTarget(Params(factory="factory_example:build", kwargs={"scale": 0.25}), TargetContext(device="cpu"))
    assert t.num_train_timesteps == 1000 and t.image_size == 8 and t.channels == 1
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.allclose(t.alphas_cumprod, torch.cumprod(1 - betas, 0))
    x = torch.ones(3, 1, 8, 8)
    e = t.eps(x, 10)
    assert torch.allclose(e, 0.25 * x + 0.01)
    assert t.stats.nfe == 3


def test_bad_factory_is_a_config_error(audit_cli, write_config, image_folder, tmp_path):
    cfg = write_config({
        "target": {"plugin": "torch-callable", "factory": "no_such_module:build"},
        "data": {"members": str(image_folder("m", n=2)), "nonmembers": str(image_folder("n", n=2))},
        "attacks": [{"plugin": "variation-similarity"}],
    })
    code, out = audit_cli("run", cfg, "--output", tmp_path / "o")
    assert code == 2 and "no_such_module" in out and "Traceback" not in out


def test_audit_run_through_the_factory(audit_cli, write_config, image_folder, tmp_path):
    cfg = write_config({
        "run": {"device": "cpu"},
        "target": {"plugin": "torch-callable", "factory": "factory_example:build"},
        "data": {"members": str(image_folder("m", n=3)), "nonmembers": str(image_folder("n", n=3))},
        "attacks": [{"plugin": "variation-similarity", "params": {"t": 40, "k": 20, "n": 2}}],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 10},
    })
    code, out = audit_cli("run", cfg, "--output", tmp_path / "o")
    assert code == 0, out
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["attacks"]["variation-similarity"]["nfe_per_image"] == 4


def test_variations_are_unclipped_unless_asked():
    """The base class's DDIM serves the variation API; clip=True clamps exactly the default
    (unclipped, like the official ReDiffuse code) output to [-1, 1]."""
    t = TorchCallableTarget(Params(factory="factory_example:build", kwargs={"scale": -2.0}), TargetContext(device="cpu"))
    x = torch.full((2, 1, 8, 8), 0.95)
    raw = t.variation(x, 100, 50, [[1, 2, 3], [4, 5, 6]])
    assert raw.shape == (2, 3, 1, 8, 8) and (raw.abs() > 1).any()
    assert torch.equal(t.variation(x, 100, 50, [[1, 2, 3], [4, 5, 6]], clip=True), raw.clamp(-1, 1))
    assert t.stats.queries == 12 and t.stats.nfe == 12 * 2
