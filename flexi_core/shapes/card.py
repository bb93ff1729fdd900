"""Figures for the model card (assets/README.md): training curves and static-vs-flexible sample grids."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .evaluate import eval_set
from ..loading import load_model
from ..registry import get_spec
from ..sampling import budget_schedule, encode_condition, sample
from ..schedule import Schedule


CURVES = ("vae", "judge", "shapes", "shapes-text", "shapes-video")  # the shipped training-curves.png


def training_curves(runs: Path, out: Path, names=CURVES) -> bool:
    """Plots the losses logged under `runs/NAME/`; without any log (a fresh clone) the shipped figure stays. A
    progressive run (`train --weak-first`) shows its weak phase first, its native steps after it, and the seam."""
    logs = {name: log for name in names if (log := loss_log(runs / name))}
    if not logs:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    titles = {True: "diffusion transformers (v-prediction MSE)", False: "autoencoder (L1+L2) and judge (CE+geometry)"}
    panels = [k for k in titles if any(n.startswith("shapes") == k for n in logs)]  # one per kind that has a log
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for name, (steps, losses, seam) in logs.items():
        ax = axes[0][panels.index(name.startswith("shapes"))]
        line, = ax.plot(steps, losses, label=name if seam is None else f"{name} (weak patch for {seam} steps)")
        if seam is not None:
            ax.axvline(seam, color=line.get_color(), ls=":", lw=1)
    for ax, title in zip(axes[0], (titles[k] for k in panels)):
        ax.set(title=title, xlabel="step", yscale="log")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return True


def loss_log(run_dir: Path) -> tuple[list[int], list[float], int | None] | None:
    """(steps, losses, seam) of a run folder's log, or None without one; a weak phase (run_dir/weak-first) comes
    first and its last step is the seam where the native steps begin (None without a weak phase)."""
    def read(log: Path):
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return [r["step"] for r in rows], [r["loss"] for r in rows]
    steps, losses = read(run_dir / "log.jsonl")
    weak_steps, weak_losses = read(run_dir / "weak-first" / "log.jsonl")
    if not steps and not weak_steps:
        return None
    seam = weak_steps[-1] if weak_steps else None
    return weak_steps + [s + (seam or 0) for s in steps], weak_losses + losses, seam


def _first_reachable(model, budget: float, steps: int) -> Schedule | None:
    for mode in model.spec.weak_patches:
        try:
            return budget_schedule(model, budget, steps, model.spec.guidance, mode)
        except ValueError:  # below what this weak mode costs: try the next one
            continue
    return None


def sample_grid(name: str, out: Path, budgets=(1.0, 0.75, 0.55, 0.4), n: int = 8, steps: int | None = None,
                variant: str = "lora", scale: int = 3):
    """Rows: budgets (first row static), each with the first weak mode that reaches it (video: temporal, else
    spatial); columns: the first n evaluation conditions; videos show 4 frames."""
    spec = get_spec(name)
    model = load_model(name, variant)
    steps = steps or spec.steps
    _, _, conditions = eval_set(spec, n)
    cond = encode_condition(model, **({"class_label": conditions} if spec.conditioning == "class"
                                      else {"prompt": conditions}))
    rows = []
    for b in budgets:
        schedule = Schedule.static(steps) if b >= 1 else _first_reachable(model, b, steps)
        if schedule is None:
            continue
        px = sample(model, cond, schedule, list(range(n)), spec.guidance).pixels
        if px.ndim == 5:  # video: frames 0, 2, 4, 6 stacked vertically per sample
            px = np.concatenate([px[:, i] for i in range(0, px.shape[1], 2)], axis=1)
        rows.append(np.concatenate(list(px), axis=1))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(out)
    return conditions
