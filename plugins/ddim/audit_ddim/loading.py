"""Finding, checking and loading a diffusers unconditional pipeline folder.

A pipeline folder is what ``DDPMPipeline.save_pretrained`` / ``DDIMPipeline.save_pretrained``
writes::

    model_index.json
    unet/config.json
    unet/diffusion_pytorch_model.safetensors   (or a sharded *.safetensors.index.json)
    scheduler/scheduler_config.json

Everything is read from the folder (``local_files_only=True``, nothing is downloaded). Weights
must be safetensors: pickled ``.bin`` checkpoints can run arbitrary code when loaded, so they are
refused unless the user opts in with ``allow_pickle: true``. Every problem is a
:class:`~audit_core.base.errors.ModelError` (the CLI exits with 2 and prints the message).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from audit_core import ModelError, PICKLE_SUFFIXES, TargetContext

DEMO_DIR = Path(__file__).parent / "demo"
#: ``builtin:NAME`` model references shipped with this package
BUILTIN_MODELS = {"digits-ddpm": DEMO_DIR / "digits-ddpm"}

SAFE_SUFFIX = ".safetensors"


@dataclass
class PipelineFolder:
    """What :func:`inspect_folder` found in a pipeline folder."""

    path: Path
    weights: list[Path]  # the U-Net weight files (safetensors, or pickles when allowed)
    pickled: bool  # True when the weights are pickled (.bin) files
    unet_config: dict[str, Any] = field(default_factory=dict)
    scheduler_config: dict[str, Any] = field(default_factory=dict)


def resolve_model_path(model: str, context: TargetContext | None = None) -> Path:
    """``builtin:NAME`` -> the shipped folder; a relative path -> relative to the audit.yaml's
    folder (``context.config_dir``) when known, else to the working directory."""
    if model.startswith("builtin:"):
        name = model[len("builtin:") :]
        if name not in BUILTIN_MODELS:
            avail = ", ".join(f"builtin:{n}" for n in sorted(BUILTIN_MODELS))
            raise ModelError(f"target.model: unknown built-in model {model!r} (available: {avail})")
        path = BUILTIN_MODELS[name]
        if not (path / "model_index.json").exists():
            raise ModelError(
                f"target.model: the built-in model {model!r} is missing from the installed package "
                f"({path}). Reinstall audit-ddim, or train it with `audit ddim train --out {path}`."
            )
        return path
    return (context or TargetContext()).path(model)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object")
    return data


def inspect_folder(path: Path, allow_pickle: bool = False) -> PipelineFolder:
    """Check the layout of a pipeline folder; raise ModelError naming everything that is missing."""
    if not path.exists():
        raise ModelError(
            f"target.model: {path} does not exist. Give a diffusers pipeline folder (model_index.json, "
            f"unet/, scheduler/) or builtin:digits-ddpm."
        )
    if not path.is_dir():
        raise ModelError(
            f"target.model: {path} is a file; the ddim target needs a diffusers pipeline folder "
            f"(model_index.json, unet/, scheduler/), e.g. the output of DDPMPipeline.save_pretrained()."
        )
    required = ["model_index.json", "unet/config.json", "scheduler/scheduler_config.json"]
    missing = [r for r in required if not (path / r).is_file()]
    if missing:
        hint = ""
        if (path / "config.json").is_file() and any(path.glob("diffusion_pytorch_model*")):
            hint = (
                " It looks like a bare U-Net folder: save the whole pipeline "
                "(DDPMPipeline(unet, scheduler).save_pretrained(folder)) instead."
            )
        raise ModelError(
            f"target.model: {path} is not a diffusers pipeline folder: missing {', '.join(missing)}.{hint}"
        )
    unet_dir = path / "unet"
    safe = sorted(p for p in unet_dir.iterdir() if p.name.endswith(SAFE_SUFFIX))
    pickles = sorted(p for p in unet_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if safe:
        weights, pickled = safe, False
    elif pickles:
        if not allow_pickle:
            names = ", ".join(p.name for p in pickles)
            raise ModelError(
                f"target.model: {unet_dir} holds only pickled weights ({names}) and no .safetensors. "
                f"Loading a pickle can run arbitrary code hidden in the file, so it is refused by default. "
                f"Convert it to safetensors (load it once in a sandbox and save_pretrained with "
                f"safe_serialization=True), or, if you trust its source, set `allow_pickle: true` under "
                f"`target:` in audit.yaml."
            )
        weights, pickled = pickles, True
    else:
        raise ModelError(f"target.model: {unet_dir} has no weights (expected diffusion_pytorch_model.safetensors)")
    return PipelineFolder(
        path=path,
        weights=weights,
        pickled=pickled,
        unet_config=_read_json(path / "unet" / "config.json"),
        scheduler_config=_read_json(path / "scheduler" / "scheduler_config.json"),
    )


def load_unet(folder: PipelineFolder, dtype: torch.dtype = torch.float32):
    """The ``UNet2DModel`` of the folder in eval mode, on the CPU, in ``dtype``."""
    import diffusers

    cls_name = folder.unet_config.get("_class_name", "UNet2DModel")
    if cls_name != "UNet2DModel":
        extra = " (a text-conditional model: use the stable-diffusion target)" if "Condition" in cls_name else ""
        raise ModelError(
            f"target.model: {folder.path}/unet is a {cls_name}{extra}; the ddim target loads "
            f"unconditional UNet2DModel pipelines (DDPMPipeline / DDIMPipeline)"
        )
    if folder.pickled:
        warnings.warn(
            f"loading pickled weights from {folder.path / 'unet'} because allow_pickle is true: "
            f"a pickle can run arbitrary code; convert it to safetensors when you can",
            UserWarning,
            stacklevel=3,
        )
    try:
        unet = diffusers.UNet2DModel.from_pretrained(
            folder.path,
            subfolder="unet",
            local_files_only=True,
            use_safetensors=not folder.pickled,
            torch_dtype=dtype,
        )
    except Exception as exc:  # diffusers raises many types for broken folders
        raise ModelError(f"target.model: the U-Net in {folder.path}/unet cannot be loaded: {exc}") from None
    return unet.eval().requires_grad_(False)


def load_scheduler(folder: PipelineFolder):
    """The folder's scheduler (any diffusers scheduler class exposing ``alphas_cumprod``)."""
    import diffusers

    cfg = folder.scheduler_config
    cls_name = cfg.get("_class_name", "DDPMScheduler")
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise ModelError(f"target.model: unknown scheduler class {cls_name!r} in {folder.path}/scheduler")
    try:
        scheduler = cls.from_config(cfg)
    except Exception as exc:
        raise ModelError(f"target.model: the scheduler in {folder.path}/scheduler cannot be built: {exc}") from None
    if not hasattr(scheduler, "alphas_cumprod"):
        raise ModelError(f"target.model: scheduler {cls_name} in {folder.path}/scheduler has no alphas_cumprod")
    prediction = cfg.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise ModelError(
            f"target.model: {folder.path} predicts {prediction!r}; the ddim target needs an "
            f"epsilon-prediction model (scheduler prediction_type: epsilon)"
        )
    return scheduler


def alphas_cumprod_of(scheduler) -> torch.Tensor:
    """``alphas_cumprod`` as a float64 CPU tensor (index 0 = first noising step)."""
    return torch.as_tensor(scheduler.alphas_cumprod).detach().to("cpu", torch.float64).clone()
