"""A test-only plugin (``pip install -e tests/plugins/audit-toy``, done by ``make setup``).

It registers ``toy-slow``: :class:`audit_core.testing.ToyTarget` (closed-form noise predictor,
exact NFE counting) with two extras for the reliability tests that drive a real ``audit run``
subprocess:

- ``delay``: seconds slept per noise-prediction call, so a run lasts long enough to be killed
  (SIGKILL) or interrupted (SIGINT) in the middle;
- ``token_env``: the name of an environment variable holding an API token, resolved at run time
  with :func:`audit_core.base.secrets.from_env` like a remote target would. With ``leak: true`` the
  target (badly) puts the token into its description and notes, to prove the
  runner's scrubbing catches it.

Its names differ from the ``toy``/``toy-variation`` targets of the ``toy_plugin`` fixture, so
installing it never collides with in-process tests.

The classes are defined on first use (:func:`slow_toy_target`, reached as the module attribute
``SlowToyTarget`` that the hook registers by reference): ``audit_core.testing`` imports torch and
pytest, and every ``audit`` command, ``audit --help`` included, imports this module.
"""

from __future__ import annotations

import time
from functools import cache

from audit_core import hookimpl
from audit_core.base import secrets


@cache
def slow_toy_target() -> type:
    """The ``toy-slow`` target class (built once, on first use)."""
    from audit_core.testing import ToyParams, ToyTarget

    class SlowToyParams(ToyParams):
        delay: float = 0.0
        token_env: str | None = None
        leak: bool = False

    class SlowToyTarget(ToyTarget):
        name = "toy-slow"
        Params = SlowToyParams

        def __init__(self, params: SlowToyParams, context=None):
            super().__init__(params, context)
            self.token = secrets.from_env(params.token_env, "target.token_env") if params.token_env else None
            if self.token and params.leak:
                self.stats.notes.append(f"authenticated with {self.token}")

        def identity(self) -> str:
            # the delay and the token do not change what the model computes
            p = self.params
            return f"toy:{p.image_size}:{p.channels}:{p.scale}:{p.shift}:{p.num_train_timesteps}"

        def eps(self, z_t, t, captions=None):
            if self.params.delay:
                time.sleep(self.params.delay)
            return super().eps(z_t, t, captions)

        def describe(self):
            d = super().describe()
            if self.token and self.params.leak:
                d["authorization"] = f"Bearer {self.token}"
                d["endpoint"] = f"https://api.example.com/v1?key={self.token}"
            return d

    return SlowToyTarget


@hookimpl
def register_targets(register):
    # a reference: the class is built (torch imported) only when a config selects `toy-slow`
    register("toy-slow", "audit_toy:SlowToyTarget")


def __getattr__(name: str):
    if name == "SlowToyTarget":
        return slow_toy_target()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
