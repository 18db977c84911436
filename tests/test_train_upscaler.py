"""tools/train_upscaler.py: its pieces, and that what it saves is a file Kiri's reader loads."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import train_upscaler as T  # noqa: E402


def test_degradation_and_metrics():
    rng = np.random.default_rng(0)
    hr = T.drawn_pattern(rng, 64)
    assert hr.shape == (64, 64, 3) and hr.dtype == np.uint8
    assert T.degrade(hr, rng, 0.0).shape == (16, 16, 3)
    assert T.psnr(hr, hr) == 99.0 and abs(T.ssim(hr, hr) - 1) < 1e-9
    noisy = np.clip(hr + rng.normal(0, 10, hr.shape), 0, 255).astype(np.uint8)
    assert 20 < T.psnr(noisy, hr) < 40 and T.ssim(noisy, hr) < 1


def test_held_out_photographs_are_whole_families():
    photos = [Path(n) for n in ("cheetah.jpg", "cheetah1.jpg", "cheetah2.jpg", "groot.jpeg", "tower.jpg")]
    held = T.held_out(photos)
    assert held and len(held) < len(photos)
    kept = [p for p in photos if p not in held]
    family = lambda p: p.stem.rstrip("0123456789")  # noqa: E731
    assert not {family(p) for p in kept} & {family(p) for p in held}, held


def test_the_saved_model_loads_as_kiris_compact_x4(tmp_path):
    import torch

    from webui.engine.upscale._models import BUILTIN_ARCHITECTURES, SRVGGNetCompact, load_upscaler

    model = SRVGGNetCompact(3, 3, 48, 10, 4)
    path = tmp_path / "kiri-compact-x4.safetensors"
    T.save_model(model, path)
    assert path.stat().st_size < 5 * 2**20
    loaded = load_upscaler(path)
    assert loaded.scale == 4 and loaded.architecture in (BUILTIN_ARCHITECTURES[0], "RealESRGAN Compact")
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x).clamp(0, 1), atol=1e-5)
