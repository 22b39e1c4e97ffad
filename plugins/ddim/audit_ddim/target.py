"""``DDIMTarget``: a diffusers DDPM/DDIM pixel model as an audit target.

It serves both access levels:

- black-box, the variation API ``V(x, t, k)`` (``Target.variation``: ``x [B]``, ``seeds [B][n]``
  -> ``[B, n, C, H, W]``), with the base class's default ``_variations``: seeded noise to index t,
  then deterministic DDIM back to 0 via ``audit_core.base.ddim.variation``, clipped to [-1, 1] only
  when the caller asks (``clip``). All ``B * n`` rows go through the U-Net together, split only
  by ``max_batch``;
- grey-box, the noise prediction ``eps(x_t, t)`` that SecMI, PIA and the loss attack call;
- white-box, gradients of the denoising loss w.r.t. the U-Net's parameters (``GRADIENTS``:
  ``grad_network`` hands the core the U-Net and a differentiable forward; GSA uses it).

The DDIM math itself lives in ``audit_core.base.ddim``; this class only adapts the U-Net to it.
Every U-Net evaluation of one image adds one to ``self.stats.nfe``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field

from audit_core import DataError, ModelError, GRADIENTS, NOISE, VARIATION, Target, TargetContext, TargetParams, weights_sha256

from . import loading


class DDIMParams(TargetParams):
    """The ``target:`` mapping of audit.yaml for ``plugin: ddim`` (unknown keys are errors)."""

    model: str = Field(description="a diffusers pipeline folder (model_index.json, unet/, scheduler/) or builtin:digits-ddpm")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="U-Net precision; half types only on a GPU (the CPU always uses fp32)"
    )
    allow_pickle: bool = Field(False, description="also load pickled .bin weights (can run code: trusted files only)")
    max_batch: int = Field(512, ge=1, description="rows per U-Net forward pass")


class DDIMTarget(Target):
    """A diffusers ``UNet2DModel`` with an epsilon-prediction noise schedule."""

    name = "ddim"
    kind = "pixel"
    capabilities = frozenset({VARIATION, NOISE, GRADIENTS})
    Params = DDIMParams

    def __init__(self, params: DDIMParams, context: TargetContext | None = None):
        super().__init__(params, context)
        self.path = loading.resolve_model_path(params.model, self.context)
        self.folder = loading.inspect_folder(self.path, allow_pickle=params.allow_pickle)
        self._place(params.dtype)  # auto: run.dtype, else fp32
        if self.folder.pickled:
            self.stats.notes.append("the U-Net weights were loaded from a pickle (allow_pickle: true)")

        self.unet = self._prepare_network(loading.load_unet(self.folder, self.dtype))  # run.channels_last, run.compile
        self.scheduler = loading.load_scheduler(self.folder)
        self.alphas_cumprod = loading.alphas_cumprod_of(self.scheduler)
        cfg = self.unet.config
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self.channels = int(cfg.in_channels)
        self.out_channels = int(cfg.out_channels)
        size = cfg.sample_size
        self.image_size = int(size if isinstance(size, int) else size[0])
        if self.out_channels not in (self.channels, 2 * self.channels):
            raise ModelError(
                f"target.model: {self.path}/unet maps {self.channels} to {self.out_channels} channels; "
                f"expected an epsilon predictor ({self.channels} out, or {2 * self.channels} with learned variance)"
            )
        if len(self.alphas_cumprod) != self.num_train_timesteps:
            raise ModelError(
                f"target.model: the scheduler in {self.path} has {len(self.alphas_cumprod)} alphas for "
                f"num_train_timesteps={self.num_train_timesteps}"
            )
        self.weights_sha256 = weights_sha256(self.folder.weights)

    # ----- description ----------------------------------------------------------------------
    def identity(self) -> str:
        """Changes whenever the weights, the noise schedule or the precision change."""
        sched = self.scheduler.config
        return (
            f"ddim:weights={self.weights_sha256}:betas={sched.get('beta_schedule')},"
            f"{sched.get('beta_start')},{sched.get('beta_end')},{self.num_train_timesteps}:dtype={self.dtype}"
        )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": self.params.model,
            "model_path": str(self.path),
            "T": self.num_train_timesteps,
            "scheduler": type(self.scheduler).__name__,
            "weights_sha256": self.weights_sha256,
            "parameters": sum(p.numel() for p in self.unet.parameters()),
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    def close(self) -> None:
        self.unet = self.unet.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ----- access -------------------------------------------------------------------------------
    def _check_shape(self, x: torch.Tensor) -> None:
        want = (self.channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise DataError(
                f"the ddim target expects images of shape [B, {want[0]}, {want[1]}, {want[2]}], got "
                f"{list(x.shape)}; convert them with target.preprocess() (the runner does this)"
            )

    @torch.no_grad()
    def eps(self, z_t: torch.Tensor, t: int, captions: Sequence[str | None] | None = None) -> torch.Tensor:
        """The U-Net's noise prediction at index ``t`` for every row (float32, on ``z_t``'s device).

        Split into chunks of ``max_batch`` rows; counts one NFE per row."""
        self._check_shape(z_t)
        t = int(t)
        if not 0 <= t < self.num_train_timesteps:
            raise ValueError(f"timestep index {t} is outside 0..{self.num_train_timesteps - 1}")
        out = []
        for chunk in z_t.split(self.params.max_batch):
            inp = self._network_input(chunk)
            steps = torch.full((inp.shape[0],), t, device=self.device, dtype=torch.long)
            e = self.unet(inp, steps).sample[:, : self.channels]  # drop a learned-variance half
            out.append(e.to(z_t.device, torch.float32))
            self.stats.nfe += inp.shape[0]
        return torch.cat(out)

    def grad_network(self):
        """White-box: the U-Net and a differentiable forward, one timestep index per row (the core
        computes per-sample gradient norms from it: ``Target.param_grad_norms``)."""

        def forward(z: torch.Tensor, steps: torch.Tensor, captions: Sequence[str | None]) -> torch.Tensor:
            self._check_shape(z)
            out = self.unet(self._network_input(z), steps.to(self.device)).sample[:, : self.channels]
            return out.float()

        return self.unet, forward

    def _variations(
        self, x: torch.Tensor, t: int, k: int, seeds: list[list[int]], captions: list[str | None], clip: bool
    ) -> torch.Tensor:
        """The base default (seeded noise + ``ddim.variation`` on the device) on all ``B * n`` rows
        at once; clipped to [-1, 1] only with ``clip`` (pixel space is model space: no decoder)."""
        self._check_shape(x)
        return super()._variations(x.to(torch.float32), t, k, seeds, captions, clip)
