"""Which patch size each denoising step uses, and how a compute budget picks that.

Early steps settle low frequencies (layout, colour) and tolerate a coarse token grid, so the weak model runs the
first steps and the native model the rest. A schedule may give the conditional and the unconditional pass of
classifier-free guidance different numbers of native steps (the paper's "x/y" notation: the native model runs the
last x conditional and last y unconditional steps).
"""
from __future__ import annotations

from dataclasses import dataclass

from .flexible import NATIVE


@dataclass(frozen=True)
class Schedule:
    steps: int
    native_cond: int  # the native model runs the last `native_cond` conditional passes
    native_uncond: int  # ... and the last `native_uncond` unconditional passes
    weak_mode: str = "weak"
    weak_last: bool = False  # the reverse order (weak model for the last steps): the paper's ablation

    def __post_init__(self):
        if not (0 <= self.native_cond <= self.steps and 0 <= self.native_uncond <= self.steps):
            raise ValueError(f"native step counts must lie in [0, {self.steps}]")

    @classmethod
    def static(cls, steps: int, weak_mode: str = "weak") -> "Schedule":
        return cls(steps, steps, steps, weak_mode)

    @classmethod
    def parse(cls, text: str, steps: int, weak_mode: str = "weak") -> "Schedule":
        """'x/y' (native conditional/unconditional steps) or 'x' (same for both)."""
        cond, _, uncond = text.partition("/")
        return cls(steps, int(cond), int(uncond or cond), weak_mode)

    def _mode(self, step: int, native: int) -> str:
        is_native = step < native if self.weak_last else step >= self.steps - native
        return NATIVE if is_native else self.weak_mode

    def modes(self, step: int) -> tuple[str, str]:
        """(conditional mode, unconditional mode) of step `step` (0 = the noisiest)."""
        return self._mode(step, self.native_cond), self._mode(step, self.native_uncond)

    @property
    def weak_steps(self) -> int:
        return self.steps - self.native_cond

    @property
    def label(self) -> str:
        return f"{self.native_cond}/{self.native_uncond}"


def step_flops(schedule: Schedule, step: int, flops_of: dict, guidance: bool) -> int:
    """FLOPs of one step; `flops_of[mode]` is one batch-1 forward at that mode's patch size."""
    cond, uncond = schedule.modes(step)
    return flops_of[cond] + (flops_of[uncond] if guidance else 0)


def total_flops(schedule: Schedule, flops_of: dict, guidance: bool) -> int:
    return sum(step_flops(schedule, i, flops_of, guidance) for i in range(schedule.steps))


# With guidance, the unconditional pass stays weak for up to UNCOND_WEAK_FACTOR x as many steps as the conditional
# one (the paper's x/y schedules, e.g. 90/50 of 250). In the steps between, the guidance base is the weak model's
# conditional prediction (sampling.py), so guidance pushes the native model away from its own weak version.
# Measured on the shipped shapes model (25 DDIM steps, 256 samples, ~56% of the static FLOPs): 10/10 87.1% judged
# correct, 12/8 93.8%, 14/6 94.1%, 16/4 93.4%, 20/0 84.8% (static 94.5%); see assets/README.md.
UNCOND_WEAK_FACTOR = 2


def schedule_for_budget(budget: float, steps: int, flops_of: dict, guidance: bool,
                        weak_mode: str = "weak") -> Schedule:
    """Within `budget` x the static FLOPs: the fewest weak conditional steps w, then the fewest weak unconditional
    steps in [w, UNCOND_WEAK_FACTOR * w] (without guidance there is no unconditional pass)."""
    if not 0 < budget <= 1:
        raise ValueError(f"budget must be in (0, 1] (a fraction of the static FLOPs), got {budget}")
    limit = budget * total_flops(Schedule.static(steps, weak_mode), flops_of, guidance) * (1 + 1e-12)
    fits = lambda weak_cond, weak_uncond: total_flops(  # noqa: E731
        Schedule(steps, steps - weak_cond, steps - weak_uncond, weak_mode), flops_of, guidance) <= limit
    for weak_cond in range(steps + 1):
        most_uncond = min(steps, UNCOND_WEAK_FACTOR * weak_cond) if guidance else weak_cond
        if fits(weak_cond, most_uncond):
            weak_uncond = next(w for w in range(weak_cond, most_uncond + 1) if fits(weak_cond, w))
            return Schedule(steps, steps - weak_cond, steps - weak_uncond, weak_mode)
    floor = flops_of[weak_mode] / flops_of[NATIVE]
    raise ValueError(f"budget {budget:.0%} is below what the weak model alone costs ({floor:.1%} of static); "
                     f"choose at least {floor:.1%}")
