"""The learned scorer ("NNs" variant) for any attack that yields residual maps.

A small ResNet-18-style network (four stages of two basic blocks, narrow widths) is trained on
the residual maps of a calibration split (``fraction`` of the members and of the non-members,
seeded), regressing labels {0, 1} (SGD, momentum 0.9, weight decay 5e-4, as in SecMI's recipe).
Scores are the network's output; metrics must be computed on the held-out images only.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """ResNet-18 layout ([2, 2, 2, 2] basic blocks) with widths (w, 2w, 4w, 8w)."""

    def __init__(self, channels: int, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        layers, cin = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            layers += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.head(x.mean(dim=(2, 3))).squeeze(1)


@dataclass
class ScorerResult:
    scores: np.ndarray  # one per image (all images; only held-out ones are for metrics)
    calibration: np.ndarray  # bool mask of the training split
    info: dict


def calibration_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Seeded stratified mask: ``fraction`` of each class (at least one image each)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        mask[idx[: max(1, int(round(len(idx) * fraction)))]] = True
    return mask


def train_classifier(
    maps: np.ndarray,
    labels: np.ndarray,
    fraction: float = 0.2,
    seed: int = 0,
    epochs: int = 15,
    lr: float = 1e-3,
    batch_size: int = 128,
    width: int = 16,
    device: str = "cpu",
) -> ScorerResult:
    """Train on the calibration split of ``maps`` ``[N, C, H, W]``, score every image."""
    labels = np.asarray(labels, dtype=np.int64)
    mask = calibration_split(labels, fraction, seed)
    x = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    # normalise by the calibration split's statistics
    mean, std = x[mask].mean(), x[mask].std().clamp_min(1e-8)
    x = (x - mean) / std
    y = torch.as_tensor(labels, dtype=torch.float32)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = ResidualResNet(x.shape[1], width).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    train_idx = torch.as_tensor(np.flatnonzero(mask))
    losses = []
    with torch.enable_grad():
        for _ in range(epochs):
            net.train()
            perm = train_idx[torch.randperm(len(train_idx), generator=gen)]
            total = 0.0
            for start in range(0, len(perm), batch_size):
                idx = perm[start : start + batch_size]
                if len(idx) < 2:
                    continue
                pred = net(x[idx].to(device))
                loss = ((pred - y[idx].to(device)) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss) * len(idx)
            losses.append(total / max(len(perm), 1))
    net.eval()
    with torch.no_grad():
        scores = torch.cat([net(x[i : i + 512].to(device)).cpu() for i in range(0, len(x), 512)]).numpy()
    info = {
        "kind": "classifier",
        "model": f"ResNet-18-style ([2,2,2,2] basic blocks, width {width})",
        "calibration_fraction": fraction,
        "n_calibration": int(mask.sum()),
        "n_evaluation": int((~mask).sum()),
        "epochs": epochs,
        "lr": lr,
        "loss_curve": [round(v, 6) for v in losses],
        "note": f"trained on a seeded {fraction:.0%} calibration split of members and non-members; metrics are on the remaining {1 - fraction:.0%} only",
    }
    return ScorerResult(scores=scores.astype(np.float64), calibration=mask, info=info)
