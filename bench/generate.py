"""Generation benchmark: seconds per image through Kiri's engine against the bare diffusers pipeline.

Run: python bench/generate.py [--model kiri-shapes-ldm] [--steps 20] [--size 64] [--runs 5]
The baseline calls the same loaded pipeline directly with the same scheduler, steps and size,
so the ratio is what Kiri adds (seeding, sampler building, progress, infotext, saving).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default=None, help="catalog name (default: Kiri's default model)")
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=None, help="image side (default: the model's native size)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import torch

    from webui.bootstrap import build_engine
    from webui.engine.settings import Settings
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.samplers.registry import default_sampler

    with tempfile.TemporaryDirectory() as out:
        engine = build_engine(Settings(models_dir=args.models_dir, outputs_dir=Path(out)))
        started = time.perf_counter()
        model = engine.load_model(args.model)
        load_s = time.perf_counter() - started
        size = args.size or model.entry.native_size
        sampler = engine.samplers.get(args.sampler or default_sampler(model.prediction))
        request = Txt2ImgRequest("a small red circle on the left, blue background", sampler_name=sampler.name,
                                 steps=args.steps, width=size, height=size, seed=1, model=model.name)
        engine.txt2img(request)  # warm-up

        def bare() -> None:
            pipe = model.pipeline
            pipe.scheduler = sampler.build(model.base_scheduler_config, "Automatic", model.prediction)
            with torch.inference_mode():
                pipe(request.prompt, num_inference_steps=args.steps, height=size, width=size,
                     generator=torch.Generator().manual_seed(1))

        bare()
        kiri_times, bare_times = [], []
        for _ in range(args.runs):
            t = time.perf_counter(); bare(); bare_times.append(time.perf_counter() - t)
            t = time.perf_counter(); engine.txt2img(request); kiri_times.append(time.perf_counter() - t)
    result = {
        "model": model.name, "device": model.device, "sampler": sampler.name, "steps": args.steps, "size": size,
        "torch_threads": torch.get_num_threads(), "load_s": round(load_s, 2),
        "bare_pipeline_s_per_image": round(statistics.median(bare_times), 3),
        "kiri_s_per_image": round(statistics.median(kiri_times), 3),
        "ratio_kiri_to_bare": round(statistics.median(kiri_times) / statistics.median(bare_times), 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
