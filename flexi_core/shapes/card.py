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


def training_curves(runs: Path, out: Path, names=("vae", "judge", "shapes", "shapes-text", "shapes-video")) -> bool:
    """Plots the losses logged under `runs/NAME/`; without any log (a fresh clone) the shipped figure stays."""
    logs = {name: runs / name / "log.jsonl" for name in names if (runs / name / "log.jsonl").exists()}
    if not logs:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, log in logs.items():
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
        ax = axes[0] if name.startswith("shapes") else axes[1]
        ax.plot(steps, losses, label=name)
    axes[0].set(title="diffusion transformers (v-prediction MSE)", xlabel="step", yscale="log")
    axes[1].set(title="autoencoder (L1+L2) and judge (CE+geometry)", xlabel="step", yscale="log")
    for ax in axes:
        if ax.lines:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return True


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
