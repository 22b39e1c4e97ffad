"""CLiD's caption perturbations: what the image's caption is replaced with when the loss is
measured "without" it. Each is a spec string in ``params.perturbations``:

- ``null``: the empty caption (the unconditional prediction);
- ``third-1``, ``third-2``, ``third-3``: the first, middle or last third of the caption's
  characters (``c[:n/3]``, ``c[n/3:2n/3]``, ``c[2n/3:]`` with ``n = len(c)``, cut as the official
  ``mia_CLiD_clip.py`` cuts them);
- ``clip-R`` (``0 < R <= 1``): the official importance clipping of ``mia_CLiD_impt.py`` replaces
  the ``int(R n - 0.01) + 1`` most important of the caption's ``n`` words with the end-of-text
  token ``<|endoftext|>``; the importance comes from metadata files computed outside that code,
  which a run does not have, so here the words are drawn at random without replacement, seeded
  per image and perturbation (the same words on every run, batch size and resume).
"""

from __future__ import annotations

import random
import re

#: what a clipped word becomes (CLIP's end-of-text token, as in the official code)
END_OF_TEXT = "<|endoftext|>"
_SPEC = re.compile(r"^(null|third-[123]|clip-(?P<rate>[0-9]*\.?[0-9]+))$")


def spec_problem(spec: str) -> str | None:
    """Why ``spec`` is not a perturbation (None when it is one)."""
    m = _SPEC.match(spec)
    if m is None:
        return f"{spec!r} is not a caption perturbation (null, third-1, third-2, third-3 or clip-R with 0 < R <= 1)"
    if m.group("rate") is not None and not 0 < float(m.group("rate")) <= 1:
        return f"{spec!r}: the clipped fraction R must be in (0, 1]"
    return None


def is_random(spec: str) -> bool:
    """Whether the perturbation draws (``clip-R``)."""
    return spec.startswith("clip-")


def perturb(caption: str | None, spec: str, seed: int = 0) -> str:
    """The perturbed caption (``seed``: the per-image seed of a ``clip-R`` draw)."""
    text = caption or ""
    if spec == "null":
        return ""
    if spec.startswith("third-"):
        n = len(text)
        cuts = [0, int(n / 3), int(2 * n / 3), n]
        part = int(spec[-1])
        return text[cuts[part - 1] : cuts[part]]
    rate = float(spec[len("clip-") :])
    words = text.split()
    if not words:
        return text
    count = min(len(words), int(rate * len(words) - 0.01) + 1)
    for i in random.Random(seed).sample(range(len(words)), count):
        words[i] = END_OF_TEXT
    return " ".join(words)
