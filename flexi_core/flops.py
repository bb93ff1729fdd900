"""Exact FLOPs of one denoiser forward, by formula (no weights needed) and by torch's FlopCounterMode.

Counts matrix products only (linear layers, convolutions, attention), a multiply-add being 2 FLOPs, as
FlopCounterMode does; norms, activations and additions are left out (well under 1% here). The formulas follow the
diffusers implementations line by line, e.g. DiT recomputes the timestep/label embedding inside every block.
"""
from __future__ import annotations

import math

from torch.utils.flop_counter import FlopCounterMode

from .families import Patch


def _tokens(latent_shape: tuple, patch: Patch, video: bool) -> int:
    if video:
        frames, _, h, w = latent_shape
        frames = math.ceil(frames / patch[0])  # frames are padded up to a multiple of the temporal patch
    else:
        frames, (_, h, w) = 1, latent_shape
    return frames * (h // patch[1]) * (w // patch[2])


def forward_flops(family: str, config: dict, latent_shape: tuple, patch: Patch, batch: int = 1,
                  text_tokens: int = 0, lora_rank: int = 0) -> int:
    """FLOPs of one forward of `family` with diffusers `config` at `patch` (LoRA unmerged if lora_rank > 0)."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    layers = config["num_layers"]
    c_in, c_out = config["in_channels"], config.get("out_channels") or config["in_channels"]
    n = _tokens(latent_shape, patch, family == "cogvideox")
    p = math.prod(patch)
    embed_out = n * c_in * p * d + n * d * p * c_out  # patch embedding + output projection
    if family == "dit":
        timestep_mlp = 256 * d + d * d
        block = 12 * n * d * d + 2 * n * n * d + timestep_mlp + 6 * d * d
        macs = layers * block + timestep_mlp + 2 * d * d + embed_out
        lora_tokens = n
    elif family == "pixart":
        m, cap = text_tokens, config["caption_channels"]
        cross = n * d * d + 2 * m * d * d + n * d * d + 2 * n * m * d
        block = 12 * n * d * d + 2 * n * n * d + cross
        macs = layers * block + (256 * d + d * d + 6 * d * d) + m * (cap * d + d * d) + embed_out
        lora_tokens = n
    elif family == "cogvideox":
        s, te = n + text_tokens, config["time_embed_dim"]
        block = 12 * s * d * d + 2 * s * s * d + 2 * te * 6 * d
        macs = layers * block + (d * te + te * te) + text_tokens * config["text_embed_dim"] * d + te * 2 * d \
            + embed_out
        lora_tokens = s
    else:
        raise ValueError(f"unknown family {family!r}")
    # LoRA on q, k, v, out (d -> d) and the feed-forward (d -> 4d -> d): r * (d_in + d_out) per token each
    macs += layers * lora_tokens * lora_rank * (4 * 2 * d + 2 * 5 * d)
    return 2 * batch * macs


def spec_flops(spec, patch: Patch | None = None, batch: int = 1, lora_rank: int = 0) -> int:
    return forward_flops(spec.family, spec.config, spec.latent_shape, patch or spec.native_patch, batch,
                         spec.text_tokens, lora_rank)


def counted_flops(fn, *args, **kwargs) -> int:
    """FLOPs torch counts for fn(*args); run it on the meta device so attention (SDPA) is counted too."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()
