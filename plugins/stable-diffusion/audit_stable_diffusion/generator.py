"""``DiffusersGenerator``: a local diffusers text-to-image folder (Stable Diffusion layout) as a
generator for ``audit reference build``.

It loads the folder with ``StableDiffusionPipeline`` (``local_files_only``, safetensors only unless
``allow_pickle``), a DDIM scheduler from the folder's scheduler config, and draws image j from
``torch.Generator().manual_seed(seed)`` on the CPU, so a (prompt, seed) pair gives the same image
whatever the batch or device. It must be another model than the audited one.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Literal

import torch
from pydantic import Field

from audit_core import ModelError, Generator, GeneratorParams, require_weights, resolve_device, resolve_dtype

from .target import REQUIRED


class DiffusersGeneratorParams(GeneratorParams):
    model: str = Field(description="a local diffusers text-to-image folder (Stable Diffusion layout)")
    steps: int = Field(30, ge=1, description="DDIM sampling steps")
    guidance_scale: float = Field(7.5, ge=0.0, description="classifier-free guidance")
    negative_prompt: str = Field("", description="the negative prompt")
    height: int | None = Field(None, ge=8, description="image height in pixels (default: the model's)")
    width: int | None = Field(None, ge=8, description="image width in pixels (default: the model's)")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = Field("auto", description="auto = fp16 on a GPU, fp32 on the CPU")
    allow_pickle: bool = Field(False, description="also load pickled .bin weights (trusted files only)")
    max_batch: int = Field(4, ge=1, description="prompts per pipeline call")


class DiffusersGenerator(Generator):
    name = "diffusers"
    Params = DiffusersGeneratorParams

    def __init__(self, params: DiffusersGeneratorParams, device: str = "auto"):
        super().__init__(params, device)
        from pathlib import Path

        folder = Path(params.model).expanduser()
        if not folder.is_dir():
            raise ModelError(f"--param model: {folder} is not a folder")
        missing = [n for n in REQUIRED if not (folder / n).exists()]
        if missing:
            raise ModelError(f"--param model: {folder} is not a text-to-image folder: missing {', '.join(missing)}")
        require_weights(folder, ("unet", "vae", "text_encoder"), params.allow_pickle)
        self.folder = folder
        self.device = resolve_device(device)
        self.dtype = resolve_dtype("fp16" if params.dtype == "auto" else params.dtype, self.device)
        from diffusers import DDIMScheduler, StableDiffusionPipeline
        from diffusers.utils import logging as diffusers_logging

        from transformers.utils import logging as hf_logging

        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()  # one progress bar: the build's
        hf_logging.disable_progress_bar()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.pipe = StableDiffusionPipeline.from_pretrained(
                    folder, local_files_only=True, use_safetensors=None if params.allow_pickle else True,
                    torch_dtype=self.dtype, safety_checker=None, requires_safety_checker=False,
                )
                self.pipe.scheduler = DDIMScheduler.from_config(self.pipe.scheduler.config)
        except (OSError, ValueError) as exc:
            raise ModelError(f"--param model: cannot load {folder}: {str(exc).splitlines()[0]}") from None
        finally:
            diffusers_logging.set_verbosity(verbosity)
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        h = hashlib.sha256()
        for sub in ("unet", "vae", "text_encoder"):
            for f in sorted((folder / sub).glob("*")):
                st = f.stat()
                h.update(f"{sub}/{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
        self._weights = h.hexdigest()

    def identity(self) -> str:
        p = self.params
        return f"diffusers:{self._weights}:{p.steps}:{p.guidance_scale}:{p.negative_prompt}:{p.height}:{p.width}:{self.dtype}"

    def describe(self) -> str:
        return f"diffusers:{self.folder.name} ({self.params.steps} DDIM steps, guidance {self.params.guidance_scale:g})"

    @torch.no_grad()
    def generate(self, prompts, seeds):
        p = self.params
        gens = [torch.Generator("cpu").manual_seed(int(s) % (2**63)) for s in seeds]
        shape = (
            self.pipe.unet.config.in_channels,
            (p.height or self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor) // self.pipe.vae_scale_factor,
            (p.width or self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor) // self.pipe.vae_scale_factor,
        )
        # per-prompt latents from each seed's own CPU generator: independent of batch and device
        latents = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(self.device, self.dtype)
        out = self.pipe(
            list(prompts), negative_prompt=[p.negative_prompt] * len(prompts) if p.negative_prompt else None,
            num_inference_steps=p.steps, guidance_scale=p.guidance_scale, latents=latents,
            height=shape[1] * self.pipe.vae_scale_factor, width=shape[2] * self.pipe.vae_scale_factor, output_type="pil",
        )
        return list(out.images)

    def close(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
