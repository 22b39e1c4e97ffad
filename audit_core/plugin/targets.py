"""The target interface: a model adapter that serves a variation API and, where possible,
noise-prediction (grey-box) access.

A target plugin subclasses :class:`Target`, declares ``name``, ``kind``, ``capabilities`` and a
pydantic ``Params`` model for its ``target:`` mapping in audit.yaml, and implements
``_variation`` (black-box) and/or ``encode``/``eps`` (grey-box). The DDIM math lives in
``audit_core.ddim``; a pixel target's ``_variation`` is usually one call to
``ddim.variation(self.eps, ...)``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel

from ..base.config import resolve_path
from ..base.lru import LRU
from ..base.params import PluginParams
from ..base.errors import ConfigError
# the interface's parts, each in its module, all importable from here (as before)
from .capabilities import ACCESS_NAMES, GRADIENTS, NOISE, TEXT, VARIATION  # noqa: F401
from .counting import Stats, _counted, _rows  # noqa: F401
from .variations import VariationAPI, _seed_grid  # noqa: F401
from .weights import PICKLE_SUFFIXES, _file_sha256, pipeline_folder, require_weights, weights_sha256  # noqa: F401


class TargetParams(PluginParams):
    """Base for target params: unknown keys are errors, types are strict (see PluginParams)."""


@dataclass
class TargetContext:
    """What the runner hands a target: the device request, the query cache (or None), the
    audit.yaml's folder and the run's speed settings (``run.dtype``, ``run.channels_last``,
    ``run.compile``; a target's own ``dtype`` param, when not ``auto``, wins over ``run.dtype``)."""

    device: str = "auto"
    cache: Any = None
    config_dir: Any = None  # folder of the audit.yaml, for relative model paths
    dtype: str = "auto"  # run.dtype: auto | fp32 | fp16 | bf16
    channels_last: bool = False  # run.channels_last: NHWC convolutions (faster on recent GPUs)
    compile: bool = False  # run.compile: torch.compile the network (slow start, faster steps)

    def path(self, p: str | Path) -> Path:
        """A model path from the config, relative to the audit.yaml's folder when known."""
        return resolve_path(p, self.config_dir)


def resolve_device(request: str = "auto") -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cpu``; ``cuda`` / ``cuda:N`` (checked)."""
    request = (request or "auto").strip()
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if request == "cpu":
        return torch.device("cpu")
    if request.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"run.device: {request!r} was requested but no CUDA device is available")
        dev = torch.device(request)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"run.device: {request!r} does not exist ({torch.cuda.device_count()} GPUs)")
        return dev
    raise ConfigError(f"run.device: {request!r} is not one of auto, cpu, cuda, cuda:N")


def native_bf16() -> str | None:
    """How this CPU computes bf16 natively (``"AMX"``, ``"AVX512-BF16"``), or None (then bf16
    matmuls and convolutions are emulated and slower than fp32)."""
    cpu = getattr(torch, "cpu", None)
    try:
        if cpu is not None and getattr(cpu, "_is_amx_tile_supported", lambda: False)():
            return "AMX"
        if cpu is not None and getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
            return "AVX512-BF16"
    except Exception:  # a torch build without the probes
        return None
    return None


def resolve_dtype(request: str, device: torch.device, cpu_half: bool = False) -> torch.dtype:
    """fp32 / fp16 / bf16 (``auto``: fp32) as a torch dtype. On the CPU fp16 runs fp32, and so
    does bf16 unless ``cpu_half`` (a target that measured bf16 to pay off on the CPU, e.g.
    Stable Diffusion) and the CPU computes bf16 natively (:func:`native_bf16`)."""
    table = {"auto": torch.float32, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if request not in table:
        raise ConfigError(f"target dtype {request!r} is not one of {', '.join(table)}")
    if device.type == "cpu" and request == "bf16" and cpu_half and native_bf16():
        return torch.bfloat16
    if device.type == "cpu" and request in ("fp16", "bf16"):
        return torch.float32  # fp32 on the CPU
    return table[request]


class Target(VariationAPI):
    """Base class of every target. Images are float tensors ``[B, C, H, W]`` in [-1, 1]."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "pixel"  # "pixel" or "latent"
    capabilities: ClassVar[frozenset[str]] = frozenset({VARIATION})
    Params: ClassVar[type[BaseModel]] = TargetParams
    plugin_name: ClassVar[str] = ""

    #: set by subclasses in __init__
    image_size: int = 0
    channels: int = 0
    num_train_timesteps: int = 1000
    alphas_cumprod: torch.Tensor | None = None  # float64 on the CPU; None when unknown (remote)
    device: torch.device = torch.device("cpu")

    def __init__(self, params: BaseModel, context: TargetContext | None = None):
        self.params = params
        self.context = context or TargetContext()
        self.stats = Stats()

    @property
    def cache(self) -> Any:
        """The query cache (or None): the context's, the one handle the runner gave this target."""
        return self.context.cache

    @cache.setter
    def cache(self, value: Any) -> None:
        self.context.cache = value

    #: methods the core calls on a target; a subclass's own versions are guarded (a failure
    #: names the target and its distribution: see audit_core.guard)
    GUARDED: ClassVar[tuple[str, ...]] = (
        "_variation", "_variations", "encode", "decode", "preprocess", "identity", "describe", "close", "nfe_per_query", "max_batch",
        "grad_network",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """The core counts: a subclass's ``eps`` counts one NFE per row and its ``variation``
        one query per row, unless the implementation counted itself (old-style targets that do
        ``self.stats.nfe += rows`` are not counted twice). Its methods are guarded."""
        super().__init_subclass__(**kwargs)
        from .guard import guard_methods

        if "eps" in cls.__dict__:
            cls.eps = _counted(cls.__dict__["eps"], "nfe")
        if "variation" in cls.__dict__:
            cls.variation = _counted(cls.__dict__["variation"], "queries")
        guard_methods(cls, cls.GUARDED)
        if "_variation" in cls.__dict__ and "_variations" not in cls.__dict__:
            warnings.warn(
                f"{cls.__module__}.{cls.__qualname__} overrides Target._variation(x, t, k, seeds, captions) "
                f"(one seed per row), which is deprecated: override Target._variations(x, t, k, seeds, "
                f"captions, clip) taking seeds[B][n] and returning [B, n, C, H, W] instead",
                DeprecationWarning,
                stacklevel=2,
            )

    def _place(self, dtype: str = "auto", auto: str = "fp32", cpu_bf16: bool = False) -> None:
        """Set ``self.device`` from the run's device request and ``self.dtype``: the target's own
        ``dtype`` param when it is not ``auto``, else ``run.dtype`` when that is not ``auto``, else
        ``auto`` (this target's default, e.g. fp16 for a big model on a GPU). Half precision runs
        on a GPU; on the CPU fp16 runs fp32, and bf16 too unless the target passes ``cpu_bf16``
        and the CPU computes bf16 natively; either fallback is noted. ``self.precision`` records
        what was used and why (results.json ``target.precision``, the terminal, the report)."""
        self.device = resolve_device(self.context.device)
        run = getattr(self.context, "dtype", "auto") or "auto"
        if dtype != "auto":
            request, source = dtype, "target.dtype"
        elif run != "auto":
            request, source = run, "run.dtype"
        else:
            request, source = auto, f"the {self.name or 'target'} default"
        self.dtype = resolve_dtype(request, self.device, cpu_half=cpu_bf16)
        used = str(self.dtype).replace("torch.", "")
        reason = f"{request} from {source}"
        if request in ("fp16", "bf16") and self.device.type == "cpu":
            if self.dtype == torch.bfloat16:
                reason = f"{request} from {source}; this CPU computes bf16 natively ({native_bf16()})"
            else:
                why = "the CPU runs fp32"
                if request == "bf16" and cpu_bf16:
                    why = "this CPU has no native bf16 (AMX or AVX512-BF16), so the CPU runs fp32"
                reason = f"{request} from {source}, but {why}"
                self.stats.notes.append(f"dtype {request} was requested but {why}")
        if dtype != "auto" and run not in ("auto", dtype):
            reason += f" (overrides run.dtype {run})"
        self.precision = {
            "dtype": used,
            "reason": reason,
            "channels_last": bool(getattr(self.context, "channels_last", False)),
            "compile": bool(getattr(self.context, "compile", False)),
        }

    def _prepare_network(self, module):
        """A network (``nn.Module``) on ``self.device`` in ``self.dtype``, eval mode, with the
        run's ``channels_last`` and ``compile`` applied; call after :meth:`_place`."""
        first = next(iter(module.parameters()), None)
        if first is not None and first.dtype != self.dtype:  # a model loaded in its dtype is left as is
            module = module.to(dtype=self.dtype)
        module = module.to(self.device).eval()
        if self.precision.get("channels_last"):
            module = module.to(memory_format=torch.channels_last)
        if self.precision.get("compile"):
            module = torch.compile(module)
        return module

    def _network_input(self, x):
        """``x`` on the device in the network's dtype (and memory format)."""
        x = x.to(self.device, self.dtype)
        if getattr(self, "precision", {}).get("channels_last") and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    # ----- description ---------------------------------------------------------------------
    def identity(self) -> str:
        """A stable identity for the query cache: changes when the model's weights change."""
        return f"{self.name}:{self.params.model_dump_json()}"

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for results.json and reports (never secrets)."""
        return {
            "plugin": self.name,
            "kind": self.kind,
            "capabilities": sorted(self.capabilities),
            "image_size": self.image_size,
            "channels": self.channels,
            "num_train_timesteps": self.num_train_timesteps,
            "device": str(self.device),
            **({"precision": self.precision} if getattr(self, "precision", None) else {}),
        }

    def close(self) -> None:
        """Release resources (connections, GPU memory)."""

    def condition(self, record: Any) -> str | None:
        """The conditioning string of one image (an ``ImageRecord``): what the runner hands the
        attacks as its caption and they pass back to ``variation``/``encode``/``eps``. Default:
        the record's caption. A class-conditional target maps e.g. ``record.extra["class"]`` to
        a label here; raise ``DataError`` naming the image for a value it cannot use."""
        return record.caption

    def nfe_per_query(self, t: int, k: int) -> int:
        """U-Net evaluations of one variation (t/k for DDIM; 0 when unknown, e.g. remote)."""
        return t // k if VARIATION in self.capabilities and NOISE in self.capabilities else 0

    # ----- grey-box -----------------------------------------------------------------------
    def encode(self, x: torch.Tensor, captions: Sequence[str | None] | None = None) -> torch.Tensor:
        """Image -> model space (identity for pixel targets, scaled VAE latents for latent ones)."""
        return x

    def decode(self, z: torch.Tensor, captions: Sequence[str | None] | None = None) -> torch.Tensor:
        """Model space -> image in [-1, 1]."""
        return z

    def eps(self, z_t: torch.Tensor, t: int, captions: Sequence[str | None] | None = None) -> torch.Tensor:
        """The noise prediction at index ``t``. The core counts one NFE per row of each call
        (a subclass that costs more per row, e.g. 2 with classifier-free guidance, adds to
        ``self.stats.nfe`` itself and is then left alone)."""
        raise NotImplementedError(f"target {self.name!r} has no noise-prediction access")

    # ----- white-box (GRADIENTS) -------------------------------------------------------------
    def grad_network(self) -> tuple[torch.nn.Module, Any]:
        """White-box access, for a target that declares ``GRADIENTS``: ``(module, forward)``, the
        noise predictor whose parameters gradients are taken with respect to, and
        ``forward(z_t [N, ...], steps LongTensor[N], captions) -> eps [N, ...]`` (float32,
        differentiable: no ``no_grad``; one timestep index per row). The core does the rest
        (:meth:`param_grad_norms`)."""
        raise NotImplementedError(f"target {self.name!r} gives no access to its parameters' gradients")

    def param_grad_names(self) -> list[str]:
        """The names of the parameter tensors :meth:`param_grad_norms` reports, in its column order."""
        module, _ = self.grad_network()
        return [name for name, _ in module.named_parameters()]

    def param_grad_norms(
        self,
        z_t: torch.Tensor,
        steps: Sequence[int] | torch.Tensor,
        noise: torch.Tensor,
        captions: Sequence[str | None] | None = None,
        rows_per_sample: int = 1,
    ) -> torch.Tensor:
        """White-box: ``[S, L]``, for each sample (``rows_per_sample`` consecutive rows of ``z_t``;
        ``S = N / rows_per_sample``) the l2 norm of the gradient of its denoising loss,
        ``mean((eps(z_t[r], steps[r]) - noise[r])^2)`` over the sample's rows and elements, with
        respect to each of the noise predictor's ``L`` parameter tensors (:meth:`param_grad_names`).
        One sample at a time (a forward and a backward pass over its rows), so memory holds one
        sample's activations and one gradient, whatever the batch. Counts one NFE per row."""
        from . import gradients

        module, forward = self.grad_network()
        out = gradients.per_sample_grad_norms(module, forward, z_t, steps, noise, captions, rows_per_sample)
        self.stats.nfe += int(z_t.shape[0])
        return out

    def eps_fn(self, captions: Sequence[str | None] | None = None):
        """``eps`` bound to the captions, in the shape ``audit_core.ddim`` expects."""
        return lambda z, t: self.eps(z, t, captions)

    def preprocess(self, image) -> tuple[torch.Tensor, bool]:
        """PIL image -> ``([C, H, W]`` in [-1, 1], whether it was converted or resized). The
        default converts to the target's channels and centre-crops/resizes to its size."""
        from ..data import to_tensor

        return to_tensor(image, self.channels, self.image_size)

    def max_batch(self) -> int:
        """How many rows one forward pass may hold (the runner splits larger work): the target's
        ``max_batch`` param when it has one, else 256."""
        return getattr(self.params, "max_batch", 256)


class VaeLatentTarget(Target):
    """A latent target whose model space is a diffusers ``AutoencoderKL``'s: ``encode(x)`` = the
    posterior mean * ``scaling_factor`` (deterministic), ``decode(z)`` = decoder(z / scaling_factor)
    clamped to [-1, 1]. A subclass sets ``self.device`` and ``self.dtype`` and hands its loaded VAE
    to ``_use_vae`` (Stable Diffusion, DiT).

    The VAE runs in chunks of :meth:`vae_rows` rows (a subclass sets ``self.vae_batch``; else its
    ``max_batch``): at 512x512 a decoded row costs several times the U-Net's activations, so the
    VAE gets its own, smaller chunk. Each image is encoded once per target instance, i.e. once per
    run whichever attacks ask for it: the encoder is deterministic, so the latent is kept (float32,
    on the CPU, up to ``LATENT_CACHE_BYTES``, least recently used dropped first) and served again
    bit for bit, keyed by the image's bytes."""

    #: bytes of encoded latents kept per run (SD 512x512: 64 KiB per image, 4096 images)
    LATENT_CACHE_BYTES: ClassVar[int] = 256 * 2**20

    def _use_vae(self, vae: Any) -> None:
        """Adopt a loaded ``AutoencoderKL``: its downsampling factor and latent scaling factor."""
        self.vae = vae
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 0.18215))
        self._latents = LRU(self.LATENT_CACHE_BYTES)  # image key -> float32 latent on the CPU

    def vae_rows(self) -> int:
        """Rows per VAE encoder/decoder pass."""
        return max(1, int(getattr(self, "vae_batch", 0) or self.max_batch()))

    def _latent_key(self, image: torch.Tensor) -> str:
        h = hashlib.sha256(str(self.dtype).encode())
        h.update(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    @torch.no_grad()
    def encode(self, x: torch.Tensor, captions: Sequence[str | None] | None = None) -> torch.Tensor:
        cache = self.__dict__.get("_latents")
        if cache is None:  # a subclass may set self.vae itself
            cache = self._latents = LRU(self.LATENT_CACHE_BYTES)
        keys = [self._latent_key(img) for img in x]
        first: dict[str, int] = {}  # each image not cached yet -> its first row: encoded once
        for row, key in enumerate(keys):
            if key not in cache:
                first.setdefault(key, row)
        if first:
            fresh = []
            for chunk in x[list(first.values())].split(self.vae_rows()):
                post = self.vae.encode(chunk.to(self.device, self.dtype)).latent_dist
                fresh.append((post.mean * self.scaling_factor).float().cpu())
            for key, z in zip(first, torch.cat(fresh)):
                cache.put(key, z, trim=False)  # dropped only once this call has read them
        result = torch.stack([cache.get(key) for key in keys]).to(self.device)
        cache.trim(self.LATENT_CACHE_BYTES)
        return result

    @torch.no_grad()
    def decode(self, z: torch.Tensor, captions: Sequence[str | None] | None = None) -> torch.Tensor:
        out = []
        for chunk in z.split(self.vae_rows()):
            img = self.vae.decode((chunk / self.scaling_factor).to(self.device, self.dtype)).sample
            out.append(img.float().clamp(-1, 1))
        return torch.cat(out)
