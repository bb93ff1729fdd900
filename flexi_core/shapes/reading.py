"""What the judge reads in one generated sample of an embedded model, against what its condition asked for.

The app and `generate` show it under each result ("blue triangle on dark green: as asked" / what came out wrong), so
a visitor sees whether the flexible sample and its alternatives drew what was asked, not only how alike they look.
A free prompt is read word by word: the canonical words of the procedural world and their trained synonyms.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from . import data

_POSITIONS = tuple(f"{row} {col}".strip() for row in ("top", "bottom", "") for col in ("left", "right", "")
                   if row or col)


def _words(spec) -> dict[str, dict[str, str]]:
    """attribute -> {word or phrase in a condition: canonical value}, longest phrases first."""
    found = {}
    if spec.conditioning == "text":  # the scene's words first: "dark blue" is a background, not the object's colour
        found["background"] = ({f"{b} background": b for b in data.BACKGROUNDS}
                               | {f"on {b}": b for b in data.BACKGROUNDS} | {f"on a {b}": b for b in data.BACKGROUNDS})
        found["size"] = {s: s for s in data.SIZES}
        if spec.modality == "video":
            found["direction"] = {d: d for d in data.DIRECTIONS}
        else:
            found["position"] = {p: p for p in _POSITIONS} | {"centre": "centre", "center": "centre"}
    if spec.textured:
        found["texture"] = {t: t for t in data.TEXTURES}
    found["colour"] = {c: c for c in data.COLOURS} | {s: c for c in data.COLOURS for s in data.SYNONYMS[c]}
    found["shape"] = {s: s for s in data.SHAPES} | {w: s for s in data.SHAPES for w in data.SYNONYMS[s]}
    return {k: dict(sorted(v.items(), key=lambda item: -len(item[0]))) for k, v in found.items()}


def asked(spec, condition: str) -> dict[str, str]:
    """The attributes `condition` (a class name or a prompt) names, as canonical values."""
    text = f" {' '.join(re.findall(r'[a-z-]+', condition.lower()))} "
    want = {}
    for key, words in _words(spec).items():
        for word, value in words.items():
            if f" {word} " in text:
                want[key] = value
                text = text.replace(f" {word} ", " ; ", 1)  # a phrase names one attribute
                break
    return want


def read(judge, spec, pixels: np.ndarray) -> dict:
    """The judge's reading of one sample: uint8 (H, W, 3), or a video (T, H, W, 3) with its direction of motion."""
    return judge.read_video(pixels) if spec.modality == "video" else judge.read(pixels[None])[0]


def describe(want: dict, got: dict) -> str:
    """'blue triangle on dark green: as asked', or what differs ('asked red, got blue')."""
    texture = f" {got['texture']}" if got.get("texture", "plain") != "plain" else ""
    seen = f"{got['colour']}{texture} {got['shape']} on {got['background']}"
    wrong = [f"{key} {got[key]} (asked {value})" for key, value in want.items() if got.get(key) != value]
    return f"{seen}: as asked" if not wrong else f"{seen}: " + ", ".join(wrong)


def judge_readings(model, condition: str, samples: dict, assets: Path | None = None) -> dict[str, str]:
    """`describe` for each named sample of an embedded model, with the judge of `assets` (default: the shipped)."""
    from ..registry import ASSETS
    judge, want = _judge((assets or ASSETS) / model.spec.judge), asked(model.spec, condition)
    return {name: describe(want, read(judge, model.spec, s.pixels)) for name, s in samples.items()}


@functools.lru_cache(maxsize=4)
def _judge(path: Path):
    """The judge of an assets folder, loaded once (the app reads every result with it)."""
    from .judge import load_judge
    return load_judge(path)
