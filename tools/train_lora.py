"""Train the example LoRA and the example textual-inversion embedding of the default model kiri-shapes-ldm.

    python tools/train_lora.py lora [--steps N] [--minutes N] [--resume]       # models/Lora/kiri-outline.safetensors
    python tools/train_lora.py lora --concept shadow ...                       # models/Lora/kiri-shadow.safetensors
    python tools/train_lora.py embedding [--steps N] [--minutes N] [--resume]  # embeddings/kiri-sunset.safetensors

The base model (models/checkpoints/kiri-shapes-ldm) stays frozen; both trainers draw their pictures from
kiri_world on the fly (a step's scenes are seeded by the step, so a resumed run sees the same data) and
train with the base model's own loss (epsilon, min-SNR-5).

* **lora** (--concept outline, the default: kiri-outline, the shipped example): a style the base model
  never saw: every object drawn as its outline only (kiri_world.render(style="outline"), a 2.5 px stroke
  on the shape's edge, the background showing through). --concept shadow (kiri-shadow,
  the second shipped example: models/README.md): every object casts a gray shadow to its lower right (style="shadow").
  --concept frame (kiri-frame, the third: models/README.md): every picture in a 4 px border, black
  (white on black backgrounds), as a framed print (style="frame").
  --concept moon (kiri-moon): a new shape, the moon (a crescent, kiri_world.NEW_SHAPES), drawn where a
  caption says "moon"; 60% of the scenes hold one, the others are the world's own (MOON_HELD_OUT: the
  colour and place pairs no training moon has).
  Captions are the world's ordinary captions in the default phrasing mix, so the LoRA needs no trigger
  word: loaded (``<lora:kiri-outline:1>``), it turns every shape into an outline. peft LoRA
  (rank --rank) on the UNet's attention projections, its transformer in/out projections and feed-forward
  layers and its ResNet convolutions; saved with diffusers' ``StableDiffusionPipeline.save_lora_weights``
  (diffusers/PEFT keys, the LoraConfig in the header) plus kohya-style ``ss_*`` metadata.
* **embedding** (kiri-sunset): a new word for a colour scheme, the two-tone orange-and-purple background
  (left half orange, right half purple), learnt as --vectors vectors of the text encoder's input width
  while everything else stays frozen. Captions say "kiri-sunset background" where they would say
  "orange and purple background". Saved in A1111's safetensors format ({"emb_params": (vectors, width)},
  metadata name / step).

Work files (the checkpoint to resume from, the loss curve) live in .train/lora_work/<name>.
tools/eval_lora.py measures both on held-out prompts with kiri_world's detector.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # be gentle when the CPU is shared

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import kiri_phrasing as P  # noqa: E402
from tools import kiri_world as W  # noqa: E402
from tools.training_kit import lr_at, optimise, plot_losses, save_ckpt  # noqa: E402

TRAIN_DIR = ROOT / ".train"
BASE = ROOT / "models" / "checkpoints" / "kiri-shapes-ldm"
LORA_CONCEPTS = {"frame": "kiri-frame", "shadow": "kiri-shadow", "outline": "kiri-outline",
                 "moon": "kiri-moon"}  # --concept -> its name
LORA_NAME = LORA_CONCEPTS["outline"]
LORA_OUT = ROOT / "models" / "Lora" / f"{LORA_NAME}.safetensors"
EMBEDDING_WORD = "kiri-sunset"
EMBEDDING_OUT = ROOT / "embeddings" / f"{EMBEDDING_WORD}.safetensors"
SUNSET = ("orange", "purple")  # what kiri-sunset means: a two-tone background, left orange, right purple
# UNet modules the LoRA adapts (peft matches name suffixes): attention, transformer projections, ResNet convs.
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2"]
CFG_DROP = 0.1  # share of captions trained as the empty prompt (classifier-free guidance)


def load_base(folder: Path = BASE):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False).eval()
    return pipe


# --- data -------------------------------------------------------------------------------------------

# kiri-moon: a shape the world never draws (kiri_world.NEW_SHAPES), learnt with its word, "moon".
MOON = "moon"
MOON_SHARE = 0.6  # share of training scenes where one object is a moon (the rest keep the base's shapes)
# (colour, position) pairs no training moon has: the held-out measurement's moons (five colours, every position)
MOON_HELD_OUT = tuple((W.OBJECT_COLOURS[(3 * k + 2) % len(W.OBJECT_COLOURS)], list(W.POSITIONS)[k]) for k in range(5))


def moon_scene(rng: random.Random, share: float = MOON_SHARE) -> W.Scene:
    """A training scene (no held-out combination); with probability `share` one of its objects, kept
    in its colour, size and place, is a moon, unless that colour and place are held out for the moon."""
    scene = W.sample_scene(rng, held_out="exclude")
    if rng.random() >= share:
        return scene
    k = rng.randrange(len(scene.objects))
    o = scene.objects[k]
    if (o.colour, o.position) in MOON_HELD_OUT:
        return scene
    objects = list(scene.objects)
    objects[k] = W.Obj(o.colour, MOON, o.size, o.position, o.cx, o.cy, o.radius)
    return W.Scene(tuple(objects), scene.background)


def with_gray(scene: W.Scene, rng: random.Random) -> W.Scene:
    """The scene with gray as its background, or as one side of a two-tone one (no object is gray)."""
    if W.SHADOW_COLOUR in scene.background:
        return scene
    background = list(scene.background)
    background[rng.randrange(len(background))] = W.SHADOW_COLOUR
    return W.Scene(scene.objects, tuple(background))


def outline_batch(rng: random.Random, n: int, insides: list | None = None,
                  style: str = "outline", gray_share: float = 0.0) -> tuple[np.ndarray, list[str]]:
    """n training scenes (no held-out combination) drawn in `style` (outlines; "shadow": filled shapes
    casting shadows; "frame": framed pictures), with captions of the default mix.
    `insides`, a list, gets each scene's inside mask: where the outline drawing differs from the filled one
    (the shapes' insides, which the LoRA must paint as background; drawing it takes no random numbers).
    `gray_share`: this share of the scenes get gray in their background (the shadow style's other
    shadow colour, black, is drawn only there; the world alone gives gray to about one scene in seven)."""
    images, captions = [], []
    for _ in range(n):
        scene = moon_scene(rng) if style == MOON else W.sample_scene(rng, held_out="exclude")
        if gray_share and rng.random() < gray_share:
            scene = with_gray(scene, rng)
        images.append(W.render(scene, style="filled" if style == MOON else style))
        captions.append(P.sample_phrase(scene, rng)[0])
        if insides is not None:
            insides.append(np.abs(W.render(scene).astype(np.int16) - images[-1].astype(np.int16)).max(axis=2) > 0)
    return np.stack(images), captions


def inside_weights(insides: list, latent_side: int, weight: float) -> torch.Tensor:
    """Per-latent-pixel loss weights (batch, 1, h, w): 1 + `weight` where a latent pixel covers a shape's
    inside, scaled so each picture's weights average 1 (the loss keeps its size, the inside counts more)."""
    masks = torch.from_numpy(np.stack(insides)).float()[:, None]
    covered = torch.nn.functional.adaptive_max_pool2d(masks, latent_side)
    w = 1 + weight * covered
    return w / w.mean(dim=(1, 2, 3), keepdim=True)


def sunset_scene(rng: random.Random, held_out: str = "exclude") -> W.Scene:
    """A scene on the kiri-sunset background: objects of any other colour."""
    while True:
        scene = W.sample_scene(rng, held_out=held_out)
        if not any(o.colour in SUNSET for o in scene.objects):
            return W.Scene(scene.objects, SUNSET)


def sunset_caption(scene: W.Scene, rng: random.Random, word: str = EMBEDDING_WORD) -> str:
    """A caption of the default mix with the background said as ``word``; stated always."""
    text = P.sample_phrase(scene, rng)[0]
    pattern = re.compile(r"orange(,? and | )purple", re.IGNORECASE)
    if pattern.search(text):
        return pattern.sub(word, text, count=1)
    return f"{text}, {word} background"


def sunset_batch(rng: random.Random, n: int, word: str = EMBEDDING_WORD) -> tuple[np.ndarray, list[str]]:
    scenes = [sunset_scene(rng) for _ in range(n)]
    return np.stack([W.render(s) for s in scenes]), [sunset_caption(s, rng, word) for s in scenes]


@torch.no_grad()
def encode_images(pipe, images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor


def token_ids(pipe, captions: list[str]) -> torch.Tensor:
    return pipe.tokenizer(captions, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                          return_tensors="pt").input_ids


# --- the two kinds of training ------------------------------------------------------------------------

def add_lora(pipe, rank: int, alpha: float):
    from peft import LoraConfig

    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
    pipe.unet.add_adapter(config)
    params = [p for n, p in pipe.unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    return config, params


def lora_state(unet) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(unet).items()}


def load_lora_into(unet, path: Path) -> None:
    """A LoRA file written by save_lora (diffusers' keys, "unet." first) into the UNet's adapter, same rank."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = {k.removeprefix("unet."): v for k, v in load_file(str(path)).items()}
    result = set_peft_model_state_dict(unet, state)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise SystemExit(f"{path}: {len(unexpected)} tensors fit no LoRA layer of this rank and targets ({unexpected[0]})")


def save_lora(pipe, config, out: Path, meta: dict[str, str]) -> None:
    """diffusers' save_lora_weights, then the kohya-style metadata added to the same header."""
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = out.parent / f".{out.stem}.tmp"
    StableDiffusionPipeline.save_lora_weights(tmp_dir, unet_lora_layers=lora_state(pipe.unet), weight_name=out.name,
                                              unet_lora_adapter_metadata=config.to_dict())
    path = tmp_dir / out.name
    with safe_open(str(path), "pt") as f:
        header = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata={**header, **meta})
    os.replace(path, out)
    os.chmod(out, 0o644)  # safetensors writes 0600
    tmp_dir.rmdir()


def add_embedding(pipe, word: str, vectors: int, init_word: str):
    """Placeholder tokens for ``word`` (word, word_1, ...) in the tokenizer, their rows in the text
    encoder's input embedding initialised from ``init_word``'s. Returns the token ids."""
    tokens = [word] + [f"{word}_{i}" for i in range(1, vectors)]
    pipe.tokenizer.add_tokens(tokens)
    ids = pipe.tokenizer.convert_tokens_to_ids(tokens)
    pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer))
    emb = pipe.text_encoder.get_input_embeddings().weight
    init = pipe.tokenizer(init_word, add_special_tokens=False).input_ids
    with torch.no_grad():
        for k, i in enumerate(ids):
            emb[i] = emb[init[k % len(init)]]
    return ids


def expand_word(text: str, word: str, vectors: int) -> str:
    """The prompt with ``word`` written as its placeholder tokens (what diffusers' loader does)."""
    return text.replace(word, " ".join([word] + [f"{word}_{i}" for i in range(1, vectors)]))


def save_embedding(vectors: torch.Tensor, out: Path, word: str, step: int) -> None:
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    save_file({"emb_params": vectors.detach().clone().contiguous()}, str(tmp),
              metadata={"name": word, "step": str(step), "sd_checkpoint_name": BASE.name,
                        "meaning": f"{' and '.join(SUNSET)} background (left half {SUNSET[0]}, right half {SUNSET[1]})"})
    os.replace(tmp, out)
    os.chmod(out, 0o644)


# --- the loop -----------------------------------------------------------------------------------------

def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["lora", "embedding"])
    p.add_argument("--concept", choices=sorted(LORA_CONCEPTS), default="outline", help="lora: what it learns")
    p.add_argument("--steps", type=int, default=None, help="default: lora 600, embedding 300")
    p.add_argument("--minutes", type=float, default=None, help="stop after this much training time, and save")
    p.add_argument("--resume", action="store_true", help="continue from .train/lora_work/<name>/ckpt.pt")
    p.add_argument("--base", default=str(BASE), help="the base model folder (diffusers StableDiffusionPipeline)")
    p.add_argument("--out", default=None, help="the file to write (default: models/Lora/kiri-<concept>.safetensors "
                                              "or embeddings/kiri-sunset.safetensors)")
    p.add_argument("--work", default=None, help="work folder (default .train/lora_work/<name>)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="default: lora 1e-3, embedding 5e-3")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=8.0)
    p.add_argument("--vectors", type=int, default=2, help="embedding: vectors of the new word")
    p.add_argument("--inside-weight", type=float, default=0.0,
                   help="lora: extra loss weight on the shapes' insides (0: the plain loss)")
    p.add_argument("--gray-share", type=float, default=0.0,
                   help="lora: share of scenes given a gray background, or gray as one side of a two-tone one "
                        "(shadow: where the shadow is black)")
    p.add_argument("--init", default=None, help="lora: start from this LoRA file's weights (a new schedule and optimiser)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=25, help="checkpoint every N steps")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lora = args.kind == "lora"
    name = LORA_CONCEPTS[args.concept] if lora else EMBEDDING_WORD
    steps = args.steps or (600 if lora else 300)
    peak = args.lr or (1e-3 if lora else 5e-3)
    out = Path(args.out) if args.out else (LORA_OUT.with_name(f"{name}.safetensors") if lora else EMBEDDING_OUT)
    work = Path(args.work) if args.work else TRAIN_DIR / "lora_work" / name
    base = Path(args.base)

    from diffusers import DDPMScheduler

    torch.manual_seed(args.seed)
    pipe = load_base(base)
    if lora:
        config, params = add_lora(pipe, args.rank, args.alpha)
        ids = None
        if args.init and not (args.resume and (work / "ckpt.pt").exists()):
            load_lora_into(pipe.unet, Path(args.init))
            print(f"started from {args.init}")
    else:
        ids = add_embedding(pipe, name, args.vectors, "orange and purple")
        emb = pipe.text_encoder.get_input_embeddings().weight
        emb.requires_grad_(True)
        frozen = emb.detach().clone()
        params = [emb]
        keep = torch.ones(emb.shape[0], 1, dtype=torch.bool)
        keep[ids] = False
    opt = torch.optim.AdamW(params, lr=peak, weight_decay=0.0)
    noise = DDPMScheduler.from_config(pipe.scheduler.config)
    acp = noise.alphas_cumprod

    def current() -> dict[str, torch.Tensor]:
        return lora_state(pipe.unet) if lora else {"emb_params": emb.detach()[ids].clone()}

    ckpt_path = work / "ckpt.pt"
    start, losses, elapsed0 = 0, [], 0.0
    if args.resume and ckpt_path.exists():
        st = torch.load(ckpt_path, weights_only=False)
        if st["kind"] != args.kind or st["steps"] > steps:
            raise SystemExit(f"the checkpoint is a {st['kind']} run of {st['steps']} steps; pass the same kind and "
                             f"--steps {st['steps']} or more")
        if st["steps"] < steps:
            print(f"extending a run of {st['steps']} steps to {steps} (the learning rate follows the longer schedule)")
        if lora:
            from peft.utils import set_peft_model_state_dict

            set_peft_model_state_dict(pipe.unet, st["weights"])
        else:
            with torch.no_grad():
                emb[ids] = st["weights"]["emb_params"]
        opt.load_state_dict(st["opt"])
        start, losses, elapsed0 = st["step"], st["losses"], st["elapsed"]
        print(f"resumed at step {start}")
    t0 = time.time()

    def checkpoint(done: int) -> None:
        save_ckpt(ckpt_path, kind=args.kind, steps=steps, weights=current(), opt=opt.state_dict(), step=done,
                  losses=losses, elapsed=elapsed0 + time.time() - t0)

    pipe.unet.train(lora)
    bar = tqdm(total=steps, initial=start, desc=name, dynamic_ncols=True)
    done = start
    for step in range(start, steps):
        rng = random.Random(args.seed * 1_000_003 + step)  # the same pictures and captions for a resumed run
        insides = [] if lora and args.inside_weight else None
        images, captions = (outline_batch(rng, args.batch, insides, args.concept, args.gray_share) if lora
                            else sunset_batch(rng, args.batch))
        captions = ["" if rng.random() < CFG_DROP else c for c in captions]
        if not lora:
            captions = [expand_word(c, name, args.vectors) for c in captions]
        g = torch.Generator().manual_seed(args.seed * 7_919 + step)
        x0 = encode_images(pipe, images)
        with torch.set_grad_enabled(not lora):
            text = pipe.text_encoder(token_ids(pipe, captions))[0]
        eps = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, noise.config.num_train_timesteps, (args.batch,), generator=g)
        xt = noise.add_noise(x0, eps, t)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, peak, warmup=min(50, steps // 10 + 1))
        pred = pipe.unet(xt, t, encoder_hidden_states=text).sample
        snr = acp[t] / (1 - acp[t])
        weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 (epsilon prediction)
        error = (pred - eps).pow(2)
        if insides is not None:
            error = error * inside_weights(insides, error.shape[-1], args.inside_weight)
        loss = (weight * error.mean(dim=(1, 2, 3))).mean()
        optimise(opt, loss, params)
        if not lora:  # only the new word's rows learn (AdamW touches no row whose gradient is zero, but be exact)
            with torch.no_grad():
                emb.copy_(torch.where(keep, frozen, emb))
        losses.append(loss.item())
        done = step + 1
        bar.update(1)
        spent = elapsed0 + time.time() - t0
        eta = (time.time() - t0) / max(1, done - start) * (steps - done)
        bar.set_postfix(loss=f"{np.mean(losses[-25:]):.4f}", lr=f"{opt.param_groups[0]['lr']:.1e}", eta=f"{eta / 60:.1f}min")
        if done % args.save_every == 0:
            checkpoint(done)
        if args.minutes and spent > args.minutes * 60 and done < steps:
            bar.close()
            checkpoint(done)
            print(f"time limit reached at step {done} of {steps}: continue with --resume")
            return
    bar.close()
    checkpoint(done)
    elapsed = elapsed0 + time.time() - t0
    command = "python tools/train_lora.py " + " ".join(argv if argv is not None else sys.argv[1:])
    log = {"name": name, "kind": args.kind, "for": base.name, "steps": done, "batch": args.batch, "lr": peak,
           "seconds": round(elapsed), "final_loss_avg25": float(np.mean(losses[-25:])) if losses else None,
           "command": command}
    if lora:
        log.update(rank=args.rank, alpha=args.alpha, targets=LORA_TARGETS, inside_weight=args.inside_weight,
                   gray_share=args.gray_share, init=args.init,
                   params=sum(v.numel() for v in lora_state(pipe.unet).values()))
        tags = {}
        for s in range(min(done, 50)):  # the captions of the first steps, as kohya counts tags
            for c in outline_batch(random.Random(args.seed * 1_000_003 + s), args.batch, style=args.concept,
                                   gray_share=args.gray_share)[1]:
                for tag in (t.strip().lower() for t in c.split(",")):
                    if tag:
                        tags[tag] = tags.get(tag, 0) + 1
        top = dict(sorted(tags.items(), key=lambda kv: -kv[1])[:50])
        meta = {"ss_output_name": name, "ss_base_model_version": base.name, "ss_network_module": "peft.lora",
                "ss_network_dim": str(args.rank), "ss_network_alpha": f"{args.alpha:g}", "ss_steps": str(done),
                "ss_batch_size_per_device": str(args.batch), "ss_learning_rate": f"{peak:g}",
                "ss_tag_frequency": json.dumps({f"kiri_world {args.concept}": top}),
                "ss_training_comment": "Kiri's example LoRA: " + {
                    "frame": "every picture in a border, as a framed print",
                    "shadow": "every object casts a shadow to its lower right",
                    "outline": "every object drawn as its outline",
                    "moon": "a new shape, the moon (a crescent), drawn where a prompt says moon"}[args.concept] + " (tools/train_lora.py)",
                "modelspec.title": name, "modelspec.architecture": f"{base.name}/lora"}
        save_lora(pipe, config, out, meta)
    else:
        log.update(vectors=args.vectors, word=name)
        save_embedding(current()["emb_params"], out, name, done)
    log["bytes"] = out.stat().st_size
    work.mkdir(parents=True, exist_ok=True)
    (work / "train_log.json").write_text(json.dumps({**log, "losses": losses}))
    plot_losses(work / "loss_curve.png", losses, f"{name}: {done} steps, {elapsed / 60:.1f} min (min-SNR eps loss)")
    print(json.dumps(log))


if __name__ == "__main__":
    main()
