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


def schedule_for_budget(budget: float, steps: int, flops_of: dict, guidance: bool,
                        weak_mode: str = "weak") -> Schedule:
    """The schedule with the most native steps whose FLOPs stay within `budget` x the static FLOPs."""
    if not 0 < budget <= 1:
        raise ValueError(f"budget must be in (0, 1] (a fraction of the static FLOPs), got {budget}")
    limit = budget * total_flops(Schedule.static(steps, weak_mode), flops_of, guidance)
    for native in range(steps, -1, -1):
        schedule = Schedule(steps, native, native, weak_mode)
        if total_flops(schedule, flops_of, guidance) <= limit * (1 + 1e-12):
            return schedule
    floor = flops_of[weak_mode] / flops_of[NATIVE]
    raise ValueError(f"budget {budget:.0%} is below what the weak model alone costs ({floor:.1%} of static); "
                     f"choose at least {floor:.1%}")
