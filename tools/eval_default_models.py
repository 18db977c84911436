#!/usr/bin/env python
"""Measure how well Kiri's default models follow their prompts.

    python tools/eval_default_models.py                     # both models, default sampler + every sampler
    python tools/eval_default_models.py --models ldm --n 48 --samplers "DPM++ 2M,Euler" --steps 5 10 20
    python tools/eval_default_models.py --markdown out.md   # also write the tables as Markdown
    python tools/eval_default_models.py --phrasings template,bare,partial,reordered,synonyms,noisy --n 16
    python tools/eval_default_models.py --bare-grid bare.png   # what "a red circle", "a blue star"... give
    python tools/eval_default_models.py --models dit --models-dir NEW --before-after models/checkpoints grid.png

Prompts are held-out captions: one object whose colour x shape x position combination never occurs
in the training scenes (``kiri_world.HELD_OUT``), in either size, on plain or two-tone backgrounds.
Each picture is generated through the real diffusers pipeline loaded from
``models/checkpoints/<model>`` and read back by the OpenCV detector of ``kiri_world``; the table gives
the fraction of pictures whose detected object has the prompt's colour, shape, position and size.

``--phrasings FAMILY[,FAMILY]`` evaluates the same held-out scenes with captions of each phrasing
family of ``kiri_phrasing.phrase`` (split "eval": the held-out phrasings too), at the default sampler
and 20 steps, and prints one table per family. A caption that leaves an attribute out is judged
only on what it states (``kiri_phrasing.score_spec``); each cell gives the share and, in brackets, how
many prompts stated it. "background" is whether the detected background is the stated one.
``--negative red`` measures how often red appears (object or background) for prompts that name no
colour, without and with "red" as the negative prompt. ``--bare-grid PATH`` saves a picture grid of bare prompts ("a red circle", ...), several seeds each,
one block of columns per model, and prints how often colour and shape come out.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import kiri_phrasing as P  # noqa: E402
from tools import kiri_world as W  # noqa: E402

MODELS = {"ldm": "kiri-shapes-ldm", "dit": "kiri-shapes-dit"}
# Prompts that name no colour, for the negative prompt measurement.
NEGATIVE_PROMPTS = ["a circle", "a square", "a triangle", "a star on the left", "a large ring", "a cross at the top"]
DEFAULT_STEPS = 20
KEYS = ("colour", "shape", "position", "size")

# Used when the app's sampler registry cannot be imported: (name, diffusers class, options, flow?)
_FALLBACK_SAMPLERS = [
    ("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, False),
    ("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, False),
    ("Euler a", "EulerAncestralDiscreteScheduler", {}, False),
    ("Euler", "EulerDiscreteScheduler", {}, False),
    ("LMS", "LMSDiscreteScheduler", {}, False),
    ("Heun", "HeunDiscreteScheduler", {}, False),
    ("DDIM", "DDIMScheduler", {"set_alpha_to_one": False}, False),
    ("UniPC", "UniPCMultistepScheduler", {}, False),
    ("Flow Euler", "FlowMatchEulerDiscreteScheduler", {}, True),
    ("Flow Heun", "FlowMatchHeunDiscreteScheduler", {}, True),
]


def builtin_samplers(flow: bool) -> list[tuple[str, object, dict | None]]:
    """(name, builder, options) of the app's built-in samplers that fit the model (flow, or epsilon
    prediction). Function samplers (k-diffusion style, and every flow form that is one) run inside the
    plain pipeline through the app's FunctionScheduler; their noise comes from torch's global generator,
    which `generate` seeds."""
    import diffusers

    out = []
    try:
        from webui.engine.samplers.registry import BUILTIN_SAMPLERS

        for s in BUILTIN_SAMPLERS:
            if ("flow" if flow else "epsilon") not in s.fits:
                continue
            out.append((s.name, s.build, None))  # the app's own construction (flow options included)
    except Exception:  # the app is not importable here: a fixed list of the same samplers
        for name, cls, opts, is_flow in _FALLBACK_SAMPLERS:
            if is_flow == flow or (flow and name in ("DPM++ 2M", "UniPC")):
                if flow and not is_flow:
                    opts = {**opts, "use_flow_sigmas": True, "prediction_type": "flow_prediction"}
                out.append((name, getattr(diffusers, cls).from_config, opts))
    return out


def load(model: str, models_dir: Path):
    from diffusers import DiffusionPipeline

    folder = models_dir / MODELS[model]
    index = json.loads((folder / "model_index.json").read_text())
    # StableDiffusion3Pipeline without T5: the null slots have to be passed explicitly.
    extra = {k: None for k in ("text_encoder_3", "tokenizer_3") if k in index and index[k][0] is None}
    # float32 as Kiri runs them on the CPU (a folder may store its weights in float16)
    pipe = DiffusionPipeline.from_pretrained(folder, dtype=torch.float32, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, prompts: list[str], seeds: list[int], steps: int, cfg: float | None, batch: int = 16,
             negative: str | None = None) -> np.ndarray:
    out = []
    torch.manual_seed(seeds[0] if seeds else 0)  # function samplers' noise (see builtin_samplers)
    for i in range(0, len(prompts), batch):
        kw = {} if cfg is None else {"guidance_scale": cfg}
        if negative:
            kw["negative_prompt"] = [negative] * len(prompts[i: i + batch])
        res = pipe(prompts[i: i + batch], num_inference_steps=steps, height=64, width=64, output_type="np",
                   generator=[torch.Generator().manual_seed(s) for s in seeds[i: i + batch]], **kw)
        out.append((np.clip(res.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def measure(images: np.ndarray, scenes: list) -> dict[str, float]:
    scores = [W.score(im, sc) for im, sc in zip(images, scenes)]
    return {k: float(np.mean([s[k] for s in scores])) for k in KEYS}


def evaluate(model: str, args) -> dict:
    pipe = load(model, Path(args.models_dir))
    flow = "FlowMatch" in type(pipe.scheduler).__name__
    base = pipe.scheduler
    scenes = W.eval_prompts(args.n, seed=args.seed)
    prompts = [s.caption for s in scenes]
    seeds = list(range(args.seed, args.seed + args.n))
    result = {"model": MODELS[model], "n": args.n, "cfg": args.cfg, "default": None, "samplers": []}

    t0 = time.time()
    imgs = generate(pipe, prompts, seeds, DEFAULT_STEPS, args.cfg)
    dt = time.time() - t0
    default = {"sampler": type(base).__name__, "steps": DEFAULT_STEPS, **measure(imgs, scenes), "sec_per_image": dt / args.n}
    result["default"] = default
    print(f"{MODELS[model]} default ({default['sampler']}, {DEFAULT_STEPS} steps): " + fmt(default), flush=True)
    if args.save_grid:
        save_grid(imgs[:32], Path(args.save_grid) / f"{MODELS[model]}_heldout.png")

    wanted = [s.strip() for s in args.samplers.split(",")] if args.samplers else None
    for name, make, opts in builtin_samplers(flow):
        if wanted and name not in wanted:
            continue
        try:
            pipe.scheduler = make(dict(base.config)) if opts is None else make(base.config, **opts)
        except Exception as exc:  # noqa: BLE001
            print(f"  {name}: cannot build ({exc})")
            continue
        for steps in args.steps:
            try:
                t0 = time.time()
                imgs = generate(pipe, prompts, seeds, steps, args.cfg)
                row = {"sampler": name, "steps": steps, **measure(imgs, scenes), "sec_per_image": (time.time() - t0) / args.n}
            except Exception as exc:  # noqa: BLE001
                row = {"sampler": name, "steps": steps, "error": str(exc)[:200]}
            result["samplers"].append(row)
            print(f"  {name:14s} {steps:3d} steps: " + (fmt(row) if "error" not in row else row["error"]), flush=True)
    pipe.scheduler = base
    return result


BARE_PROMPTS = ["a red circle", "a blue star", "a green square", "a yellow triangle", "a white ring", "a purple cross",
                "an orange circle", "a black star"]


def evaluate_phrasings(model: str, families: list[str], args) -> dict:
    """One row per family: default sampler, DEFAULT_STEPS, held-out scenes, captions of the family."""
    pipe = load(model, Path(args.models_dir))
    scenes = W.eval_prompts(args.n, seed=args.seed)
    seeds = list(range(args.seed, args.seed + args.n))
    rows = {}
    for fi, family in enumerate(families):
        rng = random.Random(args.seed * 31 + fi)
        pairs = [P.phrase(s, family, rng, split="eval") for s in scenes]
        t0 = time.time()
        imgs = generate(pipe, [c for c, _ in pairs], seeds, DEFAULT_STEPS, args.cfg)
        scores = [P.score_spec(im, spec) for im, (_, spec) in zip(imgs, pairs)]
        row = {"sec_per_image": (time.time() - t0) / args.n, "examples": [c for c, _ in pairs[:3]]}
        for k in P.SPEC_KEYS:
            vals = [s[k] for s in scores if s[k] is not None]
            row[k] = float(np.mean(vals)) if vals else None
            row[f"n_{k}"] = len(vals)
        rows[family] = row
        print(f"{MODELS[model]} [{family}] " + ", ".join(f"{k} {_pct(row[k])} ({row['n_' + k]})" for k in P.SPEC_KEYS)
              + f"  e.g. {row['examples'][0]!r}", flush=True)
    return {"model": MODELS[model], "n": args.n, "cfg": args.cfg, "sampler": type(pipe.scheduler).__name__, "families": rows}


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


def phrasings_markdown(results: list[dict], families: list[str]) -> str:
    lines = []
    for family in families:
        ex = next(iter(results))["families"][family]["examples"]
        lines.append(f"**{family}** (e.g. " + "; ".join(f"`{e}`" for e in ex[:2]) + ")\n")
        lines.append("| model | colour | shape | position | size | background |")
        lines.append("|---|---|---|---|---|---|")
        for r in results:
            row = r["families"][family]
            lines.append(f"| {r['model']} | " + " | ".join(f"{_pct(row[k])} ({row['n_' + k]})" for k in P.SPEC_KEYS) + " |")
        lines.append("")
    return "\n".join(lines)


def bare_grid(models: list[str], path: Path, args, seeds_per_prompt: int = 6) -> dict:
    """Rows: BARE_PROMPTS; columns: seeds, one block per model. Returns colour / shape hit rates."""
    columns = [(MODELS[m], load(m, Path(args.models_dir))) for m in models]
    return prompt_grid(columns, BARE_PROMPTS, path, args, seeds_per_prompt)


def before_after_grid(model: str, before_dir: Path, path: Path, args, seeds_per_prompt: int = 4) -> dict:
    """The same prompts and seeds through ``model`` as ``before_dir`` holds it and as ``--models-dir``
    does: held-out template captions, then bare prompts; one block each. Returns their hit rates."""
    scenes = W.eval_prompts(6, seed=args.seed)
    prompts = [s.caption for s in scenes] + BARE_PROMPTS[:6]
    columns = [("before", load(model, before_dir)), ("after", load(model, Path(args.models_dir)))]
    return prompt_grid(columns, prompts, path, args, seeds_per_prompt)


def prompt_grid(columns: list[tuple[str, object]], prompts: list[str], path: Path, args, seeds_per_prompt: int) -> dict:
    """A picture grid: a row per prompt, ``seeds_per_prompt`` seeds in each (the same for every column),
    a block of columns per (label, pipeline); the prompt written at the left. Returns each block's colour
    / shape hit rates, read by kiri_phrasing.score_spec."""
    import cv2

    blocks, stats = [], {}
    for label, pipe in columns:
        batch = [p for p in prompts for _ in range(seeds_per_prompt)]
        seeds = [args.seed + i % seeds_per_prompt for i in range(len(batch))]
        imgs = generate(pipe, batch, seeds, DEFAULT_STEPS, args.cfg)
        specs = [P.parse(p) for p in batch]
        scores = [P.score_spec(im, sp) for im, sp in zip(imgs, specs)]
        stats[label] = {k: float(np.mean([s[k] for s in scores if s[k] is not None])) for k in ("colour", "shape")}
        print(f"{label}: colour {stats[label]['colour'] * 100:.0f}%, shape {stats[label]['shape'] * 100:.0f}%", flush=True)
        rows = [np.concatenate(list(imgs[i: i + seeds_per_prompt]), 1) for i in range(0, len(imgs), seeds_per_prompt)]
        blocks.append(np.concatenate(rows, 0))
    scale, gap = 2, 8
    label_w = 12 + 6 * max(len(p) for p in prompts)
    h = blocks[0].shape[0] * scale
    parts = [np.full((h, label_w, 3), 255, np.uint8)]
    for b in blocks:
        parts.append(np.full((h, gap, 3), 255, np.uint8))
        parts.append(cv2.resize(b, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST))
    grid = np.concatenate(parts, 1)
    head = np.full((24, grid.shape[1], 3), 255, np.uint8)
    x = label_w + gap
    for (label, _), b in zip(columns, blocks):
        cv2.putText(head, label, (x + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        x += b.shape[1] * scale + gap
    for r, prompt in enumerate(prompts):
        cv2.putText(grid, prompt, (6, r * 64 * scale + 68), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    grid = np.concatenate([head, grid], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), grid[..., ::-1])
    print(f"saved {path}")
    return stats


def negative_effect(model: str, word: str, args, seeds_per_prompt: int = 8) -> dict:
    """How often ``word`` (a colour) shows up, in an object or the background, for prompts that name
    no colour ("a circle", "a star on the left", ...), without and with ``word`` as the negative prompt."""
    pipe = load(model, Path(args.models_dir))
    prompts = [p for p in NEGATIVE_PROMPTS for _ in range(seeds_per_prompt)]
    seeds = [args.seed + i for i in range(len(prompts))]
    res = {}
    for label, negative in (("without", None), ("with", word)):
        imgs = generate(pipe, prompts, seeds, DEFAULT_STEPS, args.cfg, negative=negative)
        hits = []
        for im in imgs:
            objects, background = W.detect(im)
            hits.append(any(o.colour == word for o in objects) or word in background)
        res[label] = float(np.mean(hits))
    print(f"{MODELS[model]}: {word!r} appears in {res['without'] * 100:.0f}% of {len(prompts)} pictures of colourless prompts, "
          f"{res['with'] * 100:.0f}% with negative prompt {word!r}", flush=True)
    return {"model": MODELS[model], "word": word, "pictures": len(prompts), **res}


def fmt(row: dict) -> str:
    return ", ".join(f"{k} {row[k] * 100:.0f}%" for k in KEYS) + f", {row['sec_per_image'] * 1000:.0f} ms/img"


def save_grid(imgs: np.ndarray, path: Path) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [np.concatenate(list(imgs[i: i + 8]), 1) for i in range(0, len(imgs) - len(imgs) % 8, 8)]
    if rows:
        cv2.imwrite(str(path), cv2.resize(np.concatenate(rows, 0)[..., ::-1], None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST))


def markdown(results: list[dict]) -> str:
    lines = []
    for r in results:
        d = r["default"]
        cfg = "pipeline default" if r["cfg"] is None else r["cfg"]
        lines.append(f"### {r['model']} ({r['n']} held-out prompts, CFG {cfg})\n")
        lines.append("| sampler | steps | colour | shape | position | size | ms / image |")
        lines.append("|---|---|---|---|---|---|---|")
        lines.append(f"| **default** ({d['sampler']}) | {d['steps']} | " + " | ".join(f"**{d[k] * 100:.0f}%**" for k in KEYS)
                     + f" | {d['sec_per_image'] * 1000:.0f} |")
        for row in r["samplers"]:
            if "error" in row:
                lines.append(f"| {row['sampler']} | {row['steps']} | error: {row['error'][:60]} | | | | |")
            else:
                lines.append(f"| {row['sampler']} | {row['steps']} | " + " | ".join(f"{row[k] * 100:.0f}%" for k in KEYS)
                             + f" | {row['sec_per_image'] * 1000:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, choices=list(MODELS), help="default: every model present")
    p.add_argument("--models-dir", default=str(ROOT / "models" / "checkpoints"))
    p.add_argument("--n", type=int, default=48, help="held-out prompts (each with its own seed)")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the pipeline's own)")
    p.add_argument("--samplers", default=None, help="comma-separated sampler names (default: all built-in that fit)")
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--no-samplers", action="store_true", help="only the default sampler")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--markdown", default=None, help="write Markdown tables here")
    p.add_argument("--save-grid", default=None, help="folder for a picture grid of the default run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--phrasings", default=None,
                   help=f"comma-separated phrasing families ({', '.join(P.FAMILIES)}): one table per family at the "
                        "default sampler instead of the sampler sweep")
    p.add_argument("--bare-grid", default=None, help="save a grid image of bare prompts ('a red circle', ...) to this PNG")
    p.add_argument("--before-after", nargs=2, default=None, metavar=("BEFORE_DIR", "PNG"),
                   help="a grid of the same prompts and seeds through each model as BEFORE_DIR holds it (left) "
                        "and as --models-dir does (right)")
    p.add_argument("--negative", default=None, metavar="COLOUR",
                   help="measure how often COLOUR appears for prompts naming no colour, without and with it as the negative prompt")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.no_samplers:
        args.samplers = "\0"
    models = args.models or [m for m, folder in MODELS.items() if (Path(args.models_dir) / folder / "model_index.json").exists()]
    if args.phrasings or args.bare_grid or args.negative or args.before_after:
        out: dict = {}
        if args.before_after:
            before, png = Path(args.before_after[0]), Path(args.before_after[1])
            out["before_after"] = {m: before_after_grid(m, before, png.with_name(f"{png.stem}_{m}{png.suffix}")
                                                        if len(models) > 1 else png, args) for m in models}
        if args.negative:
            out["negative"] = [negative_effect(m, args.negative, args) for m in models]
        if args.bare_grid:
            out["bare_grid"] = bare_grid(models, Path(args.bare_grid), args)
        if args.phrasings:
            families = [f.strip() for f in args.phrasings.split(",") if f.strip()]
            bad = [f for f in families if f not in P.FAMILIES]
            if bad:
                p.error(f"unknown phrasing families {bad}; one of {', '.join(P.FAMILIES)}")
            out["phrasings"] = [evaluate_phrasings(m, families, args) for m in models]
            md = phrasings_markdown(out["phrasings"], families)
            if args.markdown:
                Path(args.markdown).write_text(md)
            print(md)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
        return
    results = [evaluate(m, args) for m in models]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    md = markdown(results)
    if args.markdown:
        Path(args.markdown).write_text(md)
    print(md)


if __name__ == "__main__":
    main()
