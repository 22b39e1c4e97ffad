"""``DiTTarget``: a local diffusers DiT folder (``DiTPipeline`` layout) as an audit target.

Layout: ``model_index.json`` (with ``id2label``: class id -> comma-separated names, as in
``facebook/DiT-XL-2-256``), ``transformer/`` (``DiTTransformer2DModel``), ``vae/``
(``AutoencoderKL``) and ``scheduler/`` (its betas give the noise schedule).

Model space is the VAE's latent space, as for Stable Diffusion: ``encode(x)`` = posterior mean x
the VAE's ``scaling_factor``, ``decode(z)`` = decoder(z / scaling_factor).

Conditioning is a class label, not a caption. Each image's label comes, in this order, from the
data manifest's ``class`` column (an id such as ``207`` or an ``id2label`` name such as
``golden retriever``), else from ``class_label`` in the target config, else the null class (id
``num_classes``, the label DiT was trained to treat as "unconditional"). The runner asks
:meth:`DiTTarget.condition` for every image before the first query, so an unknown name is a data
error naming the image; the label then travels to ``eps``/``variation`` as the row's "caption"
(the class id as a string), so attacks pass it through unchanged.

- Grey-box: ``eps(z_t, t, labels)`` is the transformer's noise prediction; DiT also predicts the
  variance (``out_channels = 2 x in_channels``, "learned sigma"), and that half is dropped. With
  ``guidance_scale`` g != 1 the prediction is ``eps_null + g (eps_class - eps_null)`` over all
  latent channels (2 NFEs per row). (DiTPipeline guides only the first 3 channels, a quirk of the
  original code; the attacks need a proper noise estimate, so all 4 are guided here.)
- White-box (``GRADIENTS``): ``grad_network`` hands the core the transformer and a
  differentiable forward on the class-conditional prediction (the training loss's).
- Black-box: the variation API is the core's default for grey-box targets: encode, noise to t
  with the row's seed, deterministic DDIM t -> t-k -> ... -> 0 (``audit_core.base.ddim``), decode.

Weights: safetensors only unless ``allow_pickle: true`` (``audit_core.plugin.targets.require_weights``);
loading is ``local_files_only``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from audit_core import (
    DataError, ModelError, GRADIENTS, NOISE, VARIATION, TargetContext, TargetParams, VaeLatentTarget, pipeline_folder,
    require_weights, weights_sha256,
)

REQUIRED = ("model_index.json", "transformer", "vae", "scheduler")


class DiTParams(TargetParams):
    model: str = Field(description="a local diffusers DiT folder (DiTPipeline layout)")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = Field("auto", description="auto = fp16 on a GPU, fp32 on the CPU")
    class_label: int | str | None = Field(
        None, description="class of images without a `class` column: an id or an id2label name (default: the null class)"
    )
    guidance_scale: float = Field(1.0, ge=0.0, description="classifier-free guidance against the null class (1.0 = none)")
    allow_pickle: bool = Field(False, description="also load pickled .bin weights (trusted files only)")
    max_batch: int = Field(16, ge=1, description="rows per transformer/VAE forward pass")
    resolution: int | None = Field(None, ge=8, description="image size (default: transformer sample size x VAE factor)")


def read_labels(folder: Path) -> dict[str, int]:
    """``model_index.json``'s ``id2label`` as name -> id (each comma-separated synonym a name, as
    ``DiTPipeline.labels``); empty when the folder has none."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"target.model: {folder / 'model_index.json'} cannot be read: {exc}") from None
    labels: dict[str, int] = {}
    for key, value in (index.get("id2label") or {}).items():
        for name in str(value).split(","):
            if name.strip():
                labels[name.strip()] = int(key)
    return labels


def read_num_classes(folder: Path) -> int:
    """The transformer config's ``num_embeds_ada_norm`` (1000 for ImageNet DiTs), read before
    any weight is loaded so class labels are checked first."""
    try:
        cfg = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
        return int(cfg.get("num_embeds_ada_norm") or 1000)
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ModelError(f"target.model: {folder / 'transformer' / 'config.json'} cannot be read: {exc}") from None


class DiTTarget(VaeLatentTarget):
    name = "dit"
    kind = "latent"
    capabilities = frozenset({VARIATION, NOISE, GRADIENTS})
    Params = DiTParams

    def __init__(self, params: DiTParams, context: TargetContext | None = None):
        super().__init__(params, context)
        folder = pipeline_folder(self.context.path(params.model), REQUIRED, "DiT")
        require_weights(folder, ("transformer", "vae"), params.allow_pickle)
        self.folder = folder
        self.labels = read_labels(folder)
        self.num_classes = read_num_classes(folder)
        self.null_class = self.num_classes  # DiT's label embedding keeps one extra row for "no class"
        self.default_class: int | None = None
        if params.class_label is not None:
            self.default_class = self.class_id(params.class_label, "target.class_label")
        self._place(params.dtype, auto="fp16")
        self._load(folder, params.allow_pickle)

    def _load(self, folder: Path, allow_pickle: bool) -> None:
        from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel

        from diffusers.utils import logging as diffusers_logging

        kw = {"local_files_only": True, "use_safetensors": None if allow_pickle else True, "torch_dtype": self.dtype}
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # no "install accelerate" advice on every load
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._use_vae(AutoencoderKL.from_pretrained(folder / "vae", **kw).to(self.device).eval())
                self.transformer = DiTTransformer2DModel.from_pretrained(folder / "transformer", **kw).to(self.device).eval()
                # any scheduler's config holds the betas; the attacks step DDIM themselves
                self.scheduler = DDIMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
        except (OSError, ValueError, EnvironmentError) as exc:
            raise ModelError(f"target.model: cannot load the DiT folder {folder}: {str(exc).splitlines()[0]}") from None
        finally:
            diffusers_logging.set_verbosity(verbosity)
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(torch.float64).cpu()
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self.latent_channels = int(self.transformer.config.in_channels)
        out = int(self.transformer.config.out_channels or self.latent_channels)
        self.learned_sigma = out == 2 * self.latent_channels
        self.image_size = self.params.resolution or int(self.transformer.config.sample_size) * self.vae_factor
        self.channels = 3
        files = sorted(p for sub in ("transformer", "vae") for p in (folder / sub).glob("*") if p.suffix != ".json")
        self._identity = (
            f"dit:{weights_sha256(files)}:g={self.params.guidance_scale}:dtype={self.dtype}:res={self.image_size}"
            f":scale={self.scaling_factor}"
        )

    # ----- class labels ------------------------------------------------------------------------
    def class_id(self, value: int | str, where: str) -> int:
        """A class id from an id (``207``, ``"207"``) or an ``id2label`` name; ``where`` names
        the culprit in the error (a ``DataError``: exit 2, before any query)."""
        text = str(value).strip()
        if text.lstrip("-").isdigit():
            cid = int(text)
            if not 0 <= cid < self.num_classes:
                raise DataError(f"{where}: class id {cid} is out of range (the model has classes 0..{self.num_classes - 1})")
            return cid
        if text in self.labels:
            return self.labels[text]
        hint = f"e.g. {', '.join(list(self.labels)[:5])}" if self.labels else "the model's model_index.json has no id2label"
        raise DataError(f"{where}: {text!r} is neither a class id (0..{self.num_classes - 1}) nor a class name ({hint})")

    def condition(self, record: Any) -> str | None:
        """The image's class id as a string (None: the null class)."""
        value = (getattr(record, "extra", None) or {}).get("class")
        if value is not None and str(value).strip():
            where = f"image {record.id} ({record.path or 'in memory'}), column `class`"
            return str(self.class_id(value, where))
        return None if self.default_class is None else str(self.default_class)

    def _labels(self, captions: Sequence[str | None]) -> torch.Tensor:
        """Class ids of rows (their "captions"; None or empty: the null class)."""
        ids = [self.null_class if c is None or not str(c).strip() else self.class_id(c, "class label") for c in captions]
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    # ----- description ---------------------------------------------------------------------
    def identity(self) -> str:
        return self._identity

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": self.params.model,
            "latent_channels": self.latent_channels,
            "learned_sigma": self.learned_sigma,
            "num_classes": self.num_classes,
            "class_label": self.default_class,
            "vae_scaling_factor": self.scaling_factor,
            "guidance_scale": self.params.guidance_scale,
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    def nfe_per_query(self, t: int, k: int) -> int:
        return (t // k) * (1 if self.params.guidance_scale == 1.0 else 2)

    # ----- model space ---------------------------------------------------------------------------
    # encode/decode: the VAE latent space (audit_core.plugin.targets.VaeLatentTarget)

    def _predict(self, z: torch.Tensor, t: int, labels: torch.Tensor) -> torch.Tensor:
        steps = torch.full((z.shape[0],), int(t), device=self.device, dtype=torch.long)
        out = self.transformer(z, timestep=steps, class_labels=labels).sample
        return out[:, : self.latent_channels] if self.learned_sigma else out  # drop the variance half

    @torch.no_grad()
    def eps(self, z_t: torch.Tensor, t: int, captions: Sequence[str | None] | None = None) -> torch.Tensor:
        captions = list(captions) if captions is not None else [None] * z_t.shape[0]
        g = self.params.guidance_scale
        out = []
        for start in range(0, z_t.shape[0], self.params.max_batch):
            chunk = z_t[start : start + self.params.max_batch].to(self.device, self.dtype)
            labels = self._labels(captions[start : start + chunk.shape[0]])
            if g == 1.0:
                e = self._predict(chunk, t, labels)
                self.stats.nfe += chunk.shape[0]
            else:
                null = torch.full_like(labels, self.null_class)
                e_c, e_u = self._predict(torch.cat([chunk, chunk]), t, torch.cat([labels, null])).chunk(2)
                e = e_u + g * (e_c - e_u)
                self.stats.nfe += 2 * chunk.shape[0]
            out.append(e.float())
        return torch.cat(out)

    def grad_network(self):
        """White-box: the transformer and a differentiable forward (one timestep index per row) on
        the class-conditional prediction, variance half dropped."""

        def forward(z: torch.Tensor, steps: torch.Tensor, captions: Sequence[str | None]) -> torch.Tensor:
            z = z.to(self.device, self.dtype)
            out = self.transformer(z, timestep=steps.to(self.device), class_labels=self._labels(list(captions))).sample
            return (out[:, : self.latent_channels] if self.learned_sigma else out).float()

        return self.transformer, forward

    def close(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
