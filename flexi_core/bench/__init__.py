"""`python -m flexi_core bench`: FLOPs, wall-clock, quality and memory of flexible vs static, side by side.

One module per section: flops.py (1. FLOPs anchors), wallclock.py (2. wall-clock vs FLOPs), report.py (3. quality vs
FLOPs from `evaluate`, the plots and the markdown), memory.py (4. memory, in fresh processes); models.py builds what
sections 2 and 4 measure. `run_bench` runs the sections and writes bench.json, bench.md and PNG plots into the
output folder.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from .. import registry
from ..errors import FlexiDiTError
from ..shapes.evaluate import BUDGETS
from . import memory, wallclock
from .flops import flops_anchors
from .models import BIG, EMBEDDED, QUICK_LAYERS, log
from .report import machine, markdown, quality, wallclock_plot

SECTIONS = ("flops", "wallclock", "quality", "memory")
QUICK_LEFT_OUT = ("PixArt-alpha timing and memory", "DiT-XL/2 full samples and batch 8 (per-step forwards only, "
                  f"{QUICK_LAYERS} of 28 layers at full width and token count)", "the merged and shared "
                  "configurations in timing", "memory of the shared variant and of all but one embedded model",
                  "running evaluate (quality only from --quality-json)")


def run_bench(out: Path, quick: bool = False, models=None, quality_json=None, sections=None, repeats=None,
              batches=None, steps=None, big_steps=None, threads=None, quality_samples=None, command="") -> dict:
    """Runs `sections` (default: all four) and writes bench.json, bench.md and the plots into `out`; returns the
    report with its markdown."""
    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    models = list(models or (*EMBEDDED, *BIG))
    for m in models:
        registry.get_spec(m)
    sections = set(sections or SECTIONS)
    if sections - set(SECTIONS):
        raise FlexiDiTError(f"unknown section(s) {', '.join(sorted(sections - set(SECTIONS)))}; choose from "
                            f"{', '.join(SECTIONS)}")
    out.mkdir(parents=True, exist_ok=True)
    repeats = repeats or 3
    batches = tuple(batches or ((1, 8)))
    steps = steps or (3 if quick else 4)
    big_steps = big_steps or 3
    report = {"meta": {"quick": quick, "command": command, "date": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "machine": machine(), "left_out": list(QUICK_LEFT_OUT) if quick else [], "models": models,
        "settings": {"repeats": repeats, "batches": list(batches), "steps_embedded": steps,
                     "steps_big": big_steps, "budgets": list(BUDGETS)}}}
    timings = report["meta"]["section_seconds"] = {}

    def timed(section, fn):
        t0 = time.perf_counter()
        report[section] = fn()
        timings[section] = time.perf_counter() - t0

    if "flops" in sections:
        log("bench: FLOPs anchors")
        timed("flops", flops_anchors)
    if "wallclock" in sections:
        timed("wallclock", lambda: wallclock.measure(models, quick, batches, repeats, steps, big_steps, BUDGETS))
        if wallclock_plot(report["wallclock"]["rows"], out / "wallclock.png"):
            report["wallclock"]["plot"] = "wallclock.png"
    if "quality" in sections:
        timed("quality", lambda: quality(quality_json, models, quick, out, quality_samples))
    if "memory" in sections:
        timed("memory", lambda: memory.measure(models, quick, threads))
    report["meta"]["seconds"] = time.perf_counter() - start
    text = markdown(report)
    (out / "bench.md").write_text(text)
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=float))
    return report | {"markdown": text}
