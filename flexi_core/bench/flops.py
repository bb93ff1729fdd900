"""Section 1, FLOPs anchors (formula and torch's counter on the meta device, no weights): DiT-XL/2 at 256 px against
the DiT paper, and which number of weak steps gives the FlexiDiT paper's 64% / 46% / 29% of the static FLOPs."""
from __future__ import annotations

import torch

from .. import registry
from ..families import family_class
from ..flexible import NATIVE, FlexibleTransformer
from ..flops import counted_flops, spec_flops
from ..loading import DEFAULT_LORA_RANK
from ..schedule import Schedule, schedule_for_budget, total_flops
from .models import text_width

DIT_PAPER_GMACS = {2: 118.6, 4: 29.1, 8: 7.4}  # Peebles & Xie, Table 4 ("Gflops" there are multiply-adds)
PAPER_TARGETS = (0.64, 0.46, 0.29)  # FlexiDiT, ImageNet 256, DiT-XL/2, 250 steps (FID 2.25 / 2.64 / 3.24)
PAPER_SCHEDULES = ("70/70", "90/50")  # schedules the paper names in x/y notation, 250 steps
# the flexible wrappers whose forward is counted: (model, variant, LoRA rank or 0)
COUNTED = (("dit-xl-2-256", "shared", 0), ("pixart-alpha-256", "lora", DEFAULT_LORA_RANK["public"]))


def _meta_counted(spec, patch_size: int) -> int:
    """FlopCounterMode on a meta-device model built at `patch_size` (DiT-XL/2, /4, /8 are separate models)."""
    with torch.device("meta"):
        model = registry.build_transformer(spec, patch_size=patch_size)
        x, t, y = torch.randn(1, *spec.latent_shape), torch.tensor([5]), torch.tensor([3])
    return counted_flops(lambda: model(x, t, y))


def _meta_flexible_counted(spec, variant: str, lora_rank: int) -> dict:
    """Counted FLOPs of the flexible wrapper itself (native and weak), built and run on the meta device."""
    text = spec.conditioning == "text"
    with torch.device("meta"):
        flex = FlexibleTransformer(registry.build_transformer(spec), spec.weak_patches, variant, lora_rank)
        x = torch.randn(1, *spec.latent_shape)
        t = torch.tensor([5])
        cond = family_class(spec.family).condition(
            class_labels=torch.tensor([3]),
            hidden=torch.randn(1, spec.text_tokens, text_width(spec.config)) if text else None,
            mask=torch.ones(1, spec.text_tokens) if text else None)
    return {mode: counted_flops(lambda m=mode: flex(x, t, cond, m)) for mode in flex.patches}


def _ratio(schedule: Schedule, flops_of: dict, guidance: bool) -> float:
    return total_flops(schedule, flops_of, guidance) / total_flops(Schedule.static(schedule.steps), flops_of,
                                                                    guidance)


def _dit_rows(spec, count: bool) -> list[dict]:
    rows = []
    for p, paper in DIT_PAPER_GMACS.items():
        formula = spec_flops(spec, (1, p, p))
        counted = _meta_counted(spec, p) if count else None
        rows.append({"patch": p, "tokens": (32 // p) ** 2, "gflops": formula / 1e9, "gmacs": formula / 2e9,
                     "counted_gflops": counted / 1e9 if counted else None, "paper_gmacs": paper,
                     "rel_error": formula / 2e9 / paper - 1})
    return rows


def _flexible_rows() -> list[dict]:
    rows = []
    for name, variant, rank in COUNTED:
        s = registry.get_spec(name)
        counted = _meta_flexible_counted(s, variant, rank)
        for mode, value in counted.items():
            patch = s.native_patch if mode == NATIVE else s.weak_patches[mode]
            formula = spec_flops(s, patch, lora_rank=0 if mode == NATIVE else rank)
            rows.append({"model": name, "variant": variant, "lora_rank": rank, "mode": mode,
                         "patch": list(patch), "formula_gflops": formula / 1e9, "counted_gflops": value / 1e9,
                         "rel_error": formula / value - 1})
    return rows


def _schedule_rows(steps: int, flops_of: dict) -> list[dict]:
    """Per paper target: the closest symmetric x/x schedule, what `--budget` picks, and (guided) the x/y schedule
    with the most native conditional passes."""
    schedules = []
    for target in PAPER_TARGETS:
        for guidance in (False, True):
            # symmetric x/x: the weak model for the first T_weak steps of both passes
            ratios = [(_ratio(Schedule(steps, steps - w, steps - w), flops_of, guidance), w) for w in range(steps + 1)]
            ratio, t_weak = min(ratios, key=lambda rw: abs(rw[0] - target))
            within = schedule_for_budget(target, steps, flops_of, guidance)
            schedules.append({"target": target, "guidance": guidance, "kind": "x/x", "t_weak": t_weak,
                              "schedule": f"{steps - t_weak}/{steps - t_weak}", "ratio": ratio,
                              "within_budget_t_weak": within.weak_steps,
                              "within_budget_ratio": _ratio(within, flops_of, guidance)})
            if guidance:  # x/y: keep as many native conditional passes as the target allows (within 0.5 pt)
                r = flops_of["weak"] / flops_of[NATIVE]
                fast = lambda x, y: ((x + y) * (1 - r) + 2 * steps * r) / (2 * steps)  # noqa: E731
                for x in range(steps, -1, -1):
                    y = min(range(x + 1), key=lambda y: abs(fast(x, y) - target))
                    if abs(fast(x, y) - target) <= 0.005:
                        schedules.append({"target": target, "guidance": True, "kind": "x/y, most native cond.",
                                          "t_weak": steps - x, "t_weak_uncond": steps - y, "schedule": f"{x}/{y}",
                                          "ratio": _ratio(Schedule(steps, x, y), flops_of, True)})
                        break
    return schedules


def flops_anchors(count: bool = True) -> dict:
    spec = registry.get_spec("dit-xl-2-256")
    flops_of = {NATIVE: spec_flops(spec, (1, 2, 2)), "weak": spec_flops(spec, (1, 4, 4))}
    examples = [{"schedule": s, "guidance": True, "ratio": _ratio(Schedule.parse(s, spec.steps), flops_of, True)}
                for s in PAPER_SCHEDULES]
    return {"model": "dit-xl-2-256", "steps": spec.steps, "weak_over_native": flops_of["weak"] / flops_of[NATIVE],
            "dit_xl2": _dit_rows(spec, count), "flexible_counted": _flexible_rows() if count else [],
            "schedules": _schedule_rows(spec.steps, flops_of), "paper_schedules": examples}
