"""Finding checkpoints on disk and telling their family apart without loading them."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from webui.engine.models.catalog import Catalog, describe
from webui.engine.models.families import family_from_keys, UnknownFamily


def test_scan_finds_folders_single_files_and_pickles(models_dir, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(models_dir, root)
    torch.save({"state_dict": {}}, root / "checkpoints" / "old.ckpt")
    (root / "checkpoints" / "notes.txt").write_text("not a model")
    catalog = Catalog(root)
    entries = {e.name: e for e in catalog.scan()}
    assert set(entries) == {"tiny-sd", "tiny-sd-single", "tiny-sd3", "old"}
    assert entries["tiny-sd"].format == "diffusers" and entries["tiny-sd"].family == "sd1"
    assert entries["tiny-sd-single"].format == "single_file" and entries["tiny-sd-single"].family == "sd1"
    assert entries["tiny-sd3"].family == "sd3" and entries["tiny-sd3"].prediction == "flow"
    assert entries["old"].format == "pickle"
    title = catalog.title(entries["tiny-sd"])
    assert title.startswith("tiny-sd [") and "SD 1.x" in title and "MB" in title
    # The short hash is A1111's: the first 10 hex digits of the denoiser file's sha256.
    import hashlib

    unet = root / "checkpoints" / "tiny-sd" / "unet" / "diffusion_pytorch_model.safetensors"
    assert catalog.short_hash(entries["tiny-sd"]) == hashlib.sha256(unet.read_bytes()).hexdigest()[:10]
    assert catalog.find(title) == entries["tiny-sd"]
    assert catalog.find(catalog.short_hash(entries["tiny-sd"])) == entries["tiny-sd"]


@pytest.mark.parametrize(
    "keys, family",
    [
        (["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.transformer.text_model.x"], "sd1"),
        (["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.model.transformer.resblocks.0.x"], "sd2"),
        (["model.diffusion_model.input_blocks.0.0.weight", "conditioner.embedders.1.model.ln_final.weight"], "sdxl"),
        (["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"], "sd3"),
        (["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"], "flux"),
        (["blocks.0.cross_attn.q_linear.weight", "t_block.1.weight", "y_embedder.y_proj.fc1.weight"], "pixart"),
    ],
)
def test_family_from_single_file_keys(keys, family, tmp_path):
    assert family_from_keys(keys) == family
    path = tmp_path / "m.safetensors"
    save_file({k: torch.zeros(1) for k in keys}, path)
    assert describe(path).family == family


def test_sdxl_and_sd2_folders_detected_from_config(models_dir, tmp_path):
    sdxl = shutil.copytree(models_dir / "checkpoints" / "tiny-sd", tmp_path / "xl")
    index = json.loads((sdxl / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionXLPipeline"
    (sdxl / "model_index.json").write_text(json.dumps(index))
    assert describe(sdxl).family == "sdxl"
    sd2 = shutil.copytree(models_dir / "checkpoints" / "tiny-sd", tmp_path / "v2")
    config = json.loads((sd2 / "unet" / "config.json").read_text())
    config["cross_attention_dim"] = 1024
    (sd2 / "unet" / "config.json").write_text(json.dumps(config))
    assert describe(sd2).family == "sd2"


def test_unreadable_files_are_listed_with_the_problem(tmp_path):
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    entry = describe(truncated)
    assert entry.family is None and "truncated" in entry.problem
    garbage = tmp_path / "junk.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    assert "invalid safetensors header" in describe(garbage).problem
    with pytest.raises(UnknownFamily):
        family_from_keys(["some.other.model.weight"])


def test_a_single_file_beside_its_namesake_folder_is_listed_and_found_apart(models_dir, tmp_path):
    """kiri-shapes-ldm/ and kiri-shapes-ldm.safetensors: both listed; the folder keeps the bare name
    (Kiri's default is found as before), the file is called by its file name, as A1111 titles it."""
    root = tmp_path / "models"
    shutil.copytree(models_dir, root)
    shutil.copy(root / "checkpoints" / "tiny-sd-single.safetensors", root / "checkpoints" / "tiny-sd.safetensors")
    catalog = Catalog(root)
    entries = {e.name: e for e in catalog.scan()}
    assert {"tiny-sd", "tiny-sd.safetensors"} <= set(entries)
    folder, single = entries["tiny-sd"], entries["tiny-sd.safetensors"]
    assert folder.format == "diffusers" and single.format == "single_file" and single.path.name == "tiny-sd.safetensors"
    assert catalog.find("tiny-sd") == folder
    assert catalog.find("tiny-sd.safetensors") == single
    assert catalog.find(catalog.title(single)) == single and catalog.find(catalog.title(folder)) == folder
    assert catalog.find(f"tiny-sd.safetensors [{catalog.short_hash(single)}]") == single  # A1111's title
    assert catalog.find(f"tiny-sd [{catalog.short_hash(folder)}]") == folder


def test_sd_models_lists_both_and_either_title_selects_it(models_dir, tmp_path):
    from fastapi.testclient import TestClient

    from conftest import make_api_app

    root = tmp_path / "models"
    shutil.copytree(models_dir, root)
    shutil.copy(root / "checkpoints" / "tiny-sd-single.safetensors", root / "checkpoints" / "tiny-sd.safetensors")
    app, engine = make_api_app(root, tmp_path / "outputs")
    client = TestClient(app)
    listed = {m["title"].split(" [")[0]: m for m in client.get("/sdapi/v1/sd-models").json()}
    assert {"tiny-sd", "tiny-sd.safetensors"} <= set(listed)
    assert listed["tiny-sd.safetensors"]["model_name"] == "tiny-sd"  # A1111's: the file name without extension
    for shown in ("tiny-sd.safetensors", "tiny-sd"):
        title = listed[shown]["title"]
        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": title}).status_code == 200
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == title


def test_subfolders_are_scanned_as_a1111_does_but_not_model_folders(tmp_path):
    from safetensors.torch import save_file
    import torch

    from webui.engine.models.catalog import Catalog

    (tmp_path / "Lora" / "styles" / "ink").mkdir(parents=True)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "Lora" / "styles" / "ink" / "brush.safetensors"))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "Lora" / "top.safetensors"))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "Lora" / "styles" / "top.safetensors"))  # a namesake deeper down
    ckpt = tmp_path / "checkpoints" / "pipe"
    (ckpt / "vae").mkdir(parents=True)
    (ckpt / "vae" / "config.json").write_text("{}")
    save_file({"x": torch.zeros(1)}, str(ckpt / "vae" / "diffusion_pytorch_model.safetensors"))
    (ckpt / "model_index.json").write_text("{}")
    catalog = Catalog(tmp_path)
    catalog.scan()
    names = sorted(e.name for e in catalog.of_kind("lora"))
    assert names == ["brush", "top", "top.safetensors"], names
    assert catalog.find_of_kind("lora", "top").path.parent.name == "Lora"  # the shallower one keeps the bare name
    assert catalog.find_of_kind("lora", "brush").path.parent.name == "ink"
    assert all("pipe" not in str(e.path) for e in catalog.of_kind("vae"))
