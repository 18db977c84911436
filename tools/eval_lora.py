"""Held-out measurement of the example LoRAs (kiri-frame, kiri-shadow, kiri-outline) and embedding (kiri-sunset)
with kiri_world's detector.

    python tools/eval_lora.py [--n 48] [--steps 20] [--pictures] [--concept outline|shadow|frame]

Prompts are never training captions: the scenes are kiri_world's held-out colour x shape x position
combinations, written in the held-out phrasings (template, bare "a red circle", reordered, synonyms,
noisy with unknown filler words), plus the model card's short loose prompts. Both add-ons are loaded
with diffusers' own loaders (``pipe.load_lora_weights``, ``pipe.load_textual_inversion``).

* kiri-frame (--concept frame): the share of pictures in the style's border (``kiri_world.framed``: each of
  the four sides' outer band in the frame colour of the background inside it), with the LoRA at weight 1,
  at 0.5 and without it; colour / position / shape read on the picture with its border replaced by the
  edge it encloses (``kiri_world.unframed``), in every row alike.
* kiri-shadow (--concept shadow): the share of pictures whose main object casts the style's
  shadow (``kiri_world.shadowed``: the background right and below it in the shadow colour, against the
  same band left and above; shadows read as background when objects are found), with the LoRA at weight 1, at 0.5 and without it, and colour / position / shape accuracy.
* kiri-outline (--concept outline, the default): the share of pictures whose main object (the detection matched to the prompt's object,
  as kiri_phrasing.score_spec matches) is drawn as an outline (``Detection.outlined``), with the LoRA at
  weight 1, at 0.5 and without it, and the colour / position / shape accuracy of each; "middle hollow"
  (the middle of the object's box shows the background, as in a ring) is a looser reading. The prompt
  carries ``<lora:kiri-outline:1>`` as a user writes it; the tag is cut before the text encoder reads
  the prompt, as Kiri's runner does. The same measure on the prompts' scenes drawn by kiri_world in
  the outline style is the detector's ceiling.
* kiri-sunset: the share of pictures whose detected background is the orange | purple two-tone (and
  the share with the two colours on either side), with
  the embedding, without it (the word is then unknown text), and for the base model given the plain
  words "orange and purple background"; plus colour / shape / position of the object.

Prints a JSON summary and markdown tables; --pictures writes the card's before/after grids.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import random
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import kiri_phrasing as P  # noqa: E402
from tools import kiri_world as W  # noqa: E402
from tools import train_lora as T  # noqa: E402

CARD = ROOT / "models" / "Lora"
LOOSE = ["a red circle", "blue star on the left", "a big yellow square in the middle, grey background",
         "green triangle at the bottom", "a white ring", "purple cross on the right, black background"]
# kiri-moon's loose prompts: what a newcomer types for the new shape
MOON_LOOSE = ["a yellow moon", "white moon at the top", "a big orange moon in the middle, black background",
              "blue moon on the left", "a small red moon", "purple moon on the right, white background"]
FAMILIES = ["template", "bare", "reordered", "synonyms", "noisy"]
TAG = re.compile(r"<lora:[^>]*>")


def _loose_spec(text: str):
    return P.parse(text)


def outline_prompts(n: int, seed: int = 99) -> list[tuple[str, object, W.Scene | None]]:
    """(prompt, Spec, scene or None) on held-out scenes and phrasings, then the loose prompts."""
    rng = random.Random(seed + 1)
    scenes = W.eval_prompts(n, seed=seed)
    out = []
    for i, s in enumerate(scenes):
        text, spec = P.phrase(s, FAMILIES[i % len(FAMILIES)], rng, split="eval")
        out.append((text, spec, s))
    out += [(t, _loose_spec(t), None) for t in LOOSE]
    return out


def moon_prompts(n: int, seed: int = 55) -> list[tuple[str, object, W.Scene | None]]:
    """(prompt, Spec, scene or None) for kiri-moon: n one-moon scenes in the colour and place pairs no
    training moon has (train_lora.MOON_HELD_OUT), written in the held-out phrasings, then MOON_LOOSE."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        colour, position = T.MOON_HELD_OUT[i % len(T.MOON_HELD_OUT)]
        size = list(W.SIZES)[(i + i // len(T.MOON_HELD_OUT)) % 2]
        free = [c for c in W.BACKGROUND_COLOURS if c != colour]
        bg = (rng.choice(free),) if rng.random() >= 0.25 else tuple(rng.sample(free, 2))
        scene = W.Scene((W._make_obj(rng, colour, T.MOON, size, position, jitter=False),), bg)
        family = FAMILIES[(i + i // len(T.MOON_HELD_OUT)) % len(FAMILIES)]  # every family meets every pair
        text, spec = P.phrase(scene, family, rng, split="eval")
        out.append((text, spec, scene))
    out += [(t, _loose_spec(t), None) for t in MOON_LOOSE]
    return out


def sunset_prompts(n: int, seed: int = 77) -> list[tuple[str, str, object]]:
    """(prompt with kiri-sunset, the same prompt with the plain words, Spec) on held-out scenes."""
    rng = random.Random(seed + 1)
    scenes = [s for s in W.eval_prompts(2 * n, seed=seed) if s.objects[0].colour not in T.SUNSET][:n]
    out = []
    for i, s in enumerate(scenes):
        s = W.Scene(s.objects, T.SUNSET)
        family = FAMILIES[i % len(FAMILIES)]
        if family == "bare":
            family = "template"  # bare captions drop the background, the very thing measured
        text, spec = P.phrase(s, family, rng, split="eval")
        pattern = re.compile(r"orange(,? and | )purple", re.IGNORECASE)
        if not pattern.search(text):
            text, plain = f"{text}, {T.EMBEDDING_WORD} background", f"{text}, orange and purple background"
        else:
            text, plain = pattern.sub(T.EMBEDDING_WORD, text, count=1), text
        out.append((text, plain, spec))
    return out


def generate(pipe, prompts: list[str], steps: int, seed: int = 1000, batch: int = 16, **kw) -> np.ndarray:
    out = []
    for i in range(0, len(prompts), batch):
        chunk = [TAG.sub("", p).strip() for p in prompts[i: i + batch]]
        res = pipe(chunk, num_inference_steps=steps, height=64, width=64, output_type="np",
                   generator=[torch.Generator().manual_seed(seed + i + k) for k in range(len(chunk))], **kw)
        out.append((np.clip(res.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def main_detection(img: np.ndarray, spec, ignore: tuple[str, ...] = (),
                   extra_shapes: tuple[str, ...] = ()) -> W.Detection | None:
    """The detection score_spec matches to the prompt's first object: its colour's largest, else the largest."""
    dets, _ = W.detect(img, ignore=ignore, extra_shapes=extra_shapes)
    obj = spec.objects[0] if spec is not None and spec.objects else None
    same = [d for d in dets if obj is not None and obj.colour is not None and d.colour == obj.colour]
    return (same or dets or [None])[0]


def hollow(img: np.ndarray, d: W.Detection | None) -> bool:
    """Whether the middle of the detection's box shows the background (a ring's does too)."""
    if d is None:
        return False
    x, y, w, h = d.bbox
    cx, cy = x + w // 2, y + h // 2
    labels = W.classify_pixels(img[max(cy - 1, 0): cy + 2, max(cx - 1, 0): cx + 2])
    bg = [list(W.COLOURS).index(c) for c in W.detect(img)[1]]
    return float(np.isin(labels, bg).mean()) > 0.5


def outline_scores(images: np.ndarray, items, concept: str = "outline") -> dict[str, float]:
    # Shadows are gray (kiri_world.shadow_colour), a colour no object has: read as background in every row.
    ignore = (W.SHADOW_COLOUR,) if concept == "shadow" else ()
    extra = W.NEW_SHAPES if concept == "moon" else ()
    if concept == "moon":  # the prompt's object (as score_spec matches it) reads as a moon
        found = [main_detection(im, spec, extra_shapes=extra) for im, (_, spec, _) in zip(images, items)]
        res = {"moon": float(np.mean([d is not None and d.shape == T.MOON for d in found])),
               "any_moon": float(np.mean([any(d.shape == T.MOON for d in W.detect(im, extra_shapes=extra)[0])
                                          for im in images]))}
    elif concept == "frame":  # the concept is the border itself: measured on the picture, then left out
        res = {"frame": float(np.mean([W.framed(im) for im in images])),
               "strength": float(np.median([W.frame_share(im) for im in images]))}
        images = np.stack([W.unframed(im) for im in images])  # every row alike, with and without the LoRA
    elif concept == "shadow":
        found = [main_detection(im, spec, ignore) for im, (_, spec, _) in zip(images, items)]
        res = {"shadow": float(np.mean([W.shadowed(im, d) for im, d in zip(images, found)])),
               "strength": float(np.median([W.shadow_strength(im, d) if d is not None else 0.0
                                            for im, d in zip(images, found)]))}
    else:
        found = [main_detection(im, spec, ignore) for im, (_, spec, _) in zip(images, items)]
        res = {"outline": float(np.mean([d is not None and d.outlined for d in found])),
               "hollow": float(np.mean([hollow(im, d) for im, d in zip(images, found)]))}
    scores = [P.score_spec(im, spec, ignore, extra) for im, (_, spec, _) in zip(images, items) if spec is not None]
    for k in ("colour", "position", "shape"):
        vals = [s[k] for s in scores if s[k] is not None]
        res[k] = float(np.mean(vals)) if vals else float("nan")
    return res


def sunset_scores(images: np.ndarray, items) -> dict[str, float]:
    bgs = [tuple(W.detect(im)[1]) for im in images]
    res = {"sunset": float(np.mean([bg == T.SUNSET for bg in bgs])),
           "either_order": float(np.mean([sorted(bg) == sorted(T.SUNSET) for bg in bgs]))}
    scores = [P.score_spec(im, P.Spec(spec.objects, None)) for im, (_, _, spec) in zip(images, items)]
    for k in ("colour", "position", "shape"):
        vals = [s[k] for s in scores if s[k] is not None]
        res[k] = float(np.mean(vals)) if vals else float("nan")
    return res


def grid(rows: list[np.ndarray], path: Path, scale: int = 2) -> None:
    img = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])


def pct(v: float) -> str:
    return f"{v * 100:.0f}%"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=48, help="held-out scene prompts (plus the loose prompts for the LoRA)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--base", default=str(T.BASE))
    p.add_argument("--concept", choices=sorted(T.LORA_CONCEPTS), default="outline")
    p.add_argument("--lora", default=None, help="default: models/Lora/kiri-<concept>.safetensors")
    p.add_argument("--embedding", default=str(T.EMBEDDING_OUT))
    p.add_argument("--only", choices=["lora", "embedding"], default=None)
    p.add_argument("--pictures", action="store_true", help="write the card's before/after grids to models/Lora/")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the summary here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    name = T.LORA_CONCEPTS[args.concept]
    args.lora = args.lora or str(T.LORA_OUT.with_name(f"{name}.safetensors"))
    summary: dict = {"steps": args.steps}
    lines: list[str] = []

    if args.only in (None, "lora"):
        c = args.concept
        items = moon_prompts(args.n) if c == "moon" else outline_prompts(args.n)
        loose = MOON_LOOSE if c == "moon" else LOOSE
        prompts = [f"{t} <lora:{name}:1>" for t, _, _ in items]
        pipe = T.load_base(Path(args.base))
        base = generate(pipe, prompts, args.steps)
        pipe.load_lora_weights(args.lora, adapter_name=name)
        with_lora = generate(pipe, prompts, args.steps)
        pipe.set_adapters([name], adapter_weights=[0.5])
        half = generate(pipe, prompts, args.steps)
        truth = np.stack([W.render(s, style="filled" if c == "moon" else c) for _, _, s in items if s is not None])
        rows = {"without the LoRA": outline_scores(base, items, c), "LoRA at 0.5": outline_scores(half, items, c),
                "LoRA at 1": outline_scores(with_lora, items, c),
                f"kiri_world's own {c} drawings (ceiling)": outline_scores(truth, [it for it in items if it[2] is not None], c)}
        summary["lora"] = {"name": name, "prompts": len(items), **rows}
        first, second = {"shadow": (c, "strength"), "frame": (c, "strength"), "moon": ("moon", "any_moon")}.get(
            c, ("outline", "hollow"))
        head = {"shadow": "| | shadow | median shadow share | colour | position | shape |",
                "frame": "| | framed | median frame share | colour | position | shape |",
                "moon": "| | moon (the prompt's object) | a moon anywhere | colour | position | shape |"}.get(
            c, "| | outline | middle hollow | colour | position | shape |")
        lines += [f"{name}, {len(items)} held-out prompts ({args.n} held-out scenes + {len(loose)} loose), "
                  f"{args.steps} steps:", "", head, "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {pct(v[first])} | {v[second]:.2f} | {pct(v['colour'])} | {pct(v['position'])} | {pct(v['shape'])} |"
                  if c in ("shadow", "frame") else
                  f"| {k} | {pct(v[first])} | {pct(v[second])} | {pct(v['colour'])} | {pct(v['position'])} | {pct(v['shape'])} |"
                  for k, v in rows.items()]
        lines.append("")
        if args.pictures:
            pick = list(range(len(items) - len(loose), len(items))) + [0, 1, 2, 5, 7, 11]
            grid([base[pick], with_lora[pick]], CARD / f"{name}_before_after.jpg")
            # the card's picture: the first of the grid's pictures that shows the concept
            shown = next((i for i in pick if outline_scores(with_lora[i: i + 1], items[i: i + 1], c)[first] > 0), pick[0])
            cv2.imwrite(str(Path(args.lora).with_suffix(".preview.png")),
                        cv2.cvtColor(cv2.resize(with_lora[shown], (128, 128), interpolation=cv2.INTER_NEAREST), cv2.COLOR_RGB2BGR))
        del pipe

    if args.only in (None, "embedding"):
        items = sunset_prompts(args.n)
        pipe = T.load_base(Path(args.base))
        plain = generate(pipe, [pl for _, pl, _ in items], args.steps)
        unknown = generate(pipe, [t for t, _, _ in items], args.steps)
        pipe.load_textual_inversion(args.embedding, token=T.EMBEDDING_WORD)
        learnt = generate(pipe, [t for t, _, _ in items], args.steps)
        rows = {"base, no embedding (the word is unknown text)": sunset_scores(unknown, items),
                f"with the embedding ({T.EMBEDDING_WORD})": sunset_scores(learnt, items),
                "base, the plain words \"orange and purple background\"": sunset_scores(plain, items)}
        summary["embedding"] = {"prompts": len(items), **rows}
        lines += [f"kiri-sunset, {len(items)} held-out prompts, {args.steps} steps:", "",
                  "| | orange / purple background | orange and purple, either side | colour | position | shape |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {pct(v['sunset'])} | {pct(v['either_order'])} | {pct(v['colour'])} | {pct(v['position'])} "
                  f"| {pct(v['shape'])} |"
                  for k, v in rows.items()]
        if args.pictures:
            grid([unknown[:10], learnt[:10]], CARD / f"{T.EMBEDDING_WORD}_before_after.jpg")
            cv2.imwrite(str(Path(args.embedding).with_suffix(".preview.png")),
                        cv2.cvtColor(cv2.resize(learnt[0], (128, 128), interpolation=cv2.INTER_NEAREST), cv2.COLOR_RGB2BGR))
        summary["embedding_prompts"] = [t for t, _, _ in items[:10]]
    if args.only in (None, "lora"):
        listed = [t for t, _, _ in (moon_prompts(args.n) if args.concept == "moon" else outline_prompts(args.n))]
        summary["lora_prompts"] = listed[-len(loose):] + listed[:12]
    print(json.dumps(summary, indent=1))
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
