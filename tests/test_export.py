"""`python -m webui.tools.export_checkpoint`: the shipped models as single files in the original layouts.

The LDM's file (SD 1.x layout) goes through Kiri's own single-file loader (catalog -> manager ->
diffusers' from_single_file with models/configs/sd1/ written by --configs) and must draw the folder
model's picture. Tolerance: one 8-bit level (max abs pixel difference <= 1). The two pipelines hold
the same float32 tensors (checked exactly) and the same scheduler, so the pictures should agree
bit for bit (they did when this was written); one level leaves room only for a kernel choosing
another summation order on differently laid-out memory, nothing a wrong weight could hide in.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "models" / "checkpoints"
PROMPT = "a large red circle in the centre, blue background"


def _prefixes(keys) -> set[str]:
    out = set()
    for key in keys:
        for prefix in ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.",
                       "text_encoders.clip_l.transformer.", "text_encoders.clip_g.transformer."):
            if key.startswith(prefix):
                out.add(prefix)
                break
        else:
            out.add(key)
    return out


def _same_picture_and_weights(engine, folder_name: str, file_name: str, components: tuple[str, ...]):
    """The folder and its single file give the same picture and hold the same weights; returns both pipelines."""
    from webui.engine.generation.requests import Txt2ImgRequest

    pictures = []
    for name in (folder_name, file_name):
        result = engine.txt2img(Txt2ImgRequest(prompt=PROMPT, seed=5, steps=8, width=64, height=64, model=name))
        assert not result.warnings, result.warnings
        pictures.append(np.asarray(result.images[0].convert("RGB")).astype(int))
    folder, single = pictures
    assert folder.std() > 10  # a picture, not a flat field
    assert np.abs(folder - single).max() <= 1

    a, b = engine.load_model(folder_name).pipeline, engine.load_model(file_name).pipeline
    for component in components:
        sa, sb = getattr(a, component).state_dict(), getattr(b, component).state_dict()
        assert set(sa) == set(sb), component
        assert all(torch.equal(sa[k], sb[k]) for k in sa), component
    return a, b


@pytest.fixture(scope="module")
def exported_ldm(tmp_path_factory):
    """A models folder with the LDM folder and its exported single file (+ models/configs/sd1)."""
    from webui.tools.export_checkpoint import main

    models = tmp_path_factory.mktemp("exp") / "models"
    (models / "checkpoints").mkdir(parents=True)
    shutil.copytree(CHECKPOINTS / "kiri-shapes-ldm", models / "checkpoints" / "kiri-shapes-ldm")
    out = models / "checkpoints" / "kiri-ldm-single.safetensors"
    assert main(["kiri-shapes-ldm", "--models-dir", str(models), "--out", str(out), "--configs"]) == 0
    return models, out


def test_the_ldm_file_is_in_the_sd1_layout(exported_ldm):
    from safetensors import safe_open

    from webui.engine.models.families import family_from_keys, read_safetensors_keys

    _, out = exported_ldm
    keys = read_safetensors_keys(out)
    assert _prefixes(keys) == {"model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model."}
    assert family_from_keys(keys) == "sd1"
    for key in ("model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.out.2.weight", "first_stage_model.decoder.up.0.block.0.conv1.weight",
                "cond_stage_model.transformer.text_model.final_layer_norm.weight"):
        assert key in keys, key
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["kiri.vae_scale_factor"] == "4"
    # every tensor of the folder's UNet, VAE and text encoder, and nothing else
    assert len(keys) == sum(len(read_safetensors_keys(p)) for p in (CHECKPOINTS / "kiri-shapes-ldm").rglob("*.safetensors"))


def test_kiris_single_file_loader_reads_it_back_to_the_same_picture(exported_ldm, tmp_path):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    models, out = exported_ldm
    engine = build_engine(Settings(models_dir=models, outputs_dir=tmp_path, save_images=False), DeviceChoice("cpu"))
    entries = {e.name: e for e in engine.catalog.scan()}
    assert entries["kiri-ldm-single"].format == "single_file" and entries["kiri-ldm-single"].family == "sd1"

    a, b = _same_picture_and_weights(engine, "kiri-shapes-ldm", "kiri-ldm-single", ("unet", "vae", "text_encoder"))
    assert b.vae.config.scaling_factor == a.vae.config.scaling_factor
    assert type(b.scheduler) is type(a.scheduler)


def test_configs_are_not_replaced_without_force(exported_ldm, tmp_path, capsys):
    from webui.tools.export_checkpoint import main

    models, _ = exported_ldm
    index = models / "configs" / "sd1" / "model_index.json"
    assert index.exists() and (models / "configs" / "sd1" / "vae" / "config.json").exists()
    assert not list((models / "configs" / "sd1").rglob("*.safetensors"))
    index.write_text(index.read_text() + " ")
    out = tmp_path / "again.safetensors"
    assert main(["kiri-shapes-ldm", "--models-dir", str(models), "--out", str(out), "--configs"]) == 2
    assert "--force" in capsys.readouterr().out
    assert index.read_text().endswith(" ") and not out.exists()
    assert main(["kiri-shapes-ldm", "--models-dir", str(models), "--out", str(out), "--configs", "--force"]) == 0
    assert not index.read_text().endswith(" ") and out.exists()


def test_the_dit_file_is_in_the_sd3_layout_and_diffusers_converts_it_back(tmp_path):
    """Kiri's DiT as an SD3 reference-layout file; diffusers' own SD3 converters give every tensor back.
    (Reading it back as a whole pipeline is not possible with diffusers 0.42: see models/README.md.)"""
    from diffusers.loaders import single_file_utils as sfu
    from safetensors.torch import load_file

    from webui.engine.models.families import family_from_keys
    from webui.tools.export_checkpoint import main

    out = tmp_path / "dit.safetensors"
    assert main(["kiri-shapes-dit", "--models-dir", str(ROOT / "models"), "--out", str(out)]) == 0
    single = load_file(str(out))
    assert _prefixes(single) == {"model.diffusion_model.", "first_stage_model.", "text_encoders.clip_l.transformer.", "text_encoders.clip_g.transformer."}
    assert family_from_keys(list(single)) == "sd3"
    # (diffusers' own sniffing, infer_diffusers_model_type, goes by SD3's widths and calls it "v1": a
    # loader needs the configuration, as the README says)
    assert sfu.is_clip_sd3_model(single) and sfu.is_open_clip_sd3_model(single)

    folder = CHECKPOINTS / "kiri-shapes-dit"
    transformer = sfu.convert_sd3_transformer_checkpoint_to_diffusers(dict(single))
    want = load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert set(transformer) == set(want)
    assert all(torch.equal(transformer[k], want[k]) for k in want)
    import json

    vae = sfu.convert_ldm_vae_checkpoint(single, json.loads((folder / "vae" / "config.json").read_text()))
    want = load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    assert set(vae) == set(want) and all(torch.equal(vae[k], want[k]) for k in want)
    for component, prefix in (("text_encoder", "text_encoders.clip_l.transformer."), ("text_encoder_2", "text_encoders.clip_g.transformer.")):
        want = load_file(str(folder / component / "model.safetensors"))
        got = sfu.convert_ldm_clip_checkpoint(single, prefix)
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), component


def test_kiris_single_file_loader_reads_the_dit_file_back_to_the_same_picture(tmp_path):
    """The DiT's SD3 file (no T5, two CLIP encoders of one width) loads back through Kiri's own
    single-file loader, which assembles it part by part (diffusers' pipeline loader cannot)."""
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings
    from webui.tools.export_checkpoint import main

    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    shutil.copytree(CHECKPOINTS / "kiri-shapes-dit", models / "checkpoints" / "kiri-shapes-dit")
    out = models / "checkpoints" / "kiri-dit-single.safetensors"
    assert main(["kiri-shapes-dit", "--models-dir", str(models), "--out", str(out), "--configs"]) == 0
    engine = build_engine(Settings(models_dir=models, outputs_dir=tmp_path / "out", save_images=False), DeviceChoice("cpu"))
    entries = {e.name: e for e in engine.catalog.scan()}
    assert entries["kiri-dit-single"].format == "single_file" and entries["kiri-dit-single"].family == "sd3"

    a, b = _same_picture_and_weights(engine, "kiri-shapes-dit", "kiri-dit-single", ("transformer", "vae", "text_encoder", "text_encoder_2"))
    assert b.text_encoder_3 is None and type(b.scheduler) is type(a.scheduler)


def test_a_weight_with_no_place_in_the_layout_is_refused():
    from webui.tools.export_checkpoint import ExportError, unet_to_original

    config = {"layers_per_block": 1, "up_block_types": ["UpBlock2D"]}
    with pytest.raises(ExportError, match="add_embedding"):
        unet_to_original({"add_embedding.linear_1.weight": torch.zeros(1)}, config)
