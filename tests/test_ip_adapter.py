"""IP-Adapter (webui/engine/ip_adapter/): tiny random IP-Adapters for the tiny SD 1.x and SDXL and a tiny
CLIPVisionModelWithProjection, run as units: a unit changes the picture, weight 0 and no unit are the
checkpoint bit for bit, the UNet is as it was after a job (processors, encoder_hid_proj, config, weights),
two units at once, the guidance window, another family's adapter and unknown names refused, txt2img and
img2img, a scheduler and a function sampler, with a ControlNet pipeline, and sd-webui-controlnet's API
through webuiapi's ControlNetUnit."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_models
from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.requests import Txt2ImgRequest


def ip_adapter_state(unet, embed_dim: int, seed: int, scale: float = 0.5) -> dict[str, torch.Tensor]:
    """A random IP-Adapter for `unet` in the file layout (diffusers' tests' create_ip_adapter_state_dict):
    image_proj.proj/norm (4 tokens) and ip_adapter.<1, 3, 5, ...>.to_k_ip/to_v_ip per cross-attention layer."""
    generator = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    blocks = list(unet.config.block_out_channels)
    state = {
        "image_proj.proj.weight": torch.randn(cross * 4, embed_dim, generator=generator) * scale,
        "image_proj.proj.bias": torch.randn(cross * 4, generator=generator) * scale,
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = blocks[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(blocks))[int(name[len("up_blocks.")])]
        else:
            hidden = blocks[int(name[len("down_blocks.")])]
        state[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(hidden, cross, generator=generator) * scale
        state[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(hidden, cross, generator=generator) * scale
        key += 2
    return state


def save_image_encoder(folder: Path, projection_dim: int = 32) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, projection_dim=projection_dim, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=37, image_size=32, patch_size=4, num_channels=3)
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def ip_models_dir(models_dir, tmp_path_factory) -> Path:
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("ip_models")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "tiny-sd").symlink_to(models_dir / "checkpoints" / "tiny-sd")
    tiny_models.make_tiny_sdxl(root / "checkpoints" / "tiny-sdxl")
    sd = UNet2DConditionModel.from_pretrained(root / "checkpoints" / "tiny-sd" / "unet")
    xl = UNet2DConditionModel.from_pretrained(root / "checkpoints" / "tiny-sdxl" / "unet")
    (root / "ipadapter").mkdir()
    save_file(ip_adapter_state(sd, 32, 1), root / "ipadapter" / "ip-adapter_sd15.safetensors")
    save_file(ip_adapter_state(sd, 32, 2), root / "ipadapter" / "ip-adapter_sd15_light.safetensors")
    save_file(ip_adapter_state(xl, 32, 3), root / "ipadapter" / "ip-adapter_sdxl.safetensors")
    save_file({"something.weight": torch.zeros(2)}, root / "ipadapter" / "not-an-adapter.safetensors")
    (root / "ControlNet").mkdir()  # sd-webui-controlnet's folder holds both: only the IP-Adapters are listed
    save_file(ip_adapter_state(sd, 32, 4), root / "ControlNet" / "ip-adapter_in_controlnet.safetensors")
    save_file({"controlnet_cond_embedding.conv_in.weight": torch.zeros(2)}, root / "ControlNet" / "control_canny.safetensors")
    folder = save_image_encoder(root / "clip_vision" / "clip-vit-h-tiny")
    # the same encoder as one file with its config beside it, and an OpenCLIP-style file without one
    config = json.loads((folder / "config.json").read_text())
    save_file(load_file(str(folder / "model.safetensors")), root / "clip_vision" / "single-file-encoder.safetensors")
    (root / "clip_vision" / "single-file-encoder.json").write_text(json.dumps(config))
    save_file({"visual.proj": torch.zeros(2)}, root / "clip_vision" / "open_clip_h.safetensors")
    return root


@pytest.fixture()
def ip_engine(ip_models_dir, tmp_path):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=ip_models_dir, outputs_dir=tmp_path / "outputs", default_model="tiny-sd",
                        save_images=False)
    engine = build_engine(settings, DeviceChoice("cpu"))
    engine.catalog.scan()
    return engine


def reference(seed: int = 0, size: int = 48):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def unit(**fields):
    return {"image": reference(), "module": "ip-adapter_clip_sd15", "model": "ip-adapter_sd15", "weight": 1.0, **fields}


def _image(engine, units=None, model="tiny-sd", sampler="Euler", steps=3):
    addons = {"ip_adapter": units} if units is not None else {}
    request = Txt2ImgRequest("a red circle", steps=steps, width=64, height=64, seed=11, model=model,
                             sampler_name=sampler, addons=addons)
    result = engine.txt2img(request)
    return np.asarray(result.images[0], dtype=np.int16), result


def _unet_snapshot(unet):
    return ({k: v.clone() for k, v in unet.state_dict().items()}, dict(unet.attn_processors),
            unet.encoder_hid_proj, unet.config.encoder_hid_dim_type, "encoder_hid_proj" in unet._modules)


def _assert_unchanged(unet, snapshot):
    weights, processors, projection, hid_type, registered = snapshot
    after = unet.state_dict()
    assert after.keys() == weights.keys()
    assert all(torch.equal(after[k], weights[k]) for k in weights)
    now = unet.attn_processors
    assert now.keys() == processors.keys() and all(now[k] is processors[k] for k in processors)
    assert unet.encoder_hid_proj is projection is None
    assert unet.config.encoder_hid_dim_type == hid_type
    assert ("encoder_hid_proj" in unet._modules) == registered


def test_a_unit_changes_the_picture_weight_zero_is_plain_and_the_unet_is_restored(ip_engine):
    plain, _ = _image(ip_engine)
    unet = ip_engine.models.get("tiny-sd").pipeline.unet
    snapshot = _unet_snapshot(unet)

    zero, result = _image(ip_engine, [unit(weight=0)])
    assert np.array_equal(zero, plain) and "ControlNet 0" not in result.infotexts[0]
    one, result = _image(ip_engine, [unit()])
    assert np.abs(one - plain).max() > 10
    assert 'ControlNet 0: "Module: ip-adapter_clip_sd15, Model: ip-adapter_sd15 [' in result.infotexts[0]
    assert "Weight: 1.0, Guidance Start: 0.0, Guidance End: 1.0" in result.infotexts[0]
    _assert_unchanged(unet, snapshot)
    again, _ = _image(ip_engine)
    assert np.array_equal(again, plain)
    # the adapter's modules are kept with the checkpoint and count in the memory budget
    model = ip_engine.models.get("tiny-sd")
    from webui.engine.core.addons import derived_bytes

    assert derived_bytes(model) > 0
    # the same job again reuses them: the same picture
    assert np.array_equal(_image(ip_engine, [unit()])[0], one)
    # another set of units shares what is kept: only the new adapter adds to the budget
    first = derived_bytes(model)
    _image(ip_engine, [unit(), unit(model="ip-adapter_sd15_light")])
    assert derived_bytes(model) == 2 * first


def test_two_units_several_pictures_and_the_guidance_window(ip_engine):
    plain, _ = _image(ip_engine)
    first, _ = _image(ip_engine, [unit()])
    both, result = _image(ip_engine, [unit(), unit(model="ip-adapter_sd15_light [abcdef12]", image=reference(5), weight=0.7)])
    assert not np.array_equal(both, first) and not np.array_equal(both, plain)
    assert "ControlNet 0: " in result.infotexts[0]
    assert 'ControlNet 1: "Module: ip-adapter_clip_sd15, Model: ip-adapter_sd15_light [' in result.infotexts[0]
    several, _ = _image(ip_engine, [unit(image=[reference(0), reference(9)])])
    assert not np.array_equal(several, first)
    # a window after the last step acts on no step: the picture is the plain one
    late, _ = _image(ip_engine, [unit(guidance_start=1.0, guidance_end=1.0)], steps=3)
    # start at 1.0: acts at step i/n = 1 only, which is after the last step (2/3)
    assert np.array_equal(late, plain)
    part, _ = _image(ip_engine, [unit(guidance_start=0.5)], steps=3)
    assert not np.array_equal(part, plain) and not np.array_equal(part, first)


def test_a_unit_without_a_picture_is_skipped_with_a_note(ip_engine):
    plain, _ = _image(ip_engine)
    skipped, result = _image(ip_engine, [unit(image=None)])
    assert np.array_equal(skipped, plain)
    assert any("no image" in w for w in result.warnings)
    assert 'ControlNet 0: "Module: ip-adapter_clip_sd15, Model: ip-adapter_sd15, Skipped: no image"' in result.infotexts[0]


def test_function_sampler_and_img2img(ip_engine):
    from webui.engine.generation.img2img import Img2ImgRequest

    plain, _ = _image(ip_engine, sampler="DPM++ 3M SDE")
    one, _ = _image(ip_engine, [unit()], sampler="DPM++ 3M SDE")
    assert np.abs(one - plain).max() > 10

    def run(units):
        request = Img2ImgRequest(prompt="a red circle", init_image=reference(3, 64), steps=3, width=64, height=64, seed=1,
                                 denoising_strength=0.75, sampler_name="Euler", save_images=False,
                                 addons={"ip_adapter": units} if units else {})
        result = ip_engine.img2img(request)
        return np.asarray(result.images[0], dtype=np.int16), result

    plain, _ = run(None)
    zero, _ = run([unit(weight=0)])
    one, result = run([unit()])
    assert np.array_equal(zero, plain) and np.abs(one - plain).max() > 10 and "ControlNet 0" in result.infotexts[0]


def test_sdxl_adapter_on_sdxl_and_refused_on_sd1(ip_engine):
    xl_unit = unit(model="ip-adapter_sdxl", module="ip-adapter-auto")
    plain, _ = _image(ip_engine, model="tiny-sdxl")
    unet = ip_engine.models.get("tiny-sdxl").pipeline.unet
    snapshot = _unet_snapshot(unet)
    one, _ = _image(ip_engine, [xl_unit], model="tiny-sdxl")
    assert np.abs(one - plain).max() > 10
    _assert_unchanged(unet, snapshot)
    with pytest.raises(InvalidRequest) as err:
        _image(ip_engine, [xl_unit])
    assert "ip-adapter_sdxl" in str(err.value) and "SD 1.x" in str(err.value) and "width 80" in str(err.value)
    assert err.value.field == "addons.ip_adapter[0].model"
    with pytest.raises(InvalidRequest) as err:
        _image(ip_engine, [unit()], model="tiny-sdxl")
    assert "SDXL" in str(err.value) and "ip-adapter_sd15" in str(err.value)


def test_unknown_names_and_bad_units_are_refused_before_the_job(ip_engine):
    with pytest.raises(InvalidRequest) as err:
        ip_engine.addons.build({"ip_adapter": [unit(model="nosuch")]})
    assert "nosuch" in str(err.value) and "ip-adapter_sd15" in str(err.value) and "ip-adapter_sdxl" in str(err.value)
    with pytest.raises(InvalidRequest) as err:
        ip_engine.addons.build({"ip_adapter": [unit(module="ip-adapter_face_id")]})
    assert "ip-adapter-auto" in str(err.value) and err.value.field.endswith(".module")
    with pytest.raises(InvalidRequest) as err:
        ip_engine.addons.build({"ip_adapter": [unit(model="not-an-adapter")]})
    assert "image_proj" in str(err.value)
    with pytest.raises(InvalidRequest):
        ip_engine.addons.build({"ip_adapter": [unit(guidance_start=0.8, guidance_end=0.2)]})
    with pytest.raises(InvalidRequest) as err:
        ip_engine.addons.build({"ip_adapter": [unit(image="not base64!")]})
    assert err.value.field == "addons.ip_adapter[0].image"


def test_catalog_listing_and_family_from_shapes(ip_engine):
    import webui.engine.ip_adapter as ip
    from webui.engine.ip_adapter.files import family_of

    listed = {m["name"]: m for m in ip.list_models(ip_engine.catalog)}
    assert set(listed) == {"ip-adapter_sd15", "ip-adapter_sd15_light", "ip-adapter_sdxl", "ip-adapter_in_controlnet"}
    title = listed["ip-adapter_sd15"]["title"]
    assert title.startswith("ip-adapter_sd15 [") and len(title) == len("ip-adapter_sd15 [12345678]")
    assert listed["ip-adapter_sd15"]["kind"] == "ipadapter"
    encoders = {e.name: e for e in ip_engine.catalog.of_kind("clip_vision")}
    assert set(encoders) == {"clip-vit-h-tiny", "single-file-encoder", "open_clip_h"}
    assert encoders["single-file-encoder"].problem is None and encoders["clip-vit-h-tiny"].problem is None
    assert "config" in encoders["open_clip_h"].problem
    # the real files' widths: SD 1.5's adapter reads 768 wide text, SDXL's 2048
    assert family_of({"ip_adapter.1.to_k_ip.weight": (320, 768)}) == "sd1"
    assert family_of({"ip_adapter.1.to_k_ip.weight": (640, 2048)}) == "sdxl"
    assert family_of({"ip_adapter.1.to_k_ip.weight": (32, 80)}) is None
    assert ip.list_models(ip_engine.catalog, family="sd1")[0]["family"] is None  # the tiny ones: unknown, listed


def test_api_script_reads_only_ip_adapter_units():
    from webui.engine.ip_adapter import from_api_script

    assert from_api_script("controlnet", [{"module": "canny", "model": "x"}]) is None
    found = from_api_script("controlnet", [{"module": "canny"}, {"module": "ip-adapter_clip_sd15", "model": "m"}])
    assert found["units"] == [{"module": "ip-adapter_clip_sd15", "model": "m", "index": 1}]
    assert found["field"] == "alwayson_scripts.controlnet.args" and "unread" not in found
    # with no ControlNet add-on to read them, the other enabled units are named, to be warned about
    alone = from_api_script("controlnet", [{"module": "canny"}, {"module": "depth", "enabled": False}], alone=True)
    assert alone == {"units": [], "field": "alwayson_scripts.controlnet.args", "unread": [[0, "canny"]]}


def test_a_controlnet_reader_takes_the_other_units(ip_engine):
    """While no add-on reads ControlNet units, the reply says they were not applied; once one registers for
    the script, they are its to read (and no longer named here)."""
    from webui.engine.core.addons import AddonSpec

    scripts = {"controlnet": {"args": [{"module": "canny", "model": "c"}]}}
    found, unread = ip_engine.addons.from_api_scripts(scripts)
    assert unread == [] and found["ip_adapter"]["unread"] == [[0, "canny"]]
    warnings = []
    ip_engine.addons.build(found)[0].apply(type("Call", (), {"warnings": warnings, "infotext": {}})())
    assert "canny" in warnings[0] and "not applied" in warnings[0]
    ip_engine.addons.register(AddonSpec("controlnet_units", lambda value: None, api_scripts=("ControlNet",),
                                        from_api_script=lambda title, args: args))
    found, _ = ip_engine.addons.from_api_scripts(scripts)
    assert "ip_adapter" not in found and found["controlnet_units"] == scripts["controlnet"]["args"]


def test_with_a_controlnet_pipeline(ip_engine):
    """ControlNet units come from another add-on: one handing the resolver a tiny ControlNet is enough to see
    the ControlNet variant of the pipeline take the IP-Adapter's embeddings."""
    from diffusers import ControlNetModel

    from webui.engine.core.addons import Addon, AddonSpec

    unet = ip_engine.models.get("tiny-sd").pipeline.unet
    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16))

    class TinyControl(Addon):
        name = "tiny_control"

        def pipeline_components(self, ctx, model):
            return {"controlnet": controlnet}

        def apply(self, call):
            call.kwargs["image"] = reference(4, 64)

    ip_engine.addons.register(AddonSpec("tiny_control", lambda value: TinyControl() if value else None))
    snapshot = _unet_snapshot(unet)

    def run(units):
        request = Txt2ImgRequest("a red circle", steps=2, width=64, height=64, seed=11, sampler_name="Euler",
                                 addons={"tiny_control": True, **({"ip_adapter": units} if units else {})})
        result = ip_engine.txt2img(request)
        return np.asarray(result.images[0], dtype=np.int16)

    plain = run(None)
    assert not np.array_equal(run([unit()]), plain)
    assert np.array_equal(run([unit(weight=0)]), plain)
    _assert_unchanged(unet, snapshot)


def test_sdapi_alwayson_controlnet_with_webuiapi_units(ip_engine):
    import webuiapi
    from fastapi import FastAPI
    from PIL import Image
    from fastapi.testclient import TestClient

    from webui.api import ApiContext, mount

    app = FastAPI()
    mount(app, ApiContext(ip_engine))
    client = TestClient(app)
    body = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 5, "sampler_name": "Euler"}

    def picture(reply):
        assert reply.status_code == 200, reply.text
        data = reply.json()
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data["images"][0]))), dtype=np.int16), data

    plain, _ = picture(client.post("/sdapi/v1/txt2img", json=body))
    units = [webuiapi.ControlNetUnit(image=reference(), module="ip-adapter_clip_sd15", model="ip-adapter_sd15 [00000000]",
                                     weight=1.0).to_dict()]
    one, data = picture(client.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {"controlnet": {"args": units}}}))
    assert np.abs(one - plain).max() > 10
    info = data["info"]
    assert 'ControlNet 0: \\"Module: ip-adapter_clip_sd15' in info or 'ControlNet 0: "Module: ip-adapter_clip_sd15' in info
    assert "alwayson_scripts not applied" not in info
    zero = [webuiapi.ControlNetUnit(image=reference(), module="ip-adapter_clip_sd15", model="ip-adapter_sd15",
                                    weight=0).to_dict()]
    same, _ = picture(client.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {"controlnet": {"args": zero}}}))
    assert np.array_equal(same, plain)
    bad = client.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {"controlnet": {"args": [
        {"module": "ip-adapter_clip_sd15", "model": "nosuch", "image": ""}]}}})
    assert bad.status_code == 422 and "nosuch" in bad.text and "ip-adapter_sd15" in bad.text


def test_batches_no_cfg_and_hires_fix(ip_engine):
    from webui.engine.generation.requests import HiresFix

    def run(units, **fields):
        request = Txt2ImgRequest("a red circle", steps=2, width=64, height=64, seed=11, sampler_name="Euler",
                                 addons={"ip_adapter": units} if units else {}, **fields)
        result = ip_engine.txt2img(request)
        return [np.asarray(image, dtype=np.int16) for image in result.images], result

    hires = HiresFix(scale=2, upscaler="Latent", denoising_strength=0.6)
    for fields in ({"batch_size": 2}, {"cfg_scale": 1.0}, {"hires": hires}):
        plain, _ = run(None, **fields)
        one, result = run([unit()], **fields)
        assert len(one) == len(plain) and all(np.abs(a - b).max() > 10 for a, b in zip(one, plain)), fields
        assert "ControlNet 0" in result.infotexts[0], fields


def test_pickle_adapter_needs_the_opt_in(ip_models_dir, tmp_path):
    from safetensors.torch import load_file

    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "tiny-sd").symlink_to(ip_models_dir / "checkpoints" / "tiny-sd")
    (root / "clip_vision").symlink_to(ip_models_dir / "clip_vision")
    (root / "ip_adapter").mkdir()  # sd-webui-controlnet's other folder name
    flat = load_file(str(ip_models_dir / "ipadapter" / "ip-adapter_sd15.safetensors"))
    nested = {part: {k[len(part) + 1:]: v for k, v in flat.items() if k.startswith(part + ".")}
              for part in ("image_proj", "ip_adapter")}
    torch.save(nested, root / "ip_adapter" / "ip-adapter_sd15.bin")
    for allow in (False, True):
        settings = Settings(models_dir=root, outputs_dir=tmp_path / "out", default_model="tiny-sd", save_images=False,
                            allow_pickle=allow)
        engine = build_engine(settings, DeviceChoice("cpu"))
        engine.catalog.scan()
        if not allow:
            with pytest.raises(Exception, match="pickle"):
                _image(engine, [unit()])
        else:
            from_pickle, _ = _image(engine, [unit()])
            plain, _ = _image(engine)
            assert np.abs(from_pickle - plain).max() > 10


def test_a_failed_call_leaves_the_unet_plain(ip_engine):
    from webui.engine.core.addons import Addon, AddonSpec

    class Boom(Addon):
        name = "boom"

        def on_step(self, step):
            raise RuntimeError("boom at step %d" % step.step)

    ip_engine.addons.register(AddonSpec("boom", lambda value: Boom() if value else None))
    unet = ip_engine.models.get("tiny-sd").pipeline.unet
    snapshot = _unet_snapshot(unet)
    request = Txt2ImgRequest("a red circle", steps=2, width=64, height=64, seed=11, sampler_name="Euler",
                             addons={"ip_adapter": [unit(module="IP_Adapter_Clip_SD15")], "boom": True})
    with pytest.raises(Exception, match="boom"):
        ip_engine.txt2img(request)
    _assert_unchanged(unet, snapshot)


def test_a_single_file_encoder_with_its_config_encodes_as_its_folder_does(ip_engine):
    folder, _ = _image(ip_engine, [unit(image_encoder="clip-vit-h-tiny")])
    single, _ = _image(ip_engine, [unit(image_encoder="single-file-encoder")])
    assert np.array_equal(folder, single)
    with pytest.raises(InvalidRequest) as err:
        _image(ip_engine, [unit(image_encoder="nosuch")])
    assert "single-file-encoder" in str(err.value) and err.value.field.endswith(".image_encoder")


def test_a_failing_apply_puts_the_unet_back_itself(ip_engine, monkeypatch):
    """apply() fails after the processors went in (the embeddings cannot be moved): the UNet is put back
    by apply itself, since the session releases only the add-ons whose apply returned."""
    from webui.engine.ip_adapter.files import ImageEncoder

    class Unmovable:
        def __getitem__(self, key):
            raise RuntimeError("no room for the embeddings")

    unet = ip_engine.models.get("tiny-sd").pipeline.unet
    snapshot = _unet_snapshot(unet)
    seen = []
    real = unet.set_attn_processor
    monkeypatch.setattr(unet, "set_attn_processor", lambda procs: (seen.append(len(procs)), real(procs)))
    monkeypatch.setattr(ImageEncoder, "encode", lambda self, images: Unmovable())
    with pytest.raises(Exception, match="no room"):
        _image(ip_engine, [unit()])
    assert len(seen) == 2  # swapped in, then back
    monkeypatch.undo()
    _assert_unchanged(unet, snapshot)
