"""FlexiDiT: one pre-trained diffusion transformer, several patch sizes.

The native patch size runs the untouched diffusers model, so its function is exactly the original one. Each weak
(larger) patch size gets its own patch embedding and output projection, initialised from the native ones by the
pseudo-inverse of the bilinear resize (FlexiViT's PI-resize), plus a learned patch-size embedding; the transformer
blocks in between are shared. The LoRA variant freezes the base and adds one peft LoRA adapter per weak patch size on
the self-attention and feed-forward linears; the shared variant fine-tunes everything instead.
"""
from __future__ import annotations

import copy
import json
import math
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import FlexiDiTError
from .families import LORA_TARGETS, Family, Patch, family_of

NATIVE = "native"


# --- patches ------------------------------------------------------------------------------------------------------

def patchify(x: torch.Tensor, patch: Patch) -> tuple[torch.Tensor, Patch]:
    """(B, C, T, H, W) -> tokens (B, N, C*t*h*w) ordered (t, h, w), features ordered (c, t, h, w)."""
    b, c, t, h, w = x.shape
    pt, ph, pw = patch
    grid = (t // pt, h // ph, w // pw)
    x = x.reshape(b, c, grid[0], pt, grid[1], ph, grid[2], pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b, math.prod(grid), c * pt * ph * pw), grid


def unpatchify(tokens: torch.Tensor, grid: Patch, patch: Patch, channels: int) -> torch.Tensor:
    """Inverse of `patchify`."""
    b = tokens.shape[0]
    x = tokens.reshape(b, *grid, channels, *patch).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(b, channels, *(g * p for g, p in zip(grid, patch)))


def resize_matrix(src: Patch, dst: Patch) -> torch.Tensor:
    """B with B @ vec(x) = vec(resize(x)) for a (t, h, w) patch x; built column by column from resized basis
    vectors, as big_vision's resample_patchemb does. Trilinear, which is bilinear when t stays 1."""
    n = math.prod(src)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, *src)
    return F.interpolate(basis, size=dst, mode="trilinear", align_corners=False).reshape(n, -1).T


def pi_resize_embedding(weight: torch.Tensor, dst: Patch) -> torch.Tensor:
    """(d, C, *src) -> (d, C, *dst) with <x, w> = <Bx, w_new>: pinv(B^T) applied per channel."""
    d, c, *src = weight.shape
    b = resize_matrix(tuple(src), dst)
    new = weight.double().reshape(d, c, -1) @ torch.linalg.pinv(b.T).T
    return new.reshape(d, c, *dst).to(weight.dtype)


def resize_output_projection(weight: torch.Tensor, bias: torch.Tensor, dst: Patch):
    """'Flipped' init: the weak projection outputs B (native output), i.e. the native patch resized to `dst`."""
    c, *src, d = weight.shape
    b = resize_matrix(tuple(src), dst).to(weight.dtype)
    new_w = (b @ weight.reshape(c, -1, d))  # (C, n_dst, d)
    new_b = (b @ bias.reshape(c, -1, 1)).squeeze(-1)
    return new_w.reshape(c * b.shape[0], d), new_b.reshape(-1)


# --- LoRA switching -----------------------------------------------------------------------------------------------

def _lora_layers(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def merged_copy(model: nn.Module, adapter: str) -> nn.Module:
    """A copy of `model` with `adapter` merged into its weights and every LoRA wrapper removed."""
    copy_ = copy.deepcopy(model)
    for name, module in list(copy_.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge(adapter_names=[adapter])
            parent, _, child = name.rpartition(".")
            setattr(copy_.get_submodule(parent) if parent else copy_, child, module.get_base_layer())
    return copy_.requires_grad_(False)


# --- the flexible model -------------------------------------------------------------------------------------------

class FlexibleTransformer(nn.Module):
    """A diffusers DiT / PixArt / CogVideoX transformer that also runs at weak patch sizes.

    `forward(x, timestep, cond, mode)` takes and returns the base model's own tensor layout; `mode` is "native" or
    a weak mode name ("weak" for images, "temporal"/"spatial" for video). Calls are serialised by a lock, so the
    active LoRA adapter is never shared between concurrent requests.
    """

    def __init__(self, base: nn.Module, weak_patches: dict[str, Patch], variant: str = "lora", lora_rank: int = 32):
        super().__init__()
        if variant not in ("lora", "shared"):
            raise FlexiDiTError(f"variant must be 'lora' or 'shared', not {variant!r}")
        self.base, self.variant, self.lora_rank = base, variant, lora_rank
        self.family: Family = family_of(base)
        self.patches = {NATIVE: self.family.native_patch, **{k: tuple(v) for k, v in weak_patches.items()}}
        d = self.family.width
        self.embeds, self.projs = nn.ModuleDict(), nn.ModuleDict()
        self.patch_size_embeds = nn.ParameterDict()
        native_w, native_b = self.family.native_embedding()
        out_w, out_b = self.family.native_output_projection()
        for mode, patch in self.weak_modes.items():
            emb = nn.Linear(self.family.in_channels * math.prod(patch), d)
            proj = nn.Linear(d, self.family.out_channels * math.prod(patch))
            with torch.no_grad():
                emb.weight.copy_(pi_resize_embedding(native_w.float(), patch).reshape(d, -1))
                emb.bias.copy_(native_b)
                proj.weight.copy_(resize_output_projection(out_w.float(), out_b.float(), patch)[0])
                proj.bias.copy_(resize_output_projection(out_w.float(), out_b.float(), patch)[1])
            self.embeds[mode], self.projs[mode] = emb, proj
            self.patch_size_embeds[mode] = nn.Parameter(torch.zeros(d))
        if variant == "lora":
            base.requires_grad_(False)
            for mode in self.weak_modes:
                config = LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=LORA_TARGETS)
                inject_adapter_in_model(config, base, adapter_name=mode)
        self._lora = _lora_layers(base)  # found once; walking the module tree every step costs real time
        self._active: str | None = None  # the adapter state the LoRA layers are in now
        self._merged: dict[str, Family] = {}
        self._pos_cache: dict = {}
        self._lock = threading.RLock()
        self._forwards = 0  # forwards running now, inside the lock

    @property
    def weak_modes(self) -> dict[str, Patch]:
        return {k: v for k, v in self.patches.items() if k != NATIVE}

    @property
    def native_patch(self) -> Patch:
        return self.patches[NATIVE]

    @torch.no_grad()
    def native_from_weak(self, mode: str):
        """The weak layers' initialisation run backwards: the native patch embedding and output projection become
        `mode`'s layers PI-resized to the native patch (its patch-size embedding folded into the bias). So a model
        first trained through its weak patch, at a fraction of the cost, goes on at the native one (progressive
        training, `train --weak-first`)."""
        patch, native, d = self.patches[mode], self.native_patch, self.family.width
        c_in, c_out = self.family.in_channels, self.family.out_channels
        w, b = self.family.native_embedding()
        emb, proj = self.embeds[mode], self.projs[mode]
        w.copy_(pi_resize_embedding(emb.weight.reshape(d, c_in, *patch).double(), native).to(w.dtype))
        b.copy_(emb.bias + self.patch_size_embeds[mode])
        ow, ob = self.family.native_output_projection()
        new_w, new_b = resize_output_projection(proj.weight.reshape(c_out, *patch, d).double(),
                                                proj.bias.reshape(c_out, *patch).double(), native)
        ow.copy_(new_w.reshape(ow.shape).to(ow.dtype))
        ob.copy_(new_b.reshape(ob.shape).to(ob.dtype))

    # adapters ----------------------------------------------------------------------------------------------------
    def _use_adapter(self, mode: str):
        """Puts the LoRA layers in `mode`'s state (no adapter for native); called under the lock, so a forward
        always runs with its own adapter. Switches only when the mode changes."""
        if self._active == mode:
            return
        for layer in self._lora:
            if mode == NATIVE:
                layer.enable_adapters(False)
            else:
                layer.enable_adapters(True)
                layer.set_adapter(mode)
        self._active = mode

    def merge_adapters(self):
        """Keeps a merged copy of the base per weak mode: no LoRA FLOPs at inference, one model of memory each."""
        if self.variant != "lora":
            return
        with self._lock:
            self._merged = {mode: family_of(merged_copy(self.base, mode)) for mode in self.weak_modes}

    def unmerge_adapters(self):
        with self._lock:
            self._merged = {}

    @property
    def merged(self) -> bool:
        return bool(self._merged)

    @property
    def busy(self) -> bool:
        """Whether a forward is running now, holding the model's lock: what a server (and its tests) can watch to
        see that a stopped or failed request left the model free."""
        return self._forwards > 0

    # forward -----------------------------------------------------------------------------------------------------
    def positional_embedding(self, grid: Patch, patch: Patch) -> torch.Tensor:
        key = (grid, patch)
        if key not in self._pos_cache:
            self._pos_cache[key] = self.family.positional_embedding(grid, patch)
        return self._pos_cache[key]

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, cond: dict, mode: str = NATIVE) -> torch.Tensor:
        if mode not in self.patches:
            raise ValueError(f"unknown patch mode {mode!r}; this model has {list(self.patches)}")
        with self._lock:
            self._forwards += 1
            try:
                if mode in self._merged:
                    return self._weak_forward(self._merged[mode], x, timestep, cond, mode)
                self._use_adapter(mode)
                if mode == NATIVE:
                    return self.family.native_forward(x, timestep, cond)
                return self._weak_forward(self.family, x, timestep, cond, mode)
            finally:
                self._forwards -= 1

    def _weak_forward(self, family: Family, x, timestep, cond, mode):
        patch = self.patches[mode]
        x5 = family.to_bcthw(x)
        frames = x5.shape[2]
        pad = (-frames) % patch[0]  # e.g. 13 latent frames at t=2: repeat the first frame, drop it afterwards
        if pad:
            x5 = torch.cat([x5[:, :, :1].expand(-1, -1, pad, -1, -1), x5], dim=2)
        tokens, grid = patchify(x5, patch)
        pos = self.positional_embedding(grid, patch).to(tokens)
        hidden = self.embeds[mode](tokens) + pos + self.patch_size_embeds[mode]
        hidden = family.run_tokens(hidden, timestep, cond)
        out = unpatchify(self.projs[mode](hidden), grid, patch, family.out_channels)
        return family.from_bcthw(out[:, :, pad:])

    # saving ------------------------------------------------------------------------------------------------------
    def flexify_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what flexify adds (and, for the shared variant, the fine-tuned base)."""
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith("base.") or "lora_" in k or self.variant == "shared"}

    def save_flexify(self, path: Path, dtype=torch.float16, model: str = ""):
        """Writes `flexify_state_dict` with what loading needs (variant, rank, weak patches) and the model it
        belongs to: its name (`model`), family and transformer config, so that another model refuses it."""
        meta = {"variant": self.variant, "lora_rank": str(self.lora_rank),
                "weak_patches": ";".join(f"{k}={'x'.join(map(str, v))}" for k, v in self.weak_modes.items()),
                "model": model, **base_architecture(self.base)}
        save_file({k: v.detach().to(dtype).contiguous() for k, v in self.flexify_state_dict().items()}, path, meta)

    @classmethod
    def from_flexify_file(cls, base: nn.Module, path: Path) -> "FlexibleTransformer":
        """Refuses, with one line, a file that is damaged, not safetensors, or written for another model."""
        try:
            with safe_open(path, "pt") as f:
                meta = f.metadata() or {}
                _check_architecture(path, meta, base)
                state = {k: f.get_tensor(k) for k in f.keys()}
        except SafetensorError as e:  # empty, truncated, a pickle: its header or data do not parse
            raise FlexiDiTError(f"{path} is damaged or not a safetensors file ({e})") from None
        try:
            weak = {k: tuple(int(v) for v in p.split("x"))
                    for k, p in (item.split("=") for item in meta["weak_patches"].split(";"))}
            model = cls(base, weak, meta["variant"], int(meta["lora_rank"]))
        except (KeyError, ValueError) as e:
            raise FlexiDiTError(f"{path} is not a flexify weights file (metadata {meta})") from e
        expected = model.flexify_state_dict()
        missing = sorted(set(expected) - set(state))
        wrong = [k for k in state if k in expected and state[k].shape != expected[k].shape]
        if missing or wrong or set(state) - set(expected):
            raise FlexiDiTError(f"{path} does not fit this model: missing {missing[:3]}, wrong shape {wrong[:3]}")
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        return model


def base_architecture(base: nn.Module) -> dict[str, str]:
    """What a flexify file records of the transformer it was trained on: the family and the diffusers config."""
    config = {k: v for k, v in dict(base.config).items() if not k.startswith("_")}
    return {"family": family_of(base).name, "config": json.dumps(config, sort_keys=True)}


def _check_architecture(path: Path, meta: dict, base: nn.Module):
    """A file trained on another architecture is refused, even where its tensors happen to fit (shapes-text's LoRA
    file has the same tensor names and shapes as shapes'). Config keys the file does not name are not compared, so
    a diffusers release that adds a config field keeps old files loadable."""
    if "family" not in meta or "config" not in meta:
        raise FlexiDiTError(f"{path} does not say which model it belongs to (written before flexify files recorded "
                            f"it); run `flexify` again for this model")
    ours = base_architecture(base)
    theirs_config, ours_config = json.loads(meta["config"]), json.loads(ours["config"])
    differ = [k for k in sorted(theirs_config) if ours_config.get(k) != theirs_config[k]]
    if meta["family"] != ours["family"] or differ:
        what = (f"a {meta['family']} model, not {ours['family']}" if meta["family"] != ours["family"] else
                f"{differ[0]} {theirs_config[differ[0]]}, not {ours_config.get(differ[0])}")
        raise FlexiDiTError(f"{path} does not fit this model: it belongs to {meta.get('model') or 'another model'} "
                            f"({what})")
