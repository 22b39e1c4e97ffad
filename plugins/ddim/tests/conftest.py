"""Fixtures for the audit-ddim tests: tiny random pipelines saved to disk, and the demo target."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audit_core.plugin.targets import TargetContext
from audit_ddim.target import DDIMParams, DDIMTarget


def save_tiny_pipeline(
    folder: Path,
    *,
    seed: int = 0,
    channels: int = 3,
    size: int = 8,
    timesteps: int = 500,
    safe: bool = True,
) -> Path:
    """A random, tiny UNet2DModel + DDPMScheduler saved as a DDPMPipeline folder.

    The defaults (3 channels, 8x8, T = 500) differ from the demo's on purpose: the target must
    read them from the folder."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    scheduler = DDPMScheduler(num_train_timesteps=timesteps, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder, safe_serialization=safe)
    return folder


def make_target(model: str | Path, **params) -> DDIMTarget:
    return DDIMTarget(DDIMParams(model=str(model), **params), TargetContext(device="cpu"))


@pytest.fixture(scope="session")
def save_pipeline():
    """``save_pipeline(folder, seed=..., channels=..., size=..., timesteps=..., safe=...)``."""
    return save_tiny_pipeline


@pytest.fixture(scope="session")
def load_target():
    """``load_target(model, **params)``: a DDIMTarget on the CPU."""
    return make_target


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipeline")


@pytest.fixture
def tiny_target(tiny_pipeline) -> DDIMTarget:
    return make_target(tiny_pipeline)


@pytest.fixture(scope="session")
def demo_target() -> DDIMTarget:
    return make_target("builtin:digits-ddpm")


@pytest.fixture
def fresh_demo_target() -> DDIMTarget:
    """The demo model with zeroed stats (loading it takes well under a second)."""
    return make_target("builtin:digits-ddpm")
