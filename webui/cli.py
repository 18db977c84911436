"""Command-line flags, parsed only when launch.py runs (never at import time)."""

from __future__ import annotations

import argparse
from pathlib import Path

from webui.engine.core.devices import DEVICE_CHOICES
from webui.engine.core.fastpath import ATTENTION_CHOICES
from webui.engine.core.memory import MEMORY_MODE_CHOICES

ROOT = Path(__file__).resolve().parent.parent


def parse_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("--auth takes user:password")
    return user, password


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="launch.py", description="Kiri: a web UI for diffusion image models")
    p.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    p.add_argument("--listen", action="store_true", help="serve on all network interfaces, not only 127.0.0.1")
    p.add_argument("--share", action="store_true", help="also make a public Gradio share link")
    p.add_argument("--auth", type=parse_auth, action="append", default=[], metavar="USER:PASS",
                   help="require this login in the browser; repeat for several users")
    p.add_argument("--auth-file", type=Path, help="file of user:hash lines (make them with `python -m webui.auth USER`)")
    p.add_argument("--max-upload-mb", type=int, default=50, help="largest upload or API request body (default 50 MB)")
    p.add_argument("--api-auth", type=parse_auth, action="append", default=[], metavar="USER:PASS",
                   help="HTTP Basic login for the /sdapi/v1 API (default: the --auth logins)")
    p.add_argument("--admin", action="append", default=[], metavar="USER",
                   help="a login whose Interrupt/Skip from the API stop every user's running job (others stop only their own)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where models run (default: auto)")
    p.add_argument("--memory-mode", choices=MEMORY_MODE_CHOICES, default="auto",
                   help="how jobs save GPU memory: auto (default) picks per job from an estimate of its peak; "
                        "none, vae-tiling, model-offload, sequential-offload or batch-split forces one")
    p.add_argument("--memory-limit-mb", type=int, default=0, metavar="MB",
                   help="count at most this much device memory as free when planning (a shared GPU); 0: all of it")
    p.add_argument("--no-fast-path", action="store_true",
                   help="on CUDA, keep diffusers' defaults: no TF32, attention backend or channels_last (see docs/performance.md)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the denoiser's repeated blocks on CUDA: faster steps after a first image that waits for the compile")
    p.add_argument("--fp8-weights", action="store_true",
                   help="on CUDA, store the denoiser's weights in fp8 (layerwise casting): about half the VRAM, slightly different pictures")
    p.add_argument("--attention", choices=ATTENTION_CHOICES, default="auto",
                   help="attention backend for denoisers that use diffusers' dispatcher (Flux): auto (default) picks "
                        "FlashAttention 3/2 when installed, else PyTorch SDPA")
    p.add_argument("--models-dir", type=Path, default=ROOT / "models", help="folder holding checkpoints/ (default: models)")
    p.add_argument("--outputs-dir", type=Path, default=ROOT / "outputs", help="where images are saved (default: outputs)")
    p.add_argument("--library-dir", type=Path, action="append", default=[], metavar="DIR",
                   help="a folder of pictures (another tool's outputs) the Library indexes read-only; repeatable")
    p.add_argument("--settings-file", type=Path, default=ROOT / "settings.json", help="where the Settings tab saves")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow .ckpt/.pt checkpoints, read with torch.load(weights_only=True)")
    p.add_argument("--extensions-dir", type=Path, default=ROOT / "extensions", help="where extensions live")
    p.add_argument("--enable-insecure-extension-access", action="store_true",
                   help="allow installing extensions from the UI even when listening or sharing")
    p.add_argument("--no-preload", action="store_true", help="load the model on first use, not in the background at start")
    ray = p.add_argument_group("scale out on Ray Serve (pip install -r requirements-ray.txt; docs/scale-out.md)")
    ray.add_argument("--ray", action="store_true", help="run jobs on Ray Serve replicas of the engine (a local Ray cluster)")
    ray.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (host:6379 or auto); implies --ray")
    ray.add_argument("--replicas", type=int, default=1, metavar="N", help="engine replicas (one per GPU; default 1)")
    ray.add_argument("--max-replicas", type=int, default=None, metavar="M",
                     help="autoscale between --replicas and M replicas from the jobs waiting (Serve's autoscaling)")
    ray.add_argument("--replica-gpus", type=float, default=None, metavar="G",
                     help="GPUs per replica (default: 1 when --device is cuda or auto and Ray sees a GPU, else 0)")
    ray.add_argument("--replica-cpus", type=float, default=1, metavar="C", help="CPUs per replica (default 1)")
    ray.add_argument("--replica-threads", type=int, default=0, metavar="T",
                     help="torch threads per replica (default: torch's own choice)")
    return p
