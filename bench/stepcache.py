"""Step cache benchmark: seconds per image uncached and cached, the speed-up, and the PSNR of each
cached picture against the uncached one with the same seed, per method, on both default models.

Run: python bench/stepcache.py [--steps 20] [--size 64] [--prompts 4]
The baseline is measured in the same run, through the same engine, right before each cached run (so a
busy machine slows both alike); PSNR is against its images. A method a model cannot take is printed with
the engine's reason.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ("kiri-shapes-ldm", "kiri-shapes-dit")
# Each method at diffusers' defaults, and a milder setting that keeps more of the picture.
SETTINGS = ("first_block_cache 0.05", "first_block_cache 0.2", "taylorseer 5", "taylorseer 2",
            "pyramid_attention_broadcast 2", "pyramid_attention_broadcast 3")


def psnr(a, b) -> float:
    import numpy as np

    err = float(((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2).mean())
    return math.inf if err == 0 else 10 * math.log10(255**2 / err)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=4)
    args = parser.parse_args()

    from webui.bootstrap import build_engine
    from webui.engine.core.errors import InvalidRequest
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.settings import Settings

    with tempfile.TemporaryDirectory() as out:
        engine = build_engine(Settings(models_dir=args.models_dir, outputs_dir=Path(out), save_images=False))
        print(f"{args.prompts} prompts x {args.steps} steps at {args.size}x{args.size}, seeds 1..{args.prompts}")
        print(f"{'model':16} {'step cache':32} {'uncached':>8} {'cached':>8} {'speed-up':>8} {'PSNR dB':>8}")
        for name in MODELS:
            model = engine.load_model(name)
            prompts = (model.entry.example_prompts() or ["a red circle"]) * args.prompts

            def images(step_cache: str | None):
                made, started = [], time.perf_counter()
                for i, prompt in enumerate(prompts[: args.prompts]):
                    request = Txt2ImgRequest(prompt, steps=args.steps, width=args.size, height=args.size, seed=i + 1,
                                             model=name, addons={"step_cache": step_cache} if step_cache else {})
                    made.append(engine.txt2img(request).images[0])
                return made, (time.perf_counter() - started) / args.prompts

            images(None)  # warm-up
            for setting in SETTINGS:
                base, base_s = images(None)
                try:
                    cached, cached_s = images(setting)
                except InvalidRequest as exc:
                    print(f"{name:16} {setting:32} not available: {exc}")
                    continue
                mean_psnr = sum(psnr(a, b) for a, b in zip(base, cached)) / len(base)
                print(f"{name:16} {setting:32} {base_s:8.3f} {cached_s:8.3f} {base_s / cached_s:8.2f} {mean_psnr:8.1f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
