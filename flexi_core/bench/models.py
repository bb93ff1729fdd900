"""What the wall-clock and memory sections measure: which models in which configurations, built the way loading
builds them, with conditioning inputs of the right shapes."""
from __future__ import annotations

import copy
import sys

import torch

from .. import registry
from ..families import family_class
from ..flexible import FlexibleTransformer
from ..loading import DEFAULT_LORA_RANK, LoadedModel, flexible_from_file, load_embedded_transformer
from ..sampling import Condition

EMBEDDED = ("shapes", "shapes-text", "shapes-video")
BIG = ("dit-xl-2-256", "pixart-alpha-256")
# which flexible configurations each architecture is timed in; sweep = full samples at every budget
BIG_CONFIGS = {"dit-xl-2-256": (("shared", True),),  # the paper's ImageNet model is the shared variant
               "pixart-alpha-256": (("lora", True), ("lora-merged", False))}
EMBEDDED_CONFIGS = (("lora", True), ("lora-merged", True), ("shared", True))
PUBLIC_SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                        clip_sample=False, prediction_type="epsilon")
QUICK_LAYERS = 2  # quick mode times DiT-XL/2's width and token counts with 2 of its 28 layers


def log(*args):
    """Progress goes to stderr: stdout carries the markdown (and a memory probe's one JSON line)."""
    print(*args, file=sys.stderr, flush=True)


def has_weights(name: str) -> bool:
    return (registry.ASSETS / name / "transformer" / "diffusion_pytorch_model.safetensors").exists()


def build_model(name: str, config: str, layers: int | None = None, plain_copy: bool = False):
    """(LoadedModel without VAE / text encoder, plain diffusers copy or None) for config static | shared | lora |
    lora-merged. Embedded models load assets/ (their flexify file when there is one); public architectures get
    random weights (timing and memory do not depend on the values). Static is the flexible wrapper without weak
    patch sizes: its only forward is the plain diffusers one, and it holds no parameters besides the base's."""
    spec = registry.get_spec(name)
    if spec.embedded:
        base = load_embedded_transformer(spec, registry.ASSETS)
    else:
        base = registry.build_transformer(spec, **({"num_layers": layers} if layers else {}))
    base.eval()
    plain = copy.deepcopy(base).requires_grad_(False) if plain_copy else None
    trained = False
    if config == "static":
        flexible = FlexibleTransformer(base, {}, "shared")
    else:
        variant = "lora" if config.startswith("lora") else "shared"
        shipped = registry.ASSETS / name / f"flexify-{variant}.safetensors"
        file = shipped if spec.embedded and shipped.exists() else None
        rank = DEFAULT_LORA_RANK["embedded" if spec.embedded else "public"]
        flexible, trained = flexible_from_file(base, spec, variant, file, rank)
        if config == "lora-merged":
            flexible.merge_adapters()
    flexible.eval().requires_grad_(False)
    model = LoadedModel(spec, flexible, None, None, spec.scheduler or PUBLIC_SCHEDULER, trained, spec.vae_scale)
    return model, plain


def text_width(config) -> int:
    """Width of the text-encoder states the transformer takes (PixArt: caption_channels, CogVideoX: text_embed_dim)."""
    return config["caption_channels"] if "caption_channels" in config else config["text_embed_dim"]


def timing_condition(model: LoadedModel, seed: int = 0) -> Condition:
    """Conditioning of the right shapes: a class label, or random text-encoder states (values do not matter for
    timing)."""
    spec, config = model.spec, model.flexible.base.config
    family = family_class(spec.family)
    if spec.conditioning == "class":
        return Condition(family.condition(class_labels=torch.tensor([1])),
                         family.condition(class_labels=torch.tensor([config.num_embeds_ada_norm])), "class 1")
    states = torch.randn(2, spec.text_tokens, text_width(config), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(1, spec.text_tokens, dtype=torch.long)
    return Condition(family.condition(hidden=states[:1], mask=mask), family.condition(hidden=states[1:], mask=mask),
                     "random text")


def param_bytes(flexible: FlexibleTransformer) -> int:
    """Bytes of every distinct parameter, the merged copies' included (they live outside the module tree)."""
    seen, total = set(), 0
    modules = [flexible] + [f.model for f in flexible._merged.values()]
    for module in modules:
        for p in module.parameters():
            if p.data_ptr() not in seen:
                seen.add(p.data_ptr())
                total += p.numel() * p.element_size()
    return total
