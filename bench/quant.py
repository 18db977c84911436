"""Quantised checkpoints on Kiri's trained default models: denoiser bytes, seconds per image, PSNR against
the unquantised model with the same seeds, and how well the pictures follow their prompts (kiri_world's
detector: colour, shape and position of each object, as tools/eval_*.py score them).

Run: python bench/quant.py [--steps 20] [--prompts 8] [--size 64]
Writes, in a temporary models folder beside copies of the two default models: kiri-shapes-dit's
transformer as GGUF Q8_0 and Q4_0 (the gguf package: requirements-gguf.txt; paired with kiri-shapes-dit
as its base), and both models' denoisers in fp8 (e4m3fn, kept in fp8 by layerwise casting). Each runs
through Kiri's engine on the CPU, alternating with its unquantised model (each timed twice, the faster kept), on captions of scenes drawn from the
models' training world (tools/kiri_world.py, held-out combinations excluded).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models: the GGUF and fp8 writers the tests use
sys.path.insert(0, str(ROOT / "tools"))  # kiri_world: the scenes and the detector


def psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    import random

    import numpy as np

    import kiri_world
    import tiny_models
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.core.memory import component_bytes
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        checkpoints = root / "checkpoints"
        for name in ("kiri-shapes-dit", "kiri-shapes-ldm"):
            shutil.copytree(ROOT / "models" / "checkpoints" / name, checkpoints / name)
        dit = checkpoints / "kiri-shapes-dit"
        tiny_models.save_gguf_transformer(dit, checkpoints / "kiri-shapes-dit-Q8_0.gguf", "Q8_0")
        tiny_models.save_gguf_transformer(dit, checkpoints / "kiri-shapes-dit-Q4_0.gguf", "Q4_0")
        tiny_models.save_fp8_folder(checkpoints / "kiri-shapes-ldm", checkpoints / "kiri-shapes-ldm-fp8")
        fp8_dit = checkpoints / "kiri-shapes-dit-fp8"  # the transformer's weights, as save_fp8_folder does the UNet's
        shutil.copytree(dit, fp8_dit)
        _fp8_weights(fp8_dit / "transformer")

        engine = build_engine(Settings(models_dir=root, outputs_dir=Path(tmp) / "out", save_images=False),
                              DeviceChoice("cpu"))
        engine.catalog.scan()
        pairs = [("kiri-shapes-dit", "kiri-shapes-dit-Q8_0"), ("kiri-shapes-dit", "kiri-shapes-dit-Q4_0"),
                 ("kiri-shapes-dit", "kiri-shapes-dit-fp8"), ("kiri-shapes-ldm", "kiri-shapes-ldm-fp8")]

        rng = random.Random(7)
        scenes = [kiri_world.sample_scene(rng) for _ in range(args.prompts)]
        prompts = [kiri_world.caption(scene) for scene in scenes]

        def adherence(images) -> float:
            scores = [kiri_world.score(np.asarray(im.convert("RGB")), scene) for im, scene in zip(images, scenes)]
            return float(np.mean([(s["colour"] + s["shape"] + s["position"]) / 3 for s in scores]))

        def run(model: str, prompts: list[str]):
            engine.txt2img(Txt2ImgRequest(prompt=prompts[0], model=model, steps=2, width=args.size, height=args.size,
                                          seed=0))  # loaded and warm
            sizes = component_bytes(engine.models.current.pipeline)
            denoiser = sizes.get("transformer") or sizes["unet"]
            images, started = [], time.perf_counter()
            for seed, prompt in enumerate(prompts):
                result = engine.txt2img(Txt2ImgRequest(prompt=prompt, model=model, steps=args.steps, width=args.size,
                                                       height=args.size, seed=seed + 1))
                images.append(result.images[0])
            return denoiser, (time.perf_counter() - started) / len(prompts), images

        print(f"CPU, {args.size} px, {args.steps} steps, {args.prompts} prompts each")
        print(f"{'model':22} {'quant':5} {'denoiser':>9} {'ratio':>6} {'s/image':>8} {'vs base':>8} {'PSNR dB':>8} "
              f"{'adherence':>9}")
        for base, quantised in pairs:
            base_bytes, base_time, base_images = run(base, prompts)
            q_bytes, q_time, q_images = run(quantised, prompts)
            # the machine may be shared: each timed twice, alternating, and the faster run kept
            base_time = min(base_time, run(base, prompts)[1])
            q_time = min(q_time, run(quantised, prompts)[1])
            quality = float(np.median([psnr(a, b) for a, b in zip(base_images, q_images)]))
            label = engine.catalog.find(quantised).quantization
            print(f"{base:22} {'-':5} {base_bytes / 1e6:8.2f}M {1:6.2f} {base_time:8.3f} {'':8} {'':8} "
                  f"{adherence(base_images):9.2f}")
            print(f"{quantised:22} {label:5} {q_bytes / 1e6:8.2f}M {q_bytes / base_bytes:6.2f} {q_time:8.3f} "
                  f"{q_time / base_time:7.2f}x {quality:8.1f} {adherence(q_images):9.2f}")
        print("PSNR: median over the prompts against the unquantised model's picture with the same seed; adherence:"
              " the mean of colour, shape and position matched by kiri_world's detector")


def _fp8_weights(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    for weights in folder.glob("*.safetensors"):
        state = load_file(str(weights))
        save_file({k: (v.to(torch.float8_e4m3fn) if v.is_floating_point() and v.ndim >= 2 else v)
                   for k, v in state.items()}, str(weights))


if __name__ == "__main__":
    main()
