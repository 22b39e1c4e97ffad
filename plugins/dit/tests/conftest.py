"""A tiny DiT folder built once per session, class-labelled digit manifests, and a fine-tuned copy
of the tiny DiT that has memorised the members."""

import json

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dit(tmp_path_factory):
    from audit_dit.tiny import build_tiny_dit

    return build_tiny_dit(tmp_path_factory.mktemp("dit") / "tiny-dit")


def digit_images(indices):
    """Real handwritten digits (scikit-learn), 16x16 RGB uint8, with their class (0..9)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    out = []
    for i in indices:
        arr = (d.images[i] / 16.0 * 255).astype(np.uint8)
        img = Image.fromarray(arr).resize((16, 16), Image.Resampling.BILINEAR).convert("RGB")
        out.append((img, int(d.target[i])))
    return out


@pytest.fixture(scope="session")
def classed_data(tmp_path_factory):
    """members.csv / nonmembers.csv with a `class` column: ids for some rows, id2label names
    ("seven") for others, and one row left empty (the null class)."""
    from audit_dit.tiny import DIGITS

    root = tmp_path_factory.mktemp("dit-data")
    manifests = {}
    for group, idx in (("members", range(0, 16)), ("nonmembers", range(100, 116))):
        (root / group).mkdir()
        rows = ["path,class"]
        for j, (img, digit) in enumerate(digit_images(idx)):
            img.save(root / group / f"{j:02d}.png")
            label = "" if j == 15 else (DIGITS[digit] if j % 2 else str(digit))
            rows.append(f"{group}/{j:02d}.png,{label}")
        manifests[group] = root / f"{group}.csv"
        manifests[group].write_text("\n".join(rows) + "\n")
    return manifests


@pytest.fixture(scope="session")
def finetuned_dit(tiny_dit, tmp_path_factory):
    """The tiny DiT fine-tuned on the 16 member digits (with their classes) until it memorises them."""
    from audit_core.plugin.targets import TargetContext
    from audit_dit.target import DiTParams, DiTTarget
    from audit_dit.tiny import DIGITS, save_dit_folder, tiny_components

    target = DiTTarget(DiTParams(model=str(tiny_dit)), TargetContext(device="cpu"))
    members = digit_images(range(0, 16))
    x = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1) for im, _ in members])
    labels = torch.tensor([d for _, d in members])
    with torch.no_grad():
        # as in the SD plugin's test: the VAE scaling factor that gives the training latents unit
        # variance (the random tiny VAE's latents have std ~0.04; the noise would drown them)
        raw = target.encode(x) / target.scaling_factor
        scaling = float(1.0 / raw.std())
        target.vae.register_to_config(scaling_factor=scaling)
        z0 = raw * scaling
    model = target.transformer.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    abar = target.alphas_cumprod.float()
    steps = 400
    with torch.enable_grad():
        for _ in range(steps):
            # the demo model's recipe: 80 % of the draws in the low-noise range the attacks probe
            low = torch.rand(len(z0), generator=gen) < 0.8
            t = torch.where(low, torch.randint(0, 250, (len(z0),), generator=gen), torch.randint(0, 1000, (len(z0),), generator=gen))
            noise = torch.randn(z0.shape, generator=gen)
            a = abar[t].view(-1, 1, 1, 1)
            z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
            pred = model(z_t, timestep=t, class_labels=labels).sample[:, :4]  # the eps half (learned sigma)
            loss = ((pred - noise) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    parts = tiny_components()
    parts.update(transformer=model.eval(), vae=target.vae)
    out = save_dit_folder(tmp_path_factory.mktemp("dit-ft") / "tiny-dit-ft", parts, dict(enumerate(DIGITS)))
    (out / "finetune.json").write_text(json.dumps({"steps": steps, "final_loss": float(loss.detach()), "vae_scaling_factor": scaling}))
    return out
