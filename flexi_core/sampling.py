"""Sampling with a flexible denoiser: a diffusers scheduler loop in which every step picks its patch size.

Each step records its modes, patch sizes, FLOPs and seconds, so that callers (CLI, app, benchmarks) can show the
per-step timeline and compare a flexible run with a static one from the same seed.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import DivergedError, FlexiDiTError
from .guidance import guided
from .inputs import Settings, clean_prompt, settings
from .loading import LoadedModel
from .schedule import Schedule, schedule_for_budget, total_flops


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


def encode_condition(model: LoadedModel, class_label=None, prompt=None) -> Condition:
    """Conditioning for one class label / prompt, or a batch when given a list."""
    spec = model.spec
    condition = model.flexible.family.condition
    if isinstance(class_label, (list, tuple)) or isinstance(prompt, (list, tuple)):
        parts = [encode_condition(model, c, None) for c in class_label] if spec.conditioning == "class" and \
            class_label is not None else [encode_condition(model, None, p) for p in (prompt or [])]
        if not parts:
            raise FlexiDiTError("no conditions given")
        cat = lambda key: {k: torch.cat([getattr(p, key)[k] for p in parts]) for k in getattr(parts[0], key)}  # noqa
        return Condition(cat("cond"), cat("uncond"), "; ".join(p.text for p in parts))
    if spec.conditioning == "class":
        if class_label is None or (isinstance(class_label, str) and not class_label.strip()):
            raise FlexiDiTError(f"{spec.name} needs a class label" +
                                (f": one of {', '.join(spec.class_names)}" if spec.class_names else " (0-999)"))
        label = _class_index(spec, class_label)
        null = model.flexible.base.config.num_embeds_ada_norm
        return Condition(condition(torch.tensor([label])), condition(torch.tensor([null])),
                         spec.class_names[label] if spec.class_names else str(label))
    if prompt is None:
        raise FlexiDiTError(f"{spec.name} needs a prompt")
    text = clean_prompt(prompt)
    hidden, mask = model.text_encoder([text, ""])
    return Condition(condition(None, hidden[:1], mask[:1]), condition(None, hidden[1:], mask[1:]), text)


def _class_index(spec, class_label) -> int:
    names = spec.class_names
    if isinstance(class_label, bool):
        raise FlexiDiTError(f"class label {class_label!r} is neither a class name nor a number")
    if isinstance(class_label, str) and not class_label.strip().lstrip("-").isdigit():
        key = " ".join(class_label.lower().split())
        if key in names:
            return names.index(key)
        raise FlexiDiTError(f"unknown class {class_label!r}; choose one of: {', '.join(names) or '0-999'}")
    try:
        label = int(class_label)
    except (TypeError, ValueError):
        raise FlexiDiTError(f"class label {class_label!r} is neither a class name nor a number") from None
    count = len(names) or spec.config["num_embeds_ada_norm"]
    if not 0 <= label < count:
        raise FlexiDiTError(f"class {label} is out of range; {spec.name} has classes 0-{count - 1}")
    return label


def make_scheduler(model: LoadedModel, sampler: str = "ddim"):
    """A fresh diffusers scheduler; `sampler` is one of inputs.SAMPLERS (checked by `inputs.settings`)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
    classes = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "dpm": DPMSolverMultistepScheduler}
    return classes[sampler].from_config(model.scheduler_config)


def budget_schedule(model: LoadedModel, budget: float, steps: int, guidance: float,
                    weak_mode: str | None = None, lead: int | None = None, sampler: str | None = None,
                    weak_guidance: bool | None = None) -> Schedule:
    """The budget's schedule; `lead` leading native steps, by default the model's measured number; `sampler` (the
    split depends on it), by default the model's; `weak_guidance` (True / False), by default the model's rule."""
    run = settings(model.spec, model.flexible.weak_modes, steps=steps, guidance=guidance, weak_mode=weak_mode,
                   lead=lead, sampler=sampler, weak_guidance=weak_guidance)
    return run_schedule(budget, run, model.flops_of())


def run_schedule(budget: float, run: Settings, flops_of: dict) -> Schedule:
    """The budget's schedule under a run's checked settings, the model's measured rules (lead, unguided weak steps,
    unconditional share) included: the one place the CLI, the pipeline and the app turn a budget into a schedule."""
    return schedule_for_budget(budget, run.steps, flops_of, run.guided, run.weak_mode, run.lead, run.sampler,
                               run.unguided_below, run.uncond_share)


def schedule_flops(model: LoadedModel, schedule: Schedule, guidance: float) -> int:
    return total_flops(schedule, model.flops_of(), guidance > 1)


def restart_solver_order(scheduler):
    """A multistep solver (DPM-Solver++) takes its next step at first order. Its higher-order step extrapolates from
    the previous steps' predictions; across a change of patch size those came from another model, and the difference
    it reads as the trajectory's curvature is the gap between the two models (measured on `shapes-text`, 10 steps,
    55%: 92.6% -> 97.3% judged right, assets/README.md). Single-step samplers (DDIM, DDPM) keep no history."""
    if hasattr(scheduler, "lower_order_nums"):
        scheduler.lower_order_nums = 0


@torch.no_grad()
def denoise(model: LoadedModel, condition: Condition, schedule: Schedule, seeds: list[int], guidance: float,
            sampler: str | None = None) -> Iterator[tuple[StepRecord, torch.Tensor]]:
    """The sampling loop, one step at a time: yields each step's record and the latents after it, so that two runs
    can alternate their steps (generate.py times static and flexible under the same machine load). Each seed gives
    the same noise as it would alone; the condition has batch 1 or one row per seed. Settings are trusted here:
    `inputs.settings` checked them. `sampler` None: the model's."""
    spec, flex = model.spec, model.flexible
    scheduler = make_scheduler(model, sampler or spec.sampler)
    scheduler.set_timesteps(schedule.steps)
    generators = [torch.Generator().manual_seed(s) for s in seeds]  # per seed: the start noise, then DDPM's
    noise = [torch.randn((1, *spec.latent_shape), generator=g) for g in generators]
    latents = (torch.cat(noise) * scheduler.init_noise_sigma).to(model.device)
    batch = len(seeds)

    def rows(c: dict) -> dict:
        return {k: v.to(model.device).expand(batch, *v.shape[1:]) for k, v in c.items()}

    condition = Condition(rows(condition.cond), rows(condition.uncond), condition.text)
    flops_of, use_cfg = model.flops_of(), guidance > 1
    modes_before = None
    for i, t in enumerate(scheduler.timesteps):
        start = time.perf_counter()
        c_mode, u_mode = schedule.modes(i) if use_cfg else (schedule.modes(i)[0], None)
        if modes_before not in (None, (c_mode, u_mode)):
            restart_solver_order(scheduler)
        modes_before = c_mode, u_mode
        x = scheduler.scale_model_input(latents, t)
        eps = guided(flex, x, t, condition.cond, condition.uncond, guidance if u_mode else 1.0, c_mode, u_mode)
        latents = scheduler.step(eps, t, latents, generator=generators).prev_sample
        if not torch.isfinite(latents).all():
            raise DivergedError(f"sampling diverged at step {i} (non-finite latents); try fewer weak steps")
        yield StepRecord(
            i, int(t), c_mode, u_mode, flex.patches[c_mode], flex.patches[u_mode] if u_mode else None,
            batch * (flops_of[c_mode] + (flops_of[u_mode] if u_mode else 0)), time.perf_counter() - start), latents


def sample(model: LoadedModel, condition: Condition, schedule: Schedule, seed: int | list[int], guidance: float,
           sampler: str | None = None, progress=None, decode: bool = True) -> Sample:
    """One sample, or a batch when `seed` is a list. `progress(done, total)` is called after every step."""
    out = Sample(np.zeros(0, np.uint8), schedule)
    for record, latents in denoise(model, condition, schedule, [seed] if isinstance(seed, int) else list(seed),
                                   guidance, sampler):
        out.records.append(record)
        if progress is not None:
            progress(len(out.records), schedule.steps)
    return decoded(model, out, latents, batch=not isinstance(seed, int)) if decode else out


@torch.no_grad()
def decoded(model: LoadedModel, out: Sample, latents: torch.Tensor, batch: bool = False) -> Sample:
    """`out` with the pixels of its final latents (one sample unless `batch`) and the seconds decoding took."""
    start = time.perf_counter()
    pixels = decode_latents(model, latents)
    out.pixels = pixels if batch else pixels[0]
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
