"""Quantised checkpoints (issue 30): a GGUF Flux transformer (Q8_0, written with the gguf package) paired
with the Flux folder it came from, and an fp8 SD 1.x single file, listed with their quantisation and
loaded through Kiri's loader; each makes a picture close to (not the same as) its unquantised model's,
with a denoiser several times smaller in memory."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import tiny_models

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def quant_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant_models")
    checkpoints = root / "checkpoints"
    flux = tiny_models.make_tiny_flux(checkpoints / "tiny-flux")
    tiny_models.save_gguf_transformer(flux, checkpoints / "tiny-flux-Q8_0.gguf", "Q8_0")
    sd = tiny_models.make_tiny_sd(root / "sources" / "tiny-sd")
    tiny_models.save_ldm_single_file(sd, checkpoints / "tiny-sd-single.safetensors")
    tiny_models.save_fp8_single_file(checkpoints / "tiny-sd-single.safetensors", checkpoints / "tiny-sd-fp8.safetensors")
    tiny_models.save_config_folder(sd, root / "configs" / "sd1")
    return root


@pytest.fixture()
def quant_engine(quant_dir, tmp_path):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=quant_dir, outputs_dir=tmp_path / "outputs", default_model="tiny-sd-single",
                        save_images=False)
    engine = build_engine(settings, DeviceChoice("cpu"))
    engine.catalog.scan()
    return engine


def _picture(engine, model: str, steps: int = 2):
    from webui.engine.generation.requests import Txt2ImgRequest

    result = engine.txt2img(Txt2ImgRequest(prompt="a red circle", model=model, steps=steps, width=64, height=64, seed=7))
    return np.asarray(result.images[0]).astype(np.float64), result.infotexts[0]


def _denoiser_bytes(engine) -> int:
    """The denoiser's bytes as the memory planner counts them."""
    from webui.engine.core.memory import component_bytes

    sizes = component_bytes(engine.models.current.pipeline)
    return sizes.get("transformer") or sizes["unet"]


def test_catalog_lists_family_and_quantisation(quant_engine):
    titles = {e.name: quant_engine.catalog.title(e) for e in quant_engine.catalog.entries}
    gguf = quant_engine.catalog.find("tiny-flux-Q8_0")
    assert (gguf.format, gguf.family, gguf.quantization, gguf.problem) == ("gguf", "flux", "Q8_0", None)
    assert " · Flux · Q8_0 · " in titles["tiny-flux-Q8_0"]
    assert " · SD 1.x · fp8 · " in titles["tiny-sd-fp8"]
    assert quant_engine.catalog.find("tiny-sd-fp8").quantization == "fp8"
    # ordinary checkpoints keep their titles: family and size only
    assert quant_engine.catalog.find("tiny-sd-single").quantization is None
    assert titles["tiny-sd-single"].split(" · ")[1:] == ["SD 1.x", titles["tiny-sd-single"].split(" · ")[2]]
    # the picker's title finds the entry again
    assert quant_engine.catalog.find(titles["tiny-flux-Q8_0"]) is gguf


def test_gguf_transformer_runs_in_its_base_pipeline(quant_engine):
    plain, _ = _picture(quant_engine, "tiny-flux")
    plain_bytes = _denoiser_bytes(quant_engine)
    quantised, infotext = _picture(quant_engine, "tiny-flux-Q8_0")
    model = quant_engine.models.current
    assert model.name == "tiny-flux-Q8_0" and "Model: tiny-flux-Q8_0" in infotext
    # the weights stay quantised in memory (Q8_0: 34 bytes per 32 weights, against 128 in float32)
    from diffusers.quantizers.gguf.utils import GGUFParameter

    qkv = model.pipeline.transformer.transformer_blocks[0].attn.to_q.weight
    assert isinstance(qkv, GGUFParameter) and qkv.quant_type.name == "Q8_0"
    assert _denoiser_bytes(quant_engine) < plain_bytes / 2.5
    # the text encoders and VAE are the base folder's
    assert model.pipeline.vae.config.shift_factor == pytest.approx(0.0609)
    difference = np.abs(plain - quantised)
    assert 0 < difference.max() and difference.mean() < 2.0, "Q8_0 is close to the float weights, not the same"


def test_fp8_single_file_stays_fp8_and_computes_in_float32(quant_engine):
    plain, _ = _picture(quant_engine, "tiny-sd-single", steps=3)
    plain_bytes = _denoiser_bytes(quant_engine)
    stored, _ = _picture(quant_engine, "tiny-sd-fp8", steps=3)
    unet = quant_engine.models.current.pipeline.unet
    dtypes = {p.dtype for p in unet.parameters()}
    assert torch.float8_e4m3fn in dtypes, "the UNet's weights stay in fp8 between calls"
    assert unet.conv_in.weight.dtype == torch.float8_e4m3fn
    assert _denoiser_bytes(quant_engine) < plain_bytes / 3
    difference = np.abs(plain - stored)
    assert 0 < difference.max() and difference.mean() < 4.0


def test_gguf_without_a_base_folder_says_what_is_needed(quant_dir, tmp_path):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.core.errors import ModelLoadError
    from webui.engine.settings import Settings

    alone = tmp_path / "models"
    (alone / "checkpoints").mkdir(parents=True)
    shutil.copy(quant_dir / "checkpoints" / "tiny-flux-Q8_0.gguf", alone / "checkpoints")
    engine = build_engine(Settings(models_dir=alone, outputs_dir=tmp_path / "out"), DeviceChoice("cpu"))
    engine.catalog.scan()
    with pytest.raises(ModelLoadError, match=r"only a Flux transformer \(quantised Q8_0\).*Flux diffusers folder"):
        engine.models.get("tiny-flux-Q8_0")


def test_broken_gguf_is_listed_with_its_problem(tmp_path):
    from webui.engine.models.catalog import describe

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 10)
    entry = describe(bad)
    assert entry.format == "gguf" and entry.problem and "GGUF" in entry.problem
