"""Start-up benchmark: seconds from `python launch.py` to a served page, against a bare Gradio app.

Run: python bench/startup.py [--runs 3] [--models-dir models]
Prints the median time to the first served page for Kiri and for a minimal gr.Blocks app
started the same way (the baseline: what importing and serving Gradio alone costs), their
ratio, and the time until Kiri's background model load lets a first image be made.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE_APP = """
import gradio as gr, sys
with gr.Blocks() as demo:
    gr.Textbox(label="Prompt")
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), quiet=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_page(cmd: list[str], port: int, timeout: float = 180) -> tuple[float, subprocess.Popen]:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    while time.perf_counter() - started < timeout:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return time.perf_counter() - started, proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"no page after {timeout} s: {' '.join(cmd)}")


def time_to_first_image(port: int, started: float) -> float | None:
    """Ask for one image over the Gradio API; None if no model is installed."""
    from gradio_client import Client

    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    try:
        client.predict(prompt="a red circle", negative_prompt="", sampler_name="DPM++ 2M", scheduler="Automatic", steps=20, cfg_scale=7,
                       seed=1, width=64, height=64, batch_size=1, batch_count=1, api_name="/txt2img")
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        print(f"  (no first image: {str(exc)[:120]})")
        return None
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    args = parser.parse_args()

    kiri, baseline, first_image = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            port = free_port()
            seconds, proc = time_to_page([sys.executable, "-c", BASELINE_APP, str(port)], port)
            proc.terminate(); proc.wait()
            baseline.append(seconds)

            port = free_port()
            cmd = [sys.executable, str(ROOT / "launch.py"), "--port", str(port), "--models-dir", str(args.models_dir),
                   "--outputs-dir", f"{tmp}/outputs", "--settings-file", f"{tmp}/settings.json"]
            started = time.perf_counter()
            seconds, proc = time_to_page(cmd, port)
            kiri.append(seconds)
            image_at = time_to_first_image(port, started)
            if image_at is not None:
                first_image.append(image_at)
            proc.terminate(); proc.wait()
            print(f"run {run + 1}: bare Gradio {baseline[-1]:.2f} s, Kiri page {kiri[-1]:.2f} s"
                  + (f", first image {image_at:.2f} s" if image_at else ""))

    result = {
        "baseline_gradio_page_s": round(statistics.median(baseline), 2),
        "kiri_page_s": round(statistics.median(kiri), 2),
        "ratio_kiri_to_bare_gradio": round(statistics.median(kiri) / statistics.median(baseline), 2),
        "kiri_first_image_s": round(statistics.median(first_image), 2) if first_image else None,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
