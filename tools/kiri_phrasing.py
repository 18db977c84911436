"""Captions as people write them, for Kiri's toy world (tools/kiri_world.py): the free phrasings
(``phrase``: bare, partial, reordered, synonyms, noisy, beside the world's one template), the
vocabulary the tokenizer must hold, reading free text back into what it states (``parse``), and
scoring a picture against that (``score_spec``, with the world's detector).

Importable without torch: numpy and cv2 only.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np

from tools.kiri_world import COLOURS, NEW_SHAPES, POSITION_PHRASE, SHAPES, SIZES, Scene, caption, detect


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
    words.append(PLURALS.get(shape, f"{shape}s") if plural else shape)
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
for _s in NEW_SHAPES:  # read back from a prompt (the example LoRA kiri-moon's); not in vocabulary()
    _WORDS[_s] = _WORDS[f"{_s}s"] = ("shape", _s)
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


def score_spec(img: np.ndarray, spec: Spec, ignore: tuple[str, ...] = (),
               extra_shapes: tuple[str, ...] = ()) -> dict[str, float | None]:
    """Adherence of a picture to what a caption states: for each key of SPEC_KEYS, the fraction of
    the objects stating it whose matched detection agrees (background: the detected background
    equals the stated one), or None where the caption does not state it. An object is matched to the
    largest unmatched detection of its stated colour, else to the largest unmatched one."""
    # ignore: colours read as background (shadows); extra_shapes: shapes of NEW_SHAPES read too
    dets, bg = detect(img, ignore=ignore, extra_shapes=extra_shapes)
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
