"""Held-out measurement of kiri-outline-controlnet (the default ControlNet of kiri-shapes-ldm) with kiri_world's detector.

    python tools/eval_controlnet.py [--n 48] [--steps 20] [--cfg 7.5] [--pictures]

The scenes are kiri_world's held-out colour x shape x position combinations (``eval_prompts``, never
drawn in training), each prompted twice: a full caption in the held-out phrasings (as tools/eval_lora.py
writes them) and a short loose prompt ("a red circle"). Each is drawn by diffusers'
StableDiffusionControlNetPipeline, built from the loaded kiri-shapes-ldm components and the ControlNet,
at the model's defaults (its DPM++ 2M scheduler, --steps, CFG --cfg), with two control maps per scene:

* ``canny``: cv2.Canny of the rendered scene (100, 200), as the canny preprocessor gives it;
* ``scribble``: the object's outline drawn as a wobbly hand stroke (tools/train_controlnet.scribble_map).

Measured:

* IoU of the picture's object region (kiri_world.classify_pixels: every pixel not of the detected
  background colours) with the region the map encloses (the scene's true shape mask, filled);
* colour: an object of the prompted colour is detected (as kiri_world.score matches objects), and
  strictly: the largest detected object has it; counted on the prompts that state a colour (every
  loose prompt, most full captions);
* the same prompts and seeds without the ControlNet (the base model) as the "before" row; its IoU is
  what a picture scores by chance, its colour accuracy the prompt-only baseline the ControlNet should keep.

Prints a JSON summary and a markdown table; --pictures writes the card's before/after grid
(models/ControlNet/kiri-outline-controlnet_before_after.jpg: control map | base | with ControlNet).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import kiri_phrasing as P  # noqa: E402
from tools import kiri_world as W  # noqa: E402
from tools import train_controlnet as C  # noqa: E402
from tools.eval_lora import FAMILIES, grid, pct  # noqa: E402
from tools.train_lora import BASE, load_base  # noqa: E402

PROMPT_KINDS = ("full", "loose")


def held_out_items(n: int, seed: int = 99) -> list[dict]:
    """Held-out scenes with their prompts (a full caption in a held-out phrasing, a loose one) and maps."""
    rng = random.Random(seed + 1)
    items = []
    for i, scene in enumerate(W.eval_prompts(n, seed=seed)):
        text, spec = P.phrase(scene, FAMILIES[i % len(FAMILIES)], rng, split="eval")
        o = scene.objects[0]
        image = W.render(scene)
        items.append({"scene": scene, "full": text, "loose": f"a {o.colour} {o.shape}",
                      "colour": {"full": spec.objects[0].colour, "loose": o.colour},  # None: the caption leaves it out
                      "mask": C.true_mask(scene),
                      "maps": {"canny": C.canny_map(image), "scribble": C.scribble_map(scene, random.Random(seed * 31 + i))}})
    return items


def load_pipes(base: Path, controlnet: Path):
    """The base text-to-image pipeline, and the ControlNet pipeline sharing its loaded components."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    pipe = load_base(base)
    cn = ControlNetModel.from_pretrained(str(controlnet), torch_dtype=torch.float32).eval()
    cpipe = StableDiffusionControlNetPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet, controlnet=cn,
        scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    cpipe.set_progress_bar_config(disable=True)
    return pipe, cpipe


def generate(pipe, prompts: list[str], steps: int, cfg: float, maps: np.ndarray | None = None, seed: int = 1000,
             batch: int = 16, **control) -> np.ndarray:
    """`control`: the ControlNet pipeline's own arguments (controlnet_conditioning_scale, guess_mode: what
    a unit's weight and control mode "ControlNet is more important" become)."""
    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i: i + batch]
        kw = {} if maps is None else {"image": C.to_cond(maps[i: i + batch]), **control}
        res = pipe(chunk, num_inference_steps=steps, guidance_scale=cfg, height=64, width=64, output_type="np",
                   generator=[torch.Generator().manual_seed(seed + i + k) for k in range(len(chunk))], **kw)
        out.append((np.clip(res.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def object_region(img: np.ndarray) -> np.ndarray:
    """Pixels that are not of the picture's detected background colour(s)."""
    labels = W.classify_pixels(img)
    bg = [list(W.COLOURS).index(c) for c in W.detect(img)[1]]
    return ~np.isin(labels, bg)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def scores(images: np.ndarray, items: list[dict], kind: str = "full") -> dict[str, float]:
    """IoU with the map's shape; colour as kiri_world.score matches it (an object of the prompted colour
    is detected), and strictly (the largest object has it), on the prompts that state a colour."""
    ious = [iou(object_region(im), it["mask"]) for im, it in zip(images, items)]
    dets = [W.detect(im)[0] for im in images]
    stated = [(d, it["colour"][kind]) for d, it in zip(dets, items) if it["colour"][kind] is not None]
    return {"iou": float(np.mean(ious)), "iou_ge_0.5": float(np.mean([x >= 0.5 for x in ious])),
            "colour": float(np.mean([any(x.colour == c for x in d) for d, c in stated])),
            "colour_largest": float(np.mean([bool(d) and d[0].colour == c for d, c in stated])),
            "colour_prompts": len(stated)}


def measure(pipe, cpipe, items: list[dict], steps: int, cfg: float, kinds=PROMPT_KINDS, maps=C.MAP_KINDS,
            **control) -> dict:
    """{prompt kind: {"base": scores, map kind: scores}} and the pictures {(prompt kind, "base" | map kind): array}."""
    res, pictures = {}, {}
    for pk in kinds:
        prompts = [it[pk] for it in items]
        pictures[pk, "base"] = generate(pipe, prompts, steps, cfg)
        res[pk] = {"base": scores(pictures[pk, "base"], items, pk)}
        for mk in maps:
            m = np.stack([it["maps"][mk] for it in items])
            pictures[pk, mk] = generate(cpipe, prompts, steps, cfg, maps=m, **control)
            res[pk][mk] = scores(pictures[pk, mk], items, pk)
    return res, pictures


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=48, help="held-out scenes")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=7.5, help="the LDM's default guidance scale")
    p.add_argument("--base", default=str(BASE))
    p.add_argument("--controlnet", default=str(C.OUT))
    p.add_argument("--pictures", action="store_true", help="write the card's before/after grid beside the ControlNet")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the summary here")
    p.add_argument("--weight", type=float, default=1.0, help="the unit's weight (controlnet_conditioning_scale)")
    p.add_argument("--more-important", action="store_true",
                   help='control mode "ControlNet is more important" (diffusers\' guess_mode), as Kiri runs it')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    items = held_out_items(args.n)
    pipe, cpipe = load_pipes(Path(args.base), Path(args.controlnet))
    res, pictures = measure(pipe, cpipe, items, args.steps, args.cfg, controlnet_conditioning_scale=args.weight,
                            guess_mode=args.more_important)
    summary = {"scenes": len(items), "steps": args.steps, "cfg": args.cfg, **res,
               "prompts": [[it["full"], it["loose"]] for it in items[:8]]}
    lines = [f"{len(items)} held-out scenes, {args.steps} steps DPM++ 2M, CFG {args.cfg:g}; IoU of the picture's object "
             "region with the map's filled shape; colour: an object of the prompted colour is found (largest: "
             "the largest object has it), on the prompts that state a colour:", "",
             "| prompt | model | map | IoU (mean) | IoU >= 0.5 | colour | colour (largest) |", "|---|---|---|---|---|---|---|"]
    for pk in PROMPT_KINDS:
        for row in ("base",) + C.MAP_KINDS:
            v = res[pk][row]
            model, mp = ("kiri-shapes-ldm (before)", "none") if row == "base" else (C.NAME, row)
            lines.append(f"| {pk} | {model} | {mp} | {v['iou']:.2f} | {pct(v['iou_ge_0.5'])} | {pct(v['colour'])} "
                         f"| {pct(v['colour_largest'])} |")
    print(json.dumps(summary, indent=1))
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if args.pictures:
        pick = list(range(min(8, len(items) - len(items) % 2)))
        rows = []
        for k, i in enumerate(pick):  # alternate map kinds and prompt kinds across the rows
            mk, pk = C.MAP_KINDS[k % 2], PROMPT_KINDS[(k // 2) % 2]
            rows.append([items[i]["maps"][mk], pictures[pk, "base"][i], pictures[pk, mk][i]])
        rows = [rows[j] + rows[j + 1] for j in range(0, len(rows), 2)]  # two triples side by side
        grid(rows, Path(args.controlnet).with_name(f"{C.NAME}_before_after.jpg"))
        print("grid rows (control map | base | with ControlNet):",
              [(C.MAP_KINDS[k % 2], items[i][PROMPT_KINDS[(k // 2) % 2]]) for k, i in enumerate(pick)])


if __name__ == "__main__":
    main()
