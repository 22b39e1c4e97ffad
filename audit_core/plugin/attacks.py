"""The attack interface.

An attack plugin subclasses :class:`Attack`, declares ``name``, ``requires`` (the access levels it
needs: ``targets.VARIATION`` for black-box, ``targets.NOISE`` for grey-box) and a pydantic
``Params`` model, and implements :meth:`Attack.score` on a :class:`Batch`. Scores are "higher =
more likely a member". Randomness comes only from ``batch.seeds(draw)`` so that results do not
depend on batching, resumption or the number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel

from ..base import ddim, seeding
from ..base.params import PluginParams
from ..base.errors import ConfigError
from .targets import ACCESS_NAMES, VARIATION, Target


class AttackParams(PluginParams):
    """Base for attack params: unknown keys are errors, types are strict (see PluginParams)."""


@dataclass
class AttackContext:
    """What the runner hands an attack."""

    name: str  # the attack entry's name (results key)
    seed_key: str  # what per-image seeds derive from (the name, minus any sweep suffix)
    run_seed: int = 0
    distances: dict[str, Any] = field(default_factory=dict)  # name -> fn(a, b) -> Tensor[B]


@dataclass
class Batch:
    """A batch of images, already converted to the target's channels and size."""

    images: torch.Tensor  # [B, C, H, W] in [-1, 1]
    ids: list[str]
    captions: list[str | None]
    run_seed: int = 0
    seed_key: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def seeds(self, draw: int = 0) -> list[int]:
        """One seed per image for the given draw index (draw 0, 1, 2, ... are independent)."""
        return [seeding.derive_seed(self.run_seed, self.seed_key, i, draw) for i in self.ids]

    def seed_grid(self, n: int, first_draw: int = 0) -> list[list[int]]:
        """Seeds for n draws of every image, ``[B][n]``: ``seed_grid(n)[i][d]`` is draw
        ``first_draw + d`` of image i. What ``target.variation(x, t, k, seeds[B][n])`` takes; the
        first m of n draws equal the seeds of an m-draw run (sweeps share queries)."""
        return [
            [seeding.derive_seed(self.run_seed, self.seed_key, i, first_draw + d) for d in range(n)]
            for i in self.ids
        ]

    def seed_matrix(self, n: int, first_draw: int = 0) -> list[int]:
        """:meth:`seed_grid` flattened image-major: rows i*n ... i*n+n-1 belong to image i (for
        per-row noise such as ``seeding.randn(shape, batch.seed_matrix(n))``)."""
        return [s for row in self.seed_grid(n, first_draw) for s in row]

    def repeat(self, n: int) -> tuple[torch.Tensor, list[str | None]]:
        """Images and captions repeated image-major n times (matching :meth:`seed_matrix`; for
        per-row work such as grey-box noise. ``target.variation`` takes the images once and
        ``seed_grid(n)`` instead)."""
        return self.images.repeat_interleave(n, dim=0), self.repeat_captions(n)

    def repeat_captions(self, n: int) -> list[str | None]:
        """The captions repeated image-major n times (rows i*n .. i*n+n-1 are image i's)."""
        return [c for c in self.captions for _ in range(n)]


@dataclass
class AttackOutput:
    scores: torch.Tensor  # [B], higher = more likely a member
    residuals: torch.Tensor | None = None  # [B, C, H, W] residual maps (for the learned scorer)
    reconstructions: torch.Tensor | None = None  # [B, C, H, W] in [-1, 1] (for the gallery)
    extras: dict[str, Any] = field(default_factory=dict)  # per-batch JSON-able notes
    #: [B] variation rows each image used, when an attack spends unequal amounts (adaptive
    #: budgets); None: the batch's measured queries and NFEs are split evenly
    queries: torch.Tensor | None = None
    #: [B, F] per-image numbers the attack's own calibration needs besides the score (an adaptive
    #: budget's log distance after each prefix of its draws); stored with the scores and handed to
    #: :meth:`Attack.calibrated_params` as ``features`` (None: nothing to keep)
    features: torch.Tensor | None = None


class Attack:
    name: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()
    Params: ClassVar[type[BaseModel]] = AttackParams
    #: True when ``score`` returns residual maps, so ``scorer: classifier`` can be used.
    residual_maps: ClassVar[bool] = False
    #: True for attacks that combine other entries' scores after scoring (audit_core.combine)
    combines: ClassVar[bool] = False
    #: named param sets (``params: {preset: NAME}``), e.g. a paper's published setting; the
    #: ``Params`` model must then have a ``preset`` field (see :func:`resolve_params`)
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    plugin_name: ClassVar[str] = ""
    #: U-Net evaluations one image costs, when the attack knows (may be a property of the
    #: params); the core warns when the target's counters measure something else
    expected_nfe_per_image: ClassVar[float | None] = None

    def __init__(self, params: BaseModel, target: Target, context: AttackContext):
        self.params = params
        self.target = target
        self.context = context

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass's ``check``, ``score`` and ``describe`` are guarded: an exception names
        the attack and its distribution (see audit_core.guard)."""
        super().__init_subclass__(**kwargs)
        from .guard import guard_methods

        guard_methods(cls, ("check", "score", "describe"))

    @classmethod
    def defaults_for(cls, target: Target) -> dict[str, Any]:
        """Param defaults that depend on the target (e.g. t=500 for latent targets)."""
        return {}

    def check(self) -> None:
        """Validate params against the target; raise ConfigError naming the param."""

    def score(self, batch: Batch) -> AttackOutput:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Extra JSON-able facts for results.json (variant, distance, ...)."""
        return {}

    # what one image costs: the core sizes its memory check, the query budget and the second
    # stage from these and never reads an attack's params (override where the defaults are wrong)
    def queries_per_image(self) -> int:
        """The most ``target.variation`` rows (variation queries) one image can cost: for an
        adaptive budget, its ceiling. Default: 1 for an attack that requires VARIATION, else 0."""
        return 1 if VARIATION in self.requires else 0

    def rows_per_image(self) -> int:
        """Image-sized rows one image holds at once while scored (variations, or a grey-box
        attack's noise draws): the memory check multiplies the batch size by it. Default:
        ``max(1, queries_per_image())``."""
        return max(1, int(self.queries_per_image()))

    def nfe_per_image(self) -> float | None:
        """U-Net evaluations one image costs, when the attack knows (None: unknown); the core warns
        when the target's counters measure something else. Default: ``expected_nfe_per_image``."""
        return self.expected_nfe_per_image

    def with_budget(self, factor: int) -> dict[str, Any] | None:
        """Param updates that make this attack spend ``factor`` times its queries per image (what
        copyright mode's second stage rescores with), or None when it cannot (the default: such an
        entry is scored in stage 1 only)."""
        return None

    def needs_calibration(self) -> bool:
        """True when the attack sets some params from labelled calibration images (an adaptive
        budget's threshold): the runner then scores the run's calibration split first, calls
        :meth:`calibrated_params` with those scores and labels, scores the other images with the
        updated params, and reports metrics on the other images only."""
        return False

    def calibrated_params(self, scores: Any, labels: Any) -> dict[str, Any]:
        """Param updates from the calibration images' scores ``[N]`` and labels ``[N]`` (1 = member).
        An override may also take ``features`` (``[N, F]``, what its ``AttackOutput.features``
        returned for those images; None when it returned none): the runner passes it by keyword
        when the signature names it."""
        return {}

    # helpers for subclasses -----------------------------------------------------------------
    def check_tk(self, t: int, k: int | None = None, t_label: str = "t", k_label: str = "k") -> None:
        """``0 < t < T`` (T read from the target) and, when given, ``k`` positive and dividing t:
        ``ddim.tk_problem``, the project's one t/k rule, as a ConfigError naming the attack."""
        problem = ddim.tk_problem(t, k, self.target.num_train_timesteps, t_label, k_label)
        if problem:
            raise ConfigError(f"attack {self.context.name!r}: {problem}")

    def check_t(self, t: int, label: str = "t") -> None:
        """``0 < t < T`` (:meth:`check_tk` without k)."""
        self.check_tk(t, None, label)

    def check_divides(self, t: int, k: int, t_label: str = "t", k_label: str = "k") -> None:
        """``k`` positive and dividing ``t`` (``t`` itself is checked by :meth:`check_t`)."""
        problem = ddim.tk_problem(t, k, None, t_label, k_label)
        if problem:
            raise ConfigError(f"attack {self.context.name!r}: {problem}")

    def distance(self, name: str):
        try:
            return self.context.distances[name]
        except KeyError:
            from .manager import did_you_mean

            avail = ", ".join(sorted(self.context.distances))
            raise ConfigError(
                f"attack {self.context.name!r}: unknown distance {name!r}.{did_you_mean(name, self.context.distances)} "
                f"Available: {avail}."
            ) from None


def resolve_params(attack_cls: type[Attack], target: Target, params: dict[str, Any]) -> dict[str, Any]:
    """The param values to validate for one attack entry: the target-dependent defaults, then the
    named preset's values (``params.preset``), then the user's own values (which always win).
    Raises ConfigError (naming the available presets) for an unknown preset. The factory's
    :func:`audit_core.plugin.factory.resolve_values` (kept here for old callers)."""
    from .factory import check_preset as _check, resolve_values

    _check(attack_cls, params)
    return resolve_values(attack_cls, params, target)


def check_preset(attack_cls: type[Attack], params: dict[str, Any]) -> None:
    """Raise ConfigError, naming the available presets, when ``params.preset`` is not one of the
    attack's (no target needed: checked before the model loads). See the factory's."""
    from .factory import check_preset as _check

    _check(attack_cls, params)


def check_access(attack_cls: type[Attack], target: Target, attack_name: str) -> None:
    """Refuse an attack that needs access the target cannot serve, naming all three."""
    missing = [a for a in sorted(attack_cls.requires) if a not in target.capabilities]
    if missing:
        from ..base.errors import AccessError

        need = ", ".join(ACCESS_NAMES.get(m, m) for m in missing)
        has = ", ".join(ACCESS_NAMES.get(c, c) for c in sorted(target.capabilities)) or "nothing"
        raise AccessError(
            f"attack {attack_name!r} (plugin {attack_cls.name!r}) needs {need}, but target "
            f"{target.name!r} only offers {has}. Use a target with that access or a black-box attack "
            f"such as rediffuse."
        )


def mean_over(x: torch.Tensor, n: int) -> torch.Tensor:
    """Average image-major groups of n rows: [B*n, ...] -> [B, ...]."""
    return x.reshape(x.shape[0] // n, n, *x.shape[1:]).mean(dim=1)


def flat_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first."""
    return x.reshape(x.shape[0], -1).sum(dim=1)
