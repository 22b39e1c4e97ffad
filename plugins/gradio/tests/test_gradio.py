"""The ``gradio`` target against a real Gradio app on loopback (tests/gradio_app.py) wrapping a
real target (the toy target, RGB 8x8): the app answers ``gradio_client`` as the target's own
variation would, the target's variations equal the in-process ones, misconfigurations are named,
and a ReDiffuse run goes through."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest
import torch

from audit_core.base.errors import ConfigError
from audit_core.testing import ToyParams, ToyTarget

try:
    import gradio  # noqa: F401
except ImportError as exc:  # pragma: no cover - `make setup` installs it (plugins/gradio[test])
    pytest.skip(f"gradio is not installed ({exc}); pip install -e 'plugins/gradio[test]'", allow_module_level=True)

from audit_gradio.target import GradioParams, GradioTarget  # noqa: E402
from audit_http.client import RemoteError  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from gradio_app import build_app, launch  # noqa: E402

QUANT = 1 / 127.5 + 1e-6
INPUTS = ["{image}", "{strength}", "{total_steps}", "{seed}"]


def toy() -> ToyTarget:
    return ToyTarget(ToyParams(channels=3, image_size=8))


def images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=g).float() / 127.5 - 1


@pytest.fixture(scope="module")
def app_url():
    torch.set_num_threads(1)
    app = build_app(toy())
    url = launch(app)
    yield url
    app.close()


def target(url: str, **kw) -> GradioTarget:
    return GradioTarget(GradioParams(**{"url": url, "api_name": "/img2img", "inputs": INPUTS, "image_size": 8, **kw}))


def test_the_app_answers_gradio_client_as_the_target_would(app_url, tmp_path):
    from gradio_client import Client, handle_file
    from PIL import Image

    from audit_core.data import png_b64, to_tensor

    x = images(1, seed=2)
    path = tmp_path / "x.png"
    path.write_bytes(base64.b64decode(png_b64(x[0])))
    out = Client(app_url, verbose=False, download_files=str(tmp_path)).predict(
        handle_file(str(path)), 0.2, 10, 5, api_name="/img2img"
    )
    got, _ = to_tensor(Image.open(out), 3, 8)
    assert (got - toy().variation(x, 200, 100, [[5]], clip=True)[0, 0]).abs().max() <= QUANT


def test_variations_equal_the_targets_in_process(app_url):
    tg = target(app_url, concurrency=3)
    x = images(3, seed=1)
    seeds = [[3, 4], [2**40 + 7, 9], [11, 12]]
    out = tg.variation(x, 200, 50, seeds)  # strength 0.2, total_steps 20: 4 steps of k=50
    ref = toy().variation(x, 200, 50, [[s % 2**32 for s in row] for row in seeds], clip=True)
    assert out.shape == (3, 2, 3, 8, 8) and (out - ref).abs().max() <= QUANT
    d = tg.describe()
    assert d["requests"] == 6 and d["retries"] == 0 and tg.stats.nfe == 6 * 4
    assert d["seeds"].startswith("sent")  # the app does not report the seed it used
    assert tg.identity() != target(app_url, inputs=["{image}", "{strength}", "{steps}", "{seed}"]).identity()
    tg.close()


def test_misconfigurations_are_named(app_url):
    with pytest.raises(ConfigError, match=r"no endpoint /predict.*/img2img"):
        target(app_url, api_name="/predict")
    with pytest.raises(ConfigError, match="takes 4 inputs; 3"):
        target(app_url, inputs=["{image}", "{strength}", "{total_steps}"])
    with pytest.raises(ConfigError, match=r"no \{image\}"):
        target(app_url, inputs=[0, "{strength}", "{total_steps}", "{seed}"])
    with pytest.raises(ConfigError, match=r"\{sed\}"):
        target(app_url, inputs=["{image}", "{strength}", "{total_steps}", "{sed}"])
    with pytest.raises(RemoteError, match=r"loading the Gradio app at http://127.0.0.1:9 failed"):
        target("http://127.0.0.1:9", max_retries=0)


def test_an_app_error_names_the_url(app_url):
    tg = target(app_url, image_size=16)  # the app serves an 8x8 model
    with pytest.raises(RemoteError, match=r"/img2img failed"):
        tg.variation(torch.zeros(1, 3, 16, 16), 200, 100, [[1]])
    tg.close()


def test_an_app_without_a_seed_input_is_said_to_be_unreproducible(app_url):
    tg = target(app_url, inputs=["{image}", "{strength}", "{total_steps}", 0])
    assert any("not reproducible" in n and "query cache" in n for n in tg.stats.notes)  # and warned once on stderr
    tg.variation(images(1), 200, 100, [[1]])
    assert tg.describe()["seeds"].startswith("not honoured")
    tg.close()


def test_a_rediffuse_run_through_the_app(app_url, image_folder, write_config, audit_cli, tmp_path):
    pytest.importorskip("audit_rediffuse")
    cfg = {
        "run": {"name": "gradio", "seed": 1, "device": "cpu", "batch_size": 8},
        "target": {"plugin": "gradio", "url": app_url, "api_name": "/img2img", "inputs": INPUTS, "image_size": 8,
                   "kind": "pixel", "concurrency": 2},
        "data": {"members": str(image_folder("m", n=4, channels=3, seed=1)), "nonmembers": str(image_folder("nm", n=4, channels=3, seed=2))},
        "attacks": [{"plugin": "rediffuse", "params": {"t": 100, "k": 50, "n": 2}}],
        "cache": {"enabled": True, "dir": str(tmp_path / "cache")},
        "metrics": {"bootstrap": 20},
    }
    code, output = audit_cli("run", write_config(cfg), "--output", tmp_path / "run")
    assert code == 0, output
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["attacks"]["rediffuse"]["queries_per_image"] == 2 and res["target"]["requests"] == 16
    assert res["target"]["api_name"] == "/img2img"


def test_transient_failures_are_retried_and_the_apps_own_are_not():
    from concurrent.futures import CancelledError

    import httpx

    from audit_gradio.target import transient

    assert transient(CancelledError()) == "cancelled"  # seen under load: the job's event stream broke
    assert transient(TimeoutError()) == "timeout"
    assert transient(httpx.ConnectError("refused")) == "ConnectError"
    assert transient(type("QueueError", (Exception,), {})()) == "QueueError"
    assert transient(ValueError("the app raised")) is None
