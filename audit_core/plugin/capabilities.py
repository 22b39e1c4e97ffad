"""What a target gives access to: the capability names a target declares (``capabilities``) and
an attack requires (``requires``), with their descriptions for error messages."""

from __future__ import annotations

VARIATION = "variation"  # black-box: V(x, t, k) only
NOISE = "noise"  # grey-box: eps(x_t, t[, text]) on inputs of the caller's choice
GRADIENTS = "gradients"  # white-box: gradients of the denoising loss w.r.t. the model's parameters
TEXT = "text"  # eps conditions on each row's caption as a free-text prompt (text-to-image models)

ACCESS_NAMES = {
    VARIATION: "variation API (black-box)",
    NOISE: "noise prediction (grey-box)",
    GRADIENTS: "gradients w.r.t. the model's parameters (white-box)",
    TEXT: "text-conditional noise prediction (captions as prompts)",
}
