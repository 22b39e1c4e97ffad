"""``protocol: comfyui`` against a loopback server written from ComfyUI's documented API
(tests/comfyui_stub.py) over a real target (the toy target, RGB 8x8): upload, queue the packaged
img2img graph, poll the history, fetch the image; the variations equal the target's own, and
user-edited templates are checked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("multipart", reason="the ComfyUI stub reads multipart uploads (python-multipart)")

from audit_core.base.errors import ConfigError  # noqa: E402
from audit_core.testing import ToyParams, ToyTarget  # noqa: E402
from audit_http.client import RemoteError  # noqa: E402
from audit_http.target import COMFYUI_WORKFLOW, HTTPParams, HTTPTarget  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from comfyui_stub import comfyui_app  # noqa: E402

QUANT = 1 / 127.5 + 1e-6


def toy() -> ToyTarget:
    return ToyTarget(ToyParams(channels=3, image_size=8))


def images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=g).float() / 127.5 - 1


def comfy(url: str, **kw) -> HTTPTarget:
    return HTTPTarget(HTTPParams(**{"url": url, "protocol": "comfyui", "image_size": 8, "poll_s": 0.01, **kw}))


def test_variations_through_the_packaged_graph(served):
    app = comfyui_app(toy())
    tg = comfy(served(app), concurrency=3, prompt="a cat")
    x = images(2, seed=5)
    seeds = [[3, 2**40 + 4], [5, 6]]
    out = tg.variation(x, 300, 100, seeds)
    ref = toy().variation(x, 300, 100, [[s % 2**32 for s in row] for row in seeds], clip=True)
    assert out.shape == (2, 2, 3, 8, 8) and (out - ref).abs().max() <= QUANT
    graph = app.state.comfy["prompts"][0]
    ks = graph["6"]["inputs"]
    assert (ks["steps"], ks["denoise"], ks["sampler_name"]) == (3, 0.3, "ddim") and graph["4"]["inputs"]["text"] == "a cat"
    assert graph["2"]["inputs"]["image"].startswith("audit-")  # the uploaded file's name
    d = tg.describe()
    assert d["seeds"].startswith("sent") and d["requests"] >= 4 * 4 and tg.stats.nfe == 4 * 3
    tg.close()


def test_a_user_edited_graph_without_a_seed(served, tmp_path):
    graph = json.loads(COMFYUI_WORKFLOW.read_text())
    graph["6"]["inputs"]["seed"] = 42  # a fixed seed: every variation would be the same noise
    path = tmp_path / "fixed.json"
    path.write_text(json.dumps(graph))
    tg = comfy(served(comfyui_app(toy())), comfyui_workflow=str(path))
    assert any("cannot take a seed" in n for n in tg.stats.notes)
    tg.variation(images(1), 200, 100, [[1]])
    assert tg.describe()["seeds"].startswith("not honoured")
    tg.close()


def test_failures_name_the_reason(served, tmp_path):
    url = served(comfyui_app(toy()))
    graph = json.loads(COMFYUI_WORKFLOW.read_text())
    graph["6"]["inputs"]["sampler_name"] = "euler"
    (tmp_path / "euler.json").write_text(json.dumps(graph))
    tg = comfy(url, comfyui_workflow=str(tmp_path / "euler.json"))
    with pytest.raises(RemoteError, match="ddim sampler only"):  # an execution error, from the history
        tg.variation(images(1), 200, 100, [[1]])
    tg.close()
    graph["6"]["inputs"]["sampler_name"] = "ddim"
    graph["1"]["inputs"]["ckpt_name"] = "other.safetensors"
    (tmp_path / "ckpt.json").write_text(json.dumps(graph))
    tg = comfy(url, comfyui_workflow=str(tmp_path / "ckpt.json"))
    with pytest.raises(RemoteError, match="400"):  # refused by validation at POST /prompt
        tg.variation(images(1), 200, 100, [[1]])
    tg.close()


def test_templates_are_checked(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        comfy("http://127.0.0.1:9", comfyui_workflow=str(bad))
    graph = json.loads(COMFYUI_WORKFLOW.read_text())
    graph["2"]["inputs"]["image"] = "fixed.png"
    bad.write_text(json.dumps(graph))
    with pytest.raises(ConfigError, match=r"no \{image\}"):
        comfy("http://127.0.0.1:9", comfyui_workflow=str(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        comfy("http://127.0.0.1:9", comfyui_workflow=str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="no node '99'"):
        comfy("http://127.0.0.1:9", comfyui_output="99")
