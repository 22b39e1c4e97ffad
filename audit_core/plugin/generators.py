"""The text-to-image generator interface, for caption-matched reference sets
(``audit reference build``).

A generator plugin subclasses :class:`Generator`, declares ``name`` and a pydantic ``Params``
model (its ``--param KEY=VALUE`` options), and implements :meth:`Generator.generate`: one image per
(prompt, seed) pair, the same image for the same pair. It is registered through the
``register_generators`` hook and must not be the audited model: a reference set stands for images
the audited model never saw.
"""

from __future__ import annotations

from typing import Any, ClassVar

from PIL import Image
from pydantic import BaseModel, ConfigDict


class GeneratorParams(BaseModel):
    """Base for generator params: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Generator:
    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = GeneratorParams
    plugin_name: ClassVar[str] = ""

    def __init__(self, params: BaseModel, device: str = "auto"):
        self.params = params
        self.device_request = device

    def identity(self) -> str:
        """What the generated pixels depend on besides (prompt, seed): the weights or server
        model and every setting. Keys the cache and is stored with the reference set."""
        return f"{self.name}:{self.params.model_dump_json()}"

    def describe(self) -> str:
        """A one-line, secret-free name for the manifest's ``generator`` column and the report,
        e.g. ``diffusers:/models/sd-2-1 (30 steps, guidance 7.5)``."""
        return self.name

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        """One RGB image per (prompt, seed): deterministic for a given pair."""
        raise NotImplementedError

    def max_batch(self) -> int:
        """How many prompts one ``generate`` call may take."""
        return int(getattr(self.params, "max_batch", 1))

    def close(self) -> None:
        """Release resources (GPU memory, connections)."""

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "plugin": self.plugin_name, "describe": self.describe()}
