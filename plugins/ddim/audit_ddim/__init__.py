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
"""

__version__ = "0.1.0"
