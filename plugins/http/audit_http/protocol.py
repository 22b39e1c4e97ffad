"""The ``audit-variation/1`` wire protocol, written once for both ends: ``audit serve``
(:mod:`audit_http.server`) and the ``http`` target (:mod:`audit_http.target`).

The specification is docs/http-protocol.md. This module holds what both ends must agree on:

- :data:`PROTOCOL`, the protocol's name and version;
- the JSON shapes as strict pydantic models: :class:`VariationRequest` (``POST /v1/variations``),
  :class:`Status` (``GET /``) and :class:`VariationResponse`. Strict means ``"t": "200"`` or
  ``"t": true`` is an error, not 200; the server validates requests with them and the client
  validates the server's answers with them (a server is not trusted either);
- the seed rule (:func:`derive`, :func:`seed_grid`) and the t/k resolution (:func:`resolve_tk`,
  on top of the core's one t/k rule ``audit_core.base.ddim.tk_problem``);
- bounds on what either side accepts (:data:`MAX_IMAGE_SIZE`, :func:`max_answer_bytes`).

It needs pydantic only: no web framework.
"""

from __future__ import annotations

import secrets as _pysecrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from audit_core import ddim, seeding

PROTOCOL = "audit-variation/1"
PROTOCOL_FAMILY = "audit-variation/"  # clients accept any minor change of the same major
SEED_LIMIT = 1 << seeding.SEED_BITS  # seeds are integers 0 <= s < 2**63
MAX_IMAGE_SIZE = 4096  # pixels per side a server may announce or return
MAX_CHANNELS = 4
MAX_T = 1_000_000  # longest training schedule a server may announce
MAX_STATUS_BYTES = 1 << 20  # a GET / answer larger than this is refused


class ProtocolError(ValueError):
    """A request or answer that breaks the protocol; ``reason`` says how (for a 400 or a client
    error)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def first_error(exc: ValidationError) -> str:
    """One line from a pydantic error: the field path in backquotes and what is wrong."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "body"
    return f"`{loc}`: {err.get('msg', 'invalid')}"


# ----------------------------------------------------------------------------- seeds
def derive(seed: int, index: int) -> int:
    """Position ``index`` of a seed list derived from ``seed``: the seed itself at index 0, else
    a 63-bit hash of (seed, index). Used for both levels (image within a request, variation within
    an image), so the first m of n variations equal an m-variation request's."""
    if index == 0:
        return int(seed)
    return seeding.hash_seed(f"{int(seed)}/{int(index)}")


def seed_grid(seed: Any, images: int, n: int) -> list[list[int]]:
    """The ``[images][n]`` seeds a request's ``seed`` field asks for (docs/http-protocol.md):
    a grid exactly, one seed per image (derived per variation), one seed (derived per image and
    variation) or none (a fresh random one, reported back so that the call can be replayed)."""
    if seed is None:
        seed = _pysecrets.randbits(seeding.SEED_BITS)
    if isinstance(seed, int):
        return [[derive(s, j) for j in range(n)] for s in (derive(seed, i) for i in range(images))]
    if len(seed) != images:
        raise ProtocolError(f"`seed` has {len(seed)} entries for {images} image(s)")
    if all(isinstance(s, int) for s in seed):
        return [[derive(s, j) for j in range(n)] for s in seed]
    if all(isinstance(s, list) for s in seed):
        for i, row in enumerate(seed):
            if len(row) != n:
                raise ProtocolError(f"`seed[{i}]` has {len(row)} seeds; n={n} were requested")
        return [list(row) for row in seed]
    raise ProtocolError("`seed` must be one integer, one integer per image, or one list of n integers per image")


# ----------------------------------------------------------------------------- requests
# 0 <= seed < 2**63: checked after parsing (one message for every form of `seed`)
Seed = StrictInt


class VariationRequest(BaseModel):
    """The JSON body of ``POST /v1/variations``: strict types, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)

    images: list[StrictStr] = Field(description="base64 PNG images (a data:image/png;base64, prefix is accepted)")
    t: StrictInt | None = Field(None, description="the noising step, 0 < t < T (or give strength)")
    strength: float | None = Field(None, description="t / T, in (0, 1) (or give t)")
    k: StrictInt | None = Field(None, description="the DDIM interval, dividing t (or give steps)")
    steps: StrictInt | None = Field(None, description="t / k (or give k)")
    n: StrictInt = Field(1, description="variations per image, 1 .. max_n")
    seed: Seed | list[Seed] | list[list[Seed]] | None = Field(
        None, description="one seed, one per image, one list of n per image, or none (the server picks)"
    )
    caption: StrictStr | list[StrictStr | None] | None = Field(
        None, description="one caption for every image, or one (or null) per image"
    )


def resolve_tk(req: VariationRequest, T: int) -> tuple[int, int]:
    """(t, k) from a request's ``t``/``strength`` and ``k``/``steps`` (exactly one of each),
    checked with the core's t/k rule; a :class:`ProtocolError` names the field."""
    if (req.t is None) == (req.strength is None):
        raise ProtocolError("give exactly one of `t` (timestep index) or `strength` (t / T)")
    if req.strength is not None:
        if not 0.0 < req.strength < 1.0:
            raise ProtocolError(f"`strength` must satisfy 0 < strength < 1, got {req.strength}")
        t = round(req.strength * T)
    else:
        t = req.t
    if problem := ddim.tk_problem(t, None, T):
        raise ProtocolError(f"`t`: {problem}")
    if (req.k is None) == (req.steps is None):
        raise ProtocolError("give exactly one of `k` (DDIM interval) or `steps` (t / k)")
    if req.steps is not None:
        if problem := ddim.tk_problem(t, req.steps, T, k_label="steps"):
            raise ProtocolError(f"`steps`: {problem}")
        k = t // req.steps
    else:
        k = req.k
    if problem := ddim.tk_problem(t, k, T):
        raise ProtocolError(f"`k`: {problem}")
    return t, k


# ----------------------------------------------------------------------------- answers
class Limits(BaseModel):
    """What one request may hold (``GET /`` ``limits``)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    max_batch: StrictInt = Field(64, ge=1, description="images per request")
    max_n: StrictInt = Field(64, ge=1, description="variations per image")
    max_body_bytes: StrictInt = Field(64 << 20, ge=1, description="request body bytes")


class Status(BaseModel):
    """The ``GET /`` answer. Strict and bounded: the client refuses a server announcing a
    negative channel count, a string image size or a 60000-pixel image."""

    model_config = ConfigDict(extra="ignore", strict=True)

    protocol: StrictStr
    server: StrictStr | None = None
    target: StrictStr | None = None
    model: StrictStr | None = None
    model_id: StrictStr | None = None
    kind: Literal["pixel", "latent"] = "pixel"
    T: StrictInt = Field(ge=2, le=MAX_T)
    image_size: StrictInt = Field(ge=1, le=MAX_IMAGE_SIZE)
    channels: StrictInt = Field(ge=1, le=MAX_CHANNELS)
    capabilities: list[StrictStr] = Field(default_factory=lambda: ["variation"])
    target_capabilities: list[StrictStr] | None = None
    seeds: StrictBool = True
    captions: StrictBool = False
    limits: Limits = Field(default_factory=Limits)


class VariationResponse(BaseModel):
    """The ``POST /v1/variations`` answer: ``variations[i][j]`` is variation j of image i."""

    model_config = ConfigDict(extra="ignore", strict=True)

    protocol: StrictStr = PROTOCOL
    model_id: StrictStr | None = None
    t: StrictInt | None = None
    k: StrictInt | None = None
    n: StrictInt | None = None
    variations: list[list[StrictStr]]
    seeds: list[list[StrictInt]] | None = None
    nfe: StrictInt | None = Field(None, ge=0)
    seconds: float | None = None


def png_bytes_bound(size: int, channels: int) -> int:
    """The most bytes an 8-bit ``size`` x ``size`` PNG with ``channels`` channels needs, stored
    without compression (filter bytes, zlib's stored blocks, chunk headers), with headroom for
    ancillary chunks."""
    raw = size * (size * max(channels, 3) + 1)  # a grayscale model may be answered in RGB
    return raw + raw // 1000 + 16 * 1024


def max_answer_bytes(images: int, size: int, channels: int) -> int:
    """The largest JSON answer a client accepts for ``images`` variations: their PNGs in base64
    plus 1 MiB of JSON around them. Anything larger is refused before it is read in full."""
    return 4 * (png_bytes_bound(size, channels) + 2) // 3 * images + (1 << 20)
