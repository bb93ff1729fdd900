"""The one validation layer: every setting a user gives, checked once where it enters the library.

`settings()` checks the numbers of a run and fills in the model's defaults; `generate` (what the CLI and the
pipeline run) and the app's previews call it, and what it returns is trusted from there (the sampling loop checks
nothing again). A budget is checked by
`schedule.schedule_for_budget`, a condition by `sampling.encode_condition`, a model name by `registry.get_spec`.
Booleans are refused where a number is meant: `isinstance(True, int)` holds in Python.
"""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from numbers import Integral, Real

from .errors import FlexiDiTError

SAMPLERS = {"ddim": "DDIM", "dpm": "DPM-Solver++", "ddpm": "DDPM"}  # name -> what a table or page calls it
MAX_STEPS = 1000
MAX_GUIDANCE = 30
MAX_SEED = 2 ** 63 - 1
MAX_PROMPT_CHARS = 500


def whole(value, what: str, low: int, high: int) -> int:
    """`value` as an int in [low, high]; a bool, a float or text is refused."""
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= value <= high:
        raise FlexiDiTError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    return int(value)


def real(value, what: str, low: float, high: float) -> float:
    """`value` as a finite float in [low, high]; a bool or text is refused."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or not low <= value <= high:
        raise FlexiDiTError(f"{what} must be a number from {low} to {high}, got {value!r}")
    return float(value)


def clean_prompt(prompt) -> str:
    """Drops control characters and surrounding space; rejects empty and over-long prompts."""
    if not isinstance(prompt, str):
        raise FlexiDiTError("the prompt must be text")
    text = "".join(ch for ch in prompt if unicodedata.category(ch)[0] != "C" or ch == " ").strip()
    if not text:
        raise FlexiDiTError("the prompt is empty; describe what to draw, e.g. 'a red circle on a black background'")
    if len(text) > MAX_PROMPT_CHARS:
        raise FlexiDiTError(f"the prompt has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
    return text


@dataclass(frozen=True)
class Settings:
    """A run's checked settings, the model's defaults filled in."""
    steps: int
    guidance: float
    seed: int
    weak_mode: str
    lead: int
    sampler: str
    unguided_below: float  # budgets below this run the weak steps without guidance (schedule.py)
    uncond_share: float | None  # the model's least native share of the unconditional pass at this weak mode

    @property
    def guided(self) -> bool:
        """Classifier-free guidance runs (an unconditional pass per step) only above 1."""
        return self.guidance > 1


def settings(spec, weak_modes=None, *, steps=None, guidance=None, seed=0, weak_mode=None, lead=None,
             sampler=None, weak_guidance=None) -> Settings:
    """Checks a run's settings against `spec` (a registry.ModelSpec) and fills in its defaults: steps, guidance,
    sampler, the first weak mode, the model's measured lead and the budgets whose weak steps run without guidance.
    `weak_modes`: those of the loaded model (default the spec's). `weak_guidance` True / False: the weak steps run
    with / without guidance at every budget; None: the model's rule (`spec.unguided_below`)."""
    weak_modes = list(weak_modes or spec.weak_patches)
    steps = whole(spec.steps if steps is None else steps, "steps", 1, MAX_STEPS)
    guidance = real(spec.guidance if guidance is None else guidance, "guidance", 0, MAX_GUIDANCE)
    seed = whole(seed, "seed", 0, MAX_SEED)
    mode = weak_modes[0] if weak_mode is None else weak_mode
    if mode not in weak_modes:
        raise FlexiDiTError(f"weak mode must be one of {weak_modes}, not {mode!r}")
    lead = whole(spec.lead_steps(mode, steps) if lead is None else lead, "lead", 0, steps)
    sampler = spec.sampler if sampler is None else sampler
    if sampler not in SAMPLERS:
        raise FlexiDiTError(f"sampler must be one of {', '.join(SAMPLERS)}, not {str(sampler)[:40]!r}")
    if weak_guidance is not None and not isinstance(weak_guidance, bool):
        raise FlexiDiTError("weak_guidance must be True, False or None (the model's rule), "
                            f"not {str(weak_guidance)[:40]!r}")
    unguided_below = spec.unguided_below if weak_guidance is None else 0.0 if weak_guidance else math.inf
    return Settings(steps, guidance, seed, mode, lead, sampler, unguided_below, spec.uncond_share.get(mode))
