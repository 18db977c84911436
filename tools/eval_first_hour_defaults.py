"""Measures three defaults on the embedded models (issue 25): video to video follows the source's
motion, hires fix keeps the first pass's composition, outpaint states its real size.

    python -m tools.eval_first_hour_defaults vid2vid [--clips 6] [--strength 0.5 --consistency flow ...]
    python -m tools.eval_first_hour_defaults hires [--prompts 24] [--upscaler Latent --strength 0.7]

Source clips are drawn exactly with kiri_world.render: a held-out scene's object moved left to right
(or right to left) over 8 frames; the restyle prompt changes its colour. The detector reads the
object in every source and output frame: the position error is the distance between the two box
centres, in pixels; the colour hit rate the share of output frames whose object has the new colour.
Hires: the first pass (the same request without the fix) against the hires picture read at 64x64.
The measured tables are in models/README.md ("Defaults that keep the picture"). Run it with
OMP_NUM_THREADS=1 on a shared machine (several threads per process made it 10x slower here).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import random
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import kiri_world as W  # noqa: E402

FRAMES = 8


def build_engine(outputs: Path | None = None):
    import tempfile

    from webui.bootstrap import build_engine as build
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    outputs = outputs or Path(tempfile.mkdtemp(prefix="kiri-eval-"))
    return build(Settings(models_dir=ROOT / "models", outputs_dir=outputs, save_images=False), DeviceChoice("cpu"))


def moving_clip(scene: W.Scene, frames: int = FRAMES, leftward: bool = False) -> tuple[list[np.ndarray], list[float]]:
    """The scene's object moved across the frame (x from 16 to 48 px, or back), as RGB arrays."""
    obj = scene.objects[0]
    xs = list(np.linspace(16.0, 48.0, frames))
    if leftward:
        xs.reverse()
    return [W.render(dataclasses.replace(scene, objects=(dataclasses.replace(obj, cx=float(x)),))) for x in xs], xs


def zip_of(frames: list[np.ndarray]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, frame in enumerate(frames):
            png = io.BytesIO()
            Image.fromarray(frame).save(png, format="PNG")
            archive.writestr(f"{i:04d}.png", png.getvalue())
    return buffer.getvalue()


def restyle(scene: W.Scene, seed: int) -> tuple[str, str]:
    """A prompt that recolours the object (a colour neither it nor the background has), no position."""
    obj = scene.objects[0]
    rng = random.Random(seed)
    colour = rng.choice([c for c in W.OBJECT_COLOURS if c != obj.colour and c not in scene.background])
    return f"a {obj.size} {colour} {obj.shape}, {' and '.join(scene.background)} background", colour


def centre(found) -> tuple[float, float] | None:
    if not found:
        return None
    x, y, w, h = found[0].bbox
    return x + (w - 1) / 2.0, y + (h - 1) / 2.0


def vid2vid_cases(clips: int, seed: int = 1234):
    for i, scene in enumerate(W.eval_prompts(clips, seed)):
        frames, _ = moving_clip(scene, leftward=bool(i % 2))
        prompt, colour = restyle(scene, i)
        yield i, scene, frames, prompt, colour


def measure_vid2vid(engine, clips: int = 6, **fields) -> dict:
    from webui.engine.video.service import Vid2VidRequest, vid2vid

    errors, colour_hits, missing, outputs, by_frame = [], 0, 0, 0, {}
    for i, scene, frames, prompt, colour in vid2vid_cases(clips):
        request = Vid2VidRequest(video=zip_of(frames), prompt=prompt, seed=100 + i, model="kiri-shapes-ldm",
                                 max_size=64, **fields)
        made = [np.asarray(f) for f in vid2vid(engine, request).frames()]
        for index, (src, out) in enumerate(zip(frames, made)):
            a, (found, _) = centre(W.detect(src)[0]), W.detect(out)
            b = centre(found)
            outputs += 1
            if b is None or a is None:
                missing += 1
                continue
            errors.append(float(np.hypot(a[0] - b[0], a[1] - b[1])))
            by_frame.setdefault(index, []).append(errors[-1])
            colour_hits += found[0].colour == colour
    return {"frames": outputs, "missing": missing, "mean_err": float(np.mean(errors)) if errors else float("nan"),
            "max_err": float(np.max(errors)) if errors else float("nan"), "colour": colour_hits / max(outputs, 1),
            "by_frame": [round(float(np.mean(v)), 1) for _, v in sorted(by_frame.items())]}


def sharpness(img: np.ndarray) -> float:
    """Mean gradient magnitude of the grey picture (what a sharper upscale raises)."""
    import cv2

    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.mean(np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))))


_FIRST: dict = {}  # first passes, kept across the configurations of a sweep


def hires_pair(engine, prompt: str, seed: int, steps: int = 20, **hires) -> tuple[np.ndarray, np.ndarray]:
    """The first pass (the same request without the fix: the same seed draws the same picture) and the
    hires result, both RGB arrays."""
    from webui.engine.generation.requests import HiresFix, Txt2ImgRequest

    base = dict(prompt=prompt, seed=seed, steps=steps, width=64, height=64, model="kiri-shapes-ldm")
    key = (prompt, seed, steps)
    if key not in _FIRST:
        _FIRST[key] = engine.txt2img(Txt2ImgRequest(**base)).images[0].convert("RGB")
    first = _FIRST[key]
    fixed = engine.txt2img(Txt2ImgRequest(**base, hires=HiresFix(**hires))).images[0].convert("RGB")
    return np.asarray(first), np.asarray(fixed)


def composition_kept(first: np.ndarray, fixed: np.ndarray, tolerance: float = 4.0) -> tuple[bool, bool, float | None]:
    """(same object count, every object kept in place and look, largest object's centre distance in
    first-pass pixels): the hires picture read at 64x64 against the first pass."""
    a, _ = W.detect(first)
    b, _ = W.detect(fixed)  # detect reads any square picture at 64x64
    same_count = len(a) == len(b)
    shift = None
    if a and b:
        ca, cb = centre(a), centre(b)
        shift = float(np.hypot(ca[0] - cb[0], ca[1] - cb[1]))
    kept = same_count and all(
        min((float(np.hypot(centre([d])[0] - centre([e])[0], centre([d])[1] - centre([e])[1])) for e in b
             if e.colour == d.colour), default=99.0) <= tolerance for d in a)
    return same_count, kept, shift


def measure_hires(engine, prompts: int = 24, **hires) -> dict:
    from PIL import Image

    counts = kept = 0
    shifts, gain = [], []
    for i, scene in enumerate(W.eval_prompts(prompts, 1234)):
        first, fixed = hires_pair(engine, scene.caption, 1000 + i, **hires)
        same, ok, shift = composition_kept(first, fixed)
        counts += same
        kept += ok
        if shift is not None:
            shifts.append(shift)
        plain = np.asarray(Image.fromarray(first).resize(fixed.shape[1::-1], Image.LANCZOS))
        gain.append(sharpness(fixed) / max(sharpness(plain), 1e-6))
    return {"prompts": prompts, "count_kept": counts / prompts, "composition_kept": kept / prompts,
            "mean_shift": float(np.mean(shifts)) if shifts else float("nan"),
            "sharpness_vs_lanczos": float(np.mean(gain))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["vid2vid", "hires", "sweep-vid2vid", "sweep-hires"])
    parser.add_argument("--config", action="append", default=[], help="sweep: a request's fields as a Python dict")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--field", action="append", default=[], help="name=value for the request (value as Python)")
    args = parser.parse_args(argv)
    import ast

    fields = {}
    for item in args.field:
        name, value = item.split("=", 1)
        try:
            fields[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            fields[name] = value
    engine = build_engine()
    start = time.time()
    if args.what.startswith("sweep-"):
        for config in args.config:
            start = time.time()
            measure = measure_vid2vid if args.what == "sweep-vid2vid" else measure_hires
            print(config, measure(engine, args.clips if "vid" in args.what else args.prompts, **ast.literal_eval(config)),
                  f"{time.time() - start:.0f} s", flush=True)
    elif args.what == "vid2vid":
        print(fields, measure_vid2vid(engine, args.clips, **fields), f"{time.time() - start:.0f} s", flush=True)
    else:
        print(fields, measure_hires(engine, args.prompts, **fields), f"{time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
