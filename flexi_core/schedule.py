"""Which patch size each denoising step uses, and how a compute budget picks that.

Early steps settle low frequencies (layout, colour) and tolerate a coarse token grid, so the weak model runs the
first steps and the native model the rest. A schedule may give the conditional and the unconditional pass of
classifier-free guidance different numbers of native steps (the paper's "x/y" notation: the native model runs the
last x conditional and last y unconditional steps).

A schedule may also *lead* with a few native steps (both passes) before the weak ones. This is our addition, not the
paper's: the very first steps fix the layout and, for an object, its size. On the embedded video model the spatial
weak mode (a 2x2 token grid per frame) got the object's size wrong in a third of the captions that name one; with
three leading native steps, 25-step samples at 55% of the static FLOPs went from 89.8% to 96.9% judged correct
(static: 98.0%; assets/README.md).

And the weak steps may run without classifier-free guidance (PPFlow, ICLR 2026: no guidance in its coarse stage): the
conditional pass alone, at half the cost, while the native steps at the end keep theirs. On the embedded class model
at 10 DPM-Solver++ steps and a 40% budget this lifted the judge's accuracy from 66% to 88% (assets/README.md); the
other embedded models lost accuracy with it, so it is a measured per-model rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

from .errors import FlexiDiTError
from .flexible import NATIVE
from .inputs import MAX_STEPS, real


@dataclass(frozen=True)
class Schedule:
    steps: int
    native_cond: int  # the native model runs the last `native_cond` conditional passes
    native_uncond: int  # ... and the last `native_uncond` unconditional passes
    weak_mode: str = "weak"
    weak_last: bool = False  # the same steps in reverse order (weak model last): the paper's ablation
    lead: int = 0  # the first `lead` steps of both passes run at the native size too
    weak_guidance: bool = True  # False: a step whose conditional pass is weak runs no unconditional pass

    def __post_init__(self):
        if not (0 <= self.native_cond <= self.steps and 0 <= self.native_uncond <= self.steps):
            raise FlexiDiTError(f"native step counts must lie in [0, {self.steps}]")
        if not 0 <= self.lead <= self.steps:
            raise FlexiDiTError(f"lead steps must lie in [0, {self.steps}]")

    @classmethod
    def static(cls, steps: int, weak_mode: str = "weak") -> "Schedule":
        return cls(steps, steps, steps, weak_mode)

    @classmethod
    def parse(cls, text: str, steps: int, weak_mode: str = "weak", lead: int = 0,
              weak_guidance: bool = True) -> "Schedule":
        """'x/y' (native conditional/unconditional steps) or 'x' (same for both)."""
        cond, _, uncond = text.partition("/")
        try:
            return cls(steps, int(cond), int(uncond or cond), weak_mode, lead=lead, weak_guidance=weak_guidance)
        except ValueError as e:  # int() of something else, or counts out of range
            detail = str(e) if isinstance(e, FlexiDiTError) else "use whole numbers, 'x/y' or 'x'"
            raise FlexiDiTError(f"schedule {text!r}: {detail}") from None

    def _mode(self, step: int, native: int) -> str:
        if self.weak_last:
            step = self.steps - 1 - step
        return NATIVE if step < self.lead or step >= self.steps - native else self.weak_mode

    def modes(self, step: int) -> tuple[str, str | None]:
        """(conditional mode, unconditional mode) of step `step` (0 = the noisiest); the unconditional mode is None
        where a weak step runs without guidance."""
        cond = self._mode(step, self.native_cond)
        if cond != NATIVE and not self.weak_guidance:
            return cond, None
        return cond, self._mode(step, self.native_uncond)

    @property
    def weak_steps(self) -> int:
        """Conditional passes at the weak mode."""
        return sum(self.modes(i)[0] == self.weak_mode for i in range(self.steps))

    @property
    def lead_steps(self) -> int:
        """Leading native steps that are not native anyway (0 for a static schedule)."""
        return min(self.lead, self.steps - min(self.native_cond, self.native_uncond))

    @property
    def label(self) -> str:
        """'x/y', 'x/y after L native' with leading native steps, ', weak unguided' where weak steps skip guidance."""
        lead = f" after {self.lead_steps} native" if self.lead_steps else ""
        unguided = ", weak unguided" if not self.weak_guidance and self.weak_steps else ""
        return f"{self.native_cond}/{self.native_uncond}{lead}{unguided}"

    def runs(self, unconditional: bool = False) -> list[tuple[str, int, int]]:
        """The pass's steps as (mode, first, last) runs, counted from 1: what a timeline or a sentence shows."""
        out = []
        for i in range(self.steps):
            mode = self.modes(i)[unconditional]
            if out and out[-1][0] == mode:
                out[-1] = (mode, out[-1][1], i + 1)
            else:
                out.append((mode, i + 1, i + 1))
        return out


def step_flops(schedule: Schedule, step: int, flops_of: dict, guidance: bool) -> int:
    """FLOPs of one step; `flops_of[mode]` is one batch-1 forward at that mode's patch size."""
    cond, uncond = schedule.modes(step)
    return flops_of[cond] + (flops_of[uncond] if guidance and uncond else 0)


def total_flops(schedule: Schedule, flops_of: dict, guidance: bool) -> int:
    return sum(step_flops(schedule, i, flops_of, guidance) for i in range(schedule.steps))


# With guidance, the unconditional pass stays weak for up to UNCOND_WEAK_FACTOR x as many steps as the conditional
# one (the paper's x/y schedules, e.g. 90/50 of 250). In the steps between, the guidance base is the weak model's
# conditional prediction (sampling.py), so guidance pushes the native model away from its own weak version.
# Measured on the shipped shapes model (25 DDIM steps, 256 samples, ~56% of the static FLOPs): 10/10 87.1% judged
# correct, 12/8 93.8%, 14/6 94.1%, 16/4 93.4%, 20/0 84.8% (static 94.5%); see assets/README.md.
UNCOND_WEAK_FACTOR = 2
# ... but with DPM-Solver++ it keeps at least NATIVE_UNCOND_SHARE[sampler] of the conditional pass's native steps.
# Without a native guidance base at the end its few-step samples collapse (the first-order restart after a switch,
# sampling.restart_solver_order, does not help: shapes-text 10 steps 2/0 54.7% vs 1/1 90.6%); DDIM's do not.
# Measured (64 samples, LoRA, equal FLOPs; assets/README.md, "the budget rule"): DPM-Solver++ 10 steps at 37%:
# shapes 2/1 62.5% vs 3/0 46.9%, shapes-text 1/1 90.6% vs 2/0 46.9%; 6 steps at 39%: shapes 1/1 67.2% vs 2/0 28.1%;
# at 52% shapes 5/2 93.8%, 6/1 95.3%, 7/0 90.6%. DDIM 8 steps at 36%: shapes 2/0 59.4% vs 1/1 40.6%. DDPM
# (single-step, like DDIM) is not measured and keeps the paper's rule.
NATIVE_UNCOND_SHARE = {"dpm": 0.5, "ddim": 0.0, "ddpm": 0.0}
# Whatever the share, with DPM-Solver++ the native conditional steps keep at least one native unconditional step:
# shapes-text at 6 steps and 40% (64 samples) 1/0 12.5%, the weak model alone (0/0) 37.5%.
NATIVE_UNCOND_LEAST = {"dpm": 1, "ddim": 0, "ddpm": 0}


# Measured on shapes-video, spatial, 25 steps (judged correct; static 98.0%): at 55% 3 leading native steps and 8 at
# the end 96.9%, none and 13 at the end 89.8%; at 40% (shared variant) 1 leading and 1 at the end 34.0%, none and 3 at
# the end 62.1%; at 40%/45% a lead and no native end 28.1%/41.8%. At 10 DPM-Solver++ steps and 53% (2026-12-04, 64
# samples) `2/1 after 1 native` scored 34.4% and `3/2` 78.1%: a lead needs three times its length of native steps at
# the end.
LEAD_END_FACTOR = 3


def most_weak_uncond(steps: int, weak_cond: int, sampler: str = "ddim", uncond_share: float | None = None) -> int:
    """The most weak unconditional steps a guided budget schedule with `weak_cond` weak conditional ones takes;
    `uncond_share` (a model's, per weak mode) raises the sampler's NATIVE_UNCOND_SHARE."""
    share = max(NATIVE_UNCOND_SHARE[sampler], uncond_share or 0.0)
    native_cond = steps - weak_cond
    native_kept = max(math.floor(share * native_cond), min(native_cond, NATIVE_UNCOND_LEAST[sampler]))
    return min(steps, UNCOND_WEAK_FACTOR * weak_cond, steps - native_kept)


def schedule_for_budget(budget: float, steps: int, flops_of: dict, guidance: bool, weak_mode: str = "weak",
                        lead: int = 0, sampler: str = "ddim", unguided_below: float = 0.0,
                        uncond_share: float | None = None) -> Schedule:
    """Within `budget` x the static FLOPs: the fewest weak conditional steps w, then the fewest weak unconditional
    steps in [w, most_weak_uncond(steps, w, sampler)] (without guidance there is no unconditional pass). Leading
    native steps never displace the native ones at the end, which matter more (the reverse schedule is clearly
    worse): a budget gets as many of the `lead` steps as leave LEAD_END_FACTOR x as many native conditional steps at
    the end. A budget below `unguided_below` runs its weak steps without guidance (`Schedule.weak_guidance`; the
    models' measured thresholds: `ModelSpec.unguided_below`), so the same FLOPs buy more native steps.
    `uncond_share`: see most_weak_uncond."""
    if isinstance(budget, Real) and math.isnan(budget):
        raise FlexiDiTError("budget is not a number")
    if isinstance(budget, bool) or not isinstance(budget, Real) or not 0 < budget <= 1:
        raise FlexiDiTError(f"budget must be in (0, 1] (a fraction of the static FLOPs), got {budget!r}")
    limit = budget * total_flops(Schedule.static(steps, weak_mode), flops_of, guidance) * (1 + 1e-12)
    weak_guidance = not (guidance and budget < unguided_below)
    for lead_steps in range(min(lead, steps), -1, -1):
        make = lambda weak_cond, weak_uncond: Schedule(  # noqa: E731
            steps, steps - weak_cond, steps - weak_uncond, weak_mode, lead=lead_steps, weak_guidance=weak_guidance)
        fits = lambda weak_cond, weak_uncond: total_flops(make(weak_cond, weak_uncond), flops_of, guidance) <= limit
        for weak_cond in range(steps + 1):
            most_uncond = most_weak_uncond(steps, weak_cond, sampler, uncond_share) if guidance else weak_cond
            if fits(weak_cond, most_uncond):
                weak_uncond = next(w for w in range(weak_cond, most_uncond + 1) if fits(weak_cond, w))
                if steps - weak_cond >= LEAD_END_FACTOR * lead_steps:
                    return make(weak_cond, weak_uncond)
                break  # the lead would displace native steps at the end: try a shorter one
    raise FlexiDiTError(f"budget {100 * budget:.10g}% is below what the weak model alone costs; choose at least "
                        f"{percent_up(budget_floor(flops_of, guidance, weak_mode))}")


def budget_floor(flops_of: dict, guidance: bool, weak_mode: str = "weak") -> float:
    """The lowest budget `schedule_for_budget` reaches, as a fraction of the static FLOPs: every step weak. A lead
    never raises it (leading steps that do not fit are dropped), and neither does the number of steps."""
    return (total_flops(Schedule(1, 0, 0, weak_mode), flops_of, guidance)
            / total_flops(Schedule.static(1, weak_mode), flops_of, guidance))


def percent_up(fraction: float) -> str:
    """A lower bound as a percent rounded *up* to 0.1% ('55.7%' for 0.55649), so that choosing it works (the
    1e-12 is the budget search's own slack: 0.557 reaches a floor of 0.557 + 1e-16)."""
    return f"{math.ceil(fraction * 1000 * (1 - 1e-12)) / 10:.1f}%"


def fewer_steps_for(flops_budget: float, flops_of: dict, guidance: bool, most: int = MAX_STEPS) -> int:
    """The most static steps (at most `most`) whose FLOPs do not exceed `flops_budget` — one sample's FLOPs as
    `flops_of` counts them (LoadedModel.flops_of()) — never more; 0 when not even one static step fits."""
    flops_budget = real(flops_budget, "the FLOPs budget", 0, math.inf)
    per_step = total_flops(Schedule.static(1), flops_of, guidance)
    return min(most, int(flops_budget * (1 + 1e-12) // per_step))
