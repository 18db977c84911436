"""The dtype policy per family and card, checked on the CPU: it is a pure function."""

from __future__ import annotations

import pytest

from webui.engine.core.devices import DeviceChoice, DtypePlan, dtype_policy
from webui.engine.models.families import FAMILIES

BF16_NATIVE = {"sd3", "flux", "pixart"}


def _expected(family: str, device: str, bf16: bool, fix: bool) -> DtypePlan:
    if device == "cpu":
        return DtypePlan("float32", "float32", "float32", False)
    if device == "cuda" and bf16 and family in BF16_NATIVE:
        return DtypePlan("bfloat16", "bfloat16", "bfloat16", False)
    return DtypePlan("float16", "float16", "float16", family == "sdxl" and not fix)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("fix", [False, True])
def test_every_family_and_card(family, device, bf16, fix):
    plan = dtype_policy(family, device, bf16=bf16, vae_fp16_fix=fix)
    assert plan == _expected(family, device, bf16, fix)
    assert plan == dtype_policy(family, device, bf16=bf16, vae_fp16_fix=fix)  # pure: same answer again


def test_named_cases():
    import torch

    # An RTX 3090 / A100 / H100 (bf16): SDXL in fp16 with its VAE decoded in fp32, Flux in bf16.
    sdxl = dtype_policy("sdxl", "cuda", bf16=True)
    assert (sdxl.torch_dtype("denoiser"), sdxl.torch_dtype("vae"), sdxl.vae_upcast) == (torch.float16, torch.float16, True)
    assert dtype_policy("sdxl", "cuda", bf16=True, vae_fp16_fix=True).vae_upcast is False
    assert dtype_policy("flux", "cuda", bf16=True).torch_dtype("text_encoders") == torch.bfloat16
    # A T4 / V100 (no bf16): everything fp16.
    assert dtype_policy("sd3", "cuda", bf16=False).denoiser == "float16"
    assert dtype_policy("sd1", "cuda", bf16=True) == DtypePlan("float16", "float16", "float16", False)
    # MPS never gets bf16, the CPU never gets half precision.
    assert dtype_policy("flux", "mps", bf16=True).denoiser == "float16"
    assert dtype_policy("sdxl", "cpu").vae_upcast is False


def test_device_choice_uses_the_policy_on_the_cpu():
    import torch

    cpu = DeviceChoice("cpu")
    assert cpu.bf16_supported() is False
    for family in FAMILIES:
        assert cpu.dtype_for(family) == torch.float32
        assert cpu.plan_for(family) == dtype_policy(family, "cpu")


def test_loader_reads_the_fp16_fix_from_the_vae_config(tmp_path):
    import json

    from webui.engine.models.manager import _vae_fp16_fix

    (tmp_path / "vae").mkdir()
    assert _vae_fp16_fix(tmp_path) is False  # no config: assume the VAE overflows
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"force_upcast": True}))
    assert _vae_fp16_fix(tmp_path) is False
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"force_upcast": False}))
    assert _vae_fp16_fix(tmp_path) is True


def test_loader_tells_the_vae_whether_to_upcast():
    import torch
    from diffusers import AutoencoderKL

    from webui.engine.models.manager import _apply_plan

    class Pipe:
        vae = AutoencoderKL(block_out_channels=[8], norm_num_groups=8, latent_channels=4)
        text_encoder = torch.nn.Linear(2, 2)

    _apply_plan(Pipe, dtype_policy("sdxl", "cuda", bf16=True))
    assert Pipe.vae.config.force_upcast is True
    assert Pipe.text_encoder.weight.dtype == torch.float16 and Pipe.vae.dtype == torch.float16
    _apply_plan(Pipe, dtype_policy("sdxl", "cuda", vae_fp16_fix=True))
    assert Pipe.vae.config.force_upcast is False
    _apply_plan(Pipe, dtype_policy("sdxl", "cpu"))
    assert Pipe.text_encoder.weight.dtype == torch.float32 and Pipe.vae.dtype == torch.float32
