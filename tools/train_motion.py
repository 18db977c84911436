"""Train Kiri's embedded motion module: a small AnimateDiff MotionAdapter for kiri-shapes-ldm.

    python tools/train_motion.py [--steps N] [--minutes N] [--resume] [--out FOLDER] [--frames 8]

The image model (models/checkpoints/kiri-shapes-ldm: UNet block channels (32, 64, 96), three levels,
one layer a block, cross-attention width 64, 16x16 latents for 64 px, VAE factor 4) stays frozen; only
the temporal attention layers of the motion module learn, on clips of kiri_world scenes whose one
object moves: left to right, right to left, top to bottom, bottom to top, small to large (growing),
large to small (shrinking). Frames are drawn with kiri_world's renderer with the object's geometry
shifted frame by frame, so every clip is exact and free.

Captions say the motion as people write it: "a large red circle moving right, blue background", "a
red square growing", "green star moving up". A motion module sees no text, only the image model's
features, and the image model ignores words it does not know: "up", "down", "moving", "growing" and
"shrinking" were pieces of unknown words to it, so "moving up" and "moving down" gave the module the
same features (a first run learnt only "right"). extend_vocabulary() gives the LDM's tokenizer those
five words, each a copy of the embedding of the word it means to the image model (up = top, down =
bottom, growing = large, shrinking = small, moving = "to"), appended after every existing row: every
prompt the LDM read before reads exactly as before (tested), and "a red circle moving up" draws
toward the top, which the module learns to turn into motion. Size and background are left out now
and then, as in issue 12's phrasings. Colour x shape x motion combinations in
MOTION_HELD_OUT never appear in training; the evaluation uses only them.

Work files (the checkpoint to resume from) live in .train/motion_work; the finished module goes to
models/motion/kiri-motion (diffusers MotionAdapter folder, safetensors, a few MB) with train_log.json
and loss_curve.png. The evaluation generates clips with the AnimateDiff pipeline and tracks the object
with kiri_world.detect over the frames: the share of clips whose measured motion (direction of the
centre's travel, or growth of its area) is the captioned one, against the same prompts without the
module's training (a fresh zero-initialised module: no motion at all).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # be gentle when the CPU is shared

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import kiri_world as W  # noqa: E402
from tools.training_kit import EMA, lr_at, optimise, plot_losses, save_ckpt  # noqa: E402

TRAIN_DIR = ROOT / ".train"
WORK = TRAIN_DIR / "motion_work"
IMAGE_MODEL = ROOT / "models" / "checkpoints" / "kiri-shapes-ldm"
DEFAULT_OUT = ROOT / "models" / "motion" / "kiri-motion"
MAX_BYTES = 10 * 2**20
MOTIONS = {  # name -> caption phrase
    "right": "moving right", "left": "moving left", "down": "moving down", "up": "moving up",
    "grow": "growing", "shrink": "shrinking",
}


def _motion_held_out() -> frozenset[tuple[str, str, str]]:
    """Colour x shape x motion combinations kept out of training: two per motion, by a fixed rule."""
    combos = []
    for i, motion in enumerate(MOTIONS):
        for j in range(2):
            k = 2 * i + j
            combos.append((W.OBJECT_COLOURS[(5 * k + 2) % len(W.OBJECT_COLOURS)], W.SHAPES[(k + i) % len(W.SHAPES)], motion))
    return frozenset(combos)


MOTION_HELD_OUT = _motion_held_out()
TRAVEL = 24.0  # pixels the centre moves over a clip
RADII = {"grow": (6.0, 15.0), "shrink": (15.0, 6.0)}


# --- data -----------------------------------------------------------------------------------------

def motion_clip(rng: random.Random, frames: int, motion: str | None = None, held_out: bool = False,
                plain: bool = False) -> tuple[np.ndarray, str, str]:
    """(frames, 64, 64, 3) uint8 of one object moving, its caption and the motion's name.

    held_out: the object is one of MOTION_HELD_OUT's combinations (else never one); plain: the caption
    always names size (where the motion leaves it fixed) and background."""
    while True:
        scene = W.sample_scene(rng, held_out="any", p_two=0.0)
        obj = scene.objects[0]
        if held_out:
            colour, shape, motion = rng.choice(sorted(c for c in MOTION_HELD_OUT if motion in (None, c[2])))
            obj = replace(obj, colour=colour, shape=shape)
            free = [c for c in W.BACKGROUND_COLOURS if c != colour]
            scene = replace(scene, objects=(obj,), background=tuple(rng.sample(free, len(scene.background))))
            break
        motion = motion or rng.choice(list(MOTIONS))
        if (obj.colour, obj.shape, motion) not in MOTION_HELD_OUT:
            break
    half = TRAVEL / 2
    cx, cy = 32.0 + rng.uniform(-4, 4), 32.0 + rng.uniform(-4, 4)
    start, end = {"right": ((cx - half, cy), (cx + half, cy)), "left": ((cx + half, cy), (cx - half, cy)),
                  "down": ((cx, cy - half), (cx, cy + half)), "up": ((cx, cy + half), (cx, cy - half))}.get(
        motion, ((cx, cy), (cx, cy)))
    r0, r1 = RADII.get(motion, (obj.radius, obj.radius))
    if motion in ("right", "left", "down", "up"):
        r0 = r1 = min(obj.radius, 11.0)  # keep the object inside the frame for the whole path
    clip = []
    for i in range(frames):
        t = i / max(1, frames - 1)
        moved = replace(obj, cx=start[0] + t * (end[0] - start[0]), cy=start[1] + t * (end[1] - start[1]),
                        radius=r0 + t * (r1 - r0))
        clip.append(W.render(replace(scene, objects=(moved,))))
    size = "" if motion in RADII or (not plain and rng.random() < 0.3) else f"{obj.size} "
    article = "a " if plain or rng.random() < 0.8 else ""
    background = "" if not plain and rng.random() < 0.25 else f", {' and '.join(scene.background)} background"
    caption = f"{article}{size}{obj.colour} {obj.shape} {MOTIONS[motion]}{background}"
    return np.stack(clip), caption, motion


# --- the image model's vocabulary -------------------------------------------------------------------

MOTION_WORDS = {"moving": "to", "up": "top", "down": "bottom", "growing": "large", "shrinking": "small"}


def extend_vocabulary(folder: Path = IMAGE_MODEL, words: dict[str, str] = MOTION_WORDS) -> list[str]:
    """Give a diffusers SD folder's tokenizer `words` as whole words (case-insensitive, never inside
    another word), each with a copy of its source word's token embedding appended to the text
    encoder; the old rows, and so every old prompt's features, stay exactly as they were. Returns the
    words added (none when the folder has them already). Both parts are written whole (temp, rename)."""
    import shutil

    from transformers import AddedToken, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    missing = [w for w in words if len(tokenizer.tokenize(w)) != 1]
    if not missing:
        return []
    sources = []
    for word in missing:
        ids = tokenizer(words[word], add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"{words[word]!r} is not one token of {folder.name}'s tokenizer")
        sources.append(ids[0])
    encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"))
    old = encoder.get_input_embeddings().weight.detach().clone()
    tokenizer.add_tokens([AddedToken(w, single_word=True, normalized=True) for w in missing])
    encoder.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        weight = encoder.get_input_embeddings().weight
        weight[: len(old)] = old
        for word, source in zip(missing, sources):
            weight[tokenizer.convert_tokens_to_ids(word)] = old[source]
    def save_tokenizer(target: str) -> None:
        tokenizer.save_pretrained(target)
        for name in ("vocab.json", "merges.txt"):  # transformers 5 writes only tokenizer.json
            if not (Path(target) / name).exists():
                shutil.copy(folder / "tokenizer" / name, Path(target) / name)
        write_added_tokens(Path(target), tokenizer)

    for part, save in (("tokenizer", save_tokenizer),
                       ("text_encoder", lambda d: encoder.save_pretrained(d, safe_serialization=True))):
        tmp = folder / f".{part}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save(str(tmp))
        if part == "text_encoder":
            from tools.make_portable import make_file_portable

            make_file_portable(tmp / "model.safetensors")  # the key names every transformers version reads
        backup = folder / f".{part}.old"
        shutil.rmtree(backup, ignore_errors=True)
        (folder / part).replace(backup)
        tmp.replace(folder / part)
        shutil.rmtree(backup)
    return missing


def write_added_tokens(tokenizer_dir: Path, tokenizer) -> None:
    """The added words where transformers 4 (the slow CLIPTokenizer other tools load from vocab.json and
    merges.txt) looks for them: added_tokens.json and tokenizer_config.json's added_tokens_decoder."""
    special = set(tokenizer.all_special_tokens)
    added = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.content not in special}
    (tokenizer_dir / "added_tokens.json").write_text(json.dumps(added, indent=1))
    config_path = tokenizer_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["added_tokens_decoder"] = {
        str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                 "single_word": t.single_word, "special": t.special}
        for i, t in sorted(tokenizer.added_tokens_decoder.items())}
    config_path.write_text(json.dumps(config, indent=2))


# --- models ---------------------------------------------------------------------------------------

def load_image_model():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(IMAGE_MODEL), safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False).eval()
    return pipe


def make_adapter(frames: int, unet_config):
    from diffusers import MotionAdapter

    torch.manual_seed(0)
    adapter = MotionAdapter(block_out_channels=tuple(unet_config.block_out_channels),
                            motion_layers_per_block=unet_config.layers_per_block, motion_norm_num_groups=16,
                            motion_num_attention_heads=4, motion_max_seq_length=max(16, frames), use_motion_mid_block=True)
    # Zero output projections: the untrained module leaves the image model exactly as it was.
    for name, module in adapter.named_modules():
        if name.endswith("proj_out") and isinstance(module, torch.nn.Linear):
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
    return adapter


def trim_context(adapter, frames: int) -> None:
    """Make the module's context the clip length it was trained on: its sinusoidal frame encodings cut
    to `frames` rows (the same values) and motion_max_seq_length set to match, so a UI offers that many
    frames and runs longer clips in windows (FreeNoise) instead of positions the module never saw."""
    for module in adapter.modules():
        pe = getattr(module, "pe", None)
        if isinstance(pe, torch.Tensor) and pe.dim() == 3 and pe.shape[1] > frames:
            module.pe = pe[:, :frames].clone()
    adapter.register_to_config(motion_max_seq_length=frames)


def motion_state(unet) -> dict[str, torch.Tensor]:
    """The motion modules' weights of a UNetMotionModel, under the MotionAdapter's own key names."""
    return {k: v.detach().clone() for k, v in unet.state_dict().items() if ".motion_modules." in k}


@torch.no_grad()
def encode_prompts(pipe, captions: list[str]) -> torch.Tensor:
    ids = pipe.tokenizer(captions, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids
    return pipe.text_encoder(ids.to(pipe.device))[0]


@torch.no_grad()
def encode_frames(pipe, clips: np.ndarray) -> torch.Tensor:
    """(B, F, 64, 64, 3) uint8 -> (B, C, F, 16, 16) latents, scaled by the VAE's scaling factor."""
    b, f = clips.shape[:2]
    x = torch.from_numpy(clips.reshape(b * f, *clips.shape[2:])).permute(0, 3, 1, 2).float().to(pipe.device) / 127.5 - 1
    latents = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
    return latents.reshape(b, f, *latents.shape[1:]).permute(0, 2, 1, 3, 4)


# --- evaluation -------------------------------------------------------------------------------------

def track(frames: list[np.ndarray]) -> list:
    """kiri_world's detection of the clip's main object in every frame (None where nothing is found)."""
    out = []
    for frame in frames:
        found, _ = W.detect(frame)
        out.append(max(found, key=lambda d: d.area) if found else None)
    return out


def measured_motion(frames: list[np.ndarray], tracked: list | None = None) -> str | None:
    """The object's motion over a clip from kiri_world.detect: the larger of its centre's travel and
    its growth, or None when it is not found in most frames."""
    tracked = track(frames) if tracked is None else tracked
    found = [d for d in tracked if d is not None]
    if len(found) < max(2, len(frames) // 2):
        return None
    centres = [(d.bbox[0] + d.bbox[2] / 2, d.bbox[1] + d.bbox[3] / 2) for d in found]
    areas = [d.area for d in found]
    (x0, y0), (x1, y1) = centres[0], centres[-1]
    dx, dy = x1 - x0, y1 - y0
    growth = (areas[-1] ** 0.5 - areas[0] ** 0.5)  # change of the side, pixels
    best = max(abs(dx), abs(dy), abs(growth))
    if best < 3:
        return "still"
    if best == abs(growth):
        return "grow" if growth > 0 else "shrink"
    if best == abs(dx):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def evaluate(pipe, adapter, frames: int, clips: int = 12, steps: int = 20, seed: int = 7, plain: bool = True,
             keep: list | None = None) -> dict:
    """Generate one clip per held-out prompt (MOTION_HELD_OUT, motions in turn) and measure it with the
    scene detector: the share of clips whose motion is the captioned one, the share of frames whose
    object has the captioned colour and shape (frames_kept), and the share whose object has the clip's
    own most common colour and shape (frames_consistent: the object stays itself)."""
    from diffusers import AnimateDiffPipeline

    video = AnimateDiffPipeline.from_pipe(pipe, motion_adapter=adapter)
    video.set_progress_bar_config(disable=True)
    rng = random.Random(seed)
    right = found = kept = consistent = total_frames = 0
    per: dict[str, list[int]] = {m: [0, 0] for m in MOTIONS}
    for i in range(clips):
        motion = list(MOTIONS)[i % len(MOTIONS)]
        truth, caption, _ = motion_clip(rng, frames, motion, held_out=True, plain=plain)
        colour, shape = W.detect(truth[0])[0][0].colour, W.detect(truth[0])[0][0].shape
        out = video(prompt=caption, num_frames=frames, height=64, width=64, num_inference_steps=steps, guidance_scale=5.0,
                    generator=torch.Generator().manual_seed(seed + i), output_type="np")
        clip = [(f * 255).round().astype(np.uint8) for f in out.frames[0]]
        if keep is not None:
            keep.append((caption, clip))
        tracked = track(clip)
        measured = measured_motion(clip, tracked)
        found += measured is not None
        right += measured == motion
        kept += sum(d is not None and d.colour == colour and d.shape == shape for d in tracked)
        looks = [(d.colour, d.shape) for d in tracked if d is not None]
        if looks:  # the clip's own object: its most common colour and shape
            consistent += looks.count(max(set(looks), key=looks.count))
        total_frames += len(clip)
        per[motion][0] += measured == motion
        per[motion][1] += 1
    return {"motion_accuracy": right / clips, "object_found": found / clips, "frames_kept": kept / max(1, total_frames),
            "frames_consistent": consistent / max(1, total_frames),
            **{f"acc_{m}": c / max(1, n) for m, (c, n) in per.items()}}


def write_gif(path: Path, clips: list[tuple[str, list[np.ndarray]]], fps: float = 6.0, scale: int = 2) -> None:
    """The clips side by side, one GIF (each frame a row of the clips' frames), written whole."""
    from PIL import Image

    rows = [np.concatenate([clip[i] for _, clip in clips], axis=1) for i in range(len(clips[0][1]))]
    images = [Image.fromarray(r).resize((r.shape[1] * scale, r.shape[0] * scale), Image.NEAREST) for r in rows]
    tmp = path.with_name(f".{path.name}.tmp")
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    tmp.replace(path)


def eval_only(folder: Path, clips: int, frames: int) -> dict:
    """Measure a finished module on held-out prompts (plain and loose captions) and write examples.gif."""
    from diffusers import MotionAdapter

    pipe = load_image_model()
    adapter = MotionAdapter.from_pretrained(str(folder), local_files_only=True)
    kept: list = []
    plain = evaluate(pipe, adapter, frames, clips, keep=kept)
    loose = evaluate(pipe, adapter, frames, clips, seed=1007, plain=False)
    per_motion = [kept[i] for i in range(min(len(MOTIONS), len(kept)))]  # one clip of each motion, in MOTIONS order
    write_gif(folder / "examples.gif", per_motion)
    result = {"clips": clips, "plain": plain, "loose": loose, "examples": [c for c, _ in per_motion]}
    (folder / "eval.json").write_text(json.dumps(result, indent=1))
    return result


# --- training ---------------------------------------------------------------------------------------

def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--minutes", type=float, default=None, help="stop after this much training time, and save")
    p.add_argument("--resume", action="store_true", help="continue from .train/motion_work/ckpt.pt")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--frames", type=int, default=8, help="frames a training clip (at least 8)")
    p.add_argument("--batch", type=int, default=8, help="clips a step")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--p-high", type=float, default=0.5, help="share of clips drawn at high noise (t >= 40%%)")
    p.add_argument("--eval-every", type=int, default=500, help="motion check every N steps (0: only at the end)")
    p.add_argument("--eval-clips", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--eval-only", metavar="FOLDER", default=None,
                   help="measure a finished module (--eval-clips held-out prompts, plain and loose captions), write "
                        "FOLDER/eval.json and FOLDER/examples.gif, and stop")
    args = p.parse_args(argv)
    if args.frames < 8:
        p.error("--frames must be at least 8")
    torch.set_num_threads(args.threads)
    added = extend_vocabulary()
    if added:
        print(f"{IMAGE_MODEL.name}: the tokenizer now has {', '.join(added)} (copies of "
              f"{', '.join(MOTION_WORDS[w] for w in added)})")
    if args.eval_only:
        print(json.dumps(eval_only(Path(args.eval_only), args.eval_clips, args.frames), indent=1))
        return

    from diffusers import DDPMScheduler, UNetMotionModel

    device = torch.device(args.device)
    pipe = load_image_model().to(device)
    adapter = make_adapter(args.frames, pipe.unet.config).to(device)
    unet = UNetMotionModel.from_unet2d(pipe.unet, adapter).to(device)
    unet.freeze_unet2d_params()
    params = [p_ for p_ in unet.parameters() if p_.requires_grad]
    modules = {"motion": adapter}
    ema = EMA(modules, decay=0.995)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    noise = DDPMScheduler.from_config(pipe.scheduler.config)
    acp = noise.alphas_cumprod.to(device)
    empty = encode_prompts(pipe, [""])

    ckpt_path = WORK / "ckpt.pt"
    start, losses, evals, elapsed0 = 0, [], [], 0.0
    if args.resume and ckpt_path.exists():
        st = torch.load(ckpt_path, weights_only=False, map_location=device)
        if st.get("frames") != args.frames:
            raise SystemExit(f"the checkpoint was trained on {st.get('frames')}-frame clips; pass --frames {st.get('frames')}")
        unet.load_state_dict({**unet.state_dict(), **st["motion"]})
        ema.shadow = st["ema"]
        opt.load_state_dict(st["opt"])
        start, losses, evals, elapsed0 = st["step"], st["losses"], st["evals"], st["elapsed"]
        print(f"resumed at step {start}")
    t0 = time.time()

    def checkpoint(done: int) -> None:
        save_ckpt(ckpt_path, motion=motion_state(unet), ema=ema.shadow, opt=opt.state_dict(), step=done, losses=losses,
                  evals=evals, elapsed=elapsed0 + time.time() - t0, frames=args.frames)

    def sync_adapter() -> None:
        adapter.load_state_dict(motion_state(unet))

    def run_eval(done: int) -> dict:
        sync_adapter()
        trained = {k: v.clone() for k, v in adapter.state_dict().items()}
        ema.copy_to(modules)
        res = {"step": done, "minutes": round((elapsed0 + time.time() - t0) / 60, 1),
               **evaluate(pipe, adapter, args.frames, args.eval_clips)}
        adapter.load_state_dict(trained)
        evals.append(res)
        tqdm.write(f"eval @ {done}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items() if k not in ("step", "minutes")))
        return res

    if start == 0 and args.eval_every:
        run_eval(0)  # the untrained (zero) module: the image model alone, nothing moves
    last_save = time.time()
    unet.train()
    bar = tqdm(total=args.steps, initial=start, desc="motion", dynamic_ncols=True)
    step = start
    for step in range(start, args.steps):
        rng = random.Random(args.seed * 1_000_003 + step)  # the same clips for a resumed run
        batch = [motion_clip(rng, args.frames) for _ in range(args.batch)]
        clips = np.stack([b[0] for b in batch])
        captions = [b[1] for b in batch]
        g = torch.Generator().manual_seed(args.seed * 7_919 + step)
        x0 = encode_frames(pipe, clips)
        text = encode_prompts(pipe, captions)
        text[(torch.rand(args.batch, generator=g) < 0.1).to(device)] = empty[0]  # unconditional now and then, for CFG
        eps = torch.randn(x0.shape, generator=g).to(device)
        # Half the clips at high noise, where the layout of every frame (and so the motion) is decided.
        n_t = noise.config.num_train_timesteps
        t = torch.randint(0, n_t, (args.batch,), generator=g)
        high = torch.rand(args.batch, generator=g) < args.p_high
        t = torch.where(high, torch.randint(n_t * 2 // 5, n_t, (args.batch,), generator=g), t).to(device)
        b, c, f, h, w = x0.shape
        flat = lambda z: z.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)  # noqa: E731
        xt = noise.add_noise(flat(x0), flat(eps), t.repeat_interleave(f))
        xt = xt.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, warmup=50)
        pred = unet(xt, t, encoder_hidden_states=text.repeat_interleave(f, dim=0)).sample
        snr = acp[t] / (1 - acp[t])
        weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 (epsilon prediction)
        loss = (weight * (pred - eps).pow(2).mean(dim=(1, 2, 3, 4))).mean()
        optimise(opt, loss, params)
        sync_adapter()
        ema.update(modules, step)
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
        done = step + 1
        if args.eval_every and done % args.eval_every == 0 and done < args.steps:
            run_eval(done)
        if time.time() - last_save > 180:
            checkpoint(done)
            last_save = time.time()
        if args.minutes and elapsed0 + time.time() - t0 > args.minutes * 60:
            tqdm.write(f"time limit reached at step {done}")
            break
    done = step + 1 if args.steps > start else start
    bar.close()
    checkpoint(done)
    final = run_eval(done)
    elapsed = elapsed0 + time.time() - t0

    # The shipped weights are the EMA weights.
    ema.copy_to(modules)
    trim_context(adapter, args.frames)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp")
    adapter.to("cpu").save_pretrained(tmp, safe_serialization=True)
    size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    if size > MAX_BYTES:
        raise SystemExit(f"the module is {size / 2**20:.1f} MB, over the {MAX_BYTES / 2**20:.0f} MB limit")
    log = {"model": "kiri-motion", "for": IMAGE_MODEL.name, "steps": done, "batch": args.batch, "frames": args.frames,
           "seconds": round(elapsed), "final_loss_avg50": float(np.mean(losses[-50:])) if losses else None,
           "motion_params": sum(p_.numel() for p_ in adapter.parameters()), "bytes": size, "evals": evals,
           "final_eval": final, "command": "python tools/train_motion.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    (tmp / "train_log.json").write_text(json.dumps(log, indent=1))
    (tmp / "kiri_examples.json").write_text(json.dumps([
        "a large red circle moving right, blue background", "a green square growing, white background",
        "a yellow star moving up", "a blue ring shrinking, orange background",
        "0: a large red circle moving right, blue background\n4: a large red circle moving down, blue background",
    ], indent=1))
    plot_losses(tmp / "loss_curve.png", losses, f"kiri-motion: {done} steps, {elapsed / 60:.1f} min (min-SNR eps loss)")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.replace(out)
    print(json.dumps({k: v for k, v in log.items() if k != "evals"}))


if __name__ == "__main__":
    main()
