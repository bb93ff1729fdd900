"""Section 4, memory: peak resident memory of static / flexible (LoRA unmerged) / flexible (merged copies) / shared,
each in a fresh process (VmHWM of that process, which, unlike ru_maxrss, is not inherited from the parent through
exec), minus a process that only imports; plus the parameter bytes of each configuration."""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .. import registry
from ..sampling import sample
from ..schedule import Schedule
from .models import BIG_CONFIGS, build_model, has_weights, log, param_bytes, timing_condition

METHOD = ("VmHWM of a fresh process after loading + one 2-step sample (batch 1, guidance), minus a process that "
          "only imports torch, diffusers and flexi_core")


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
    one weak and one native step); prints one JSON line. Every probe, the baseline too, imports this module and with
    it torch, diffusers' transformers, loading and sampling, so that the libraries' own memory cancels out."""
    if threads:
        torch.set_num_threads(threads)
    out = {"model": name, "config": config}
    if config != "baseline":
        model, _ = build_model(name, config, layers)
        out["param_bytes"] = param_bytes(model.flexible)
        schedule = Schedule(2, 2, 2) if config == "static" else Schedule(2, 1, 1, next(iter(model.flexible.weak_modes)))
        sample(model, timing_condition(model), schedule, 0, model.spec.guidance, decode=False)
    out["peak_rss_bytes"] = _peak_rss_bytes()
    print("PROBE " + json.dumps(out), flush=True)


def _run_probe(name, config, layers, threads) -> dict:
    code = f"from flexi_core.bench.memory import probe; probe({name!r}, {config!r}, {layers!r}, {threads!r})"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    for line in r.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[6:])
    raise RuntimeError(f"memory probe {name} [{config}] failed: {r.stderr.strip().splitlines()[-1:]}")


def _jobs(models, quick: bool):
    """(model, config) pairs to probe and the reasons for those left out."""
    jobs, skipped = [], []
    for name in models:
        spec = registry.get_spec(name)
        if spec.embedded and not has_weights(name):
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
    return jobs, skipped


def measure(models, quick: bool, threads: int | None) -> dict:
    """One probe per (model, config) besides the import-only baseline; rows relative to it and to static."""
    jobs, skipped = _jobs(models, quick)
    if not jobs:
        return {"rows": [], "skipped": skipped}
    log(f"bench: memory probes ({len(jobs) + 1} fresh processes)")
    with ThreadPoolExecutor(max_workers=2 if quick else 1) as pool:  # big models one at a time
        futures = [pool.submit(_run_probe, "shapes", "baseline", None, threads)]
        futures += [pool.submit(_run_probe, n, c, None, threads) for n, c in jobs]
        results = [f.result() for f in futures]
    baseline = results[0]["peak_rss_bytes"]
    static = {r["model"]: r for r in results[1:] if r["config"] == "static"}
    rows = [{**r, "baseline_bytes": baseline, "delta_bytes": r["peak_rss_bytes"] - baseline,
             "vs_static_bytes": r["peak_rss_bytes"] - static[r["model"]]["peak_rss_bytes"],
             "param_ratio": r["param_bytes"] / static[r["model"]]["param_bytes"]} for r in results[1:]]
    return {"rows": rows, "baseline_bytes": baseline, "skipped": skipped, "method": METHOD}
