"""White-box access: per-sample gradient norms of the denoising loss with respect to a network's
parameters (what :meth:`audit_core.targets.Target.param_grad_norms` computes for targets that
declare ``GRADIENTS``; the gradient-subspace attack GSA feeds them to a classifier).

A sample is a group of consecutive rows (one image at several timesteps, or one row alone); its
loss is the mean squared error of the noise prediction over its rows and elements, as in the
training objective. Samples are processed one at a time: one forward pass over the sample's rows
and one ``torch.autograd.grad`` (no ``.grad`` buffers are touched, nothing accumulates), then the
l2 norm of each parameter tensor's gradient. Peak memory is therefore one sample's activations
plus one gradient of the model, independent of the batch size; the per-sample loop costs the
same arithmetic as a batched pass (the backward pass of a batch is per-row work too), only in
smaller kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def per_sample_grad_norms(
    module: torch.nn.Module,
    forward: Callable[[torch.Tensor, torch.Tensor, list], torch.Tensor],
    z_t: torch.Tensor,
    steps: Sequence[int] | torch.Tensor,
    noise: torch.Tensor,
    captions: Sequence[str | None] | None,
    rows_per_sample: int = 1,
) -> torch.Tensor:
    """``[S, L]`` float64 on the CPU: for each of the ``S = N / rows_per_sample`` samples, the l2
    norm of ``d mean((forward(z_t, steps) - noise)^2) / d p`` for each of the module's ``L``
    parameter tensors (``module.named_parameters()`` order; a parameter the loss does not reach
    gets 0)."""
    n = int(z_t.shape[0])
    r = int(rows_per_sample)
    if r < 1 or n % r:
        raise ValueError(f"{n} rows cannot be split into samples of {r} rows")
    if noise.shape != z_t.shape:
        raise ValueError(f"noise {list(noise.shape)} and z_t {list(z_t.shape)} differ in shape")
    steps = torch.as_tensor(steps if isinstance(steps, torch.Tensor) else list(steps), dtype=torch.long).reshape(-1)
    if steps.numel() != n:
        raise ValueError(f"{steps.numel()} timesteps for {n} rows: one per row is required")
    captions = list(captions) if captions is not None else [None] * n
    if len(captions) != n:
        raise ValueError(f"{len(captions)} captions for {n} rows: one per row is required")
    params = [p for _, p in module.named_parameters()]
    trainable = [p.requires_grad for p in params]
    out = torch.empty(n // r, len(params), dtype=torch.float64)
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            for s in range(n // r):
                rows = slice(s * r, (s + 1) * r)
                eps = forward(z_t[rows], steps[rows], captions[rows])
                dtype = torch.promote_types(eps.dtype, torch.float32)  # half precision: the loss in fp32
                loss = torch.nn.functional.mse_loss(eps.to(dtype), noise[rows].to(eps.device, dtype))
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                norms = [
                    torch.linalg.vector_norm(g, dtype=torch.promote_types(g.dtype, torch.float32)).double()
                    if g is not None else torch.zeros((), dtype=torch.float64, device=loss.device)
                    for g in grads
                ]
                out[s] = torch.stack(norms).cpu()
                del eps, loss, grads, norms
    finally:
        for p, flag in zip(params, trainable):
            p.requires_grad_(flag)
    return out
