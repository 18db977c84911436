"""Hostile and odd inputs never give a 5xx or a wrong picture (issue 11).

Hypothesis draws images (every PIL mode a client can send, 8/16/32-bit and float, sizes from
1x1 up, odd sizes, with and without EXIF, broken files) and prompts (lone surrogates, NUL, RTL
marks, combining marks, emoji, very long) and drives them through decode_image, to_rgb, png-info,
request validation and real API calls on a bare FastAPI app. Bounded: the whole file runs in well
under a minute on a shared CPU.
"""

from __future__ import annotations

import base64
import io
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.images import to_rgb, to_rgba
from webui.engine.core.infotext import exif_for, pnginfo_for, read_infotext
from webui.engine.generation.requests import MAX_PROMPT_CHARS, Txt2ImgRequest

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# API examples share one engine and app: that is the point (state must survive bad requests).
API = settings(max_examples=12, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "I;16", "I;16B", "I", "F"]
# Formats that hold each mode, so every drawn image can be sent as a file.
FORMATS = {"1": ["PNG", "TIFF"], "L": ["PNG", "JPEG", "TIFF", "WEBP"], "P": ["PNG", "GIF", "TIFF"],
           "RGB": ["PNG", "JPEG", "WEBP", "TIFF"], "RGBA": ["PNG", "WEBP", "TIFF"], "LA": ["PNG", "TIFF"],
           "CMYK": ["JPEG", "TIFF"], "YCbCr": ["JPEG"], "I;16": ["PNG", "TIFF"],
           "I;16B": ["TIFF"], "I": ["TIFF"], "F": ["TIFF"]}


@st.composite
def pictures(draw, max_side: int = 24, modes: list[str] = MODES) -> Image.Image:
    """An in-memory PIL image of any mode, with random pixels of that mode's range."""
    mode = draw(st.sampled_from(modes))
    width, height = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if mode in ("I;16", "I;16B"):
        image = Image.new(mode, (width, height))
        values = rng.integers(0, 65536, (height, width), dtype=np.uint16)
        image.frombytes(values.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
        return image
    if mode == "I":
        top = draw(st.sampled_from([255, 65535, 2**31 - 1]))
        return Image.fromarray(rng.integers(-top // 4 if top > 65535 else 0, top, (height, width), dtype=np.int32))
    if mode == "F":
        scale = draw(st.sampled_from([1.0, 1000.0, -1.0]))
        data = (rng.random((height, width)) * scale).astype(np.float32)
        if draw(st.booleans()):
            data.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return Image.fromarray(data)
    bands = len(Image.new(mode, (1, 1)).getbands())
    base = Image.frombytes("RGBA" if bands == 4 else "RGB" if bands == 3 else "L", (width, height),
                           rng.integers(0, 256, width * height * max(bands, 1) if bands != 2 else width * height,
                                        dtype=np.uint8).tobytes())
    if mode == "P":
        return base.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    if mode == "PA":
        return base.convert("RGB").convert("P").convert("PA")
    return base.convert(mode)


@st.composite
def image_files(draw, max_side: int = 24) -> tuple[Image.Image, bytes, str]:
    """(image, file bytes, format): the picture saved as a file a client could send, maybe with EXIF
    or text chunks carrying an infotext, maybe cut short or with bytes flipped."""
    image = draw(pictures(max_side, list(FORMATS)))
    fmt = draw(st.sampled_from(FORMATS[image.mode]))
    save: dict = {}
    text = draw(st.one_of(st.none(), st.text(max_size=40)))
    if text is not None and fmt in ("JPEG", "WEBP", "TIFF"):
        save["exif"] = exif_for(text)
    elif text is not None and fmt == "PNG":
        save["pnginfo"] = pnginfo_for(text.encode("utf-8", "replace").decode("utf-8"))
    if fmt == "JPEG" and image.mode == "YCbCr":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip" and len(data) > 20:
        at = draw(st.integers(8, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
    return image, data, fmt


# Unicode that has broken tokenizers, encoders and JSON writers.
ODD_CHARS = ["\ud83d", "\udc00", "\0", "\u202e", "\u200f", "\u0301", "\u0338", "\U0001F600", "\U0001F469\u200d\U0001F4BB",
             "\ufeff", "\uffff", "\x7f", "\n", "\r", "\t", "\\", '"', "﷽", "ＡＢＣ", "(", ")", ":", ",", "<lora:x:1>"]
prompts = st.one_of(
    st.text(min_size=0, max_size=60),
    st.lists(st.sampled_from(ODD_CHARS) | st.text(max_size=3), min_size=1, max_size=20).map("".join),
    st.integers(MAX_PROMPT_CHARS - 2, MAX_PROMPT_CHARS + 50).map(lambda n: "a" * n),
)


def _decodes_to(data: bytes, image: Image.Image) -> bool:
    """Whether the (maybe damaged) file still holds exactly the drawn pixels: a flipped byte in a
    format without checksums (TIFF) changes values, and the expected ones are the drawn image's."""
    try:
        decoded = Image.open(io.BytesIO(data))
        decoded.load()
    except Exception:  # noqa: BLE001 - any unreadable file is simply not comparable
        return False
    return decoded.size == image.size and np.array_equal(np.asarray(decoded), np.asarray(image))


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


# --- conversion: every mode comes out as 8-bit RGB with the right values --------------------------

@FAST
@given(pictures())
def test_to_rgb_every_mode(image):
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == image.size
    rgba = to_rgba(image)
    assert rgba.mode == "RGBA" and rgba.size == image.size
    if image.mode in ("I;16", "I;16B"):
        expected = np.rint(np.asarray(image).astype(np.float64) * 255 / 65535).astype(np.uint8)
        assert (np.asarray(rgb)[..., 0] == expected).all()
    elif image.mode == "RGB":
        assert (np.asarray(rgb) == np.asarray(image)).all()
    elif image.mode in ("I", "F"):
        data = np.asarray(image).astype(np.float64)
        finite = data[np.isfinite(data)]
        grey = np.asarray(rgb)[..., 0].astype(int)
        if finite.size and finite.min() < finite.max():
            # order kept: the darkest finite pixel darkest of the finite ones, the brightest brightest
            shown = grey[np.isfinite(data)]
            assert grey[data == finite.min()].min() == shown.min()
            assert grey[data == finite.max()].max() == shown.max()
            assert (grey[np.isnan(data)] == shown.min()).all() or finite.max() <= 1 and finite.min() >= 0
            if image.mode == "F" and (finite.min() < 0 or finite.max() > 1):
                assert grey.min() == 0 and grey.max() == 255  # stretched, not clipped


@FAST
@given(image_files())
def test_decode_image_never_crashes(drawn):
    from webui.api.common import decode_image

    _, data, _ = drawn
    encoded = base64.b64encode(data).decode()
    for load in (True, False):
        try:
            image = decode_image(encoded, "init_images", load=load)
        except InvalidRequest as exc:
            assert exc.field == "init_images"
            continue
        try:
            assert to_rgb(image, "init_images").size == image.size
        except InvalidRequest as exc:  # a damaged file may fail only when decoded
            assert exc.field == "init_images"
        assert read_infotext(image) is None or isinstance(read_infotext(image), str)


@FAST
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_decode_image_on_garbage(data):
    from webui.api.common import decode_image

    payload = base64.b64encode(data).decode() if isinstance(data, bytes) else data
    with pytest.raises(InvalidRequest):
        decode_image(payload)


@FAST
@given(prompts, prompts)
def test_request_validation_of_prompts(prompt, negative):
    try:
        Txt2ImgRequest(prompt=prompt, negative_prompt=negative)
    except InvalidRequest as exc:
        assert exc.field in ("prompt", "negative_prompt")
        text = prompt if exc.field == "prompt" else negative
        assert not text.strip() or len(text) > MAX_PROMPT_CHARS or _has_surrogate(text)
    else:
        for text in (prompt, negative):
            assert len(text) <= MAX_PROMPT_CHARS and not _has_surrogate(text)


# --- the API on a bare app: never a 5xx, and 422s name the field ---------------------------------

@pytest.fixture()
def client(engine):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api import ApiContext, mount

    app = FastAPI()
    mount(app, ApiContext(engine))
    # raise_server_exceptions: an exception escaping a route (and so closing a keep-alive
    # connection under uvicorn) fails the test instead of becoming a quiet 500.
    return TestClient(app, raise_server_exceptions=True)


def _fields(reply) -> set[str]:
    detail = reply.json().get("detail")
    return {str(e["loc"][-1]) for e in detail} if isinstance(detail, list) else set()


@API
@given(drawn=image_files(max_side=40))
def test_png_info_and_extras_on_any_image(client, drawn):
    image, data, _ = drawn
    encoded = base64.b64encode(data).decode()
    info = client.post("/sdapi/v1/png-info", json={"image": encoded})
    assert info.status_code in (200, 422), info.text[:300]
    extra = client.post("/sdapi/v1/extra-single-image", json={"image": encoded, "upscaler_1": "Lanczos", "upscaling_resize": 1})
    assert extra.status_code in (200, 422), extra.text[:300]
    if extra.status_code == 200:
        out = Image.open(io.BytesIO(base64.b64decode(extra.json()["image"])))
        # An image with alpha keeps it (issue 13: upscaled separately); any other comes back RGB.
        alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
        assert out.size == image.size and out.mode == ("RGBA" if alpha else "RGB")
        if image.mode in ("I;16", "I;16B") and _decodes_to(data, image):  # by bit depth, not clipped white
            expected = np.rint(np.asarray(image).astype(np.float64) * 255 / 65535)
            assert np.abs(np.asarray(out)[..., 0].astype(float) - expected).max() <= 1
    else:
        assert _fields(extra) == {"image"}


@API
@given(w=st.integers(-20, 70000), h=st.integers(-20, 70000), scale=st.floats(allow_nan=True, allow_infinity=True),
       mode=st.sampled_from([0, 1]), second=st.sampled_from(["None", "Lanczos", "nope", ""]))
def test_extras_sizes_and_upscalers(client, w, h, scale, mode, second):
    image = base64.b64encode(_png(Image.new("RGB", (4, 3), "red"))).decode()
    body = {"image": image, "resize_mode": mode, "upscaling_resize_w": w, "upscaling_resize_h": h,
            "upscaling_resize": scale, "upscaler_1": "Nearest", "upscaler_2": second, "extras_upscaler_2_visibility": 0.5}
    reply = client.post("/sdapi/v1/extra-single-image", content=json.dumps(body), headers={"content-type": "application/json"})
    assert reply.status_code in (200, 422), reply.text[:300]
    if not math.isfinite(scale):  # refused with the body, before any field is used
        assert reply.status_code == 422 and _fields(reply) == {"upscaling_resize"}
    elif second == "nope":
        assert reply.status_code == 422 and _fields(reply) == {"upscaler_2"}
    elif mode == 1 and not (1 <= w <= 16384 and 1 <= h <= 16384 and w * h <= 8192 * 8192):
        assert reply.status_code == 422 and _fields(reply) & {"upscaling_resize_w", "upscaling_resize_h"}
    elif reply.status_code == 200:
        size = Image.open(io.BytesIO(base64.b64decode(reply.json()["image"]))).size
        assert size == ((w, h) if mode == 1 else (max(1, round(4 * scale)), max(1, round(3 * scale))))


@API
@given(prompt=prompts)
def test_txt2img_prompts(client, prompt):
    body = {"prompt": prompt, "steps": 1, "width": 64, "height": 64, "sampler_name": "Euler"}
    # json.dumps writes a lone surrogate as the \\ud83d escape, as a JavaScript client would.
    reply = client.post("/sdapi/v1/txt2img", content=json.dumps(body), headers={"content-type": "application/json"})
    assert reply.status_code in (200, 422), reply.text[:300]
    if reply.status_code == 422:
        assert _fields(reply) == {"prompt"}
        assert len(reply.content) < 2000  # the refusal does not quote a long prompt back
    else:
        data = reply.json()
        assert len(data["images"]) == 1
        info = json.loads(data["info"])
        assert info["prompt"] == prompt and data["parameters"]["prompt"] == prompt
        # echoed no more than A1111 does: parameters, info.prompt, all_prompts and the infotext (four
        # copies for one image; info is JSON inside JSON, so its copies are escaped twice)
        once = len(json.dumps(json.dumps(prompt)))
        assert len(reply.content) - len(data["images"][0]) <= 4 * once + 3000


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999", '"\\ud83d"', "[]", "{}", "null"])
@pytest.mark.parametrize("field", ["steps", "seed", "cfg_scale", "width", "n_iter"])
def test_raw_json_oddities_in_numbers(client, field, raw):
    content = '{"prompt": "a", "steps": 1, "width": 64, "height": 64, "%s": %s}' % (field, raw)
    reply = client.post("/sdapi/v1/txt2img", content=content, headers={"content-type": "application/json"})
    assert reply.status_code == 422, reply.text[:300]
    assert field in _fields(reply)
    json.loads(reply.text)  # strict JSON: no bare NaN in the reply


@API
@given(drawn=image_files(max_side=72), strength=st.floats(0, 1), fill=st.integers(0, 3))
def test_img2img_on_any_init_image(client, drawn, strength, fill):
    image, data, _ = drawn
    encoded = base64.b64encode(data).decode()
    body = {"prompt": "a", "init_images": [encoded], "mask": encoded if fill else None, "inpainting_fill": fill,
            "steps": 2, "denoising_strength": strength, "width": 64, "height": 64, "sampler_name": "Euler"}
    reply = client.post("/sdapi/v1/img2img", json=body)
    assert reply.status_code in (200, 422), reply.text[:300]
    if reply.status_code == 422:
        assert _fields(reply) <= {"init_images", "init_image", "mask"}
    else:
        assert json.loads(reply.json()["info"])["all_seeds"]
        assert reply.json()["parameters"]["init_images"] is None  # images are not echoed, as in A1111


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_nan_and_surrogates_in_unused_fields_get_a_clean_422(client):
    """Fields Kiri ignores but would echo (A1111 does too): refused by name, in a reply that is valid JSON."""
    content = ('{"prompt": "a", "steps": 1, "width": 64, "height": 64, "subseed_strength": NaN, '
               '"denoising_strength": Infinity, "styles": ["\\ud83d"], "infotext": "\\udc00x"}')
    reply = client.post("/sdapi/v1/txt2img", content=content, headers={"content-type": "application/json"})
    assert reply.status_code == 422, reply.text[:300]
    data = _strict(reply.text)
    assert data["detail"][0]["loc"][-1] in ("subseed_strength", "denoising_strength", "styles", "infotext")


def test_unexpected_error_is_a_json_500(client, engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(engine, "txt2img", broken)
    reply = client.post("/sdapi/v1/txt2img", json={"prompt": "a"})
    assert reply.status_code == 500 and reply.json()["error"] == "RuntimeError"
    assert "a bug" not in reply.text  # no internals in the reply; the log has them
    assert client.get("/sdapi/v1/samplers").status_code == 200


def test_validation_reply_for_whole_app_via_server_kwargs(engine):
    """server_app_kwargs hands the handlers to the app Gradio builds: same replies there."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from webui.api import ApiContext, server_app_kwargs

    app = FastAPI(**server_app_kwargs(ApiContext(engine)))
    client = TestClient(app)
    reply = client.post("/sdapi/v1/txt2img", content='{"prompt": "a", "seed": NaN}', headers={"content-type": "application/json"})
    assert reply.status_code == 422 and "seed" in _fields(reply)
    reply = client.post("/sdapi/v1/png-info", content='{"image": "\\ud83d"}', headers={"content-type": "application/json"})
    assert reply.status_code == 422 and _fields(reply) == {"image"}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
