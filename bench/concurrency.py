"""Concurrent API clients: N single-image /sdapi/v1/txt2img requests at once against one request.

Run: python bench/concurrency.py [--clients 4] [--runs 3] [--steps 20]
Starts Kiri's real server (the same serve() launch.py uses) on the default model, measures one
request alone, then N at once, and prints the ratio. Back to back would be N x; anything above
that is idle time or threads fighting over the cores. The target (engine redesign issue) is
at most 4.5x for 4 clients; before the job store it was 7.3x.
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
        app, _ = serve(engine, ServeOptions(port=port, settings_file=Path(out) / "settings.json"))
        url = f"http://127.0.0.1:{port}/sdapi/v1/txt2img"

        def one(seed: int) -> None:
            response = requests.post(url, timeout=600, json={"prompt": "a red circle", "steps": args.steps, "seed": seed,
                                                              "width": 64, "height": 64})
            response.raise_for_status()

        one(0)  # loads the model and warms up
        alone, together = [], []
        for run in range(args.runs):
            t = time.perf_counter(); one(run); alone.append(time.perf_counter() - t)
            t = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(one, range(args.clients)))
            together.append(time.perf_counter() - t)
        app.close()
    alone_s, together_s = statistics.median(alone), statistics.median(together)
    print(json.dumps({
        "clients": args.clients, "steps": args.steps, "one_request_s": round(alone_s, 3),
        "concurrent_requests_s": round(together_s, 3), "ratio": round(together_s / alone_s, 2),
        "back_to_back_would_be": args.clients,
    }, indent=2))


if __name__ == "__main__":
    main()
