"""Every family Kiri detects, run for real: tiny random-weight SDXL, SD 2.x (v-prediction),
PixArt-Sigma and Flux through the catalog, the loader, txt2img, img2img and inpaint, with a
scheduler-class and a function sampler where they fit the model's prediction type."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from webui.engine.core.errors import InvalidRequest, ModelLoadError
from webui.engine.core.infotext import parse_infotext
from webui.engine.generation.img2img import Img2ImgRequest
from webui.engine.generation.requests import Txt2ImgRequest

# name -> (family, prediction once loaded, samplers that fit it: scheduler classes and a function)
FAMILY_MODELS = {
    "tiny-sdxl": ("sdxl", "epsilon"),
    "tiny-sdxl-single": ("sdxl", "epsilon"),
    "tiny-sd2": ("sd2", "v_prediction"),
    "tiny-sd2-single": ("sd2", "v_prediction"),
    "tiny-pixart": ("pixart", "epsilon"),
    "tiny-flux": ("flux", "flow"),
}
SCHEDULER_SAMPLERS = {"epsilon": ["Euler", "DPM++ 2M"], "v_prediction": ["Euler", "DPM++ 2M"], "flow": ["Flow Euler"]}
# Kiri's function samplers (k-diffusion style): on flow models the flow forms of A1111's names.
FUNCTION_SAMPLERS = {"epsilon": ["DPM++ 3M SDE"], "v_prediction": ["DPM++ 3M SDE"], "flow": ["Euler a", "Heun"]}
NO_IMG2IMG = {"pixart"}  # diffusers has no image-to-image or inpainting pipeline for PixArt


@pytest.fixture(scope="module")
def family_engine(family_models_dir, tmp_path_factory):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=family_models_dir, outputs_dir=tmp_path_factory.mktemp("family_outputs"),
                        default_model="tiny-sdxl", model_cache_size=len(FAMILY_MODELS))
    engine = build_engine(settings, DeviceChoice("cpu"))
    engine.catalog.scan()
    return engine


def _picture() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8))


def _mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


def _check_image(image: Image.Image) -> np.ndarray:
    assert image.size == (64, 64)
    array = np.asarray(image.convert("RGB")).astype(np.float64)
    assert np.isfinite(array).all()
    assert array.std() > 2.0, "a flat picture: NaN latents cast to black, or nothing generated"
    return array


def _check_infotext(info: str, model: str, sampler: str, steps: int) -> dict:
    params = parse_infotext(info).params
    assert params["Model"] == model
    assert params["Sampler"] == sampler
    assert params["Steps"] == str(steps)
    assert params["Size"] == "64x64"
    assert params["Seed"] == "7"
    return params


def _samplers(prediction: str) -> list[str]:
    return SCHEDULER_SAMPLERS[prediction] + FUNCTION_SAMPLERS[prediction]


def test_catalog_detects_each_family(family_engine):
    entries = {e.name: e for e in family_engine.catalog.entries}
    for name, (family, _) in FAMILY_MODELS.items():
        assert entries[name].family == family, name
        assert entries[name].problem is None
    assert entries["tiny-sdxl-single"].format == entries["tiny-sd2-single"].format == "single_file"


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_loads_with_the_family_and_prediction(family_engine, name):
    family, prediction = FAMILY_MODELS[name]
    model = family_engine.models.get(name)
    assert (model.family, model.prediction) == (family, prediction)
    assert model.dtypes is not None and model.dtypes.denoiser == "float32"  # the CPU's policy
    import torch

    for component in model.pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            assert not any(p.is_meta for p in component.parameters())
            assert all(p.dtype == torch.float32 for p in component.parameters() if p.is_floating_point())


def test_single_files_load_the_same_weights_as_their_folders(family_engine):
    import torch

    for folder, single in (("tiny-sdxl", "tiny-sdxl-single"), ("tiny-sd2", "tiny-sd2-single")):
        a, b = family_engine.models.get(folder).pipeline, family_engine.models.get(single).pipeline
        for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
            if getattr(a, component, None) is None:
                continue
            sa, sb = getattr(a, component).state_dict(), getattr(b, component).state_dict()
            assert sa.keys() == sb.keys(), (single, component)
            assert all(torch.equal(sa[k], sb[k]) for k in sa), (single, component)


def _txt2img_cases():
    return [(name, s) for name, (_, prediction) in FAMILY_MODELS.items() for s in _samplers(prediction)]


@pytest.mark.parametrize("name,sampler", _txt2img_cases())
def test_txt2img(family_engine, name, sampler):
    result = family_engine.txt2img(Txt2ImgRequest(prompt="a red circle", steps=3, width=64, height=64, seed=7,
                                                  model=name, sampler_name=sampler, cfg_scale=5.0))
    _check_image(result.images[0])
    _check_infotext(result.infotexts[0], name, sampler, 3)
    assert result.paths and result.paths[0].exists()


@pytest.mark.parametrize("name,sampler", _txt2img_cases())
@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_img2img_and_inpaint(family_engine, name, sampler, task):
    family, prediction = FAMILY_MODELS[name]
    picture, mask = _picture(), _mask() if task == "inpaint" else None
    request = Img2ImgRequest(prompt="a blue square", init_image=picture, mask=mask, mask_blur=0, steps=4, width=64,
                             height=64, seed=7, model=name, sampler_name=sampler, denoising_strength=0.75)
    if family in NO_IMG2IMG:
        with pytest.raises(InvalidRequest, match="no (image to image|inpainting) pipeline"):
            family_engine.img2img(request)
        return
    result = family_engine.img2img(request)
    out = _check_image(result.images[0])
    params = _check_infotext(result.infotexts[0], name, sampler, 4)
    assert params["Denoising strength"] == "0.75"
    source = np.asarray(picture).astype(np.float64)
    assert not np.array_equal(out, source)
    if task == "inpaint":
        assert params["Masked content"] == "original"
        keep = np.asarray(mask) == 0
        assert np.array_equal(out[keep], source[keep]), "pixels outside the mask must be kept exactly"
        assert np.abs(out[16:48, 16:48] - source[16:48, 16:48]).mean() > 1.0


def test_seed_gives_the_same_picture_twice(family_engine):
    request = dict(prompt="a cat", steps=2, width=64, height=64, seed=11, model="tiny-flux", save_images=False)
    first = family_engine.txt2img(Txt2ImgRequest(**request)).images[0]
    second = family_engine.txt2img(Txt2ImgRequest(**request)).images[0]
    assert np.array_equal(np.asarray(first), np.asarray(second))


@pytest.mark.parametrize("family,single", [("sdxl", "tiny-sdxl-single"), ("sd2", "tiny-sd2-single")])
def test_single_file_without_its_config_folder_says_which_folder_to_add(family_models_dir, tmp_path, monkeypatch,
                                                                        family, single):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    shutil.copy(family_models_dir / "checkpoints" / f"{single}.safetensors", tmp_path / "models" / "checkpoints")
    engine = build_engine(Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out"), DeviceChoice("cpu"))
    engine.catalog.scan()
    with pytest.raises(ModelLoadError) as caught:
        engine.models.get(single)
    message = str(caught.value)
    assert f"models/configs/{family}/" in message
    assert "outgoing traffic" not in message and "snapshot" not in message  # nothing about the network
    assert caught.value.__cause__ is None


def test_flux_refuses_a_sampler_that_cannot_take_its_sigmas(family_engine):
    # FlowMatchHeun's set_timesteps takes no custom sigmas, which Flux pipelines always pass.
    with pytest.raises(InvalidRequest, match="cannot follow the noise schedule") as caught:
        family_engine.txt2img(Txt2ImgRequest(prompt="a cat", steps=2, width=64, height=64, model="tiny-flux",
                                             sampler_name="Flow Heun", save_images=False))
    assert caught.value.field == "sampler_name"
    assert "Flow Euler" in str(caught.value)
