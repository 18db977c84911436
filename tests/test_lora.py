"""LoRA and LyCORIS (webui/engine/lora/): tiny LoRAs in kohya and diffusers/PEFT format on the tiny SD 1.x
and SDXL, switched per call: weight 0 is the checkpoint bit for bit, weight 1 changes the picture, the
text encoder and denoiser weights act apart, the checkpoint's weights are unchanged after, two at once,
another family's LoRA and unknown names refused (before the job is queued), hashes in the infotext."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import lora_files
import tiny_models
from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.requests import Txt2ImgRequest


@pytest.fixture(scope="session")
def lora_models_dir(models_dir, tmp_path_factory) -> Path:
    """models/ with the tiny SD 1.x and a tiny SDXL, and LoRAs for each in models/Lora/ and models/LyCORIS/."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    root = tmp_path_factory.mktemp("lora_models")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "tiny-sd").symlink_to(models_dir / "checkpoints" / "tiny-sd")
    (root / "checkpoints" / "tiny-sd3").symlink_to(models_dir / "checkpoints" / "tiny-sd3")
    tiny_models.make_tiny_sdxl(root / "checkpoints" / "tiny-sdxl")
    tiny_models.make_tiny_motion_module(root / "motion" / "tiny-motion")
    sd = StableDiffusionPipeline.from_pretrained(root / "checkpoints" / "tiny-sd", safety_checker=None)
    xl = StableDiffusionXLPipeline.from_pretrained(root / "checkpoints" / "tiny-sdxl")
    loras = root / "Lora"
    lora_files.save_kohya(sd, loras / "shapes-outline.safetensors",
                          {"ss_output_name": "outline", "ss_base_model_version": "sd_v1", "ss_network_dim": "4",
                           "ss_network_alpha": "4", "ss_tag_frequency": '{"10_outline": {"outline": 12}}'})
    lora_files.save_kohya(sd, loras / "unet-only.safetensors", unet=True, te=False, seed=5)
    lora_files.save_kohya(sd, loras / "second.safetensors", seed=7)
    lora_files.save_diffusers(sd, loras, "peft-style")
    lora_files.save_kohya(xl, loras / "xl-style.safetensors", {"ss_base_model_version": "sdxl_base_v1-0"})
    (root / "LyCORIS").mkdir()
    lora_files.save_loha(sd, root / "LyCORIS" / "loha-thing.safetensors")
    lora_files.save_locon(sd, root / "LyCORIS" / "locon-thing.safetensors")
    shutil.copy(loras / "second.safetensors", root / "LyCORIS" / "lyco-copy.safetensors")
    (loras / "shapes-outline.preview.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


@pytest.fixture()
def lora_engine(lora_models_dir, tmp_path):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=lora_models_dir, outputs_dir=tmp_path / "outputs", default_model="tiny-sd",
                        save_images=False)
    engine = build_engine(settings, DeviceChoice("cpu"))
    engine.catalog.scan()
    return engine


def _image(engine, prompt, model="tiny-sd", **addons):
    request = Txt2ImgRequest(prompt, steps=2, width=64, height=64, seed=11, model=model,
                             sampler_name="Flow Euler" if model == "tiny-sd3" else "Euler",
                             addons=addons)
    result = engine.txt2img(request)
    return np.asarray(result.images[0], dtype=np.int16), result


def _plain_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's own weights, under their names without PEFT's wrapping (base_layer) and adapters."""
    out = {}
    for key, value in module.state_dict().items():
        if "lora_" in key:
            continue
        out[key.replace(".base_layer.", ".")] = value.clone()
    return out


def test_weight_zero_is_the_checkpoint_and_weight_one_changes_it(lora_engine):
    plain, _ = _image(lora_engine, "a red circle")
    pipe = lora_engine.models.get("tiny-sd").pipeline
    unet_before, te_before = _plain_weights(pipe.unet), _plain_weights(pipe.text_encoder)

    zero, _ = _image(lora_engine, "a red circle <lora:shapes-outline:0>")
    assert np.array_equal(zero, plain)
    one, result = _image(lora_engine, "a red circle <lora:shapes-outline:1>")
    assert np.abs(one - plain).max() > 10
    assert result.infotexts[0].startswith("a red circle <lora:shapes-outline:1>\n")
    assert 'Lora hashes: "shapes-outline: ' in result.infotexts[0]

    # the next job without a LoRA sees the plain checkpoint, and its weights were never changed
    again, _ = _image(lora_engine, "a red circle")
    assert np.array_equal(again, plain)
    for before, module in ((unet_before, pipe.unet), (te_before, pipe.text_encoder)):
        after = _plain_weights(module)
        assert after.keys() == before.keys()
        assert all(torch.equal(after[k], before[k]) for k in before)
    # the adapter was loaded once and kept with the model (no reload for the next job)
    assert any("kiri_" in name for name in pipe.unet.peft_config)
    pipe.unload_lora_weights()
    assert {k: v for k, v in pipe.unet.state_dict().items()}.keys() == unet_before.keys()


def test_text_encoder_and_denoiser_weights_act_apart(lora_engine):
    plain, _ = _image(lora_engine, "a red circle")
    both, _ = _image(lora_engine, "a red circle <lora:shapes-outline:1>")
    te_only, _ = _image(lora_engine, "a red circle <lora:shapes-outline:1:0>")  # A1111's order: te, unet
    unet_only, _ = _image(lora_engine, "a red circle <lora:shapes-outline:te=0:unet=1>")
    for picture in (te_only, unet_only):
        assert not np.array_equal(picture, plain) and not np.array_equal(picture, both)
    assert not np.array_equal(te_only, unet_only)
    # a LoRA without text encoder weights changes only the denoiser: its te weight changes nothing
    a, _ = _image(lora_engine, "a red circle <lora:unet-only:0:1>")
    b, _ = _image(lora_engine, "a red circle <lora:unet-only:1:1>")
    assert np.array_equal(a, b) and not np.array_equal(a, plain)


def test_two_loras_the_lyco_tag_and_the_diffusers_format(lora_engine):
    plain, _ = _image(lora_engine, "a red circle")
    one, _ = _image(lora_engine, "a red circle <lora:shapes-outline:0.7>")
    two, result = _image(lora_engine, "a red circle <lora:shapes-outline:0.7> <lyco:second:0.7>")
    assert not np.array_equal(two, one) and not np.array_equal(two, plain)
    assert "shapes-outline: " in result.infotexts[0] and ", second: " in result.infotexts[0]
    # the same LoRAs named in addons (the API's shape) make the same picture
    named, _ = _image(lora_engine, "a red circle", lora=[{"name": "shapes-outline", "weight": 0.7},
                                                          {"name": "second", "weight": 0.7}])
    assert np.array_equal(named, two)
    by_alias, _ = _image(lora_engine, "a red circle <lora:outline:0.7> <lyco:second:0.7>")  # ss_output_name
    assert np.array_equal(by_alias, two)
    peft, _ = _image(lora_engine, "a red circle <lora:peft-style:1>")  # what save_lora_weights writes
    assert np.abs(peft - plain).max() > 10
    lyco, _ = _image(lora_engine, "a red circle <lora:shapes-outline:0.7> <lyco:lyco-copy:0.7>")  # models/LyCORIS/
    assert np.array_equal(lyco, two)


def test_locon_convolutions_load_and_weight_zero_is_plain(lora_engine):
    plain, _ = _image(lora_engine, "a red circle")
    zero, _ = _image(lora_engine, "a red circle <lyco:locon-thing:0>")
    one, _ = _image(lora_engine, "a red circle <lyco:locon-thing:1>")
    assert np.array_equal(zero, plain) and np.abs(one - plain).max() > 10
    unet = lora_engine.models.get("tiny-sd").pipeline.unet
    assert any(type(m).__name__ == "Conv2d" and hasattr(m, "lora_A") for m in unet.modules())  # peft's LoRA Conv2d


def test_img2img_inpaint_and_sd_upscale_use_the_lora(lora_engine):
    from PIL import Image

    from webui.engine.generation.img2img import Img2ImgRequest, SDUpscale

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    for extra in ({}, {"mask": mask}, {"sd_upscale": SDUpscale(upscaler="Lanczos", scale=2, overlap=16)}):
        def run(prompt):
            request = Img2ImgRequest(prompt=prompt, init_image=picture, steps=3, width=64, height=64, seed=1,
                                     denoising_strength=0.75, sampler_name="Euler", save_images=False, **extra)
            result = lora_engine.img2img(request)
            return np.asarray(result.images[0], dtype=np.int16), result

        plain, _ = run("a red circle")
        zero, _ = run("a red circle <lora:shapes-outline:0>")
        one, result = run("a red circle <lora:shapes-outline:1>")
        assert np.array_equal(zero, plain), extra
        assert np.abs(one - plain).max() > 10, extra
        assert "Lora hashes" in result.infotexts[0], extra


def test_the_adapters_count_in_the_memory_budget(lora_engine):
    from webui.engine.core.addons import derived_bytes

    _image(lora_engine, "a red circle")
    model = lora_engine.models.get("tiny-sd")
    before, loaded_before = derived_bytes(model), lora_engine.models.loaded_bytes()
    _image(lora_engine, "a red circle <lora:shapes-outline:1> <lora:second:1>")
    added = derived_bytes(model) - before
    # each adapter's A and B matrices (rank 4, float32) in the UNet's and the text encoder's layers
    expected = sum(p.numel() * 4 for n, p in model.pipeline.unet.named_parameters() if ".lora_" in n)
    expected += sum(p.numel() * 4 for n, p in model.pipeline.text_encoder.named_parameters() if ".lora_" in n)
    assert added == expected > 0
    assert lora_engine.models.loaded_bytes() - loaded_before >= added


def test_default_multiplier_setting(lora_engine):
    full, _ = _image(lora_engine, "a red circle <lora:shapes-outline:1>")
    bare, _ = _image(lora_engine, "a red circle <lora:shapes-outline>")
    assert np.array_equal(bare, full)
    lora_engine.settings.extra_networks_default_multiplier = 0.0
    plain, _ = _image(lora_engine, "a red circle")
    zero, _ = _image(lora_engine, "a red circle <lora:shapes-outline>")
    assert np.array_equal(zero, plain)


def test_unknown_name_is_refused_before_the_job_is_queued(lora_engine):
    jobs_before = len(lora_engine.jobs.all()) if hasattr(lora_engine.jobs, "all") else None
    with pytest.raises(InvalidRequest) as refused:
        lora_engine.submit_plain("txt2img", {"prompt": "a circle <lora:nosuch:1>", "steps": 2, "width": 64,
                                             "height": 64}, "tester")
    assert refused.value.field == "prompt"
    assert "nosuch" in str(refused.value) and "shapes-outline" in str(refused.value)  # lists what exists
    if jobs_before is not None:
        assert len(lora_engine.jobs.all()) == jobs_before
    with pytest.raises(InvalidRequest, match="nosuch"):
        lora_engine.submit_plain("txt2img", {"prompt": "a circle", "steps": 2, "width": 64, "height": 64,
                                             "addons": {"lora": [{"name": "nosuch", "weight": 1}]}}, "tester")
    with pytest.raises(InvalidRequest, match="must be a number"):
        lora_engine.submit_plain("txt2img", {"prompt": "a circle <lora:second:lots>", "steps": 2}, "tester")


def test_another_family_and_lycoris_formats_are_refused_by_name(lora_engine):
    with pytest.raises(InvalidRequest, match="SDXL LoRA and tiny-sd is a SD 1.x model") as refused:
        _image(lora_engine, "a red circle <lora:xl-style:1>")
    assert refused.value.field == "prompt"
    with pytest.raises(InvalidRequest, match=r"loha-thing.*LyCORIS LoHa.*diffusers") as refused:
        _image(lora_engine, "a red circle <lyco:loha-thing:1>")
    # a LoRA whose header names no family, for a UNet, on a transformer model
    with pytest.raises(InvalidRequest, match="made for a UNet model .* tiny-sd3 is a SD3 model"):
        _image(lora_engine, "a red circle <lora:peft-style:1>", model="tiny-sd3")
    # nothing of either was left in the model: the next picture is the plain one
    plain_pipe = lora_engine.models.get("tiny-sd").pipeline
    assert not getattr(plain_pipe.unet, "peft_config", None)


def test_sdxl_lora_on_sdxl_and_an_sd1_lora_refused_there(lora_engine):
    plain, _ = _image(lora_engine, "a red circle", model="tiny-sdxl")
    zero, _ = _image(lora_engine, "a red circle <lora:xl-style:0>", model="tiny-sdxl")
    assert np.array_equal(zero, plain)
    one, result = _image(lora_engine, "a red circle <lora:xl-style:1>", model="tiny-sdxl")
    assert np.abs(one - plain).max() > 10
    assert "Lora hashes" in result.infotexts[0]
    te_only, _ = _image(lora_engine, "a red circle <lora:xl-style:1:0>", model="tiny-sdxl")  # both encoders
    assert not np.array_equal(te_only, plain) and not np.array_equal(te_only, one)
    with pytest.raises(InvalidRequest, match="SD 1.x LoRA and tiny-sdxl is a SDXL model"):
        _image(lora_engine, "a red circle <lora:shapes-outline:1>", model="tiny-sdxl")
    again, _ = _image(lora_engine, "a red circle", model="tiny-sdxl")
    assert np.array_equal(again, plain)


def test_list_loras_reads_the_header_without_loading(lora_engine):
    from webui.engine.lora import list_loras

    listed = {item["name"]: item for item in list_loras(lora_engine.catalog)}
    assert {"shapes-outline", "unet-only", "second", "peft-style", "xl-style", "loha-thing", "lyco-copy"} <= set(listed)
    outline = listed["shapes-outline"]
    assert outline["alias"] == "outline"
    assert outline["metadata"]["ss_tag_frequency"] == {"10_outline": {"outline": 12}}
    assert outline["metadata"]["ss_network_dim"] == "4"
    assert outline["path"].endswith("Lora/shapes-outline.safetensors")
    assert outline["preview"].endswith("shapes-outline.preview.png")
    assert outline["family"] == "sd1" and listed["xl-style"]["family"] == "sdxl"
    assert listed["second"]["alias"] == "second" and listed["second"]["preview"] is None
    assert "LoHa" in listed["loha-thing"]["problem"]
    assert lora_engine.models_if_created() is None or not lora_engine.models.loaded()


def test_pickle_lora_needs_the_opt_in(lora_models_dir, tmp_path):
    from safetensors.torch import load_file

    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "tiny-sd").symlink_to(lora_models_dir / "checkpoints" / "tiny-sd")
    (root / "Lora").mkdir()
    torch.save(load_file(str(lora_models_dir / "Lora" / "second.safetensors")), root / "Lora" / "pickled.pt")
    shutil.copy(lora_models_dir / "Lora" / "second.safetensors", root / "Lora" / "same.safetensors")
    for allow in (False, True):
        settings = Settings(models_dir=root, outputs_dir=tmp_path / "out", default_model="tiny-sd", save_images=False,
                            allow_pickle=allow)
        engine = build_engine(settings, DeviceChoice("cpu"))
        engine.catalog.scan()
        if not allow:
            with pytest.raises(Exception, match="pickle"):
                _image(engine, "a red circle <lora:pickled:1>")
        else:
            pickled, _ = _image(engine, "a red circle <lora:pickled:1>")
            same, _ = _image(engine, "a red circle <lora:same:1>")
            assert np.array_equal(pickled, same)


# --- every denoising call site: hires fix's second pass, the X/Y grid's cells ----------------------

def _recording_switch(monkeypatch):
    """Each call's active adapters, as the add-on switches them on (and off: [])."""
    import webui.engine.lora as lora

    seen: list[list] = []
    real = lora.switch

    def switch(pipeline, active):
        seen.append([weights for _, weights in active])
        return real(pipeline, active)

    monkeypatch.setattr(lora, "switch", switch)
    return seen


def test_hires_fix_denoises_both_passes_with_the_lora(lora_engine, monkeypatch):
    from webui.engine.generation.requests import HiresFix

    def hires(prompt):
        request = Txt2ImgRequest(prompt, steps=2, width=64, height=64, seed=11, sampler_name="Euler",
                                 hires=HiresFix(scale=2, upscaler="Latent", denoising_strength=0.6))
        result = lora_engine.txt2img(request)
        return np.asarray(result.images[0], dtype=np.int16), result

    plain, _ = hires("a red circle")
    zero, _ = hires("a red circle <lora:shapes-outline:0>")
    assert np.array_equal(zero, plain)
    seen = _recording_switch(monkeypatch)
    one, result = hires("a red circle <lora:shapes-outline:0.8:0.6>")
    assert one.shape == (128, 128, 3) and np.abs(one - plain).max() > 10
    assert [active for active in seen if active] == [[(0.8, 0.6)], [(0.8, 0.6)]]  # first pass, then the second
    assert seen[-1] == []  # switched off after the last call
    assert "Hires upscale: 2" in result.infotexts[0] and 'Lora hashes: "shapes-outline: ' in result.infotexts[0]


def test_xy_grid_cells_carry_the_prompts_lora(lora_engine):
    from webui.engine.generation.xy_grid import xy_grid

    base = Txt2ImgRequest("a red circle <lora:second:1>", steps=2, width=64, height=64, seed=7, sampler_name="Euler")
    grid = xy_grid(lora_engine, base, "Steps", "1, 2")
    alone, _ = _image(lora_engine, "a red circle <lora:second:1>")
    plain, _ = _image(lora_engine, "a red circle")
    alone_seed7 = lora_engine.txt2img(Txt2ImgRequest("a red circle <lora:second:1>", steps=2, width=64, height=64,
                                                     seed=7, sampler_name="Euler"))
    assert np.array_equal(np.asarray(grid.images[1]), np.asarray(alone_seed7.images[0]))
    assert all("Lora hashes" in info for info in grid.infotexts)
    assert not np.array_equal(alone, plain)


def test_animatediff_frames_use_the_lora_on_its_motion_unet_too(lora_engine):
    """A LoRA loaded into the checkpoint first (a picture), then a clip: the motion UNet AnimateDiff makes
    from the checkpoint's UNet is made without the adapters, and gets them itself for the clip's calls."""
    from PIL import Image

    from webui.engine.video.service import Txt2VideoRequest, txt2video

    _image(lora_engine, "a red circle <lora:shapes-outline:1>")

    def clip(prompt):
        result = txt2video(lora_engine, Txt2VideoRequest(prompt=prompt, frames=2, fps=4, steps=2, width=64, height=64,
                                                         seed=3, motion_module="tiny-motion", model="tiny-sd",
                                                         sampler_name="Euler"))
        return [np.asarray(Image.open(p), dtype=np.int16) for p in result.frame_paths], result

    plain, _ = clip("a red circle")
    zero, _ = clip("a red circle <lora:shapes-outline:0>")
    assert all(np.array_equal(a, b) for a, b in zip(plain, zero))
    both, result = clip("a red circle <lora:shapes-outline:1>")
    te_only, _ = clip("a red circle <lora:shapes-outline:1:0>")
    assert np.abs(both[0] - plain[0]).max() > 10 and 'Lora hashes: "shapes-outline: ' in result.info
    assert not np.array_equal(te_only[0], both[0]) and not np.array_equal(te_only[0], plain[0])  # the motion UNet's own


# --- the API -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_server(lora_models_dir, tmp_path_factory):
    from conftest import serve_kiri

    yield from serve_kiri(lora_models_dir, tmp_path_factory, "lora_outputs")


def test_sdapi_loras_lists_and_refreshes_with_webuiapi(lora_server, lora_models_dir):
    import requests
    import webuiapi

    port = int(lora_server["url"].rstrip("/").rsplit(":", 1)[1])
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler", steps=2)
    listed = {item["name"]: item for item in api.get_loras()}
    assert all(set(item) == {"name", "alias", "path", "metadata"} for item in listed.values())
    assert listed["shapes-outline"]["alias"] == "outline"
    assert listed["shapes-outline"]["metadata"]["ss_tag_frequency"] == {"10_outline": {"outline": 12}}
    assert listed["shapes-outline"]["path"].endswith("shapes-outline.safetensors")
    assert "lyco-copy" in listed  # models/LyCORIS/

    added = lora_models_dir / "Lora" / "fresh.safetensors"
    shutil.copy(lora_models_dir / "Lora" / "second.safetensors", added)
    try:
        reply = api.session.post(f"{api.baseurl}/refresh-loras")
        assert reply.status_code == 200
        assert "fresh" in {item["name"] for item in api.get_loras()}
    finally:
        added.unlink()
        requests.post(lora_server["url"] + "sdapi/v1/refresh-loras", timeout=30)


def test_webuiapi_txt2img_with_a_lora_tag(lora_server):
    import requests
    import webuiapi

    port = int(lora_server["url"].rstrip("/").rsplit(":", 1)[1])
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler", steps=2)
    fields = dict(seed=5, width=64, height=64)
    plain = api.txt2img(prompt="a red circle", **fields)
    tagged = api.txt2img(prompt="a red circle <lora:shapes-outline:1>", **fields)
    info = tagged.info["infotexts"][0]
    assert info.startswith("a red circle <lora:shapes-outline:1>\n") and 'Lora hashes: "shapes-outline: ' in info
    assert not np.array_equal(np.asarray(plain.image), np.asarray(tagged.image))
    # PNG info reads the tags back in the prompt, and the hash as a parameter
    read = api.png_info(tagged.image)
    assert "<lora:shapes-outline:1>" in read.info

    url = lora_server["url"] + "sdapi/v1/"
    bad = requests.post(url + "txt2img", json={"prompt": "x <lora:nosuch:1>", "steps": 1, "width": 64, "height": 64},
                        timeout=60)
    assert bad.status_code == 422 and "prompt" in bad.text and "nosuch" in bad.text and "shapes-outline" in bad.text
    wrong = requests.post(url + "txt2img", json={"prompt": "x <lora:xl-style:1>", "steps": 1, "width": 64, "height": 64},
                          timeout=60)
    assert wrong.status_code == 422 and "SDXL" in wrong.text
    assert requests.post(url + "options", json={"extra_networks_default_multiplier": "lots"}, timeout=30).status_code == 422
    assert requests.post(url + "options", json={"extra_networks_default_multiplier": 0.5}, timeout=30).status_code == 200
    try:
        assert requests.get(url + "options", timeout=30).json()["extra_networks_default_multiplier"] == 0.5
    finally:
        requests.post(url + "options", json={"extra_networks_default_multiplier": 1.0}, timeout=30)


def test_browser_settings_weight_and_a_tagged_prompt(lora_server, browser):
    """The Settings tab's default LoRA weight is used at once by a `<lora:name>` typed in Text to image, whose
    infotext keeps the tag and gives the hash; an unknown LoRA is an error naming it."""
    engine = lora_server["engine"]
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        page.goto(lora_server["url"])
        page.get_by_role("tab", name="Settings", exact=True).first.click()
        field = page.locator("#settings-lora-weight input[type=number]")
        field.fill("0.5")
        field.press("Enter")
        page.locator("#settings-apply").click()
        page.wait_for_function("document.querySelector('#settings-result')?.innerText.includes('Settings saved')")
        assert engine.settings.extra_networks_default_multiplier == 0.5

        page.get_by_role("tab", name="Text to image", exact=True).first.click()
        page.locator("#txt2img-prompt textarea").fill("a red circle <lora:shapes-outline>")
        steps = page.locator("#txt2img-steps input[type=number]")
        steps.fill("2")
        steps.press("Enter")
        page.locator("#txt2img-generate").click()
        page.wait_for_function("document.querySelector('#txt2img-infotext textarea').value.includes('Lora hashes')",
                               timeout=120_000)
        info = page.locator("#txt2img-infotext textarea").input_value()
        assert info.startswith("a red circle <lora:shapes-outline>") and 'Lora hashes: "shapes-outline: ' in info

        page.locator("#txt2img-prompt textarea").fill("a red circle <lora:nosuch:1>")
        page.locator("#txt2img-generate").click()
        page.get_by_text("unknown LoRA 'nosuch'", exact=False).first.wait_for(timeout=60_000)
    finally:
        engine.settings.extra_networks_default_multiplier = 1.0
        page.close()
