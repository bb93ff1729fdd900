"""FlexiDiT distillation: the frozen native model teaches its weak patch sizes (the paper's method, Sec. 3.2).

`||eps(x_t; native) - eps(x_t; weak)||^2`, patch size drawn per batch, x_t from the teacher's own guided sampling
trajectories (data-free, any checkpoint) or from a dataset. The shared variant fine-tunes every weight and also
distils the native size against a frozen copy of the original; the LoRA variant trains only the new layers and
adapters, so its native size stays the original model exactly.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from .errors import FlexiDiTError
from .flexible import NATIVE, FlexibleTransformer
from .guidance import guided
from .training import Conditioner, disable_builtin_label_dropout, run_training


class TrajectoryPool:
    """Data-free x_t: states from the teacher's own DDIM trajectories (with guidance), with their timesteps and
    conditions. Refreshed with a new batch of trajectories every `refresh` training steps; only states at
    t >= `min_timestep` are kept. `teacher` is a FlexibleTransformer-like callable (x, t, cond, mode) with a `family`,
    run at the native size."""

    def __init__(self, teacher, spec, draw_condition, null_condition, batch_size: int, guidance: float,
                 scheduler_config: dict, refresh: int = 8, seed: int = 0, min_timestep: int = 0):
        from diffusers import DDIMScheduler
        self.teacher, self.spec, self.draw, self.null = teacher, spec, draw_condition, null_condition
        self.batch_size, self.guidance, self.refresh, self.min_timestep = batch_size, guidance, refresh, min_timestep
        self.scheduler = DDIMScheduler.from_config(scheduler_config)
        self.gen = torch.Generator().manual_seed(seed)
        self.states, self.times, self.conds = None, None, None

    @torch.no_grad()
    def _trajectories(self, step: int):
        steps = [12, 25, 50][int(torch.randint(3, (1,), generator=self.gen))]
        self.scheduler.set_timesteps(steps)
        cond = self.draw(step, self.batch_size)
        null = self.null(self.batch_size)
        x = torch.randn((self.batch_size, *self.spec.latent_shape), generator=self.gen)
        states, times = [], []
        for t in self.scheduler.timesteps:
            if t < self.min_timestep:  # the rest of the trajectory is never served by a weak model
                break
            states.append(x)
            times.append(t.expand(self.batch_size))
            x = self.scheduler.step(guided(self.teacher, x, t, cond, null, self.guidance, NATIVE), t, x).prev_sample
        repeat = lambda v: v.repeat(len(states), *([1] * (v.ndim - 1)))  # noqa: E731
        self.states, self.times = torch.cat(states), torch.cat(times)
        self.conds = {k: repeat(v) for k, v in cond.items()}

    def batch(self, step: int):
        if self.states is None or step % self.refresh == 0:
            self._trajectories(step)
        idx = torch.randint(len(self.states), (self.batch_size,), generator=self.gen)
        return self.states[idx], self.times[idx], {k: v[idx] for k, v in self.conds.items()}


def distill(flexible, spec, steps: int, batch_size: int, run_dir: Path, draw_condition, null_condition,
            scheduler_config: dict, source: str = "self", data_batch=None, lr: float = 5e-4,
            guidance: float | None = None, min_timestep: int = 0) -> dict:
    """Distils the frozen native model into the weak patch sizes: ||eps(x_t; native) - eps(x_t; weak)||^2.

    source "self" takes x_t from the teacher's own sampling trajectories (data-free); "data" uses `data_batch(step)`
    -> (x_t, t, cond). `min_timestep`: self-drawn states only at t >= it (the noisy steps a weak model serves; for
    "data", `data_batch` draws its own t). The shared variant fine-tunes every weight and also distils the native
    size (patch size drawn per batch), against a frozen copy of the original; the LoRA variant trains only the new
    layers and adapters."""
    disable_builtin_label_dropout(flexible.base)
    if flexible.variant == "shared":  # a frozen copy of the original, native size only
        teacher = FlexibleTransformer(copy.deepcopy(flexible.base).eval().requires_grad_(False), {}, "shared")
        modes = list(flexible.patches)
        names = [n for n, _ in flexible.named_parameters()]
    else:
        teacher = flexible  # adapters off at the native size = the frozen original
        modes = list(flexible.weak_modes)
        names = [n for n, _ in flexible.named_parameters() if "lora_" in n or not n.startswith("base.")]
    device = next(flexible.parameters()).device  # batches are drawn on the CPU and moved over

    def on_device(x, t, cond):
        return x.to(device), t.to(device), {k: v.to(device) for k, v in cond.items()}

    pool = TrajectoryPool(_OnDevice(teacher, on_device), spec, draw_condition, null_condition, batch_size,
                          guidance or spec.guidance, scheduler_config,
                          min_timestep=min_timestep) if source == "self" else None
    gen = torch.Generator().manual_seed(2)

    def loss_fn(step):
        x, t, cond = on_device(*(pool.batch(step) if pool else data_batch(step)))
        mode = modes[int(torch.randint(len(modes), (1,), generator=gen))]
        with torch.no_grad():
            target = teacher(x, t, cond, NATIVE)
        return (flexible(x, t, cond, mode) - target).pow(2).mean()

    flexible.train()
    state = run_training(f"flexify-{flexible.variant}", flexible, loss_fn, steps, run_dir, lr=lr, warmup=50,
                         ema_decay=0.99, checkpoint_every=100, param_names=names)
    flexible.load_state_dict(state)
    return {"steps": steps, "batch_size": batch_size, "source": source, "modes": modes, "min_timestep": min_timestep}


class _OnDevice:
    """The teacher seen from the CPU: inputs move to its device, predictions come back."""

    def __init__(self, teacher, on_device):
        self.teacher, self.on_device, self.family = teacher, on_device, teacher.family

    def __call__(self, x, t, cond, mode):
        x, t, cond = self.on_device(x, t, cond)
        return self.teacher(x, t, cond, mode).cpu()


def condition_sampler(model, prompts_file: str | None = None, captions=None):
    """(draw(step, n) -> conditioning with 10% nulls, null(n) -> null conditioning) for distillation.

    Class models draw random classes; text models draw lines of a prompts file or `captions(step, n)` (the
    embedded models' procedural captions, `train.procedural_captions`)."""
    spec = model.spec
    null_label = model.flexible.base.config.get("num_embeds_ada_norm") if spec.conditioning == "class" else None
    conditioner = Conditioner(spec, model.text_encoder, null_label)
    gen = torch.Generator().manual_seed(3)
    prompts = None
    if prompts_file:
        prompts = [line.strip() for line in Path(prompts_file).read_text().splitlines() if line.strip()]
    elif spec.conditioning == "text" and captions is None:
        raise FlexiDiTError(f"{spec.name} needs --prompts FILE (one prompt per line) for data-free flexify")

    def draw(step: int, n: int) -> dict:
        if spec.conditioning == "class":
            count = len(spec.class_names) or null_label
            return conditioner(torch.randint(count, (n,), generator=gen).tolist(), None, gen)
        if prompts:
            return conditioner(None, [prompts[i] for i in torch.randint(len(prompts), (n,), generator=gen)], gen)
        return conditioner(None, captions(step, n), gen)

    return draw, conditioner.null


