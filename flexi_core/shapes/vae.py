"""The small latent autoencoders of the embedded models (diffusers AutoencoderKL).

With them the embedded models run the same latent pipeline as DiT-XL/2 and PixArt: the transformer denoises
latents and the decoder, not pixel patches, draws the sharp edges. `vae` (4x: 32x32x3 <-> 4x8x8) serves the shipped
models; `vae-2x` (32x32x3 <-> 4x16x16) gives the paper's token regime (256 native tokens at patch 1, 64 weak);
`vae-2x-texture` is the same 2x autoencoder trained on textured data, whose stripes and dots the others blur away.
"""
from __future__ import annotations

from diffusers import AutoencoderKL

_COMMON = dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=32, layers_per_block=1,
               norm_num_groups=16)
# name -> channels per level; each level after the first halves the resolution
VAE_LEVELS = {"vae": (32, 64, 64), "vae-2x": (64, 64), "vae-2x-texture": (64, 64)}
TEXTURED_VAES = ("vae-2x-texture",)  # trained on textured data (data.TEXTURES)


def vae_config(name: str = "vae") -> dict:
    levels = VAE_LEVELS[name]
    return dict(_COMMON, down_block_types=("DownEncoderBlock2D",) * len(levels),
                up_block_types=("UpDecoderBlock2D",) * len(levels), block_out_channels=levels)


def build_embedded_vae(name: str = "vae") -> AutoencoderKL:
    return AutoencoderKL(**vae_config(name))
