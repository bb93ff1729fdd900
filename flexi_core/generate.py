"""A static and a flexible sample from the same seed, with FLOPs, seconds and their agreement.

This is the unit of work that the CLI's `generate`, the app and the benchmarks share.
"""
from __future__ import annotations

from dataclasses import dataclass

from .loading import LoadedModel
from .metrics import psnr, ssim
from .sampling import Sample, budget_schedule, encode_condition, sample, validate
from .schedule import Schedule


@dataclass
class Comparison:
    flexible: Sample
    static: Sample | None
    condition_text: str

    @property
    def flops_ratio(self) -> float | None:
        return self.flexible.flops / self.static.flops if self.static else None

    @property
    def agreement(self) -> dict | None:
        if self.static is None:
            return None
        return {"psnr": psnr(self.static.pixels, self.flexible.pixels),
                "ssim": ssim(self.static.pixels, self.flexible.pixels)}


def generate(model: LoadedModel, *, class_label=None, prompt=None, budget: float = 0.5, steps: int | None = None,
             seed: int = 0, guidance: float | None = None, sampler: str = "ddim", weak_mode: str | None = None,
             lead: int | None = None, schedule: Schedule | None = None, compare: bool = True,
             progress=None) -> Comparison:
    """Samples the flexible schedule for `budget` (or the given schedule) and, with `compare`, the static one.

    `progress(fraction, text)` is called after every denoising step of both runs."""
    steps = model.spec.steps if steps is None else steps
    guidance = model.spec.guidance if guidance is None else guidance
    validate(steps, guidance, seed)
    condition = encode_condition(model, class_label=class_label, prompt=prompt)
    schedule = schedule or budget_schedule(model, budget, steps, guidance, weak_mode, lead)
    runs = [("static", Schedule.static(steps, schedule.weak_mode))] if compare else []
    runs.append(("flexible", schedule))
    results = {}
    for k, (name, sched) in enumerate(runs):
        def step_progress(done, total, k=k, name=name):
            if progress is not None:
                progress((k + done / total) / len(runs), f"{name}: step {done}/{total}")
        results[name] = sample(model, condition, sched, seed, guidance, sampler, step_progress)
    return Comparison(results["flexible"], results.get("static"), condition.text)
