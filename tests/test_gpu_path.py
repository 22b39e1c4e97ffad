"""The run's speed settings (run.dtype, run.channels_last, run.compile, run.batch_size: auto) on
the CPU: what is honoured, what falls back and how both are recorded. The GPU numbers are
benchmarks/gpu_check.sh's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from audit_core.run.batching import CPU_DEFAULT, resolve_batch_size
from audit_core.plugin.targets import NOISE, Target, TargetContext, TargetParams

FACTORY_DIR = Path(__file__).parents[1] / "plugins" / "torch-callable" / "tests"


class Net(Target):
    name = "net"
    capabilities = frozenset({NOISE})

    def __init__(self, context: TargetContext, dtype: str = "auto"):
        super().__init__(TargetParams(), context)
        self._place(dtype)
        torch.manual_seed(0)
        self.net = self._prepare_network(torch.nn.Conv2d(3, 3, 3, padding=1))


@pytest.mark.parametrize(
    "run,own,reason",
    [
        ("auto", "auto", "fp32 from the net default"),
        ("fp32", "auto", "fp32 from run.dtype"),
        ("fp16", "auto", "fp16 from run.dtype, but the CPU runs fp32"),
        ("bf16", "fp32", "fp32 from target.dtype (overrides run.dtype bf16)"),
    ],
)
def test_precision_follows_run_dtype_unless_the_target_says_otherwise(run, own, reason):
    t = Net(TargetContext(device="cpu", dtype=run), own)
    assert t.dtype == torch.float32 and next(t.net.parameters()).dtype == torch.float32
    assert t.precision == {"dtype": "float32", "reason": reason, "channels_last": False, "compile": False}
    assert t.describe()["precision"] == t.precision
    assert any("CPU runs fp32" in n for n in t.stats.notes) == ("CPU" in reason)


def test_channels_last_changes_the_layout_not_the_numbers():
    plain, nhwc = Net(TargetContext(device="cpu")), Net(TargetContext(device="cpu", channels_last=True))
    assert nhwc.net.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 8, 8)
    xin = nhwc._network_input(x)
    assert xin.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nhwc.net(xin), plain.net(plain._network_input(x)), rtol=1e-5, atol=1e-6)


def test_batch_size_auto_on_the_cpu_is_the_default():
    t = Net(TargetContext(device="cpu"))
    assert resolve_batch_size(17, t) == (17, "run.batch_size")
    size, why = resolve_batch_size("auto", t)
    assert size == CPU_DEFAULT and why.startswith("auto:")


def test_run_records_and_prints_the_precision(audit_cli, write_config, image_folder, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(FACTORY_DIR))
    cfg = write_config({
        "run": {"device": "cpu", "dtype": "fp16", "batch_size": "auto", "channels_last": True},
        "target": {"plugin": "torch-callable", "factory": "factory_example:build"},
        "data": {"members": str(image_folder("m", n=3)), "nonmembers": str(image_folder("n", n=3))},
        "attacks": [{"plugin": "pia", "params": {"t": 40}}],
        "cache": {"enabled": False},
        "metrics": {"bootstrap": 10},
    })
    code, out = audit_cli("run", cfg, "--output", tmp_path / "o")
    assert code == 0, out
    precision = json.loads((tmp_path / "o" / "results.json").read_text())["target"]["precision"]
    assert precision == {
        "dtype": "float32", "reason": "fp16 from run.dtype, but the CPU runs fp32", "channels_last": True, "compile": False,
    }
    assert "float32 (fp16 from run.dtype, but the CPU runs fp32)" in out and f"batch size {CPU_DEFAULT} (auto:" in out


def test_bad_batch_size_names_the_key(audit_cli, write_config, image_folder, tmp_path):
    cfg = write_config({
        "run": {"batch_size": "big"},
        "target": {"plugin": "toy"},
        "data": {"members": str(image_folder("m", n=2)), "nonmembers": str(image_folder("n", n=2))},
        "attacks": [{"plugin": "pia"}],
    })
    code, out = audit_cli("run", cfg, "--output", tmp_path / "o")
    assert code == 2 and "run.batch_size" in out and "Traceback" not in out
