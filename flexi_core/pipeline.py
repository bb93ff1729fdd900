"""The front door: FlexiDiT as a diffusers-style pipeline, and `flexify` / `distill` as functions.

    import torch, flexi_core as fx
    pipe = fx.FlexiDiTPipeline.from_pretrained("facebook/DiT-XL-2-256")      # a hub id, a local folder or "shapes"
    out = pipe(class_labels=[207], budget=0.5, num_inference_steps=25, generator=torch.Generator().manual_seed(0))
    out.images[0].save("dog.png"); print(out.flops, out.records[0])

Any checkpoint of the three diffusers families loads: its latent shape, token counts and conditioning come from its
own configs (`registry.spec_from_pretrained`), not from the named models of `registry.SPECS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import FlexiDiTError
from .flexible import FlexibleTransformer
from .generate import generate
from .loading import DEFAULT_LORA_RANK, VARIANTS, LoadedModel, T5Prompts, load_model
from .registry import ASSETS, SPECS, ModelSpec, default_weak_patches, spec_from_config, spec_from_pretrained
from .sampling import StepRecord
from .schedule import Schedule


def flexify(transformer, weak_patches: dict | None = None, variant: str = "lora",
            lora_rank: int = DEFAULT_LORA_RANK["public"]) -> FlexibleTransformer:
    """Makes a diffusers DiT / PixArt / CogVideoX transformer flexible: new weak patch sizes (PI-resize initialised;
    default twice the native patch), and for the LoRA variant one adapter per weak size. The native size stays the
    original model, bit for bit. Train the weak sizes with `FlexiDiTPipeline.distill`."""
    from .families import family_of
    native = family_of(transformer).native_patch
    weak = weak_patches or default_weak_patches(family_of(transformer).name, native)
    return FlexibleTransformer(transformer, weak, variant, lora_rank)


@dataclass
class FlexiDiTOutput:
    """What a call returns: one entry per sample, and with `compare=True` the static run of the same seeds."""
    images: list  # PIL images (output_type "pil"), or uint8 arrays (H, W, 3) / videos (T, H, W, 3) for "np"
    records: list[list[StepRecord]]  # per sample, per step: patch sizes, FLOPs, seconds
    schedule: Schedule
    flops: int  # all samples together, denoiser only
    seconds: float  # denoising wall-clock, all samples together
    static: "FlexiDiTOutput | None" = None
    agreement: list[dict] = field(default_factory=list)  # per sample with compare: PSNR and SSIM to static

    @property
    def flops_ratio(self) -> float | None:
        return self.flops / self.static.flops if self.static else None


def _pil(pixels: np.ndarray):
    from PIL import Image
    return Image.fromarray(pixels) if pixels.ndim == 3 else [Image.fromarray(f) for f in pixels]


class FlexiDiTPipeline:
    """Sampling under a compute budget, called like diffusers' pipelines."""

    def __init__(self, model: LoadedModel):
        self.model = model

    @classmethod
    def from_pretrained(cls, source: str, variant: str = "lora", flexify_weights: str | Path | None = None,
                        merged: bool = False, device: str = "cpu", allow_download: bool = False,
                        assets: Path = ASSETS, weak_patches: dict | None = None,
                        lora_rank: int | None = None) -> "FlexiDiTPipeline":
        """`source`: a named model of `registry.SPECS` (embedded or public), or any diffusers checkpoint of the three
        families (hub id or folder with transformer/, vae/, scheduler/ and, for text, text_encoder/ and tokenizer/).
        Without `flexify_weights` a checkpoint's weak sizes run their PI-resize initialisation until distilled."""
        flexify_file = Path(flexify_weights) if flexify_weights else None
        if source in SPECS:
            spec, weights_dir = SPECS[source], None
        else:
            spec = spec_from_pretrained(source, local_only=not allow_download,
                                        **({"weak_patches": weak_patches} if weak_patches else {}))
            weights_dir = source
        return cls(load_model(spec, variant, assets=assets, weights_dir=weights_dir, flexify_file=flexify_file,
                              merged=merged, allow_download=allow_download, device=device, lora_rank=lora_rank))

    @classmethod
    def from_pipe(cls, pipe, variant: str = "lora", weak_patches: dict | None = None,
                  lora_rank: int = DEFAULT_LORA_RANK["public"],
                  flexify_weights: str | Path | None = None) -> "FlexiDiTPipeline":
        """From a loaded diffusers pipeline (DiTPipeline, PixArtAlphaPipeline, CogVideoXPipeline): its own
        transformer (wrapped, not copied), autoencoder, scheduler config and text encoder."""
        from .families import family_of
        if variant not in VARIANTS:
            raise FlexiDiTError(f"variant must be one of {VARIANTS}, not {variant!r}")
        family = family_of(pipe.transformer).name
        spec = spec_from_config(type(pipe).__name__, family, pipe.transformer.config,
                                **({"weak_patches": weak_patches} if weak_patches else {}))
        if flexify_weights:
            flexible, trained = FlexibleTransformer.from_flexify_file(pipe.transformer, Path(flexify_weights)), True
        else:
            flexible, trained = flexify(pipe.transformer, spec.weak_patches, variant, lora_rank), False
        text = T5Prompts(pipe.tokenizer, pipe.text_encoder, spec.text_tokens) if spec.conditioning == "text" else None
        model = LoadedModel(spec, flexible.eval(), pipe.vae.eval(), text, dict(pipe.scheduler.config), trained,
                            pipe.vae.config.scaling_factor)
        return cls(model.to(str(pipe.device)))

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, class_labels: int | str | list | None = None, *,
                 budget: float | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, generator: torch.Generator | None = None,
                 seed: int | None = None, sampler: str | None = None, weak_mode: str | None = None,
                 schedule: Schedule | None = None, compare: bool = False, weak_guidance: bool | None = None,
                 output_type: str = "pil", progress=None) -> FlexiDiTOutput:
        """Samples each prompt / class label at `budget` (a fraction of the static FLOPs, in (0, 1]; default the
        model's) or an explicit `schedule`. Sample i's noise comes from seed `seed + i`, or from a seed drawn from
        `generator` (so the same generator state gives the same pictures). `compare=True` also samples the static
        model from the same seeds. `weak_guidance` False runs the weak steps without guidance (True: with; default:
        the model's rule). `progress(fraction, text)` is called after every denoising step."""
        if output_type not in ("pil", "np"):
            raise FlexiDiTError(f"output_type must be 'pil' or 'np', not {output_type!r}")
        conditions = class_labels if self.spec.conditioning == "class" else prompt
        if conditions is None:
            raise FlexiDiTError(f"{self.spec.name} is conditioned on " +
                                ("class_labels" if self.spec.conditioning == "class" else "a prompt"))
        conditions = list(conditions) if isinstance(conditions, (list, tuple)) else [conditions]
        if seed is None:
            seed = 0 if generator is None else int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        runs = []
        for i, c in enumerate(conditions):
            def step_progress(fraction, text, i=i):
                if progress is not None:
                    progress((i + fraction) / len(conditions), f"sample {i + 1}/{len(conditions)}, {text}")
            runs.append(generate(self.model, class_label=c if self.spec.conditioning == "class" else None,
                                 prompt=c if self.spec.conditioning == "text" else None, budget=budget,
                                 steps=num_inference_steps, seed=seed + i, guidance=guidance_scale, sampler=sampler,
                                 weak_mode=weak_mode, schedule=schedule, compare=compare,
                                 weak_guidance=weak_guidance, progress=step_progress))
        convert = _pil if output_type == "pil" else (lambda p: p)

        def output(samples) -> FlexiDiTOutput:
            return FlexiDiTOutput([convert(s.pixels) for s in samples], [s.records for s in samples],
                                  samples[0].schedule, sum(s.flops for s in samples), sum(s.seconds for s in samples))

        out = output([r.flexible for r in runs])
        if compare:
            out.static, out.agreement = output([r.static for r in runs]), [r.agreement for r in runs]
        return out

    def distill(self, steps: int, batch_size: int = 32, run_dir: str | Path = "runs/distill", lr: float = 5e-4,
                prompts_file: str | None = None, min_timestep: int = 0) -> dict:
        """The paper's distillation, data-free: the weak sizes learn to match the frozen native model on states of
        its own sampling trajectories (`distill.distill`; `min_timestep`: only the noisy states, t >= it, that a weak
        model serves). Resumes from `run_dir`; save with `save_flexify`. Text models need `prompts_file` (one prompt
        per line), except the embedded ones (procedural captions)."""
        from .distill import condition_sampler, distill
        captions = None
        if self.spec.embedded and self.spec.conditioning == "text":
            from .shapes.train import procedural_captions
            captions = procedural_captions(self.spec)
        draw, null = condition_sampler(self.model, prompts_file, captions)
        info = distill(self.model.flexible, self.spec, steps, batch_size, Path(run_dir), draw, null,
                       self.model.scheduler_config, lr=lr, min_timestep=min_timestep)
        self.model.flexible.eval()
        self.model.flexify_trained = True
        return info

    def save_flexify(self, path: str | Path):
        """Only what flexify adds (weak layers, LoRA adapters; the whole model for the shared variant), fp16."""
        self.model.flexible.save_flexify(Path(path), model=self.spec.name)
