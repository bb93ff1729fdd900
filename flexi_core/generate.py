"""A static and a flexible sample from the same seed, with FLOPs, seconds and their agreement.

This is the unit of work that the CLI's `generate`, the app and the benchmarks share. The two runs alternate their
denoising steps, so that whatever else loads the machine slows both alike; `time_verdict` then says what the
seconds show, and claims no saving within the noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FlexiDiTError
from .inputs import Settings, settings
from .loading import LoadedModel
from .metrics import psnr, ssim
from .sampling import Condition, Sample, decoded, denoise, encode_condition, run_schedule
from .schedule import Schedule, fewer_steps_for, total_flops

# The least relative difference in seconds that a comparison calls a change: besides the step-to-step noise that
# `timing_noise` measures, the load itself moves the ratio. One job (shapes, red circle, 50 steps, 50%, merged) 18
# times on the shared 2-core CPU at load 5-9: flexible/static 0.76-1.01 with alternating steps (14 of 18 in
# 0.83-0.89; timing_noise 0.035-0.072), 0.60-1.13 with the two runs one after the other.
TIME_NOISE = 0.10


def time_verdict(static_s: float, flexible_s: float, noise: float = TIME_NOISE) -> str:
    """'saves 29% of the time', 'took 28% more time' or 'about the same time': a change only beyond `noise` (a
    relative difference of the flexible/static ratio from 1)."""
    change = flexible_s / static_s - 1
    if change < -noise:
        return f"saves {-change:.0%} of the time"
    if change > noise:
        return f"took {change:.0%} more time"
    return "about the same time"


@dataclass
class Comparison:
    flexible: Sample
    static: Sample | None
    condition_text: str
    # the static model with the most steps (fewer than the run's) within the flexible run's FLOPs; None when not even
    # one step fits or the flexible run costs as much as the static one
    fewer: Sample | None = None
    guidance: float | None = None
    sampler: str | None = None
    budget: float | None = None  # what was asked (None with an explicit schedule)

    @property
    def flops_ratio(self) -> float | None:
        return self.flexible.flops / self.static.flops if self.static else None

    @property
    def agreement(self) -> dict | None:
        if self.static is None:
            return None
        return {"psnr": psnr(self.static.pixels, self.flexible.pixels),
                "ssim": ssim(self.static.pixels, self.flexible.pixels)}

    @property
    def runs(self) -> dict[str, Sample]:
        """The samples this comparison holds, by name: flexible, static, fewer_steps."""
        runs = {"flexible": self.flexible, "static": self.static, "fewer_steps": self.fewer}
        return {name: run for name, run in runs.items() if run is not None}

    def report(self, model: LoadedModel, **request) -> dict:
        """Everything a JSON report says about this comparison (`generate --json`); `request` adds the caller's
        settings (seed, files). For the embedded models, what the judge reads in each sample."""
        flex, static, fewer = self.flexible, self.static, self.fewer
        from .shapes.reading import judge_readings
        return {
            "model": model.spec.name, "modality": model.spec.modality, "variant": model.variant,
            "condition": self.condition_text, "steps": flex.schedule.steps, "guidance": self.guidance,
            "sampler": self.sampler, "budget": self.budget, **request,
            "schedule_label": flex.schedule.label, "weak_steps": flex.schedule.weak_steps,
            "lead_steps": flex.schedule.lead_steps,
            "schedule": [list(r.cond_patch) for r in flex.records],
            "schedule_uncond": [list(r.uncond_patch) if r.uncond_patch else None for r in flex.records],
            "flops_per_step": [r.flops for r in flex.records],
            "flops_flexible": flex.flops, "flops_static": static.flops if static else None,
            "flops_ratio": self.flops_ratio,
            "seconds_flexible": flex.seconds, "seconds_static": static.seconds if static else None,
            "time_verdict": self.time_verdict, "device": model.device_name, "agreement": self.agreement,
            "flexify_trained": model.flexify_trained,
            "steps_fewer": fewer.schedule.steps if fewer else None, "flops_fewer_steps": fewer.flops if fewer else None,
            "seconds_fewer_steps": fewer.seconds if fewer else None,
            "judge": judge_readings(model, self.condition_text, self.runs) if model.spec.embedded else None,
        }

    @property
    def time_verdict(self) -> str | None:
        """The seconds' verdict, with the larger of TIME_NOISE and this comparison's own measured noise."""
        if self.static is None:
            return None
        noise = max(TIME_NOISE, timing_noise(self.static, self.flexible))
        return time_verdict(self.static.seconds, self.flexible.seconds, noise)


def timing_noise(static: Sample, flexible: Sample, draws: int = 1000) -> float:
    """Half-width of a 95% interval of the flexible/static seconds ratio, from the step-to-step noise of two runs
    whose steps alternated: paired steps are resampled (a bootstrap) within groups of the flexible run's modes, so
    that every draw keeps the schedule's mix of weak and native steps."""
    s = np.array([r.seconds for r in static.records])
    f = np.array([r.seconds for r in flexible.records])
    groups: dict = {}
    for i, r in enumerate(flexible.records):
        groups.setdefault((r.cond_mode, r.uncond_mode), []).append(i)
    rng = np.random.default_rng(0)
    picks = np.concatenate([rng.choice(g, (draws, len(g))) for g in groups.values()], axis=1)
    low, high = np.percentile(f[picks].sum(1) / s[picks].sum(1), [2.5, 97.5])
    ratio = f.sum() / s.sum()
    return float(max(ratio - low, high - ratio))


def generate(model: LoadedModel, *, class_label=None, prompt=None, budget: float | None = None,
             steps: int | None = None, seed: int = 0, guidance: float | None = None, sampler: str | None = None,
             weak_mode: str | None = None, lead: int | None = None, schedule: Schedule | None = None,
             compare: bool = True, fewer_steps: bool = False, weak_guidance: bool | None = None,
             progress=None) -> Comparison:
    """Samples the flexible schedule for `budget` (or the given schedule) and, with `compare`, the static one, and
    with `fewer_steps` the obvious alternative: the static model with fewer steps at no more than the flexible run's
    FLOPs; their steps alternate. Every argument is checked here, once (`inputs.settings`); None takes the model's
    default. `progress(fraction, text)` is called after every denoising step of every run."""
    if schedule is not None:
        if steps not in (None, schedule.steps):
            raise FlexiDiTError(f"the schedule has {schedule.steps} steps, not {steps}")
        steps, weak_mode, budget = schedule.steps, schedule.weak_mode, None  # the schedule decides
    elif budget is None:
        budget = model.spec.budget
    run = settings(model.spec, model.flexible.weak_modes, steps=steps, guidance=guidance, seed=seed,
                   weak_mode=weak_mode, lead=lead, sampler=sampler, weak_guidance=weak_guidance)
    condition = encode_condition(model, class_label=class_label, prompt=prompt)
    schedule = schedule or run_schedule(budget, run, model.flops_of())
    schedules = {"static": Schedule.static(run.steps, run.weak_mode)} if compare else {}
    schedules["flexible"] = schedule
    if fewer_steps:
        flops_of = model.flops_of()
        steps_fewer = fewer_steps_for(total_flops(schedule, flops_of, run.guided), flops_of, run.guided, run.steps)
        if 0 < steps_fewer < run.steps:  # none when not even one step fits, or the flexible run costs all of them
            schedules["fewer steps"] = Schedule.static(steps_fewer, run.weak_mode)
    samples = interleaved(model, condition, schedules, run, progress)
    return Comparison(samples["flexible"], samples.get("static"), condition.text, samples.get("fewer steps"),
                      run.guidance, run.sampler, budget)


def interleaved(model: LoadedModel, condition: Condition, schedules: dict[str, Schedule], run: Settings,
                progress=None) -> dict[str, Sample]:
    """Samples each schedule from `run.seed`, one step of each in turn (who goes first alternates too; a shorter
    schedule drops out when done), so that machine load hits them alike. Each result equals sampling its schedule
    alone, bit for bit."""
    loops = {name: denoise(model, condition, s, [run.seed], run.guidance, run.sampler) for name, s in schedules.items()}
    samples = {name: Sample(np.zeros(0, np.uint8), s) for name, s in schedules.items()}
    latents, names, total = {}, list(schedules), sum(s.steps for s in schedules.values())
    for i in range(max(s.steps for s in schedules.values())):
        for name in names if i % 2 == 0 else names[::-1]:
            if i >= schedules[name].steps:
                continue
            record, latents[name] = next(loops[name])
            samples[name].records.append(record)
            if progress is not None:
                done = sum(len(s.records) for s in samples.values())
                progress(done / total, f"{name}: step {i + 1}/{schedules[name].steps}")
    return {name: decoded(model, samples[name], latents[name]) for name in names}
