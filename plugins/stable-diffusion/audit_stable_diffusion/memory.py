"""How much memory a Stable Diffusion target will need at its peak, and how many rows per U-Net /
VAE pass fit: worked out from the folder's files and the measured cost of a row, before any
weight is loaded.

peak = weights (parameters in the run's dtype, from the safetensors headers)
     + runtime (Python, torch, the libraries, the text encoder's activations)
     + the largest of U-Net rows x U-Net activations per row, VAE rows x VAE activations per row
       (the two never run at the same time) and, when loading converts the stored weights to
       another dtype (fp32 files run in bf16), the largest component as stored.

Activations per row are measured on SD v1.5 at 512x512 on the CPU by ``benchmarks/bench_sd.py``
(peak RSS of one pass over the loaded model, per row) and scale with the number of pixels. On a
GPU the same figures are used as an upper bound (fused attention needs less there): estimates
until measured on one.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

GB = 1e9
#: bytes of activations one row adds at 512x512 (64x64x4 latents), by component and element size
#: (4: fp32, 2: bf16/fp16): bench_sd.py, 2-core Xeon with AMX, torch 2.13 CPU (README table)
ROW_BYTES = {
    ("unet", 4): 0.50 * GB, ("unet", 2): 0.40 * GB,
    ("vae", 4): 1.50 * GB, ("vae", 2): 1.00 * GB,  # the decoder's peak (the encoder's is about half)
}
#: Python, torch, diffusers, transformers, the tokenizer, the text encoder's activations and the
#: attacks' own tensors for a batch of 512x512 images (measured after loading: 0.55 GB)
RUNTIME_BYTES = 0.8 * GB
#: rows per pass chosen by ``auto`` at most: on the CPU 2 U-Net rows per pass are faster per row
#: than 1 (bench_sd.py) at little memory; a VAE row costs 1.5 GB (fp32) and one 512x512 image is
#: already a pass of 7-14 s, so the CPU decodes one at a time; on a GPU larger batches keep it busy
AUTO_CAP = {"cpu": {"unet": 2, "vae": 1}, "cuda": {"unet": 32, "vae": 8}}
#: of the memory limit: headroom for the attack's own tensors and the allocator's slack
SHARE = 0.85

_ELEMENT = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4}


def component_sizes(folder: Path, subfolders: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """``{subfolder: (parameters, bytes as stored)}`` from the safetensors files' headers, nothing
    loaded. Pickled weights (``allow_pickle``) are sized from their files, taken as fp32."""
    out = {}
    for sub in subfolders:
        count = stored = 0
        files = sorted((folder / sub).glob("*.safetensors"))
        if not files:
            stored = sum(f.stat().st_size for f in (folder / sub).glob("*") if f.suffix in (".bin", ".pt", ".pth", ".ckpt"))
            count = stored // 4
        for f in files:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                numel = 1
                for d in info["shape"]:
                    numel *= int(d)
                count += numel
                stored += numel * _ELEMENT.get(info.get("dtype", "F32"), 4)
        out[sub] = (count, stored)
    return out


def parameter_count(folder: Path, subfolders: tuple[str, ...]) -> int:
    """Parameters (tensor elements) in the safetensors files of ``subfolders``."""
    return sum(count for count, _ in component_sizes(folder, subfolders).values())


def available_bytes(device) -> tuple[int, str]:
    """(bytes, what they are): free memory of a CUDA device, else the RAM available now."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free memory of {device}"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "RAM available on this machine now"
    except OSError:
        pass
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(pages), "RAM of this machine"


@dataclass
class MemoryPlan:
    """The chosen rows per pass and the estimate behind them (bytes)."""

    unet_rows: int
    vae_rows: int
    weights: int
    runtime: int
    unet_row: int
    vae_row: int
    loading: int  # the stored copy of the largest component converted while loading (0: none)
    peak: int
    limit: int
    limit_source: str
    unet_source: str
    vae_source: str

    def summary(self) -> str:
        """One line for the terminal: the estimate and its parts."""
        unet, vae = self.unet_rows * self.unet_row, self.vae_rows * self.vae_row
        load = f", loading {self.loading / GB:.1f} (stored weights converted to the run's dtype)" if self.loading else ""
        return (
            f"peak memory about {self.peak / GB:.1f} GB estimated (weights {self.weights / GB:.1f} + runtime "
            f"{self.runtime / GB:.1f} + the largest of U-Net {self.unet_rows} row(s) x {self.unet_row / GB:.2f} = "
            f"{unet / GB:.1f}, VAE {self.vae_rows} row(s) x {self.vae_row / GB:.2f} = {vae / GB:.1f}{load}) of "
            f"{self.limit / GB:.1f} GB ({self.limit_source})"
        )

    def describe(self) -> dict:
        """JSON-able, for results.json ``target.memory`` (GB, 2 decimals)."""
        out = asdict(self)
        for key in ("weights", "runtime", "unet_row", "vae_row", "loading", "peak", "limit"):
            out[f"{key}_gb"] = round(out.pop(key) / GB, 2)
        out["summary"] = self.summary()
        return out


def plan(
    folder: Path, element_bytes: int, device, image_size: int,
    max_batch: int | Literal["auto"], vae_batch: int | Literal["auto"], memory_limit: float | Literal["auto"],
) -> MemoryPlan:
    """Rows per U-Net and VAE pass and the peak estimate; raises ``ConfigError`` (exit 2) when
    not even one row fits the limit, or when the rows asked for do not."""
    from audit_core import ConfigError

    sizes = component_sizes(folder, ("unet", "vae", "text_encoder"))
    weights = sum(count for count, _ in sizes.values()) * element_bytes
    # loading converts each component from its stored dtype (fp32 -> bf16, say): while it does, the
    # stored tensors (read from the file) and the converted ones are both resident; without a
    # conversion the tensors are the file's own bytes
    converting = [stored for count, stored in sizes.values() if stored != count * element_bytes]
    loading = max(converting, default=0)
    scale = (image_size / 512) ** 2
    half = 2 if element_bytes <= 2 else 4
    unet_row = int(ROW_BYTES[("unet", half)] * scale)
    vae_row = int(ROW_BYTES[("vae", half)] * scale)
    if memory_limit == "auto":
        limit, source = available_bytes(device)
        source = f"memory_limit auto: the {source}"
    else:
        limit, source = int(float(memory_limit) * GB), "target.memory_limit"
    fixed = weights + RUNTIME_BYTES if getattr(device, "type", "cpu") != "cuda" else weights
    room = SHARE * limit - fixed
    caps = AUTO_CAP["cuda" if getattr(device, "type", "cpu") == "cuda" else "cpu"]
    rows = {}
    sources = {}
    for name, req, per_row in (("unet", max_batch, unet_row), ("vae", vae_batch, vae_row)):
        if req == "auto":
            rows[name] = max(0, min(caps[name], int(room // per_row)))
            sources[name] = f"auto (at most {caps[name]} on this device)"
        else:
            rows[name] = int(req)
            sources[name] = "target.max_batch" if name == "unet" else "target.vae_batch"
    running = max(max(rows["unet"], 1) * unet_row, max(rows["vae"], 1) * vae_row)
    peak = int(fixed + max(running, loading))
    result = MemoryPlan(max(rows["unet"], 1), max(rows["vae"], 1), int(weights), int(fixed - weights), unet_row, vae_row,
                        int(loading), peak, int(limit), source, sources["unet"], sources["vae"])
    if min(rows.values()) < 1 or peak > limit:
        chosen = " and ".join(f"{k} {v}" for k, v in (("max_batch", max_batch), ("vae_batch", vae_batch)))
        raise ConfigError(
            f"target: this Stable Diffusion at {image_size}x{image_size} cannot run within the memory limit: the "
            f"{result.summary()}. The estimate counts the weights in the run's dtype, the runtime and the activations "
            f"of one U-Net or VAE pass ({chosen}); the per-row figures are measured by benchmarks/bench_sd.py. Lower "
            f"target.max_batch or target.vae_batch (or set them to auto), use `dtype: bf16` (half the weights and "
            f"activations; on CPUs with native bf16 and on GPUs), free memory, or set target.memory_limit (GB) if "
            f"more is available to the run than the estimate assumes."
        )
    return result
