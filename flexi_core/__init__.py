"""FlexiDiT: run a pre-trained diffusion transformer at several patch sizes and spend less compute per sample.

The public API (README, "From Python"):
  FlexiDiTPipeline   load any DiT / PixArt / CogVideoX checkpoint (or a named model) and sample under a budget
  flexify            make a diffusers transformer flexible (weak patch sizes, LoRA or shared variant)
  FlexibleTransformer, Schedule, schedule_for_budget, forward_flops   the method's parts
  FlexiDiTError      what a user can get wrong (bad input, files that do not fit)
"""
from .errors import FlexiDiTError
from .flexible import NATIVE, FlexibleTransformer
from .flops import forward_flops
from .pipeline import FlexiDiTOutput, FlexiDiTPipeline, flexify
from .schedule import Schedule, schedule_for_budget

__all__ = ["FlexiDiTError", "FlexiDiTOutput", "FlexiDiTPipeline", "FlexibleTransformer", "NATIVE", "Schedule",
           "flexify", "forward_flops", "schedule_for_budget"]
