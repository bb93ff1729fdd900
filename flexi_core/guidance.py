"""Classifier-free guidance with a patch size per pass: the paper's rule, written once for sampling, the analysis
and the distillation trajectories.

Both passes at one size: one batched forward, `e_u + s (e_c - e_u)`. Conditional pass native, unconditional weak:
the weak *conditional* prediction is the guidance base, so the native model is guided away from its own weak
version (paper, Sec. 3.3). Any other mix: each pass at its own size. Learned-variance channels (DiT-XL/2, PixArt
predict 2C channels) are dropped, so every prediction has the latent's channels.
"""
from __future__ import annotations

import torch

from .flexible import NATIVE


def predict(flexible, x: torch.Tensor, t: torch.Tensor, cond: dict, mode: str) -> torch.Tensor:
    """The denoiser's noise prediction at `mode`, with the latent's channels only."""
    channel_dim = 2 if flexible.family.modality == "video" else 1
    out = flexible(x, t.expand(x.shape[0]), cond, mode)
    return out.narrow(channel_dim, 0, x.shape[channel_dim])


def guided(flexible, x: torch.Tensor, t: torch.Tensor, cond: dict, uncond: dict, scale: float, cond_mode: str,
           uncond_mode: str | None = None) -> torch.Tensor:
    """Guided prediction; `scale <= 1` runs the conditional pass alone. `uncond_mode` defaults to `cond_mode`."""
    if scale <= 1:
        return predict(flexible, x, t, cond, cond_mode)
    uncond_mode = uncond_mode or cond_mode
    if cond_mode == uncond_mode:
        both = {k: torch.cat([cond[k], uncond[k]]) for k in cond}
        e_c, e_u = predict(flexible, torch.cat([x, x]), t, both, cond_mode).chunk(2)
    elif cond_mode == NATIVE:
        e_c, e_u = predict(flexible, x, t, cond, cond_mode), predict(flexible, x, t, cond, uncond_mode)
    else:
        e_c, e_u = predict(flexible, x, t, cond, cond_mode), predict(flexible, x, t, uncond, uncond_mode)
    return e_u + scale * (e_c - e_u)
