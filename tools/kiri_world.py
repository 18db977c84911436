"""Kiri's toy world: procedurally drawn scenes, their captions, and an OpenCV detector.

The default models shipped in ``models/checkpoints`` are trained on this world. A scene holds one or
two flat-coloured objects (circle, square, triangle, star, ring, cross) of a named colour and size at
a named position, on a plain or two-tone (left half / right half) background. Captions come from the
scene parameters by a small grammar, e.g.::

    a small red circle on the left, blue background
    a large green star at the top and a small white ring at the bottom, purple and black background

``detect`` reads a picture back into objects (colour, shape, size, position) with OpenCV only, so the
evaluation and the tests can measure whether a generated image follows its prompt.

A fixed seed makes the data reproducible. Some colour x shape x position combinations
(``HELD_OUT``) never appear in training scenes; the evaluation prompts use exactly those.

Importable without torch: numpy and cv2 only.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import cv2
import numpy as np

SIZE = 64  # picture side in pixels
_SS = 4  # supersampling factor for anti-aliased drawing

# Named colours (RGB). Objects and backgrounds draw from the same palette; within a scene every
# colour is different, so an object never has the colour of its background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (245, 225, 30),
    "green": (30, 175, 50),
    "blue": (35, 75, 230),
    "purple": (145, 45, 195),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
OBJECT_COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "white", "black"]
BACKGROUND_COLOURS = list(COLOURS)  # gray only ever appears as background
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross"]
SIZES = {"small": 9.0, "large": 14.0}  # half side (radius) in pixels
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (15.5, 31.5),
    "right": (47.5, 31.5),
    "top": (31.5, 15.5),
    "bottom": (31.5, 47.5),
    "centre": (31.5, 31.5),
}
POSITION_PHRASE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
PAIRS = [("left", "right"), ("top", "bottom")]  # positions two objects may share a scene in


def _held_out() -> frozenset[tuple[str, str, str]]:
    """Colour x shape x position combinations kept out of training: two per shape, every colour and
    position used, chosen by a fixed rule so the list never changes."""
    combos = []
    for i, shape in enumerate(SHAPES):
        for j in range(2):
            k = 2 * i + j
            colour = OBJECT_COLOURS[(3 * k + 1) % len(OBJECT_COLOURS)]
            position = list(POSITIONS)[(k + i) % len(POSITIONS)]
            combos.append((colour, shape, position))
    return frozenset(combos)


HELD_OUT = _held_out()


@dataclass(frozen=True)
class Obj:
    colour: str
    shape: str
    size: str
    position: str
    # Exact geometry (pixels); jittered around the nominal size and position.
    cx: float = 0.0
    cy: float = 0.0
    radius: float = 0.0

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} {POSITION_PHRASE[self.position]}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: tuple[str, ...]  # one colour, or two: (left half, right half)
    extras: dict = field(default_factory=dict, compare=False)

    @property
    def caption(self) -> str:
        return caption(self)


def caption(scene: Scene) -> str:
    objs = " and ".join(o.phrase() for o in scene.objects)
    return f"{objs}, {' and '.join(scene.background)} background"


def is_held_out(obj: Obj) -> bool:
    return (obj.colour, obj.shape, obj.position) in HELD_OUT


def _make_obj(rng: random.Random, colour: str, shape: str, size: str, position: str, jitter: bool = True) -> Obj:
    cx, cy = POSITIONS[position]
    r = SIZES[size]
    if jitter:
        cx += rng.uniform(-2.0, 2.0)
        cy += rng.uniform(-2.0, 2.0)
        r *= rng.uniform(0.9, 1.1)
    return Obj(colour, shape, size, position, cx, cy, r)


def sample_scene(rng: random.Random, held_out: str = "exclude", p_two: float = 0.4, p_two_tone: float = 0.3) -> Scene:
    """Draw a random scene.

    held_out: "exclude" (training: no object is a held-out combination), "only" (evaluation: one
    object, always a held-out combination) or "any".
    """
    if held_out == "only":
        colour, shape, position = rng.choice(sorted(HELD_OUT))
        objs = [_make_obj(rng, colour, shape, rng.choice(list(SIZES)), position)]
    else:
        while True:
            if rng.random() < p_two:
                positions = list(rng.choice(PAIRS))
                rng.shuffle(positions)
            else:
                positions = [rng.choice(list(POSITIONS))]
            colours = rng.sample(OBJECT_COLOURS, len(positions))
            objs = [_make_obj(rng, c, rng.choice(SHAPES), rng.choice(list(SIZES)), p) for c, p in zip(colours, positions)]
            if held_out == "any" or not any(is_held_out(o) for o in objs):
                break
    used = {o.colour for o in objs}
    free = [c for c in BACKGROUND_COLOURS if c not in used]
    n_bg = 2 if rng.random() < p_two_tone else 1
    return Scene(tuple(objs), tuple(rng.sample(free, n_bg)))


def scene_from_parts(parts: list[tuple[str, str, str, str]], background: tuple[str, ...]) -> Scene:
    """Scene from (size, colour, shape, position) tuples at nominal geometry (no jitter)."""
    rng = random.Random(0)
    return Scene(tuple(_make_obj(rng, c, sh, sz, p, jitter=False) for sz, c, sh, p in parts), tuple(background))


# ----------------------------------------------------------------------------------------------
# Drawing

def _shape_polys(shape: str, cx: float, cy: float, r: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Polygons to fill (and to cut out) for a shape centred at (cx, cy) with half side r."""
    def pts(p):
        return np.array([[cx + x * r, cy + y * r] for x, y in p], dtype=np.float64)

    if shape == "circle":
        a = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        return [pts(np.stack([np.cos(a), np.sin(a)], 1))], []
    if shape == "ring":
        a = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        circle = np.stack([np.cos(a), np.sin(a)], 1)
        return [pts(circle)], [pts(circle * 0.5)]
    if shape == "square":
        s = 0.85
        return [pts([(-s, -s), (s, -s), (s, s), (-s, s)])], []
    if shape == "triangle":
        return [pts([(0, -1), (1, 0.8), (-1, 0.8)])], []
    if shape == "star":
        p = []
        for i in range(10):
            ang = -np.pi / 2 + i * np.pi / 5
            rad = 1.0 if i % 2 == 0 else 0.5
            p.append((rad * np.cos(ang), rad * np.sin(ang) + 0.1))
        return [pts(p)], []
    if shape == "cross":
        w = 0.33
        return [pts([(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)])], []
    raise ValueError(f"unknown shape {shape!r}")


def _fill(canvas: np.ndarray, polys: list[np.ndarray], colour) -> None:
    for p in polys:
        q = np.round(p * _SS * 16).astype(np.int32)  # 4 fractional bits
        cv2.fillPoly(canvas, [q], colour, lineType=cv2.LINE_8, shift=4)


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int = SIZE) -> np.ndarray:
    """Binary (uint8 0/255) mask of one shape on a size x size canvas."""
    big = np.zeros((size * _SS, size * _SS), np.uint8)
    fill, cut = _shape_polys(shape, cx, cy, r)
    _fill(big, fill, 255)
    _fill(big, cut, 0)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)


OUTLINE_WIDTH = 3.0  # stroke of the "outline" style, in pixels of the 64 px picture
SHADOW_OFFSET = 6  # the "shadow" style: each object's shadow, this many pixels right and down


FRAME_WIDTH = 4  # the "frame" style: a border this many pixels wide (one latent pixel of the default VAE)
SHADOW_COLOUR = "gray"  # the "shadow" style's shadow; on a gray background, SHADOW_ON_GRAY
SHADOW_ON_GRAY = "black"


def shadow_colour(background: str) -> str:
    """The colour of a shadow cast on `background`: a palette colour (the default VAE draws only those),
    gray, which no object has, so a detector can leave it out of the objects (``detect(ignore=...)``)."""
    return SHADOW_ON_GRAY if background == SHADOW_COLOUR else SHADOW_COLOUR


def frame_colour(background: tuple[str, ...]) -> str:
    """The "frame" style's border: black, or white where the background has black."""
    return "white" if "black" in background else "black"


def render(scene: Scene, style: str = "filled") -> np.ndarray:
    """The scene as an RGB uint8 array of shape (64, 64, 3), anti-aliased.

    style="outline" draws every object as its outline only (a stroke of OUTLINE_WIDTH pixels along
    its edge, the background showing through): the concept of the first example LoRA, which
    the default models never saw. ``Detection.fill`` tells the two styles apart.
    style="shadow" draws every object filled, casting a shadow SHADOW_OFFSET pixels right and down
    (in ``shadow_colour``): the concept of the example LoRA kiri-shadow.
    ``shadowed`` measures it.
    style="frame" draws the scene filled, in a border FRAME_WIDTH pixels wide (``frame_colour``) drawn
    over it, as a framed print: the concept of the example LoRA kiri-frame; ``framed`` measures it."""
    if style not in ("filled", "outline", "shadow", "frame"):
        raise ValueError(f"unknown style {style!r}")
    big = np.zeros((SIZE * _SS, SIZE * _SS, 3), np.uint8)
    bg = scene.background
    if len(bg) == 1:
        big[:] = COLOURS[bg[0]]
    else:
        half = SIZE * _SS // 2
        big[:, :half] = COLOURS[bg[0]]
        big[:, half:] = COLOURS[bg[1]]
    if style == "shadow":
        dark = np.zeros_like(big)
        dark[:] = COLOURS[shadow_colour(bg[0])]
        if len(bg) > 1:
            dark[:, SIZE * _SS // 2:] = COLOURS[shadow_colour(bg[1])]
        shift = SHADOW_OFFSET * _SS
        for o in scene.objects:
            fill, cut = _shape_polys(o.shape, o.cx, o.cy, o.radius)
            mask = np.zeros(big.shape[:2], np.uint8)
            _fill(mask, fill, 255)
            _fill(mask, cut, 0)
            moved = np.zeros_like(mask)
            moved[shift:, shift:] = mask[:-shift, :-shift]
            big[moved > 0] = dark[moved > 0]
    for o in scene.objects:
        fill, cut = _shape_polys(o.shape, o.cx, o.cy, o.radius)
        mask = np.zeros(big.shape[:2], np.uint8)
        _fill(mask, fill, 255)
        _fill(mask, cut, 0)
        if style == "outline":
            # A large shape's stroke lies on its edge (half outside, half inside); a small one's just
            # outside it, or its thin parts (star points, cross arms) would fill up and read as solid.
            k = int(round(OUTLINE_WIDTH * _SS)) | 1
            disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
            if o.size == "small":
                wide = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k - 1, 2 * k - 1))
                mask = cv2.dilate(mask, wide) & ~mask
            else:
                mask = cv2.dilate(mask, disc) & ~cv2.erode(mask, disc)
        big[mask > 0] = COLOURS[o.colour]
    if style == "frame":
        k = FRAME_WIDTH * _SS
        colour = COLOURS[frame_colour(bg)]
        big[:k], big[-k:], big[:, :k], big[:, -k:] = colour, colour, colour, colour
    return cv2.resize(big, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def dataset(n: int, seed: int = 0, held_out: str = "exclude") -> tuple[np.ndarray, list[str], list[Scene]]:
    """n scenes from a fixed seed: images (n, 64, 64, 3) uint8, captions, scenes."""
    rng = random.Random(seed)
    scenes = [sample_scene(rng, held_out=held_out) for _ in range(n)]
    images = np.stack([render(s) for s in scenes])
    return images, [caption(s) for s in scenes], scenes


def eval_prompts(n: int, seed: int = 1234) -> list[Scene]:
    """Held-out evaluation scenes: one object whose colour x shape x position never occurs in training."""
    rng = random.Random(seed)
    combos = sorted(HELD_OUT)
    out = []
    for i in range(n):
        colour, shape, position = combos[i % len(combos)]
        size = list(SIZES)[(i + i // len(combos)) % 2]
        free = [c for c in BACKGROUND_COLOURS if c != colour]
        bg = (rng.choice(free),) if rng.random() >= 0.25 else tuple(rng.sample(free, 2))
        out.append(Scene((_make_obj(rng, colour, shape, size, position, jitter=False),), bg))
    return out


# ----------------------------------------------------------------------------------------------
# Vocabulary

def vocabulary(free: bool = True) -> list[str]:
    """Every word the captions can hold, each of which the tokenizer must encode as one token.

    free=False: only the template grammar's 30 words (what the tokenizer of the models shipped before
    the free phrasings covers). free=True (default): also every word of the free phrasings
    (``phrase``): synonyms, plurals, position and background wordings, prefixes. The filler words
    (FILLERS_TRAIN, FILLERS_EVAL) are deliberately left out: they stand for unknown words."""
    words = {"a", "and", "background", "on", "the", "at", "in", ","}
    words |= set(COLOURS) | set(SHAPES) | set(SIZES)
    for phrase_ in POSITION_PHRASE.values():
        words |= set(phrase_.split())
    if free:
        words |= {"an", "with", "against", ";", ".", "!"}
        words |= {w for alts in SYNONYMS.values() for w in alts} | set(PLURALS.values())
        for table in (POSITION_VARIANTS, POSITION_VARIANTS_EVAL):
            for variants in table.values():
                words |= {w for v in variants for w in v.split()}
        words |= {w for p in PREFIXES for w in p.split()}
        words |= {"upper", "lower"}
    return sorted(words)


def parse_caption(text: str) -> Scene | None:
    """Inverse of ``caption`` for grammar captions (nominal geometry); None if it does not parse."""
    text = text.strip().lower()
    m = re.fullmatch(r"(.+), ([a-z ]+) background", text)
    if not m:
        return None
    parts = []
    pos_of = {v: k for k, v in POSITION_PHRASE.items()}
    for chunk in re.split(r" and (?=a )", m.group(1)):
        mm = re.fullmatch(r"a (\w+) (\w+) (\w+) (on the left|on the right|at the top|at the bottom|in the centre)", chunk)
        if not mm or mm.group(1) not in SIZES or mm.group(2) not in COLOURS or mm.group(3) not in SHAPES:
            return None
        parts.append((mm.group(1), mm.group(2), mm.group(3), pos_of[mm.group(4)]))
    bg = tuple(m.group(2).split(" and "))
    if not all(b in COLOURS for b in bg):
        return None
    return scene_from_parts(parts, bg)


# ----------------------------------------------------------------------------------------------
# Detector

_PALETTE_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _PALETTE_NAMES], np.float32)


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.reshape(-1, 1, 3).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3)


_PALETTE_LAB = _lab(_PALETTE)


def classify_pixels(img: np.ndarray) -> np.ndarray:
    """Index into the palette (COLOURS order) of the nearest named colour (CIELAB) for each pixel."""
    lab = _lab(img.astype(np.float32))
    d = ((lab[:, None, :] - _PALETTE_LAB[None]) ** 2).sum(-1)
    return d.argmin(1).reshape(img.shape[:2])


def _templates(res: int = 32) -> dict[str, np.ndarray]:
    out = {}
    for shape in SHAPES:
        m = shape_mask(shape, 64, 64, 56, size=128) > 127
        ys, xs = np.nonzero(m)
        crop = m[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].astype(np.uint8) * 255
        out[shape] = cv2.resize(crop, (res, res), interpolation=cv2.INTER_AREA) > 127
    return out


_TEMPLATES = _templates()


OUTLINE_FILL = 0.65  # Detection.fill under this: the object is drawn as an outline


@dataclass(frozen=True)
class Detection:
    colour: str
    shape: str
    size: str
    position: str
    area: int
    bbox: tuple[int, int, int, int]  # x, y, w, h
    scores: dict = field(default_factory=dict, compare=False)  # shape -> IoU
    # Share of the object's outer contour (holes filled) that its pixels cover: about 1 for a filled
    # shape, 0.75 for a ring, well under OUTLINE_FILL for a shape drawn as an outline.
    fill: float = 1.0

    @property
    def outlined(self) -> bool:
        return self.fill < OUTLINE_FILL


def position_of(cx: float, cy: float) -> str:
    dx, dy = cx - 31.5, cy - 31.5
    if max(abs(dx), abs(dy)) < 8:
        return "centre"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def classify_shape(mask: np.ndarray) -> tuple[str, dict[str, float]]:
    """Best matching shape of a binary mask cropped to its bounding box (IoU against templates)."""
    m = cv2.resize(mask.astype(np.uint8) * 255, (32, 32), interpolation=cv2.INTER_AREA) > 127
    scores = {}
    for shape, t in _TEMPLATES.items():
        inter = np.logical_and(m, t).sum()
        union = np.logical_or(m, t).sum()
        scores[shape] = float(inter / max(union, 1))
    return max(scores, key=scores.get), scores


def background_of(labels: np.ndarray) -> tuple[str, ...]:
    """Background colours from the picture border: one colour, or (left, right) when two-tone."""
    def dominant(region):
        counts = np.bincount(region.ravel(), minlength=len(_PALETTE_NAMES))
        return int(counts.argmax()), counts.max() / max(region.size, 1)

    left = np.concatenate([labels[:, :2].ravel(), labels[:2, : SIZE // 2 - 4].ravel(), labels[-2:, : SIZE // 2 - 4].ravel()])
    right = np.concatenate([labels[:, -2:].ravel(), labels[:2, SIZE // 2 + 4:].ravel(), labels[-2:, SIZE // 2 + 4:].ravel()])
    li, _ = dominant(left)
    ri, _ = dominant(right)
    if li == ri:
        return (_PALETTE_NAMES[li],)
    return (_PALETTE_NAMES[li], _PALETTE_NAMES[ri])


def detect(img: np.ndarray, min_area: int = 30, ignore: tuple[str, ...] = ()) -> tuple[list[Detection], tuple[str, ...]]:
    """Objects in an RGB uint8 picture (any square size; read at 64x64), largest first, and the
    background colours. Pixels of an `ignore` colour (the shadows of the "shadow" style) count as
    background."""
    if img.shape[0] != SIZE or img.shape[1] != SIZE:
        img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    labels = classify_pixels(img)
    bg = background_of(labels)
    bg_idx = [_PALETTE_NAMES.index(c) for c in (*bg, *ignore)]
    fg = ~np.isin(labels, bg_idx)
    # A pixel on the seam of a two-tone background blends both halves: not an object.
    fg = fg.astype(np.uint8)
    opened = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    n, comp, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    found = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_area or min(w, h) < 4:
            continue
        # The shape is read from the unopened mask (thin star points survive), near the component.
        near = cv2.dilate((comp == i).astype(np.uint8), np.ones((3, 3), np.uint8)) & fg
        ys, xs = np.nonzero(near)
        x, y = int(xs.min()), int(ys.min())
        w, h = int(xs.max()) - x + 1, int(ys.max()) - y + 1
        mask = near[y: y + h, x: x + w] > 0
        cols = labels[y: y + h, x: x + w][mask]
        counts = np.bincount(cols, minlength=len(_PALETTE_NAMES))
        counts[bg_idx] = 0
        colour = _PALETTE_NAMES[int(counts.argmax())]
        shape, scores = classify_shape(mask)
        half = max(w, h) / 2.0
        size = "small" if half < 11 else "large"
        position = position_of(x + (w - 1) / 2.0, y + (h - 1) / 2.0)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        solid = cv2.drawContours(np.zeros_like(mask, np.uint8), contours, -1, 1, thickness=-1)
        fill = float(mask.sum() / max(int(solid.sum()), 1))
        found.append(Detection(colour, shape, size, position, area, (x, y, w, h), scores, fill))
    found.sort(key=lambda d: -d.area)
    return found, bg


SHADOW_MIN = 0.3  # shadow_strength over this: the object casts the "shadow" style's shadow


def shadow_strength(img: np.ndarray, d: Detection) -> float:
    """How much more of the background right and below the detected object is its shadow colour
    (``shadow_colour``) than of the background left and above it: the share of shadow-coloured pixels
    in a band shaped like the object, SHADOW_OFFSET pixels right and down, minus the same share in the
    band as far up and left. Both bands skip 2 pixels around the object, so an edge's blur counts on
    both sides alike; about 0 without a shadow, up to 1 with the world's own."""
    if img.shape[0] != SIZE or img.shape[1] != SIZE:
        img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    labels = classify_pixels(img)
    bg = background_of(labels)
    shadow = {_PALETTE_NAMES.index(shadow_colour(c)) for c in bg}
    x, y, w, h = d.bbox
    box = labels[y: y + h, x: x + w]
    obj = np.zeros(labels.shape, np.uint8)
    obj[y: y + h, x: x + w] = ~np.isin(box, [_PALETTE_NAMES.index(c) for c in bg] + sorted(shadow))
    keep_off = cv2.dilate(obj, np.ones((5, 5), np.uint8)) > 0
    k = SHADOW_OFFSET
    right_down = np.zeros_like(obj)
    right_down[k:, k:] = obj[:-k, :-k]
    left_up = np.zeros_like(obj)
    left_up[:-k, :-k] = obj[k:, k:]
    is_shadow = np.isin(labels, sorted(shadow))
    a = (right_down > 0) & ~keep_off
    b = (left_up > 0) & ~keep_off
    if a.sum() < 4:
        return 0.0
    return float(is_shadow[a].mean() - (is_shadow[b].mean() if b.sum() >= 4 else 0.0))


def shadowed(img: np.ndarray, d: Detection | None) -> bool:
    return d is not None and shadow_strength(img, d) > SHADOW_MIN


FRAME_MIN = 0.7  # frame_share over this: the picture has the "frame" style's border


def frame_share(img: np.ndarray) -> float:
    """The share of the picture's outer band (FRAME_WIDTH - 1 pixels: the inner pixel may blur) that has
    the frame colour of the background inside it, each side counted alike: the smallest of the four
    sides' shares. About 0 without a frame (or a background of the frame's colour), 1 with the world's own."""
    if img.shape[0] != SIZE or img.shape[1] != SIZE:
        img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    labels = classify_pixels(img)
    k = FRAME_WIDTH
    inside = labels[k: -k, k: -k]
    colour = _PALETTE_NAMES.index(frame_colour(background_of(inside)))
    b = k - 1
    sides = (labels[:b, k:-k], labels[-b:, k:-k], labels[k:-k, :b], labels[k:-k, -b:])
    return float(min((side == colour).mean() for side in sides))


def framed(img: np.ndarray) -> bool:
    return frame_share(img) > FRAME_MIN


def unframed(img: np.ndarray) -> np.ndarray:
    """The picture with its outer FRAME_WIDTH pixels replaced by the edge of what they enclose, so the
    detector reads the scene inside a frame as it reads an unframed one (the same geometry)."""
    if img.shape[0] != SIZE or img.shape[1] != SIZE:
        img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    k = FRAME_WIDTH
    return cv2.copyMakeBorder(np.ascontiguousarray(img[k:-k, k:-k]), k, k, k, k, cv2.BORDER_REPLICATE)


def score(img: np.ndarray, scene: Scene) -> dict[str, float]:
    """Adherence of a picture to a one- or two-object scene: fraction of the scene's objects whose
    colour / shape / position / size is matched. Each object is matched to the detection of the
    same colour if any (else the largest unmatched), so attributes are scored independently."""
    dets, _ = detect(img)
    res = {"colour": 0.0, "shape": 0.0, "position": 0.0, "size": 0.0}
    used: set[int] = set()
    for obj in scene.objects:
        cand = [i for i, d in enumerate(dets) if i not in used and d.colour == obj.colour]
        if not cand:
            cand = [i for i in range(len(dets)) if i not in used]
        if not cand:
            continue
        i = cand[0]
        used.add(i)
        d = dets[i]
        res["colour"] += d.colour == obj.colour
        res["shape"] += d.shape == obj.shape
        res["position"] += d.position == obj.position
        res["size"] += d.size == obj.size
    k = max(len(scene.objects), 1)
    return {key: v / k for key, v in res.items()}


# ----------------------------------------------------------------------------------------------
# Captions as people write them
#
# The template caption above states every attribute in one fixed order. People leave attributes
# out, reorder them, use other words, drop articles, shout, add words the model does not know.
# ``phrase(scene, family, rng)`` writes a caption of one of the FAMILIES for a scene, together with
# the ``Spec`` it states: the attributes it leaves out are simply not in the Spec. Every scene is
# drawn with all of its attributes sampled independently of which ones a caption states, so a
# training pair whose caption leaves the background out shows a random background: the model
# learns "unspecified = sampled", never "unspecified = some default".
#
# Held out: besides the colour x shape x position combinations of HELD_OUT, some *phrasings* are
# used only with ``split="eval"``: orders (background first joined by "with", position first), a few
# position and background wordings, and the filler words of FILLERS_EVAL. They are made of words
# the training captions do use (a word that training never shows would be an untrained token, not
# a test of generalisation), except the eval fillers, which stand for the unknown words users type.
# ``is_held_out_phrasing`` recognises them; the tests check training never produces one.

FAMILIES = ("template", "bare", "partial", "reordered", "synonyms", "noisy")
# Default share of each family among training captions (train_default_models.py --phrasings).
DEFAULT_MIX = {"template": 0.25, "bare": 0.15, "partial": 0.25, "reordered": 0.1, "synonyms": 0.1, "noisy": 0.15}

# canonical word -> other words people use for it (training uses all of them)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "gray": ("grey",),
    "large": ("big",),
    "small": ("tiny", "little"),
    "square": ("box",),
    "ring": ("donut",),
    "circle": ("disc",),
    "cross": ("plus",),
}
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "ring": "rings",
           "cross": "crosses", "box": "boxes", "donut": "donuts", "disc": "discs", "plus": "pluses"}
# position -> the phrases training uses (the template's own first)
POSITION_VARIANTS: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "to the left", "at the left", "on the left side", "left"),
    "right": ("on the right", "to the right", "at the right", "on the right side", "right"),
    "top": ("at the top", "on top", "in the upper part", "top"),
    "bottom": ("at the bottom", "in the lower part", "bottom"),
    "centre": ("in the centre", "in the center", "in the middle", "at the centre", "centre", "center", "middle"),
}
# position phrases used only in evaluation (made of training words, never in this arrangement)
POSITION_VARIANTS_EVAL: dict[str, tuple[str, ...]] = {
    "left": ("to the left side",),
    "right": ("to the right side",),
    "top": ("on the top",),
    "bottom": ("on the bottom",),
    "centre": ("at the middle",),
}
# Words users add that mean nothing in this world. None of them is in vocabulary(): like any
# unknown word they reach the model as character pieces, and training on them teaches the model
# to ignore such pieces. FILLERS_EVAL never appear in training captions.
# None may end in a vocabulary word either ("bright" would tokenize as b + "right").
FILLERS_TRAIN = ("cute", "nice", "simple", "cool", "shiny", "soft", "bold", "happy")
FILLERS_EVAL = ("lovely", "tidy", "pretty", "glossy", "funny")
PREFIXES = ("a photo of", "a picture of", "an image of", "photo of", "image of")  # in vocabulary()


@dataclass(frozen=True)
class ObjSpec:
    """What a caption says about one object; None = not stated (the picture may show any value)."""
    shape: str
    colour: str | None = None
    size: str | None = None
    position: str | None = None


@dataclass(frozen=True)
class Spec:
    objects: tuple[ObjSpec, ...]
    background: tuple[str, ...] | None = None  # None = not stated

    def stated(self) -> set[str]:
        keys = {"shape"} if self.objects else set()
        for o in self.objects:
            keys |= {k for k in ("colour", "size", "position") if getattr(o, k) is not None}
        if self.background is not None:
            keys.add("background")
        return keys


def spec_of(scene: Scene, drop: tuple[str, ...] | set[str] = ()) -> Spec:
    """The Spec of a scene with the attributes in ``drop`` (colour, size, position, background) left out."""
    objs = tuple(ObjSpec(o.shape, None if "colour" in drop else o.colour, None if "size" in drop else o.size,
                         None if "position" in drop else o.position) for o in scene.objects)
    return Spec(objs, None if "background" in drop else tuple(scene.background))


def _syn(word: str, rng: random.Random, p: float) -> str:
    alts = SYNONYMS.get(word, ())
    return rng.choice(alts) if alts and rng.random() < p else word


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _np(o: ObjSpec, rng: random.Random, p_syn: float = 0.0, article: bool = True, plural: bool = False,
        filler: str | None = None) -> str:
    """Noun phrase without position: [a|an] [filler] [size] [colour] shape[s]."""
    words = []
    if filler:
        words.append(filler)
    if o.size:
        words.append(_syn(o.size, rng, p_syn))
    if o.colour:
        words.append(_syn(o.colour, rng, p_syn))
    shape = _syn(o.shape, rng, p_syn)
    words.append(PLURALS[shape] if plural else shape)
    if article and not plural:
        words.insert(0, _article(words[0]))
    return " ".join(words)


def _pos(position: str, rng: random.Random, mode: str = "canonical") -> str:
    """mode: canonical (the template's), train (any training variant), eval (held-out variants)."""
    if mode == "canonical":
        return POSITION_PHRASE[position]
    table = POSITION_VARIANTS_EVAL if mode == "eval" else POSITION_VARIANTS
    return rng.choice(table[position])


def _colours(bg: tuple[str, ...], rng: random.Random, p_syn: float) -> str:
    return " and ".join(_syn(c, rng, p_syn) for c in bg)


def _bg(bg: tuple[str, ...], rng: random.Random, style: str, p_syn: float = 0.0) -> str:
    c = _colours(bg, rng, p_syn)
    return {
        "suffix": f"{c} background",
        "on": f"on {_article(c)} {c} background",
        "on_bare": f"on {c}",
        "against": f"against {c}",
        "with": f"with {_article(c)} {c} background",
        "against_eval": f"against {_article(c)} {c} background",  # held out
    }[style]


BG_STYLES_TRAIN = ("suffix", "on", "on_bare", "against", "with")


def _objects(spec: Spec, rng: random.Random, p_syn: float, pos_mode: str, article: float = 1.0,
             plural: float = 0.0, filler: str | None = None) -> str:
    parts = []
    for i, o in enumerate(spec.objects):
        one = len(spec.objects) == 1
        np_ = _np(o, rng, p_syn, article=rng.random() < article, plural=one and rng.random() < plural,
                  filler=filler if i == 0 else None)
        parts.append(np_ + (" " + _pos(o.position, rng, pos_mode) if o.position else ""))
    return " and ".join(parts)


def _surface(text: str, rng: random.Random) -> str:
    """Case and punctuation as people type them (the tokenizer lowercases; punctuation is a token)."""
    r = rng.random()
    if r < 0.15:
        text = text[0].upper() + text[1:]
    elif r < 0.22:
        text = text.title()
    elif r < 0.27:
        text = text.upper()
    sep = rng.choice([",", ",", ";", " ,", ""])
    text = text.replace(",", sep)
    text += rng.choice(["", "", "", ".", "!", " ."])
    return re.sub(" +", " ", text).strip()


def _drops(rng: random.Random, k: int) -> set[str]:
    pool = ["size", "position", "background", "colour"]
    weights = [1.0, 1.0, 1.0, 0.5]
    out: set[str] = set()
    while len(out) < k:
        out.add(rng.choices(pool, weights)[0])
    return out


def phrase(scene: Scene, family: str, rng: random.Random, split: str = "train") -> tuple[str, Spec]:
    """A caption of ``family`` for ``scene`` and the Spec it states.

    split="train" never uses a held-out phrasing; split="eval" uses one in every caption of the
    families that have them (reordered, synonyms, noisy); template, bare and partial captions are the
    same in both splits (their evaluation holds out the scene combinations)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown phrasing family {family!r}; one of {', '.join(FAMILIES)}")
    if split not in ("train", "eval"):
        raise ValueError("split is 'train' or 'eval'")
    ev = split == "eval"
    one = len(scene.objects) == 1
    if family == "template":
        return caption(scene), spec_of(scene)

    if family == "bare":  # colour + shape only: "a red circle", "red circle and blue square"
        spec = spec_of(scene, {"size", "position", "background"})
        text = _objects(spec, rng, 0.0, "canonical", article=0.6)
        if rng.random() < 0.15:
            text = text[0].upper() + text[1:]
        return text, spec

    if family == "partial":  # the template's words and order, one or two attributes left out
        spec = spec_of(scene, _drops(rng, 1 if rng.random() < 0.6 else 2))
        text = _objects(spec, rng, 0.0, "canonical")
        if spec.background:
            text += ", " + _bg(spec.background, rng, "suffix")
        return text, spec

    if family == "reordered":  # every attribute stated, in another order
        spec = spec_of(scene)
        if ev:
            orders = ["bg_with"] + (["pos_first", "pos_first"] if one else [])
        else:
            orders = ["bg_first", "inline"] + (["pos_last", "bg_inline_pos"] if one else [])
        order = rng.choice(orders)
        pos_mode = "train" if (not ev and rng.random() < 0.3) else "canonical"
        o = spec.objects[0]
        if order == "bg_first":  # "on a blue background, a red circle on the left"
            text = f"{_bg(spec.background, rng, rng.choice(['suffix', 'on']))}, {_objects(spec, rng, 0.0, pos_mode)}"
        elif order == "inline":  # "a red circle on the left on blue"
            text = f"{_objects(spec, rng, 0.0, pos_mode)} {_bg(spec.background, rng, rng.choice(['on', 'on_bare', 'against', 'with']))}"
        elif order == "pos_last":  # "a small red circle, blue background, on the left"
            text = f"{_np(o, rng)}, {_bg(spec.background, rng, 'suffix')}, {_pos(o.position, rng, pos_mode)}"
        elif order == "bg_inline_pos":  # "a small red circle on blue to the left"
            text = f"{_np(o, rng)} {_bg(spec.background, rng, rng.choice(['on_bare', 'against']))} {_pos(o.position, rng, pos_mode)}"
        elif order == "bg_with":  # held out: "blue background with a red circle on the left"
            text = f"{_colours(spec.background, rng, 0.0)} background with {_objects(spec, rng, 0.0, 'canonical')}"
        else:  # pos_first, held out: "on the left, a small red circle, blue background"
            text = f"{_pos(o.position, rng)}, {_np(o, rng)}, {_bg(spec.background, rng, rng.choice(['suffix', 'on']))}"
        return text, spec

    if family == "synonyms":  # template order, other words: "a big grey box in the middle, ..."
        spec = spec_of(scene)
        text = _objects(spec, rng, 0.8, "eval" if ev else "train")
        style = ("against_eval" if rng.random() < 0.5 else "suffix") if ev else rng.choice(["suffix", "on"])
        return f"{text}, {_bg(spec.background, rng, style, 0.8)}", spec

    # noisy: anything goes: left-out attributes, orders, synonyms, no articles, plurals, fillers, case
    k = rng.choices([0, 1, 2, 3], [0.25, 0.4, 0.25, 0.1])[0]
    spec = spec_of(scene, _drops(rng, k))
    fillers = FILLERS_EVAL if ev else FILLERS_TRAIN
    filler = rng.choice(fillers) if (ev or rng.random() < 0.5) else None
    prefix = rng.choice(PREFIXES) + " " if one and rng.random() < 0.25 else ""
    p_article = 0.5
    if ev and spec.background and one and spec.objects[0].position and rng.random() < 0.5:
        o = spec.objects[0]
        text = f"{_pos(o.position, rng, 'train')}, {_np(o, rng, 0.5, rng.random() < p_article, filler=filler)}, " \
               f"{_bg(spec.background, rng, 'suffix', 0.5)}"
    else:
        objs = _objects(spec, rng, 0.5, "train", article=p_article, plural=0.2, filler=filler)
        if spec.background is None:
            text = prefix + objs
        elif rng.random() < 0.3:
            text = f"{_bg(spec.background, rng, rng.choice(['suffix', 'on']), 0.5)}, {prefix}{objs}"
        else:
            text = f"{prefix}{objs}, {_bg(spec.background, rng, rng.choice(BG_STYLES_TRAIN), 0.5)}"
    return _surface(text, rng), spec


def sample_phrase(scene: Scene, rng: random.Random, mix: dict[str, float] | None = None, split: str = "train") -> tuple[str, Spec]:
    """A caption of a family drawn with the weights of ``mix`` (default DEFAULT_MIX)."""
    mix = mix or DEFAULT_MIX
    names = [f for f in FAMILIES if mix.get(f, 0) > 0]
    family = rng.choices(names, [mix[f] for f in names])[0]
    return phrase(scene, family, rng, split)


def parse_mix(text: str) -> dict[str, float]:
    """'template=0.3,bare=0.2' -> normalised weights; a bare family name means weight 1."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, w = part.partition("=")
        name = name.strip()
        if name not in FAMILIES:
            raise ValueError(f"unknown phrasing family {name!r}; one of {', '.join(FAMILIES)}")
        mix[name] = float(w) if w else 1.0
        if mix[name] < 0:
            raise ValueError(f"negative weight for {name}")
    total = sum(mix.values())
    if total <= 0:
        raise ValueError("the phrasing mix has no positive weight")
    return {k: v / total for k, v in mix.items()}


# ---- reading free text back ---------------------------------------------------------------------

_WORDS: dict[str, tuple[str, str]] = {}  # word -> (kind, canonical value)
for _c in COLOURS:
    _WORDS[_c] = ("colour", _c)
for _s in SHAPES:
    _WORDS[_s] = ("shape", _s)
for _z in SIZES:
    _WORDS[_z] = ("size", _z)
for _canon, _alts in SYNONYMS.items():
    _kind = "colour" if _canon in COLOURS else "shape" if _canon in SHAPES else "size"
    for _a in _alts:
        _WORDS[_a] = (_kind, _canon)
for _single, _plural in PLURALS.items():
    _WORDS[_plural] = _WORDS[_single]
_WORDS.update({w: ("position", p) for p, ws in {
    "left": ("left",), "right": ("right",), "top": ("top", "upper"), "bottom": ("bottom", "lower"),
    "centre": ("centre", "center", "middle"),
}.items() for w in ws})
_WORDS.update({"background": ("background", ""), "and": ("and", ""), "on": ("prep", ""), "against": ("prep", ""),
               "a": ("article", ""), "an": ("article", ""), "the": ("article", "")})
_SEPARATORS = set(",;:.!?")


def normalise(text: str) -> list[str]:
    """Lower-case words and separators (, ; : . ! ?), everything else dropped."""
    return re.findall(r"[a-z]+|[,;:.!?]", text.lower())


def _kinds(text: str) -> list[tuple[str, str]]:
    return [("sep", t) if t in _SEPARATORS else _WORDS.get(t, ("other", t)) for t in normalise(text)]


def parse(text: str) -> Spec | None:
    """What a free caption states: objects (shape, and colour / size / position if stated) and the
    background if stated. Unknown words are ignored. A colour names the background when followed by
    "background" ("blue background", "red and blue background") or when it follows "on" / "against"
    with no shape after it ("on blue"); any other colour names the object it comes with. None when
    no shape is named."""
    toks = _kinds(text)
    used = [False] * len(toks)
    background = None
    for i, (kind, _) in enumerate(toks):  # "... blue [and red] background"
        if kind == "background" and background is None:
            cols, j = [], i - 1
            while j >= 0 and toks[j][0] in ("colour", "and", "article"):
                if toks[j][0] == "colour":
                    cols.insert(0, (j, toks[j][1]))
                j -= 1
            if cols:
                background = tuple(c for _, c in cols)
                for j2 in range(cols[0][0], i + 1):
                    used[j2] = True
    if background is None:  # "on blue", "against red and white"
        for i, (kind, _) in enumerate(toks):
            if kind != "prep":
                continue
            j, cols = i + 1, []
            while j < len(toks) and toks[j][0] in ("colour", "and", "article"):
                if toks[j][0] == "colour":
                    cols.append(toks[j][1])
                j += 1
            ahead = next((k for k, _ in toks[j:] if k not in ("other",)), None)
            if cols and ahead not in ("shape", "size"):
                background = tuple(cols)
                for j2 in range(i, j):
                    used[j2] = True
                break
    # Objects: split on separators and "and"; a shape takes the colour / size words before it and
    # the position words around it; a position standing alone goes to the next object, or else to
    # the last object without one.
    objs: list[dict] = []
    pend: dict = {}
    pend_pos: list[str] = []
    cur: dict | None = None
    for i, (kind, val) in enumerate(toks):
        if used[i]:
            continue
        if kind in ("sep", "and"):
            cur = None
        elif kind in ("colour", "size"):  # describes the next shape
            pend.setdefault(kind, val)
        elif kind == "shape":
            cur = {"shape": val, **pend}
            pend = {}
            if pend_pos:
                cur["position"] = pend_pos.pop(0)
            objs.append(cur)
        elif kind == "position":
            if cur is not None and "position" not in cur:
                cur["position"] = val
            else:
                pend_pos.append(val)
    for p in pend_pos:  # "a red circle, blue background, on the left"
        free = [o for o in objs if "position" not in o]
        if free:
            free[-1]["position"] = p
    for kind, val in pend.items():  # "a circle, red": a trailing word goes to the last object
        free = [o for o in objs if kind not in o]
        if free:
            free[-1][kind] = val
    if not objs:
        return None
    return Spec(tuple(ObjSpec(o["shape"], o.get("colour"), o.get("size"), o.get("position")) for o in objs), background)


def is_held_out_phrasing(text: str) -> bool:
    """Whether a caption uses one of the phrasings kept for evaluation (see the note above FAMILIES)."""
    words = normalise(text)
    flat = " ".join(words)
    if any(w in FILLERS_EVAL for w in words):
        return True
    if "background with" in flat or re.search(r"\bagainst an? ", flat):
        return True
    for variants in POSITION_VARIANTS_EVAL.values():
        if any(re.search(rf"(^| ){re.escape(v)}( |$)", flat) for v in variants):
            return True
    first = next((_WORDS[w][0] for w in words if w in _WORDS and _WORDS[w][0] not in ("article", "prep")), None)
    return first == "position"  # position first: "on the left, a red circle"


SPEC_KEYS = ("colour", "shape", "position", "size", "background")


def score_spec(img: np.ndarray, spec: Spec, ignore: tuple[str, ...] = ()) -> dict[str, float | None]:
    """Adherence of a picture to what a caption states: for each key of SPEC_KEYS, the fraction of
    the objects stating it whose matched detection agrees (background: the detected background
    equals the stated one), or None where the caption does not state it. An object is matched to the
    largest unmatched detection of its stated colour, else to the largest unmatched one."""
    dets, bg = detect(img, ignore=ignore)  # ignore: colours read as background (shadows)
    hits = {k: 0.0 for k in SPEC_KEYS}
    counts = {k: 0 for k in SPEC_KEYS}
    used: set[int] = set()
    for obj in spec.objects:
        cand = [i for i, d in enumerate(dets) if i not in used and obj.colour is not None and d.colour == obj.colour]
        cand = cand or [i for i in range(len(dets)) if i not in used]
        d = dets[cand[0]] if cand else None
        if cand:
            used.add(cand[0])
        for key in ("colour", "shape", "position", "size"):
            want = getattr(obj, key)
            if want is None:
                continue
            counts[key] += 1
            hits[key] += d is not None and getattr(d, key) == want
    if spec.background is not None:
        counts["background"] = 1
        hits["background"] = float(tuple(bg) == tuple(spec.background))
    return {k: (hits[k] / counts[k] if counts[k] else None) for k in SPEC_KEYS}
