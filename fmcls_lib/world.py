"""The procedural image-caption world that plays ImageNet and its distribution shifts.

Every image is one object (a shape with a colour and a size) rendered deterministically from a seed in
one of four domains: ``photo`` (textured background, shading, clutter: plays ImageNet) and the shifts
``sketch`` (broken pencil outlines, plays ImageNet-Sketch), ``painting`` (brush strokes, shifted hues:
ImageNet-R) and ``pixel`` (coarse pixel art).  Captions come from templates that mix attributes and
the domain word.  Three class names never occur in captions, only their synonyms ("six-sided shape",
"moon", "rhombus"): like real CLIP on concepts it rarely saw named, zero-shot fails there while the
image features still separate them, which leaves few-shot caches and better prompts something to fix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .errors import UnknownNameError

WORLD_VERSION = 1
RES = 32
_SS = 2  # supersampling factor for anti-aliased edges

SHAPES = ("circle", "ring", "square", "diamond", "triangle", "pentagon", "hexagon", "star",
          "cross", "heart", "arrow", "crescent")
CONFUSABLE_PAIRS = (("pentagon", "hexagon"), ("circle", "ring"), ("square", "diamond"),
                    ("circle", "crescent"))
COLORS = {
    "red": (215, 35, 35), "orange": (245, 135, 20), "yellow": (240, 215, 35), "green": (35, 160, 55),
    "cyan": (40, 200, 215), "blue": (35, 70, 220), "purple": (135, 45, 185), "pink": (245, 120, 185),
    "brown": (125, 75, 35), "white": (245, 245, 245),
}
SIZES = {"small": 0.24, "medium": 0.32, "large": 0.42}  # radius as a fraction of half the image
DOMAINS = ("photo", "sketch", "painting", "pixel")
SHIFTS = DOMAINS[1:]

# Names used in captions.  Classes missing their own name here are never named in pre-training.
CAPTION_NAMES = {
    "circle": ("circle", "disc"), "ring": ("ring", "donut"), "square": ("square",),
    "diamond": ("rhombus", "lozenge"), "triangle": ("triangle",), "pentagon": ("pentagon",),
    "hexagon": ("six-sided shape", "six-sided polygon"), "star": ("star",),
    "cross": ("cross", "plus sign"), "heart": ("heart",), "arrow": ("arrow",),
    "crescent": ("moon", "half moon"),
}
NEVER_NAMED = tuple(s for s in SHAPES if s not in CAPTION_NAMES[s])
DOMAIN_WORDS = {"photo": ("photo", "picture"), "sketch": ("sketch", "pencil drawing"),
                "painting": ("painting", "oil painting"), "pixel": ("pixel-art image", "pixel art")}
DOMAIN_ADJ = {"photo": "photographed", "sketch": "sketched", "painting": "painted", "pixel": "pixel-art"}

CAPTION_TEMPLATES = (
    "a {domain} of a {size} {color} {shape}.",
    "a {domain} of a {color} {shape}.",
    "a {domain} of a {shape}.",
    "a {color} {shape}.",
    "a {size} {shape}.",
    "a {shape} in {color}.",
    "{adj} {color} {shape}.",
    "a {adj} {shape}.",
    "the {shape} is {color}.",
    "a {shape} that is {size} and {color}.",
    "there is a {color} {shape} in this {domain}.",
    "a {domain} showing a {size} {shape}.",
    "a {color} {shape} on the {where}.",
    "a {domain} with a {shape} at the {where}.",
    "my {domain} of a {color} {shape}.",
    "a {size} {color} {shape}, {adj}.",
    "{color} {shape}.",
)

# Pre-training draws shapes in their "typical" colour this often (a web-like correlation).
TYPICAL_COLOR = dict(zip(SHAPES, ("red", "blue", "green", "purple", "yellow", "orange", "cyan",
                                  "yellow", "red", "pink", "blue", "white")))
PRETRAIN_DOMAIN_MIX = {"photo": 0.70, "sketch": 0.06, "painting": 0.12, "pixel": 0.12}
PRETRAIN_TYPICAL_COLOR_P = 0.3

_STREAM_PRETRAIN, _STREAM_TASKS = 0, 1


@dataclass(frozen=True)
class Scene:
    shape: str
    color: str
    size: str
    domain: str
    angle: float  # degrees
    dx: float  # centre offset, fraction of half the image
    dy: float
    seed: int  # drives everything the attributes leave open (texture, clutter, strokes)


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=20261130 + WORLD_VERSION,
                                                        spawn_key=tuple(int(k) for k in key)))


# ----------------------------------------------------------------------------- geometry

def _circle(r=1.0, cx=0.0, n=48, a0=0.0, a1=360.0):
    t = np.deg2rad(np.linspace(a0, a1, n, endpoint=False))
    return np.stack([cx + r * np.cos(t), r * np.sin(t)], 1)


def _regular(n, rot=-90.0):
    t = np.deg2rad(rot + np.arange(n) * 360.0 / n)
    return np.stack([np.cos(t), np.sin(t)], 1)


def _contours(shape: str) -> list[np.ndarray]:
    """Closed contours in unit coordinates; the first is filled, later ones are holes."""
    if shape == "circle":
        return [_circle()]
    if shape == "ring":
        return [_circle(), _circle(0.55)]
    if shape == "square":
        return [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.82]
    if shape == "diamond":
        return [np.array([[0, -1], [0.62, 0], [0, 1], [-0.62, 0]])]
    if shape == "triangle":
        return [_regular(3) * 1.05 + [0, 0.15]]
    if shape == "pentagon":
        return [_regular(5)]
    if shape == "hexagon":
        return [_regular(6, rot=0.0)]
    if shape == "star":
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return [_regular(10) * r[:, None]]
    if shape == "cross":
        a, b = 0.3, 0.95
        return [np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b],
                          [-a, a], [-b, a], [-b, -a], [-a, -a]])]
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [np.stack([x, y + 2], 1) / 16.5]
    if shape == "arrow":
        return [np.array([[-1, -0.28], [0.15, -0.28], [0.15, -0.7], [1, 0], [0.15, 0.7],
                          [0.15, 0.28], [-1, 0.28]])]
    if shape == "crescent":  # unit circle minus a circle of radius 0.85 centred at (0.45, 0)
        outer = _circle(1.0, 0.0, 40, 57.8, 302.2)
        inner = _circle(0.85, 0.45, 40, 84.4, 275.6)[::-1]
        return [np.concatenate([outer, inner])]
    raise UnknownNameError("shape", shape, SHAPES)


def _place(pts, scene: Scene, size_px: float, wobble: float, rng) -> list[tuple]:
    a = math.radians(scene.angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    p = pts @ rot.T
    if wobble:
        p = p + rng.normal(0, wobble, p.shape)
    r = SIZES[scene.size] * size_px / 2
    c = size_px / 2 * (1 + np.array([scene.dx, scene.dy]))
    return [tuple(q) for q in p * r + c]


def _mask(scene: Scene, size_px: int, wobble=0.0, rng=None) -> Image.Image:
    m = Image.new("L", (size_px, size_px), 0)
    d = ImageDraw.Draw(m)
    for i, c in enumerate(_contours(scene.shape)):
        d.polygon(_place(c, scene, size_px, wobble, rng), fill=0 if i else 255)
    return m


# ----------------------------------------------------------------------------- domains

def _smooth_noise(rng, n, size, lo, hi):
    g = rng.uniform(lo, hi, (n, n, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(g).resize((size, size), Image.BICUBIC), dtype=np.float32)


def _render_photo(scene, rng):
    S = RES * _SS
    base = rng.uniform(70, 170, 3)
    bg = _smooth_noise(rng, 4, S, 0, 255) * 0.35 + base * 0.65
    bg += rng.normal(0, 9, (S, S, 3))
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(rng.integers(1, 4)):  # clutter: small distractors in random colours
        x, y = rng.uniform(0, S, 2)
        r = rng.uniform(1.5, 3.5) * _SS
        col = tuple(int(v) for v in rng.uniform(0, 255, 3))
        if rng.random() < 0.5:
            d.ellipse([x - r, y - r, x + r, y + r], fill=col)
        else:
            d.line([x, y, x + rng.uniform(-4, 4) * _SS * 2, y + rng.uniform(-4, 4) * _SS * 2],
                   fill=col, width=_SS)
    col = np.array(COLORS[scene.color], np.float32)
    g = np.linspace(-1, 1, S, dtype=np.float32)
    t = rng.uniform(0, 2 * np.pi)
    shade = 1.0 + 0.18 * (np.cos(t) * g[None, :] + np.sin(t) * g[:, None])
    fill = col[None, None] * shade[..., None] + rng.normal(0, 6, (S, S, 3))
    fill = Image.fromarray(np.clip(fill, 0, 255).astype(np.uint8))
    img.paste(fill, (0, 0), _mask(scene, S))
    return img.resize((RES, RES), Image.BOX)


def _render_sketch(scene, rng):
    S = RES * _SS
    paper = rng.uniform(215, 250)
    bg = np.full((S, S, 3), paper, np.float32) + rng.normal(0, 5, (S, S, 1))
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    ink = np.array(COLORS[scene.color], np.float32) * 0.45 + rng.uniform(60, 110) * 0.55
    ink = ink * rng.uniform(0.9, 1.15) + (paper - ink) * rng.uniform(0.1, 0.45)  # faint
    ink = tuple(int(v) for v in np.clip(ink, 0, 255))
    for c in _contours(scene.shape):
        pts = _place(c, scene, S, 0.06, rng)
        n = len(pts)
        idx = np.linspace(0, n, max(n, 12), endpoint=False).astype(int)
        pts = [pts[i] for i in idx] + [pts[0]]
        for k in range(len(pts) - 1):
            if rng.random() < 0.22:  # broken strokes
                continue
            (x0, y0), (x1, y1) = pts[k], pts[k + 1]
            j = rng.normal(0, 0.8, 4)
            d.line([x0 + j[0], y0 + j[1], x1 + j[2], y1 + j[3]], fill=ink,
                   width=int(rng.integers(1, 3)))
    if rng.random() < 0.5:  # a stray hatch line
        x, y = rng.uniform(0, S, 2)
        d.line([x, y, x + rng.uniform(-12, 12), y + rng.uniform(-12, 12)], fill=ink, width=1)
    return img.resize((RES, RES), Image.BOX)


def _render_painting(scene, rng):
    S = RES * _SS
    bg = np.full((S, S, 3), rng.uniform(60, 200, 3), np.float32)
    img = Image.fromarray(bg.astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(6):  # broad brush strokes on the canvas
        x, y = rng.uniform(0, S, 2)
        col = tuple(int(v) for v in rng.uniform(40, 220, 3))
        d.line([x, y, x + rng.uniform(-40, 40), y + rng.uniform(-40, 40)], fill=col,
               width=int(rng.integers(6, 14)))
    col = np.array(COLORS[scene.color], np.float32) + rng.normal(0, 22, 3)  # shifted hue
    fill = np.clip(np.full((S, S, 3), col, np.float32), 0, 255).astype(np.uint8)
    fill = Image.fromarray(fill)
    fd = ImageDraw.Draw(fill)
    for _ in range(8):  # brush texture inside the object
        x, y = rng.uniform(0, S, 2)
        c2 = tuple(int(v) for v in np.clip(col + rng.normal(0, 30, 3), 0, 255))
        fd.line([x, y, x + rng.uniform(-20, 20), y + rng.uniform(-8, 8)], fill=c2, width=4)
    img.paste(fill, (0, 0), _mask(scene, S, wobble=0.07, rng=rng))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 1.8)))
    return img.resize((RES, RES), Image.BOX)


def _render_pixel(scene, rng):
    n = 12  # the art's own grid
    S = n * 4
    bg = tuple(int(v) for v in rng.choice([40, 90, 150, 200], 3))
    img = Image.new("RGB", (S, S), bg)
    img.paste(COLORS[scene.color], (0, 0), _mask(scene, S))
    small = np.asarray(img.resize((n, n), Image.BOX), np.float32)
    small = np.round(small / 85) * 85  # a 4-level palette per channel
    img = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8))
    return img.resize((RES, RES), Image.NEAREST)


_RENDER = {"photo": _render_photo, "sketch": _render_sketch, "painting": _render_painting,
           "pixel": _render_pixel}


def render(scene: Scene) -> np.ndarray:
    """Render one scene to a ``RES x RES x 3`` uint8 array (deterministic in ``scene``)."""
    return np.asarray(_RENDER[scene.domain](scene, _rng(2, scene.seed)), dtype=np.uint8)


def render_many(scenes) -> np.ndarray:
    scenes = list(scenes)
    out = np.empty((len(scenes), RES, RES, 3), np.uint8)
    for i, s in enumerate(scenes):
        out[i] = render(s)
    return out


# ----------------------------------------------------------------------------- sampling

def _where(scene: Scene) -> str:
    if abs(scene.dx) < 0.08 and abs(scene.dy) < 0.08:
        return "centre"
    if abs(scene.dx) >= abs(scene.dy):
        return "left" if scene.dx < 0 else "right"
    return "top" if scene.dy < 0 else "bottom"


def caption(scene: Scene, rng: np.random.Generator | None = None) -> str:
    """A caption for ``scene`` from one of ``CAPTION_TEMPLATES`` (at least 15)."""
    rng = rng if rng is not None else _rng(3, scene.seed)
    t = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
    names = CAPTION_NAMES[scene.shape]
    words = DOMAIN_WORDS[scene.domain]
    text = t.format(shape=names[rng.integers(len(names))], color=scene.color, size=scene.size,
                    domain=words[rng.integers(len(words))], adj=DOMAIN_ADJ[scene.domain],
                    where=_where(scene))
    # fix articles after substitution ("a orange" -> "an orange")
    out = []
    toks = text.split(" ")
    for i, w in enumerate(toks):
        if w in ("a", "an") and i + 1 < len(toks):
            w = article(toks[i + 1])
        out.append(w)
    return " ".join(out)


def sample_scene(rng: np.random.Generator, *, domain: str, shape: str | None = None,
                 color: str | None = None, typical_color_p: float = 0.0) -> Scene:
    shape = shape if shape is not None else SHAPES[rng.integers(len(SHAPES))]
    if color is None:
        color = (TYPICAL_COLOR[shape] if rng.random() < typical_color_p
                 else list(COLORS)[rng.integers(len(COLORS))])
    size = list(SIZES)[rng.integers(len(SIZES))]
    return Scene(shape, color, size, domain, float(rng.uniform(-15, 15)),
                 float(rng.uniform(-0.22, 0.22)), float(rng.uniform(-0.22, 0.22)),
                 int(rng.integers(2**62)))


def pretrain_scenes(n: int, start: int = 0) -> list[Scene]:
    """The pre-training corpus: its own seed stream, disjoint from every downstream split."""
    doms, p = list(PRETRAIN_DOMAIN_MIX), list(PRETRAIN_DOMAIN_MIX.values())
    out = []
    for i in range(start, start + n):
        rng = _rng(_STREAM_PRETRAIN, i)
        dom = doms[rng.choice(len(doms), p=p)]
        out.append(sample_scene(rng, domain=dom, typical_color_p=PRETRAIN_TYPICAL_COLOR_P))
    return out


def pretrain_pairs(n: int, start: int = 0):
    """``(images uint8 [n,32,32,3], captions)`` for contrastive pre-training."""
    scenes = pretrain_scenes(n, start)
    return render_many(scenes), [caption(s) for s in scenes]


# ----------------------------------------------------------------------------- tasks

@dataclass(frozen=True)
class Task:
    name: str
    classnames: tuple[str, ...]
    per_class: dict  # split -> images per class

    def label_attrs(self, label: int) -> dict:
        c = self.classnames[label]
        if self.name == "world/shapes":
            return {"shape": c}
        if self.name == "world/colors":
            return {"color": c}
        color, shape = c.split(" ")
        return {"shape": shape, "color": color}


# Evaluation splits are large (400 test images per class per domain, 100 validation per class), so that a paired
# test can tell a few points apart; train stays small (few-shot draws come from it).  world/objects has the same
# totals over its 120 classes.  SMOKE_PER_CLASS: the small splits of the `smoke` parameter set — a prefix of each
# full split (scene i has label i % C and its own seed), so smoke images are a subset of the full ones.
TASKS = {
    "world/shapes": Task("world/shapes", SHAPES, {"train": 64, "val": 100, "test": 400}),
    "world/colors": Task("world/colors", tuple(COLORS), {"train": 64, "val": 100, "test": 400}),
    "world/objects": Task("world/objects", tuple(f"{c} {s}" for s in SHAPES for c in COLORS),
                          {"train": 16, "val": 10, "test": 40}),
}
SMOKE_PER_CLASS = {"world/shapes": {"train": 64, "val": 25, "test": 50},
                   "world/colors": {"train": 64, "val": 25, "test": 50},
                   "world/objects": {"train": 16, "val": 4, "test": 8}}
SPLITS = ("train", "val", "test")


def task_scenes(task: str, split: str, domain: str, per_class: int | None = None) -> tuple[list[Scene], np.ndarray]:
    """Class-balanced scenes of one downstream split; seeds disjoint from pre-training.  ``per_class`` (default:
    the task's size) takes the first ``per_class`` images of every class: a prefix of the full split."""
    t = TASKS[task]
    ti, si, di = list(TASKS).index(task), SPLITS.index(split), DOMAINS.index(domain)
    scenes, labels = [], []
    for i in range((per_class or t.per_class[split]) * len(t.classnames)):
        label = i % len(t.classnames)
        rng = _rng(_STREAM_TASKS, ti, si, di, i)
        scenes.append(sample_scene(rng, domain=domain, **t.label_attrs(label)))
        labels.append(label)
    return scenes, np.array(labels, dtype=np.int64)
