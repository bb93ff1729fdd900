"""Matplotlib figures of flexi_core's results (built with matplotlib.figure.Figure: no pyplot state, thread-safe)."""
from __future__ import annotations

import functools
import math

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch as LegendPatch  # noqa: E402

NATIVE_COLOUR = "#1f5fbf"
WEAK_COLOURS = ("#f28e2b", "#59a14f", "#e15759")
# transparent figures with mid-grey text and lines: readable on the page's light and dark themes alike
INK = "#8a8a8a"
THEME = {"figure.facecolor": "none", "axes.facecolor": "none", "savefig.facecolor": "none", "text.color": INK,
         "axes.labelcolor": INK, "axes.edgecolor": INK, "xtick.color": INK, "ytick.color": INK,
         "axes.titlecolor": INK, "legend.facecolor": "none", "legend.edgecolor": INK, "hatch.color": INK}


def themed(draw):
    """Builds the figure under THEME (matplotlib reads rcParams when an artist is made)."""
    @functools.wraps(draw)
    def build(*args, **kwargs):
        with matplotlib.rc_context(THEME):
            return draw(*args, **kwargs)
    return build


def patch_text(patch) -> str:
    t, h, w = patch
    return f"{h}×{w}" if t == 1 else f"{t}×{h}×{w}"


def si(value: float, unit: str = "FLOPs") -> str:
    """12_300_000 -> '12.3 MFLOPs'."""
    if value is None or not math.isfinite(value):
        return "–"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def mode_name(mode: str) -> str:
    return mode if mode in ("native", "weak") else f"weak ({mode})"


def mode_colours(patches: dict) -> dict:
    weak = [m for m in patches if m != "native"]
    return {"native": NATIVE_COLOUR, **{m: WEAK_COLOURS[i % len(WEAK_COLOURS)] for i, m in enumerate(weak)}}


@themed
def timeline(runs: list[tuple[str, list]], patches: dict) -> Figure:
    """One bar per denoising step, height = FLOPs of that step, colour = patch size of its conditional pass; one
    panel per run (static, flexible) on a shared y axis so the saving is visible at a glance; hatched: a step whose
    unconditional pass runs at another patch size than its conditional one; dotted: a weak step of a guided run that
    skips guidance (its conditional pass alone)."""
    colours = mode_colours(patches)
    fig = Figure(figsize=(9, 2.2 + 1.6 * len(runs)), layout="constrained")
    axes = fig.subplots(len(runs), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    scale, unit = _flops_scale(max((r.flops for _, recs in runs for r in recs), default=1))
    used, unguided = set(), False
    for ax, (title, records) in zip(axes, runs):
        steps = [r.step for r in records]
        heights = [r.flops / scale for r in records]
        bar_colours = [colours[r.cond_mode] for r in records]
        guided = any(r.uncond_mode for r in records)
        hatches = [_hatch(r, guided) for r in records]
        unguided |= ".." in hatches
        bars = ax.bar(steps, heights, width=0.85, color=bar_colours)
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
        used.update(r.cond_mode for r in records)
        total = sum(r.flops for r in records)
        ax.set_title(f"{title}: {si(total)} in {len(records)} steps", loc="left", fontsize=10)
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xlabel("denoising step (0 = pure noise → last = final image)")
    handles = [LegendPatch(color=colours[m], label=f"{mode_name(m)}, patch {patch_text(patches[m])}")
               for m in patches if m in used]
    if any(r.uncond_mode not in (None, r.cond_mode) for _, records in runs for r in records):
        handles.append(LegendPatch(facecolor="none", edgecolor=INK, hatch="//",
                                   label="unconditional pass weak (guidance base: weak conditional)"))
    if unguided:
        handles.append(LegendPatch(facecolor="none", edgecolor=INK, hatch="..",
                                   label="weak step without guidance (conditional pass only)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles) if len(handles) < 4 else 2, fontsize=9,
               frameon=False)
    return fig


def _hatch(record, guided_run: bool) -> str:
    """'//': the unconditional pass at another patch size than the conditional one; '..': a weak step that skips the
    guidance its run uses elsewhere."""
    if record.uncond_mode is None:
        return ".." if guided_run else ""
    return "//" if record.uncond_mode != record.cond_mode else ""


def _flops_scale(peak: float) -> tuple[float, str]:
    for factor, name in ((1e12, "TFLOPs / step"), (1e9, "GFLOPs / step"), (1e6, "MFLOPs / step"),
                         (1e3, "kFLOPs / step")):
        if peak >= factor:
            return factor, name
    return 1.0, "FLOPs / step"


@themed
def sweep(rows: list[dict], static_flops: int) -> Figure:
    """Agreement (PSNR, SSIM) with the static sample and denoising time, against FLOPs in % of static."""
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    x = [100 * r["flops"] / static_flops for r in rows]
    finite = [(xi, r["psnr"]) for xi, r in zip(x, rows) if math.isfinite(r["psnr"])]
    if finite:
        left.plot(*zip(*finite), "o-", color=NATIVE_COLOUR, label="PSNR (dB)")
    left.set_xlabel("FLOPs (% of static)")
    left.set_ylabel("PSNR to static (dB)", color=NATIVE_COLOUR)
    left.set_title("Agreement with the static sample (100% = identical)", fontsize=10, loc="left")
    twin = left.twinx()
    twin.plot(x, [r["ssim"] for r in rows], "s--", color=WEAK_COLOURS[0], label="SSIM")
    twin.set_ylabel("SSIM", color=WEAK_COLOURS[0])
    twin.set_ylim(min(0.0, min(r["ssim"] for r in rows)), 1.02)
    right.plot(x, [r["seconds"] for r in rows], "o-", color=WEAK_COLOURS[1])
    right.set_xlabel("FLOPs (% of static)")
    right.set_ylabel("denoising time (s)")
    right.set_ylim(bottom=0)
    right.set_title("Wall-clock time", fontsize=10, loc="left")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.invert_xaxis()
    return fig


@themed
def prediction_gap(result: dict) -> Figure:
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax = fig.subplots()
    for i, (mode, gaps) in enumerate(result["gap"].items()):
        ax.plot(range(len(gaps)), gaps, "o-", ms=3, color=WEAK_COLOURS[i % len(WEAK_COLOURS)],
                label=f"{mode_name(mode)} vs native")
    ax.set_xlabel("denoising step (0 = pure noise → last = final image)")
    ax.set_ylabel("relative difference\n‖weak − native‖ / ‖native‖")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return fig


@themed
def filtered_updates(result: dict) -> Figure:
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax = fig.subplots()
    cases = result["cases"]
    labels = [f"step {c['step']}\nkeep {c['keep']}-pass" for c in cases]
    values = [c["psnr_to_reference"] if math.isfinite(c["psnr_to_reference"]) else 99.0 for c in cases]
    colours = [NATIVE_COLOUR if c["keep"] == "low" else WEAK_COLOURS[0] for c in cases]
    ax.bar(range(len(cases)), values, color=colours)
    ax.set_xticks(range(len(cases)), labels, fontsize=9)
    ax.set_ylabel("PSNR to the unfiltered\nfinal image (dB)")
    ax.set_title("higher = dropping the other half of that step's update changed the result less", fontsize=10,
                 loc="left")
    ax.grid(axis="y", alpha=0.3)
    return fig
