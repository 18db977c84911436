"""Train Kiri's embedded x4 upscaler: a Real-ESRGAN compact net (SRVGGNetCompact) saved with the key
names spandrel and Kiri's own reader know (body.N.weight ...), as .safetensors under 5 MB.

Data, all offline:
- photographs and textures found in installed packages and /usr/share (gradio's sample pictures,
  documentation images, icon sets); a few photographs are held out by file for the evaluation,
- pictures Kiri's default LDM draws (models/checkpoints/kiri-shapes-ldm, cached) and scenes of its
  toy world drawn by tools/kiri_world.py,
- text, lines and patterns drawn with OpenCV on the fly.
Degradation: bicubic x4 downscale of a 64 px crop (clean), with mild blur or noise on a fraction.
Loss: L1 (PSNR-oriented), AdamW with warm-up and cosine decay, weight EMA (what is saved).

    python tools/train_upscaler.py --minutes 60            # or --steps 20000; --resume continues
    python tools/train_upscaler.py --steps 5 --out /tmp/x.safetensors   # a smoke test

Writes the model to --out (default models/upscalers/kiri-compact-x4.safetensors), train_log.json and
loss_curve.png next to it; resumable state in .train/upscaler_work/. The evaluation prints PSNR and
SSIM of the model, bicubic and Lanczos on the held-out photographs and on Kiri's 64 px pictures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import kiri_world as W  # noqa: E402
from tools.training_kit import EMA, lr_at, optimise, plot_losses, save_ckpt  # noqa: E402
from webui.engine.upscale._compact import SRVGGNetCompact  # noqa: E402

SCALE = 4
HR = 64  # training crop (the input is 16 px)
WORK = ROOT / ".train" / "upscaler_work"
DEFAULT_OUT = ROOT / "models" / "upscalers" / "kiri-compact-x4.safetensors"
PICTURE_DIRS = ["gradio/media_assets/images", "gradio/test_data", "networkx/drawing/tests/baseline", "skimage/data"]
# scikit-image's bundled photographs (PNG files, so named here; its other pictures are drawings, text and
# a microscope slide kept as "other pictures"). scikit-image is a training-only dependency
# (requirements-train.txt): without it the script runs on the other pictures alone.
PACKAGE_PHOTOS = {"astronaut", "camera", "chelsea", "coffee", "coins", "moon", "motorcycle_left", "motorcycle_right",
                  "rocket", "hubble_deep_field", "retina", "brick", "grass", "gravel"}
SHARE_DIRS = [Path("/usr/share/icons"), Path("/usr/share/doc"), Path("/usr/share/backgrounds"), Path("/usr/share/pixmaps"),
              Path("/usr/share/wallpapers")]
HELD_OUT = 4  # photographs kept out of training (whole subjects, by file)


# --- data ------------------------------------------------------------------------------------

def find_pictures(limit: int = 400) -> tuple[list[Path], list[Path]]:
    """(photographs, other pictures) found offline, duplicates (same bytes) once; at least 96 px a side."""
    import site

    roots = [Path(p) for p in site.getsitepackages()]
    candidates: list[Path] = []
    for base in roots:
        for folder in PICTURE_DIRS:
            candidates += sorted((base / folder).glob("*")) if (base / folder).is_dir() else []
    for share in SHARE_DIRS:
        if share.is_dir():
            found = [p for p in share.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")]
            candidates += sorted(found, key=lambda p: -p.stat().st_size)[:limit]
    seen, photos, others = set(), [], []
    for path in candidates:
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp") or path.stat().st_size < 8_000:
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            continue
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None or min(image.shape[:2]) < 96:
            continue
        seen.add(digest)
        is_photo = path.suffix.lower() in (".jpg", ".jpeg") or path.stem in PACKAGE_PHOTOS
        (photos if is_photo else others).append(path)
    return photos, others


def held_out(photos: list[Path], count: int = HELD_OUT) -> list[Path]:
    """Photographs kept out of training, whole families at a time (cheetah, cheetah1, cheetah2 are one
    subject), chosen by the family name's hash so every run holds out the same ones."""
    import re

    def family(path: Path) -> str:
        return re.sub(r"[\d_-]+|copy|left|right", "", path.stem.lower())  # a stereo pair is one subject

    families = sorted({family(p) for p in photos}, key=lambda f: hashlib.sha256(f.encode()).hexdigest())
    held: list[Path] = []
    for name in families:
        if len(held) >= count or len(held) + 1 >= len(photos):
            break
        held += [p for p in photos if family(p) == name]
    return held


def load_rgb(path: Path, max_side: int = 1024) -> np.ndarray:
    image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    side = max(image.shape[:2])
    if side > max_side:
        image = cv2.resize(image, None, fx=max_side / side, fy=max_side / side, interpolation=cv2.INTER_AREA)
    return image


def ldm_samples(count: int) -> np.ndarray:
    """Pictures Kiri's default LDM draws for its example-style prompts, cached in the work folder."""
    cache = WORK / f"ldm_samples_{count}.npz"
    if cache.exists():
        return np.load(cache)["images"]
    if count == 0:
        return np.zeros((0, 64, 64, 3), np.uint8)
    from diffusers import StableDiffusionPipeline

    folder = ROOT / "models" / "checkpoints" / "kiri-shapes-ldm"
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    rng = random.Random(7)
    images = []
    for k in range(count):
        prompt = W.caption(W.sample_scene(rng))
        out = pipe(prompt, num_inference_steps=20, width=64, height=64, generator=torch.Generator().manual_seed(k))
        images.append(np.asarray(out.images[0].convert("RGB")))
    array = np.stack(images)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, images=array)
    return array


def drawn_pattern(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """Text, lines, circles, stripes and gradients drawn with OpenCV (sharp edges at every angle)."""
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = rng.integers(0, 256, 3)
    kind = rng.integers(0, 4)
    if kind == 0:  # stripes or a checkerboard
        period = int(rng.integers(3, 14))
        yy, xx = np.mgrid[:size, :size]
        angle = rng.uniform(0, math.pi)
        mask = ((np.cos(angle) * xx + np.sin(angle) * yy) // period % 2).astype(bool)
        canvas[mask] = rng.integers(0, 256, 3)
    elif kind == 1:  # gradient
        t = np.linspace(0, 1, size)[None, :, None]
        canvas = (canvas * (1 - t) + rng.integers(0, 256, 3) * t).astype(np.uint8)
    for _ in range(int(rng.integers(2, 9))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        what = rng.integers(0, 3)
        if what == 0:
            text = "".join(chr(int(c)) for c in rng.integers(33, 127, int(rng.integers(2, 8))))
            cv2.putText(canvas, text, (int(rng.integers(0, size // 2)), int(rng.integers(12, size))),
                        int(rng.choice([0, 1, 2, 3, 4, 6, 7])), float(rng.uniform(0.3, 1.4)), colour,
                        int(rng.integers(1, 3)), cv2.LINE_AA)
        elif what == 1:
            p, q = rng.integers(0, size, 2), rng.integers(0, size, 2)
            cv2.line(canvas, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            cv2.circle(canvas, tuple(int(v) for v in rng.integers(0, size, 2)), int(rng.integers(3, size // 3)), colour,
                       int(rng.choice([-1, 1, 2])), cv2.LINE_AA)
    return canvas


def bicubic_down(image: np.ndarray) -> np.ndarray:
    """x4 bicubic downscale with the kernel widened to the output grid (antialiased), as MATLAB's
    imresize and PIL do: the classic SR protocol. (OpenCV's INTER_CUBIC samples 4x4 input pixels and
    aliases at x4.)"""
    from PIL import Image

    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w // SCALE, h // SCALE), Image.BICUBIC))


def degrade(hr: np.ndarray, rng: np.random.Generator, mild: float) -> np.ndarray:
    """HR (h, w, 3) uint8 -> LR at a quarter size: bicubic, with mild blur or noise on a fraction `mild`."""
    image = hr
    if rng.random() < mild / 2:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.3, 1.0)))
    lr = bicubic_down(image)
    if rng.random() < mild / 2:
        lr = np.clip(lr + rng.normal(0, rng.uniform(1, 4), lr.shape), 0, 255).astype(np.uint8)
    return lr


class Crops:
    """Random HR crops from the sources, each source with its share of the batch."""

    def __init__(self, photos: list[np.ndarray], others: list[np.ndarray], small: np.ndarray, seed: int):
        self.photos, self.others, self.small = photos, others, small
        self.rng = np.random.default_rng(seed)

    def _crop(self, image: np.ndarray) -> np.ndarray:
        if self.rng.random() < 0.5 and min(image.shape[:2]) >= 2 * HR:  # a zoomed-out view too
            factor = self.rng.uniform(0.5, 1.0)
            image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        y = int(self.rng.integers(0, image.shape[0] - HR + 1))
        x = int(self.rng.integers(0, image.shape[1] - HR + 1))
        crop = image[y:y + HR, x:x + HR]
        if self.rng.random() < 0.5:
            crop = crop[:, ::-1]
        return np.ascontiguousarray(np.rot90(crop, int(self.rng.integers(0, 4))))

    def batch(self, size: int, mild: float) -> tuple[torch.Tensor, torch.Tensor]:
        hrs = []
        for _ in range(size):
            pick = self.rng.random()
            if pick < 0.45 and self.photos:
                hrs.append(self._crop(self.photos[int(self.rng.integers(len(self.photos)))]))
            elif pick < 0.6 and self.others:
                hrs.append(self._crop(self.others[int(self.rng.integers(len(self.others)))]))
            elif pick < 0.85 and len(self.small):
                hrs.append(self._crop(self.small[int(self.rng.integers(len(self.small)))]))
            else:
                hrs.append(self._crop(drawn_pattern(self.rng)))
        lrs = [degrade(h, self.rng, mild) for h in hrs]
        return _tensor(np.stack(lrs)), _tensor(np.stack(hrs))


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()


# --- evaluation ------------------------------------------------------------------------------

def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM on the luma, 11-pixel Gaussian window (sigma 1.5), as in Wang et al. 2004."""
    def luma(x):
        return cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float64)

    x, y = luma(a), luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5)  # noqa: E731
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return float(np.mean(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))))


@torch.no_grad()
def upscale(model: torch.nn.Module, lr: np.ndarray) -> np.ndarray:
    out = model(_tensor(lr[None]))[0].clamp(0, 1)
    return (out.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def evaluate(model: torch.nn.Module, sets: dict[str, list[np.ndarray]], border: int = 4) -> dict[str, dict[str, dict[str, float]]]:
    """PSNR/SSIM of model, bicubic and Lanczos x4 on each set (HR cut to a multiple of 4, LR bicubic)."""
    from PIL import Image

    model.eval()
    report = {}
    for name, images in sets.items():
        scores: dict[str, list[tuple[float, float]]] = {"model": [], "bicubic": [], "lanczos": []}
        for hr in images:
            hr = hr[: hr.shape[0] // SCALE * SCALE, : hr.shape[1] // SCALE * SCALE]
            lr = bicubic_down(hr)
            size = (hr.shape[1], hr.shape[0])
            outs = {"model": upscale(model, lr),
                    "bicubic": np.asarray(Image.fromarray(lr).resize(size, Image.BICUBIC)),
                    "lanczos": np.asarray(Image.fromarray(lr).resize(size, Image.LANCZOS))}
            cut = (slice(border, -border), slice(border, -border))
            for key, out in outs.items():
                scores[key].append((psnr(out[cut], hr[cut]), ssim(out[cut], hr[cut])))
        report[name] = {k: {"psnr": round(float(np.mean([s[0] for s in v])), 2), "ssim": round(float(np.mean([s[1] for s in v])), 4)}
                        for k, v in scores.items()}
    model.train()
    return report


def print_report(report: dict) -> None:
    for name, rows in report.items():
        print(f"  {name}: " + ", ".join(f"{k} {v['psnr']:.2f} dB / SSIM {v['ssim']:.3f}" for k, v in rows.items()))


# --- training --------------------------------------------------------------------------------

def save_model(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().float().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--minutes", type=float, default=None, help="stop after this long (the schedule assumes --steps)")
    parser.add_argument("--resume", action="store_true", help="continue from .train/upscaler_work/ckpt.pt")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--features", type=int, default=48)
    parser.add_argument("--convs", type=int, default=10)
    parser.add_argument("--mild", type=float, default=0.2, help="share of crops given mild blur or noise")
    parser.add_argument("--ldm-samples", type=int, default=32, help="pictures drawn by kiri-shapes-ldm for training (cached)")
    parser.add_argument("--eval-every", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from tqdm import tqdm

    torch.manual_seed(args.seed)
    photos, others = find_pictures()
    held = held_out(photos)
    train_photos = [p for p in photos if p not in held]
    print(f"pictures: {len(train_photos)} photographs for training, held out: {', '.join(p.name for p in held)}; "
          f"{len(others)} other pictures")
    world, _, _ = W.dataset(256, seed=11)
    held_world, _, _ = W.dataset(24, seed=99, held_out="any")
    small = np.concatenate([world, ldm_samples(args.ldm_samples)])
    crops = Crops([load_rgb(p) for p in train_photos], [load_rgb(p) for p in others], small, args.seed)
    eval_sets = {"held-out photographs": [load_rgb(p, 512) for p in held], "Kiri 64 px pictures": list(held_world)}

    model = SRVGGNetCompact(3, 3, args.features, args.convs, SCALE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    ema = EMA({"net": model}, 0.999)
    state_path = WORK / "ckpt.pt"
    step, losses, evals = 0, [], []
    if args.resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ema.shadow = state["ema"]
        step, losses, evals = state["step"], state["losses"], state["evals"]
        crops.rng = np.random.default_rng(args.seed + step)
        print(f"resumed at step {step}")

    started = time.monotonic()
    deadline = started + args.minutes * 60 if args.minutes else None
    bar = tqdm(total=args.steps, initial=step, unit="step", dynamic_ncols=True)
    model.train()
    while step < args.steps and (deadline is None or time.monotonic() < deadline):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, warmup=min(200, args.steps // 10 + 1))
        lr, hr = crops.batch(args.batch, args.mild)
        loss = F.l1_loss(model(lr), hr)
        optimise(optimizer, loss, model.parameters())
        ema.update({"net": model}, step)
        losses.append(loss.item())
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if step % args.eval_every == 0 and step < args.steps:
            probe = SRVGGNetCompact(3, 3, args.features, args.convs, SCALE)
            probe.load_state_dict(ema.shadow["net"])
            report = evaluate(probe, eval_sets)
            evals.append({"step": step, **report})
            tqdm.write(f"eval @ {step}: " + "; ".join(f"{name}: " + ", ".join(f"{k} {v['psnr']:.2f} dB" for k, v in rows.items())
                                                      for name, rows in report.items()))
        if step % args.eval_every == 0 or step == args.steps:
            save_ckpt(state_path, model=model.state_dict(), optimizer=optimizer.state_dict(), ema=ema.shadow, step=step,
                      losses=losses, evals=evals)
    bar.close()
    save_ckpt(state_path, model=model.state_dict(), optimizer=optimizer.state_dict(), ema=ema.shadow, step=step,
              losses=losses, evals=evals)

    # The EMA weights are what is saved and evaluated.
    final = SRVGGNetCompact(3, 3, args.features, args.convs, SCALE)
    final.load_state_dict(ema.shadow["net"])
    report = evaluate(final, eval_sets)
    print(f"evaluation after {step} steps (x{SCALE}, PSNR on RGB, SSIM on luma):")
    print_report(report)
    evals.append({"step": step, **report})
    save_model(final, args.out)
    size_mb = args.out.stat().st_size / 2**20
    log = {"steps": step, "minutes": round((time.monotonic() - started) / 60, 2), "batch": args.batch, "lr": args.lr,
           "features": args.features, "convs": args.convs, "crop": HR, "scale": SCALE, "mild": args.mild,
           "held_out_photographs": [p.name for p in held], "training_photographs": [p.name for p in train_photos],
           "other_pictures": len(others), "kiri_pictures": int(len(small)), "size_mb": round(size_mb, 2),
           "final_loss": round(float(np.mean(losses[-100:])), 5) if losses else None, "evaluation": report,
           "losses_every_10": [round(v, 5) for v in losses[::10]], "evals": evals}
    (args.out.parent / "train_log.json").write_text(json.dumps(log, indent=2))
    plot_losses(args.out.parent / "loss_curve.png", losses, f"kiri-compact-x4: L1 loss, {step} steps")
    print(f"saved {args.out} ({size_mb:.2f} MB), train_log.json and loss_curve.png beside it")


if __name__ == "__main__":
    main()
