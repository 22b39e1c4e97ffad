"""A complete third-party attack plugin: the attack in ``attack.py``, its hook here.

``variation-similarity``: ask the target for ``n`` variations of each image at step ``t`` with
interval ``k`` and score the image by how close the *closest* variation is to it (higher = more
member-like). It needs only the variation API, so it runs against black-box targets.

Install with ``pip install -e examples/audit-example-attack`` (its tests: ``pytest
examples/audit-example-attack/tests``) and use it in audit.yaml::

    attacks:
      - {plugin: variation-similarity, params: {t: 100, k: 50, n: 2, distance: l2}}

The entry point imports this module whenever ``audit`` starts (``audit --help`` and ``audit
plugins`` included), so the hook registers the attack by reference (``"module:Class"``): the
attack module, and with it torch, is imported only when a config selects the attack.
"""

from __future__ import annotations

from audit_core import hookimpl


@hookimpl
def register_attacks(register):
    register("variation-similarity", "audit_example_attack.attack:VariationSimilarity")


def __getattr__(name: str):
    """``from audit_example_attack import VariationSimilarity`` works too (loaded on first use)."""
    if name in ("Params", "VariationSimilarity"):
        from . import attack

        return getattr(attack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
