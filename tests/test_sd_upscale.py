"""SD upscale (A1111's img2img script): upscale, tiled img2img with feathered blending, seam fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.jobs import Job
from webui.engine.generation.img2img import Img2ImgRequest, SDUpscale
from webui.engine.upscale._sd_upscale import borders, grid_regions, seam_passes

ROOT = Path(__file__).resolve().parents[1]


def _picture(width=48, height=40):
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    array = np.array([40, 60, 200]) * (1 - x) + np.array([200, 120, 40]) * x * (0.7 + 0.3 * y)
    return Image.fromarray(array.clip(0, 255).astype(np.uint8))


def _request(**kw):
    options = dict(upscaler="Lanczos", scale=2, overlap=16)
    options.update(kw.pop("options", {}))
    fields = dict(prompt="a red circle", init_image=_picture(), width=64, height=64, steps=4, seed=5,
                  denoising_strength=0.5, sampler_name="Euler", save_images=False, sd_upscale=SDUpscale(**options))
    fields.update(kw)
    return Img2ImgRequest(**fields)


def test_tiles_cover_the_picture_and_the_seam_regions_sit_on_the_borders():
    size, tile = (200, 130), (64, 64)
    grid = grid_regions(size, tile, 16)
    cover = np.zeros((130, 200))
    for region in grid:
        x0, y0, x1, y1 = region.box
        assert (x1 - x0, y1 - y0) == tile
        cover[y0:y1, x0:x1] += region.weight
    assert cover.min() > 0
    passes = seam_passes(size, tile, SDUpscale(overlap=16, seam_fix="Half tile offset"))
    assert len(passes) == 2
    for axis, regions in enumerate(passes):
        lines = borders(size[axis], tile[axis], 16)
        for line in lines:  # every border line is fully covered with mask ~1
            alpha = np.zeros(size[1 - axis])
            for region in regions:
                x0, y0, x1, y1 = region.box
                lo, hi = (x0, x1) if axis == 0 else (y0, y1)
                if lo <= line < hi:
                    along = region.alpha[:, int(line) - lo] if axis == 0 else region.alpha[int(line) - lo, :]
                    span = (y0, y1) if axis == 0 else (x0, x1)
                    alpha[span[0]:span[1]] = np.maximum(alpha[span[0]:span[1]], along)
            assert alpha.min() > 0.95, (axis, line)


def test_sd_upscale_tiles_the_upscaled_picture_and_saves_it_with_infotext(engine):
    job = Job(kind="img2img")
    labels = []
    job.listeners.append(lambda j: labels.append(j.label))
    result = engine.img2img(_request(save_images=True, options=dict(seam_fix="Half tile offset")), job)
    assert [im.size for im in result.images] == [(96, 80)]
    text = result.infotexts[0]
    for part in ("Size: 64x64", "Seed: 5", "Denoising strength: 0.5", "SD upscale overlap: 16",
                 "SD upscale upscaler: Lanczos", "SD upscale seam fix: Half tile offset"):
        assert part in text, (part, text)
    with Image.open(result.paths[0]) as saved:
        assert saved.size == (96, 80) and saved.info["parameters"] == text
    assert any(label.startswith("tile 4/") for label in labels)  # 2 x 2 tiles, then the seam regions
    assert not result.interrupted and result.seeds == [5]


def test_seed_per_tile_changes_the_tiles_and_the_same_seed_repeats(engine):
    one = np.asarray(engine.img2img(_request()).images[0], dtype=int)
    again = np.asarray(engine.img2img(_request()).images[0], dtype=int)
    varied = np.asarray(engine.img2img(_request(options=dict(seed_per_tile=True))).images[0], dtype=int)
    assert np.array_equal(one, again)
    assert np.abs(one - varied).mean() > 0.5


class _PartsRecorder:
    """A dispatcher that runs everything here but records what engine.part_work hands it: the seam a
    Ray Serve front uses to send an SD upscale's tiles to its replicas (tests/test_ray_serve.py)."""

    def __init__(self):
        self.parts: list[tuple[str, tuple[int, int]]] = []

    def work_for(self, engine, kind, request):
        return None  # whole jobs run here

    def part_for(self, engine, kind, request):
        self.parts.append((kind, request.init_image.size))
        return engine.job_kinds.work_for(engine, kind, request)[1]


def test_each_tile_is_a_part_a_dispatcher_may_send_elsewhere(engine):
    plain = engine.img2img(_request(options=dict(seam_fix="Half tile offset")))
    recorder = _PartsRecorder()
    engine.dispatcher = recorder
    try:
        assert engine.job_kinds.runs_parts("img2img", _request())  # the job stays; its tiles go out
        assert not engine.job_kinds.runs_parts("img2img", _request(sd_upscale=None))  # a plain img2img goes whole
        sent = engine.img2img(_request(options=dict(seam_fix="Half tile offset")))
    finally:
        engine.dispatcher = None
    assert len(recorder.parts) > 4 and {kind for kind, _ in recorder.parts} == {"sd_upscale_tile"}  # tiles, seams
    assert np.array_equal(np.asarray(sent.images[0]), np.asarray(plain.images[0]))
    assert sent.infotexts == plain.infotexts


def test_interrupt_keeps_the_finished_tiles(engine):
    job = Job(kind="img2img")

    def listen(j):
        if j.label.startswith("tile 2/"):
            j.interrupt()

    job.listeners.append(listen)
    result = engine.img2img(_request(), job)
    assert result.interrupted and result.images[0].size == (96, 80)
    assert any("Interrupted after 1 of 4 tiles" in w for w in result.warnings), result.warnings


def test_bad_sd_upscale_settings_name_the_field(engine):
    for options, field in ((dict(overlap=40), "sd_upscale.overlap"), (dict(scale=9), "sd_upscale.scale"),
                           (dict(seam_fix="Wobbly"), "sd_upscale.seam_fix")):
        with pytest.raises(InvalidRequest) as info:
            _request(options=options)
        assert info.value.field == field
    with pytest.raises(InvalidRequest) as info:
        engine.img2img(_request(options=dict(upscaler="8x-nope")))
    assert info.value.field == "sd_upscale.upscaler" and "Lanczos" in str(info.value)
    engine.settings.max_output_pixels = 50 * 50
    try:
        with pytest.raises(InvalidRequest) as info:
            engine.img2img(_request())
        assert info.value.field == "sd_upscale.scale"
    finally:
        engine.settings.max_output_pixels = 8192 * 8192


# --- the seam fix, measured on Kiri's default model -------------------------------------------

def _step_energy(image) -> "np.ndarray":
    """Mean squared step between neighbouring columns (index c: between c and c + 1) plus the same
    between neighbouring rows: a line's gradient energy."""
    a = np.asarray(image, dtype=np.float32)
    return ((a[:, 1:] - a[:, :-1]) ** 2).mean(axis=(0, 2)) + ((a[1:] - a[:-1]) ** 2).mean(axis=(1, 2))


def test_seam_fix_leaves_no_more_gradient_on_tile_borders_than_half_a_tile_away(tmp_path):
    """kiri-shapes-ldm, a 64 px picture upscaled x3 (192 px) in 64 px tiles with 16 px overlap and the
    half-tile seam fix: the gradient energy across the tile borders (the middle of each overlap) is no
    higher than across the same lines shifted half a tile (inside the tiles).

    The content is held equal: one line of a single picture mostly measures whatever edge of the
    drawing happens to lie on it (the model redraws every region at its own centre), so the source is
    rolled by 0, 8, ..., 56 px (every part of it passes over the borders and over the lines between
    them) and the energy is averaged over the eight upscales. Measured so, with 3 sources: no fix
    41 on the borders vs 129 half a tile away (the feathered blend is smooth, never a step), half tile
    offset 83 vs 114, bands 100 vs 152; on one source a picture at the borders without the averaging
    read 117 vs 62, which was the drawing, not a seam."""
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.settings import Settings

    kiri = build_engine(Settings(models_dir=ROOT / "models", outputs_dir=tmp_path, save_images=False), DeviceChoice("cpu"))
    prompt = "a large red circle in the centre, blue background"
    source = np.asarray(kiri.txt2img(Txt2ImgRequest(prompt=prompt, seed=0, steps=10, width=64, height=64)).images[0])
    tile, overlap, size = 64, 16, 192
    energy = np.zeros(size - 1)
    for roll in range(0, 64, 8):
        rolled = Image.fromarray(np.roll(source, (roll, roll), axis=(0, 1)))
        request = Img2ImgRequest(prompt=prompt, init_image=rolled, width=tile, height=tile, steps=10, seed=roll,
                                 denoising_strength=0.2, save_images=False,
                                 sd_upscale=SDUpscale("Lanczos", 3, overlap, "Half tile offset", 0.2))
        image = kiri.img2img(request).images[0]
        assert image.size == (size, size)
        energy += _step_energy(image)
    lines = borders(size, tile, overlap)
    shifted = [c + tile / 2 if c + tile / 2 < size else c - tile / 2 for c in lines]
    on = np.mean([energy[int(round(c)) - 1] for c in lines])
    off = np.mean([energy[int(round(c)) - 1] for c in shifted])
    assert on <= off, (on / 8, off / 8)


# --- the API ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api(kiri_server):
    import webuiapi

    port = int(kiri_server["url"].rstrip("/").rsplit(":", 1)[1])
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler", steps=2)


def test_img2img_sd_upscale_script_with_webuiapi(api):
    result = api.img2img(images=[_picture(40, 32)], prompt="a red circle", seed=7, width=64, height=64,
                         denoising_strength=0.5, script_name="SD upscale", script_args=["", 16, "Lanczos", 2])
    assert result.images[0].size == (80, 64)
    text = result.info["infotexts"][0]
    assert "SD upscale overlap: 16" in text and "SD upscale upscaler: Lanczos" in text and "Size: 64x64" in text
    assert result.info["warnings"] == []


def test_sd_upscale_script_args_errors_are_422_naming_script_args(kiri_server):
    import base64
    import io

    import requests

    buffer = io.BytesIO()
    _picture(16, 16).save(buffer, format="PNG")
    body = {"init_images": [base64.b64encode(buffer.getvalue()).decode()], "prompt": "x", "width": 64, "height": 64,
            "steps": 1, "script_name": "sd upscale", "script_args": ["", 16, "4x-nope", 2]}
    url = kiri_server["url"] + "sdapi/v1/img2img"
    reply = requests.post(url, json=body, timeout=60)
    assert reply.status_code == 422 and "script_args" in reply.text and "Lanczos" in reply.text
    reply = requests.post(url, json={**body, "script_args": ["", 200, "Lanczos", 2]}, timeout=60)
    assert reply.status_code == 422 and "script_args[1]" in reply.text
    scripts = requests.get(kiri_server["url"] + "sdapi/v1/scripts", timeout=30).json()
    assert "sd upscale" in scripts["img2img"]


def test_sd_upscale_from_the_super_resolution_tab(kiri_server, tmp_path):
    from gradio_client import Client, handle_file

    path = tmp_path / "small.png"
    _picture(40, 32).save(path)
    client = Client(kiri_server["url"], verbose=False)
    _, gallery, text, note = client.predict(image=handle_file(str(path)), upscaler_1="Lanczos", scale=2,
                                            sd_prompt="a red circle", sd_denoise=0.4, sd_tile=64, sd_overlap=16,
                                            sd_steps=2, sd_seed=3, sd_seam="Bands", sd_seam_denoise=0.2,
                                            api_name="/sd_upscale")
    assert len(gallery) == 1 and "SD upscale seam fix: Bands" in text and "Seed: 3" in text
    with Image.open(gallery[0]["image"]) as out:
        assert out.size == (80, 64)
