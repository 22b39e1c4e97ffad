"""Built-in image distances: l2 (sum of squares), l1 (sum of absolute values), mse, ssim
(1 - SSIM with an 11x11 Gaussian window, or the whole image when smaller). Lower = closer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl

if TYPE_CHECKING:  # registered at start-up, called only once tensors exist: torch loads then
    import torch


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _flat((a - b) ** 2).sum(1)


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _flat((a - b).abs()).sum(1)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _flat((a - b) ** 2).mean(1)


def ssim_index(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM per image for images in [-1, 1] (data range 2), per channel then averaged."""
    import torch
    import torch.nn.functional as F

    a = a.float()
    b = b.float()
    c = a.shape[1]
    win = min(window, a.shape[-1], a.shape[-2])
    coords = torch.arange(win, dtype=torch.float32, device=a.device) - (win - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(c, 1, win, win).contiguous()

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=c)

    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return _flat(s).mean(1)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - ssim_index(a, b)


@hookimpl
def register_distances(register):
    register("l2", l2)
    register("l1", l1)
    register("mse", mse)
    register("ssim", ssim)
