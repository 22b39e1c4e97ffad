"""The learned scorer ("NNs" variant) for any attack that yields residual maps.

A small ResNet-18-style network (four stages of two basic blocks, widths w, 2w, 4w, 8w) is trained
on the residual maps of a calibration split (``fraction`` of the members and of the non-members,
seeded), regressing labels {0, 1} with SGD (momentum 0.9, weight decay 5e-4, as in SecMI's
recipe). Scores are the network's output; metrics must be computed on the held-out images only.

The paper's recipe (15 epochs at lr 1e-3, width 64) assumes thousands of calibration maps; on a
few hundred (the demo: 20 % of 2 x 500 images) it underfits, and training longer overfits, so the
defaults here are tuned for small calibration sets and a CPU (under a minute for the demo):

- **width 8**, batch 128, **lr 1e-2 with a cosine decay over 30 epochs**, random flips/rotations
  of square maps (the 8 dihedral transforms) as augmentation;
- **an energy input**: the map's log mean square (standardised on the calibration split), which is
  what a threshold on an l2-type score sees, is concatenated to the pooled features, and the
  linear head starts as the least-squares fit of the labels on it (CNN weights in the head at 0).
  So epoch 0 is already the threshold statistic, and the network only has to learn what the
  spatial layout of the residual adds;
- **epoch selection**: a seeded stratified ``val_fraction`` (25 %) of the calibration split is held
  out of training; the weights of the epoch with the lowest validation MSE (epoch 0 included)
  are kept. The held-out 80 % of the run is never seen.

Two named recipes (``attacks[].scorer: {kind: classifier, recipe: default | paper}``,
:data:`RECIPES`):

- ``default``: the above.
- ``paper``: the official ReDiffuse DDIM script's ``nns_attack`` (github lijingwei0502/diffusion_mia,
  DDIM/attack.py): the raw residual maps (no standardisation, no energy input, no augmentation),
  a ResNet-18 at width 64 with the ImageNet stem (3x3 convolution at stride 2, then 3x3 max-pool at
  stride 2), SGD lr 1e-3 constant, momentum 0.9, weight decay 5e-4, batch 128, 15 epochs, MSE to
  {0, 1}. One deviation: the official script keeps the checkpoint of an epoch picked by accuracy on
  the *test* images (which leaks the evaluation split into the model choice); here the last epoch
  is kept, so the held-out images stay unseen.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.short(x))


class ResidualResNet(nn.Module):
    """ResNet-18 layout ([2, 2, 2, 2] basic blocks) with widths (w, 2w, 4w, 8w); with ``energy``
    the head also sees one scalar per image (the map's standardised log mean square). The stem is
    a 3x3 convolution at stride 1 (``cifar``), or at stride 2 followed by a 3x3 max-pool at stride 2
    (``imagenet``, the official ReDiffuse scorer's: 4x fewer positions, so 16x cheaper)."""

    def __init__(self, channels: int, width: int = 8, energy: bool = True, stem: str = "cifar"):
        super().__init__()
        stride = 2 if stem == "imagenet" else 1
        pool = [nn.MaxPool2d(3, 2, 1)] if stem == "imagenet" else []
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), *pool
        )
        layers, cin = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            layers += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.energy = energy
        self.head = nn.Linear(cin + int(energy), 1)

    def forward(self, x: torch.Tensor, energy: torch.Tensor | None = None) -> torch.Tensor:
        f = self.layers(self.stem(x)).mean(dim=(2, 3))
        if self.energy:
            f = torch.cat([f, energy.reshape(-1, 1).to(f)], dim=1)
        return self.head(f).squeeze(1)


@dataclass
class ScorerResult:
    scores: np.ndarray  # one per image (all images; only held-out ones are for metrics)
    calibration: np.ndarray  # bool mask of the training split
    info: dict


#: the keyword arguments of :func:`train_classifier` per named recipe (see the module docstring)
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {
        "epochs": 15,
        "lr": 1e-3,
        "batch_size": 128,
        "width": 64,
        "val_fraction": 0.0,
        "energy": False,
        "augment": False,
        "weight_decay": 5e-4,
        "schedule": "constant",
        "standardize": False,
        "stem": "imagenet",
    },
}


def calibration_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Seeded stratified mask: ``fraction`` of each class (at least one image each)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        mask[idx[: max(1, int(round(len(idx) * fraction)))]] = True
    return mask


def map_energy(x: torch.Tensor) -> torch.Tensor:
    """log mean square of every map ``[N, ...] -> [N]``."""
    return torch.log(x.float().pow(2).flatten(1).mean(1).clamp_min(1e-12))


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips/rotations of square maps."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def train_classifier(
    maps: np.ndarray,
    labels: np.ndarray,
    fraction: float = 0.2,
    seed: int = 0,
    epochs: int = 30,
    lr: float = 1e-2,
    batch_size: int = 128,
    width: int = 8,
    device: str = "cpu",
    val_fraction: float = 0.25,
    energy: bool = True,
    augment: bool = True,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    standardize: bool = True,
    stem: str = "cifar",
    recipe: str | None = None,
) -> ScorerResult:
    """Train on the calibration split of ``maps`` ``[N, C, H, W]``, score every image (see the
    module docstring for the recipe). ``schedule``: ``cosine`` decay or ``constant`` lr;
    ``standardize``: divide the maps by the calibration split's mean/std first. ``recipe`` names
    the :data:`RECIPES` entry these came from, for the info block. Deterministic given ``seed``."""
    labels = np.asarray(labels, dtype=np.int64)
    mask = calibration_split(labels, fraction, seed)
    cal = np.flatnonzero(mask)
    held = calibration_split(labels[cal], val_fraction, seed + 1) if val_fraction > 0 else np.zeros(len(cal), bool)
    if held.all() or (~held).sum() < 2:  # too few images to hold any out
        held[:] = False
    train_idx, val_idx = torch.as_tensor(cal[~held]), torch.as_tensor(cal[held])
    x = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    e = map_energy(x)
    e = (e - e[mask].mean()) / e[mask].std().clamp_min(1e-8) if mask.sum() > 1 else e - e[mask].mean()
    if standardize:  # normalise by the calibration split's statistics
        mean, std = x[mask].mean(), x[mask].std().clamp_min(1e-8)
        x = (x - mean) / std
    y = torch.as_tensor(labels, dtype=torch.float32)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = ResidualResNet(x.shape[1], width, energy, stem).to(device)
    if energy:  # start from the least-squares fit of the labels on the energy alone
        with torch.no_grad():
            et, yt = e[train_idx], y[train_idx]
            slope = ((et - et.mean()) * (yt - yt.mean())).sum() / ((et - et.mean()) ** 2).sum().clamp_min(1e-12)
            net.head.weight.zero_()
            net.head.weight[0, -1] = slope
            net.head.bias.fill_(float(yt.mean() - slope * et.mean()))
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = max(1, -(-len(train_idx) // batch_size))
    total = max(1, epochs * steps_per_epoch)
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    square = x.shape[-1] == x.shape[-2]

    def predict(idx: torch.Tensor) -> torch.Tensor:
        net.eval()
        with torch.no_grad():
            return torch.cat(
                [net(x[idx[i : i + 512]].to(device), e[idx[i : i + 512]].to(device)).cpu() for i in range(0, len(idx), 512)]
            ) if len(idx) else torch.empty(0)

    def val_loss() -> float:
        return float(((predict(val_idx) - y[val_idx]) ** 2).mean()) if len(val_idx) else 0.0

    best_loss, best_epoch, best_state = val_loss(), 0, copy.deepcopy(net.state_dict())
    losses, val_losses = [], [round(best_loss, 6)]
    with torch.enable_grad():
        for epoch in range(epochs):
            net.train()
            perm = train_idx[torch.randperm(len(train_idx), generator=gen)]
            total_loss = 0.0
            for start in range(0, len(perm), batch_size):
                idx = perm[start : start + batch_size]
                if len(idx) < 2:
                    continue
                xb = x[idx]
                if augment and square:
                    xb = dihedral(xb, int(torch.randint(8, (1,), generator=gen)))
                pred = net(xb.to(device), e[idx].to(device))
                loss = ((pred - y[idx].to(device)) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total_loss += loss.item() * len(idx)
            losses.append(total_loss / max(len(perm), 1))
            vl = val_loss()
            val_losses.append(round(vl, 6))
            if len(val_idx) == 0 or vl < best_loss:
                best_loss, best_epoch, best_state = vl, epoch + 1, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    scores = predict(torch.arange(len(x))).numpy()
    keep = (
        f"weights of the epoch with the lowest MSE on {val_fraction:.0%} of the calibration split kept"
        if len(val_idx)
        else "the last epoch's weights kept"
    )
    info = {
        "kind": "classifier",
        "recipe_name": recipe or "custom",
        "model": f"ResNet-18-style ([2,2,2,2] basic blocks, width {width}, {stem} stem)"
        + (" + map-energy input" if energy else ""),
        "calibration_fraction": fraction,
        "n_calibration": int(mask.sum()),
        "n_evaluation": int((~mask).sum()),
        "n_train": int(len(train_idx)),
        "n_validation": int(len(val_idx)),
        "epochs": epochs,
        "best_epoch": best_epoch,
        "lr": lr,
        "recipe": (
            f"SGD momentum 0.9, weight decay {weight_decay}, batch {batch_size}, lr {lr} "
            f"{'cosine over' if schedule == 'cosine' else 'constant for'} {epochs} epochs, "
            f"MSE to labels {{0,1}}{', dihedral augmentation' if augment and square else ''}"
            f"{'' if standardize else ', raw (unstandardised) maps'}; {keep}"
        ),
        "loss_curve": [round(v, 6) for v in losses],
        "val_loss_curve": val_losses,
        "note": f"trained on a seeded {fraction:.0%} calibration split of members and non-members; metrics are on the remaining {1 - fraction:.0%} only",
    }
    return ScorerResult(scores=scores.astype(np.float64), calibration=mask, info=info)


def train_recipe(maps: np.ndarray, labels: np.ndarray, recipe: str = "default", **kwargs: Any) -> ScorerResult:
    """:func:`train_classifier` with the named recipe's settings (``kwargs``: split fraction, seed,
    device)."""
    return train_classifier(maps, labels, **{**RECIPES[recipe], **kwargs}, recipe=recipe)
