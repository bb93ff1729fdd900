"""Training the embedded (toy-world) models: their autoencoders and base transformers, on procedural batches.

The loop itself is `training.run_training`; the paper's distillation is `distill.py`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from . import data
from ..errors import FlexiDiTError
from ..training import Conditioner, disable_builtin_label_dropout, load_ema, run_training


def numpy_batch(step: int, batch_size: int, seed_offset: int, video: bool = False, paraphrase: float = 0.0,
                textured: bool = False):
    """Fresh procedural samples for a training step: (pixels in [-1, 1] as numpy, scenes, captions).

    Torch-free, so that worker processes forked from a process that already runs torch's thread pool never touch it."""
    seeds = seed_offset + step * batch_size + np.arange(batch_size)
    pixels, scenes, captions = data.batch(seeds, video=video, paraphrase=paraphrase, textured=textured)
    # contiguous: a strided view and its pickled (contiguous) copy would convolve with different rounding
    return np.ascontiguousarray(data.to_tensor_range(pixels)), scenes, captions


def pixel_batch(step: int, batch_size: int, seed_offset: int, video: bool = False, textured: bool = False):
    pixels, scenes, captions = numpy_batch(step, batch_size, seed_offset, video, textured=textured)
    return torch.from_numpy(pixels), scenes, captions


class PrefetchedBatches:
    """`pixel_batch` drawn ahead in worker processes, so that a GPU is not left waiting for the CPU's drawing.

    Batches stay a pure function of the step, so a run is the same with or without workers."""

    def __init__(self, batch_size: int, seed_offset: int, video: bool, workers: int, ahead: int = 8,
                 timeout: float = 600, paraphrase: float = 0.0, textured: bool = False):
        from concurrent.futures import ProcessPoolExecutor
        self.args = (batch_size, seed_offset, video, paraphrase, textured)
        self.ahead, self.timeout = ahead, timeout
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

def train_vae(run_dir: Path, steps: int = 2000, batch_size: int = 32, lr: float = 1e-3, kl_weight: float = 1e-6,
              name: str = "vae", time_limit: float | None = None):
    from .vae import TEXTURED_VAES, build_embedded_vae
    vae = build_embedded_vae(name)

    def loss_fn(step):
        x, _, _ = pixel_batch(step, batch_size, seed_offset=data.SEEDS["vae"], textured=name in TEXTURED_VAES)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        return (rec - x).abs().mean() + (rec - x).pow(2).mean() + kl_weight * post.kl().mean()

    run_training(name, vae, loss_fn, steps, run_dir, lr=lr, ema_decay=0.995, time_limit=time_limit)


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


def encode_latents(vae, pixels: torch.Tensor, scale: float, video: bool) -> torch.Tensor:
    """[-1, 1] pixels (B, [T,] 3, H, W) -> scaled latents in the transformer's layout."""
    with torch.no_grad():
        flat = pixels.flatten(0, 1) if video else pixels
        z = vae.encode(flat).latent_dist.sample() * scale
    return z.unflatten(0, pixels.shape[:2]) if video else z


def noised_latents(vae, pixels: torch.Tensor, scale: float, video: bool, noise_sched, gen: torch.Generator,
                   min_timestep: int = 0):
    """(x0, noise, t, x_t) on the VAE's device, t uniform in [min_timestep, T); noise and t come from `gen` on the CPU,
    so a run is the same on any device."""
    device = vae.device
    x0 = encode_latents(vae, pixels.to(device), scale, video)
    noise = torch.randn(x0.shape, generator=gen).to(device)
    t = torch.randint(min_timestep, noise_sched.config.num_train_timesteps, (len(x0),), generator=gen).to(device)
    return x0, noise, t, noise_sched.add_noise(x0, noise, t)


def train_base(spec, vae, vae_scale: float, run_dir: Path, steps: int = 5500, batch_size: int = 32, lr: float = 8e-4,
               device: str = "cpu", init_from: Path | None = None, data_workers: int = 0, paraphrase: float = 0.0,
               train_only: tuple[str, ...] = (), time_limit: float | None = None, weak_first: int = 0,
               bf16: bool = False):
    """Trains (or resumes) a base transformer; `init_from` (exported weights) starts a new leg from a milestone
    instead of from scratch, e.g. on a GPU host that cannot take the git-ignored checkpoint along.

    `weak_first` (steps): progressive training. The model first learns through its first weak patch (a quarter of
    the tokens at twice the patch side: about a quarter of the cost a step; shared variant, in run_dir/weak-first),
    then its native layers are the weak ones PI-resized (`native_from_weak`) and training goes on at the native
    patch for `steps` more. Returns None while the weak phase is unfinished (out of time: run again to resume).

    `train_only` (parameter-name prefixes) freezes the rest: e.g. only the caption projection learns synonyms, so the
    transformer body, and with it every flexify file trained on it, stays valid. `bf16`: the forward under bfloat16
    autocast (`run_training`)."""
    from diffusers import DDPMScheduler
    from ..registry import build_transformer
    model = init_like_dit(build_transformer(spec))
    if init_from is not None and not (run_dir / "checkpoint.pt").exists():
        weights = Path(init_from)
        file = weights / "diffusion_pytorch_model.safetensors" if weights.is_dir() else weights
        model.load_state_dict(load_file(file))
        print(f"[{spec.name}] new leg from {weights}")
    model.to(device)
    vae.to(device)
    disable_builtin_label_dropout(model)
    from ..families import family_of
    family = family_of(model)
    noise_sched = DDPMScheduler(**spec.scheduler)
    text_encoder = None
    if spec.conditioning == "text":
        from .text import load_minilm
        text_encoder = load_minilm()
    conditioner = Conditioner(spec, text_encoder)
    video = spec.modality == "video"
    gen = torch.Generator().manual_seed(0)
    batches = PrefetchedBatches(batch_size, seed_offset=data.SEEDS["base"], video=video, workers=data_workers,
                                paraphrase=paraphrase, textured=spec.textured)

    def velocity_loss(forward):
        def loss_fn(step):
            pixels, scenes, captions = batches(step)
            x0, noise, t, xt = noised_latents(vae, pixels, vae_scale, video, noise_sched, gen)
            target = noise_sched.get_velocity(x0, noise, t)
            cond = conditioner(class_ids(spec, scenes), captions, gen)
            return (forward(xt, t, {k: v.to(device) for k, v in cond.items()}) - target).pow(2).mean()
        return loss_fn

    try:
        if weak_first:  # --minutes counts both phases
            phase = run_dir / "weak-first"
            if not (run_dir / "checkpoint.pt").exists():
                spent = _train_weak_first(model, spec, velocity_loss, weak_first, phase, lr, time_limit, bf16)
            else:  # the native phase resumes (a run begun without --weak-first has no weak phase to count)
                spent = _checkpoint(phase)["cpu_seconds"] if (phase / "checkpoint.pt").exists() else 0.0
            if spent is None:
                return None
            time_limit = None if time_limit is None else time_limit - spent
        if train_only:
            for n, p in model.named_parameters():
                p.requires_grad_(n.startswith(train_only))
            if not any(p.requires_grad for p in model.parameters()):
                raise FlexiDiTError(f"no parameter of {spec.name} starts with {', '.join(train_only)}")
        run_training(spec.name, model, velocity_loss(family.native_forward), steps, run_dir, lr=lr,
                     warmup=50 if weak_first else 300, ema_decay=0.999, time_limit=time_limit, bf16=bf16)
    finally:
        batches.close()
    return model


def _train_weak_first(model, spec, velocity_loss, steps: int, run_dir: Path, lr: float,
                      time_limit: float | None, bf16: bool) -> float | None:
    """The weak phase of progressive training (`train_base`'s `weak_first`); leaves `model` with its EMA weights and
    native layers from the weak ones. Returns the CPU seconds it took, None while unfinished."""
    from ..flexible import FlexibleTransformer
    flex = FlexibleTransformer(model, spec.weak_patches, variant="shared").to(next(model.parameters()).device)
    mode, family = next(iter(spec.weak_patches)), flex.family
    native = {t.data_ptr() for t in (*family.native_embedding(), *family.native_output_projection())}
    names = [n for n, p in flex.named_parameters() if p.data_ptr() not in native]  # the native layers get no gradient
    ema = run_training(f"{spec.name} ({mode} patch first)", flex,
                       velocity_loss(lambda x, t, cond: flex(x, t, cond, mode=mode)), steps, run_dir, lr=lr,
                       warmup=300, ema_decay=0.999, param_names=names, time_limit=time_limit, bf16=bf16)
    state = _checkpoint(run_dir)
    if state["step"] < steps:
        print(f"[{spec.name}] weak phase at step {state['step']} of {steps}; run again to resume")
        return None
    flex.load_state_dict(ema)
    flex.native_from_weak(mode)
    print(f"[{spec.name}] weak phase done ({steps} steps): native layers from the weak ones, native training next")
    return float(state["cpu_seconds"])


def _checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True, map_location="cpu")


def finetune_vae_decoder(assets_vae: Path, run_dir: Path, steps: int = 800, batch_size: int = 32, lr: float = 3e-4):
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
        x, _, _ = pixel_batch(step, batch_size, seed_offset=data.SEEDS["vae-decoder"])
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
        rec = vae.decode(z).sample
        return (rec - x).abs().mean() + (rec - x).pow(2).mean()

    state = run_training("vae-decoder", vae, loss_fn, steps, run_dir, lr=lr, warmup=50, ema_decay=0.995,
                         param_names=names)
    vae.load_state_dict(state)
    vae.to(torch.float16).save_pretrained(assets_vae, safe_serialization=True)


def export_vae(run_dir: Path, out_dir: Path, num_samples: int = 512, name: str = "vae") -> float:
    """EMA weights -> assets (fp16), with the latent scaling factor that gives unit-variance latents."""
    from .vae import TEXTURED_VAES, build_embedded_vae
    vae = load_ema(build_embedded_vae(name), run_dir).eval()
    pixels, _, _ = pixel_batch(0, num_samples, seed_offset=data.SEEDS["vae-scale"], textured=name in TEXTURED_VAES)
    with torch.no_grad():
        std = vae.encode(pixels).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.to(torch.float16).save_pretrained(out_dir, safe_serialization=True)
    return 1.0 / std


def export_transformer(model: torch.nn.Module, run_dir: Path, out_dir: Path):
    """EMA weights of a base transformer -> assets/<name>/transformer (fp16 safetensors + diffusers config)."""
    load_ema(model.cpu(), run_dir).to(torch.float16).save_pretrained(out_dir, safe_serialization=True)
    model.float()



def class_ids(spec, scenes) -> list[int] | None:
    """The class labels of procedural scenes in a class model's world (textured: one per colour, texture, shape)."""
    return [spec.class_names.index(spec.class_of(s)) for s in scenes] if spec.conditioning == "class" else None


def procedural_xt(model, batches: PrefetchedBatches, min_timestep: int = 0):
    """x_t from the procedural dataset (embedded models): (x_t, t, conditioning) per step, on the VAE's device;
    t >= `min_timestep` (distillation on the noisy steps a weak model serves)."""
    from diffusers import DDPMScheduler
    spec = model.spec
    conditioner = Conditioner(spec, model.text_encoder)
    noise_sched = DDPMScheduler.from_config(model.scheduler_config)
    gen = torch.Generator().manual_seed(4)
    video = spec.modality == "video"

    def data_batch(step: int):
        pixels, scenes, captions = batches(step)
        _, _, t, xt = noised_latents(model.vae, pixels, model.latent_scale, video, noise_sched, gen, min_timestep)
        return xt, t, conditioner(class_ids(spec, scenes), captions, gen)

    return data_batch


def procedural_captions(spec, paraphrase: float = 0.0):
    """captions(step, n): fresh procedural captions for data-free distillation of the embedded text models (no images
    needed); `paraphrase` as in `data.caption`."""
    video = spec.modality == "video"

    def captions(step: int, n: int) -> list[str]:
        seeds = data.SEEDS["distill-captions"] + step * n + np.arange(n)
        return [data.caption(data.random_scene(np.random.default_rng(s), video=video, textured=spec.textured),
                             np.random.default_rng(s + 1), video=video, paraphrase=paraphrase) for s in seeds]

    return captions
