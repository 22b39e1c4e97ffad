"""Built-in image distances: l2 (sum of squares), l1 (sum of absolute values), mse, ssim
(1 - SSIM with an 11x11 Gaussian window, or the whole image when smaller), ssim-grey-uint8
(1 - SSIM the way the official ReDiffuse Stable Diffusion script measures it). Lower = closer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..plugin.hookspecs import hookimpl

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


#: PIL's RGB -> L weights (ITU-R 601-2 luma, 16-bit fixed point): L = (19595 R + 38470 G + 7471 B + 2^15) >> 16
PIL_LUMA = (19595, 38470, 7471)


def grey_uint8(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` in [-1, 1] -> ``[B, 1, H, W]`` float64 holding uint8 grey levels, as
    diffusers' ``postprocess`` (``round((x + 1) * 127.5)``) then PIL's ``convert('L')`` produce them."""
    u8 = ((x.detach().double().clamp(-1, 1) + 1) * 127.5).round().long()
    if u8.shape[1] >= 3:
        r, g, b = u8[:, 0], u8[:, 1], u8[:, 2]
        u8 = ((PIL_LUMA[0] * r + PIL_LUMA[1] * g + PIL_LUMA[2] * b + (1 << 15)) >> 16).unsqueeze(1)
    return u8[:, :1].double()


def ssim_grey_uint8_index(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM per image on greyscale uint8 versions of ``a`` and ``b`` with scikit-image's
    ``structural_similarity`` defaults: a 7x7 uniform window, sample covariances (N / (N - 1)),
    K1 = 0.01, K2 = 0.03, the mean over the positions where the window fits, and the data range
    ``max - min`` of ``a`` per image (the official script passes the reconstruction's; at least 1)."""
    import torch.nn.functional as F

    x, y = grey_uint8(a), grey_uint8(b)
    win = min(window, x.shape[-1], x.shape[-2])
    mean = lambda v: F.avg_pool2d(v, win, stride=1)  # noqa: E731 - the window mean at every valid position
    n = win * win
    cov_norm = n / (n - 1)
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    rng = (_flat(x).max(1).values - _flat(x).min(1).values).clamp_min(1.0).reshape(-1, 1, 1, 1)
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return _flat(s).mean(1)


def ssim_grey_uint8(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - ssim_grey_uint8_index(a, b)


@hookimpl
def register_distances(register):
    register("l2", l2)
    register("l1", l1)
    register("mse", mse)
    register("ssim", ssim)
    register("ssim-grey-uint8", ssim_grey_uint8)
