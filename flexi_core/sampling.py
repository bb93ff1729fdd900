"""Sampling with a flexible denoiser: a diffusers scheduler loop in which every step picks its patch size.

Each step records its modes, patch sizes, FLOPs and seconds, so that callers (CLI, app, benchmarks) can show the
per-step timeline and compare a flexible run with a static one from the same seed.
"""
from __future__ import annotations

import math
import time
import unicodedata
from dataclasses import dataclass, field

import numpy as np
import torch

from .flexible import NATIVE
from .loading import LoadedModel
from .schedule import Schedule, schedule_for_budget, total_flops

SAMPLERS = ("ddim", "ddpm", "dpm")
MAX_STEPS = 1000
MAX_PROMPT_CHARS = 500


@dataclass
class Condition:
    """Encoded conditioning for one sample: the conditional and the null (unconditional) inputs."""
    cond: dict
    uncond: dict
    text: str


@dataclass
class StepRecord:
    step: int
    timestep: int
    cond_mode: str
    uncond_mode: str | None
    cond_patch: tuple
    uncond_patch: tuple | None
    flops: int
    seconds: float


@dataclass
class Sample:
    pixels: np.ndarray  # uint8 (H, W, 3), or (T, H, W, 3) for video
    schedule: Schedule
    records: list[StepRecord] = field(default_factory=list)
    decode_seconds: float = 0.0

    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.records)

    @property
    def seconds(self) -> float:
        """Denoising wall-clock (the part FLOPs count); decoding is in decode_seconds."""
        return sum(r.seconds for r in self.records)


def clean_prompt(prompt: str) -> str:
    """Drops control characters and surrounding space; rejects empty and over-long prompts with a clear message."""
    if not isinstance(prompt, str):
        raise ValueError("the prompt must be text")
    text = "".join(ch for ch in prompt if unicodedata.category(ch)[0] != "C" or ch == " ").strip()
    if not text:
        raise ValueError("the prompt is empty; describe what to draw, e.g. 'a red circle on a black background'")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
    return text


def encode_condition(model: LoadedModel, class_label=None, prompt=None) -> Condition:
    """Conditioning for one class label / prompt, or a batch when given a list."""
    spec = model.spec
    if isinstance(class_label, (list, tuple)) or isinstance(prompt, (list, tuple)):
        parts = [encode_condition(model, c, None) for c in class_label] if spec.conditioning == "class" and \
            class_label is not None else [encode_condition(model, None, p) for p in (prompt or [])]
        if not parts:
            raise ValueError("no conditions given")
        cat = lambda key: {k: torch.cat([getattr(p, key)[k] for p in parts]) for k in getattr(parts[0], key)}  # noqa
        return Condition(cat("cond"), cat("uncond"), "; ".join(p.text for p in parts))
    if spec.conditioning == "class":
        if class_label is None or (isinstance(class_label, str) and not class_label.strip()):
            raise ValueError(f"{spec.name} needs a class label" +
                             (f": one of {', '.join(spec.class_names)}" if spec.class_names else " (0-999)"))
        label = _class_index(spec, class_label)
        null = model.flexible.base.config.num_embeds_ada_norm
        return Condition({"class_labels": torch.tensor([label])}, {"class_labels": torch.tensor([null])},
                         spec.class_names[label] if spec.class_names else str(label))
    if prompt is None:
        raise ValueError(f"{spec.name} needs a prompt")
    text = clean_prompt(prompt)
    hidden, mask = model.text_encoder([text, ""])
    if spec.family == "pixart":
        return Condition({"encoder_hidden_states": hidden[:1], "encoder_attention_mask": mask[:1]},
                         {"encoder_hidden_states": hidden[1:], "encoder_attention_mask": mask[1:]}, text)
    return Condition({"encoder_hidden_states": hidden[:1]}, {"encoder_hidden_states": hidden[1:]}, text)


def _class_index(spec, class_label) -> int:
    names = spec.class_names
    if isinstance(class_label, str) and not class_label.strip().lstrip("-").isdigit():
        key = " ".join(class_label.lower().split())
        if key in names:
            return names.index(key)
        raise ValueError(f"unknown class {class_label!r}; choose one of: {', '.join(names) or '0-999'}")
    try:
        label = int(class_label)
    except (TypeError, ValueError):
        raise ValueError(f"class label {class_label!r} is neither a class name nor a number") from None
    count = len(names) or spec.config["num_embeds_ada_norm"]
    if not 0 <= label < count:
        raise ValueError(f"class {label} is out of range; {spec.name} has classes 0-{count - 1}")
    return label


def make_scheduler(model: LoadedModel, sampler: str = "ddim"):
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
    classes = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "dpm": DPMSolverMultistepScheduler}
    if sampler not in classes:
        raise ValueError(f"sampler must be one of {SAMPLERS}, not {sampler!r}")
    return classes[sampler].from_config(model.scheduler_config)


def validate(steps: int, guidance: float, seed: int):
    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be a whole number from 1 to {MAX_STEPS}, got {steps}")
    if not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or not 0 <= guidance <= 30:
        raise ValueError(f"guidance must be a number from 0 to 30, got {guidance}")
    if not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be a whole number from 0 to 2**63-1, got {seed}")


def budget_schedule(model: LoadedModel, budget: float, steps: int, guidance: float,
                    weak_mode: str | None = None, lead: int | None = None) -> Schedule:
    """The budget's schedule; `lead` leading native steps, by default the model's measured number."""
    if isinstance(budget, float) and math.isnan(budget):
        raise ValueError("budget is not a number")
    mode = weak_mode or next(iter(model.flexible.weak_modes))
    if mode not in model.flexible.weak_modes:
        raise ValueError(f"weak mode must be one of {list(model.flexible.weak_modes)}, not {mode!r}")
    if lead is None:
        lead = model.spec.lead_steps(mode, steps)
    if not isinstance(lead, int) or not 0 <= lead <= steps:
        raise ValueError(f"lead must be a whole number of steps from 0 to {steps}, got {lead}")
    return schedule_for_budget(budget, steps, model.flops_of(), guidance > 1, mode, lead)


def schedule_flops(model: LoadedModel, schedule: Schedule, guidance: float) -> int:
    return total_flops(schedule, model.flops_of(), guidance > 1)


@torch.no_grad()
def sample(model: LoadedModel, condition: Condition, schedule: Schedule, seed: int | list[int], guidance: float,
           sampler: str = "ddim", progress=None, decode: bool = True) -> Sample:
    """One sample, or a batch when `seed` is a list (each seed gives the same noise as it would alone; the
    condition has batch 1 or one row per seed). `progress(done, total)` is called after every step."""
    seeds = [seed] if isinstance(seed, int) else list(seed)
    for s in seeds:
        validate(schedule.steps, guidance, s)
    spec, flex = model.spec, model.flexible
    scheduler = make_scheduler(model, sampler)
    scheduler.set_timesteps(schedule.steps)
    noise = [torch.randn((1, *spec.latent_shape), generator=torch.Generator().manual_seed(s)) for s in seeds]
    latents = (torch.cat(noise) * scheduler.init_noise_sigma).to(model.device)
    batch = len(seeds)

    def rows(c: dict) -> dict:
        return {k: v.to(model.device).expand(batch, *v.shape[1:]) for k, v in c.items()}

    condition = Condition(rows(condition.cond), rows(condition.uncond), condition.text)
    channel_dim = 2 if spec.modality == "video" else 1
    channels = latents.shape[channel_dim]
    flops_of, use_cfg = model.flops_of(), guidance > 1
    out = Sample(np.zeros(0, np.uint8), schedule)

    def eps(x, t, cond, mode):
        pred = flex(x, t.expand(x.shape[0]), cond, mode)
        return pred.narrow(channel_dim, 0, channels)  # drop learned-variance channels (DiT-XL/2, PixArt)

    for i, t in enumerate(scheduler.timesteps):
        start = time.perf_counter()
        c_mode, u_mode = schedule.modes(i)
        x = scheduler.scale_model_input(latents, t)
        if not use_cfg:
            guided, u_mode = eps(x, t, condition.cond, c_mode), None
        elif c_mode == u_mode:  # one batched forward for both passes
            both = {k: torch.cat([condition.cond[k], condition.uncond[k]]) for k in condition.cond}
            e_c, e_u = eps(torch.cat([x, x]), t, both, c_mode).chunk(2)
            guided = e_u + guidance * (e_c - e_u)
        elif c_mode == NATIVE:  # conditional pass at the smaller patch: the weak conditional is the base
            e_c, e_base = eps(x, t, condition.cond, c_mode), eps(x, t, condition.cond, u_mode)
            guided = e_base + guidance * (e_c - e_base)
        else:
            e_c, e_u = eps(x, t, condition.cond, c_mode), eps(x, t, condition.uncond, u_mode)
            guided = e_u + guidance * (e_c - e_u)
        latents = scheduler.step(guided, t, latents).prev_sample
        if not torch.isfinite(latents).all():
            raise FloatingPointError(f"sampling diverged at step {i} (non-finite latents); try fewer weak steps")
        out.records.append(StepRecord(
            i, int(t), c_mode, u_mode, flex.patches[c_mode], flex.patches[u_mode] if u_mode else None,
            batch * (flops_of[c_mode] + (flops_of[u_mode] if u_mode else 0)), time.perf_counter() - start))
        if progress is not None:
            progress(i + 1, schedule.steps)
    if decode:
        start = time.perf_counter()
        pixels = decode_latents(model, latents)
        out.pixels = pixels[0] if isinstance(seed, int) else pixels
        out.decode_seconds = time.perf_counter() - start
    return out


def decode_latents(model: LoadedModel, latents: torch.Tensor) -> np.ndarray:
    """Latents -> uint8 pixels (B, H, W, 3) or (B, T, H, W, 3)."""
    z = latents / model.latent_scale
    if model.spec.modality == "video":
        if model.spec.embedded:  # the embedded video model shares the image autoencoder, frame by frame
            frames = model.vae.decode(z.flatten(0, 1)).sample.unflatten(0, z.shape[:2])
        else:
            frames = model.vae.decode(z.permute(0, 2, 1, 3, 4)).sample.permute(0, 2, 1, 3, 4)
        pixels = frames.permute(0, 1, 3, 4, 2)
    else:
        pixels = model.vae.decode(z).sample.permute(0, 2, 3, 1)
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
