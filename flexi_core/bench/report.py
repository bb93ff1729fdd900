"""The report: the machine it ran on, section 3 (quality vs FLOPs, from `evaluate` results), the plots, the goals
read off the timings, and the markdown of all four sections."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from .. import registry
from ..shapes.evaluate import fmt, markdown_table, quality_key, quality_plot, quality_verdict
from .models import log


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


# --- 3. quality ---------------------------------------------------------------------------------------------------

def _quality_results(quality_json, models, quick: bool, out: Path, samples: int | None):
    """(evaluate results, their sources, skipped): the given files, an earlier run's files in `out`, else a fresh
    `evaluate` of each embedded model with trained flexify weights (not in quick mode)."""
    results, skipped, sources = [], [], {}
    for f in quality_json or []:
        results.append(json.loads(Path(f).read_text()))
        sources[quality_key(results[-1])] = str(f)
    given = {r["model"] for r in results if r.get("kind") != "frontier"}
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
        elif not trained or not (registry.ASSETS / registry.get_spec(name).judge).exists():
            skipped.append(f"{name}: no trained flexify weights or judge in {registry.ASSETS}")
        else:
            from ..shapes.evaluate import evaluate
            log(f"bench: evaluating {name} ({samples or 256} samples per row)")
            result = evaluate(name, n=samples or 256)
            (out / f"quality-{name}.json").write_text(json.dumps(result, indent=2, default=float))
            results.append(result)
            sources[quality_key(result)] = "evaluate, this run"
    return results, sources, skipped


def quality(quality_json, models, quick: bool, out: Path, samples: int | None) -> dict:
    """One entry per evaluation (model and weak patch), with its plot in `out` and, but for a frontier sweep, the
    verdict."""
    results, sources, skipped = _quality_results(quality_json, models, quick, out, samples)
    entries = []
    for result in results:
        plot = out / f"quality-{quality_key(result)}.png"
        if result.get("kind") == "frontier":  # its own table and plot; the frontier gain is the verdict
            from ..shapes import frontier
            frontier.plot(result, plot)
            entries.append({**result, "source": sources.get(quality_key(result)), "plot": plot.name})
            continue
        quality_plot(result, plot)
        entries.append({"model": result["model"], "weak_mode": result.get("weak_mode"), "lead": result.get("lead"),
                        "weak_patch": result.get("weak_patch"), "source": sources.get(quality_key(result)),
                        "samples": result["samples"], "steps": result["steps"],
                        "guidance": result["guidance"], "rows": result["rows"], "plot": plot.name,
                        "verdict": quality_verdict(result)})
    return {"models": entries, "skipped": skipped}


# --- goals and plots ----------------------------------------------------------------------------------------------

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


# --- markdown -----------------------------------------------------------------------------------------------------

def _flops_md(f: dict) -> list[str]:
    out = ["", "## 1. FLOPs anchors (DiT-XL/2, 256 px, one forward, batch 1)", "",
           "| patch | tokens | GFLOPs (formula) | GFLOPs (counted, meta) | GMACs | DiT paper GMACs | rel. error |",
           "|---|---|---|---|---|---|---|"]
    for r in f["dit_xl2"]:
        out.append(f"| {r['patch']} | {r['tokens']} | {r['gflops']:.2f} | {fmt(r['counted_gflops'], '.2f')} | "
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
    return out


def _sweep_md(r: dict) -> list[str]:
    """The full-sample rows of one timed configuration, one per budget."""
    lead = f"| {r['model']} | {r['config']} | {r['batch']} | {r['steps']} | {r['sample_repeats']} | "
    out = []
    for b in r["budgets"]:
        if "unreachable" in b:
            out.append(lead + f"{b['budget']:.0%} | below the weak model's cost | – | – | – | – | – |")
            continue
        out.append(lead + f"{b['budget']:.0%} | {b['schedule']} | {b['flops_ratio']:.1%} | {b['seconds']:.3f} | "
                   f"{b['speedup']:.2f} | {b['ideal_speedup']:.2f} | {b['efficiency']:.2f} |")
    return out


def _wallclock_md(w: dict, quick: bool) -> list[str]:
    out = ["", "## 2. Wall-clock vs FLOPs", "",
           "Step = one guided denoiser call (cond + uncond batched); medians over the repeats, the compared "
           "calls alternating in each. Overhead = flexible wrapper at the native patch vs the plain diffusers "
           "model with the same weights (median of paired ratios; goal ≤ 2%)."
           + (" Quick mode: few repeats, so these timings are indicative only." if quick else ""), "",
           "| model | config | layers | batch | repeats | native step s | weak step s | native GFLOP/s | "
           "weak GFLOP/s | step speed-up / ideal | wrapper overhead |", "|---" * 11 + "|"]
    for r in w["rows"]:
        layers = f"{r['layers']}" + ("" if r["full_depth"] else " (reduced)")
        out.append(f"| {r['model']} | {r['config']} | {layers} | {r['batch']} | {r['repeats']} | "
                   f"{r['native_step_s']:.4f} | "
                   f"{r['weak_step_s']:.4f} | {r['native_gflops_per_s']:.1f} | {r['weak_gflops_per_s']:.1f} | "
                   f"{r['step_speedup']:.2f} / {r['step_ideal_speedup']:.2f} = {r['step_efficiency']:.2f} | "
                   f"{fmt(r.get('wrapper_overhead'), '+.1%')} |")
    sweeps = [r for r in w["rows"] if "budgets" in r]
    if sweeps:
        out += ["", "Full samples (denoiser only, no decoding; static = the same model at the native patch every "
                "step); realised / ideal speed-up goal ≥ 0.8 on CPU:", "",
                "| model | config | batch | steps | repeats | budget | schedule | FLOPs ratio | seconds | "
                "speed-up | ideal | realised / ideal |", "|---" * 12 + "|"]
        for r in sweeps:
            out += _sweep_md(r)
    out += ["", "Goals, read off the rows above: " + goals(w["rows"])]
    if w.get("plot"):
        out += ["", f"![seconds vs FLOPs]({w['plot']})"]
    if w["skipped"]:
        out += ["", "Not timed: " + "; ".join(w["skipped"]) + "."]
    return out


def _quality_md(q: dict) -> list[str]:
    out = ["", "## 3. Quality vs FLOPs"]
    for e in q["models"]:
        if e.get("kind") == "frontier":
            from ..shapes.frontier import markdown_table as frontier_table
            out += ["", frontier_table(e), "", f"Source: {e['source']}.", "",
                    f"![quality vs FLOPs on the static frontier]({e['plot']})"]
            continue
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
    return out


def _memory_md(mem: dict) -> list[str]:
    out = ["", "## 4. Memory", ""]
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
    return out


def markdown(report: dict) -> str:
    m = report["meta"]
    out = [f"# FlexiDiT benchmark{' (quick)' if m['quick'] else ''}", "",
           f"`{m['command']}` — {m['date']}, {m['seconds']:.0f} s", "",
           f"Machine: {m['machine']['cpu']}, {m['machine']['cores']} cores, {m['machine']['threads']} torch threads, "
           f"{fmt((m['machine']['memory_bytes'] or 0) / 2**30, '.0f')} GiB; torch {m['machine']['torch']}, "
           f"diffusers {m['machine']['diffusers']}, {m['machine']['device']} {m['machine']['dtype']}."]
    if m["left_out"]:
        out += ["", "Left out in this run: " + "; ".join(m["left_out"]) + "."]
    if report.get("flops"):
        out += _flops_md(report["flops"])
    if report.get("wallclock"):
        out += _wallclock_md(report["wallclock"], m["quick"])
    if report.get("quality") is not None:
        out += _quality_md(report["quality"])
    if report.get("memory") is not None:
        out += _memory_md(report["memory"])
    return "\n".join(out) + "\n"
