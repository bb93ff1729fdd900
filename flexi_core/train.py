"""Training loops: the embedded models' autoencoder and base transformers, and FlexiDiT distillation.

One resumable loop (`run_training`) serves every job: AdamW, warm-up then cosine decay, gradient clipping, an EMA copy,
full checkpoints (optimizer included) in a git-ignored run folder and a JSON-lines loss log for the training curves.
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from . import data


class EMA:
    """Exponential moving average of the trained parameters; `state_dict` is the module's with EMA values in."""

    def __init__(self, module: torch.nn.Module, names: list[str], decay: float):
        self.module, self.decay = module, decay
        params = dict(module.named_parameters())
        self.shadow = {n: params[n].detach().clone() for n in names}

    @torch.no_grad()
    def update(self, step: int):
        decay = min(self.decay, (1 + step) / (10 + step))  # fast start, as in the DiT/diffusers recipes
        params = dict(self.module.named_parameters())
        for n, s in self.shadow.items():
            s.lerp_(params[n], 1 - decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.module.state_dict(), **self.shadow}


def run_training(name: str, model: torch.nn.Module, loss_fn: Callable[[int], torch.Tensor], steps: int,
                 run_dir: Path, lr: float = 1e-3, weight_decay: float = 0.0, warmup: int = 200,
                 grad_clip: float = 1.0, ema_decay: float = 0.999, checkpoint_every: int = 500,
                 param_names: list[str] | None = None, time_limit: float | None = None) -> dict[str, torch.Tensor]:
    """Optimises `loss_fn(step)` for `steps` steps, resuming from `run_dir` if a checkpoint is there.

    `time_limit` (seconds of this process's CPU time, so that legs sharing a busy machine get the same compute) ends
    the leg early with a checkpoint: a run of many legs, each within a session's time.

    `param_names` picks the trained parameters (default: those with requires_grad); they are all handed to the
    optimizer even while peft has frozen an inactive adapter. Returns the EMA state dict."""
    run_dir.mkdir(parents=True, exist_ok=True)
    named = dict(model.named_parameters())
    names = param_names or [n for n, p in named.items() if p.requires_grad]
    params = [named[n] for n in names]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    ema = EMA(model, names, ema_decay)
    start = 0
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True, map_location=params[0].device)  # our own file, tensors only
        model.load_state_dict(state["model"])
        ema.shadow = state["ema"]
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = state["step"]
        print(f"[{name}] resumed at step {start}")

    def save(step):
        torch.save({"model": model.state_dict(), "ema": ema.shadow, "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "step": step}, run_dir / "checkpoint.tmp")
        (run_dir / "checkpoint.tmp").replace(ckpt)
        save_file({k: v.contiguous().cpu() for k, v in ema.state_dict().items()}, run_dir / "ema.safetensors")

    model.train()
    t0, cpu0, losses = time.time(), time.process_time(), []
    with open(run_dir / "log.jsonl", "a") as log, tqdm(range(start, steps), desc=name, initial=start, total=steps,
                                                       mininterval=10) as bar:
        for step in bar:
            loss = loss_fn(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            sched.step()
            ema.update(step)
            losses.append(loss.item())
            if (step + 1) % 50 == 0:
                mean = float(np.mean(losses))
                log.write(json.dumps({"step": step + 1, "loss": mean, "lr": sched.get_last_lr()[0],
                                      "seconds": time.time() - t0}) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{mean:.4f}")
                losses = []
            out_of_time = time_limit is not None and time.process_time() - cpu0 > time_limit
            if (step + 1) % checkpoint_every == 0 or step + 1 == steps or out_of_time:
                save(step + 1)
            if out_of_time:
                print(f"[{name}] time limit reached at step {step + 1}; run again to resume")
                break
    model.eval()
    return ema.state_dict()


def load_ema(module: torch.nn.Module, run_dir: Path) -> torch.nn.Module:
    module.load_state_dict(load_file(run_dir / "ema.safetensors"))
    return module


def numpy_batch(step: int, batch_size: int, seed_offset: int, video: bool = False, paraphrase: float = 0.0):
    """Fresh procedural samples for a training step: (pixels in [-1, 1] as numpy, scenes, captions).

    Torch-free, so that worker processes forked from a process that already runs torch's thread pool never touch it."""
    seeds = seed_offset + step * batch_size + np.arange(batch_size)
    pixels, scenes, captions = data.batch(seeds, video=video, paraphrase=paraphrase)
    # contiguous: a strided view and its pickled (contiguous) copy would convolve with different rounding
    return np.ascontiguousarray(data.to_tensor_range(pixels)), scenes, captions


def pixel_batch(step: int, batch_size: int, seed_offset: int, video: bool = False):
    pixels, scenes, captions = numpy_batch(step, batch_size, seed_offset, video)
    return torch.from_numpy(pixels), scenes, captions


class PrefetchedBatches:
    """`pixel_batch` drawn ahead in worker processes, so that a GPU is not left waiting for the CPU's drawing.

    Batches stay a pure function of the step, so a run is the same with or without workers."""

    def __init__(self, batch_size: int, seed_offset: int, video: bool, workers: int, ahead: int = 8,
                 timeout: float = 600, paraphrase: float = 0.0):
        from concurrent.futures import ProcessPoolExecutor
        self.args, self.ahead, self.timeout = (batch_size, seed_offset, video, paraphrase), ahead, timeout
        self.pool = ProcessPoolExecutor(workers) if workers > 0 else None
        self.pending = {}

    def __call__(self, step: int):
        if self.pool is None:
            pixels, scenes, captions = numpy_batch(step, *self.args)
        else:
            for s in range(step, step + self.ahead):
                if s not in self.pending:
                    self.pending[s] = self.pool.submit(numpy_batch, s, *self.args)
            pixels, scenes, captions = self.pending.pop(step).result(self.timeout)  # a stuck worker raises
        return torch.from_numpy(pixels), scenes, captions

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


# --- the embedded autoencoder ------------------------------------------------------------------------------------

def train_vae(run_dir: Path, steps: int = 3000, batch_size: int = 32, kl_weight: float = 1e-6, name: str = "vae",
              time_limit: float | None = None):
    from .vae import build_embedded_vae
    vae = build_embedded_vae(name)

    def loss_fn(step):
        x, _, _ = pixel_batch(step, batch_size, seed_offset=10_000_000)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        return (rec - x).abs().mean() + (rec - x).pow(2).mean() + kl_weight * post.kl().mean()

    run_training(name, vae, loss_fn, steps, run_dir, lr=1e-3, ema_decay=0.995, time_limit=time_limit)


# --- the embedded base transformers ------------------------------------------------------------------------------

def init_like_dit(model: torch.nn.Module) -> torch.nn.Module:
    """The DiT paper's initialisation, which diffusers does not apply: Xavier linears, zero adaLN modulation and
    output projection (every block starts as the identity), small embeddings."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, torch.nn.Embedding):
            torch.nn.init.normal_(module.weight, std=0.02)
    for name, module in model.named_modules():
        is_modulation = name.endswith(("norm1.linear", "norm2.linear", "norm_out.linear", "adaln_single.linear",
                                       "proj_out_1"))
        is_output = name in ("proj_out", "proj_out_2")
        if isinstance(module, torch.nn.Linear) and (is_modulation or is_output):
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
        if "timestep_embedder.linear" in name or name.startswith("time_embedding.linear"):
            torch.nn.init.normal_(module.weight, std=0.02)
    return model


class Conditioner:
    """Turns procedural scenes/captions (or plain class ids/prompts) into the model's conditioning, with
    `drop_prob` of them replaced by the null condition (the unconditional branch of classifier-free guidance)."""

    def __init__(self, spec, text_encoder=None, null_label: int | None = None, drop_prob: float = 0.1):
        self.spec, self.drop_prob = spec, drop_prob
        self.null_label = len(spec.class_names) if null_label is None else null_label
        self.encoder = text_encoder
        if spec.conditioning == "text" and text_encoder is None:
            from .text import load_minilm
            self.encoder = load_minilm()
        self.cache = {}  # caption -> (hidden, mask); the procedural captions repeat, the encoder is costly

    def encode(self, captions):
        missing = list(dict.fromkeys(c for c in captions if c not in self.cache))
        if missing:
            hidden, mask = self.encoder(missing)
            self.cache.update({c: (h.half(), m) for c, h, m in zip(missing, hidden, mask)})
        return (torch.stack([self.cache[c][0] for c in captions]).float(),
                torch.stack([self.cache[c][1] for c in captions]))

    def __call__(self, labels: list[int] | None, captions: list[str] | None, generator: torch.Generator) -> dict:
        n = len(labels if labels is not None else captions)
        drop = (torch.rand(n, generator=generator) < self.drop_prob).tolist()
        if self.spec.conditioning == "class":
            return {"class_labels": torch.tensor([self.null_label if d else y for d, y in zip(drop, labels)])}
        hidden, mask = self.encode([("" if d else c) for d, c in zip(drop, captions)])
        if self.spec.family == "pixart":
            return {"encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        return {"encoder_hidden_states": hidden}

    def null(self, n: int) -> dict:
        if self.spec.conditioning == "class":
            return {"class_labels": torch.full((n,), self.null_label)}
        hidden, mask = self.encode([""] * n)
        if self.spec.family == "pixart":
            return {"encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        return {"encoder_hidden_states": hidden}


def disable_builtin_label_dropout(model):
    """diffusers' DiT drops labels independently inside every block in train mode; we drop once, consistently."""
    for module in model.modules():
        if module.__class__.__name__ == "LabelEmbedding":
            module.dropout_prob = 0.0


def encode_latents(vae, pixels: torch.Tensor, scale: float, video: bool) -> torch.Tensor:
    """[-1, 1] pixels (B, [T,] 3, H, W) -> scaled latents in the transformer's layout."""
    with torch.no_grad():
        flat = pixels.flatten(0, 1) if video else pixels
        z = vae.encode(flat).latent_dist.sample() * scale
    return z.unflatten(0, pixels.shape[:2]) if video else z


def noised_latents(vae, pixels: torch.Tensor, scale: float, video: bool, noise_sched, gen: torch.Generator):
    """(x0, noise, t, x_t) on the VAE's device; noise and t come from `gen` on the CPU, so a run is the same on any
    device."""
    device = vae.device
    x0 = encode_latents(vae, pixels.to(device), scale, video)
    noise = torch.randn(x0.shape, generator=gen).to(device)
    t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(x0),), generator=gen).to(device)
    return x0, noise, t, noise_sched.add_noise(x0, noise, t)


def train_base(spec, vae, vae_scale: float, run_dir: Path, steps: int, batch_size: int, lr: float = 8e-4,
               device: str = "cpu", init_from: Path | None = None, data_workers: int = 0, paraphrase: float = 0.0,
               train_only: tuple[str, ...] = (), time_limit: float | None = None):
    """Trains (or resumes) a base transformer; `init_from` (exported weights) starts a new leg from a milestone
    instead of from scratch, e.g. on a GPU host that cannot take the git-ignored checkpoint along.

    `train_only` (parameter-name prefixes) freezes the rest: e.g. only the caption projection learns synonyms, so the
    transformer body, and with it every flexify file trained on it, stays valid."""
    from diffusers import DDPMScheduler
    from .registry import build_transformer
    model = init_like_dit(build_transformer(spec))
    if init_from is not None and not (run_dir / "checkpoint.pt").exists():
        weights = Path(init_from)
        file = weights / "diffusion_pytorch_model.safetensors" if weights.is_dir() else weights
        model.load_state_dict(load_file(file))
        print(f"[{spec.name}] new leg from {weights}")
    model.to(device)
    vae.to(device)
    disable_builtin_label_dropout(model)
    from .families import family_of
    family = family_of(model)
    noise_sched = DDPMScheduler(**spec.scheduler)
    conditioner = Conditioner(spec)
    video = spec.modality == "video"
    gen = torch.Generator().manual_seed(0)
    batches = PrefetchedBatches(batch_size, seed_offset=20_000_000, video=video, workers=data_workers,
                                paraphrase=paraphrase)

    def loss_fn(step):
        pixels, scenes, captions = batches(step)
        x0, noise, t, xt = noised_latents(vae, pixels, vae_scale, video, noise_sched, gen)
        target = noise_sched.get_velocity(x0, noise, t)
        cond = conditioner([sc.class_id for sc in scenes], captions, gen)
        pred = family.native_forward(xt, t, {k: v.to(device) for k, v in cond.items()})
        return (pred - target).pow(2).mean()

    if train_only:
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith(train_only))
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"no parameter of {spec.name} starts with {', '.join(train_only)}")
    try:
        run_training(spec.name, model, loss_fn, steps, run_dir, lr=lr, warmup=300, ema_decay=0.999,
                     time_limit=time_limit)
    finally:
        batches.close()
    return model


def finetune_vae_decoder(assets_vae: Path, run_dir: Path, steps: int = 1000, batch_size: int = 32):
    """Sharper decodes without moving the latent space: the encoder (which the transformers were trained on)
    stays frozen, only the decoder trains. Writes the result back to `assets_vae`, fp16."""
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(assets_vae, torch_dtype=torch.float32, use_safetensors=True)
    vae.requires_grad_(False)
    names = [n for n, p in vae.named_parameters() if n.startswith(("decoder.", "post_quant_conv."))]
    for n, p in vae.named_parameters():
        p.requires_grad_(n in names)
    vae.eval()  # no dropout; the loop sets train() but the autoencoder has none anyway

    def loss_fn(step):
        x, _, _ = pixel_batch(step, batch_size, seed_offset=80_000_000)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
        rec = vae.decode(z).sample
        return (rec - x).abs().mean() + (rec - x).pow(2).mean()

    state = run_training("vae-decoder", vae, loss_fn, steps, run_dir, lr=3e-4, warmup=50, ema_decay=0.995,
                         param_names=names)
    vae.load_state_dict(state)
    vae.to(torch.float16).save_pretrained(assets_vae, safe_serialization=True)


def export_vae(run_dir: Path, out_dir: Path, num_samples: int = 512, name: str = "vae") -> float:
    """EMA weights -> assets (fp16), with the latent scaling factor that gives unit-variance latents."""
    from .vae import build_embedded_vae
    vae = load_ema(build_embedded_vae(name), run_dir).eval()
    pixels, _, _ = pixel_batch(0, num_samples, seed_offset=30_000_000)
    with torch.no_grad():
        std = vae.encode(pixels).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.to(torch.float16).save_pretrained(out_dir, safe_serialization=True)
    return 1.0 / std


def export_transformer(model: torch.nn.Module, run_dir: Path, out_dir: Path):
    """EMA weights of a base transformer -> assets/<name>/transformer (fp16 safetensors + diffusers config)."""
    load_ema(model.cpu(), run_dir).to(torch.float16).save_pretrained(out_dir, safe_serialization=True)
    model.float()


# --- flexify: distil the native model into its weak patch sizes ----------------------------------------------------

class TrajectoryPool:
    """Data-free x_t: states from the teacher's own DDIM trajectories (with guidance), with their timesteps and
    conditions. Refreshed with a new batch of trajectories every `refresh` training steps."""

    def __init__(self, teacher, spec, draw_condition, null_condition, batch_size: int, guidance: float,
                 scheduler_config: dict, refresh: int = 8, seed: int = 0):
        from diffusers import DDIMScheduler
        self.teacher, self.spec, self.draw, self.null = teacher, spec, draw_condition, null_condition
        self.batch_size, self.guidance, self.refresh = batch_size, guidance, refresh
        self.scheduler = DDIMScheduler.from_config(scheduler_config)
        self.gen = torch.Generator().manual_seed(seed)
        self.states, self.times, self.conds = None, None, None

    @torch.no_grad()
    def _trajectories(self, step: int):
        steps = [12, 25, 50][int(torch.randint(3, (1,), generator=self.gen))]
        self.scheduler.set_timesteps(steps)
        cond = self.draw(step, self.batch_size)
        null = self.null(self.batch_size)
        both = {k: torch.cat([cond[k], null[k]]) for k in cond}
        x = torch.randn((self.batch_size, *self.spec.latent_shape), generator=self.gen)
        states, times = [], []
        for t in self.scheduler.timesteps:
            states.append(x)
            times.append(t.expand(self.batch_size))
            tt = t.expand(2 * self.batch_size)
            e_c, e_u = self.teacher(torch.cat([x, x]), tt, both).chunk(2)
            channels = x.shape[2 if x.ndim == 5 else 1]
            guided = (e_u + self.guidance * (e_c - e_u)).narrow(2 if x.ndim == 5 else 1, 0, channels)
            x = self.scheduler.step(guided, t, x).prev_sample
        repeat = lambda v: v.repeat(steps, *([1] * (v.ndim - 1)))  # noqa: E731
        self.states, self.times = torch.cat(states), torch.cat(times)
        self.conds = {k: repeat(v) for k, v in cond.items()}

    def batch(self, step: int):
        if self.states is None or step % self.refresh == 0:
            self._trajectories(step)
        idx = torch.randint(len(self.states), (self.batch_size,), generator=self.gen)
        return self.states[idx], self.times[idx], {k: v[idx] for k, v in self.conds.items()}


def distill(flexible, spec, steps: int, batch_size: int, run_dir: Path, draw_condition, null_condition,
            scheduler_config: dict, source: str = "self", data_batch=None, lr: float = 5e-4,
            guidance: float | None = None) -> dict:
    """Distils the frozen native model into the weak patch sizes: ||eps(x_t; native) - eps(x_t; weak)||^2.

    source "self" takes x_t from the teacher's own sampling trajectories (data-free); "data" uses `data_batch(step)`
    -> (x_t, t, cond). The shared variant fine-tunes every weight and also distils the native size (patch size drawn
    per batch), against a frozen copy of the original; the LoRA variant trains only the new layers and adapters."""
    from .families import family_of
    from .flexible import NATIVE
    disable_builtin_label_dropout(flexible.base)
    if flexible.variant == "shared":
        teacher_base = copy.deepcopy(flexible.base).eval().requires_grad_(False)
        teacher_family = family_of(teacher_base)
        teacher = lambda x, t, c: teacher_family.native_forward(x, t, c)  # noqa: E731
        modes = list(flexible.patches)
        names = [n for n, _ in flexible.named_parameters()]
    else:
        teacher = lambda x, t, c: flexible(x, t, c, NATIVE)  # noqa: E731  adapters off = the frozen original
        modes = list(flexible.weak_modes)
        names = [n for n, _ in flexible.named_parameters() if "lora_" in n or not n.startswith("base.")]
    device = next(flexible.parameters()).device  # batches are drawn on the CPU and moved over

    def on_device(x, t, cond):
        return x.to(device), t.to(device), {k: v.to(device) for k, v in cond.items()}

    pool = TrajectoryPool(lambda x, t, c: teacher(*on_device(x, t, c)).cpu(), spec, draw_condition, null_condition,
                          batch_size, guidance or spec.guidance, scheduler_config) if source == "self" else None
    gen = torch.Generator().manual_seed(2)

    def loss_fn(step):
        x, t, cond = on_device(*(pool.batch(step) if pool else data_batch(step)))
        mode = modes[int(torch.randint(len(modes), (1,), generator=gen))]
        with torch.no_grad():
            target = teacher(x, t, cond)
        return (flexible(x, t, cond, mode) - target).pow(2).mean()

    flexible.train()
    state = run_training(f"flexify-{flexible.variant}", flexible, loss_fn, steps, run_dir, lr=lr, warmup=50,
                         ema_decay=0.99, checkpoint_every=100, param_names=names)
    flexible.load_state_dict(state)
    return {"steps": steps, "batch_size": batch_size, "source": source, "modes": modes}


def condition_sampler(model, prompts_file: str | None = None, paraphrase: float = 0.0):
    """(draw(step, n) -> conditioning with 10% nulls, null(n) -> null conditioning) for flexify.

    Embedded models draw procedural classes/captions (text only: no images are needed; `paraphrase` as in
    `data.caption`); public models draw random ImageNet classes or lines of a prompts file."""
    spec = model.spec
    null_label = model.flexible.base.config.get("num_embeds_ada_norm") if spec.conditioning == "class" else None
    conditioner = Conditioner(spec, model.text_encoder, null_label)
    gen = torch.Generator().manual_seed(3)
    prompts = None
    if prompts_file:
        prompts = [line.strip() for line in Path(prompts_file).read_text().splitlines() if line.strip()]
    elif spec.conditioning == "text" and not spec.embedded:
        raise ValueError(f"{spec.name} needs --prompts FILE (one prompt per line) for data-free flexify")

    def draw(step: int, n: int) -> dict:
        if spec.conditioning == "class":
            count = len(spec.class_names) or null_label
            return conditioner(torch.randint(count, (n,), generator=gen).tolist(), None, gen)
        if prompts:
            return conditioner(None, [prompts[i] for i in torch.randint(len(prompts), (n,), generator=gen)], gen)
        seeds = 50_000_000 + step * n + np.arange(n)
        captions = [data.caption(data.random_scene(np.random.default_rng(s), video=spec.modality == "video"),
                                 np.random.default_rng(s + 1), video=spec.modality == "video", paraphrase=paraphrase)
                    for s in seeds]
        return conditioner(None, captions, gen)

    return draw, conditioner.null


def procedural_xt(model, batches: PrefetchedBatches):
    """x_t from the procedural dataset (embedded models): (x_t, t, conditioning) per step, on the VAE's device."""
    from diffusers import DDPMScheduler
    spec = model.spec
    conditioner = Conditioner(spec, model.text_encoder)
    noise_sched = DDPMScheduler.from_config(model.scheduler_config)
    gen = torch.Generator().manual_seed(4)
    video = spec.modality == "video"

    def data_batch(step: int):
        pixels, scenes, captions = batches(step)
        _, _, t, xt = noised_latents(model.vae, pixels, model.latent_scale, video, noise_sched, gen)
        return xt, t, conditioner([s.class_id for s in scenes], captions, gen)

    return data_batch
