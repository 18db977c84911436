"""Memory after model switches: does switching checkpoints give RAM and VRAM back?

Run: python bench/model_switch.py [--switches 20] [--memory-mode auto] [--size 64] [--steps 4]
Switches back and forth between the two default models (kiri-shapes-ldm with the kiri-outline LoRA and
the kiri-outline ControlNet loaded and used, kiri-shapes-dit plain), making one picture on each, and
prints the process RSS after each switch; on CUDA also torch.cuda.memory_allocated, the reserved cache
and the pinned host memory torch holds (offload modes pin it). The model cache keeps one checkpoint
(the default), so every switch drops the other. Flat numbers after the first round = nothing leaks.
--memory-mode model-offload (or sequential-offload) puts every job in that mode (on CUDA).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LDM, DIT = "kiri-shapes-ldm", "kiri-shapes-dit"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, where /proc is missing


def cuda_mb() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    torch.cuda.synchronize()
    out = {"allocated_mb": torch.cuda.memory_allocated() / 2**20, "reserved_mb": torch.cuda.memory_reserved() / 2**20}
    host = getattr(torch.cuda.memory, "host_memory_stats", None)
    if host is not None:
        try:
            stats = host()
            out["pinned_mb"] = stats.get("allocated_bytes.current", stats.get("allocated_bytes", 0)) / 2**20
            out["pinned_reserved_mb"] = stats.get("reserved_bytes.current", stats.get("reserved_bytes", 0)) / 2**20
        except RuntimeError:
            pass
    return out


def outline():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), outline="white", width=2)
    return image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--memory-mode", default="auto")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from webui.bootstrap import build_engine
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.settings import Settings

    rows = []
    with tempfile.TemporaryDirectory() as out:
        engine = build_engine(Settings(models_dir=args.models_dir, outputs_dir=Path(out), save_images=False,
                                       memory_mode=args.memory_mode))
        addons = {LDM: {"lora": [{"name": "kiri-outline", "weight": 0.8}],
                        "controlnet": [{"image": outline(), "model": "kiri-outline-controlnet", "weight": 1.0}]},
                  DIT: {}}
        print(f"{args.switches} switches, {args.steps} steps at {args.size}x{args.size}, memory mode {args.memory_mode}; "
              f"{LDM} with LoRA + ControlNet, {DIT} plain")
        print(f"{'switch':>6} {'model':16} {'s':>6} {'RSS MB':>8}  CUDA")
        start_rss = rss_mb()
        for i in range(args.switches + 1):  # switch 0 loads the first model
            name = (LDM, DIT)[i % 2]
            started = time.perf_counter()
            engine.load_model(name)
            request = Txt2ImgRequest("a red circle", steps=args.steps, width=args.size, height=args.size, seed=i, model=name,
                                     save_images=False, addons=addons[name])
            engine.txt2img(request)
            gc.collect()
            row = {"switch": i, "model": name, "s": round(time.perf_counter() - started, 2), "rss_mb": round(rss_mb(), 1),
                   **{k: round(v, 1) for k, v in cuda_mb().items()}}
            rows.append(row)
            cuda = " ".join(f"{k}={v}" for k, v in row.items() if k.endswith("_mb") and k != "rss_mb")
            print(f"{i:6} {name:16} {row['s']:6.2f} {row['rss_mb']:8.1f}  {cuda}")
            sys.stdout.flush()
    same = [r for r in rows if r["model"] == rows[-1]["model"]]
    print(f"RSS: {start_rss:.0f} MB at start, {same[0]['rss_mb']:.0f} MB after the first {same[0]['model']} image, "
          f"{same[-1]['rss_mb']:.0f} MB after the last ({same[-1]['rss_mb'] - same[0]['rss_mb']:+.0f} MB over {len(same) - 1} "
          f"more loads of it)")
    if "allocated_mb" in rows[-1]:
        print(f"CUDA allocated: {same[0]['allocated_mb']:.0f} -> {same[-1]['allocated_mb']:.0f} MB; "
              f"pinned: {same[0].get('pinned_mb', 0):.0f} -> {same[-1].get('pinned_mb', 0):.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
