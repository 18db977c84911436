"""Images entering Kiri are converted by their real range (webui/engine/core/images.py), the
API reads them lazily (size from the header before decoding; png-info never decodes), and
EXIF UserComment is read and written with piexif in AUTOMATIC1111's format."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.images import to_rgb, to_rgba
from webui.engine.generation.jobs import img2img_task


def _reopen(image: Image.Image, fmt: str = "PNG", **save) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    buffer.seek(0)
    return Image.open(buffer)


def _b64(image: Image.Image, fmt: str = "PNG", **save) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return base64.b64encode(buffer.getvalue()).decode()


def _grey(image: Image.Image) -> list[int]:
    rgb = np.asarray(to_rgb(image))
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[..., 0].ravel().tolist()


def test_16bit_png_scaled_by_bit_depth():
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    image = _reopen(Image.fromarray(values))
    assert image.mode == "I;16"
    assert _grey(image) == [0, 1, 128, 255]
    # PIL's own convert clips, which is the bug this replaces: 32768 -> white
    assert np.asarray(image.convert("RGB"))[0, 2, 0] == 255


@pytest.mark.parametrize("mode", ["I;16B", "I;16L"])
def test_16bit_byte_orders(mode):
    image = Image.new(mode, (2, 1))
    image.putpixel((0, 0), 65535)
    image.putpixel((1, 0), 13107)  # 0.2 of the range
    assert _grey(image) == [255, 51]


def test_32bit_I_within_16_bits_and_beyond():
    within = Image.fromarray(np.array([[0, 65535, 13107]], dtype=np.int32))
    assert within.mode == "I"
    assert _grey(within) == [0, 255, 51]
    beyond = Image.fromarray(np.array([[-100, 0, 1_000_000 - 100]], dtype=np.int32))  # stretched min..max
    assert _grey(beyond) == [0, round(100 * 255 / 1_000_000), 255]


def test_float_tiff_in_unit_range_and_outside():
    unit = _reopen(Image.fromarray(np.array([[0.0, 0.25, 1.0]], dtype=np.float32)), "TIFF")
    assert unit.mode == "F"
    assert _grey(unit) == [0, 64, 255]
    wide = Image.fromarray(np.array([[-2.0, 0.0, 2.0]], dtype=np.float32))
    assert _grey(wide) == [0, 128, 255]
    odd = Image.fromarray(np.array([[np.nan, np.inf, 0.5, -np.inf]], dtype=np.float32))
    assert _grey(odd) == [0, 255, 128, 0]
    assert _grey(Image.fromarray(np.full((1, 2), 7.0, dtype=np.float32))) == [255, 255]


def test_8bit_modes_keep_their_colours():
    rgb = Image.new("RGB", (2, 2), (10, 200, 30))
    assert np.asarray(to_rgb(rgb))[0, 0].tolist() == [10, 200, 30]
    assert np.asarray(to_rgb(Image.new("L", (1, 1), 77)))[0, 0].tolist() == [77, 77, 77]
    assert np.asarray(to_rgb(Image.new("1", (1, 1), 1)))[0, 0].tolist() == [255, 255, 255]
    la = Image.new("LA", (1, 1), (90, 10))
    assert np.asarray(to_rgb(la))[0, 0].tolist() == [90, 90, 90]
    assert np.asarray(to_rgba(la))[0, 0].tolist() == [90, 90, 90, 10]
    cmyk = _reopen(Image.new("CMYK", (2, 2), (0, 255, 255, 0)), "JPEG", quality=100)
    assert cmyk.mode == "CMYK"
    r, g, b = np.asarray(to_rgb(cmyk))[0, 0].tolist()
    assert r > 240 and g < 15 and b < 15  # pure red


def test_palette_with_transparency_becomes_alpha():
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((1, 0), 1)
    image = _reopen(image, transparency=0)
    rgba = np.asarray(to_rgba(image))
    assert rgba[0, 0].tolist() == [255, 0, 0, 0] and rgba[0, 1].tolist() == [0, 0, 255, 255]
    assert np.asarray(to_rgb(image))[0, 1].tolist() == [0, 0, 255]


def test_high_bit_to_rgba_is_opaque():
    image = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert np.asarray(to_rgba(image))[0].tolist() == [[0, 0, 0, 255], [255, 255, 255, 255]]


def test_truncated_file_is_invalid_request_naming_the_field():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, format="PNG")
    lazy = Image.open(io.BytesIO(buffer.getvalue()[:60]))
    with pytest.raises(InvalidRequest) as caught:
        to_rgb(lazy, "init_images")
    assert caught.value.field == "init_images"


def test_decode_image_checks_the_header_before_decoding(monkeypatch):
    from webui.api import common

    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size))
    with pytest.raises(InvalidRequest) as caught:
        common.decode_image(_b64(Image.new("L", (40, 30))), "init_images", max_pixels=1000)
    assert caught.value.field == "init_images" and "40x30" in str(caught.value)
    assert loads == []  # refused on the header
    common.decode_image(_b64(Image.new("L", (40, 30))), max_pixels=1200)
    assert loads == [(40, 30)]
    lazy = common.decode_image(_b64(Image.new("L", (40, 30))), load=False)
    assert loads == [(40, 30)] and lazy.size == (40, 30)


def test_img2img_checks_max_pixels_before_decoding(engine, monkeypatch):
    from webui.engine.generation.img2img import Img2ImgRequest

    engine.settings.max_pixels = 1000
    image = _reopen(Image.new("RGB", (40, 30)))
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    request = Img2ImgRequest(prompt="a", init_image=image, width=64, height=64)
    with pytest.raises(InvalidRequest) as caught:
        img2img_task(engine, request, [])
    assert caught.value.field == "init_image" and decoded == []
    engine.settings.max_pixels = 4096
    small = _reopen(Image.new("RGB", (40, 30)))
    mask = _reopen(Image.new("L", (80, 60), 255))
    with pytest.raises(InvalidRequest) as caught:
        img2img_task(engine, Img2ImgRequest(prompt="a", init_image=small, mask=mask, width=64, height=64), [])
    assert caught.value.field == "mask" and decoded == []


def test_img2img_prepare_reads_16bit_init_image_by_range():
    from webui.engine.generation.img2img import Img2ImgRequest, prepare

    values = np.full((64, 64), 16384, dtype=np.uint16)  # a quarter of the range: dark grey, not white
    request = Img2ImgRequest(prompt="a", init_image=_reopen(Image.fromarray(values)), width=64, height=64)
    plan = prepare(request, [])
    assert np.asarray(plan.model_image)[..., 0].mean() == pytest.approx(64, abs=1)


def test_png_info_reads_metadata_only(monkeypatch, engine):
    """png-info on a PNG, JPEG and WebP with infotext must never decode the pixels."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api import ApiContext, mount
    from webui.engine.core.infotext import exif_for, pnginfo_for

    app = FastAPI()
    mount(app, ApiContext(engine))
    client = TestClient(app)
    text = "a cat\nNegative prompt: dog\nSteps: 3, Sampler: Euler, Seed: 5"
    bodies = [_b64(Image.new("RGB", (300, 200)), "PNG", pnginfo=pnginfo_for(text)),
              _b64(Image.new("RGB", (300, 200)), "JPEG", exif=exif_for(text)),
              _b64(Image.new("RGB", (300, 200)), "WEBP", exif=exif_for(text))]

    def no_decoding(self):
        raise AssertionError("png-info decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for body in bodies:
        reply = client.post("/sdapi/v1/png-info", json={"image": body})
        assert reply.status_code == 200, reply.text
        assert reply.json()["info"] == text
        assert reply.json()["parameters"]["Seed"] == "5"


@pytest.mark.parametrize("value", [5, 2.5, (1, 2, 3), (65, 66), b"\x00" * 3, "ASCII\0\0\0x"])
def test_user_comment_of_any_type_never_fails(value):
    from webui.engine.core.infotext import decode_user_comment, read_infotext

    assert isinstance(decode_user_comment(value), str)
    # A JPEG whose UserComment was written with another EXIF type: PIL writes what it is given.
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = value
    image = _reopen(Image.new("RGB", (4, 4)), "JPEG", exif=exif.tobytes())
    result = read_infotext(image)
    assert result is None or isinstance(result, str)


def test_exif_written_by_piexif_in_a1111_format():
    import piexif
    import piexif.helper

    from webui.engine.core.infotext import exif_for

    text = "猫 Steps: 20, Seed: 1"
    loaded = piexif.load(exif_for(text))
    raw = loaded["Exif"][piexif.ExifIFD.UserComment]
    assert raw == b"UNICODE\0" + text.encode("utf-16-be")
    assert piexif.helper.UserComment.load(raw) == text  # what A1111's PNG Info does


def test_webp_exif_naming_a_file_is_not_opened(tmp_path):
    """piexif.load treats unknown bytes as a file name; an EXIF chunk must never reach it so."""
    from webui.engine.core.infotext import exif_for, read_infotext

    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (4, 4)).save(secret, format="JPEG", exif=exif_for("LEAKED"))
    image = _reopen(Image.new("RGB", (4, 4)), "WEBP", exif=str(secret).encode())
    assert image.info.get("exif") == str(secret).encode()
    assert read_infotext(image) != "LEAKED"
