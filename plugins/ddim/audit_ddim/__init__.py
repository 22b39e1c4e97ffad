"""audit-ddim: a diffusers DDPM/DDIM target for the ``audit`` framework, plus the embedded demo
(the ``builtin:digits`` dataset and the ``builtin:digits-ddpm`` model trained on its members).

Read it as a worked example of an ``audit`` plugin:

- ``plugin.py``  the pluggy hook implementations (what the entry point points at);
- ``target.py``  ``DDIMTarget``, a ``Target`` subclass serving V(x, t, k) and eps(x_t, t);
- ``loading.py`` checking and loading a diffusers pipeline folder, with clear errors;
- ``digits.py``  the built-in dataset (a fixed member/non-member split);
- ``train.py``   the recipe of the demo model, callable from Python;
- ``cli.py``     ``audit ddim train|info|convert-pytorch-ddpm``, added through ``register_commands``;
- ``pytorch_ddpm.py`` converting the papers' pytorch-ddpm checkpoints into a pipeline folder.

The public import path of the target, for subclassing it in another plugin (a wrapper that,
say, post-processes every variation)::

    from audit_ddim import DDIMParams, DDIMTarget

Both are imported on first access, so ``import audit_ddim`` (what every ``audit`` command does
through the entry point) stays free of torch and diffusers.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["DDIMParams", "DDIMTarget", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("DDIMParams", "DDIMTarget"):
        from . import target

        return getattr(target, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
