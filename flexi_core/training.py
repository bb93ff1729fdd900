"""The training loop every job shares: AdamW, warm-up then cosine decay, gradient clipping, an EMA copy, full
checkpoints (optimizer included) in a git-ignored run folder, a JSON-lines loss log; and the training-time
conditioning (classifier-free guidance's null condition, drawn with a given chance).
"""
from __future__ import annotations

import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .families import family_class

CHECKPOINT_SECONDS = 600


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
                 param_names: list[str] | None = None, time_limit: float | None = None,
                 bf16: bool = False) -> dict[str, torch.Tensor]:
    """Optimises `loss_fn(step)` for `steps` steps, resuming from `run_dir` if a checkpoint is there.

    `time_limit` (seconds of CPU time over all legs of the run, kept in the checkpoint, so that runs sharing a busy
    machine get the same compute) ends the run early with a checkpoint: a run of many legs, each within a session.
    A checkpoint is also written every `checkpoint_every` steps, every CHECKPOINT_SECONDS of wall-clock, and when
    SIGTERM or Ctrl-C asks the run to stop (at the end of the step in progress), so a stopped run loses minutes.

    `param_names` picks the trained parameters (default: those with requires_grad); they are all handed to the
    optimizer even while peft has frozen an inactive adapter. `bf16` runs `loss_fn` under bfloat16 autocast (weights,
    optimizer and EMA stay fp32), as on GPUs; on the development CPU (AVX512-BF16) a 256-token step of
    `shapes-textured` takes 2.3 instead of 3.5 CPU-s. Returns the EMA state dict."""
    run_dir.mkdir(parents=True, exist_ok=True)
    named = dict(model.named_parameters())
    names = param_names or [n for n, p in named.items() if p.requires_grad]
    params = [named[n] for n in names]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    ema = EMA(model, names, ema_decay)
    start, cpu_before = 0, 0.0
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True, map_location=params[0].device)  # our own file, tensors only
        model.load_state_dict(state["model"])
        ema.shadow = state["ema"]
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, cpu_before = state["step"], float(state.get("cpu_seconds", 0.0))
        print(f"[{name}] resumed at step {start}")

    def cpu_seconds() -> float:
        return cpu_before + time.process_time() - cpu0

    def save(step):
        torch.save({"model": model.state_dict(), "ema": ema.shadow, "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "step": step, "cpu_seconds": cpu_seconds()},
                   run_dir / "checkpoint.tmp")
        (run_dir / "checkpoint.tmp").replace(ckpt)
        save_file({k: v.contiguous().cpu() for k, v in ema.state_dict().items()}, run_dir / "ema.safetensors")

    model.train()
    t0, cpu0, saved_at, losses = time.time(), time.process_time(), time.time(), []
    with open(run_dir / "log.jsonl", "a") as log, tqdm(range(start, steps), desc=name, initial=start, total=steps,
                                                       mininterval=10) as bar, _StopRequests() as stop:
        for step in bar:
            with torch.autocast(params[0].device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(step).float()
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
            out_of_time = time_limit is not None and cpu_seconds() > time_limit
            if ((step + 1) % checkpoint_every == 0 or step + 1 == steps or out_of_time or stop.asked
                    or time.time() - saved_at > CHECKPOINT_SECONDS):
                save(step + 1)
                saved_at = time.time()
            if out_of_time or stop.asked:
                print(f"[{name}] {'time limit reached' if out_of_time else 'stopped'} at step {step + 1}; "
                      f"checkpoint saved, run again to resume")
                break
    model.eval()
    if stop.asked:
        raise KeyboardInterrupt
    return ema.state_dict()


class _StopRequests:
    """While a run trains, SIGTERM and SIGINT only ask it to stop after the step in progress (with a checkpoint);
    a second signal stops at once."""

    def __enter__(self):
        self.asked, self.previous = False, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._ask)
        return self

    def _ask(self, sig, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def load_ema(module: torch.nn.Module, run_dir: Path) -> torch.nn.Module:
    module.load_state_dict(load_file(run_dir / "ema.safetensors"))
    return module



class Conditioner:
    """Turns class ids or captions into the model's conditioning, with `drop_prob` of them replaced by the null
    condition (the unconditional branch of classifier-free guidance). `text_encoder(list[str]) -> (hidden, mask)`
    for text models."""

    def __init__(self, spec, text_encoder=None, null_label: int | None = None, drop_prob: float = 0.1):
        self.spec, self.drop_prob, self.encoder = spec, drop_prob, text_encoder
        self.null_label = len(spec.class_names) if null_label is None else null_label
        self.condition = family_class(spec.family).condition
        self.cache = {}  # caption -> (hidden, mask); the procedural captions repeat, the encoder is costly

    def encode(self, captions):
        missing = list(dict.fromkeys(c for c in captions if c not in self.cache))
        if missing:
            hidden, mask = self.encoder(missing)
            self.cache.update({c: (h.half(), m) for c, h, m in zip(missing, hidden, mask)})
        # fp32 before stacking: under CPU bfloat16 autocast (train --bf16) a stack of fp16 tensors is refused
        return (torch.stack([self.cache[c][0].float() for c in captions]),
                torch.stack([self.cache[c][1] for c in captions]))

    def __call__(self, labels: list[int] | None, captions: list[str] | None, generator: torch.Generator) -> dict:
        n = len(labels if labels is not None else captions)
        drop = (torch.rand(n, generator=generator) < self.drop_prob).tolist()
        if self.spec.conditioning == "class":
            return self.condition(torch.tensor([self.null_label if d else y for d, y in zip(drop, labels)]))
        return self.condition(None, *self.encode([("" if d else c) for d, c in zip(drop, captions)]))

    def null(self, n: int) -> dict:
        if self.spec.conditioning == "class":
            return self.condition(torch.full((n,), self.null_label))
        return self.condition(None, *self.encode([""] * n))


def disable_builtin_label_dropout(model):
    """diffusers' DiT drops labels independently inside every block in train mode; we drop once, consistently."""
    for module in model.modules():
        if module.__class__.__name__ == "LabelEmbedding":
            module.dropout_prob = 0.0


