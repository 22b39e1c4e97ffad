"""``torch-callable``: a target for any architecture, built by a function of your own.

    target:
      plugin: torch-callable
      factory: "my_models.ddpm:build"      # module:function, importable (on PYTHONPATH or installed)
      kwargs: {ckpt: /models/ckpt.pt}      # passed to the function

The function returns a mapping (or an object with these attributes):

- ``model``: a callable ``model(x_t, t) -> eps`` (e.g. an ``nn.Module``), ``x_t`` a float batch
  ``[B, C, H, W]`` in the model's space, ``t`` a long tensor ``[B]`` of timestep indices;
- ``alphas_cumprod`` (length T) or ``betas`` (length T): the training noise schedule;
- ``image_size`` and ``channels``.

The target serves both access levels (noise prediction, and the variation API through the core's
DDIM on top of it, unclipped unless the caller asks for ``clip``), so every attack runs on it. The function is your code: it runs with your
privileges, like any Python you import.
"""

from __future__ import annotations

from audit_core import hookimpl, lazy_exports

__all__ = ["Params", "TorchCallableTarget"]


@hookimpl
def register_targets(register):
    # a reference, imported on first use: `audit --help` and `audit plugins` must not load torch
    register("torch-callable", "audit_torch_callable.target:TorchCallableTarget")


# the names above load with .target on first use (torch with them)
__getattr__ = lazy_exports(__name__, __all__, "target")


# the names above load with .target on first use: entry-point discovery stays torch-free
__getattr__ = lazy_exports(__name__, __all__, "target")
