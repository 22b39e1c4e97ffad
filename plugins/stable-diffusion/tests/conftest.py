"""A tiny SD folder built once per session, and a fine-tuned copy that has memorised members."""

import json

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    from audit_stable_diffusion.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


def digit_images(indices):
    """Real handwritten digits (scikit-learn), 16x16 RGB uint8."""
    from sklearn.datasets import load_digits

    d = load_digits()
    out = []
    for i in indices:
        arr = (d.images[i] / 16.0 * 255).astype(np.uint8)
        img = Image.fromarray(arr).resize((16, 16), Image.Resampling.BILINEAR).convert("RGB")
        out.append((img, f"a handwritten digit {d.target[i]}"))
    return out


@pytest.fixture(scope="session")
def captioned_data(tmp_path_factory):
    """members/ and nonmembers/ CSV manifests with captions (one contains markup)."""
    root = tmp_path_factory.mktemp("sd-data")
    manifests = {}
    for group, idx in (("members", range(0, 16)), ("nonmembers", range(100, 116))):
        (root / group).mkdir()
        rows = ["path,caption"]
        for j, (img, caption) in enumerate(digit_images(idx)):
            img.save(root / group / f"{j:02d}.png")
            if group == "members" and j == 0:
                caption = 'digit <script>alert("x")</script>'
            rows.append(f'{group}/{j:02d}.png,"{caption.replace(chr(34), chr(34) * 2)}"')
        manifests[group] = root / f"{group}.csv"
        manifests[group].write_text("\n".join(rows) + "\n")
    return manifests


@pytest.fixture(scope="session")
def finetuned_sd(tiny_sd, tmp_path_factory):
    """The tiny SD fine-tuned on the 16 member images (with captions) until it memorises them."""
    from audit_core.plugin.targets import TargetContext
    from audit_stable_diffusion.target import SDParams, StableDiffusionTarget
    from audit_stable_diffusion.tiny import build_tiny_pipeline, tiny_components

    target = StableDiffusionTarget(SDParams(model=str(tiny_sd)), TargetContext(device="cpu"))
    members = digit_images(range(0, 16))
    x = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1) for im, _ in members])
    captions = [c for _, c in members]
    with torch.no_grad():
        # As for SD's 0.18215: pick the VAE scaling factor that gives the training latents unit
        # variance. (The random tiny VAE's posterior means have std ~0.07; scaled by 0.18215 the
        # noise would drown the image at every t and nothing could be memorised.)
        raw = target.encode(x) / target.scaling_factor
        scaling = float(1.0 / raw.std())
        target.vae.register_to_config(scaling_factor=scaling)
        z0 = raw * scaling
        cond = target.text_embeddings(captions)
    unet = target.unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    abar = target.alphas_cumprod.float()
    steps = 200
    with torch.enable_grad():
        for _ in range(steps):
            # the demo model's recipe: 80 % of the draws in the low-noise range the attacks probe
            low = torch.rand(len(z0), generator=gen) < 0.8
            t = torch.where(low, torch.randint(0, 250, (len(z0),), generator=gen), torch.randint(0, 1000, (len(z0),), generator=gen))
            noise = torch.randn(z0.shape, generator=gen)
            a = abar[t].view(-1, 1, 1, 1)
            z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
            loss = ((unet(z_t, t, encoder_hidden_states=cond).sample - noise) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    parts = tiny_components()
    parts.update(unet=unet.eval(), vae=target.vae, text_encoder=target.text_encoder, tokenizer=target.tokenizer)
    out = build_tiny_pipeline(tmp_path_factory.mktemp("sd-ft") / "tiny-sd-ft", components=parts)
    (out / "finetune.json").write_text(json.dumps({"steps": steps, "final_loss": float(loss.detach()), "vae_scaling_factor": scaling}))
    return out
