"""FlexiDiT: run a pre-trained diffusion transformer at several patch sizes and spend less compute per sample.

The public API (README, "From Python"):
  FlexiDiTPipeline   load any DiT / PixArt / CogVideoX checkpoint (or a named model) and sample under a budget
  flexify            make a diffusers transformer flexible (weak patch sizes, LoRA or shared variant)
  FlexibleTransformer, Schedule, schedule_for_budget, forward_flops   the method's parts
  FlexiDiTError      what a user can get wrong (bad input, files that do not fit)

The names load on first use (PEP 562), so `python -m flexi_core --help` does not wait for torch and diffusers.
"""
import importlib

_HOMES = {"FlexiDiTError": "errors", "FlexiDiTOutput": "pipeline", "FlexiDiTPipeline": "pipeline",
          "FlexibleTransformer": "flexible", "NATIVE": "flexible", "Schedule": "schedule", "flexify": "pipeline",
          "forward_flops": "flops", "schedule_for_budget": "schedule"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'flexi_core' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)


def __dir__():
    return sorted(list(globals()) + __all__)
