"""The ``torch-callable`` target: a model built by a function of your own (the package
docstring describes what the function returns)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field

from audit_core import ConfigError, ModelError, NOISE, VARIATION, Target, TargetContext, TargetParams


class Params(TargetParams):
    factory: str = Field(description="module.path:function returning model, schedule, image_size, channels")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    max_batch: int = Field(256, ge=1)


def _get(spec: Any, key: str) -> Any:
    if isinstance(spec, dict):
        return spec.get(key)
    return getattr(spec, key, None)


class TorchCallableTarget(Target):
    name = "torch-callable"
    kind = "pixel"
    capabilities = frozenset({VARIATION, NOISE})
    Params = Params

    def __init__(self, params: Params, context: TargetContext | None = None):
        super().__init__(params, context)
        module_name, sep, func_name = params.factory.partition(":")
        if not sep or not module_name or not func_name:
            raise ConfigError(f"target.factory: {params.factory!r} must look like 'package.module:function'")
        try:
            fn = getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"target.factory: cannot import {params.factory!r}: {exc}") from None
        spec = fn(**params.kwargs)
        model = _get(spec, "model")
        if model is None or not callable(model):
            raise ModelError(f"target.factory: {params.factory} returned no callable `model`")
        abar = _get(spec, "alphas_cumprod")
        if abar is None and _get(spec, "betas") is not None:
            abar = torch.cumprod(1 - torch.as_tensor(_get(spec, "betas"), dtype=torch.float64), 0)
        if abar is None:
            raise ModelError(f"target.factory: {params.factory} returned neither `alphas_cumprod` nor `betas`")
        self.alphas_cumprod = torch.as_tensor(abar, dtype=torch.float64).cpu()
        self.num_train_timesteps = len(self.alphas_cumprod)
        try:
            self.image_size = int(_get(spec, "image_size"))
            self.channels = int(_get(spec, "channels"))
        except (TypeError, ValueError):
            raise ModelError(f"target.factory: {params.factory} must return integer `image_size` and `channels`") from None
        self._place()  # run.dtype (fp32 unless set), run.channels_last, run.compile
        self.model = self._prepare_network(model) if isinstance(model, torch.nn.Module) else model

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "factory": self.params.factory}

    @torch.no_grad()
    def eps(self, z_t: torch.Tensor, t: int, captions: Sequence[str | None] | None = None) -> torch.Tensor:
        out = []
        for chunk in z_t.split(self.params.max_batch):
            steps = torch.full((chunk.shape[0],), int(t), device=self.device, dtype=torch.long)
            out.append(self.model(self._network_input(chunk), steps).to(z_t.device, torch.float32))
            self.stats.nfe += chunk.shape[0]
        return torch.cat(out)

    # The variation API is the base class's ``_variations`` (seeded noise, the core's DDIM over
    # ``eps``): pixel space is model space, so nothing is decoded, and a variation is clipped to
    # [-1, 1] only when the caller passes ``clip=True``.
