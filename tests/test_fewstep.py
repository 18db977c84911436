"""Few-step models (issue 30): LCM, TCD, Turbo, Lightning and Hyper-SD checkpoints and LoRAs are found from
their scheduler config, safetensors metadata or name, and run with their sampler, steps and CFG scale
where the request leaves those unset (engine requests, /sdapi, the Text to image tab's widgets)."""

from __future__ import annotations

import json

import pytest

import lora_files
import tiny_models


def _set_scheduler(folder, **config):
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))


@pytest.fixture(scope="module")
def fewstep_dir(tmp_path_factory):
    """Tiny SD 1.x checkpoints: an ordinary one, an LCM folder (LCMScheduler), a Turbo folder (Euler,
    trailing spacing), a Lightning single file (modelspec.title) and an ordinary single file, a Flux without
    guidance embedding (schnell) and an SD3 Turbo by name, plus an LCM LoRA and an ordinary LoRA."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("fewstep_models")
    checkpoints = root / "checkpoints"
    sd = tiny_models.make_tiny_sd(checkpoints / "tiny-sd")
    lcm = tiny_models.make_tiny_sd(checkpoints / "tiny-distilled")
    _set_scheduler(lcm, _class_name="LCMScheduler", original_inference_steps=50, timestep_scaling=10.0)
    turbo = tiny_models.make_tiny_sd(checkpoints / "tiny-adversarial")
    _set_scheduler(turbo, _class_name="EulerDiscreteScheduler", timestep_spacing="trailing")
    single = root / "sources" / "single.safetensors"
    single.parent.mkdir()
    tiny_models.save_ldm_single_file(sd, single)
    save_file(load_file(str(single)), str(checkpoints / "tiny-xl-merge.safetensors"),
              metadata={"modelspec.title": "SDXL-Lightning 2-step", "modelspec.architecture": "stable-diffusion-v1"})
    tiny_models.save_ldm_single_file(sd, checkpoints / "tiny-plain-single.safetensors")
    tiny_models.save_config_folder(sd, root / "configs" / "sd1")
    tiny_models.make_tiny_flux(checkpoints / "tiny-flow-fast", guidance=False)  # schnell: no guidance embedding
    tiny_models.make_tiny_sd3(checkpoints / "tiny-sd3.5-large-turbo")
    pipe = StableDiffusionPipeline.from_pretrained(sd)
    lora_files.save_kohya(pipe, root / "Lora" / "fast-lcm-lora-sd15.safetensors", scale=0.01)
    lora_files.save_kohya(pipe, root / "Lora" / "lightning-bolts.safetensors", scale=0.01)  # a style, not Lightning
    return root


@pytest.fixture()
def fewstep_engine(fewstep_dir, tmp_path):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=fewstep_dir, outputs_dir=tmp_path / "outputs", default_model="tiny-sd", save_images=False)
    engine = build_engine(settings, DeviceChoice("cpu"))
    engine.catalog.scan()
    return engine


@pytest.mark.parametrize("name, kind, steps, cfg", [
    ("sdxl_lightning_4step_lora", "lightning", 4, 1.0),
    ("sdxl_lightning_8step", "lightning", 8, 1.0),
    ("Hyper-SDXL-8steps-lora", "hyper", 8, 1.0),
    ("Hyper-SD15-12steps-CFG-lora", "hyper", 12, 5.0),
    ("lcm-lora-sdxl", "lcm", 4, 1.5),
    ("dreamshaper_8LCM", "lcm", 4, 1.5),
    ("TCD-SDXL-LoRA", "tcd", 4, 1.0),
    ("sd_xl_turbo_1.0_fp16", "turbo", 4, 1.0),
    ("DreamShaperXL_Turbo_v2_1", "turbo", 4, 1.0),
    ("flux1-schnell-Q8_0", "schnell", 4, 1.0),
])
def test_names_say_the_recipe(name, kind, steps, cfg):
    from webui.engine.models.fewstep import from_texts

    recipe = from_texts([name], "file name", lora=name.endswith("lora"))
    assert (recipe.kind, recipe.steps, recipe.cfg_scale) == (kind, steps, cfg)


@pytest.mark.parametrize("name, lora", [
    ("hyperrealism_v3", False), ("epicrealism_naturalSin", False), ("xlcmodel", False), ("turbocharged", False),
    ("lightning-bolts", True), ("turbo-car-style", True),  # style LoRAs named after the word: a step count is needed
])
def test_ordinary_names_are_not_few_step(name, lora):
    from webui.engine.models.fewstep import from_texts

    assert from_texts([name], "file name", lora=lora) is None


def test_catalog_reads_configs_and_metadata(fewstep_engine):
    catalog = fewstep_engine.catalog
    found = {e.name: e.few_step for e in catalog.entries}
    assert found["tiny-sd"] is None and found["tiny-plain-single"] is None
    assert (found["tiny-distilled"].kind, found["tiny-distilled"].source) == ("lcm", "scheduler config")
    assert (found["tiny-adversarial"].kind, found["tiny-adversarial"].source) == ("turbo", "scheduler config")
    lightning = found["tiny-xl-merge"]
    assert (lightning.kind, lightning.steps, lightning.source) == ("lightning", 2, "metadata")
    assert "SD 1.x · Lightning" in catalog.title(catalog.find("tiny-xl-merge"))
    assert (found["tiny-flow-fast"].kind, found["tiny-flow-fast"].source) == ("schnell", "transformer config")
    assert (found["tiny-sd3.5-large-turbo"].kind, found["tiny-sd3.5-large-turbo"].source) == ("turbo", "name")


def _params(result):
    from webui.engine.core.infotext import parse_infotext

    return parse_infotext(result.infotexts[0]).params


def test_a_request_without_settings_runs_the_models_recipe(fewstep_engine):
    from webui.engine.generation.requests import Txt2ImgRequest

    lcm = _params(fewstep_engine.txt2img(Txt2ImgRequest(prompt="a red circle", model="tiny-distilled", width=64, height=64,
                                                        seed=3)))
    assert (lcm["Sampler"], lcm["Steps"], lcm["CFG scale"]) == ("LCM", "4", "1.5")
    turbo = _params(fewstep_engine.txt2img(Txt2ImgRequest(prompt="a red circle", model="tiny-adversarial", width=64,
                                                          height=64, seed=3)))
    assert (turbo["Sampler"], turbo["Schedule type"], turbo["Steps"], turbo["CFG scale"]) == ("Euler a", "SGM Uniform", "4", "1")
    # what the request names wins
    mine = _params(fewstep_engine.txt2img(Txt2ImgRequest(prompt="a red circle", model="tiny-distilled", width=64, height=64,
                                                         seed=3, steps=2, cfg_scale=1.0, sampler_name="Euler")))
    assert (mine["Sampler"], mine["Steps"], mine["CFG scale"]) == ("Euler", "2", "1")
    # flow models run their steps and CFG with the flow Euler step
    for model in ("tiny-flow-fast", "tiny-sd3.5-large-turbo"):
        flow = _params(fewstep_engine.txt2img(Txt2ImgRequest(prompt="a red circle", model=model, width=64, height=64,
                                                             seed=3)))
        assert (flow["Sampler"], flow["Steps"], flow["CFG scale"]) == ("Flow Euler", "4", "1"), model
    # an ordinary model keeps the ordinary defaults
    plain = _params(fewstep_engine.txt2img(Txt2ImgRequest(prompt="a red circle", model="tiny-sd", width=64, height=64,
                                                          seed=3)))
    assert (plain["Sampler"], plain["Steps"], plain["CFG scale"]) == ("DPM++ 2M", "20", "7")


def test_a_few_step_lora_in_the_prompt_sets_the_recipe(fewstep_engine):
    from webui.engine.generation.requests import Txt2ImgRequest

    with_lora = _params(fewstep_engine.txt2img(Txt2ImgRequest(prompt="a red circle <lora:fast-lcm-lora-sd15:1>",
                                                              model="tiny-sd", width=64, height=64, seed=3)))
    assert (with_lora["Sampler"], with_lora["Steps"], with_lora["CFG scale"]) == ("LCM", "4", "1.5")
    style = _params(fewstep_engine.txt2img(Txt2ImgRequest(prompt="a red circle <lora:lightning-bolts:1>",
                                                          model="tiny-sd", width=64, height=64, seed=3, steps=2)))
    assert (style["Sampler"], style["CFG scale"]) == ("DPM++ 2M", "7")


def test_sdapi_fills_what_the_client_left_out(fewstep_dir, tmp_path):
    from fastapi.testclient import TestClient

    from conftest import make_api_app
    from webui.api.sdapi.fields import Txt2ImgBody
    from webui.api.sdapi.mapping import txt2img_request

    app, engine = make_api_app(fewstep_dir, tmp_path / "out")
    engine.catalog.scan()
    client = TestClient(app)
    body = {"prompt": "a red circle", "width": 64, "height": 64, "seed": 1,
            "override_settings": {"sd_model_checkpoint": "tiny-distilled"}}
    info = json.loads(client.post("/sdapi/v1/txt2img", json=body).json()["info"])
    assert (info["sampler_name"], info["steps"], info["cfg_scale"]) == ("LCM", 4, 1.5)
    assert "Steps: 4, Sampler: LCM" in info["infotexts"][0]
    sent = json.loads(client.post("/sdapi/v1/txt2img", json={**body, "steps": 3, "cfg_scale": 2}).json()["info"])
    assert (sent["sampler_name"], sent["steps"], sent["cfg_scale"]) == ("LCM", 3, 2)
    listed = {m["name"]: m for m in client.get("/kiri/v1/models").json()["checkpoint"]}
    assert listed["tiny-distilled"]["few_step"] == {"kind": "lcm", "sampler_name": "LCM", "scheduler": None, "steps": 4,
                                                    "cfg_scale": 1.5, "source": "scheduler config"}
    assert listed["tiny-sd"]["few_step"] is None
    # an ordinary checkpoint: A1111's defaults, as before
    ordinary = txt2img_request(Txt2ImgBody(prompt="x", override_settings={"sd_model_checkpoint": "tiny-sd"}), [], engine)
    assert (ordinary.steps, ordinary.cfg_scale, ordinary.sampler_name) == (50, 7.0, None)


def test_the_tab_follows_the_picked_models_defaults(fewstep_engine):
    from webui.ui.txt2img import defaults_update

    catalog = fewstep_engine.catalog
    ordinary = {"sampler": "DPM++ 2M", "schedule": "Automatic", "steps": 20, "cfg": 7.0}
    lcm_title = catalog.title(catalog.find("tiny-distilled"))
    # values left at the ordinary model's defaults take the LCM model's, and the note says why
    sampler, schedule, steps, cfg, note, state = defaults_update(fewstep_engine, lcm_title, "a red circle", "DPM++ 2M",
                                                                 "Automatic", 20, 7.0, ordinary, model_changed=True)
    assert (sampler["value"], schedule["value"], steps["value"], cfg["value"]) == ("LCM", "Automatic", 4, 1.5)
    assert note["visible"] and "LCM few-step this model (from its scheduler config): LCM, 4 steps, CFG 1.5" in note["value"]
    assert state == {"sampler": "LCM", "schedule": "Automatic", "steps": 4, "cfg": 1.5}
    # a value the user changed is kept
    _, schedule, steps, cfg, _, _ = defaults_update(fewstep_engine, lcm_title, "", "DPM++ 2M", "Karras", 30, 7.0, ordinary,
                                                    model_changed=True)
    assert "value" not in schedule and "value" not in steps and cfg["value"] == 1.5
    # and back on an ordinary model: 20 steps at CFG 7, the note hidden
    _, _, steps, cfg, note, _ = defaults_update(fewstep_engine, "tiny-sd", "", "LCM", "Automatic", 4, 1.5, state,
                                                model_changed=True)
    assert (steps["value"], cfg["value"], note["visible"]) == (20, 7.0, False)


def test_the_tab_follows_a_few_step_lora_in_the_prompt(fewstep_engine):
    from webui.ui.txt2img import defaults_update

    ordinary = {"sampler": "DPM++ 2M", "schedule": "Automatic", "steps": 20, "cfg": 7.0}
    # typing an ordinary prompt changes nothing
    typed = defaults_update(fewstep_engine, "tiny-sd", "a red circle <lora:lightning-bolts:1>", "DPM++ 2M", "Automatic",
                            20, 7.0, ordinary)
    assert all("value" not in u for u in typed[:5]) and typed[5] == ordinary
    # the LCM LoRA's card puts its tag in: its recipe, the sampler too (it was at the default)
    sampler, _, steps, cfg, note, state = defaults_update(fewstep_engine, "tiny-sd", "a red circle <lora:fast-lcm-lora-sd15:1>",
                                                          "DPM++ 2M", "Automatic", 20, 7.0, ordinary)
    assert (sampler["value"], steps["value"], cfg["value"]) == ("LCM", 4, 1.5) and "LoRA fast-lcm-lora-sd15" in note["value"]
    # taken out again: the model's defaults come back
    sampler, _, steps, cfg, _, back = defaults_update(fewstep_engine, "tiny-sd", "a red circle", "LCM", "Automatic", 4, 1.5,
                                                      state)
    assert (sampler["value"], steps["value"], cfg["value"], back) == ("DPM++ 2M", 20, 7.0, ordinary)


def test_every_recipe_names_a_sampler_and_schedule_that_build(fewstep_engine):
    """A recipe's sampler and schedule are registry names that build on an SD model's scheduler config (and
    on a flow model's, where every recipe runs Flow Euler)."""
    from dataclasses import replace

    from webui.engine.generation.defaults import defaults_for
    from webui.engine.models.fewstep import RECIPES

    catalog = fewstep_engine.catalog
    for base in ("tiny-sd", "tiny-sd3.5-large-turbo"):
        model = fewstep_engine.models.get(base)
        for kind, recipe in RECIPES.items():
            entry = catalog.find(base)
            defaults = defaults_for(replace(entry, few_step=recipe))
            sampler, schedule = fewstep_engine.samplers.resolve(defaults.sampler_name, defaults.scheduler)
            built = sampler.build(model.base_scheduler_config, schedule, model.prediction)
            getattr(built, "close", lambda: None)()
            if kind in ("turbo", "lightning", "hyper") and model.prediction != "flow":
                assert built.config.timestep_spacing == "trailing", kind
