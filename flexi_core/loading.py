"""Loading weights: embedded models from assets/ and public checkpoints with diffusers `from_pretrained`.

Everything goes through safetensors. A missing file becomes a FileNotFoundError whose message says what is missing
and how to get it, so the CLI and the app can show it as one line.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import FlexiDiTError
from .flexible import NATIVE, FlexibleTransformer
from .flops import forward_flops
from .registry import ASSETS, ModelSpec, get_spec, transformer_class

VARIANTS = ("lora", "shared")
DEFAULT_LORA_RANK = {"embedded": 8, "public": 32}  # new adapters' rank, by where the model comes from
# diffusers' from_pretrained builds its modules under accelerate's init_empty_weights, which patches
# nn.Module.register_parameter for the whole process: a module built meanwhile in another thread (the app's judge,
# read beside a model load) gets meta parameters that its weights cannot fill. Every build takes this lock.
BUILD_LOCK = threading.RLock()


def _require(path: Path, what: str, how: str):
    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {path}; {how}")


def load_embedded_vae(assets: Path = ASSETS, name: str = "vae"):
    from diffusers import AutoencoderKL
    folder = assets / name
    _require(folder / "diffusion_pytorch_model.safetensors", f"the embedded autoencoder {name}",
             f"restore assets/ from git or run `python -m flexi_core train --model {name} --export`")
    return AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32, use_safetensors=True).eval()


@dataclass
class LoadedModel:
    """Everything sampling needs: the flexible denoiser, the autoencoder, the text encoder and their settings."""
    spec: ModelSpec
    flexible: FlexibleTransformer
    vae: object
    text_encoder: object | None  # callable: list[str] -> (hidden, mask)
    scheduler_config: dict
    flexify_trained: bool  # False: weak layers are the untrained PI-resize initialisation
    latent_scale: float

    device: str = "cpu"

    def to(self, device: str) -> "LoadedModel":
        for module in (self.flexible, self.vae, getattr(self.text_encoder, "model", None)):
            if module is not None:
                module.to(device)
        for family in self.flexible._merged.values():
            family.model.to(device)
        self.device = device
        return self

    @property
    def device_name(self) -> str:
        if self.device.startswith("cuda"):
            return torch.cuda.get_device_name(torch.device(self.device))
        import platform
        threads = torch.get_num_threads()
        return f"CPU ({platform.machine()}, {threads} thread{'s' if threads > 1 else ''})"

    @property
    def variant(self) -> str:
        return self.flexible.variant

    @property
    def modes(self) -> list[str]:
        return list(self.flexible.patches)

    def flops_of(self, batch: int = 1) -> dict[str, int]:
        """FLOPs of one forward per mode, for this model's actual config (unmerged LoRA adds its own)."""
        base = self.flexible.base
        config = dict(base.config)
        unmerged_rank = self.flexible.lora_rank if self.variant == "lora" and not self.flexible.merged else 0
        return {mode: forward_flops(self.spec.family, config, self.spec.latent_shape, patch, batch,
                                    self.spec.text_tokens, 0 if mode == NATIVE else unmerged_rank)
                for mode, patch in self.flexible.patches.items()}


def flexible_from_file(base, spec: ModelSpec, variant: str, flexify_file: Path | None,
                       lora_rank: int) -> tuple[FlexibleTransformer, bool]:
    """(flexible model, trained): `base` with the weights of `flexify_file`, or without a file new weak layers
    (PI-resize init) and, for LoRA, new adapters of `lora_rank`."""
    if flexify_file is not None:
        _require(flexify_file, "flexify weights", "give the path of a file that `flexify` wrote")
        model = FlexibleTransformer.from_flexify_file(base, flexify_file)
        if model.variant != variant:
            raise FlexiDiTError(f"{flexify_file} holds the {model.variant} variant, not {variant}")
        return model, True
    return FlexibleTransformer(base, spec.weak_patches, variant, lora_rank), False


def load_model(name: str | ModelSpec, variant: str = "lora", assets: Path = ASSETS, weights_dir: str | None = None,
               flexify_file: Path | None = None, merged: bool = False, allow_download: bool = False,
               device: str = "cpu", fresh: bool = False, lora_rank: int | None = None) -> LoadedModel:
    """`fresh` skips the flexify weights: the original transformer with new weak layers (PI-resize init) and, for
    the LoRA variant, new adapters of `lora_rank` (default: DEFAULT_LORA_RANK): what `flexify --restart` trains."""
    spec = name if isinstance(name, ModelSpec) else get_spec(name)  # a spec: any checkpoint (pipeline.py)
    if variant not in VARIANTS:
        raise FlexiDiTError(f"variant must be one of {VARIANTS}, not {variant!r}")
    with BUILD_LOCK:
        if spec.embedded:
            model = _load_embedded(spec, variant, assets, flexify_file, fresh,
                                   lora_rank or DEFAULT_LORA_RANK["embedded"])
        else:
            model = _load_public(spec, variant, weights_dir, flexify_file, allow_download, fresh,
                                 lora_rank or DEFAULT_LORA_RANK["public"])
    if merged:
        model.flexible.merge_adapters()
    model.flexible.eval()
    return model.to(device)


def _check_complete(info: dict):
    """diffusers only warns when the weights file lacks tensors of the config's model (and leaves them random)."""
    missing = sorted(info.get("missing_keys") or [])
    if missing or info.get("mismatched_keys"):
        raise FlexiDiTError(f"the weights file lacks {len(missing)} tensors of the model's config (e.g. "
                            f"{', '.join(missing[:2])}) or has tensors of other shapes")


def load_embedded_transformer(spec: ModelSpec, assets: Path = ASSETS):
    """The embedded model's diffusers transformer from `assets`; missing, damaged or incomplete weights are refused
    with one line."""
    folder = assets / spec.name / "transformer"
    _require(folder / "diffusion_pytorch_model.safetensors", f"weights of {spec.name}",
             f"restore assets/ from git or run `python -m flexi_core train --model {spec.name} --export`")
    try:
        base, info = transformer_class(spec).from_pretrained(folder, torch_dtype=torch.float32,
                                                             use_safetensors=True, output_loading_info=True)
        _check_complete(info)
    except (OSError, ValueError, RuntimeError) as e:
        raise FlexiDiTError(f"weights of {spec.name} in {folder} are damaged or do not fit: "
                            f"{str(e).splitlines()[0][:200]}") from e
    return base


def _load_embedded(spec: ModelSpec, variant: str, assets: Path, flexify_file: Path | None, fresh: bool,
                   lora_rank: int) -> LoadedModel:
    folder = assets / spec.name
    base = load_embedded_transformer(spec, assets)
    shipped = folder / f"flexify-{variant}.safetensors"  # optional: without it the weak sizes run PI-resize
    file = None if fresh else flexify_file or (shipped if shipped.exists() else None)
    flexible, trained = flexible_from_file(base, spec, variant, file, lora_rank)
    vae = load_embedded_vae(assets, spec.vae)
    text = None
    if spec.conditioning == "text":
        from .shapes.text import load_minilm
        text = load_minilm()
    return LoadedModel(spec, flexible, vae, text, spec.scheduler, trained, vae.config.scaling_factor)


class T5Prompts:
    """T5 token embeddings of a prompt, as PixArt and CogVideoX pipelines compute them."""

    def __init__(self, tokenizer, model, max_tokens: int):
        self.tokenizer, self.model, self.max_tokens = tokenizer, model.eval(), max_tokens

    @classmethod
    def from_source(cls, source: str, max_tokens: int, local_only: bool) -> "T5Prompts":
        from transformers import AutoTokenizer, T5EncoderModel
        tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=local_only)
        model = T5EncoderModel.from_pretrained(source, subfolder="text_encoder", local_files_only=local_only,
                                               use_safetensors=True)
        return cls(tokenizer, model, max_tokens)

    @torch.no_grad()
    def __call__(self, prompts):
        t = self.tokenizer(prompts, padding="max_length", max_length=self.max_tokens, truncation=True,
                           return_tensors="pt")
        return self.model(t.input_ids, attention_mask=t.attention_mask)[0], t.attention_mask


def _load_public(spec: ModelSpec, variant: str, weights_dir: str | None, flexify_file: Path | None,
                 allow_download: bool, fresh: bool, lora_rank: int) -> LoadedModel:
    from diffusers import AutoencoderKL, AutoencoderKLCogVideoX
    source = weights_dir or spec.repo
    local_only = not allow_download
    try:
        base = transformer_class(spec).from_pretrained(source, subfolder="transformer", local_files_only=local_only,
                                                       torch_dtype=torch.float32, use_safetensors=True)
        vae_cls = AutoencoderKLCogVideoX if spec.family == "cogvideox" else AutoencoderKL
        vae = vae_cls.from_pretrained(source, subfolder="vae", local_files_only=local_only,
                                      use_safetensors=True).eval()  # never a pickled .bin
        text = T5Prompts.from_source(source, spec.text_tokens, local_only) if spec.conditioning == "text" else None
        from diffusers import DDIMScheduler
        scheduler_config = dict(DDIMScheduler.load_config(source, subfolder="scheduler",
                                                          local_files_only=local_only))
    except (OSError, ValueError) as e:
        parts = "transformer/, vae/" + (", text_encoder/, tokenizer/" if spec.conditioning == "text" else "")
        raise FileNotFoundError(
            f"weights of {spec.name} are not available offline ({parts} of {spec.repo}). Put them in the Hugging "
            f"Face cache (`huggingface-cli download {spec.repo}` on a machine with internet) or pass a local "
            f"folder with --weights-dir; --allow-download fetches them when a network is there. "
            f"[{type(e).__name__}]") from None
    file = None if fresh or not flexify_file else Path(flexify_file)
    flexible, trained = flexible_from_file(base, spec, variant, file, lora_rank)
    return LoadedModel(spec, flexible, vae, text, scheduler_config, trained, vae.config.scaling_factor)
