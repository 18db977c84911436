"""Every tiny family on a CUDA GPU in fp16 and bf16: finite, non-flat pictures.

Marked `gpu` and deselected by default (pyproject addopts); run on a machine with a GPU:
    python -m pytest -m gpu tests/test_gpu.py
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

FAMILY_MODELS = ["tiny-sdxl", "tiny-sdxl-single", "tiny-sd2", "tiny-sd2-single", "tiny-pixart", "tiny-flux", "tiny-sd", "tiny-sd3"]
DTYPES = ["float16", "bfloat16"]


@pytest.fixture(scope="module")
def gpu_models_dir(family_models_dir, models_dir):
    """The family models plus the SD 1.x and SD3 ones, in one folder."""
    import os

    for name in ("tiny-sd", "tiny-sd3"):
        link = family_models_dir / "checkpoints" / name
        if not link.exists():
            os.symlink(models_dir / "checkpoints" / name, link)
    return family_models_dir


@pytest.fixture(scope="module")
def cuda():
    import torch

    assert torch.cuda.is_available(), "the gpu tests need a CUDA GPU"
    return torch.cuda.get_device_name(0)


def _engine(root, tmp_path, dtype: str):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice, DtypePlan
    from webui.engine.settings import Settings

    class Forced(DeviceChoice):
        """The card's device with one dtype for every family, so fp16 and bf16 both run everywhere."""

        def plan_for(self, family, vae_fp16_fix=False):
            from webui.engine.core.devices import dtype_policy

            policy = dtype_policy(family, "cuda", self.bf16_supported(), vae_fp16_fix)
            return DtypePlan(dtype, dtype, dtype, vae_upcast=policy.vae_upcast and dtype == "float16")

    engine = build_engine(Settings(models_dir=root, outputs_dir=tmp_path / "out"), Forced("cuda"))
    engine.catalog.scan()
    return engine


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_family_on_cuda(cuda, gpu_models_dir, tmp_path, name, dtype):
    import torch
    from PIL import Image

    from webui.engine.generation.img2img import Img2ImgRequest
    from webui.engine.generation.requests import Txt2ImgRequest

    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.fail(f"{cuda} has no bf16")
    engine = _engine(gpu_models_dir, tmp_path, dtype)
    model = engine.models.get(name)
    denoiser = getattr(model.pipeline, "unet", None) or model.pipeline.transformer
    assert denoiser.device.type == "cuda" and denoiser.dtype == getattr(torch, dtype)
    sampler = "Flow Euler" if model.prediction == "flow" else "Euler"
    request = dict(prompt="a red circle", steps=3, width=64, height=64, seed=3, model=name, sampler_name=sampler,
                   save_images=False)
    first = engine.txt2img(Txt2ImgRequest(**request)).images[0]
    again = engine.txt2img(Txt2ImgRequest(**request)).images[0]
    images = [first]
    if model.family != "pixart":
        picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (16, 16, 48, 48))
        images.append(engine.img2img(Img2ImgRequest(init_image=picture, mask=mask, denoising_strength=0.75, **request)).images[0])
    for image in images:
        array = np.asarray(image.convert("RGB")).astype(np.float64)
        assert image.size == (64, 64)
        assert np.isfinite(array).all() and array.std() > 2.0
    # Seeds come from CPU generators: the same seed gives the same picture run after run on the GPU.
    assert np.abs(np.asarray(first).astype(int) - np.asarray(again).astype(int)).max() <= 2
