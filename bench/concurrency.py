"""Concurrent API clients: N single-image /sdapi/v1/txt2img requests at once against one request.

Run: python bench/concurrency.py [--clients 4] [--runs 3] [--steps 20]
Starts Kiri's real server (the same serve() launch.py uses) on the default model, measures one
request alone, then N at once, and prints the ratio. Back to back would be N x; anything above
that is idle time or threads fighting over the cores. The target (engine redesign issue) is
at most 4.5x for 4 clients; before the job store it was 7.3x.

In the same run it measures one request of batch size N, and N concurrent single requests again
with cross-request batching on (Settings.batch_requests = N: generation/batching.py), each ratio
against the same one-request baseline (issue 30's target: at most 1.7x for 4 clients), and how far
the merged images are from the same seeds made alone (batched CPU math rounds differently).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-wait-ms", type=int, default=50, help="Settings.batch_wait_ms while batching is on")
    args = parser.parse_args()

    import requests

    from webui.bootstrap import build_engine
    from webui.engine.settings import Settings
    from webui.server import ServeOptions, serve

    with tempfile.TemporaryDirectory() as out:
        engine = build_engine(Settings(models_dir=args.models_dir, outputs_dir=Path(out)))
        engine.catalog.scan()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # Each client its own API login, so each is its own user (owner) for turns and batching.
        app, _ = serve(engine, ServeOptions(port=port, settings_file=Path(out) / "settings.json",
                                            api_login=lambda user, password: password == "bench"))
        url = f"http://127.0.0.1:{port}/sdapi/v1/txt2img"

        def one(seed: int, batch_size: int = 1) -> list:
            response = requests.post(url, timeout=600, auth=(f"client{seed}", "bench"), json={"prompt": "a red circle", "steps": args.steps, "seed": seed,
                                                              "width": 64, "height": 64, "batch_size": batch_size})
            response.raise_for_status()
            return response.json()["images"]

        def concurrent(seeds) -> tuple[float, list]:
            t = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                images = list(pool.map(one, seeds))
            return time.perf_counter() - t, images

        one(0)  # loads the model and warms up
        alone, alone_on, batched, together, merged = [], [], [], [], []
        alone_images, merged_images = {}, {}
        for run in range(args.runs):
            seeds = [100 * run + i for i in range(args.clients)]
            engine.settings.batch_requests, engine.settings.batch_wait_ms = 1, 0
            t = time.perf_counter(); one(run); alone.append(time.perf_counter() - t)
            t = time.perf_counter(); one(run, args.clients); batched.append(time.perf_counter() - t)
            took, images = concurrent(seeds)
            together.append(took)
            alone_images.update(zip(seeds, images))
            engine.settings.batch_requests, engine.settings.batch_wait_ms = args.clients, args.batch_wait_ms
            t = time.perf_counter(); one(run); alone_on.append(time.perf_counter() - t)
            took, images = concurrent(seeds)
            merged.append(took)
            merged_images.update(zip(seeds, images))
        app.close()
    alone_s = statistics.median(alone)
    diff = _differences(alone_images, merged_images)
    print(json.dumps({
        "clients": args.clients, "steps": args.steps, "runs": args.runs, "one_request_s": round(alone_s, 3),
        "one_request_batch_size_n_ratio": round(statistics.median(batched) / alone_s, 2),
        "concurrent_requests_s": round(statistics.median(together), 3),
        "ratio": round(statistics.median(together) / alone_s, 2),
        "batch_wait_ms": args.batch_wait_ms,
        "one_request_batching_on_ratio": round(statistics.median(alone_on) / alone_s, 2),
        "concurrent_requests_batching_on_s": round(statistics.median(merged), 3),
        "ratio_batching_on": round(statistics.median(merged) / alone_s, 2),
        "back_to_back_would_be": args.clients, **diff,
    }, indent=2))


def _differences(alone: dict, merged: dict) -> dict:
    """How the images made with batching on differ from the same seeds made one by one."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    def pixels(data: str):
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",")[-1]))).convert("RGB")).astype(int)

    identical, worst, differing, total = 0, 0, 0, 0
    for seed, data in alone.items():
        a, m = pixels(data[0]), pixels(merged[seed][0])
        identical += int(np.array_equal(a, m))
        worst = max(worst, int(np.abs(a - m).max()))
        differing += int((a != m).any(axis=-1).sum())
        total += a.shape[0] * a.shape[1]
    return {"merged_images_identical": f"{identical}/{len(alone)}", "merged_max_pixel_difference": worst,
            "merged_pixels_differing": round(differing / max(total, 1), 4)}


if __name__ == "__main__":
    main()
