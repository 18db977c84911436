"""Quantised checkpoints (issue 30): GGUF transformers (Flux in Q8_0, SD3 in Q4_0, written with the gguf
package) paired with the diffusers folder they came from, and an fp8 SD 1.x single file, listed with their
quantisation and loaded through Kiri's loader; each makes a picture close to (not the same as) its
unquantised model's, with a denoiser several times smaller in memory.

The GGUF files hold diffusers' tensor names: diffusers' converter from the original Flux layout
(double_blocks.*) assumes FLUX.1's real width (3072), so a tiny model cannot take that path."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import lora_files
import tiny_models

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def quant_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant_models")
    checkpoints = root / "checkpoints"
    flux = tiny_models.make_tiny_flux(checkpoints / "tiny-flux")
    tiny_models.save_gguf_transformer(flux, checkpoints / "tiny-flux-Q8_0.gguf", "Q8_0")
    # a Flux of another shape (schnell's: no guidance embedding) that sorts first: the GGUF must not pair with it
    tiny_models.make_tiny_flux(checkpoints / "a-flux-schnell", guidance=False)
    sd3 = tiny_models.make_tiny_sd3(checkpoints / "tiny-sd3")
    tiny_models.save_gguf_transformer(sd3, checkpoints / "tiny-sd3-Q4_0.gguf", "Q4_0")
    sd = tiny_models.make_tiny_sd(root / "sources" / "tiny-sd")
    tiny_models.save_ldm_single_file(sd, checkpoints / "tiny-sd-single.safetensors")
    tiny_models.save_fp8_single_file(checkpoints / "tiny-sd-single.safetensors", checkpoints / "tiny-sd-fp8.safetensors")
    tiny_models.save_config_folder(sd, root / "configs" / "sd1")
    tiny_models.save_fp8_folder(sd, checkpoints / "tiny-sd-fp8-folder")
    from diffusers import StableDiffusionPipeline

    lora_files.save_kohya(StableDiffusionPipeline.from_pretrained(sd), root / "Lora" / "outline.safetensors", scale=0.15)
    _save_flux_lora(flux, root / "Lora" / "flux-tiny.safetensors")
    return root


def _save_flux_lora(flux, path) -> None:
    """A diffusers-format Flux LoRA (PEFT keys, as FluxPipeline.save_lora_weights writes them) of random weights."""
    from diffusers import FluxPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(3)
    pipe = FluxPipeline.from_pretrained(flux)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                            init_lora_weights=False))
    state = {k: v * 1.5 for k, v in get_peft_model_state_dict(pipe.transformer).items()}
    FluxPipeline.save_lora_weights(str(path.parent / "flux-lora-folder"), transformer_lora_layers=state)
    shutil.move(path.parent / "flux-lora-folder" / "pytorch_lora_weights.safetensors", path)
    shutil.rmtree(path.parent / "flux-lora-folder")


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


@pytest.mark.parametrize("base, name, quantisation, ratio, tolerance", [
    ("tiny-flux", "tiny-flux-Q8_0", "Q8_0", 2.5, 1.0),  # 34 bytes per 32 weights, against 128 in float32
    ("tiny-sd3", "tiny-sd3-Q4_0", "Q4_0", 3.0, 6.0),  # 18 bytes per 32 weights: coarser, further off
])
def test_gguf_transformer_runs_in_its_base_pipeline(quant_engine, base, name, quantisation, ratio, tolerance):
    from diffusers.quantizers.gguf.utils import GGUFParameter

    from webui.engine.core.memory import module_bytes

    plain, _ = _picture(quant_engine, base)
    plain_bytes = _denoiser_bytes(quant_engine)
    plain_blocks = module_bytes(quant_engine.models.current.pipeline.transformer.transformer_blocks)
    plain_vae = quant_engine.models.current.pipeline.vae.config
    quantised, infotext = _picture(quant_engine, name)
    model = quant_engine.models.current
    assert model.name == name and f"Model: {name}," in infotext
    # the weights stay quantised in memory, dequantised layer by layer when they run
    weight = model.pipeline.transformer.transformer_blocks[0].attn.to_q.weight
    assert isinstance(weight, GGUFParameter) and weight.quant_type.name == quantisation
    assert module_bytes(model.pipeline.transformer.transformer_blocks) < plain_blocks / ratio
    assert _denoiser_bytes(quant_engine) < plain_bytes  # as the memory planner counts it (SD3's position table stays)
    # the text encoders and VAE are those of the base folder of its shape
    assert model.pipeline.vae.config == plain_vae
    difference = np.abs(plain - quantised)
    assert 0 < difference.max() and difference.mean() < tolerance, "close to the float weights' picture, not the same"


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
    assert 0 < difference.max() and difference.mean() < 2.5


def test_the_api_lists_the_quantisation(quant_dir, tmp_path):
    from fastapi.testclient import TestClient

    from conftest import make_api_app

    app, _ = make_api_app(quant_dir, tmp_path / "out")
    listed = {m["name"]: m for m in TestClient(app).get("/kiri/v1/models").json()["checkpoint"]}
    assert (listed["tiny-flux-Q8_0"]["format"], listed["tiny-flux-Q8_0"]["family"]) == ("gguf", "flux")
    assert [listed[n]["quantization"] for n in ("tiny-flux-Q8_0", "tiny-sd3-Q4_0", "tiny-sd-fp8", "tiny-sd-single")] == \
        ["Q8_0", "Q4_0", "fp8", None]


def test_an_fp8_diffusers_folder_loads_as_the_fp8_single_file_does(quant_engine):
    assert quant_engine.catalog.find("tiny-sd-fp8-folder").quantization == "fp8"
    single, _ = _picture(quant_engine, "tiny-sd-fp8", steps=3)
    folder, _ = _picture(quant_engine, "tiny-sd-fp8-folder", steps=3)
    assert quant_engine.models.current.pipeline.unet.conv_in.weight.dtype == torch.float8_e4m3fn
    assert np.array_equal(single, folder), "the same fp8 weights, the same picture"


def test_gguf_pairs_with_the_base_of_its_shape(quant_engine, quant_dir, tmp_path):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.core.errors import ModelLoadError
    from webui.engine.settings import Settings

    gguf = quant_engine.catalog.find("tiny-flux-Q8_0")
    assert quant_engine.models.gguf_base(gguf).name == "tiny-flux"  # not a-flux-schnell, first by name
    # with only the schnell-shaped folder, the file says which shape it needs
    other = tmp_path / "models"
    shutil.copytree(quant_dir / "checkpoints" / "a-flux-schnell", other / "checkpoints" / "a-flux-schnell")
    shutil.copy(quant_dir / "checkpoints" / "tiny-flux-Q8_0.gguf", other / "checkpoints")
    engine = build_engine(Settings(models_dir=other, outputs_dir=tmp_path / "out"), DeviceChoice("cpu"))
    engine.catalog.scan()
    with pytest.raises(ModelLoadError, match=r"none of those there \(a-flux-schnell\) has its shape .*guidance_embeds True"):
        engine.models.get("tiny-flux-Q8_0")


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


def test_a_lora_on_an_fp8_model_keeps_its_weights_in_the_compute_dtype(quant_engine):
    """PEFT makes an adapter in its layer's stored dtype: on fp8 layers that would round the LoRA to fp8
    (and it could not compute there); Kiri's fp8 layers name their compute dtype, so it stays float32."""
    plain, _ = _picture(quant_engine, "tiny-sd-single", steps=3)
    plain_lora, _ = _picture_with(quant_engine, "tiny-sd-single", "a red circle <lora:outline:1>")
    stored_lora, _ = _picture_with(quant_engine, "tiny-sd-fp8", "a red circle <lora:outline:1>")
    unet = quant_engine.models.current.pipeline.unet
    adapters = {name: p.dtype for name, p in unet.named_parameters() if ".lora_" in name}
    assert adapters and set(adapters.values()) == {torch.float32}
    assert unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q.base_layer.weight.dtype == torch.float8_e4m3fn
    assert np.abs(plain - plain_lora).mean() > 1.0, "the LoRA changes the picture"
    assert np.abs(plain_lora - stored_lora).mean() < 2.5, "and does so on the fp8 model as on the float one"


def test_a_lora_on_a_gguf_transformer_applies_as_on_the_float_one(quant_engine):
    plain, _ = _picture_with(quant_engine, "tiny-flux", "a red circle", steps=2)
    plain_lora, _ = _picture_with(quant_engine, "tiny-flux", "a red circle <lora:flux-tiny:1>", steps=2)
    quantised_lora, _ = _picture_with(quant_engine, "tiny-flux-Q8_0", "a red circle <lora:flux-tiny:1>", steps=2)
    assert np.abs(plain - plain_lora).mean() > 1.0, "the LoRA changes the picture"
    assert np.abs(plain_lora - quantised_lora).mean() < 0.5, "and does so on the Q8_0 transformer as on the float one"


def _picture_with(engine, model: str, prompt: str, steps: int = 3):
    from webui.engine.generation.requests import Txt2ImgRequest

    result = engine.txt2img(Txt2ImgRequest(prompt=prompt, model=model, steps=steps, width=64, height=64, seed=7))
    assert not result.warnings, result.warnings
    return np.asarray(result.images[0]).astype(np.float64), result.infotexts[0]


def test_without_the_gguf_package_the_file_says_what_to_install(quant_dir, monkeypatch):
    from webui.engine.models import quant
    from webui.engine.models.catalog import describe

    monkeypatch.setattr(quant, "gguf_available", lambda: False)
    entry = describe(quant_dir / "checkpoints" / "tiny-flux-Q8_0.gguf")
    assert entry.format == "gguf" and "pip install -r requirements-gguf.txt" in entry.problem


def test_a_scaled_fp8_file_is_listed_with_why_it_cannot_load(quant_dir, tmp_path):
    """ComfyUI's fp8_scaled files hold weight / scale: loaded as plain fp8 they would make noise."""
    from safetensors.torch import load_file, save_file

    from webui.engine.models.catalog import describe

    state = load_file(str(quant_dir / "checkpoints" / "tiny-sd-fp8.safetensors"))
    state["model.diffusion_model.input_blocks.0.0.scale_weight"] = torch.ones(())
    state["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    save_file(state, str(tmp_path / "tiny-sd-fp8-scaled.safetensors"))
    entry = describe(tmp_path / "tiny-sd-fp8-scaled.safetensors")
    assert (entry.family, entry.quantization) == ("sd1", "fp8")
    assert "scaled fp8" in entry.problem and "plain fp8" in entry.problem
