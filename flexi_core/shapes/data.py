"""Procedural training data: one coloured shape on a plain background, as images, captions and videos.

Everything is a pure function of an integer seed, so datasets are reproducible and never downloaded.
Shapes are drawn at 4x resolution and box-filtered down, which gives clean anti-aliased 32x32 images.
Asked for (`textured=True`), the object also wears a texture: stripes, dots or checks of a 4-pixel period, detail
finer than a weak token of the 256-token models (4 pixels): a 2-pixel token grid carries it token by token, a 4-pixel
token only by drawing a whole period inside its patch, in phase; the data of the late denoising steps. Without,
every seed draws exactly the scene, pixels and caption that it drew before textures existed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
NUM_FRAMES = 8
_SUPERSAMPLE = 4

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230), "yellow": (240, 210, 40)}
SHAPES = ("circle", "square", "triangle", "diamond")
BACKGROUNDS = {
    "black": (15, 15, 15), "white": (235, 235, 235), "gray": (120, 120, 120),
    "dark blue": (20, 30, 90), "beige": (225, 205, 160), "dark green": (20, 70, 35),
}
DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}
SIZES = ("small", "medium", "large")  # half-extent 5-7, 8-9, 10-12 pixels
CLASS_NAMES = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
TEXTURES = ("plain", "striped", "dotted", "checked")
TEXTURED_CLASS_NAMES = tuple(f"{c} {t} {s}" for c in COLOURS for t in TEXTURES for s in SHAPES)
# a texture's second tone: a lighter (or, for the bright yellow, darker) shade of the object's colour, so that the
# colour stays what one reads
TEXTURE_COLOURS = {"red": (250, 150, 150), "green": (150, 230, 160), "blue": (160, 185, 250), "yellow": (150, 120, 20)}
TEXTURE_PERIOD = 4.0  # pixels: 2 on, 2 off
# the first seed of each stream of procedural samples, 10 million apart, so no two jobs ever draw the same scene
SEEDS = {"vae": 10_000_000, "base": 20_000_000, "vae-scale": 30_000_000, "judge": 40_000_000,
         "distill-captions": 50_000_000, "distill-data": 60_000_000, "evaluate": 70_000_000, "vae-decoder": 80_000_000,
         "judge-texture": 90_000_000, "judge-texture-test": 100_000_000}
# Other words for an object's colour and shape: training may swap them into captions (`train --paraphrase P`) so that
# a prompt in other words ("a scarlet disc") draws the same picture. Evaluation captions use them only when asked
# (`evaluate --paraphrase trained`); HELD_OUT_SYNONYMS are never trained on and measure how far the text encoder
# carries the model beyond the words it saw (`evaluate --paraphrase held-out`).
SYNONYMS = {"red": ("crimson", "scarlet", "ruby", "cherry", "vermilion", "tomato-red"),
            "green": ("emerald", "lime", "grass-green", "jade", "leaf-green"),
            "blue": ("azure", "cobalt", "sapphire", "navy", "cerulean", "sky-blue"),
            "yellow": ("golden", "lemon", "amber", "canary", "gold"),
            "circle": ("disc", "round shape", "ball", "dot", "orb", "round blob"),
            "square": ("box", "block", "tile", "cube"),
            "triangle": ("pyramid", "wedge", "three-sided shape"),
            "diamond": ("rhombus", "lozenge", "kite")}
HELD_OUT_SYNONYMS = {"red": ("blood-red", "cardinal"), "green": ("mint", "verdant"),
                     "blue": ("ultramarine", "cornflower"), "yellow": ("sunflower", "butter-yellow"),
                     "circle": ("sphere", "round spot"), "square": ("quadrate", "four-sided shape"),
                     "triangle": ("arrowhead", "three-cornered shape"), "diamond": ("rhomb", "gem")}


@dataclass(frozen=True)
class Scene:
    """The attributes of one sample; everything a caption or the judge talks about."""
    colour: str
    shape: str
    background: str
    cx: float  # centre in pixels
    cy: float
    radius: float  # half-extent in pixels
    direction: str = "right"  # videos only
    speed: float = 0.0
    texture: str = "plain"

    @property
    def class_name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def class_id(self) -> int:
        return CLASS_NAMES.index(self.class_name)

    @property
    def textured_class_name(self) -> str:
        return f"{self.colour} {self.texture} {self.shape}"

    @property
    def textured_class_id(self) -> int:
        return TEXTURED_CLASS_NAMES.index(self.textured_class_name)

    @property
    def size_word(self) -> str:
        return size_word(self.radius)

    @property
    def position_word(self) -> str:
        return position_word(self.cx, self.cy)


def size_word(radius: float) -> str:
    return "small" if radius < 7.5 else "medium" if radius < 9.5 else "large"


def position_word(cx: float, cy: float) -> str:
    third = IMAGE_SIZE / 3
    col = "left" if cx < third else "right" if cx > 2 * third else ""
    row = "top" if cy < third else "bottom" if cy > 2 * third else ""
    return f"{row} {col}".strip() or "centre"


def distinct_backgrounds(colour: str) -> list[str]:
    """Backgrounds far enough (in RGB) from the object colour that the shape is always clearly visible."""
    c = np.array(COLOURS[colour])
    return [name for name, rgb in BACKGROUNDS.items() if np.linalg.norm(c - np.array(rgb)) > 150]


def class_names(textured: bool = False) -> tuple[str, ...]:
    """The class names of the plain world (colour, shape) or of the textured one (colour, texture, shape)."""
    return TEXTURED_CLASS_NAMES if textured else CLASS_NAMES


def random_scene(rng: np.random.Generator, class_id: int | None = None, video: bool = False,
                 textured: bool = False) -> Scene:
    """`textured`: `class_id` indexes TEXTURED_CLASS_NAMES, so the object wears any of TEXTURES (plain included).
    Without, `rng` is drawn from exactly as before textures existed."""
    names = class_names(textured)
    if class_id is None:
        class_id = int(rng.integers(len(names)))
    colour, *texture, shape = names[class_id].split(" ")  # texture: [] (plain) or [its name]
    backgrounds = distinct_backgrounds(colour)
    background = backgrounds[int(rng.integers(len(backgrounds)))]
    radius = float(rng.uniform(5.0, 12.0))
    cx, cy = (float(v) for v in rng.uniform(radius, IMAGE_SIZE - radius, size=2))
    direction = list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
    speed = float(rng.uniform(2.0, 3.0)) if video else 0.0
    return Scene(colour, shape, background, cx, cy, radius, direction, speed, *texture)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "square":
        r = r * 0.85  # equal area feel next to the circle
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    return None


def _pattern(texture: str, cx: float, cy: float) -> np.ndarray:
    """Where the texture's second tone goes, on the 4x grid (bool, H*4 x W*4): anchored at the object's centre, so
    that it moves with the object and its phase against the pixel grid varies (anti-aliased by the box filter)."""
    p = TEXTURE_PERIOD
    centres = (np.arange(IMAGE_SIZE * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE  # subpixel centres, in pixels
    x, y = np.meshgrid(centres - cx, centres - cy)
    if texture == "striped":  # vertical stripes, one centred on the object
        return (x + p / 4) % p < p / 2
    if texture == "checked":
        return ((x + p / 4) // (p / 2) + (y + p / 4) // (p / 2)) % 2 == 0
    if texture == "dotted":  # round dots, 2 pixels across
        return ((x + p / 2) % p - p / 2) ** 2 + ((y + p / 2) % p - p / 2) ** 2 < (p / 4) ** 2
    raise ValueError(f"unknown texture {texture!r}; one of {', '.join(TEXTURES)}")


def render(scene: Scene, cx: float | None = None, cy: float | None = None) -> np.ndarray:
    """Draws the scene as a uint8 array (H, W, 3); cx/cy override the position (video frames)."""
    s = _SUPERSAMPLE
    cx = scene.cx if cx is None else cx
    cy = scene.cy if cy is None else cy
    img = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    fill = COLOURS[scene.colour]
    poly = _polygon(scene.shape, cx * s, cy * s, scene.radius * s)
    if poly is None:
        r = scene.radius * s
        draw.ellipse([cx * s - r, cy * s - r, cx * s + r, cy * s + r], fill=fill)
    else:
        draw.polygon(poly, fill=fill)
    if scene.texture != "plain":  # inside the shape only: its pixels are the only ones of the object's colour
        pixels = np.array(img)
        pixels[(pixels == fill).all(-1) & _pattern(scene.texture, cx, cy)] = TEXTURE_COLOURS[scene.colour]
        img = Image.fromarray(pixels)
    return np.asarray(img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX))


def trajectory(scene: Scene, num_frames: int = NUM_FRAMES) -> list[tuple[float, float]]:
    """Centre per frame: linear motion that bounces off the borders."""
    dx, dy = (v * scene.speed for v in DIRECTIONS[scene.direction])
    x, y, r = scene.cx, scene.cy, scene.radius
    points = []
    for _ in range(num_frames):
        points.append((x, y))
        x, y = x + dx, y + dy
        if not r <= x <= IMAGE_SIZE - r:
            dx, x = -dx, float(np.clip(x, r, IMAGE_SIZE - r))
        if not r <= y <= IMAGE_SIZE - r:
            dy, y = -dy, float(np.clip(y, r, IMAGE_SIZE - r))
    return points


def render_video(scene: Scene, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """uint8 array (T, H, W, 3)."""
    return np.stack([render(scene, x, y) for x, y in trajectory(scene, num_frames)])


_IMAGE_TEMPLATES = (
    "a {size} {colour} {shape} in the {position} on a {background} background",
    "{size} {colour} {shape}, {position}, {background} background",
    "a {colour} {shape} on {background}, placed {position}, {size}",
    "there is a {size} {colour} {shape} at the {position} of a {background} image",
    "{background} background with a {colour} {shape} in the {position}",
    "a {colour} {shape}",
)
_VIDEO_TEMPLATES = (
    "a {colour} {shape} moving {direction} on a {background} background",
    "{colour} {shape} moves {direction}, {background} background",
    "a {size} {colour} {shape} sliding {direction} across a {background} screen",
    "a {colour} {shape} going {direction}",
)


def caption(scene: Scene, rng: np.random.Generator, video: bool = False, paraphrase: float = 0.0,
            synonyms: dict[str, tuple[str, ...]] = SYNONYMS) -> str:
    """`paraphrase`: the chance that the object's colour word, and separately its shape word, is one of `synonyms`.

    A texture is named after the colour ("a red striped circle"); a plain object's caption names none, so "a red
    circle" means the same with or without textures."""
    templates = _VIDEO_TEMPLATES if video else _IMAGE_TEMPLATES
    template = templates[int(rng.integers(len(templates)))]

    def word(canonical: str) -> str:  # draws nothing without paraphrasing: captions stay what they always were
        if paraphrase and rng.random() < paraphrase:
            return synonyms[canonical][int(rng.integers(len(synonyms[canonical])))]
        return canonical
    texture = "" if scene.texture == "plain" else f" {scene.texture}"
    text = template.format(size=scene.size_word, colour=word(scene.colour) + texture, shape=word(scene.shape),
                           position=scene.position_word,
                           background=scene.background, direction=scene.direction)
    return re.sub(r"\ba (?=[aeiou])", "an ", text)  # "an azure disc"; no canonical word starts with a vowel


def sample(seed: int, class_id: int | None = None, video: bool = False, paraphrase: float = 0.0,
           synonyms: dict[str, tuple[str, ...]] = SYNONYMS, textured: bool = False) -> tuple[np.ndarray, Scene, str]:
    """One (pixels, scene, caption) triple, a pure function of its arguments (`textured`: see `random_scene`)."""
    rng = np.random.default_rng(seed)
    scene = random_scene(rng, class_id, video, textured)
    pixels = render_video(scene) if video else render(scene)
    return pixels, scene, caption(scene, rng, video, paraphrase, synonyms)


def batch(seeds, video: bool = False, paraphrase: float = 0.0,
          textured: bool = False) -> tuple[np.ndarray, list[Scene], list[str]]:
    items = [sample(int(s), video=video, paraphrase=paraphrase, textured=textured) for s in seeds]
    return np.stack([i[0] for i in items]), [i[1] for i in items], [i[2] for i in items]


def to_tensor_range(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [-1, 1]."""
    x = pixels.astype(np.float32) / 127.5 - 1.0
    return np.moveaxis(x, -1, -3)
