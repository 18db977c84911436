"""Diffusion upscalers (diffusers folders in models/upscalers/): detected from model_index.json,
listed with kind and scale, run through the engine in tiles, saved with the extras infotext."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import tiny_models
from webui.engine.core.jobs import Job
from webui.engine.upscale import UpscaleRequest, find_upscaler, upscale_images

MAKERS = {
    "sd-x4-tiny": (tiny_models.make_tiny_sd_x4_upscaler, "StableDiffusionUpscalePipeline", 4),
    "latent-x2-tiny": (tiny_models.make_tiny_latent_upscaler, "StableDiffusionLatentUpscalePipeline", 2),
    "ldm-x4-tiny": (tiny_models.make_tiny_ldm_super_resolution, "LDMSuperResolutionPipeline", 4),
}


@pytest.fixture(scope="module")
def sr_engine(tmp_path_factory):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    root = tmp_path_factory.mktemp("sr_models")
    for name, (make, _, _) in MAKERS.items():
        make(root / "upscalers" / name)
    (root / "upscalers" / "not-an-upscaler").mkdir()
    (root / "upscalers" / "not-an-upscaler" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    settings = Settings(models_dir=root, outputs_dir=tmp_path_factory.mktemp("sr_outputs"), save_images=False)
    engine = build_engine(settings, DeviceChoice("cpu"))
    engine.catalog.scan()
    return engine


def _picture(width, height):
    x = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    return Image.fromarray(x.astype(np.uint8))


def test_diffusion_folders_are_listed_by_their_pipeline_class(sr_engine):
    for name, (_, _, scale) in MAKERS.items():
        upscaler = find_upscaler(name, catalog=sr_engine.catalog)
        assert upscaler.kind == "diffusion" and upscaler.scale == scale
        assert upscaler.label == f"{name} (diffusion x{scale})"
    with pytest.raises(Exception):
        find_upscaler("not-an-upscaler", catalog=sr_engine.catalog)


@pytest.mark.parametrize("name", list(MAKERS))
def test_a_diffusion_upscaler_runs_tiled_through_the_engine(sr_engine, name):
    _, pipeline_class, scale = MAKERS[name]
    loaded = sr_engine.models.get_of_kind("upscaler", name).model
    assert loaded.pipeline_class == pipeline_class
    tile = 64 if pipeline_class == "StableDiffusionLatentUpscalePipeline" else 32
    image = _picture(2 * tile - 16, tile // 2 + 8)  # wider than a tile: two tiles across, sharing 16 pixels
    job = Job(kind="extras")
    result = upscale_images(sr_engine, UpscaleRequest([image], name, scale=scale, tile_size=tile, tile_overlap=16), job)
    out = result.images[0]
    assert out.size == (image.width * scale, image.height * scale)
    assert result.tiles == 2 and job.steps == 2
    text = result.infotexts[0]
    assert f"Postprocess upscaler: {name}" in text and f"Tile size: {tile}" in text and "Tiles: 2" in text
    assert np.asarray(out).std() > 0  # a picture, not a flat fill
