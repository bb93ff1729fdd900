"""Section 2, wall-clock vs FLOPs: seconds per native / weak step, per full sample at several budgets, realised
speed-up over ideal (FLOPs) speed-up, and the flexible wrapper's overhead at the native patch vs the plain diffusers
model. Every ratio is paired: the things compared run alternately in the same process, same inputs, same seeds."""
from __future__ import annotations

import statistics
import time

import torch

from .. import registry
from ..families import family_of
from ..flexible import NATIVE
from ..sampling import budget_schedule, sample
from ..schedule import Schedule
from .models import BIG_CONFIGS, EMBEDDED_CONFIGS, QUICK_LAYERS, build_model, has_weights, log, timing_condition


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


def _rotated(names: list, r: int) -> list:
    """Round r starts at its own name, so no measurement always runs first (or right after a cheaper one)."""
    return names[r % len(names):] + names[:r % len(names)]


def _paired_median(a: list, b: list) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def _step_inputs(model, condition, batch: int):
    """Latents, timesteps and conditioning of one denoiser call; a guided step is one batched forward of cond +
    uncond."""
    spec = model.spec
    guided = spec.guidance > 1
    rows = 2 * batch if guided else batch
    x = torch.randn(rows, *spec.latent_shape, generator=torch.Generator().manual_seed(0))
    t = torch.full((rows,), 500)
    expand = lambda v: v.expand(batch, *v.shape[1:])  # noqa: E731
    both = {k: torch.cat([expand(condition.cond[k]), expand(condition.uncond[k])]) if guided
            else expand(condition.cond[k]) for k in condition.cond}
    return x, t, both


def _time_steps(model, plain, condition, batch: int, repeats: int, min_seconds: float) -> dict:
    """One denoiser call per mode (native, weak, plain diffusers), alternating, after one warm-up call each."""
    flex = model.flexible
    weak = next(iter(flex.weak_modes))
    x, t, both = _step_inputs(model, condition, batch)
    calls = {NATIVE: lambda: flex(x, t, both, NATIVE), weak: lambda: flex(x, t, both, weak)}
    if plain is not None:
        plain_family = family_of(plain)
        calls["plain"] = lambda: plain_family.native_forward(x, t, both)
    names = list(calls)
    for name in names:
        calls[name]()
    seconds = {name: [] for name in names}

    def forward_round(r):
        for name in _rotated(names, r):
            seconds[name].append(_timed(calls[name]))

    done = _rounds(forward_round, repeats, min_seconds)
    rows = x.shape[0]
    flops_of = model.flops_of(rows)
    out = {"batch": batch, "rows_per_forward": rows, "guidance": model.spec.guidance, "repeats": done,
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
    return out


def _time_samples(model, condition, batch: int, steps: int, repeats: int, budgets, min_seconds: float) -> dict:
    """Full samples (denoiser only) at every budget and the static schedule, alternating, after warm-ups."""
    guidance, weak = model.spec.guidance, next(iter(model.flexible.weak_modes))
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
        for k in _rotated(keys, r):
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
    return {"steps": steps, "sample_repeats": sample_repeats, "static_sample_s": statistics.median(runs[static_key]),
            "budgets": budget_rows}


@torch.no_grad()
def time_config(model, plain, batch: int, steps: int, repeats: int, budgets, sweep: bool,
                min_seconds: float = 0.0) -> dict:
    """Per-step forwards (native, weak, plain diffusers) and, with `sweep`, full samples at every budget; the
    things compared alternate inside each repeat (order rotated) after one warm-up call each."""
    condition = timing_condition(model)
    out = _time_steps(model, plain, condition, batch, repeats, min_seconds)
    if sweep:
        out.update(_time_samples(model, condition, batch, steps, repeats, budgets, min_seconds))
    return out


def _plan(name: str, quick: bool, batches, steps_small: int, steps_big: int):
    """(configs, steps, batches, layers) for one model, or the reason it is not timed."""
    spec = registry.get_spec(name)
    if spec.embedded:
        if not has_weights(name):
            return f"{name}: no weights in {registry.ASSETS / name} (train and export it first)"
        return (EMBEDDED_CONFIGS[:1] if quick else EMBEDDED_CONFIGS), steps_small, batches, None
    if name not in BIG_CONFIGS:
        return f"{name}: not timed (the benchmark times the embedded models, DiT-XL/2 and PixArt-alpha)"
    if not quick:
        return BIG_CONFIGS[name], steps_big, batches, None
    if name != "dit-xl-2-256":
        return f"{name}: left out in quick mode"
    return (("shared", False),), steps_big, (1,), QUICK_LAYERS


def measure(models, quick: bool, batches, repeats: int, steps_small: int, steps_big: int, budgets) -> dict:
    """Rows of `time_config` for each model and configuration the plan names, and the models left out."""
    rows, skipped = [], []
    for name in models:
        plan = _plan(name, quick, batches, steps_small, steps_big)
        if isinstance(plan, str):
            skipped.append(plan)
            continue
        configs, steps, model_batches, layers = plan
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
