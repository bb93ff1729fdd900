"""Shared fixtures: tiny random-weight models of the same diffusers classes, written as an assets folder."""
from __future__ import annotations

import pytest
import torch

from flexi_core import registry

TINY = dict(num_attention_heads=2, attention_head_dim=8, num_layers=2)
TINY_EXTRA = {"shapes": {}, "shapes-text": dict(cross_attention_dim=16), "shapes-video": dict(time_embed_dim=16)}

torch.set_num_threads(2)


def tiny_transformer(name: str, seed: int = 0, **overrides):
    """Random weights with std 0.1 so every path (adaLN gates, output projection) carries signal."""
    torch.manual_seed(seed)
    model = registry.build_transformer(registry.get_spec(name), **{**TINY, **TINY_EXTRA[name], **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """An assets/ folder holding a tiny VAE and tiny versions of the three embedded transformers."""
    from diffusers import AutoencoderKL
    root = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=32, layers_per_block=1,
                        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 8))
    vae.save_pretrained(root / "vae")
    for name in TINY_EXTRA:
        tiny_transformer(name).save_pretrained(root / name / "transformer")
    return root
