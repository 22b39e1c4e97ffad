"""ReDiffuse (Li, Dong, He, Zhang, "Towards Black-Box Membership Inference Attack for Diffusion
Models", ICML 2025, arXiv 2405.20771), written as a worked example of an ``audit`` attack plugin.

**Black-box**: the attack declares ``requires = {VARIATION}`` and calls nothing but
``self.target.variation(x, t, k, seeds, captions)``, the image-to-image endpoint
``V(x, t, k)``: noise ``x`` to step ``t`` with fresh noise, denoise with deterministic DDIM at
interval ``k``, return the image. So it runs against any target, including a remote API that
offers nothing else. (The one exception is opt-in: ``latent_reference: roundtrip`` also calls the
target's VAE ``encode``/``decode``, and is refused on targets without one.)

Intuition: the model's noise prediction error on a training image is close to zero-mean, so each
variation is a nearly unbiased estimate of the image and the mean of ``n`` independent variations
converges on it; for a non-member the mean stays away. Scores are "higher = more likely a member".

Pixel variant (DDPM/DDIM targets; defaults ``t=200, k=100, n=10, distance=l2``)::

    x_bar    = mean_i V(x, t, k)  for i = 1..n      (n queries, n*t/k NFEs per image; unclipped
                                                    unless clip: true, like the official code)
    score    = -D(x, x_bar)                          (D from the core's distance registry)
    residual = |x - x_bar|                           (for `scorer: classifier`, the paper's best)

Latent variant (Stable-Diffusion-like targets; defaults ``t=10, k=10, n=1, distance=ssim``): the
VAE decoder is lossy, so two reconstructions are compared instead of the original::

    rec1, rec2 = mean of draws 0, 2, 4, ... and mean of draws 1, 3, 5, ...   (2n queries)
      or, with latent_reference: roundtrip, rec2 = decode(encode(x))          (n queries)
    score    = -D(rec1, rec2)
    residual = |rec1 - rec2|

With ``distance: ssim`` the score is the SSIM index itself (``1 - D``: the registry's ssim
distance is ``1 - SSIM``), which ranks exactly like ``-D`` and reads naturally.

How the plugin uses the framework (copy these patterns):

- ``Params`` is a pydantic model (unknown keys are errors, with the audit.yaml line);
  ``defaults_for(target)`` supplies the latent defaults on latent targets; user values win.
- ``check()`` validates params against the target before any image is scored (``ConfigError``,
  CLI exit 2, naming the param) and resolves the distance function once.
- ``score()`` asks for all ``n`` draws of a batch in **one** ``variation`` call:
  ``variation(batch.images, t, k, batch.seed_grid(n), batch.captions)`` answers
  ``[B, n, C, H, W]``, and the seed of draw ``d`` of an image depends only on (run seed, attack
  name, image id, ``d``). So scores do not depend on batch size, workers or resumption, and the first ``m`` of
  ``n`` draws are exactly an ``m``-draw run's (a sweep over ``n`` shares its queries through the
  query cache).
- Queries and NFEs per image are not computed here: the core measures them from the target's
  counters around each ``score`` call.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from audit_core import Attack, AttackOutput, AttackParams, Batch

from . import adaptive
from audit_core import ConfigError, VARIATION, Target

#: the paper's defaults per variant (pixel = DDIM on CIFAR/STL; latent = Stable Diffusion)
PIXEL_DEFAULTS: dict[str, Any] = {"t": 200, "k": 100, "n": 10, "distance": "l2"}
LATENT_DEFAULTS: dict[str, Any] = {"t": 10, "k": 10, "n": 1, "distance": "ssim"}
#: the official scripts' settings (github lijingwei0502/diffusion_mia): ``params: {preset: NAME}``
#: fills these in before your own values; the remaining differences are listed in README.md
PRESETS: dict[str, dict[str, Any]] = {
    # DDIM/attack.py main(): interval 200, k 100, average 10, residual |x - x_bar|^1 (norm 1)
    "paper-ddim": {"variant": "pixel", "t": 200, "k": 100, "n": 10, "distance": "l1"},
    # Stable_Diffusion/attack.py main(): interval 50, k 50, average 1, the reference is the
    # decoded latent of x, SSIM of the greyscale uint8 images (skimage defaults)
    "paper-sd": {"variant": "latent", "t": 50, "k": 50, "n": 1, "distance": "ssim-grey-uint8", "latent_reference": "roundtrip"},
}
#: the official SD script's classifier-free guidance (a target setting: stable-diffusion's guidance_scale)
PAPER_SD_GUIDANCE = 7.5


class ReDiffuseParams(AttackParams):
    """``attacks[].params`` of ``plugin: rediffuse`` (unknown keys are errors).

    The field defaults are the pixel ones; on a latent target :meth:`ReDiffuse.defaults_for`
    replaces them with :data:`LATENT_DEFAULTS` before your values are applied."""

    preset: Literal["paper-ddim", "paper-sd"] | None = Field(
        None, description="the official scripts' setting (paper-ddim | paper-sd); your own values win"
    )
    variant: Literal["auto", "pixel", "latent"] = Field(
        "auto", description="auto: latent on latent targets (target.kind), pixel otherwise"
    )
    t: int = Field(PIXEL_DEFAULTS["t"], description="the step images are noised to (0 < t < T); 10 on latent targets")
    k: int = Field(PIXEL_DEFAULTS["k"], description="DDIM sampling interval, must divide t; 10 on latent targets")
    n: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        PIXEL_DEFAULTS["n"], description="variations averaged per reconstruction; 1 on latent targets; auto: adaptive (pixel, l2)"
    )
    max_n: int = Field(10, ge=2, description="n: auto - the most variations per image")
    min_n: int = Field(1, ge=1, description="n: auto - the variations every image gets first")
    stop_z: float = Field(
        2.5, gt=0, description="n: auto - stop once the predicted max_n-draw distance is stop_z calibrated standard deviations from the threshold"
    )
    stop_threshold: float | None = Field(
        None, description="n: auto - the l2 distance threshold; calibrated on the calibration images when not given"
    )
    stop_model: list[Annotated[list[float], Field(min_length=3, max_length=3)]] | None = Field(
        None,
        description="n: auto - [a_m, b_m, s_m] for m = 1 .. max_n - 1 (log d_max ~ a_m log d_m + b_m, residual sd s_m); "
        "fitted on the calibration images when not given",
    )
    distance: str = Field(
        PIXEL_DEFAULTS["distance"],
        description="a registered distance (built in: l2, l1, mse, ssim); ssim on latent targets",
    )
    clip: bool = Field(
        False,
        description="clip every variation to [-1, 1] before averaging (the official code averages unclipped outputs)",
    )
    latent_reference: Literal["variation", "roundtrip"] = Field(
        "variation",
        description="latent variant: compare with a second variation, or with decode(encode(x)) (needs a VAE)",
    )


class ReDiffuse(Attack):
    name = "rediffuse"
    requires = frozenset({VARIATION})  # black-box: the variation API is all it needs
    Params = ReDiffuseParams
    presets = PRESETS
    residual_maps = True  # score() returns residual maps, so `scorer: classifier` is available

    # ------------------------------------------------------------------ configuration
    @classmethod
    def defaults_for(cls, target: Target) -> dict[str, Any]:
        """The paper's defaults for the variant ``auto`` picks on this target. (Forcing
        ``variant`` on a target of the other kind keeps these; set t, k, n, distance too.)"""
        return dict(LATENT_DEFAULTS if target.kind == "latent" else PIXEL_DEFAULTS)

    @property
    def variant(self) -> str:
        """The variant in use: ``params.variant``, or for ``auto`` the target's kind."""
        if self.params.variant != "auto":
            return self.params.variant
        return "latent" if self.target.kind == "latent" else "pixel"

    def check(self) -> None:
        p, name = self.params, self.context.name
        self.check_t(p.t, "t")  # 0 < t < T, T read from the target
        self.check_divides(p.t, p.k, "t", "k")
        self.dist = self.distance(p.distance)  # ConfigError naming the distance and the choices
        if p.n == "auto":
            if self.variant != "pixel" or p.distance != "l2":
                raise ConfigError(
                    f"attack {name!r}: n=auto (adaptive budget) needs the pixel variant and distance l2 "
                    f"(this entry: variant={self.variant!r}, distance={p.distance!r})"
                )
            if p.min_n > p.max_n:
                raise ConfigError(f"attack {name!r}: min_n={p.min_n} must be <= max_n={p.max_n}")
            if p.stop_model is not None and len(p.stop_model) != p.max_n - 1:
                raise ConfigError(
                    f"attack {name!r}: stop_model needs one [a, b, s] per prefix m = 1 .. max_n - 1 "
                    f"({p.max_n - 1} for max_n={p.max_n}); it has {len(p.stop_model)}"
                )
        if p.latent_reference == "roundtrip":
            if self.variant != "latent":
                raise ConfigError(
                    f"attack {name!r}: latent_reference=roundtrip applies to the latent variant only "
                    f"(this run uses variant={self.variant!r})"
                )
            if not has_vae(self.target):
                raise ConfigError(
                    f"attack {name!r}: latent_reference=roundtrip needs a target with a VAE (encode/decode); "
                    f"target {self.target.name!r} has none. Use latent_reference: variation"
                )

    def queries_per_image(self) -> int:
        """Variations per image (for ``n: auto``, the most: ``max_n``)."""
        p = self.params
        if p.n == "auto":
            return p.max_n
        if self.variant == "latent" and p.latent_reference == "variation":
            return 2 * p.n
        return p.n

    def with_budget(self, factor: int) -> dict[str, Any] | None:
        """``n`` x ``factor`` for copyright mode's second stage; None with ``n: auto`` (its budget
        is adaptive already: stage 1 only)."""
        return None if self.params.n == "auto" else {"n": self.params.n * factor}

    def describe(self) -> dict[str, Any]:
        p = self.params
        out: dict[str, Any] = {"variant": self.variant, "distance": p.distance}
        if self.variant == "pixel":
            out["statistic"] = f"{self._score_text()} between x and the mean of n={p.n} variations V(x, t={p.t}, k={p.k})"
            if p.n == "auto":
                out["statistic"] = (
                    f"-l2 between x and the mean of min_n={p.min_n}..max_n={p.max_n} variations V(x, t={p.t}, k={p.k}); "
                    f"an image that stops early is scored by its max_n-draw distance predicted from the calibration "
                    f"images (stop_z={p.stop_z}, threshold {p.stop_threshold})"
                )
        else:
            ref = "decode(encode(x))" if p.latent_reference == "roundtrip" else "the mean of the odd draws"
            out["latent_reference"] = p.latent_reference
            out["statistic"] = f"{self._score_text()} between the mean of the even draws and {ref} (t={p.t}, k={p.k}, n={p.n})"
        out["expected_queries_per_image"] = self.queries_per_image()
        if p.preset is not None:
            out["preset"] = p.preset
            notes = self.preset_notes()
            if notes:
                out["preset_notes"] = notes
        return out

    def preset_notes(self) -> list[str]:
        """Where this run still differs from the preset's official setting for reasons outside the
        attack's params (the target's guidance; the scorer)."""
        notes = []
        if self.params.preset == "paper-sd":
            g = getattr(getattr(self.target, "params", None), "guidance_scale", None)
            if g != PAPER_SD_GUIDANCE:
                notes.append(
                    f"the official SD script samples with classifier-free guidance {PAPER_SD_GUIDANCE} and an empty "
                    f"negative prompt; this target uses guidance_scale={g} (set target.guidance_scale: {PAPER_SD_GUIDANCE})"
                )
        if self.params.preset == "paper-ddim":
            notes.append(
                "the official DDIM script scores every attack with its ResNet-18 on the residual maps: use "
                "`scorer: {kind: classifier, recipe: paper}` on this entry to reproduce that"
            )
        return notes

    def _score_text(self) -> str:
        return "SSIM" if self._is_ssim() else f"-{self.params.distance}"

    def _is_ssim(self) -> bool:
        return self.params.distance in ("ssim", "ssim-grey-uint8")

    # ------------------------------------------------------------------ adaptive budget
    def needs_calibration(self) -> bool:
        """``n: auto`` without a ``stop_threshold`` or ``stop_model``: the runner scores the
        calibration images first (whole budget, keeping their prefix distances as features) and
        calls :meth:`calibrated_params` with their scores."""
        p = self.params
        return p.n == "auto" and (p.stop_threshold is None or p.stop_model is None)

    def calibrated_params(self, scores, labels, features=None) -> dict[str, Any]:
        """The threshold (unless given) and the prefix-to-final fit from the calibration images
        (``features``: their ``[N, max_n]`` prefix log distances). Without features (a run
        directory from an older version) no fit is possible and every image keeps the whole budget."""
        p = self.params
        out: dict[str, Any] = {}
        if p.stop_threshold is None:
            out["stop_threshold"] = adaptive.calibrate_threshold(scores, labels)
        if p.stop_model is None and features is not None and len(features) >= 3:
            out["stop_model"] = adaptive.fit_stop_model(features)
        return out

    # ------------------------------------------------------------------ scoring
    def _similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Higher = closer: ``-D(a, b)``, or the SSIM index ``1 - D`` for ssim."""
        d = self.dist(a, b).float()
        return 1.0 - d if self._is_ssim() else -d

    def _variations(self, batch: Batch, draws: int, first_draw: int = 0) -> torch.Tensor:
        """``draws`` variations of every image in ONE call: ``[B, draws, C, H, W]`` (float32 on
        the images' device); draw d of image i uses ``batch.seed_grid(draws, first_draw)[i][d]``,
        i.e. draw ``first_draw + d`` (seeds do not depend on the other images)."""
        p = self.params
        return self.target.variation(
            batch.images, p.t, p.k, batch.seed_grid(draws, first_draw), batch.captions, clip=p.clip
        )

    def score(self, batch: Batch) -> AttackOutput:
        if self.params.n == "auto":
            return adaptive.score_adaptive(self, batch)
        x = batch.images.float()
        n = self.params.n
        if self.variant == "pixel":
            x_bar = self._variations(batch, n).mean(dim=1)
            return AttackOutput(scores=self._similarity(x, x_bar), residuals=(x - x_bar).abs(), reconstructions=x_bar)
        if self.params.latent_reference == "roundtrip":
            rec1 = self._variations(batch, n).mean(dim=1)
            rec2 = self.target.decode(self.target.encode(x, batch.captions), batch.captions).float()
        else:
            v = self._variations(batch, 2 * n)  # draws 0..2n-1: the first 2m are an m-run's
            rec1, rec2 = v[:, 0::2].mean(dim=1), v[:, 1::2].mean(dim=1)
        return AttackOutput(scores=self._similarity(rec1, rec2), residuals=(rec1 - rec2).abs(), reconstructions=rec1)


def has_vae(target: Target) -> bool:
    """Whether the target overrides the identity ``encode``/``decode`` of the base class."""
    cls = type(target)
    return cls.encode is not Target.encode and cls.decode is not Target.decode
