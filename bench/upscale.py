"""Super-resolution benchmark: Kiri's tiled path against the network called directly, and the peak
memory of a large run with small tiles.

Run: python bench/upscale.py [--model models/upscalers/kiri-compact-x4.safetensors] [--size 256] [--tile 128]
     [--large 768] [--runs 3]
Without --model (and without Kiri's embedded x4 model) a Real-ESRGAN compact net of the embedded
model's shape (32 features, 10 convs, x4) with random weights is used: the speed does not depend
on the weights.

1. Speed: seconds per output megapixel of `upscale_images` (tiles of --tile, feathered, a turn of
   the job each, the picture saved nowhere) against `model(x)` on the whole --size picture at once.
   The ratio is what tiling and the job add.
2. Memory: each run of a --large picture in a fresh process, its peak resident memory (CPU, sampled;
   peak CUDA allocation on a GPU) above what the process held after loading the model: tiled with
   --tile, tiled with 2 x --tile, and untiled. Tiled, the activations are bounded by the tile;
   what grows with the picture is the input and output buffers only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_MODEL = ROOT / "models" / "upscalers" / "kiri-compact-x4.safetensors"


def make_model(folder: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    from webui.engine.upscale._models import SRVGGNetCompact

    torch.manual_seed(0)
    model = SRVGGNetCompact(3, 3, 32, 10, 4)
    path = folder / "upscalers" / "bench-compact-x4.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def picture(size: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, size)[None, :, None] * np.ones((size, 1, 3))
    return Image.fromarray(np.clip(x * 0.7 + rng.integers(0, 70, (size, size, 3)), 0, 255).astype(np.uint8))


def engine_for(models_dir: Path, out: Path):
    from webui.bootstrap import build_engine
    from webui.engine.settings import Settings

    engine = build_engine(Settings(models_dir=models_dir, outputs_dir=out, save_images=False))
    engine.catalog.scan()
    return engine


class PeakMemory:
    """Peak memory of a block above what the process held when it began: CUDA's peak allocation on
    a GPU; on the CPU the resident set, sampled every 2 ms by a thread (ru_maxrss keeps the peak of
    the model load, which a small run never passes)."""

    def __init__(self, device: str):
        self.device, self.peak, self.start = device, 0, 0

    def __enter__(self):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        import threading

        import psutil

        process = psutil.Process()
        self.start = self.peak = process.memory_info().rss
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.002):
                self.peak = max(self.peak, process.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
        return False

    @property
    def mb(self) -> float:
        return round((self.peak - self.start) / 2**20, 1)


def child(args) -> None:
    """One large run in this (fresh) process; prints its peak memory above the loaded model's."""
    from webui.engine.upscale import UpscaleRequest, upscale_images, upscale_tensor_untiled

    with tempfile.TemporaryDirectory() as out:
        engine = engine_for(args.models_dir, Path(out))
        loaded = engine.models.get_of_kind("upscaler", args.name).model
        image = picture(args.large)
        upscale_tensor_untiled(loaded, picture(32))  # the first call's one-off allocations, outside the measure
        started = time.perf_counter()
        with PeakMemory(loaded.device) as memory:
            if args.child == "untiled":
                upscale_tensor_untiled(loaded, image)
            else:
                upscale_images(engine, UpscaleRequest([image], args.name, scale=loaded.scale, tile_size=int(args.child),
                                                      tile_overlap=16, save_images=False))
        seconds = time.perf_counter() - started
        print(json.dumps({"peak_mb": memory.mb, "s": round(seconds, 2)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None, help="an upscaler file (default: Kiri's x4, else a random one)")
    parser.add_argument("--size", type=int, default=256, help="input side for the speed runs")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--large", type=int, default=768, help="input side for the memory runs")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--models-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--name", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    import torch

    from webui.engine.upscale import UpscaleRequest, upscale_images, upscale_tensor_untiled

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = args.model or (DEFAULT_MODEL if DEFAULT_MODEL.exists() else None)
        if source is None:
            path = make_model(tmp)
        else:
            path = tmp / "upscalers" / source.name
            path.parent.mkdir(parents=True)
            path.symlink_to(source.resolve())
        name = path.stem
        engine = engine_for(tmp, tmp / "out")
        loaded = engine.models.get_of_kind("upscaler", name).model
        image = picture(args.size)
        request = UpscaleRequest([image], name, scale=loaded.scale, tile_size=args.tile, tile_overlap=16, save_images=False)
        upscale_images(engine, request)  # warm-up
        upscale_tensor_untiled(loaded, image)
        kiri_times, bare_times = [], []
        for _ in range(args.runs):
            t = time.perf_counter(); upscale_tensor_untiled(loaded, image); bare_times.append(time.perf_counter() - t)
            t = time.perf_counter(); upscale_images(engine, request); kiri_times.append(time.perf_counter() - t)
        megapixels = (args.size * loaded.scale) ** 2 / 1e6

        memory = {}
        for mode in (str(args.tile), str(args.tile * 2), "untiled"):
            run = subprocess.run([sys.executable, __file__, "--child", mode, "--models-dir", str(tmp), "--name", name,
                                  "--large", str(args.large)], capture_output=True, text=True, check=True)
            memory[f"tile {mode}" if mode != "untiled" else "untiled"] = json.loads(run.stdout.strip().splitlines()[-1])
    output_mb = (args.large * loaded.scale) ** 2 * 3 * 4 / 2**20
    result = {
        "model": name, "architecture": loaded.architecture, "device": loaded.device, "torch_threads": torch.get_num_threads(),
        "speed_input": f"{args.size}x{args.size}", "tile": args.tile,
        "direct_s_per_mp": round(statistics.median(bare_times) / megapixels, 3),
        "kiri_tiled_s_per_mp": round(statistics.median(kiri_times) / megapixels, 3),
        "ratio_kiri_to_direct": round(statistics.median(kiri_times) / statistics.median(bare_times), 2),
        "memory_input": f"{args.large}x{args.large} -> {args.large * loaded.scale}x{args.large * loaded.scale}",
        "output_buffer_mb": round(output_mb, 1),
        "peak_memory_above_model_mb": memory,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
