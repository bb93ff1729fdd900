"""The small latent autoencoder of the embedded models (diffusers AutoencoderKL, 32x32x3 <-> 4x8x8).

With it the embedded models run the same latent pipeline as DiT-XL/2 and PixArt: the transformer denoises
latents and the decoder, not 4x4 pixel patches, draws the sharp edges.
"""
from __future__ import annotations

from diffusers import AutoencoderKL

EMBEDDED_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=32, layers_per_block=1, norm_num_groups=16,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64),
)


def build_embedded_vae() -> AutoencoderKL:
    return AutoencoderKL(**EMBEDDED_VAE_CONFIG)
