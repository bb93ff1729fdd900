"""The three diffusers transformer families, seen through one small interface.

A family knows where a model keeps its patch embedding, positional embedding and output projection, and how to run
everything in between (conditioning, blocks, final modulation) on a token sequence of any length. That is all the
flexible wrapper needs: it swaps the two ends for each patch size and keeps the middle shared.

Patches are (t, h, w) tuples; images use t = 1. A patch is flattened in (channel, t, h, w) order, the order the
models' own Conv/Linear patch embeddings use, and tokens are ordered (t, h, w) like theirs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import CogVideoXTransformer3DModel, DiTTransformer2DModel, PixArtTransformer2DModel
from diffusers.models.embeddings import get_2d_sincos_pos_embed, get_3d_sincos_pos_embed

Patch = tuple[int, int, int]

# LoRA goes on self-attention and feed-forward linears only; cross-attention (attn2) stays frozen and adapter-free.
LORA_TARGETS = r".*transformer_blocks\.\d+\.(attn1\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2))"


class Family:
    """Base for the per-class adapters; images are (B, C, H, W) tensors, videos (B, F, C, H, W) (CogVideoX layout)."""
    name: str
    modality = "image"

    def __init__(self, model):
        self.model = model

    @staticmethod
    def condition(class_labels=None, hidden=None, mask=None) -> dict:
        """The conditioning this family's forward takes: text states (and, for PixArt, their mask) or labels."""
        return {"encoder_hidden_states": hidden}

    # --- layout ---
    def to_bcthw(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(2)

    def from_bcthw(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(2)

    @property
    def native_patch(self) -> Patch:
        p = self.model.config.patch_size
        return (1, p, p)

    @property
    def in_channels(self) -> int:
        return self.model.config.in_channels

    @property
    def out_channels(self) -> int:
        return self.model.out_channels

    @property
    def width(self) -> int:
        return self.model.config.num_attention_heads * self.model.config.attention_head_dim

    # --- the two ends, as (weight, bias) in canonical layout ---
    def native_embedding(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight (d, C, t, h, w) and bias (d,)."""
        conv = self.model.pos_embed.proj
        return conv.weight.unsqueeze(2), conv.bias

    def native_output_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight (C_out, t, h, w, d) and bias (C_out, t, h, w)."""
        linear = self._proj_out()
        _, ph, pw = self.native_patch
        # DiT/PixArt order the output features (h, w, c)
        w = linear.weight.reshape(ph, pw, self.out_channels, -1).permute(2, 0, 1, 3).unsqueeze(1)
        b = linear.bias.reshape(ph, pw, self.out_channels).permute(2, 0, 1).unsqueeze(1)
        return w, b

    def positional_embedding(self, grid: Patch, patch: Patch) -> torch.Tensor:
        """(N, d): each token gets the embedding of its position in the native coordinate frame."""
        pe = self.model.pos_embed
        return get_2d_sincos_pos_embed(self.width, grid[1:], base_size=pe.base_size,
                                       interpolation_scale=pe.interpolation_scale, output_type="pt").float()

    def native_forward(self, x, timestep, cond: dict) -> torch.Tensor:
        return self.model(x, timestep=timestep, **cond, return_dict=False)[0]

    def run_tokens(self, tokens, timestep, cond: dict) -> torch.Tensor:
        raise NotImplementedError


class DiTFamily(Family):
    """Class-conditioned DiT (facebook/DiT-XL-2-256): adaLN-Zero blocks, final adaLN modulation."""
    name = "dit"

    @staticmethod
    def condition(class_labels=None, hidden=None, mask=None) -> dict:
        return {"class_labels": class_labels}

    def _proj_out(self):
        return self.model.proj_out_2

    def run_tokens(self, tokens, timestep, cond):
        m, labels = self.model, cond["class_labels"]
        for block in m.transformer_blocks:
            tokens = block(tokens, timestep=timestep, class_labels=labels)
        conditioning = m.transformer_blocks[0].norm1.emb(timestep, labels, hidden_dtype=tokens.dtype)
        shift, scale = m.proj_out_1(F.silu(conditioning)).chunk(2, dim=1)
        return m.norm_out(tokens) * (1 + scale[:, None]) + shift[:, None]


class PixArtFamily(Family):
    """Text-conditioned PixArt-alpha: adaLN-single, cross-attention to the caption tokens."""
    name = "pixart"

    @staticmethod
    def condition(class_labels=None, hidden=None, mask=None) -> dict:
        return {"encoder_hidden_states": hidden, "encoder_attention_mask": mask}

    def _proj_out(self):
        return self.model.proj_out

    def native_forward(self, x, timestep, cond):
        return self.model(x, timestep=timestep, added_cond_kwargs={"resolution": None, "aspect_ratio": None},
                          **cond, return_dict=False)[0]

    def run_tokens(self, tokens, timestep, cond):
        m, batch = self.model, tokens.shape[0]
        mask = cond.get("encoder_attention_mask")
        if mask is not None and mask.ndim == 2:  # keep/discard mask -> additive bias, as PixArt's forward does
            mask = ((1 - mask.to(tokens.dtype)) * -10000.0).unsqueeze(1)
        t, embedded_t = m.adaln_single(timestep, {"resolution": None, "aspect_ratio": None}, batch_size=batch,
                                       hidden_dtype=tokens.dtype)
        text = m.caption_projection(cond["encoder_hidden_states"]).view(batch, -1, tokens.shape[-1])
        for block in m.transformer_blocks:
            tokens = block(tokens, encoder_hidden_states=text, encoder_attention_mask=mask, timestep=t)
        shift, scale = (m.scale_shift_table[None] + embedded_t[:, None]).chunk(2, dim=1)
        return m.norm_out(tokens) * (1 + scale) + shift


class CogVideoXFamily(Family):
    """Text-to-video CogVideoX (THUDM/CogVideoX-2b layout): text and video tokens in one joint attention.

    Chosen over Latte because it has a real temporal patch size (CogVideoX 1.5 uses patch_size_t), which the paper's
    "temporal" weak mode needs; Latte folds frames into the batch and cannot merge frames into one token.
    """
    name = "cogvideox"
    modality = "video"

    def to_bcthw(self, x):
        return x.permute(0, 2, 1, 3, 4)

    def from_bcthw(self, x):
        return x.permute(0, 2, 1, 3, 4)

    @property
    def native_patch(self) -> Patch:
        c = self.model.config
        return (c.patch_size_t or 1, c.patch_size, c.patch_size)

    @property
    def out_channels(self) -> int:
        return self.model.config.out_channels

    def native_embedding(self):
        proj, (pt, ph, pw) = self.model.patch_embed.proj, self.native_patch
        if isinstance(proj, torch.nn.Conv2d):
            return proj.weight.unsqueeze(2), proj.bias
        return proj.weight.reshape(-1, self.in_channels, pt, ph, pw), proj.bias

    def native_output_projection(self):
        linear, patch = self.model.proj_out, self.native_patch
        # CogVideoX orders the output features (c, t, h, w)
        return (linear.weight.reshape(self.out_channels, *patch, -1),
                linear.bias.reshape(self.out_channels, *patch))

    def positional_embedding(self, grid, patch):
        pe, native = self.model.patch_embed, self.native_patch
        spatial = pe.spatial_interpolation_scale * native[1] / patch[1]
        temporal = pe.temporal_interpolation_scale * native[0] / patch[0]
        emb = get_3d_sincos_pos_embed(self.width, (grid[2], grid[1]), grid[0], spatial, temporal, output_type="pt")
        return emb.flatten(0, 1).float()

    def run_tokens(self, tokens, timestep, cond):
        m = self.model
        emb = m.time_embedding(m.time_proj(timestep).to(tokens.dtype))
        text = m.patch_embed.text_proj(cond["encoder_hidden_states"])  # text positions carry a zero embedding
        for block in m.transformer_blocks:
            tokens, text = block(hidden_states=tokens, encoder_hidden_states=text, temb=emb)
        return m.norm_out(m.norm_final(tokens), temb=emb)


FAMILIES = {DiTTransformer2DModel: DiTFamily, PixArtTransformer2DModel: PixArtFamily,
            CogVideoXTransformer3DModel: CogVideoXFamily}


def family_class(name: str) -> type[Family]:
    """'dit' | 'pixart' | 'cogvideox' -> its Family class."""
    return next(f for f in FAMILIES.values() if f.name == name)


def family_of(model) -> Family:
    for cls, family in FAMILIES.items():
        if isinstance(model, cls):
            return family(model)
    raise TypeError(f"no FlexiDiT family for {type(model).__name__}; supported: "
                    + ", ".join(c.__name__ for c in FAMILIES))
