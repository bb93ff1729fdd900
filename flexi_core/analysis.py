"""The paper's two observations, measured on a loaded model (the app's "Why it works" view).

1. Weak and native predictions differ little in early (noisy) steps and a lot in late ones: along the static
   trajectory, the relative gap ||eps_weak - eps_native|| / ||eps_native|| per step.
2. Early steps decide low frequencies, late steps high ones: keep only the low- or high-pass part of one step's
   update, finish sampling unchanged, and see how much the final sample moves.
"""
from __future__ import annotations

import torch

from .flexible import NATIVE
from .guidance import guided
from .loading import LoadedModel
from .metrics import psnr
from .sampling import Condition, decode_latents, make_scheduler


def _start(model: LoadedModel, steps: int, seed: int):
    scheduler = make_scheduler(model, "ddim")
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    return scheduler, torch.randn((1, *model.spec.latent_shape), generator=gen) * scheduler.init_noise_sigma


@torch.no_grad()
def prediction_gap(model: LoadedModel, condition: Condition, steps: int, seed: int, guidance: float) -> dict:
    """Per step along the static trajectory: relative gap of each weak mode's prediction to the native one."""
    scheduler, x = _start(model, steps, seed)
    gaps = {mode: [] for mode in model.flexible.weak_modes}
    for t in scheduler.timesteps:
        native = guided(model.flexible, x, t, condition.cond, condition.uncond, guidance, NATIVE)
        for mode in gaps:
            weak = guided(model.flexible, x, t, condition.cond, condition.uncond, guidance, mode)
            gaps[mode].append(float((weak - native).norm() / native.norm().clamp_min(1e-8)))
        x = scheduler.step(native, t, x).prev_sample
    return {"timesteps": [int(t) for t in scheduler.timesteps], "gap": gaps}


def frequency_split(update: torch.Tensor, cutoff: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """(low-pass, high-pass) parts of a latent update, split by spatial frequency radius (fraction of Nyquist)."""
    h, w = update.shape[-2:]
    fy, fx = torch.fft.fftfreq(h).abs() * 2, torch.fft.fftfreq(w).abs() * 2
    mask = ((fy[:, None] ** 2 + fx[None, :] ** 2).sqrt() <= cutoff).to(update.dtype)
    low = torch.fft.ifft2(torch.fft.fft2(update) * mask).real
    return low, update - low


@torch.no_grad()
def filtered_updates(model: LoadedModel, condition: Condition, steps: int, seed: int, guidance: float,
                     at: tuple[float, ...] = (0.1, 0.9), cutoff: float = 0.25) -> dict:
    """Keeps only the low- or high-pass part of the update at one early and one late step; returns the final
    samples and how far each moved from the unfiltered one (PSNR, dB: higher = the dropped part mattered less)."""
    scheduler, x0 = _start(model, steps, seed)
    timesteps = list(scheduler.timesteps)

    def run(edit_step: int | None = None, keep: str = "low"):
        scheduler.set_timesteps(steps)
        x = x0.clone()
        for i, t in enumerate(timesteps):
            eps = guided(model.flexible, x, t, condition.cond, condition.uncond, guidance, NATIVE)
            nxt = scheduler.step(eps, t, x).prev_sample
            if i == edit_step:
                low, high = frequency_split(nxt - x, cutoff)
                nxt = x + (low if keep == "low" else high)
            x = nxt
        return decode_latents(model, x)[0]

    reference = run()
    out = {"reference": reference, "cases": []}
    for fraction in at:
        step = min(steps - 1, int(fraction * steps))
        for keep in ("low", "high"):
            pixels = run(step, keep)
            out["cases"].append({"step": step, "timestep": int(timesteps[step]), "keep": keep, "pixels": pixels,
                                 "psnr_to_reference": psnr(reference, pixels)})
    return out


def sweep(model: LoadedModel, budgets, progress=None, **kwargs) -> list[dict]:
    """One seed at several budgets, each compared with the static sample (budget 1.0, sampled once).

    Returns one dict per budget: budget, sample (sampling.Sample), flops, seconds, psnr, ssim, weak_steps."""
    from .generate import generate
    from .metrics import ssim
    budgets = sorted({float(b) for b in budgets} | {1.0}, reverse=True)
    rows, static = [], None
    for k, budget in enumerate(budgets):
        def step_progress(fraction, text, k=k, budget=budget):
            if progress is not None:
                progress((k + fraction) / len(budgets), f"budget {budget:.0%}: {text}")
        sample = generate(model, budget=budget, compare=False, progress=step_progress, **kwargs).flexible
        static = static if static is not None else sample
        rows.append({"budget": budget, "sample": sample, "flops": sample.flops, "seconds": sample.seconds,
                     "weak_steps": sample.schedule.weak_steps, "psnr": psnr(static.pixels, sample.pixels),
                     "ssim": ssim(static.pixels, sample.pixels)})
    return rows
