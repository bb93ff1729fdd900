"""Quality vs FLOPs of the embedded models, scored by the judge.

For fixed seeds and procedural conditions: the judge's accuracy on the requested attributes, the Fréchet distance
in the judge's feature space against real procedural samples, and the agreement (PSNR, SSIM) with the static sample
of the same seed — for the static model, FlexiDiT at several budgets (both variants), and three baselines at equal
FLOPs: the static model with fewer steps, the reverse schedule (weak model last) and the weak model alone.
The pieces (Setting: evaluation set, judge, sampling and scoring) also serve the step-count sweep of frontier.py.
`quality_verdict` reads a result as wins and losses against the baselines, `quality_plot` draws it (bench).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from . import data
from ..errors import FlexiDiTError
from ..inputs import SAMPLERS
from .judge import Judge, load_judge
from ..loading import load_model
from ..metrics import frechet_distance, psnr, ssim
from ..registry import ASSETS, ModelSpec, get_spec
from ..sampling import budget_schedule, encode_condition, sample, schedule_flops
from ..schedule import Schedule

BUDGETS = (1.0, 0.75, 0.55, 0.40, 0.25)
EVAL_SEED = data.SEEDS["evaluate"]
PARAPHRASES = {"trained": data.SYNONYMS, "held-out": data.HELD_OUT_SYNONYMS}
# what must read alike on a flexible and a static sample of the same seed for "the same picture"
SAME_READING = {"image": ("colour", "shape", "background"), "video": ("colour", "shape", "direction")}


def same_reading(spec: ModelSpec) -> tuple[str, ...]:
    """SAME_READING of the model's modality, and the texture on the textured models."""
    return SAME_READING[spec.modality] + (("texture",) if spec.textured else ())


def eval_set(spec, n: int, offset: int = EVAL_SEED, synonyms: dict | None = None):
    """n procedural items: (real pixels, scenes, conditions); classes are balanced for the class model.

    `synonyms` (data.SYNONYMS or data.HELD_OUT_SYNONYMS): every caption names colour and shape in those words."""
    video = spec.modality == "video"
    words = {"paraphrase": 1.0, "synonyms": synonyms} if synonyms else {}
    classes = len(data.class_names(spec.textured))
    items = [data.sample(offset + i, class_id=i % classes, video=video, textured=spec.textured, **words)
             for i in range(n)]
    pixels = np.stack([p for p, _, _ in items])
    scenes = [s for _, s, _ in items]
    conditions = [spec.class_of(s) for s in scenes] if spec.conditioning == "class" else [c for _, _, c in items]
    return pixels, scenes, conditions


def requested(spec, scene, condition: str) -> dict:
    """The attributes a condition asks for: colour and shape always (and a textured class model's texture), the
    rest when the caption names them (a caption names no plain texture)."""
    want = {"colour": scene.colour, "shape": scene.shape}
    if spec.textured and spec.conditioning == "class":
        want["texture"] = scene.texture
    if spec.conditioning == "text":
        named = {"background": scene.background, "size": scene.size_word}
        if spec.textured:
            named["texture"] = scene.texture
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


def weak_mode_of(spec, weak_mode: str | None) -> str:
    mode = weak_mode or next(iter(spec.weak_patches))
    if mode not in spec.weak_patches:
        raise FlexiDiTError(f"{spec.name} has no weak mode {mode!r}; choose one of {', '.join(spec.weak_patches)}")
    return mode


def scored_models(name: str, variants, assets=ASSETS):
    """(native, [(variant, model)]): the model whose native path gives the static rows, and each variant with flexify
    weights (the others are skipped: nothing to evaluate). A model not yet flexified still has its static rows, so a
    freshly trained transformer can be scored before `flexify`."""
    trained = []
    for variant in variants:
        try:
            model = load_model(name, variant, assets=assets)
        except FileNotFoundError:
            continue
        if model.flexify_trained:
            trained.append((variant, model))
    return (trained[0][1] if trained else load_model(name, variants[0], assets=assets, fresh=True)), trained


@dataclasses.dataclass
class Setting:
    """What every row of one evaluation shares: the evaluation set (seeds 0..n-1), the judge, guidance, sampler."""
    spec: ModelSpec
    judge: Judge
    conditions: list
    wants: list[dict]
    real_feats: np.ndarray
    guidance: float
    sampler: str
    chunk: int = 64

    @classmethod
    def load(cls, name: str, n: int, guidance: float | None = None, sampler: str | None = None, chunk: int = 64,
             assets=ASSETS, paraphrase: str | None = None) -> tuple["Setting", dict]:
        """The setting and the "real data" row: the judge's reading of the evaluation set itself and its Fréchet
        distance from a second real set (the noise floor). `paraphrase` ("trained" or "held-out", text models):
        captions in other words than the canonical ones."""
        spec = get_spec(name)
        sampler = spec.sampler if sampler is None else sampler
        synonyms = PARAPHRASES[paraphrase] if paraphrase else None
        if synonyms and spec.conditioning != "text":
            raise FlexiDiTError(f"{name} is class-conditioned: paraphrased captions need a text model")
        if sampler not in SAMPLERS:
            raise FlexiDiTError(f"sampler must be one of {', '.join(SAMPLERS)}, not {sampler!r}")
        judge = load_judge(assets / spec.judge)
        if spec.textured and "texture" not in judge.heads:
            raise FlexiDiTError(f"{name} draws textures and this judge reads none: train one that does with "
                                "`python -m flexi_core train --model judge-texture --export`")
        real, scenes, conditions = eval_set(spec, n, synonyms=synonyms)
        wants = [requested(spec, s, c) for s, c in zip(scenes, conditions)]
        setting = cls(spec, judge, conditions, wants, judge_pixels(judge, spec, real)[1],
                      spec.guidance if guidance is None else guidance, sampler, chunk)
        reference, _, _ = eval_set(spec, n, offset=EVAL_SEED + 1_000_000)
        real_row = {"variant": "-", "method": "real data", "budget": None, "flops_ratio": None,
                    **setting.score(real)[0],
                    "fd": frechet_distance(judge_pixels(judge, spec, reference)[1], setting.real_feats)}
        return setting, real_row

    def condition(self, model):
        return encode_condition(model, **({"class_label": self.conditions} if self.spec.conditioning == "class"
                                          else {"prompt": self.conditions}))

    def run(self, model, condition, schedule: Schedule, progress_label: str = ""):
        """Pixels of every seed, their total FLOPs and denoising seconds; batched in chunks."""
        from tqdm import tqdm
        seeds = list(range(len(self.conditions)))
        pixels, flops, seconds = [], 0, 0.0
        for start in tqdm(range(0, len(seeds), self.chunk), desc=progress_label, leave=False):
            part = slice(start, start + self.chunk)
            cond = type(condition)({k: v[part] for k, v in condition.cond.items()},
                                   {k: v[part] for k, v in condition.uncond.items()}, condition.text)
            s = sample(model, cond, schedule, seeds[part], self.guidance, self.sampler)
            pixels.append(s.pixels)
            flops, seconds = flops + s.flops, seconds + s.seconds
        return np.concatenate(pixels), flops, seconds

    def score(self, pixels, static=None) -> tuple[dict, list[dict]]:
        """The row's scores and the judge's readings. `static` (pixels, readings) of the static run of the same
        seeds adds the agreement with it: PSNR, SSIM and the share of seeds whose SAME_READING attributes the
        judge reads alike on both."""
        reads, feats = judge_pixels(self.judge, self.spec, pixels)
        wants = self.wants
        per_attr = {k: float(np.mean([r[k] == w[k] for r, w in zip(reads, wants) if k in w]))
                    for k in sorted({k for w in wants for k in w})}
        out = {"accuracy": float(np.mean([all(r[k] == v for k, v in w.items()) for r, w in zip(reads, wants)])),
               "attributes": per_attr, "fd": frechet_distance(feats, self.real_feats),
               "psnr": None, "ssim": None, "same_reading": None}
        if static is not None:
            static_pixels, static_reads = static
            keys = same_reading(self.spec)
            out["psnr"] = float(np.mean([min(psnr(a, b), 100.0) for a, b in zip(static_pixels, pixels)]))
            out["ssim"] = float(np.mean([ssim(a, b) for a, b in zip(static_pixels, pixels)]))
            out["same_reading"] = float(np.mean([all(a[k] == b[k] for k in keys)
                                                 for a, b in zip(static_reads, reads)]))
        return out, reads


def evaluate(name: str, n: int = 256, steps: int | None = None, budgets=BUDGETS, variants=("lora", "shared"),
             baselines: bool = True, guidance: float | None = None, chunk: int = 64, assets=ASSETS,
             weak_mode: str | None = None, lead: int | None = None, paraphrase: str | None = None,
             sampler: str | None = None, weak_guidance: bool | None = None) -> dict:
    """`paraphrase` ("trained" or "held-out", text models): captions in other words than the canonical ones;
    `weak_guidance` (True / False): the weak steps with / without guidance (default: the model's rule)."""
    setting, real_row = Setting.load(name, n, guidance, sampler, chunk, assets, paraphrase)
    spec, guidance, sampler = setting.spec, setting.guidance, setting.sampler
    steps = steps or spec.steps
    mode = weak_mode_of(spec, weak_mode)
    lead = spec.lead_steps(mode, steps) if lead is None else lead
    rows = [real_row]
    native, models = scored_models(name, variants, assets)

    def add(model, condition, variant, method, budget, schedule, against=None):
        """Runs and scores one row; `against` (the static run's pixels and readings) adds same-seed agreement."""
        pixels, flops, seconds = setting.run(model, condition, schedule, f"{variant} {method} {budget}")
        row, reads = setting.score(pixels, against)
        rows.append({"variant": variant, "method": method, "budget": budget, "schedule": schedule.label,
                     "flops_ratio": flops / static_flops, "seconds": seconds, **row})
        return pixels, reads

    static, native_condition = Schedule.static(steps, mode), setting.condition(native)
    static_flops = schedule_flops(native, static, guidance) * n
    # the static row: the native size of the first flexified variant (LoRA: the original model exactly); every later
    # row is scored against it (same seeds)
    static_run = add(native, native_condition, "-", "static", 1.0, static)
    for variant, model in models:
        condition = setting.condition(model)
        for budget in [b for b in budgets if b < 1]:
            try:
                schedule = budget_schedule(model, budget, steps, guidance, mode, lead, sampler, weak_guidance)
            except ValueError:  # below the weak model's own cost: not reachable by FlexiDiT
                continue
            add(model, condition, variant, "FlexiDiT", budget, schedule, static_run)
            if baselines and variant == models[0][0]:
                add(model, condition, "-", "reverse (weak last)", budget, dataclasses.replace(schedule, weak_last=True),
                    static_run)
                fewer = max(1, int(budget * steps))  # floor: the baseline stays within its budget
                add(native, native_condition, "-", f"static, {fewer} steps", budget, Schedule.static(fewer, mode),
                    static_run)
        if baselines and variant == models[0][0]:
            add(model, condition, "-", "weak model alone", None, Schedule(steps, 0, 0, mode), static_run)
    return {"model": name, "weak_mode": mode, "weak_patch": list(spec.weak_patches[mode]),
            "lead": lead, "weak_guidance": weak_guidance, "paraphrase": paraphrase, "samples": n, "sampler": sampler,
            "steps": steps, "guidance": guidance, "variants": [v for v, _ in models], "rows": rows}


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
             f"{result['steps']} {SAMPLERS[result.get('sampler', 'ddim')]} steps, guidance {result['guidance']}",
             "", "| variant | method | target budget | FLOPs | judge accuracy | Fréchet dist. | PSNR | SSIM "
             "| same reading |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['method']} | {fmt(r['budget'], '.0%')} | {fmt(r['flops_ratio'], '.0%')} "
                     f"| {r['accuracy']:.1%} | {r['fd']:.2f} | {fmt(r.get('psnr'), '.1f')} | "
                     f"{fmt(r.get('ssim'), '.3f')} | {fmt(r.get('same_reading'), '.0%')} |")
    return "\n".join(lines)


def fmt(value, spec: str) -> str:
    """A table cell: the value in `spec`'s format, or a dash when there is none."""
    return "–" if value is None else format(value, spec)


def _same(a: float, b: float, tol: float) -> int:
    """+1 if a is better (higher) by more than tol, -1 if worse, 0 if within tol."""
    return 0 if abs(a - b) <= tol else (1 if a > b else -1)


def quality_verdict(result: dict) -> dict:
    """Compares every FlexiDiT row with the baselines at the same target budget and with the static model.
    Tolerances come from the data: accuracy within 2 binomial standard errors of the difference (at least one
    sample), Fréchet distance within the real-vs-real distance or 5%, whichever is larger."""
    rows, n = result["rows"], result["samples"]
    real = next((r for r in rows if r["method"] == "real data"), None)
    fd_floor = real["fd"] if real else 0.0
    static = next((r for r in rows if r["method"] == "static"), None)

    def acc_tol(p, q):
        return max(2 * math.sqrt(p * (1 - p) / n + q * (1 - q) / n), 1 / n)

    def fd_tol(a, b):
        return max(fd_floor, 0.05 * max(a, b))

    def compare(f, b) -> dict:
        acc = _same(f["accuracy"], b["accuracy"], acc_tol(f["accuracy"], b["accuracy"]))
        fd = -_same(f["fd"], b["fd"], fd_tol(f["fd"], b["fd"]))  # lower is better
        verdict = "tie" if acc == fd == 0 else "wins" if min(acc, fd) >= 0 else "loses" if max(acc, fd) <= 0 \
            else "mixed"
        return {"against": b["method"], "against_flops": b["flops_ratio"], "verdict": verdict,
                "accuracy": (f["accuracy"], b["accuracy"]), "fd": (f["fd"], b["fd"])}

    comparisons, lines = [], []
    flexi = [r for r in rows if r["method"] == "FlexiDiT"]
    weak_alone = next((r for r in rows if r["method"] == "weak model alone"), None)

    def all_weak(r):  # a 0/0 schedule is the weak model alone, whatever the order
        return str(r.get("schedule", "")).startswith("0/0")

    for f in flexi:
        for b in rows:
            if b["method"] in ("FlexiDiT", "static", "real data", "weak model alone") or b["budget"] != f["budget"]:
                continue
            if all_weak(f) and b["method"].startswith("reverse"):
                continue  # the same sampling run: nothing to compare
            comparisons.append({"variant": f["variant"], "budget": f["budget"], "flops": f["flops_ratio"],
                                **compare(f, b)})
    if weak_alone:
        for variant in sorted({f["variant"] for f in flexi}):
            mixed = [f for f in flexi if f["variant"] == variant and not all_weak(f)]
            if mixed:  # the cheapest schedule that still has native steps
                cheapest = min(mixed, key=lambda f: f["flops_ratio"])
                comparisons.append({"variant": variant, "budget": cheapest["budget"],
                                    "flops": cheapest["flops_ratio"], **compare(cheapest, weak_alone)})
    for c in comparisons:
        lines.append(f"{c['variant']} FlexiDiT at {c['flops']:.0%} FLOPs vs {c['against']} "
                     f"({c['against_flops']:.0%} FLOPs): **{c['verdict']}** — accuracy {c['accuracy'][0]:.1%} vs "
                     f"{c['accuracy'][1]:.1%}, Fréchet distance {c['fd'][0]:.2f} vs {c['fd'][1]:.2f}")
    summary = []
    for variant in sorted({f["variant"] for f in flexi}):
        mine = [c for c in comparisons if c["variant"] == variant]
        counts = {v: sum(c["verdict"] == v for c in mine) for v in ("wins", "tie", "mixed", "loses")}
        text = (f"{variant}: FlexiDiT wins {counts['wins']} of {len(mine)} equal-budget comparisons with the "
                f"baselines, ties {counts['tie']}, is mixed in {counts['mixed']} and loses {counts['loses']}"
                if mine else f"{variant}: no baseline rows to compare with (evaluated with --no-baselines)")
        where_not = [f"{c['against']} at {c['flops']:.0%}" for c in mine if c["verdict"] in ("loses", "mixed")]
        if where_not:
            text += f"; it does not win against: {', '.join(where_not)}"
        if static:  # walk down the budgets while FlexiDiT stays as good as the static model
            kept = None
            for f in sorted((f for f in flexi if f["variant"] == variant), key=lambda f: -f["flops_ratio"]):
                if compare(f, static)["verdict"] not in ("tie", "wins"):
                    break
                kept = f
            text += (f"; it matches the static model (within noise) down to {kept['flops_ratio']:.0%} FLOPs"
                     if kept else "; it is below the static model already at its highest reduced budget")
        summary.append(text)
    return {"comparisons": comparisons, "lines": lines, "summary": summary,
            "tolerances": {"accuracy": "2 standard errors of the difference, at least 1/n",
                           "fd": f"max(real-vs-real {fd_floor:.3f}, 5%)"}}


def quality_plot(result: dict, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    series = {}
    for r in rows:
        if r["method"] == "FlexiDiT":
            key = f"FlexiDiT ({r['variant']})"
        elif r["method"].startswith("static,"):
            key = "static, fewer steps"
        elif r["method"] in ("reverse (weak last)", "weak model alone", "static"):
            key = r["method"]
        else:
            continue
        series.setdefault(key, []).append(r)
    styles = {"FlexiDiT (lora)": "o-", "FlexiDiT (shared)": "s-", "static, fewer steps": "^--",
              "reverse (weak last)": "v:", "weak model alone": "kx", "static": "k*"}
    real = next((r for r in rows if r["method"] == "real data"), None)
    for ax, metric, label in ((axes[0], "accuracy", "judge accuracy (higher is better)"),
                              (axes[1], "fd", "Fréchet distance (lower is better)")):
        for key, rs in series.items():
            pts = sorted((r["flops_ratio"], r[metric]) for r in rs)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], styles.get(key, "o-"), label=key, markersize=7)
        if real:
            ax.axhline(real[metric], color="grey", lw=0.8, ls="--", label="real data")
        ax.set_xlabel("FLOPs / static FLOPs")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{quality_key(result)}: quality vs FLOPs ({result['samples']} samples, {result['steps']} steps)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def quality_key(result: dict) -> str:
    """One entry per model and weak patch: a video model is evaluated once per weak mode; a frontier sweep
    (frontier.py) once per sampler too."""
    mode = result.get("weak_mode")
    key = result["model"] if mode in (None, "weak") else f"{result['model']}-{mode}"
    return f"frontier-{key}-{result['sampler']}" if result.get("kind") == "frontier" else key
