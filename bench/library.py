"""The Library at scale (issue 29): a folder of small PNGs with varied A1111 infotext (plus ComfyUI and
InvokeAI pictures in a --library-dir), then: first full index, an unchanged rescan (full and quick),
search latency (median and p95 over 100 queries with filters), the first page of thumbnails from a
cold cache, and the process's peak RSS.

Run: python bench/library.py [--files 25000] [--foreign 1000] [--keep DIR]
Targets on 2 cores: search p95 under 50 ms, an unchanged rescan under 5 s, the tab's first page under 1 s.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = ("red blue green violet golden silver fox whale castle forest river mountain city robot girl boy cat dog "
         "dragon ship lighthouse garden snow rain night sunset portrait landscape painting photo detailed cinematic "
         "watercolor anime oil sketch neon misty ancient futuristic tiny giant").split()
MODELS = ("dreamshaper_8", "realisticVision", "sdxl_base", "juggernautXL", "anything-v5", "tiny-sd")
SAMPLERS = ("Euler a", "Euler", "DPM++ 2M", "DPM++ SDE", "DDIM", "UniPC")
LORAS = ("detail", "ocean", "pixelart", "lineart", "film")
SIZES = ((512, 512), (512, 768), (768, 512), (1024, 1024))


def make_folder(out: Path, other: Path, files: int, foreign: int, seed: int = 0) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from webui.engine.core.infotext import build_infotext

    rng = random.Random(seed)
    base = Image.new("RGB", (32, 32), (120, 80, 200))
    stamp = time.time() - files * 60
    for n in range(files):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        lora = rng.choice(LORAS) if rng.random() < 0.3 else None
        if lora:
            prompt += f" <lora:{lora}:0.7>"
        w, h = rng.choice(SIZES)
        info = PngInfo()
        info.add_text("parameters", build_infotext(prompt, "lowres, " + rng.choice(WORDS), {
            "Steps": rng.randint(10, 40), "Sampler": rng.choice(SAMPLERS), "CFG scale": 7, "Seed": rng.randint(0, 2**32),
            "Size": f"{w}x{h}", "Model": rng.choice(MODELS)}))
        tab = "txt2img" if rng.random() < 0.8 else "img2img"
        folder = out / tab / time.strftime("%Y-%m-%d", time.localtime(stamp + n * 60))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{n:05d}-{n}.png"
        base.save(path, pnginfo=info, compress_level=1)
    other.mkdir(parents=True, exist_ok=True)
    for n in range(foreign):
        words = " ".join(rng.choice(WORDS) for _ in range(6))
        comfy = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": rng.choice(MODELS) + ".safetensors"}},
                 "6": {"class_type": "CLIPTextEncode", "inputs": {"text": words}},
                 "3": {"class_type": "KSampler", "inputs": {"seed": n, "steps": 20, "cfg": 7, "sampler_name": "euler",
                                                            "positive": ["6", 0]}}}
        info = PngInfo()
        info.add_text("prompt", json.dumps(comfy))
        base.save(other / f"comfy-{n:05d}.png", pnginfo=info, compress_level=1)
        invoke = {"positive_prompt": words, "negative_prompt": "", "model": {"name": rng.choice(MODELS)}, "seed": n,
                  "steps": 20, "cfg_scale": 7, "scheduler": "euler", "width": 32, "height": 32}
        info = PngInfo()
        info.add_text("invokeai_metadata", json.dumps(invoke))
        base.save(other / f"invoke-{n:05d}.png", pnginfo=info, compress_level=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=25_000)
    parser.add_argument("--foreign", type=int, default=1_000, help="pictures of each foreign format (ComfyUI, InvokeAI)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--keep", type=Path, help="make the folders here and keep them (default: a temp folder)")
    args = parser.parse_args()

    from webui.engine.core.owners import Viewer
    from webui.engine.library import Library

    work = args.keep or Path(tempfile.mkdtemp(prefix="kiri-library-bench-"))
    out, other = work / "outputs", work / "other"
    started = time.perf_counter()
    if not out.exists():
        make_folder(out, other, args.files, args.foreign)
    print(f"folder: {args.files:,} Kiri PNGs + {2 * args.foreign:,} foreign, made in {time.perf_counter() - started:.1f} s")

    lib = Library([out, other], rescan_after=0)
    started = time.perf_counter()
    report = lib.refresh(force=True)
    print(f"first full index:        {time.perf_counter() - started:7.2f} s  ({report.read:,} read, {len(report.skipped)} skipped)")
    started = time.perf_counter()
    report = lib.refresh(force=True)
    print(f"unchanged rescan (full): {time.perf_counter() - started:7.2f} s  ({report.read} read)")
    started = time.perf_counter()
    report = lib.refresh()
    print(f"unchanged rescan (quick):{time.perf_counter() - started:7.2f} s  ({report.read} read)")

    rng, viewer, times = random.Random(1), Viewer("local"), []
    for n in range(args.queries):
        filters = {}
        if n % 2:
            filters["model"] = rng.choice(MODELS)
        if n % 3 == 0:
            filters["sampler"] = rng.choice(SAMPLERS)
        if n % 5 == 0:
            filters["lora"] = rng.choice(LORAS)
        if n % 7 == 0:
            filters["size"] = "%dx%d" % rng.choice(SIZES)
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 2)))
        if n % 11 == 0:
            q = f'"{q}"' if q else q
        begun = time.perf_counter()
        page = lib.search(viewer, q=q, limit=60, refresh=False, **filters)
        if page["next"] and n % 4 == 0:
            lib.search(viewer, q=q, limit=60, cursor=page["next"], refresh=False, **filters)
        times.append((time.perf_counter() - begun) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
    print(f"search: median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms over {len(times)} queries with filters")

    started = time.perf_counter()
    page = lib.search(viewer, limit=48)  # the tab's first page: a quick rescan, the query, 48 thumbnails made
    drawn = [thumb for thumb, _ in lib.page_thumbnails(page) if thumb is not None]
    print(f"first page, cold thumbnail cache: {(time.perf_counter() - started) * 1000:.0f} ms ({len(drawn)} thumbnails)")
    started = time.perf_counter()
    page = lib.search(viewer, limit=48)
    drawn = [thumb for thumb, _ in lib.page_thumbnails(page) if thumb is not None]
    print(f"first page, warm:                 {(time.perf_counter() - started) * 1000:.0f} ms")
    # "Most like this": every picture's look taken (the background pass after the start scan), then searches
    from webui.engine.library import _looks

    started = time.perf_counter()
    taken = _looks.fill_missing(lib)
    print(f"looks of every picture (background pass): {time.perf_counter() - started:7.1f} s ({taken:,} taken)")
    times = []
    for item in lib.search(viewer, limit=20, refresh=False)["items"]:
        begun = time.perf_counter()
        lib.search(viewer, similar_to=item["id"], limit=48, refresh=False)
        times.append((time.perf_counter() - begun) * 1000)
    print(f"most like this: median {statistics.median(times):.0f} ms, max {max(times):.0f} ms over {len(times)} pictures")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {rss:.0f} MB; index {sum(p.stat().st_size for p in (out / '.library').glob('index*')) / 2**20:.1f} MB")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
