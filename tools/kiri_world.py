"""Kiri's toy world: procedurally drawn scenes, their template captions, and an OpenCV detector.

The default models shipped in ``models/checkpoints`` are trained on this world. A scene holds one or
two flat-coloured objects (circle, square, triangle, star, ring, cross) of a named colour and size at
a named position, on a plain or two-tone (left half / right half) background. Captions come from the
scene parameters by a small grammar, e.g.::

    a small red circle on the left, blue background
    a large green star at the top and a small white ring at the bottom, purple and black background

``detect`` reads a picture back into objects (colour, shape, size, position) with OpenCV only, so the
evaluation and the tests can measure whether a generated image follows its prompt.

The free phrasings people type (bare, reordered, synonyms...), the vocabulary and reading free text
back are tools/kiri_phrasing.py's.

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
# Shapes the world's scenes never hold (no default model learnt them): the example LoRA kiri-moon teaches
# the first. Drawn and detected like SHAPES when asked for (``detect(extra_shapes=NEW_SHAPES)``).
NEW_SHAPES = ("moon",)
MOON_CUT = (0.8, 0.0, 0.8)  # the disc cut from the moon's: centre (x, y) and radius, in the shape's radius
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
    if shape == "moon":  # a crescent opening to the right: a disc with a disc cut from its right side
        a = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        circle = np.stack([np.cos(a), np.sin(a)], 1)
        return [pts(circle)], [pts(circle * MOON_CUT[2] + np.array(MOON_CUT[:2]))]
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


def _templates(res: int = 32, shapes=SHAPES) -> dict[str, np.ndarray]:
    out = {}
    for shape in shapes:
        m = shape_mask(shape, 64, 64, 56, size=128) > 127
        ys, xs = np.nonzero(m)
        crop = m[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].astype(np.uint8) * 255
        out[shape] = cv2.resize(crop, (res, res), interpolation=cv2.INTER_AREA) > 127
    return out


_TEMPLATES = _templates()
_NEW_TEMPLATES = _templates(shapes=NEW_SHAPES)


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


def classify_shape(mask: np.ndarray, extra_shapes: tuple[str, ...] = ()) -> tuple[str, dict[str, float]]:
    """Best matching shape of a binary mask cropped to its bounding box (IoU against templates);
    `extra_shapes` (of NEW_SHAPES) are candidates too."""
    m = cv2.resize(mask.astype(np.uint8) * 255, (32, 32), interpolation=cv2.INTER_AREA) > 127
    scores = {}
    templates = {**_TEMPLATES, **{k: _NEW_TEMPLATES[k] for k in extra_shapes}}
    for shape, t in templates.items():
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


def detect(img: np.ndarray, min_area: int = 30, ignore: tuple[str, ...] = (),
           extra_shapes: tuple[str, ...] = ()) -> tuple[list[Detection], tuple[str, ...]]:
    """Objects in an RGB uint8 picture (any square size; read at 64x64), largest first, and the
    background colours. Pixels of an `ignore` colour (the shadows of the "shadow" style) count as
    background. `extra_shapes` (of NEW_SHAPES): shapes read besides the world's own."""
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
        shape, scores = classify_shape(mask, extra_shapes)
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
