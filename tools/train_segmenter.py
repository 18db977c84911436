#!/usr/bin/env python
"""Train Kiri's embedded text-prompted segmenter: a tiny CLIPSeg on Kiri's drawn world.

    python tools/train_segmenter.py                   # default schedule, resumes from .train/segmenter_work
    python tools/train_segmenter.py --minutes 30      # stop after 30 minutes of training, still saves
    python tools/train_segmenter.py --steps 20 --out /tmp/kiri-segmenter --fresh   # a smoke test

The model is ``CLIPSegForImageSegmentation`` from a small ``CLIPSegConfig`` (64 px pictures, 8 px
patches, 64-wide text and vision towers), reading prompts with the default models' tokenizer
(``models/checkpoints/kiri-shapes-ldm/tokenizer``). Each training example is a scene drawn by
``tools/kiri_world.py`` and a phrase naming one thing in it:

- an object, by any subset of its attributes: "the red circle", "the star", "the small square on
  the left", "the green one at the top" -> that object's mask;
- "the background" -> everything that is no object;
- an object that is not in the picture ("the purple ring" where there is none) -> an empty mask,
  so that "no match" is learnt rather than the nearest object returned.

Ground truth comes from the world's geometry (``kiri_world.shape_mask`` of each object: the
coverage of each pixel, used as a soft target). Loss: binary cross-entropy plus soft Dice.
Evaluation: mean IoU (threshold 0.5) over held-out scenes (``held_out="only"``: colour x shape x
position combinations never drawn in training) and their phrases; an empty target counts 1 when
the prediction is empty too.

Work files (checkpoint, log) live in ``.train/segmenter_work`` and a run resumes from them unless
``--fresh``. The finished folder (config.json, model.safetensors, tokenizer and preprocessor
config, kiri_examples.json, train_log.json) goes to ``models/segmentation/kiri-segmenter`` and is
refused over 10 MB.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # be gentle when the CPU is shared

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import kiri_world as W  # noqa: E402
from tools.training_kit import optimise  # noqa: E402

TOKENIZER = ROOT / "models" / "checkpoints" / "kiri-shapes-ldm" / "tokenizer"
WORK = ROOT / ".train" / "segmenter_work"
OUT = ROOT / "models" / "segmentation" / "kiri-segmenter"
MAX_BYTES = 10 * 2**20
MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


# --- data ---------------------------------------------------------------------------------------

def object_phrase(obj: W.Obj, rng: random.Random) -> str:
    """A phrase naming `obj` by a random non-empty subset of colour, size, shape and position."""
    while True:
        colour, size, shape, position = (rng.random() < p for p in (0.7, 0.3, 0.7, 0.4))
        if colour or shape:
            break
    words = ["the"] + ([obj.size] if size else []) + ([obj.colour] if colour else []) + [obj.shape if shape else "one"]
    if position:
        words.append(W.POSITION_PHRASE[obj.position])
    return " ".join(words)


def distinct(phrase: str, obj: W.Obj, others: tuple[W.Obj, ...]) -> bool:
    """Whether the phrase names `obj` and none of the other objects."""
    def fits(o: W.Obj) -> bool:
        words = phrase.split()
        return all(not (w in W.OBJECT_COLOURS and w != o.colour) and not (w in W.SHAPES and w != o.shape)
                   and not (w in W.SIZES and w != o.size) for w in words) and \
            all(not phrase.endswith(W.POSITION_PHRASE[p]) or p == o.position for p in W.POSITIONS)
    return fits(obj) and not any(fits(o) for o in others if o is not obj)


def coverage(obj: W.Obj) -> np.ndarray:
    return W.shape_mask(obj.shape, obj.cx, obj.cy, obj.radius).astype(np.float32) / 255.0


def example(rng: random.Random, held_out: str = "exclude") -> tuple[np.ndarray, str, np.ndarray]:
    """(picture HxWx3 uint8, phrase, soft target HxW in 0..1)."""
    scene = W.sample_scene(rng, held_out=held_out)
    picture = W.render(scene)
    roll = rng.random()
    if roll < 0.12:
        covered = np.zeros((W.SIZE, W.SIZE), np.float32)
        for obj in scene.objects:
            covered = np.maximum(covered, coverage(obj))
        return picture, "the background", 1.0 - covered
    if roll < 0.27:
        present = {(o.colour, o.shape) for o in scene.objects}
        while True:
            colour, shape = rng.choice(W.OBJECT_COLOURS), rng.choice(W.SHAPES)
            if (colour, shape) not in present and all(o.colour != colour for o in scene.objects):
                break
        return picture, f"the {colour} {shape}", np.zeros((W.SIZE, W.SIZE), np.float32)
    obj = rng.choice(scene.objects)
    for _ in range(20):
        phrase = object_phrase(obj, rng)
        if distinct(phrase, obj, scene.objects):
            break
    else:
        phrase = f"the {obj.colour} {obj.shape}"
    return picture, phrase, coverage(obj)


def batch(rng: random.Random, size: int, tokenizer, held_out: str = "exclude"):
    pictures, phrases, targets = zip(*(example(rng, held_out) for _ in range(size)))
    pixels, tokens = encode(np.stack(pictures), list(phrases), tokenizer)
    return pixels, tokens, torch.from_numpy(np.stack(targets)), list(phrases)


def encode(pictures: np.ndarray, phrases: list[str], tokenizer):
    """(N, H, W, 3) uint8 pictures and their phrases -> the model's pixel_values and token inputs."""
    pixels = torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255.0
    pixels = (pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    tokens = tokenizer(phrases, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    return pixels, tokens


# --- model --------------------------------------------------------------------------------------

def build_model(tokenizer, patch: int = 4):
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    config = CLIPSegConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_attention_heads=2,
                         num_hidden_layers=2, max_position_embeddings=tokenizer.model_max_length,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=96, intermediate_size=192, num_attention_heads=3, num_hidden_layers=4,
                           image_size=W.SIZE, patch_size=patch),
        projection_dim=64, reduce_dim=48, extract_layers=[1, 2, 3], decoder_num_attention_heads=3,
        decoder_intermediate_size=96, conditional_layer=0,
    )
    return CLIPSegForImageSegmentation(config)


def warm_start_text(model, folder: Path) -> int:
    """Load the default LDM's text encoder (same tokenizer, same 2-layer width-64 CLIP text config)
    into CLIPSeg's text tower, so the segmenter starts out reading words as the image model does.
    Returns the number of tensors loaded; 0 when the folder has no matching encoder."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return 0
    source = load_file(str(files[0]))
    own = model.state_dict()
    loaded = {}
    for key, value in source.items():
        name = "clip." + (key if key.startswith("text_model.") else "text_model." + key)
        if name in own and own[name].shape == value.shape:
            loaded[name] = value
    model.load_state_dict(loaded, strict=False)
    return len(loaded)


def build_processor(tokenizer):
    from transformers import CLIPSegProcessor, ViTImageProcessorPil

    images = ViTImageProcessorPil(size={"height": W.SIZE, "width": W.SIZE}, image_mean=MEAN, image_std=STD)
    return CLIPSegProcessor(image_processor=images, tokenizer=tokenizer)


def loss_of(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum((1, 2))
    dice = 1 - (2 * inter + 1) / (prob.sum((1, 2)) + target.sum((1, 2)) + 1)
    return bce + 0.5 * dice.mean()


@torch.no_grad()
def evaluate(model, tokenizer, n: int = 200, seed: int = 1234) -> dict:
    """Mean IoU over n held-out examples (threshold 0.5); empty target and empty prediction count 1."""
    model.eval()
    rng = random.Random(seed)
    scores, empty_ok = [], []
    for start in range(0, n, 50):
        pixels, tokens, target, _ = batch(rng, min(50, n - start), tokenizer, held_out="only")
        pred = torch.sigmoid(model(pixel_values=pixels, **tokens).logits.reshape(target.shape)) >= 0.5
        truth = target >= 0.5
        for p, t in zip(pred, truth):
            union = (p | t).sum().item()
            value = 1.0 if union == 0 else (p & t).sum().item() / union
            (empty_ok if t.sum() == 0 else scores).append(value)
    model.train()
    return {"mean_iou": float(np.mean(scores)) if scores else 0.0,
            "empty_right": float(np.mean(empty_ok)) if empty_ok else 1.0}


@torch.no_grad()
def evaluate_generated(model, tokenizer, n: int = 48, seed: int = 0) -> dict:
    """Mean IoU on pictures the default LDM draws for the held-out prompts (W.eval_prompts, 20 steps):
    the scene detector finds the object it drew; the truth is that detection's pixels of its colour.
    Prompts whose object the detector does not find in the named colour are skipped (counted)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(ROOT / "models" / "checkpoints" / "kiri-shapes-ldm"),
                                                   local_files_only=True, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    model.eval()
    scores, skipped = [], 0
    for k, scene in enumerate(W.eval_prompts(n, seed=1234 + seed)):
        obj = scene.objects[0]
        image = np.asarray(pipe(W.caption(scene), num_inference_steps=20, width=W.SIZE, height=W.SIZE,
                                generator=torch.Generator().manual_seed(k)).images[0].convert("RGB"))
        found, _ = W.detect(image)
        hit = next((d for d in found if d.colour == obj.colour), None)
        if hit is None:
            skipped += 1
            continue
        x, y, w, h = hit.bbox
        labels = W.classify_pixels(image)
        truth = np.zeros(labels.shape, bool)
        truth[y:y + h, x:x + w] = labels[y:y + h, x:x + w] == list(W.COLOURS).index(obj.colour)
        pixels, tokens = encode(image[None], [f"the {obj.colour} {obj.shape}"], tokenizer)
        pred = (torch.sigmoid(model(pixel_values=pixels, **tokens).logits.reshape(W.SIZE, W.SIZE)) >= 0.5).numpy()
        union = (pred | truth).sum()
        scores.append(float((pred & truth).sum() / union) if union else 1.0)
    model.train()
    return {"generated_mean_iou": float(np.mean(scores)) if scores else 0.0, "generated_n": len(scores),
            "generated_skipped": skipped}


# --- training -----------------------------------------------------------------------------------

def train(args) -> dict:
    from transformers import CLIPTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER))
    torch.manual_seed(args.seed)
    model = build_model(tokenizer, args.patch)
    work = Path(args.work)
    checkpoint = work / "ckpt.pt"
    resuming = checkpoint.exists() and not args.fresh
    if args.text_init != "none" and not resuming:
        count = warm_start_text(model, Path(args.text_init))
        tqdm.write(f"text tower: {count} tensors from {args.text_init}" if count else f"text tower: nothing to load in {args.text_init}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    start, log = 0, {"steps": [], "evals": []}
    if resuming:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("patch", 8) != args.patch:
            raise SystemExit(f"the checkpoint in {work} is a patch-{state.get('patch', 8)} model: pass --patch {state.get('patch', 8)} or --fresh")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, log = state["step"], state["log"]
        tqdm.write(f"resuming from step {start} ({checkpoint})")

    def learning_rate(s: int) -> float:
        """Warm up over 100 steps, then a cosine down to 5% at the last step; a function of the step, so resuming fits."""
        return args.lr * min(1.0, (s + 1) / 100) * max(0.05, 0.5 * (1 + np.cos(np.pi * min(1.0, s / max(1, args.steps)))))

    def save_checkpoint(step: int) -> None:
        work.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "log": log, "patch": args.patch}, tmp)
        tmp.replace(checkpoint)

    model.train()
    began = time.monotonic()
    bar = tqdm(total=args.steps, initial=start, desc="segmenter", dynamic_ncols=True)
    step = start
    while step < args.steps:
        rng = random.Random(args.seed * 1_000_003 + step)  # seeded by the step: a resumed run sees the same data
        pixels, tokens, target, _ = batch(rng, args.batch, tokenizer)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        logits = model(pixel_values=pixels, **tokens).logits.reshape(target.shape)
        loss = loss_of(logits, target)
        optimise(optimizer, loss, model.parameters())
        step += 1
        log["steps"].append([step, round(loss.item(), 5)])
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{learning_rate(step - 1):.2e}")
        bar.update(1)
        if args.eval_every and step % args.eval_every == 0:
            result = {"step": step, **evaluate(model, tokenizer, args.eval_n)}
            log["evals"].append(result)
            tqdm.write(f"eval @ {step}: mean IoU {result['mean_iou']:.3f}, empty right {result['empty_right']:.2f}")
        if step % args.save_every == 0:
            save_checkpoint(step)
        if args.minutes is not None and time.monotonic() - began > args.minutes * 60:
            tqdm.write(f"time limit reached at step {step}")
            break
    bar.close()
    save_checkpoint(step)
    final = {"step": step, **evaluate(model, tokenizer, args.eval_n)}
    if args.eval_generated:
        final.update(evaluate_generated(model, tokenizer, args.eval_generated))
    log["evals"].append(final)
    tqdm.write(f"final eval @ {step}: mean IoU {final['mean_iou']:.3f}, empty right {final['empty_right']:.2f}"
               + (f", on {final['generated_n']} generated pictures {final['generated_mean_iou']:.3f}" if args.eval_generated else ""))
    save_folder(model, tokenizer, Path(args.out), log)
    return final


def save_folder(model, tokenizer, out: Path, log: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    build_processor(tokenizer).save_pretrained(out)
    (out / "kiri_examples.json").write_text(json.dumps(["the red circle", "the star", "the background",
                                                        "the small square on the left"], indent=1))
    (out / "train_log.json").write_text(json.dumps(log))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    if size > MAX_BYTES:
        raise SystemExit(f"{out} is {size / 2**20:.1f} MB, over the 10 MB the embedded segmenter may take")
    tqdm.write(f"saved {out} ({size / 2**20:.2f} MB)")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6000, help="optimizer steps in all (a resumed run continues to this)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this much training time, and save")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=500, help="held-out mean IoU every N steps (0: off)")
    p.add_argument("--eval-n", type=int, default=200, help="held-out examples per evaluation")
    p.add_argument("--save-every", type=int, default=200, help="checkpoint to the work folder every N steps")
    p.add_argument("--work", default=str(WORK), help="checkpoint folder (resumed from unless --fresh)")
    p.add_argument("--fresh", action="store_true", help="start over, ignoring a checkpoint in --work")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--eval-generated", type=int, default=48,
                   help="at the end, mean IoU on this many pictures kiri-shapes-ldm draws for held-out prompts (0: off)")
    p.add_argument("--patch", type=int, choices=[4, 8], default=4, help="vision patch size (4: 16x16 tokens on 64 px)")
    p.add_argument("--text-init", default=str(ROOT / "models" / "checkpoints" / "kiri-shapes-ldm" / "text_encoder"),
                   help="a CLIP text encoder folder to start the text tower from ('none': random)")
    p.add_argument("--eval-only", default=None, metavar="FOLDER",
                   help="no training: evaluate a saved segmenter folder (held-out drawn scenes and generated pictures)")
    args = p.parse_args(argv)
    if args.eval_only:
        return eval_only(Path(args.eval_only), args)
    return train(args)


def eval_only(folder: Path, args) -> dict:
    from transformers import CLIPSegForImageSegmentation, CLIPTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    model = CLIPSegForImageSegmentation.from_pretrained(str(folder))
    result = {**evaluate(model, tokenizer, args.eval_n)}
    if args.eval_generated:
        result.update(evaluate_generated(model, tokenizer, args.eval_generated))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
