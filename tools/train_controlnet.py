"""Train the default ControlNet of kiri-shapes-ldm: kiri-outline-controlnet (issue 27).

    python tools/train_controlnet.py [--steps N] [--minutes N] [--resume]   # models/ControlNet/kiri-outline-controlnet/

A diffusers ControlNetModel made from the base model's UNet (``ControlNetModel.from_unet``: the encoder
and middle block copied, zero convolutions on every residual, a conditioning embedding that downsamples
x4 as the VAE does: 64 px maps -> 16 px latents). The base model (models/checkpoints/kiri-shapes-ldm)
stays frozen; the ControlNet learns with the base model's own loss (epsilon, min-SNR-5).

Data is drawn from kiri_world on the fly, a step's scenes seeded by the step (a resumed run sees the same
data); no held-out colour x shape x position combination is ever drawn. The control map is what a user
gives Kiri's ControlNet unit, a mix of

* ``canny``: cv2.Canny(rendered picture, 100, 200), white edges on black (the canny preprocessor's output,
  the two-tone background's seam included);
* ``scribble``: the objects' outlines as white strokes 1-3 px wide on black, wobbly and slightly
  off the true edge, as a hand draws them on a canvas (the invert / scribble preprocessors' output).

Captions are the world's ordinary caption mix (kiri_phrasing.sample_phrase) and, for a share of
--loose, short loose prompts ("a red circle", "red circle", "red", ""), so the colour follows the
prompt and the shape and place follow the map; --cfg-drop of them are empty (classifier-free guidance).

Work files (the checkpoint to resume from) live in .train/controlnet_work/<name>.
tools/eval_controlnet.py measures the result on held-out scenes with kiri_world's detector.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # be gentle when the CPU is shared

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import kiri_phrasing as P  # noqa: E402
from tools import kiri_world as W  # noqa: E402
from tools.train_lora import BASE, TRAIN_DIR, encode_images, load_base, token_ids  # noqa: E402
from tools.training_kit import lr_at, optimise, plot_losses, save_ckpt  # noqa: E402

NAME = "kiri-outline-controlnet"
OUT = ROOT / "models" / "ControlNet" / NAME
EMBED_CHANNELS = (16, 32, 64)  # the conditioning embedding; its length - 1 halvings must match the VAE's factor
MAP_KINDS = ("canny", "scribble")
CANNY = (100, 200)  # the canny preprocessor's default thresholds


# --- control maps -------------------------------------------------------------------------------------

def canny_map(image: np.ndarray, low: int = CANNY[0], high: int = CANNY[1]) -> np.ndarray:
    """What the canny preprocessor makes of a picture: white edges on black, 3 channels (uint8)."""
    edges = cv2.Canny(image, low, high)
    return np.repeat(edges[..., None], 3, axis=-1)


def true_mask(scene: W.Scene) -> np.ndarray:
    """The region the scene's objects cover (bool, 64 x 64): what a filled-in outline encloses."""
    out = np.zeros((W.SIZE, W.SIZE), bool)
    for o in scene.objects:
        out |= W.shape_mask(o.shape, o.cx, o.cy, o.radius) > 127
    return out


def scribble_map(scene: W.Scene, rng: random.Random, width: float | None = None, wobble: float | None = None) -> np.ndarray:
    """The objects' outlines as a hand draws them on a canvas: white strokes (``width`` px, random 1-3)
    on black, each contour bent by a few smooth random waves (``wobble`` px, random 0.3-1.2) and
    shifted a little. 3 channels, uint8."""
    ss = 4  # drawn supersampled, then reduced: anti-aliased strokes as a canvas gives them
    big = np.zeros((W.SIZE * ss, W.SIZE * ss), np.uint8)
    for o in scene.objects:
        mask = (W.shape_mask(o.shape, o.cx * ss, o.cy * ss, o.radius * ss, size=W.SIZE * ss) > 127).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        w = width if width is not None else rng.uniform(1.0, 3.0)
        amp = wobble if wobble is not None else rng.uniform(0.3, 1.2)
        shift = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.7)])
        for c in contours:
            pts = c[:, 0, :].astype(np.float64)
            if len(pts) < 8:
                continue
            u = np.linspace(0, 2 * np.pi, len(pts), endpoint=False)
            bend = np.zeros_like(pts)
            for _ in range(3):  # a few low-frequency waves along the stroke, independent in x and y
                k = rng.randint(1, 4)
                for axis in range(2):
                    bend[:, axis] += rng.uniform(0, amp) * np.sin(k * u + rng.uniform(0, 2 * np.pi))
            pts = pts + (bend + shift) * ss
            q = np.round(pts * 16).astype(np.int32)  # 4 fractional bits
            cv2.polylines(big, [q], True, 255, thickness=max(1, int(round(w * ss))), lineType=cv2.LINE_AA, shift=4)
    small = cv2.resize(big, (W.SIZE, W.SIZE), interpolation=cv2.INTER_AREA)
    return np.repeat(small[..., None], 3, axis=-1)


def control_map(scene: W.Scene, image: np.ndarray, kind: str, rng: random.Random) -> np.ndarray:
    if kind == "canny":
        return canny_map(image)
    if kind == "scribble":
        return scribble_map(scene, rng)
    raise ValueError(f"unknown map kind {kind!r}; one of {', '.join(MAP_KINDS)}")


def loose_prompt(scene: W.Scene, rng: random.Random) -> str:
    """A short loose prompt as newcomers type it: colour and shape, or the colour alone, or nothing."""
    objs = scene.objects
    kind = rng.choices(["np", "bare", "colour", "all", "empty"], [0.35, 0.2, 0.2, 0.15, 0.1])[0]
    if kind == "np":
        return f"a {objs[0].colour} {objs[0].shape}"
    if kind == "bare":
        return f"{objs[0].colour} {objs[0].shape}"
    if kind == "colour":
        return objs[0].colour
    if kind == "all":
        return " and ".join(f"a {o.colour} {o.shape}" for o in objs)
    return ""


def to_cond(maps: np.ndarray) -> torch.Tensor:
    """Control maps (N, H, W, 3) uint8 -> the pipeline's conditioning tensor: RGB in [0, 1]."""
    return torch.from_numpy(maps).permute(0, 3, 1, 2).float() / 255.0


def batch(rng: random.Random, n: int, loose: float, cfg_drop: float, canny_share: float = 0.5):
    """n training scenes: pictures, control maps, captions, map kinds."""
    images, maps, captions, kinds = [], [], [], []
    for _ in range(n):
        scene = W.sample_scene(rng, held_out="exclude")
        image = W.render(scene)
        kind = "canny" if rng.random() < canny_share else "scribble"
        images.append(image)
        maps.append(control_map(scene, image, kind, rng))
        text = loose_prompt(scene, rng) if rng.random() < loose else P.sample_phrase(scene, rng)[0]
        captions.append("" if rng.random() < cfg_drop else text)
        kinds.append(kind)
    return np.stack(images), np.stack(maps), captions, kinds


# --- the model ----------------------------------------------------------------------------------------

def embed_channels(vae_scale: int) -> tuple[int, ...]:
    """Conditioning embedding widths: one halving per entry after the first, as many as the VAE's factor."""
    levels = int(round(math.log2(vae_scale))) + 1
    return tuple(EMBED_CHANNELS[: levels]) if levels <= len(EMBED_CHANNELS) else \
        tuple(EMBED_CHANNELS) + (EMBED_CHANNELS[-1],) * (levels - len(EMBED_CHANNELS))


def make_controlnet(pipe):
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=embed_channels(pipe.vae_scale_factor))


def save_controlnet(controlnet, out: Path, dtype=torch.float16) -> None:
    """A diffusers folder (config.json + diffusion_pytorch_model.safetensors), replaced atomically."""
    import copy

    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    copy.deepcopy(controlnet).to(dtype).save_pretrained(tmp, safe_serialization=True)
    for f in tmp.iterdir():
        os.chmod(f, 0o644)
    out.parent.mkdir(parents=True, exist_ok=True)
    keep = [f for f in out.iterdir() if f.name not in ("config.json", "diffusion_pytorch_model.safetensors")] if out.exists() else []
    for f in keep:
        shutil.move(str(f), tmp / f.name)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


# --- the loop -----------------------------------------------------------------------------------------

def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--minutes", type=float, default=None, help="stop after this much training time, and save")
    p.add_argument("--resume", action="store_true", help=f"continue from .train/controlnet_work/{NAME}/ckpt.pt")
    p.add_argument("--init", default=None, help="start from this ControlNet folder's weights (a second stage with its "
                                                "own schedule, e.g. more loose prompts), not from the base UNet")
    p.add_argument("--base", default=str(BASE), help="the base model folder (diffusers StableDiffusionPipeline)")
    p.add_argument("--out", default=str(OUT), help="the diffusers folder to write")
    p.add_argument("--work", default=None, help=f"work folder (default .train/controlnet_work/{NAME})")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--loose", type=float, default=0.3, help="share of short loose prompts")
    p.add_argument("--cfg-drop", type=float, default=0.1, help="share of empty captions")
    p.add_argument("--canny", type=float, default=0.5, help="share of canny maps (the rest: scribbles)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=25, help="checkpoint every N steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fp32", action="store_true", help="save fp32 weights (default fp16)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    work = Path(args.work) if args.work else TRAIN_DIR / "controlnet_work" / NAME
    base = Path(args.base)

    from diffusers import DDPMScheduler

    torch.manual_seed(args.seed)
    pipe = load_base(base)
    controlnet = make_controlnet(pipe)
    if args.init:  # a second stage: the weights of a finished run, a fresh optimiser and schedule
        from diffusers import ControlNetModel

        controlnet.load_state_dict(ControlNetModel.from_pretrained(args.init, torch_dtype=torch.float32).state_dict())
        print(f"starting from the weights in {args.init}")
    controlnet.train()
    params = [q for q in controlnet.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    noise = DDPMScheduler.from_config(pipe.scheduler.config)
    acp = noise.alphas_cumprod

    ckpt_path = work / "ckpt.pt"
    start, losses, elapsed0 = 0, [], 0.0
    if args.resume and ckpt_path.exists():
        st = torch.load(ckpt_path, weights_only=False)
        if st["steps"] > args.steps:
            raise SystemExit(f"the checkpoint is a run of {st['steps']} steps; pass --steps {st['steps']} or more")
        if st["steps"] < args.steps:
            print(f"extending a run of {st['steps']} steps to {args.steps} (the learning rate follows the longer schedule)")
        controlnet.load_state_dict(st["weights"])
        opt.load_state_dict(st["opt"])
        start, losses, elapsed0 = st["step"], st["losses"], st["elapsed"]
        print(f"resumed at step {start}")
    t0 = time.time()

    def checkpoint(done: int) -> None:
        save_ckpt(ckpt_path, steps=args.steps, weights=controlnet.state_dict(), opt=opt.state_dict(), step=done,
                  losses=losses, elapsed=elapsed0 + time.time() - t0)

    def finish(done: int) -> None:
        """The weights so far as the diffusers folder, with the log and loss curve beside them."""
        elapsed = elapsed0 + time.time() - t0
        save_controlnet(controlnet, out, torch.float32 if args.fp32 else torch.float16)
        command = "python tools/train_controlnet.py " + " ".join(argv if argv is not None else sys.argv[1:])
        log = {"name": NAME, "for": base.name, "steps": done, "of_steps": args.steps, "batch": args.batch, "lr": args.lr,
               "loose": args.loose, "cfg_drop": args.cfg_drop, "init": args.init, "canny_share": args.canny, "seconds": round(elapsed),
               "conditioning_embedding_out_channels": list(controlnet.config.conditioning_embedding_out_channels),
               "params": sum(q.numel() for q in controlnet.parameters()),
               "final_loss_avg25": float(np.mean(losses[-25:])) if losses else None, "command": command,
               "bytes": (out / "diffusion_pytorch_model.safetensors").stat().st_size}
        (out / "train_log.json").write_text(json.dumps({**log, "losses": losses}))
        plot_losses(out / "loss_curve.png", losses, f"{NAME}: {done} steps, {elapsed / 60:.1f} min (min-SNR eps loss)")
        print(json.dumps(log))

    bar = tqdm(total=args.steps, initial=start, desc=NAME, dynamic_ncols=True, mininterval=10)
    done = start
    for step in range(start, args.steps):
        rng = random.Random(args.seed * 1_000_003 + step)  # the same scenes, maps and captions for a resumed run
        images, maps, captions, _ = batch(rng, args.batch, args.loose, args.cfg_drop, args.canny)
        g = torch.Generator().manual_seed(args.seed * 7_919 + step)
        x0 = encode_images(pipe, images)
        with torch.no_grad():
            text = pipe.text_encoder(token_ids(pipe, captions))[0]
        eps = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, noise.config.num_train_timesteps, (args.batch,), generator=g)
        xt = noise.add_noise(x0, eps, t)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, warmup=min(50, args.steps // 10 + 1))
        down, mid = controlnet(xt, t, encoder_hidden_states=text, controlnet_cond=to_cond(maps), return_dict=False)
        pred = pipe.unet(xt, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample
        snr = acp[t] / (1 - acp[t])
        weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 (epsilon prediction), as the base model trained
        loss = (weight * (pred - eps).pow(2).mean(dim=(1, 2, 3))).mean()
        optimise(opt, loss, params)
        losses.append(loss.item())
        done = step + 1
        bar.update(1)
        spent = elapsed0 + time.time() - t0
        eta = (time.time() - t0) / max(1, done - start) * (args.steps - done)
        bar.set_postfix(loss=f"{np.mean(losses[-25:]):.4f}", lr=f"{opt.param_groups[0]['lr']:.1e}", eta=f"{eta / 60:.1f}min")
        if done % args.save_every == 0:
            checkpoint(done)
        if args.minutes and spent > args.minutes * 60 and done < args.steps:
            bar.close()
            checkpoint(done)
            finish(done)
            print(f"time limit reached at step {done} of {args.steps}: continue with --resume "
                  f"(the weights so far are in {out})")
            return
    bar.close()
    checkpoint(done)
    finish(done)


if __name__ == "__main__":
    main()
