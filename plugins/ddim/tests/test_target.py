"""The ddim target: loading pipeline folders, errors, the variation API, eps and NFE counting."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from audit_core import ddim, seeding
from audit_core.base.errors import DataError, ModelError
from audit_core.plugin.targets import GRADIENTS, NOISE, VARIATION, TargetContext
from audit_ddim import digits
from audit_ddim.target import DDIMParams, DDIMTarget

# ----- loading ---------------------------------------------------------------------------------


def test_loads_a_saved_pipeline_and_reads_its_config(tiny_pipeline, load_target):
    from diffusers import DDPMScheduler

    target = load_target(tiny_pipeline)
    assert (target.channels, target.image_size, target.num_train_timesteps) == (3, 8, 500)
    expected = DDPMScheduler.from_pretrained(tiny_pipeline, subfolder="scheduler").alphas_cumprod
    assert target.alphas_cumprod.dtype == torch.float64 and target.alphas_cumprod.device.type == "cpu"
    assert torch.allclose(target.alphas_cumprod, expected.double())
    assert target.capabilities == {VARIATION, NOISE, GRADIENTS} and target.kind == "pixel"
    info = target.describe()
    assert info["T"] == 500 and info["model_path"] == str(tiny_pipeline) and info["channels"] == 3


def test_demo_model_is_shipped_as_safetensors(demo_target):
    assert demo_target.folder.weights[0].name.endswith(".safetensors")
    assert (demo_target.channels, demo_target.image_size, demo_target.num_train_timesteps) == (1, 16, 1000)
    assert demo_target.folder.weights[0].stat().st_size < 8_000_000
    record = json.loads((demo_target.path / "training.json").read_text())
    assert record["trained_on"].startswith("builtin:digits/members") and record["loss_curve"]


def test_relative_model_path_resolves_against_the_config_folder(tiny_pipeline):
    ctx = TargetContext(device="cpu", config_dir=str(tiny_pipeline.parent))
    target = DDIMTarget(DDIMParams(model=tiny_pipeline.name), ctx)
    assert target.path == tiny_pipeline


def test_identity_follows_the_weights(tmp_path, tiny_pipeline, load_target, save_pipeline):
    shutil.copytree(tiny_pipeline, tmp_path / "copy")
    other = save_pipeline(tmp_path / "other", seed=1)
    a, b, c = (load_target(p).identity() for p in (tiny_pipeline, tmp_path / "copy", other))
    assert a == b  # same weights elsewhere: same cache identity
    assert a != c  # retrained weights: the query cache must not serve old answers


def test_params_reject_unknown_keys_and_bad_dtypes():
    with pytest.raises(ValidationError):
        DDIMParams(model="x", sampler="ddpm")
    with pytest.raises(ValidationError):
        DDIMParams(model="x", dtype="fp8")
    with pytest.raises(ValidationError):
        DDIMParams(model="x", max_batch=0)


def test_half_precision_request_runs_fp32_on_cpu(tiny_pipeline, load_target):
    target = load_target(tiny_pipeline, dtype="fp16")
    assert target.dtype == torch.float32 and any("fp32" in n for n in target.stats.notes)


# ----- errors ----------------------------------------------------------------------------------


def test_missing_folder_is_a_model_error(tmp_path, load_target):
    with pytest.raises(ModelError, match="does not exist"):
        load_target(tmp_path / "nope")


def test_folder_that_is_not_a_pipeline_names_what_is_missing(tmp_path, load_target):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.txt").write_text("hello")
    with pytest.raises(ModelError) as err:
        load_target(tmp_path / "junk")
    msg = str(err.value)
    assert "not a diffusers pipeline" in msg
    for part in ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json"):
        assert part in msg


def test_bare_unet_folder_gets_a_hint(tmp_path, tiny_pipeline, load_target):
    shutil.copytree(tiny_pipeline / "unet", tmp_path / "bare")
    with pytest.raises(ModelError, match="bare U-Net folder"):
        load_target(tmp_path / "bare")


def test_unknown_builtin_model_lists_the_available_ones(load_target):
    with pytest.raises(ModelError, match="builtin:digits-ddpm"):
        load_target("builtin:cifar10-ddpm")


@pytest.fixture(scope="module")
def pickled_pipeline(tmp_path_factory, save_pipeline):
    return save_pipeline(tmp_path_factory.mktemp("pickled") / "pipeline", safe=False)


def test_pickled_weights_are_refused_by_default(pickled_pipeline, load_target):
    assert not list((pickled_pipeline / "unet").glob("*.safetensors"))
    with pytest.raises(ModelError) as err:
        load_target(pickled_pipeline)
    msg = str(err.value)
    assert "diffusion_pytorch_model.bin" in msg and "allow_pickle: true" in msg and "arbitrary code" in msg


def test_pickled_weights_load_with_the_opt_in(pickled_pipeline, tiny_pipeline, load_target):
    with pytest.warns(UserWarning, match="pickled weights"):
        target = load_target(pickled_pipeline, allow_pickle=True)
    assert any("pickle" in n for n in target.stats.notes)
    x = torch.zeros(2, 3, 8, 8)
    # same seed, same weights as the safetensors fixture: same predictions
    assert torch.allclose(target.eps(x, 10), load_target(tiny_pipeline).eps(x, 10), atol=1e-6)


def test_safetensors_win_over_pickles_when_both_exist(tmp_path, tiny_pipeline, pickled_pipeline, load_target):
    both = shutil.copytree(tiny_pipeline, tmp_path / "both")
    shutil.copy(pickled_pipeline / "unet" / "diffusion_pytorch_model.bin", both / "unet")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no pickle warning: the safetensors are used
        target = load_target(both)
    assert not target.folder.pickled


# ----- images of the wrong shape ---------------------------------------------------------------


def test_preprocess_converts_channels_and_resizes(demo_target):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB")
    x, changed = demo_target.preprocess(rgb)
    assert x.shape == (1, 16, 16) and changed
    big = Image.fromarray(np.zeros((32, 32), dtype=np.uint8), "L")
    x, changed = demo_target.preprocess(big)
    assert x.shape == (1, 16, 16) and changed
    same = Image.fromarray(digits.images()[0], "L")
    x, changed = demo_target.preprocess(same)
    assert x.shape == (1, 16, 16) and not changed
    assert torch.allclose(x, digits.as_tensor("all")[0])


def test_tensors_of_the_wrong_channel_count_are_refused(demo_target):
    with pytest.raises(DataError, match=r"\[B, 1, 16, 16\]"):
        demo_target.eps(torch.zeros(2, 3, 16, 16), 10)
    with pytest.raises(DataError, match="preprocess"):
        demo_target.variation(torch.zeros(2, 3, 16, 16), 20, 10, [[0], [1]])


# ----- variation, eps, NFE ---------------------------------------------------------------------


def test_variation_shape_and_range(demo_target):
    x = digits.as_tensor("members")[:6]
    v = demo_target.variation(x, 200, 100, [[i, 10 + i] for i in range(6)], clip=True)
    assert v.shape == (6, 2, *x.shape[1:]) and v.dtype == torch.float32
    assert v.min() >= -1 and v.max() <= 1
    assert not torch.equal(v[:, 0], x)
    assert (v[:, 0] - x).pow(2).mean() < 0.5  # a variation, not noise


def test_clip_on_and_off(demo_target):
    """Unclipped (the default, like the official ReDiffuse code) is the DDIM output itself; clip
    clamps exactly that to [-1, 1]. The demo's variations do leave the range."""
    x = digits.as_tensor("members")[:4]
    seeds = [[i, 10 + i, 20 + i] for i in range(4)]
    raw = demo_target.variation(x, 200, 100, seeds)
    clipped = demo_target.variation(x, 200, 100, seeds, clip=True)
    assert (raw.abs() > 1).any()
    assert torch.equal(clipped, raw.clamp(-1, 1))


def test_variation_is_the_shared_ddim_math(tiny_target):
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    seeds = [5, 6, 7]
    noise = seeding.randn(x.shape[1:], seeds)
    expected = ddim.variation(tiny_target.eps_fn(), x, noise, 60, 20, tiny_target.alphas_cumprod)
    got = tiny_target.variation(x, 60, 20, [[s] for s in seeds])[:, 0]
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(tiny_target.variation(x, 60, 20, [[s] for s in seeds], clip=True)[:, 0], expected.clamp(-1, 1), atol=1e-6)


@pytest.mark.parametrize(("t", "k", "max_batch"), [(200, 100, 512), (60, 20, 3), (10, 10, 1)])
def test_nfe_counts_are_exact(tiny_pipeline, t, k, max_batch, load_target):
    target = load_target(tiny_pipeline, max_batch=max_batch)
    x = torch.zeros(7, 3, 8, 8)
    target.variation(x, t, k, [[i] for i in range(7)])
    assert target.stats.nfe == 7 * (t // k) and target.stats.queries == 7
    target.eps(x[:5], 3)
    assert target.stats.nfe == 7 * (t // k) + 5
    assert target.nfe_per_query(t, k) == t // k


def test_repetitions_share_forward_passes(tiny_pipeline, monkeypatch, load_target):
    """n repetitions of every image go through the U-Net together, split only by max_batch."""
    target = load_target(tiny_pipeline, max_batch=64)
    calls = []
    forward = target.unet.forward
    monkeypatch.setattr(target.unet, "forward", lambda x, t, **kw: (calls.append(x.shape[0]), forward(x, t, **kw))[1])
    x = torch.zeros(4, 3, 8, 8)  # 4 images x n = 10
    seeds = [list(range(10 * i, 10 * i + 10)) for i in range(4)]
    target.variation(x, 40, 20, seeds)
    assert calls == [40, 40]  # t/k = 2 steps, one pass each
    calls.clear()
    target.params.max_batch = 16
    target.variation(x, 40, 20, seeds)
    assert calls == [16, 16, 8, 16, 16, 8]


def test_same_seeds_same_variations_for_batch_1_and_64(fresh_demo_target):
    x = torch.cat([digits.as_tensor("members")[:32], digits.as_tensor("nonmembers")[:32]])
    seeds = [seeding.derive_seed(0, "rediffuse", f"img{i}") for i in range(64)]
    together = fresh_demo_target.variation(x, 200, 100, [[s] for s in seeds])
    alone = torch.cat([fresh_demo_target.variation(x[i : i + 1], 200, 100, [[seeds[i]]]) for i in range(64)])
    assert torch.allclose(together, alone, atol=1e-5)
    other = fresh_demo_target.variation(x, 200, 100, [[s + 1] for s in seeds])
    assert not torch.allclose(together, other, atol=1e-3)  # the seeds do drive the noise


def test_members_are_reconstructed_closer_than_nonmembers(demo_target):
    """ReDiffuse's premise on the demo model: the average of n variations of a member lies closer
    to it than a non-member's (64 of each, t = 200, k = 100, n = 10)."""
    n, count = 10, 64
    dist = {}
    for group in ("members", "nonmembers"):
        x = digits.as_tensor(group)[:count]
        seeds = [[seeding.derive_seed(0, "test", f"{group}{i}", d) for d in range(n)] for i in range(count)]
        x_bar = demo_target.variation(x, 200, 100, seeds).mean(1)
        dist[group] = (x - x_bar).pow(2).flatten(1).sum(1)
    assert dist["members"].mean() < 0.9 * dist["nonmembers"].mean()
    assert (dist["members"].median() < dist["nonmembers"].median()).item()
