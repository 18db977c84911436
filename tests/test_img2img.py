"""Image to image, inpainting and outpainting on tiny real models."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import tiny_models
from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.img2img import Img2ImgRequest, outpaint_canvas
from webui.engine.core.infotext import parse_infotext, read_infotext


def _picture(width=64, height=64) -> Image.Image:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(array)


def _square_mask(size=(64, 64), box=(24, 24, 40, 40)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def _request(**changes) -> Img2ImgRequest:
    fields = dict(prompt="a red circle", init_image=_picture(), steps=2, width=64, height=64, seed=1,
                  denoising_strength=0.75)
    fields.update(changes)
    return Img2ImgRequest(**fields)


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_each_resize_mode_gives_the_requested_size(engine, mode):
    result = engine.img2img(_request(init_image=_picture(96, 48), resize_mode=mode, width=64, height=72))
    assert [im.size for im in result.images] == [(64, 72)]
    assert result.paths and "img2img" in str(result.paths[0])
    params = parse_infotext(read_infotext(Image.open(result.paths[0]))).params
    assert params["Denoising strength"] == "0.75"


def test_strength_zero_returns_the_image_and_one_changes_it(engine):
    picture = _picture()
    same = engine.img2img(_request(init_image=picture, denoising_strength=0.0))
    assert np.array_equal(np.asarray(same.images[0]), np.asarray(picture))
    assert same.warnings
    changed = engine.img2img(_request(init_image=picture, denoising_strength=1.0))
    assert not np.array_equal(np.asarray(changed.images[0]), np.asarray(picture))


def _outside(mask: Image.Image, margin: int) -> np.ndarray:
    """Pixels more than `margin` away from the mask."""
    import cv2

    grown = cv2.dilate(np.asarray(mask), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    return grown == 0


@pytest.mark.parametrize("full_res", [False, True])
def test_inpaint_keeps_pixels_outside_the_mask(engine, full_res):
    picture, mask = _picture(128, 128), _square_mask((128, 128), (48, 48, 80, 80))
    result = engine.img2img(_request(init_image=picture, mask=mask, mask_blur=2, inpaint_full_res=full_res,
                                     inpaint_full_res_padding=8, width=64, height=64))
    out = np.asarray(result.images[0])
    if full_res:
        assert result.images[0].size == picture.size  # pasted back into the full picture
        keep = _outside(mask, 2 * 3 + 1)  # beyond the feathered edge
        assert np.array_equal(out[keep], np.asarray(picture)[keep])
        assert not np.array_equal(out[48:80, 48:80], np.asarray(picture)[48:80, 48:80])
    else:
        assert result.images[0].size == (64, 64)
        small = np.asarray(picture.resize((64, 64), Image.LANCZOS))
        keep = _outside(mask.resize((64, 64), Image.NEAREST), 7)
        assert np.array_equal(out[keep], small[keep])
    params = parse_infotext(result.infotexts[0]).params
    assert params["Mask blur"] == "2"
    assert params["Inpaint area"] == ("Only masked" if full_res else "Whole picture")
    assert params["Masked content"] == "original"
    if full_res:
        assert params["Only masked padding"] == "8"


def test_only_masked_paste_back_is_exact_without_blur(engine):
    picture, mask = _picture(80, 64), _square_mask((80, 64), (50, 10, 70, 30))
    result = engine.img2img(_request(init_image=picture, mask=mask, mask_blur=0, inpaint_full_res=True,
                                     inpaint_full_res_padding=4, inpainting_fill=0))
    out, original = np.asarray(result.images[0]), np.asarray(picture)
    outside = np.asarray(mask) == 0
    assert np.array_equal(out[outside], original[outside])


@pytest.mark.parametrize("fill", [0, 1, 2, 3])
def test_each_masked_content_mode_runs(engine, fill):
    result = engine.img2img(_request(mask=_square_mask(), inpainting_fill=fill, mask_blur=0))
    out = np.asarray(result.images[0])
    outside = np.asarray(_square_mask()) == 0
    assert np.array_equal(out[outside], np.asarray(_picture())[outside])


def test_inverted_mask_repaints_the_outside(engine):
    mask = _square_mask()
    result = engine.img2img(_request(mask=mask, inpainting_mask_invert=1, mask_blur=0))
    out = np.asarray(result.images[0])
    inside = np.asarray(mask) == 255
    assert np.array_equal(out[inside], np.asarray(_picture())[inside])
    assert parse_infotext(result.infotexts[0]).params["Mask mode"] == "Inpaint not masked"


def test_outpaint_grows_the_canvas_and_keeps_the_original(engine):
    picture = _picture()
    canvas, mask = outpaint_canvas(picture, 16, 8, 0, 24)
    assert canvas.size == (88, 88) and mask.size == (88, 88)
    assert np.array_equal(np.asarray(canvas)[0:64, 16:80], np.asarray(picture))
    result = engine.img2img(_request(init_image=canvas, mask=mask, mask_blur=0, inpaint_full_res=True,
                                     inpaint_full_res_padding=32, inpainting_fill=0, denoising_strength=1.0))
    out = np.asarray(result.images[0])
    assert result.images[0].size == (88, 88)
    assert np.array_equal(out[0:64, 16:80], np.asarray(picture))
    with pytest.raises(InvalidRequest) as err:
        outpaint_canvas(picture, 0, 0, 0, 0)
    assert err.value.field == "outpaint_left"


@pytest.fixture(scope="module")
def inpaint_engine(tmp_path_factory):
    from webui.bootstrap import build_engine
    from webui.engine.settings import Settings
    from webui.engine.core.devices import DeviceChoice

    root = tmp_path_factory.mktemp("inpaint_models")
    tiny_models.make_tiny_sd_inpaint(root / "checkpoints" / "tiny-sd-inpaint")
    settings = Settings(models_dir=root, outputs_dir=tmp_path_factory.mktemp("out"), default_model="tiny-sd-inpaint")
    return build_engine(settings, DeviceChoice("cpu"))


@pytest.mark.parametrize("full_res", [False, True])
def test_nine_channel_inpainting_unet(inpaint_engine, full_res):
    assert inpaint_engine.models.get(None, preferred="tiny-sd-inpaint").pipeline.unet.config.in_channels == 9
    picture, mask = _picture(), _square_mask()
    result = inpaint_engine.img2img(_request(mask=mask, mask_blur=0, inpaint_full_res=full_res))
    out = np.asarray(result.images[0])
    outside = np.asarray(mask) == 0
    assert np.array_equal(out[outside], np.asarray(picture)[outside])
    plain = inpaint_engine.img2img(_request())  # no mask: image to image through the inpainting model
    assert plain.images[0].size == (64, 64)


def test_sd3_image_to_image_and_inpaint(engine):
    result = engine.img2img(_request(model="tiny-sd3"))
    assert result.images[0].size == (64, 64)
    mask = _square_mask()
    result = engine.img2img(_request(model="tiny-sd3", mask=mask, mask_blur=0, inpaint_full_res=True))
    outside = np.asarray(mask) == 0
    assert np.array_equal(np.asarray(result.images[0])[outside], np.asarray(_picture())[outside])


@pytest.mark.parametrize("changes, field", [
    (dict(init_image=None), "init_image"),
    (dict(init_image=b"not an image"), "init_image"),
    (dict(denoising_strength=1.5), "denoising_strength"),
    (dict(resize_mode=3), "resize_mode"),
    (dict(mask_blur=-1), "mask_blur"),
    (dict(inpainting_fill=4), "inpainting_fill"),
    (dict(inpaint_full_res_padding=1000), "inpaint_full_res_padding"),
    (dict(mask="mask.png"), "mask"),
])
def test_bad_fields_are_refused_by_name(changes, field):
    with pytest.raises(InvalidRequest) as err:
        _request(**changes)
    assert err.value.field == field


def test_bad_masks_and_big_images(engine):
    with pytest.raises(InvalidRequest, match="empty") as err:
        engine.img2img(_request(mask=Image.new("L", (64, 64), 0)))
    assert err.value.field == "mask"
    with pytest.raises(InvalidRequest, match="empty"):  # all white, inverted: nothing to repaint
        engine.img2img(_request(mask=Image.new("L", (64, 64), 255), inpainting_mask_invert=1))
    whole = engine.img2img(_request(mask=Image.new("L", (64, 64), 255)))
    assert any("whole image" in w for w in whole.warnings)
    resized = engine.img2img(_request(mask=_square_mask((32, 32), (12, 12, 20, 20)), mask_blur=0))
    assert any("resized" in w for w in resized.warnings)
    engine.settings.max_pixels = 64 * 63
    with pytest.raises(InvalidRequest, match="max_pixels") as err:
        engine.img2img(_request())
    assert err.value.field == "init_image"


def test_every_sampler_starts_from_an_init_image_or_says_it_cannot(engine):
    mask = _square_mask()
    cases = [(None, n) for n in engine.samplers.names("epsilon")] + [("tiny-sd3", n) for n in engine.samplers.names("flow")]
    for model, name in cases:
        for with_mask in (False, True):
            request = _request(model=model, sampler_name=name, steps=4, denoising_strength=0.5,
                               mask=mask if with_mask else None)
            try:
                result = engine.img2img(request)
            except InvalidRequest as err:
                assert err.field == "sampler_name" and "init image" in str(err)
            else:
                assert result.images[0].size == (64, 64), name
