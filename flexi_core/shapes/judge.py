"""The judge: a small CNN trained on the procedural data that reads a sample's colour, shape, background, position
and size (and, frame by frame, a video's motion). It scores what the generators draw, and its features give the
Fréchet distance between generated and real samples. A judge trained on textured data (`train_judge(textured=True)`)
has one more head, which reads the object's texture; the shipped judge has none and reads no texture."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from . import data

HEADS = {"colour": list(data.COLOURS), "shape": list(data.SHAPES), "background": list(data.BACKGROUNDS),
         "texture": list(data.TEXTURES)}


class Judge(nn.Module):
    def __init__(self, width: int = 32, features: int = 128, texture: bool = False):
        """`texture`: with the texture head (a judge of textured data)."""
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1),
                                 nn.GELU(), nn.MaxPool2d(2))

        self.body = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width),
                                  nn.Flatten(), nn.Linear(4 * width * 16, features), nn.GELU())
        self.heads = nn.ModuleDict({k: nn.Linear(features, len(v)) for k, v in HEADS.items()
                                    if texture or k != "texture"})
        self.geometry = nn.Linear(features, 3)  # centre x, centre y, radius, divided by the image size

    def forward(self, x: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return {k: h(f) for k, h in self.heads.items()}, self.geometry(f), f

    @torch.no_grad()
    def read(self, pixels: np.ndarray) -> list[dict]:
        """uint8 (N, H, W, 3) -> per image: colour, shape, background, (texture,) cx, cy, radius, position and size
        words."""
        logits, geo, _ = self(torch.from_numpy(data.to_tensor_range(pixels)))
        geo = (geo * data.IMAGE_SIZE).numpy()
        out = []
        for i in range(len(pixels)):
            item = {k: HEADS[k][int(v[i].argmax())] for k, v in logits.items()}
            cx, cy, r = (float(v) for v in geo[i])
            item.update(cx=cx, cy=cy, radius=r, position=data.position_word(cx, cy), size=data.size_word(r))
            out.append(item)
        return out

    @torch.no_grad()
    def features(self, pixels: np.ndarray) -> np.ndarray:
        return self(torch.from_numpy(data.to_tensor_range(pixels)))[2].numpy()

    def read_video(self, frames: np.ndarray) -> dict:
        """uint8 (T, H, W, 3): the first frame's reading plus the direction of motion over the first two frames."""
        reads = self.read(frames)
        dx, dy = reads[1]["cx"] - reads[0]["cx"], reads[1]["cy"] - reads[0]["cy"]
        direction = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
        return {**reads[0], "direction": direction}


    def accuracy(self, pixels: np.ndarray, scenes: list) -> dict[str, float]:
        """Per attribute the judge reads (texture only with its head), the fraction of samples read as drawn."""
        reads = self.read(pixels)
        truth = {k: [getattr(s, k) for s in scenes] for k in self.heads}
        truth.update(position=[s.position_word for s in scenes], size=[s.size_word for s in scenes])
        return {k: float(np.mean([r[k] == v for r, v in zip(reads, values)])) for k, values in truth.items()}


def _targets(scenes, heads):
    cls = {k: torch.tensor([HEADS[k].index(getattr(s, k)) for s in scenes]) for k in heads}
    geo = torch.tensor([[s.cx, s.cy, s.radius] for s in scenes], dtype=torch.float32) / data.IMAGE_SIZE
    return cls, geo


def train_judge(run_dir: Path, steps: int = 2000, batch_size: int = 64, lr: float = 2e-3, textured: bool = False,
                init_from: Path | None = None, geometry_weight: float = 20.0):
    """`textured`: on textured data (a quarter of it plain), with the texture head; its own seed stream.
    `init_from`: start from an exported judge (e.g. the shipped one; a texture head it lacks starts fresh).
    `geometry_weight`: of the centre and radius regression (in image sizes) beside the heads' cross-entropies; at the
    shipped judge's 20 it is a small part of the loss and reads them to half a pixel on textured data."""
    from .train import pixel_batch
    from ..training import run_training
    judge = Judge(texture=textured)
    if init_from is not None:
        judge.load_state_dict(load_judge(init_from).state_dict(), strict=False)
    gen = torch.Generator().manual_seed(1)
    seed_offset = data.SEEDS["judge-texture" if textured else "judge"]

    def loss_fn(step):
        x, scenes, _ = pixel_batch(step, batch_size, seed_offset=seed_offset, textured=textured)
        # robustness to what generators draw: slight blur and noise on part of the batch
        blur = torch.rand(batch_size, 1, 1, 1, generator=gen) < 0.3
        x = torch.where(blur, F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), x)
        x = x + 0.05 * torch.rand(batch_size, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
        logits, geo, _ = judge(x)
        cls, geo_t = _targets(scenes, judge.heads)
        return sum(F.cross_entropy(logits[k], cls[k]) for k in judge.heads) + geometry_weight * F.mse_loss(geo, geo_t)

    state = run_training("judge", judge, loss_fn, steps, run_dir, lr=lr, warmup=100, ema_decay=0.99)
    judge.load_state_dict(state)
    return judge


def export_judge(run_dir: Path, path: Path):
    save_file({k: v.half().contiguous() for k, v in load_file(run_dir / "ema.safetensors").items()}, path)


def load_judge(path: Path) -> Judge:
    if not path.exists():
        raise FileNotFoundError(f"judge weights not found at {path}; run `python -m flexi_core train --model judge "
                                f"--export`")
    from ..loading import BUILD_LOCK
    state = {k: v.float() for k, v in load_file(path).items()}
    with BUILD_LOCK:  # not while another thread's from_pretrained patches module construction (loading.py)
        judge = Judge(texture="heads.texture.weight" in state)  # the shipped judge has no texture head
    judge.load_state_dict(state)
    return judge.eval()
