"""`python -m flexi_core bench`: FLOPs, wall-clock, quality and memory of flexible vs static, side by side.

1. FLOPs anchors (formula and torch's counter on the meta device, no weights): DiT-XL/2 at 256 px against the DiT
   paper, and which number of weak steps gives the FlexiDiT paper's 64% / 46% / 29% of the static FLOPs.
2. Wall-clock vs FLOPs: seconds per native / weak step, per full sample at several budgets, realised speed-up over
   ideal (FLOPs) speed-up, and the flexible wrapper's overhead at the native patch vs the plain diffusers model.
   Every ratio is paired: the things compared run alternately in the same process, same inputs, same seeds.
3. Quality vs FLOPs from `evaluate` (judge accuracy, Fréchet distance) as curves, with a verdict read off the numbers.
4. Memory: peak resident memory of static / flexible (LoRA unmerged) / flexible (merged copies) / shared, each in a
   fresh process (VmHWM of that process, which, unlike ru_maxrss, is not inherited from the parent through exec),
   minus a process that only imports; plus the parameter bytes of each configuration.

Writes bench.json, bench.md and PNG plots into the output folder and prints the markdown.
"""
from __future__ import annotations

import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import registry
from .flexible import NATIVE, FlexibleTransformer
from .flops import counted_flops, spec_flops
from .schedule import Schedule, schedule_for_budget, total_flops

BUDGETS = (1.0, 0.75, 0.55, 0.40, 0.25)
SECTIONS = ("flops", "wallclock", "quality", "memory")
DIT_PAPER_GMACS = {2: 118.6, 4: 29.1, 8: 7.4}  # Peebles & Xie, Table 4 ("Gflops" there are multiply-adds)
PAPER_TARGETS = (0.64, 0.46, 0.29)  # FlexiDiT, ImageNet 256, DiT-XL/2, 250 steps (FID 2.25 / 2.64 / 3.24)
PAPER_SCHEDULES = ("70/70", "90/50")  # schedules the paper names in x/y notation, 250 steps
EMBEDDED = ("shapes", "shapes-text", "shapes-video")
BIG = ("dit-xl-2-256", "pixart-alpha-256")
# which flexible configurations each architecture is timed in; sweep = full samples at every budget
BIG_CONFIGS = {"dit-xl-2-256": (("shared", True),),  # the paper's ImageNet model is the shared variant
               "pixart-alpha-256": (("lora", True), ("lora-merged", False))}
EMBEDDED_CONFIGS = (("lora", True), ("lora-merged", True), ("shared", True))
PUBLIC_SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                        clip_sample=False, prediction_type="epsilon")
QUICK_LAYERS = 2  # quick mode times DiT-XL/2's width and token counts with 2 of its 28 layers
REPO = Path(__file__).resolve().parent.parent


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# --- 1. FLOPs anchors ---------------------------------------------------------------------------------------------

def _meta_counted(spec, patch_size: int) -> int:
    """FlopCounterMode on a meta-device model built at `patch_size` (DiT-XL/2, /4, /8 are separate models)."""
    with torch.device("meta"):
        model = registry.build_transformer(spec, patch_size=patch_size)
        x, t, y = torch.randn(1, *spec.latent_shape), torch.tensor([5]), torch.tensor([3])
    return counted_flops(lambda: model(x, t, y))


def _meta_flexible_counted(spec, variant: str, lora_rank: int) -> dict:
    """Counted FLOPs of the flexible wrapper itself (native and weak), built and run on the meta device."""
    with torch.device("meta"):
        flex = FlexibleTransformer(registry.build_transformer(spec), spec.weak_patches, variant, lora_rank)
        x = torch.randn(1, *spec.latent_shape)
        t = torch.tensor([5])
        if spec.family == "dit":
            cond = {"class_labels": torch.tensor([3])}
        else:
            cond = {"encoder_hidden_states": torch.randn(1, spec.text_tokens, spec.config["caption_channels"]),
                    "encoder_attention_mask": torch.ones(1, spec.text_tokens)}
    return {mode: counted_flops(lambda m=mode: flex(x, t, cond, m)) for mode in flex.patches}


def _ratio(schedule: Schedule, flops_of: dict, guidance: bool) -> float:
    return total_flops(schedule, flops_of, guidance) / total_flops(Schedule.static(schedule.steps), flops_of,
                                                                    guidance)


def flops_anchors(count: bool = True) -> dict:
    spec = registry.get_spec("dit-xl-2-256")
    rows = []
    for p, paper in DIT_PAPER_GMACS.items():
        formula = spec_flops(spec, (1, p, p))
        counted = _meta_counted(spec, p) if count else None
        rows.append({"patch": p, "tokens": (32 // p) ** 2, "gflops": formula / 1e9, "gmacs": formula / 2e9,
                     "counted_gflops": counted / 1e9 if counted else None, "paper_gmacs": paper,
                     "rel_error": formula / 2e9 / paper - 1})
    flexible = []
    if count:
        for name, variant, rank in (("dit-xl-2-256", "shared", 0), ("pixart-alpha-256", "lora", 32)):
            s = registry.get_spec(name)
            counted = _meta_flexible_counted(s, variant, rank or 8)
            for mode, value in counted.items():
                patch = s.native_patch if mode == NATIVE else s.weak_patches[mode]
                formula = spec_flops(s, patch, lora_rank=0 if mode == NATIVE else rank)
                flexible.append({"model": name, "variant": variant, "lora_rank": rank, "mode": mode,
                                 "patch": list(patch), "formula_gflops": formula / 1e9, "counted_gflops": value / 1e9,
                                 "rel_error": formula / value - 1})
    flops_of = {NATIVE: spec_flops(spec, (1, 2, 2)), "weak": spec_flops(spec, (1, 4, 4))}
    steps = spec.steps
    schedules = []
    for target in PAPER_TARGETS:
        for guidance in (False, True):
            # symmetric x/x: the weak model for the first T_weak steps of both passes
            ratios = [(_ratio(Schedule(steps, steps - w, steps - w), flops_of, guidance), w) for w in range(steps + 1)]
            ratio, t_weak = min(ratios, key=lambda rw: abs(rw[0] - target))
            within = schedule_for_budget(target, steps, flops_of, guidance)
            row = {"target": target, "guidance": guidance, "kind": "x/x", "t_weak": t_weak,
                   "schedule": f"{steps - t_weak}/{steps - t_weak}", "ratio": ratio,
                   "within_budget_t_weak": within.weak_steps, "within_budget_ratio": _ratio(within, flops_of, guidance)}
            schedules.append(row)
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
    examples = [{"schedule": s, "guidance": True, "ratio": _ratio(Schedule.parse(s, steps), flops_of, True)}
                for s in PAPER_SCHEDULES]
    return {"model": "dit-xl-2-256", "steps": steps, "weak_over_native": flops_of["weak"] / flops_of[NATIVE],
            "dit_xl2": rows, "flexible_counted": flexible, "schedules": schedules, "paper_schedules": examples}


# --- models for timing and memory ---------------------------------------------------------------------------------

class StaticDenoiser(torch.nn.Module):
    """The plain diffusers model behind the interface `sample` uses: native patch only, no flexible parts."""
    variant, lora_rank, merged = "shared", 0, False

    def __init__(self, base):
        super().__init__()
        from .families import family_of
        self.base, self.family = base, family_of(base)
        self.patches = {NATIVE: self.family.native_patch}
        self._merged = {}

    @property
    def weak_modes(self):
        return {}

    def forward(self, x, timestep, cond, mode=NATIVE):
        return self.family.native_forward(x, timestep, cond)


def _base(spec, layers: int | None):
    if spec.embedded:
        folder = registry.ASSETS / spec.name / "transformer"
        if not (folder / "diffusion_pytorch_model.safetensors").exists():
            raise FileNotFoundError(f"weights of {spec.name} not found at {folder}")
        return registry.transformer_class(spec).from_pretrained(folder, torch_dtype=torch.float32,
                                                                use_safetensors=True)
    return registry.build_transformer(spec, **({"num_layers": layers} if layers else {}))


def build_model(name: str, config: str, layers: int | None = None, plain_copy: bool = False):
    """(LoadedModel without VAE / text encoder, plain diffusers copy or None) for config static | shared | lora |
    lora-merged. Embedded models load assets/ (their flexify file when there is one); public architectures get
    random weights (timing and memory do not depend on the values)."""
    from .loading import LoadedModel, _flexible
    spec = registry.get_spec(name)
    base = _base(spec, layers).eval()
    plain = copy.deepcopy(base).requires_grad_(False) if plain_copy else None
    trained = False
    if config == "static":
        flexible = StaticDenoiser(base)
    else:
        variant = "lora" if config.startswith("lora") else "shared"
        file = registry.ASSETS / name / f"flexify-{variant}.safetensors" if spec.embedded else None
        flexible, trained = _flexible(base, spec, variant, file, lora_rank=8 if spec.embedded else 32)
        if config == "lora-merged":
            flexible.merge_adapters()
    flexible.eval().requires_grad_(False)
    model = LoadedModel(spec, flexible, None, None, spec.scheduler or PUBLIC_SCHEDULER, trained, spec.vae_scale)
    return model, plain


def random_condition(model, seed: int = 0):
    """Conditioning of the right shapes: a class label, or random text-encoder states (values do not matter for
    timing)."""
    from .sampling import Condition
    spec, config = model.spec, model.flexible.base.config
    g = torch.Generator().manual_seed(seed)
    if spec.conditioning == "class":
        return Condition({"class_labels": torch.tensor([1])},
                         {"class_labels": torch.tensor([config.num_embeds_ada_norm])}, "class 1")
    if spec.family == "pixart":
        dim = config.caption_channels
        states = torch.randn(2, spec.text_tokens, dim, generator=g)
        mask = torch.ones(1, spec.text_tokens, dtype=torch.long)
        return Condition({"encoder_hidden_states": states[:1], "encoder_attention_mask": mask},
                         {"encoder_hidden_states": states[1:], "encoder_attention_mask": mask}, "random text")
    states = torch.randn(2, spec.text_tokens, config.text_embed_dim, generator=g)
    return Condition({"encoder_hidden_states": states[:1]}, {"encoder_hidden_states": states[1:]}, "random text")


def param_bytes(flexible) -> int:
    seen, total = set(), 0
    modules = [flexible] + [f.model for f in getattr(flexible, "_merged", {}).values()]
    for module in modules:
        for p in module.parameters():
            if p.data_ptr() not in seen:
                seen.add(p.data_ptr())
                total += p.numel() * p.element_size()
    return total


# --- 2. wall-clock ------------------------------------------------------------------------------------------------

def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _rounds(round_fn, repeats: int, min_seconds: float, max_repeats: int = 25) -> int:
    """At least `repeats` rounds, more (up to `max_repeats`) while they have taken less than `min_seconds`: cheap
    measurements get more repeats, so their medians hold up against other load on a shared machine."""
    start, r = time.perf_counter(), 0
    while r < repeats or (r < max_repeats and time.perf_counter() - start < min_seconds):
        round_fn(r)
        r += 1
    return r


def _paired_median(a: list, b: list) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


@torch.no_grad()
def time_config(model, plain, batch: int, steps: int, repeats: int, budgets, sweep: bool,
                min_seconds: float = 0.0) -> dict:
    """Per-step forwards (native, weak, plain diffusers) and, with `sweep`, full samples at every budget; the
    things compared alternate inside each repeat (order rotated) after one warm-up call each."""
    from .families import family_of
    from .sampling import budget_schedule, sample
    spec, flex = model.spec, model.flexible
    guidance = spec.guidance
    weak = next(iter(flex.weak_modes))
    condition = random_condition(model)
    rows = 2 * batch if guidance > 1 else batch  # a guided step is one batched forward of cond + uncond
    x = torch.randn(rows, *spec.latent_shape, generator=torch.Generator().manual_seed(0))
    t = torch.full((rows,), 500)
    both = {k: torch.cat([condition.cond[k].expand(batch, *condition.cond[k].shape[1:]),
                          condition.uncond[k].expand(batch, *condition.uncond[k].shape[1:])])
            for k in condition.cond} if guidance > 1 else \
        {k: v.expand(batch, *v.shape[1:]) for k, v in condition.cond.items()}
    calls = {NATIVE: lambda: flex(x, t, both, NATIVE), weak: lambda: flex(x, t, both, weak)}
    if plain is not None:
        plain_family = family_of(plain)
        calls["plain"] = lambda: plain_family.native_forward(x, t, both)
    names = list(calls)
    for name in names:
        calls[name]()
    seconds = {name: [] for name in names}

    def forward_round(r):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].append(_timed(calls[name]))

    done = _rounds(forward_round, repeats, min_seconds)
    flops_of = model.flops_of(rows)
    out = {"batch": batch, "rows_per_forward": rows, "guidance": guidance, "repeats": done,
           "native_step_s": statistics.median(seconds[NATIVE]), "weak_step_s": statistics.median(seconds[weak]),
           "weak_mode": weak, "native_gflops": flops_of[NATIVE] / 1e9, "weak_gflops": flops_of[weak] / 1e9}
    out["native_gflops_per_s"] = out["native_gflops"] / out["native_step_s"]
    out["weak_gflops_per_s"] = out["weak_gflops"] / out["weak_step_s"]
    out["step_speedup"] = out["native_step_s"] / out["weak_step_s"]
    out["step_ideal_speedup"] = flops_of[NATIVE] / flops_of[weak]
    out["step_efficiency"] = out["step_speedup"] / out["step_ideal_speedup"]
    if plain is not None:
        out["plain_step_s"] = statistics.median(seconds["plain"])
        out["wrapper_overhead"] = _paired_median(seconds[NATIVE], seconds["plain"]) - 1
    if not sweep:
        return out
    seeds = list(range(batch))
    schedules, budget_rows = {}, []
    for b in budgets:
        try:
            s = budget_schedule(model, b, steps, guidance, weak)
        except ValueError as e:  # below what the weak model alone costs
            budget_rows.append({"budget": b, "unreachable": str(e)})
            continue
        schedules.setdefault(s.label, s)
        budget_rows.append({"budget": b, "schedule": s.label, "key": s.label})
    static = Schedule.static(steps, weak)
    static_key = static.label
    schedules.setdefault(static_key, static)
    keys = list(schedules)
    sample(model, condition, Schedule(1, 1, 1, weak), seeds, guidance, decode=False)  # warm-up both paths
    sample(model, condition, Schedule(1, 0, 0, weak), seeds, guidance, decode=False)
    runs = {k: [] for k in keys}
    flops = {}
    def sample_round(r):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            s = sample(model, condition, schedules[k], seeds, guidance, decode=False)
            runs[k].append(s.seconds)
            flops[k] = s.flops

    sample_repeats = _rounds(sample_round, repeats, min_seconds)
    for row in budget_rows:
        k = row.pop("key", None)
        if k is None:
            continue
        row.update(flops_ratio=flops[k] / flops[static_key], seconds=statistics.median(runs[k]),
                   speedup=_paired_median(runs[static_key], runs[k]), ideal_speedup=flops[static_key] / flops[k])
        row["efficiency"] = row["speedup"] / row["ideal_speedup"]
    out.update(steps=steps, sample_repeats=sample_repeats, static_sample_s=statistics.median(runs[static_key]),
               budgets=budget_rows)
    return out


def wallclock(models, quick: bool, batches, repeats: int, steps_small: int, steps_big: int, budgets) -> dict:
    rows, skipped = [], []
    for name in models:
        spec = registry.get_spec(name)
        layers = None
        if spec.embedded:
            configs = EMBEDDED_CONFIGS[:1] if quick else EMBEDDED_CONFIGS
            steps, model_batches = steps_small, batches
            if not (registry.ASSETS / name / "transformer" / "diffusion_pytorch_model.safetensors").exists():
                skipped.append(f"{name}: no weights in {registry.ASSETS / name} (train and export it first)")
                continue
        elif name in BIG_CONFIGS:
            configs, steps, model_batches = BIG_CONFIGS[name], steps_big, batches
            if quick:
                if name != "dit-xl-2-256":
                    skipped.append(f"{name}: left out in quick mode")
                    continue
                configs, layers, model_batches = (("shared", False),), QUICK_LAYERS, (1,)
        else:
            skipped.append(f"{name}: not timed (the benchmark times the embedded models, DiT-XL/2 and PixArt-alpha)")
            continue
        for config, sweep in configs:
            log(f"bench: timing {name} [{config}]" + (f" with {layers} layers" if layers else ""))
            model, plain = build_model(name, config, layers, plain_copy=True)
            for batch in model_batches:
                try:
                    r = time_config(model, plain, batch, steps, repeats, budgets, sweep,
                                    min_seconds=0.5 if quick else 10.0)
                except FloatingPointError as e:
                    skipped.append(f"{name} [{config}] batch {batch}: {e}")
                    continue
                rows.append({"model": name, "config": config, "layers": model.flexible.base.config.num_layers,
                             "full_depth": layers is None, "flexify_trained": model.flexify_trained, **r})
            del model, plain
    return {"rows": rows, "skipped": skipped}


# --- 3. quality ---------------------------------------------------------------------------------------------------

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
    """One entry per model and weak patch: a video model is evaluated once per weak mode."""
    mode = result.get("weak_mode")
    return result["model"] if mode in (None, "weak") else f"{result['model']}-{mode}"


def quality(quality_json, models, quick: bool, out: Path, samples: int | None) -> dict:
    results, skipped, sources = [], [], {}
    for f in quality_json or []:
        results.append(json.loads(Path(f).read_text()))
        sources[quality_key(results[-1])] = str(f)
    given = {r["model"] for r in results}
    for name in [m for m in models if registry.get_spec(m).embedded and m not in given]:
        saved = out / f"quality-{name}.json"
        if saved.exists():  # written by an earlier full run into this folder
            results.append(json.loads(saved.read_text()))
            sources[quality_key(results[-1])] = f"{saved} (earlier run)"
            continue
        trained = any((registry.ASSETS / name / f"flexify-{v}.safetensors").exists() for v in ("lora", "shared"))
        if quick:
            skipped.append(f"{name}: quick mode does not run evaluate; pass --quality-json FILE "
                           f"(`python -m flexi_core evaluate --model {name} --json FILE`)")
        elif not trained or not (registry.ASSETS / "judge.safetensors").exists():
            skipped.append(f"{name}: no trained flexify weights or judge in {registry.ASSETS}")
        else:
            from .evaluate import evaluate
            log(f"bench: evaluating {name} ({samples or 256} samples per row)")
            result = evaluate(name, n=samples or 256)
            (out / f"quality-{name}.json").write_text(json.dumps(result, indent=2, default=float))
            results.append(result)
            sources[quality_key(result)] = "evaluate, this run"
    entries = []
    for result in results:
        plot = out / f"quality-{quality_key(result)}.png"
        quality_plot(result, plot)
        entries.append({"model": result["model"], "weak_mode": result.get("weak_mode"), "lead": result.get("lead"),
                        "weak_patch": result.get("weak_patch"), "source": sources.get(quality_key(result)),
                        "samples": result["samples"], "steps": result["steps"],
                        "guidance": result["guidance"], "rows": result["rows"], "plot": plot.name,
                        "verdict": quality_verdict(result)})
    return {"models": entries, "skipped": skipped}


# --- 4. memory ----------------------------------------------------------------------------------------------------

def _peak_rss_bytes() -> int:
    """Peak resident set of this process's own address space (VmHWM): unlike ru_maxrss it does not carry over the
    parent's peak through fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def probe(name: str, config: str, layers: int | None = None, threads: int | None = None):
    """Runs in a fresh process: imports; with a config, loads it and samples once (2 steps, batch 1, guidance,
    one weak and one native step); prints one JSON line."""
    # imported up front in every probe (the baseline too), so that the libraries' own memory cancels out
    from diffusers import CogVideoXTransformer3DModel, DiTTransformer2DModel, PixArtTransformer2DModel  # noqa: F401
    from . import loading, sampling  # noqa: F401
    if threads:
        torch.set_num_threads(threads)
    out = {"model": name, "config": config}
    if config != "baseline":
        model, _ = build_model(name, config, layers)
        out["param_bytes"] = param_bytes(model.flexible)
        schedule = Schedule(2, 2, 2) if config == "static" else Schedule(2, 1, 1, next(iter(model.flexible.weak_modes)))
        sampling.sample(model, random_condition(model), schedule, 0, model.spec.guidance, decode=False)
    out["peak_rss_bytes"] = _peak_rss_bytes()
    print("PROBE " + json.dumps(out), flush=True)


def _run_probe(name, config, layers, threads) -> dict:
    code = (f"from flexi_core.bench import probe; probe({name!r}, {config!r}, {layers!r}, {threads!r})")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)
    for line in r.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[6:])
    raise RuntimeError(f"memory probe {name} [{config}] failed: {r.stderr.strip().splitlines()[-1:]}")


def memory(models, quick: bool, threads: int | None) -> dict:
    rows, skipped, jobs = [], [], []
    for name in models:
        spec = registry.get_spec(name)
        if spec.embedded and not (registry.ASSETS / name / "transformer").exists():
            skipped.append(f"{name}: no weights in {registry.ASSETS / name}")
            continue
        if not spec.embedded and (quick or name not in BIG_CONFIGS):
            skipped.append(f"{name}: left out" + (" in quick mode" if quick else ""))
            continue
        if quick and any(registry.get_spec(j[0]).embedded for j in jobs):
            skipped.append(f"{name}: quick mode measures one embedded model")
            continue
        jobs += [(name, c) for c in (("static", "lora", "lora-merged") if quick else
                                     ("static", "shared", "lora", "lora-merged"))]
    if not jobs:
        return {"rows": [], "skipped": skipped}
    log(f"bench: memory probes ({len(jobs) + 1} fresh processes)")
    with ThreadPoolExecutor(max_workers=2 if quick else 1) as pool:  # big models one at a time
        futures = [pool.submit(_run_probe, "shapes", "baseline", None, threads)]
        futures += [pool.submit(_run_probe, n, c, None, threads) for n, c in jobs]
        results = [f.result() for f in futures]
    baseline = results[0]["peak_rss_bytes"]
    static = {r["model"]: r for r in results[1:] if r["config"] == "static"}
    for r in results[1:]:
        s = static[r["model"]]
        rows.append({**r, "baseline_bytes": baseline, "delta_bytes": r["peak_rss_bytes"] - baseline,
                     "vs_static_bytes": r["peak_rss_bytes"] - s["peak_rss_bytes"],
                     "param_ratio": r["param_bytes"] / s["param_bytes"]})
    return {"rows": rows, "baseline_bytes": baseline, "skipped": skipped,
            "method": "VmHWM of a fresh process after loading + one 2-step sample (batch 1, guidance), minus a "
                      "process that only imports torch, diffusers and flexi_core"}


# --- report -------------------------------------------------------------------------------------------------------

def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = None
    import diffusers
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "memory_bytes": mem,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "device": "cpu",
            "dtype": "float32", "torch": torch.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def _fmt(v, f):
    return "–" if v is None else format(v, f)


def markdown(report: dict) -> str:
    m = report["meta"]
    out = [f"# FlexiDiT benchmark{' (quick)' if m['quick'] else ''}", "",
           f"`{m['command']}` — {m['date']}, {m['seconds']:.0f} s", "",
           f"Machine: {m['machine']['cpu']}, {m['machine']['cores']} cores, {m['machine']['threads']} torch threads, "
           f"{_fmt((m['machine']['memory_bytes'] or 0) / 2**30, '.0f')} GiB; torch {m['machine']['torch']}, "
           f"diffusers {m['machine']['diffusers']}, {m['machine']['device']} {m['machine']['dtype']}."]
    if m["left_out"]:
        out += ["", "Left out in this run: " + "; ".join(m["left_out"]) + "."]
    f = report.get("flops")
    if f:
        out += ["", "## 1. FLOPs anchors (DiT-XL/2, 256 px, one forward, batch 1)", "",
                "| patch | tokens | GFLOPs (formula) | GFLOPs (counted, meta) | GMACs | DiT paper GMACs | rel. error |",
                "|---|---|---|---|---|---|---|"]
        for r in f["dit_xl2"]:
            out.append(f"| {r['patch']} | {r['tokens']} | {r['gflops']:.2f} | {_fmt(r['counted_gflops'], '.2f')} | "
                       f"{r['gmacs']:.2f} | {r['paper_gmacs']} | {r['rel_error']:+.2%} |")
        if f["flexible_counted"]:
            out += ["", "The flexible wrapper itself, counted on the meta device vs the formula:", "",
                    "| model | variant | mode | patch | GFLOPs formula | GFLOPs counted | rel. error |",
                    "|---|---|---|---|---|---|---|"]
            for r in f["flexible_counted"]:
                variant = f"{r['variant']}" + (f" r={r['lora_rank']}" if r["lora_rank"] else "")
                out.append(f"| {r['model']} | {variant} | {r['mode']} | {'x'.join(map(str, r['patch']))} | "
                           f"{r['formula_gflops']:.2f} | {r['counted_gflops']:.2f} | {r['rel_error']:+.2%} |")
        out += ["", f"FlexiDiT paper's targets on DiT-XL/2, {f['steps']} steps (weak/native FLOPs = "
                    f"{f['weak_over_native']:.4f}); `x/y` = native model for the last x conditional / y unconditional "
                    f"steps:", "",
                "| target | guidance | kind | closest schedule | T_weak (cond / uncond) | FLOPs ratio | "
                "`--budget` picks (T_weak, ratio) |", "|---|---|---|---|---|---|---|"]
        for r in f["schedules"]:
            tw = str(r["t_weak"]) + (f" / {r['t_weak_uncond']}" if "t_weak_uncond" in r else "")
            picks = f"{r['within_budget_t_weak']}, {r['within_budget_ratio']:.2%}" if "within_budget_t_weak" in r \
                else "–"
            out.append(f"| {r['target']:.0%} | {'yes' if r['guidance'] else 'no'} | {r['kind']} | {r['schedule']} "
                       f"| {tw} | {r['ratio']:.2%} | {picks} |")
        for r in f["paper_schedules"]:
            out.append(f"| (paper's example) | yes | x/y | {r['schedule']} | – | {r['ratio']:.2%} | – |")
    w = report.get("wallclock")
    if w:
        out += ["", "## 2. Wall-clock vs FLOPs", "",
                "Step = one guided denoiser call (cond + uncond batched); medians over the repeats, the compared "
                "calls alternating in each. Overhead = flexible wrapper at the native patch vs the plain diffusers "
                "model with the same weights (median of paired ratios; goal ≤ 2%)."
                + (" Quick mode: few repeats, so these timings are indicative only." if m["quick"] else ""), "",
                "| model | config | layers | batch | repeats | native step s | weak step s | native GFLOP/s | "
                "weak GFLOP/s | step speed-up / ideal | wrapper overhead |", "|---" * 11 + "|"]
        for r in w["rows"]:
            layers = f"{r['layers']}" + ("" if r["full_depth"] else " (reduced)")
            out.append(f"| {r['model']} | {r['config']} | {layers} | {r['batch']} | {r['repeats']} | "
                       f"{r['native_step_s']:.4f} | "
                       f"{r['weak_step_s']:.4f} | {r['native_gflops_per_s']:.1f} | {r['weak_gflops_per_s']:.1f} | "
                       f"{r['step_speedup']:.2f} / {r['step_ideal_speedup']:.2f} = {r['step_efficiency']:.2f} | "
                       f"{_fmt(r.get('wrapper_overhead'), '+.1%')} |")
        sweeps = [r for r in w["rows"] if "budgets" in r]
        if sweeps:
            out += ["", "Full samples (denoiser only, no decoding; static = the same model at the native patch every "
                    "step); realised / ideal speed-up goal ≥ 0.8 on CPU:", "",
                    "| model | config | batch | steps | repeats | budget | schedule | FLOPs ratio | seconds | "
                    "speed-up | ideal | realised / ideal |", "|---" * 12 + "|"]
            for r in sweeps:
                for b in r["budgets"]:
                    if "unreachable" in b:
                        out.append(f"| {r['model']} | {r['config']} | {r['batch']} | {r['steps']} | "
                                   f"{r['sample_repeats']} | {b['budget']:.0%} | below the weak model's cost | – | – | "
                                   f"– | – | – |")
                        continue
                    out.append(f"| {r['model']} | {r['config']} | {r['batch']} | {r['steps']} | "
                               f"{r['sample_repeats']} | {b['budget']:.0%} | "
                               f"{b['schedule']} | {b['flops_ratio']:.1%} | {b['seconds']:.3f} | {b['speedup']:.2f} | "
                               f"{b['ideal_speedup']:.2f} | {b['efficiency']:.2f} |")
        out += ["", "Goals, read off the rows above: " + goals(w["rows"])]
        if w.get("plot"):
            out += ["", f"![seconds vs FLOPs]({w['plot']})"]
        if w["skipped"]:
            out += ["", "Not timed: " + "; ".join(w["skipped"]) + "."]
    q = report.get("quality")
    if q is not None:
        out += ["", "## 3. Quality vs FLOPs"]
        from .evaluate import markdown_table
        for e in q["models"]:
            tolerances = e["verdict"]["tolerances"]
            out += ["", markdown_table(e), "", f"Source: {e['source']}.", "",
                    f"![quality vs FLOPs]({e['plot']})", "",
                    f"Where FlexiDiT wins and where not (tolerances: accuracy {tolerances['accuracy']}; "
                    f"Fréchet distance {tolerances['fd']}):", ""]
            out += [f"- {s}" for s in e["verdict"]["summary"]]
            out += ["", "<details><summary>every comparison</summary>", ""]
            out += [f"- {line}" for line in e["verdict"]["lines"]] + ["", "</details>"]
        if q["skipped"]:
            out += ["", "Not evaluated: " + "; ".join(q["skipped"]) + "."]
    mem = report.get("memory")
    if mem is not None:
        out += ["", "## 4. Memory", ""]
        if mem["rows"]:
            out += [f"{mem['method']} ({mem['baseline_bytes'] / 2**20:.0f} MiB).", "",
                    "| model | config | parameters MiB | params vs static | peak RSS MiB | minus imports MiB | "
                    "vs static MiB |", "|---|---|---|---|---|---|---|"]
            for r in mem["rows"]:
                out.append(f"| {r['model']} | {r['config']} | {r['param_bytes'] / 2**20:.1f} | {r['param_ratio']:.3f}× "
                           f"| {r['peak_rss_bytes'] / 2**20:.0f} | {r['delta_bytes'] / 2**20:.0f} | "
                           f"{r['vs_static_bytes'] / 2**20:+.0f} |")
        if mem["skipped"]:
            out += ["", "Not measured: " + "; ".join(mem["skipped"]) + "."]
    return "\n".join(out) + "\n"


def goals(rows) -> str:
    """How many rows meet realised / ideal ≥ 0.8 (reduced budgets) and wrapper overhead ≤ 2%, and the worst cases."""
    eff = [(b["efficiency"], f"{r['model']} [{r['config']}] b={r['batch']} at {b['flops_ratio']:.0%}")
           for r in rows for b in r.get("budgets", []) if "efficiency" in b and b["flops_ratio"] < 1]
    over = [(r["wrapper_overhead"], f"{r['model']} [{r['config']}] b={r['batch']}") for r in rows
            if r.get("wrapper_overhead") is not None]
    parts = []
    if eff:
        worst = min(eff)
        parts.append(f"realised / ideal speed-up ≥ 0.8 in {sum(e >= 0.8 for e, _ in eff)} of {len(eff)} reduced-budget "
                     f"samples (lowest {worst[0]:.2f}: {worst[1]})")
    if over:
        worst = max(over)
        parts.append(f"wrapper overhead ≤ 2% in {sum(o <= 0.02 for o, _ in over)} of {len(over)} rows (highest "
                     f"{worst[0]:+.1%}: {worst[1]})")
    return "; ".join(parts) + "." if parts else "no timed rows."


def wallclock_plot(rows, path: Path) -> bool:
    sweeps = [r for r in rows if "budgets" in r]
    if not sweeps:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 5))
    for r in sweeps:
        pts = sorted((b["flops_ratio"], 1 / b["speedup"]) for b in r["budgets"] if "speedup" in b)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=4,
                label=f"{r['model']} [{r['config']}] b={r['batch']}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="ideal (time ∝ FLOPs)")
    ax.set_xlabel("FLOPs / static FLOPs")
    ax.set_ylabel("seconds / static seconds")
    ax.set_xlim(0, 1.05)
    ax.set_ylim(0, max([1.2] + [1.05 / b["speedup"] for r in sweeps for b in r["budgets"] if "speedup" in b]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run_bench(out: Path, quick: bool = False, models=None, quality_json=None, sections=None, repeats=None,
              batches=None, steps=None, big_steps=None, threads=None, quality_samples=None, command="") -> dict:
    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    models = list(models or (*EMBEDDED, *BIG))
    for m in models:
        registry.get_spec(m)
    sections = set(sections or SECTIONS)
    if sections - set(SECTIONS):
        raise ValueError(f"unknown section(s) {', '.join(sorted(sections - set(SECTIONS)))}; choose from "
                         f"{', '.join(SECTIONS)}")
    left_out = []
    if quick:
        left_out += ["PixArt-alpha timing and memory", "DiT-XL/2 full samples and batch 8 (per-step forwards only, "
                     f"{QUICK_LAYERS} of 28 layers at full width and token count)", "the merged and shared "
                     "configurations in timing", "memory of the shared variant and of all but one embedded model",
                     "running evaluate (quality only from --quality-json)"]
    repeats = repeats or 3
    batches = tuple(batches or ((1, 8)))
    report = {"meta": {"quick": quick, "command": command, "date": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "machine": machine(), "left_out": left_out, "models": models,
        "settings": {"repeats": repeats, "batches": list(batches), "steps_embedded": steps or (3 if quick else 4),
                     "steps_big": big_steps or 3, "budgets": list(BUDGETS)}}}
    timings = report["meta"]["section_seconds"] = {}

    def timed(section, fn):
        t0 = time.perf_counter()
        report[section] = fn()
        timings[section] = time.perf_counter() - t0

    if "flops" in sections:
        log("bench: FLOPs anchors")
        timed("flops", flops_anchors)
    if "wallclock" in sections:
        timed("wallclock", lambda: wallclock(models, quick, batches, repeats, steps or (3 if quick else 4),
                                             big_steps or 3, BUDGETS))
        if wallclock_plot(report["wallclock"]["rows"], out / "wallclock.png"):
            report["wallclock"]["plot"] = "wallclock.png"
    if "quality" in sections:
        timed("quality", lambda: quality(quality_json, models, quick, out, quality_samples))
    if "memory" in sections:
        timed("memory", lambda: memory(models, quick, threads))
    report["meta"]["seconds"] = time.perf_counter() - start
    text = markdown(report)
    (out / "bench.md").write_text(text)
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=float))
    return report | {"markdown": text}
