"""The quality-vs-FLOPs frontier: does FlexiDiT beat simply taking fewer steps?

The obvious alternative to a compute budget is the static model with fewer steps. Its accuracy and Fréchet distance
at N = 1…25 steps, against FLOPs, is the *static frontier*; FlexiDiT at a budget and N steps adds on top of fewer
steps where its row lies above that line. Each FlexiDiT row carries its *frontier gain* (its accuracy minus the
frontier's at the same FLOPs, linearly interpolated between the two neighbouring static runs; the same for Fréchet),
its agreement with the static run of the same N and seeds, and the static run with the most steps within its FLOPs
(`schedule.fewer_steps_for`: what the app and `generate --compare` show beside a flexible sample). FLOPs are per sample,
relative to one reference: the static run of REFERENCE_STEPS steps (the same for every sampler).
"""
from __future__ import annotations

from pathlib import Path

import json

import numpy as np

from ..errors import FlexiDiTError
from .evaluate import Setting, fmt, quality_key, same_reading, scored_models, weak_mode_of
from ..inputs import MAX_STEPS, SAMPLERS, whole
from ..registry import ASSETS, get_spec
from ..sampling import budget_schedule
from ..schedule import Schedule, fewer_steps_for, total_flops

FRONTIER_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25)
SWEEP_STEPS = (4, 6, 8, 10, 25)
SWEEP_BUDGETS = (0.75, 0.55, 0.40)
REFERENCE_STEPS = 25
# the project's own frontier runs (plot and JSON per model, weak mode and sampler), shipped with the card
SHIPPED = Path(__file__).resolve().parents[2] / "docs" / "bench"


def interpolate(points, x: float) -> float | None:
    """The piecewise-linear curve through the (x, y) points at x; None outside their x range (no extrapolation)."""
    points = sorted(points)
    if not points or not points[0][0] <= x <= points[-1][0]:
        return None
    return float(np.interp(x, [p[0] for p in points], [p[1] for p in points]))


def add_frontier_gains(rows: list[dict]) -> None:
    """Adds to every FlexiDiT row the frontier's accuracy and Fréchet distance at its FLOPs (from the static rows)
    and its gain: FlexiDiT minus frontier (accuracy: higher is better; Fréchet: lower is better); None where its
    FLOPs lie outside the measured static step counts."""
    static = [r for r in rows if r["method"] == "static"]
    for r in rows:
        if r["method"] != "FlexiDiT":
            continue
        for key, name in (("accuracy", "frontier_gain"), ("fd", "frontier_gain_fd")):
            on_frontier = interpolate([(s["flops"], s[key]) for s in static], r["flops"])
            r[f"frontier_{key}"] = on_frontier
            r[name] = None if on_frontier is None else r[key] - on_frontier


def frontier(name: str, n: int = 256, steps=SWEEP_STEPS, budgets=SWEEP_BUDGETS, frontier_steps=FRONTIER_STEPS,
             sampler: str | None = None, variants=("lora",), guidance: float | None = None, chunk: int = 64,
             assets=ASSETS, weak_mode: str | None = None, lead: int | None = None, paraphrase: str | None = None,
             reference_steps: int = REFERENCE_STEPS, weak_guidance: bool | None = None) -> dict:
    """The static model at every N of `frontier_steps` and `steps` (and of each fewer-steps baseline), FlexiDiT at
    each budget (< 1) for each N of `steps`; every static N is sampled once and is also the agreement reference of
    the FlexiDiT rows of that N. `lead`: leading native steps (default: the model's share of each N);
    `weak_guidance` (True / False): the weak steps with / without guidance (default: the model's rule)."""
    if not steps or not frontier_steps:
        raise FlexiDiTError("the sweep needs at least one step count for FlexiDiT and one for the static frontier")
    for value in (*steps, *frontier_steps, reference_steps):
        whole(value, "a step count", 1, MAX_STEPS)
    if lead is not None:
        whole(lead, "lead", 0, MAX_STEPS)
    setting, real_row = Setting.load(name, n, guidance, sampler, chunk, assets, paraphrase)
    mode, sampler = weak_mode_of(setting.spec, weak_mode), setting.sampler
    native, models = scored_models(name, variants, assets)  # the static model: the original one (native size)
    cfg = setting.guidance > 1
    flops_of, native_condition = native.flops_of(), setting.condition(native)
    reference = total_flops(Schedule.static(reference_steps, mode), flops_of, cfg)
    statics = {}  # N -> (row, (pixels, readings))

    def static(steps_n: int):
        if steps_n not in statics:
            schedule = Schedule.static(steps_n, mode)
            pixels, flops, seconds = setting.run(native, native_condition, schedule, f"static {steps_n}")
            row, reads = setting.score(pixels)
            statics[steps_n] = ({"variant": "-", "method": "static", "steps": steps_n, "budget": 1.0,
                                 "schedule": schedule.label, "flops": flops / n, "flops_ratio": flops / n / reference,
                                 "flops_vs_static": 1.0, "seconds": seconds, **row}, (pixels, reads))
        return statics[steps_n]

    for steps_n in sorted(set(frontier_steps) | set(steps)):
        static(steps_n)
    flexible = []
    for variant, model in models:
        condition = setting.condition(model)
        for steps_n in steps:
            same_steps, same_run = static(steps_n)
            for budget in [b for b in budgets if b < 1]:
                try:
                    schedule = budget_schedule(model, budget, steps_n, setting.guidance, mode, lead, sampler,
                                               weak_guidance)
                except ValueError:  # below the weak model's own cost, or a lead longer than the steps
                    continue
                pixels, flops, seconds = setting.run(model, condition, schedule, f"{variant} {steps_n} {budget}")
                row, _ = setting.score(pixels, same_run)
                fewer = fewer_steps_for(flops / n, flops_of, cfg, steps_n)
                alternative = static(fewer)[0] if fewer else {}
                flexible.append({"variant": variant, "method": "FlexiDiT", "steps": steps_n, "budget": budget,
                                 "schedule": schedule.label, "flops": flops / n, "flops_ratio": flops / n / reference,
                                 "flops_vs_static": flops / n / same_steps["flops"], "seconds": seconds, **row,
                                 "fewer_steps": fewer, "fewer_flops": alternative.get("flops"),
                                 "fewer_flops_ratio": alternative.get("flops_ratio"),
                                 "fewer_accuracy": alternative.get("accuracy"), "fewer_fd": alternative.get("fd")})
    rows = [real_row] + [statics[k][0] for k in sorted(statics)] + flexible
    add_frontier_gains(rows)
    return {"kind": "frontier", "model": name, "sampler": sampler, "samples": n, "guidance": setting.guidance,
            "weak_mode": mode, "weak_patch": list(setting.spec.weak_patches[mode]), "lead": lead,
            "weak_guidance": weak_guidance, "paraphrase": paraphrase, "steps": list(steps),
            "frontier_steps": sorted(frontier_steps),
            "budgets": [b for b in budgets if b < 1], "variants": [v for v, _ in models],
            "reference": {"steps": reference_steps, "sampler": sampler, "flops": reference}, "rows": rows}


def command(result: dict) -> str:
    """The `evaluate` command line that makes this frontier run."""
    extra = "".join(f" --{flag} {result[key]}" for flag, key in (("weak-mode", "weak_mode"), ("lead", "lead"),
                                                                  ("paraphrase", "paraphrase"))
                    if result.get(key) not in (None, "weak"))
    variants = f" --variants {','.join(result['variants'])}" if result["variants"] else ""  # none: static rows only
    if result.get("weak_guidance") is not None:
        extra += f" --weak-guidance {'on' if result['weak_guidance'] else 'off'}"
    for flag, key, default in (("frontier-steps", "frontier_steps", FRONTIER_STEPS),
                               ("budgets", "budgets", SWEEP_BUDGETS)):
        if tuple(result[key]) != default:
            extra += f" --{flag} {','.join(f'{v:g}' for v in result[key])}"
    return (f"python -m flexi_core evaluate --model {result['model']} --frontier --sampler {result['sampler']} "
            f"--samples {result['samples']}{variants} "
            f"--sweep-steps {','.join(map(str, result['steps']))}{extra}")


def shipped(name: str, sampler: str, weak_mode: str | None = None, folder: Path = SHIPPED):
    """(plot path, result) of the shipped frontier run of this model, sampler and weak mode; None if none ships."""
    stem = quality_key({"kind": "frontier", "model": name, "weak_mode": weak_mode, "sampler": sampler})
    png, data = folder / f"{stem}.png", folder / f"{stem}.json"
    if not (png.is_file() and data.is_file()):
        return None
    return png, json.loads(data.read_text())


def summary(result: dict, tolerance: float = 0.02) -> str:
    """One sentence: in how many rows FlexiDiT is above the static frontier at equal FLOPs, and where it is below."""
    rows = [r for r in result["rows"] if r["method"] == "FlexiDiT" and r["frontier_gain"] is not None]
    if not rows:
        return "no FlexiDiT row lies within the static frontier's FLOPs"
    where = lambda r: f"{r['steps']} steps at {r['budget']:.0%}, {100 * r['frontier_gain']:+.1f}"  # noqa: E731
    above = [r for r in rows if r["frontier_gain"] > tolerance]
    below = sorted((r for r in rows if r["frontier_gain"] < -tolerance), key=lambda r: r["frontier_gain"])
    best = max(rows, key=lambda r: r["frontier_gain"])
    text = (f"FlexiDiT is more than {100 * tolerance:.0f} points above the static frontier at equal FLOPs in "
            f"{len(above)} of {len(rows)} settings (best: {where(best)})")
    return text + (f"; more than {100 * tolerance:.0f} below in {len(below)} ({'; '.join(map(where, below))})"
                   if below else f"; never more than {100 * tolerance:.0f} below")


def _title(result: dict) -> str:
    mode = result.get("weak_mode")
    weak = f", weak patch `{mode}`" if mode not in (None, "weak") else ""
    return (f"{result['model']}{weak}, {SAMPLERS[result['sampler']]} — {result['samples']} samples, guidance "
            f"{result['guidance']}; FLOPs relative to the {result['reference']['steps']}-step static run "
            f"({result['reference']['flops'] / 1e9:.3f} GFLOPs per sample)")


def markdown_table(result: dict) -> str:
    """FlexiDiT's rows, led by the frontier gain, then the static frontier itself."""
    rows = result["rows"]
    *first, last = same_reading(get_spec(result["model"]))
    out = [f"**{_title(result)}**", "",
           "| variant | steps | budget | FLOPs | frontier gain | accuracy | frontier, same FLOPs | static, fewer "
           "steps (FLOPs): accuracy | Fréchet | Fréchet − frontier | PSNR | SSIM | same reading | schedule |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r["method"] == "FlexiDiT"):
        fewer = (f"{r['fewer_steps']} ({r['fewer_flops_ratio']:.0%}): {r['fewer_accuracy']:.1%}"
                 if r["fewer_steps"] else "none fits")
        gain = "–" if r["frontier_gain"] is None else f"**{100 * r['frontier_gain']:+.1f}**"
        out.append(f"| {r['variant']} | {r['steps']} | {r['budget']:.0%} | {r['flops_ratio']:.1%} | {gain} "
                   f"| {r['accuracy']:.1%} | {fmt(r['frontier_accuracy'], '.1%')} | {fewer} | {r['fd']:.1f} "
                   f"| {fmt(r['frontier_gain_fd'], '+.1f')} | {r['psnr']:.1f} | {r['ssim']:.3f} "
                   f"| {r['same_reading']:.0%} | {r['schedule']} |")
    out += ["", "Static frontier (frontier gain: accuracy points above the static line at equal FLOPs, interpolated; "
                f"same reading: the judge reads the same {', '.join(first)} and {last} as on the static run of the "
                "same N and seed):", "",
            "| static steps | FLOPs | accuracy | Fréchet | seconds |", "|---|---|---|---|---|"]
    real = next(r for r in rows if r["method"] == "real data")
    out.append(f"| real data | – | {real['accuracy']:.1%} | {real['fd']:.1f} | – |")
    for r in (r for r in rows if r["method"] == "static"):
        out.append(f"| {r['steps']} | {r['flops_ratio']:.1%} | {r['accuracy']:.1%} | {r['fd']:.1f} "
                   f"| {r['seconds']:.1f} |")
    return "\n".join(out)


def plot(result: dict, path: Path) -> None:
    """Accuracy and Fréchet distance vs relative FLOPs: the static frontier as a line labelled with its N, and per
    variant and N one FlexiDiT curve through its budgets, ending at the static run of that N."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter, StrMethodFormatter
    rows = result["rows"]
    static = sorted((r for r in rows if r["method"] == "static"), key=lambda r: r["flops"])
    by_steps = {r["steps"]: r for r in static}
    real = next(r for r in rows if r["method"] == "real data")
    markers = dict(zip(result["variants"], "os^D"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, key, label in ((axes[0], "accuracy", "judge accuracy (higher is better)"),
                           (axes[1], "fd", "Fréchet distance (lower is better)")):
        ax.plot([r["flops_ratio"] for r in static], [r[key] for r in static], "k-", lw=1.5, marker=".",
                label="static, N steps")
        for r in static:
            ax.annotate(str(r["steps"]), (r["flops_ratio"], r[key]), textcoords="offset points", xytext=(2, 4),
                        fontsize=7)
        for i, steps_n in enumerate(result["steps"]):
            for variant in result["variants"]:
                mine = [r for r in rows if r["method"] == "FlexiDiT" and r["steps"] == steps_n
                        and r["variant"] == variant]
                if not mine:
                    continue
                pts = sorted([(r["flops_ratio"], r[key]) for r in mine]
                             + [(by_steps[steps_n]["flops_ratio"], by_steps[steps_n][key])])
                ax.plot(*zip(*pts), marker=markers[variant], color=f"C{i}", ms=5, lw=1,
                        label=f"FlexiDiT {variant}, {steps_n} steps")
        ax.axhline(real[key], color="grey", lw=0.8, ls="--", label="real data")
        ax.set_xscale("log")
        if key == "fd":  # from ~1000 at one step down to the real-data floor
            ax.set_yscale("log")
            for axis_format in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis_format(StrMethodFormatter("{x:.0f}"))
        ax.set_xticks([t for t in (0.04, 0.1, 0.2, 0.4, 0.6, 1.0) if t >= static[0]["flops_ratio"] / 1.5])
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel(f"FLOPs / {result['reference']['steps']}-step static (log)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{result['model']}, {SAMPLERS[result['sampler']]}: FlexiDiT (budgets "
                 f"{', '.join(f'{b:.0%}' for b in result['budgets'])}) on the static frontier "
                 f"({result['samples']} samples)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
