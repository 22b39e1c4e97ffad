"""Request templates: how one variation ``V(x, t, k)`` with its seed becomes a service's request.

Services other than ``audit serve`` have no ``t``, ``k`` or seed of their own: Hugging Face's
image-to-image task takes free-form ``parameters``, a Gradio app takes its inputs in order, a
ComfyUI graph holds them in its nodes. Each is a JSON-like *template* in which a string that is
exactly a placeholder is replaced by a typed value (other strings, numbers and constants are sent
as they are):

==================  ============================================================================
placeholder         value
==================  ============================================================================
``{t}``             the noising step t (int, 0 < t < T)
``{k}``             the DDIM interval k (int)
``{strength}``      t / T (float), img2img's ``strength`` / ``denoising_strength`` / ``denoise``
``{steps}``         t / k (int): the denoising steps that run
``{total_steps}``   the smallest N with ``int(min(strength, 0.999) * N) == t / k`` (int): the
                    ``num_inference_steps`` / ``steps`` of diffusers' and A1111's img2img, which
                    run ``int(strength * N)`` of N steps
``{seed}``          the variation's seed modulo ``2**seed_bits`` (int)
``{prompt}``        the image's caption, else the ``prompt`` param (str)
``{image}``         the image (how depends on the service: a file for Gradio, an uploaded name
                    for ComfyUI; Hugging Face sends it as ``inputs``)
==================  ============================================================================

A template without ``{seed}`` means that the service takes no seed: its variations are not
reproducible, and a resumed run relies on the query cache.
"""

from __future__ import annotations

import re
from typing import Any

from audit_core import ConfigError

PLACEHOLDERS = ("t", "k", "strength", "steps", "total_steps", "seed", "prompt", "image")
_EXACT = re.compile(r"^\{(\w+)\}$")


def placeholders(template: Any) -> set[str]:
    """The placeholder names used anywhere in ``template``."""
    if isinstance(template, str):
        m = _EXACT.match(template)
        return {m.group(1)} if m else set()
    if isinstance(template, dict):
        return set().union(*(placeholders(v) for v in template.values())) if template else set()
    if isinstance(template, (list, tuple)):
        return set().union(*(placeholders(v) for v in template)) if template else set()
    return set()


def check(template: Any, where: str, allowed: tuple[str, ...] = PLACEHOLDERS) -> set[str]:
    """The placeholders of ``template``; an unknown one is a :class:`ConfigError` naming ``where``."""
    used = placeholders(template)
    unknown = sorted(used - set(allowed))
    if unknown:
        raise ConfigError(
            f"{where}: unknown placeholder {{{unknown[0]}}}; use one of "
            + ", ".join("{" + p + "}" for p in allowed)
        )
    return used


def fill(template: Any, values: dict[str, Any]) -> Any:
    """A copy of ``template`` with every placeholder string replaced by its value."""
    if isinstance(template, str):
        m = _EXACT.match(template)
        return values[m.group(1)] if m and m.group(1) in values else template
    if isinstance(template, dict):
        return {key: fill(v, values) for key, v in template.items()}
    if isinstance(template, (list, tuple)):
        return [fill(v, values) for v in template]
    return template


def total_steps(t: int, k: int, T: int) -> int:
    """The smallest ``N`` for which an img2img pipeline given ``strength = t / T`` and ``N``
    steps runs ``t / k`` of them: ``int(min(strength, 0.999) * N) == t / k`` (A1111 caps the
    strength at 0.999; diffusers' ``int(N * strength)`` agrees below that)."""
    strength = t / T
    want = t // k
    steps = max(want, round(want / strength))
    s = min(strength, 0.999)
    while int(s * steps) < want:  # float rounding: e.g. int(0.29 * 100) == 28
        steps += 1
    while steps > 1 and int(s * (steps - 1)) >= want:
        steps -= 1
    return steps


def values(t: int, k: int, T: int, seed: int, seed_bits: int, prompt: str, image: Any = None) -> dict[str, Any]:
    """The placeholder values of one variation."""
    return {
        "t": int(t), "k": int(k), "strength": t / T, "steps": t // k, "total_steps": total_steps(t, k, T),
        "seed": int(seed) % (1 << seed_bits), "prompt": prompt, "image": image,
    }
