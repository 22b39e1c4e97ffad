"""``StableDiffusionTarget``: a local diffusers Stable Diffusion v1.x folder as an audit target.

Model space is the VAE's latent space: ``encode(x) = mean of the VAE posterior * scaling_factor``
(the mean, so encoding is deterministic), ``decode(z) = VAE decoder(z / scaling_factor)``.

- Grey-box: ``eps(z_t, t, captions)`` is the text-conditioned U-Net; with ``guidance_scale`` g != 1
  it is ``eps_uncond + g * (eps_cond - eps_uncond)`` (2 NFEs per row). The caption of each image is
  its prompt; images without one use the empty prompt.
- Text-conditional (``TEXT``): each row's caption is its prompt, so an attack may query the
  same latent under other captions (CLiD: the caption vs perturbed and empty ones).
- White-box (``GRADIENTS``): ``grad_network`` hands the core the U-Net and a differentiable
  forward on the conditional prediction (the training loss's; ``guidance_scale`` is not applied).
- Black-box: the variation API is img2img at strength t/T with DDIM interval k — noise the latent
  to index t with the per-row seed, deterministic DDIM t -> t-k -> ... -> 0 (the core's
  ``audit_core.base.ddim``, which steps exactly like diffusers' ``DDIMScheduler`` over the timesteps
  [t, t-k, ..., k]; a test checks the two agree), decode.

Components are diffusers/transformers classes loaded with ``local_files_only=True`` and
safetensors only unless ``allow_pickle: true``, through accelerate's low-memory path.

Memory is bounded by design: before any weight is read, ``memory.plan`` estimates the peak (weights
in the run's dtype + runtime + one U-Net or VAE pass) and picks the rows per U-Net pass
(``max_batch``) and per VAE pass (``vae_batch``, smaller: a 512x512 decode costs about two U-Net
rows), so the peak does not grow with the number of images; a run that cannot fit is refused (exit
2). ``dtype: bf16`` runs bf16 on CPUs that compute it natively (AMX, AVX512-BF16), else fp32 with a
note; what ran and why is ``target.precision`` in results.json, the terminal and the report.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from audit_core import (
    ConfigError, ModelError, GRADIENTS, NOISE, TEXT, VARIATION, TargetContext, TargetParams, VaeLatentTarget, pipeline_folder,
    require_weights,
)

from . import memory

#: prompts per text-encoder pass (CLIP ViT-L at 77 tokens: ~20 MB of activations per prompt)
TEXT_BATCH = 16
REQUIRED = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")


class SDParams(TargetParams):
    model: str = Field(description="a local diffusers Stable Diffusion folder (v1.x layout)")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = Field("auto", description="auto = fp16 on a GPU, fp32 on the CPU")
    guidance_scale: float = Field(1.0, ge=0.0, description="classifier-free guidance (1.0 = the conditional prediction only)")
    allow_pickle: bool = Field(False, description="also load pickled .bin weights (trusted files only)")
    max_batch: int | Literal["auto"] = Field(
        "auto", description="rows per U-Net pass (auto: as many as the memory limit holds, at most 2 on the CPU, 32 on a GPU)"
    )
    vae_batch: int | Literal["auto"] = Field(
        "auto", description="rows per VAE encoder/decoder pass (auto: as many as fit, at most 1 on the CPU, 8 on a GPU)"
    )
    vae_tiling: bool = Field(False, description="decode and encode large images in overlapping tiles (diffusers' VAE tiling)")
    memory_limit: float | Literal["auto"] = Field(
        "auto", description="GB the run may use (auto: the RAM available now, or the GPU's free memory); refused above"
    )
    resolution: int | None = Field(None, ge=8, description="image size (default: U-Net sample size x VAE factor)")


class StableDiffusionTarget(VaeLatentTarget):
    name = "stable-diffusion"
    kind = "latent"
    capabilities = frozenset({VARIATION, NOISE, TEXT, GRADIENTS})
    Params = SDParams
    # a variation is the VAE decoder's image, clamped to [-1, 1] like the official SD pipeline's
    # output: `clip` changes nothing (the base class's `_variations` does the rest)
    bounded_variations = True

    def __init__(self, params: SDParams, context: TargetContext | None = None):
        super().__init__(params, context)
        folder = pipeline_folder(self.context.path(params.model), REQUIRED, "Stable Diffusion")
        require_weights(folder, ("unet", "vae", "text_encoder"), params.allow_pickle)
        self.folder = folder
        # auto: fp16 on a GPU (fp32 on the CPU); bf16 runs bf16 on CPUs that compute it natively
        # (measured 1.75x faster for the U-Net, 1.9x for the decoder: benchmarks/bench_sd.py)
        self._place(params.dtype, auto="fp16", cpu_bf16=True)
        for name in ("max_batch", "vae_batch"):
            if isinstance(getattr(params, name), int) and getattr(params, name) < 1:
                raise ConfigError(f"target.{name}: {getattr(params, name)} rows per pass; use 1 or more, or auto")
        # memory first, from the files alone: a run that cannot fit is refused before any weight is read
        self.memory = memory.plan(
            folder, torch.tensor([], dtype=self.dtype).element_size(), self.device, self._planned_size(folder),
            params.max_batch, params.vae_batch, params.memory_limit,
        )
        self.unet_batch, self.vae_batch = self.memory.unet_rows, self.memory.vae_rows
        self._load(folder, params.allow_pickle)
        self._text_cache: dict[str, torch.Tensor] = {}

    def _load(self, folder: Path, allow_pickle: bool) -> None:
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        # low_cpu_mem_usage: each tensor is read (or mapped) from the file and converted in place,
        # never a randomly initialised copy first (accelerate's path; it is a dependency)
        kw = {
            "local_files_only": True, "use_safetensors": None if allow_pickle else True, "torch_dtype": self.dtype,
            "low_cpu_mem_usage": True,
        }
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
                self.text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", **kw).to(self.device).eval()
                self._use_vae(AutoencoderKL.from_pretrained(folder / "vae", **kw).to(self.device).eval())
                if self.params.vae_tiling:
                    self.vae.enable_tiling()
                self.unet = self._prepare_network(UNet2DConditionModel.from_pretrained(folder / "unet", **kw))
                self.scheduler = DDIMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
        except (OSError, ValueError, EnvironmentError) as exc:
            raise ModelError(f"target.model: cannot load the Stable Diffusion folder {folder}: {str(exc).splitlines()[0]}") from None
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(torch.float64).cpu()
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self.latent_channels = int(self.unet.config.in_channels)
        size = self.unet.config.sample_size
        self.image_size = self.params.resolution or int(size if isinstance(size, int) else size[0]) * self.vae_factor
        self.channels = 3
        # computed once: the query cache asks for it on every variation call
        self._identity = (
            f"stable-diffusion:{self._files_digest()}:g={self.params.guidance_scale}:dtype={self.dtype}:res={self.image_size}"
        )

    def _planned_size(self, folder: Path) -> int:
        """The image size, from the configs alone (before loading): ``resolution``, else the U-Net's
        sample size x the VAE's downsampling factor."""
        if self.params.resolution:
            return int(self.params.resolution)
        import json

        try:
            unet = json.loads((folder / "unet" / "config.json").read_text())
            vae = json.loads((folder / "vae" / "config.json").read_text())
            size = unet.get("sample_size", 64)
            return int(size if isinstance(size, int) else size[0]) * 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"target.model: cannot read the U-Net/VAE config.json of {folder}: {exc}") from None

    def max_batch(self) -> int:
        """Rows per U-Net pass (``max_batch``, resolved)."""
        return self.unet_batch

    # ----- description ---------------------------------------------------------------------
    def _files_digest(self) -> str:
        """Names, sizes and modification times of the model files (cheap: no multi-GB hashing)."""
        h = hashlib.sha256()
        for sub in ("unet", "vae", "text_encoder"):
            for f in sorted((self.folder / sub).glob("*")):
                st = f.stat()
                h.update(f"{sub}/{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
        return h.hexdigest()

    def identity(self) -> str:
        return self._identity

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": self.params.model,
            "latent_channels": self.latent_channels,
            "vae_scaling_factor": self.scaling_factor,
            "guidance_scale": self.params.guidance_scale,
            "dtype": str(self.dtype).replace("torch.", ""),
            "max_batch": self.unet_batch,
            "vae_batch": self.vae_batch,
            "memory": self.memory.describe(),
        }

    def nfe_per_query(self, t: int, k: int) -> int:
        return (t // k) * (1 if self.params.guidance_scale == 1.0 else 2)

    # ----- text ---------------------------------------------------------------------------------
    @torch.no_grad()
    def text_embeddings(self, captions: Sequence[str | None]) -> torch.Tensor:
        prompts = [c or "" for c in captions]
        todo = sorted({p for p in prompts if p not in self._text_cache})
        for start in range(0, len(todo), TEXT_BATCH):  # a batch of many captions: bounded memory
            part = todo[start : start + TEXT_BATCH]
            ids = self.tokenizer(
                part, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
            ).input_ids.to(self.device)
            hidden = self.text_encoder(ids)[0]
            for p, h in zip(part, hidden):
                self._text_cache[p] = h
        return torch.stack([self._text_cache[p] for p in prompts])

    # ----- model space ---------------------------------------------------------------------------
    # encode/decode: the VAE latent space (audit_core.plugin.targets.VaeLatentTarget)

    @torch.no_grad()
    def eps(self, z_t: torch.Tensor, t: int, captions: Sequence[str | None] | None = None) -> torch.Tensor:
        captions = list(captions) if captions is not None else [None] * z_t.shape[0]
        g = self.params.guidance_scale
        out = []
        for start in range(0, z_t.shape[0], self.unet_batch):
            chunk = self._network_input(z_t[start : start + self.unet_batch])
            caps = captions[start : start + chunk.shape[0]]
            steps = torch.full((chunk.shape[0],), int(t), device=self.device, dtype=torch.long)
            cond = self.text_embeddings(caps)
            if g == 1.0:
                e = self.unet(chunk, steps, encoder_hidden_states=cond).sample
                self.stats.nfe += chunk.shape[0]
            else:
                uncond = self.text_embeddings([""] * chunk.shape[0])
                both = self.unet(
                    torch.cat([chunk, chunk]), torch.cat([steps, steps]), encoder_hidden_states=torch.cat([uncond, cond])
                ).sample
                e_u, e_c = both.chunk(2)
                e = e_u + g * (e_c - e_u)
                self.stats.nfe += 2 * chunk.shape[0]
            out.append(e.float())
        return torch.cat(out)

    def grad_network(self):
        """White-box: the U-Net and a differentiable forward (one timestep index per row) on the
        conditional prediction, the one the training loss uses (text embeddings are constants)."""

        def forward(z: torch.Tensor, steps: torch.Tensor, captions: Sequence[str | None]) -> torch.Tensor:
            cond = self.text_embeddings(list(captions))
            return self.unet(self._network_input(z), steps.to(self.device), encoder_hidden_states=cond).sample.float()

        return self.unet, forward

    def close(self) -> None:
        self._text_cache.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
