"""Quality vs FLOPs of the embedded models, scored by the judge.

For fixed seeds and procedural conditions: the judge's accuracy on the requested attributes, the Fréchet distance
in the judge's feature space against real procedural samples, and the agreement (PSNR, SSIM) with the static sample
of the same seed — for the static model, FlexiDiT at several budgets (both variants), and three baselines at equal
FLOPs: the static model with fewer steps, the reverse schedule (weak model last) and the weak model alone.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import data
from .judge import load_judge
from .loading import load_model
from .metrics import frechet_distance, psnr, ssim
from .registry import ASSETS, get_spec
from .sampling import budget_schedule, encode_condition, sample, schedule_flops
from .schedule import Schedule

BUDGETS = (1.0, 0.75, 0.55, 0.40, 0.25)
EVAL_SEED = 70_000_000
PARAPHRASES = {"trained": data.SYNONYMS, "held-out": data.HELD_OUT_SYNONYMS}


def eval_set(spec, n: int, offset: int = EVAL_SEED, synonyms: dict | None = None):
    """n procedural items: (real pixels, scenes, conditions); classes are balanced for the class model.

    `synonyms` (data.SYNONYMS or data.HELD_OUT_SYNONYMS): every caption names colour and shape in those words."""
    video = spec.modality == "video"
    words = {"paraphrase": 1.0, "synonyms": synonyms} if synonyms else {}
    items = [data.sample(offset + i, class_id=i % len(data.CLASS_NAMES), video=video, **words) for i in range(n)]
    pixels = np.stack([p for p, _, _ in items])
    scenes = [s for _, s, _ in items]
    conditions = [s.class_name for s in scenes] if spec.conditioning == "class" else [c for _, _, c in items]
    return pixels, scenes, conditions


def requested(spec, scene, condition: str) -> dict:
    """The attributes a condition asks for: colour and shape always, the rest when the caption names them."""
    want = {"colour": scene.colour, "shape": scene.shape}
    if spec.conditioning == "text":
        named = {"background": scene.background, "size": scene.size_word}
        if spec.modality == "video":  # video captions name a direction, never a position ("moving left")
            want["direction"] = scene.direction
        else:
            named["position"] = scene.position_word
        for key, word in named.items():
            if f" {word} " in f" {condition} ":
                want[key] = word
    return want


def judge_pixels(judge, spec, pixels):
    """Readings and features; a video is read at its first two frames, its features averaged over frames."""
    if spec.modality == "video":
        reads = [judge.read_video(v) for v in pixels]
        feats = judge.features(pixels.reshape(-1, *pixels.shape[2:])).reshape(len(pixels), pixels.shape[1], -1)
        return reads, feats.mean(1)
    return judge.read(pixels), judge.features(pixels)


def score(judge, spec, pixels, wants, real_feats, static_pixels) -> dict:
    reads, feats = judge_pixels(judge, spec, pixels)
    per_attr = {k: float(np.mean([r[k] == w[k] for r, w in zip(reads, wants) if k in w]))
                for k in sorted({k for w in wants for k in w})}
    out = {"accuracy": float(np.mean([all(r[k] == v for k, v in w.items()) for r, w in zip(reads, wants)])),
           "attributes": per_attr, "fd": frechet_distance(feats, real_feats)}
    if static_pixels is not None:
        out["psnr"] = float(np.mean([min(psnr(a, b), 100.0) for a, b in zip(static_pixels, pixels)]))
        out["ssim"] = float(np.mean([ssim(a, b) for a, b in zip(static_pixels, pixels)]))
    return out


def _run(model, condition, schedule, seeds, guidance, chunk, progress_label=""):
    from tqdm import tqdm
    pixels, flops, seconds = [], 0, 0.0
    for start in tqdm(range(0, len(seeds), chunk), desc=progress_label, leave=False):
        part = slice(start, start + chunk)
        cond = type(condition)({k: v[part] for k, v in condition.cond.items()},
                               {k: v[part] for k, v in condition.uncond.items()}, condition.text)
        s = sample(model, cond, schedule, seeds[part], guidance)
        pixels.append(s.pixels)
        flops, seconds = flops + s.flops, seconds + s.seconds
    return np.concatenate(pixels), flops, seconds


def evaluate(name: str, n: int = 256, steps: int | None = None, budgets=BUDGETS, variants=("lora", "shared"),
             baselines: bool = True, guidance: float | None = None, chunk: int = 64, assets=ASSETS,
             weak_mode: str | None = None, lead: int | None = None, paraphrase: str | None = None) -> dict:
    """`paraphrase` ("trained" or "held-out", text models): captions in other words than the canonical ones."""
    spec = get_spec(name)
    steps = steps or spec.steps
    guidance = spec.guidance if guidance is None else guidance
    synonyms = PARAPHRASES[paraphrase] if paraphrase else None
    if synonyms and spec.conditioning != "text":
        raise ValueError(f"{name} is class-conditioned: paraphrased captions need a text model")
    judge = load_judge(assets / "judge.safetensors")
    real, scenes, conditions = eval_set(spec, n, synonyms=synonyms)
    real_feats = judge_pixels(judge, spec, real)[1]
    reference, _, _ = eval_set(spec, n, offset=EVAL_SEED + 1_000_000)  # real vs real: the noise floor
    seeds = list(range(n))
    mode = weak_mode or next(iter(spec.weak_patches))
    if mode not in spec.weak_patches:
        raise ValueError(f"{name} has no weak mode {mode!r}; choose one of {', '.join(spec.weak_patches)}")
    lead = spec.lead_steps(mode, steps) if lead is None else lead
    wants = [requested(spec, s, c) for s, c in zip(scenes, conditions)]
    # real data: the judge's reading of the evaluation set itself; its Fréchet distance from a second real set
    rows = [{"variant": "-", "method": "real data", "budget": None, "flops_ratio": None,
             **score(judge, spec, real, wants, real_feats, None),
             "fd": frechet_distance(judge_pixels(judge, spec, reference)[1], real_feats)}]
    static_pixels, static_flops = None, None

    def add(model, variant, method, budget, schedule):
        pixels, flops, seconds = _run(model, condition, schedule, seeds, guidance, chunk,
                                      f"{variant} {method} {budget}")
        rows.append({"variant": variant, "method": method, "budget": budget, "schedule": schedule.label,
                     "flops_ratio": flops / static_flops, "seconds": seconds,
                     **score(judge, spec, pixels, wants, real_feats, static_pixels)})
        return pixels, flops

    for variant in variants:
        try:
            model = load_model(name, variant, assets=assets)
        except FileNotFoundError:
            continue
        if not model.flexify_trained:
            continue
        condition = encode_condition(model, **({"class_label": conditions} if spec.conditioning == "class"
                                               else {"prompt": conditions}))
        if static_pixels is None:  # the static model is the original one (the LoRA variant's native size)
            static = Schedule.static(steps, mode)
            static_flops = schedule_flops(model, static, guidance) * n
            static_pixels, _ = add(model, "-", "static", 1.0, static)
            rows[-1].update(psnr=None, ssim=None)
        for budget in [b for b in budgets if b < 1]:
            try:
                schedule = budget_schedule(model, budget, steps, guidance, mode, lead)
            except ValueError:  # below the weak model's own cost: not reachable by FlexiDiT
                continue
            add(model, variant, "FlexiDiT", budget, schedule)
            if baselines and variant == variants[0]:
                add(model, "-", "reverse (weak last)", budget,
                    dataclasses.replace(schedule, weak_last=True))
                fewer = max(1, int(budget * steps))  # floor: the baseline stays within its budget
                add(model, "-", f"static, {fewer} steps", budget, Schedule.static(fewer, mode))
        if baselines and variant == variants[0]:
            add(model, "-", "weak model alone", None, Schedule(steps, 0, 0, mode))
    return {"model": name, "weak_mode": mode, "weak_patch": list(spec.weak_patches[mode]),
            "lead": lead, "paraphrase": paraphrase, "samples": n,
            "steps": steps, "guidance": guidance, "rows": rows}


def _schedule_note(result: dict) -> str:
    """Names the weak patch where a model has several (video: temporal or spatial; image models have one) and the
    leading native steps of the budget schedules, if any."""
    mode, note = result.get("weak_mode"), ""
    if mode not in (None, "weak"):
        note += f", weak patch `{mode}` ({','.join(map(str, result['weak_patch']))})"
    if result.get("lead"):
        note += f", budgets lead with up to {result['lead']} native steps"
    if result.get("paraphrase"):
        note += f", captions in {result['paraphrase']} synonyms"
    return note


def markdown_table(result: dict) -> str:
    lines = [f"**{result['model']}**{_schedule_note(result)} — {result['samples']} samples, "
             f"{result['steps']} DDIM steps, guidance {result['guidance']}",
             "", "| variant | method | target budget | FLOPs | judge accuracy | Fréchet dist. | PSNR | SSIM |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
        lines.append(f"| {r['variant']} | {r['method']} | {fmt(r['budget'], '.0%')} | {fmt(r['flops_ratio'], '.0%')} "
                     f"| {r['accuracy']:.1%} | {r['fd']:.2f} | {fmt(r.get('psnr'), '.1f')} | "
                     f"{fmt(r.get('ssim'), '.3f')} |")
    return "\n".join(lines)
