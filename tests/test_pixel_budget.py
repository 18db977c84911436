"""One pixel budget (webui/engine/core/limits.py) on every route and engine function that decodes a
picture or a video: an oversized input, or a job whose output (or an upscaler model's own output
on the way) would not fit, is refused with a 422 naming the field, within a second, before any
pixel is decoded (the process's memory barely moves)."""

from __future__ import annotations

import base64
import io
import struct
import time
import zipfile

import pytest
from PIL import Image, ImageFile

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.limits import check_input, check_output

TINY_X4 = "4x-tiny-compact"  # tests/conftest.py's x4 model upscaler
RSS_BUDGET = 100 * 2**20


# --- oversized inputs, cheap to build ------------------------------------------------------------

def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")  # one colour: a few tens of kB
    return buffer.getvalue()


def _gif(width: int, height: int, frames: int) -> bytes:
    """A GIF whose logical screen is width x height, each frame a single pixel: what PIL allocates
    per frame is the logical screen, so this is a bomb of a few hundred bytes."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff")
    for _ in range(frames):
        out += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # 100 ms a frame
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return bytes(out + b";")


def _mp4(side: int, frames: int = 2) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = side, side, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame(side, side, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def _zip(*members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, data in enumerate(members):
            archive.writestr(f"{index:05d}.png", data)
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def inputs() -> dict[str, str]:
    huge = _png(8000, 8000)
    assert len(huge) < 100_000
    return {
        "huge": _b64(huge),  # 64 MP, over Settings.max_pixels (16.7 MP)
        "fits": _b64(_png(4000, 4000)),  # 16 MP: within max_pixels, but x4 is 256 MP
        "small": _b64(_png(64, 64)),
        "gif": _b64(_gif(8000, 8000, 2)),  # each frame over max_pixels
        "long_gif": _b64(_gif(4000, 4000, 300)),  # each frame fits; 300 of them are over max_video_pixels
        "mp4": _b64(_mp4(4160)),  # 17.3 MP frames, from the stream's header
        "zip": _b64(_zip(_png(64, 64), huge)),  # a small first frame, a huge second one
    }


@pytest.fixture(scope="module")
def client(models_dir, tmp_path_factory):
    from fastapi.testclient import TestClient

    from conftest import make_api_app

    app, engine = make_api_app(models_dir, tmp_path_factory.mktemp("budget-outputs"))
    engine.catalog.scan()
    with TestClient(app) as client:
        yield client


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# (route, body built from the inputs, the field the 422 names)
ROUTES = [
    ("/sdapi/v1/extra-single-image", lambda i: {"image": i["huge"], "upscaler_1": TINY_X4, "upscaling_resize": 1}, "image"),
    ("/sdapi/v1/extra-single-image", lambda i: {"image": i["fits"], "upscaler_1": TINY_X4, "upscaling_resize": 1}, "upscaler_1"),
    ("/sdapi/v1/extra-single-image", lambda i: {"image": i["fits"], "upscaler_1": "Lanczos", "upscaling_resize": 1,
                                                "upscaler_2": TINY_X4, "extras_upscaler_2_visibility": 0.5}, None),
    ("/sdapi/v1/extra-batch-images", lambda i: {"imageList": [{"data": i["huge"], "name": "a.png"}],
                                                "upscaler_1": "Lanczos"}, "imageList"),
    ("/sdapi/v1/extra-batch-images", lambda i: {"imageList": [{"data": i["fits"], "name": "a.png"}],
                                                "upscaler_1": TINY_X4, "upscaling_resize": 1}, "upscaler_1"),
    ("/sdapi/v1/png-info", lambda i: {"image": i["huge"]}, "image"),
    ("/sdapi/v1/img2img", lambda i: {"prompt": "a", "init_images": [i["huge"]], "steps": 1}, "init_images"),
    ("/sdapi/v1/img2img", lambda i: {"prompt": "a", "init_images": [i["small"]], "mask": i["huge"], "steps": 1}, "mask"),
    ("/kiri/v1/segment", lambda i: {"image": i["huge"], "prompt": "a cat"}, "image"),
    ("/kiri/v1/masks", lambda i: {"masks": [i["huge"]]}, "masks[0]"),
    ("/kiri/v1/masks", lambda i: {"masks": [i["small"]], "image": i["huge"]}, "image"),
    ("/sam/sam-predict", lambda i: {"input_image": i["huge"], "sam_positive_points": [[1, 1]]}, "input_image"),
    ("/sam/dilate-mask", lambda i: {"input_image": i["huge"], "mask": i["small"]}, "input_image"),
    ("/sam/dilate-mask", lambda i: {"input_image": i["small"], "mask": i["huge"]}, "mask"),
    ("/kiri/v1/txt2video", lambda i: {"prompt": "a", "image": i["huge"]}, "image"),
    ("/kiri/v1/vid2vid", lambda i: {"video": i["gif"], "prompt": "a"}, "video"),
    ("/kiri/v1/vid2vid", lambda i: {"video": i["mp4"], "prompt": "a"}, "video"),
    ("/kiri/v1/vid2vid", lambda i: {"video": i["zip"], "prompt": "a"}, "video"),
    ("/kiri/v1/interpolate", lambda i: {"video": i["gif"]}, "video"),
    ("/kiri/v1/interpolate", lambda i: {"video": i["long_gif"]}, "video"),
    ("/kiri/v1/interpolate", lambda i: {"video": i["mp4"]}, "video"),
    ("/kiri/v1/jobs", lambda i: {"kind": "img2img", "request": {"prompt": "a", "init_image": {"__image__": i["huge"]}}},
     "init_image"),
    ("/kiri/v1/jobs", lambda i: {"kind": "txt2video", "request": {"prompt": "a", "image": {"__image__": i["huge"]}}},
     "image"),
    ("/kiri/v1/jobs", lambda i: {"kind": "interpolate", "request": {"video": i["gif"]}}, "video"),
]


@pytest.mark.parametrize("route,body,field", ROUTES, ids=[f"{r}:{f or 'upscaler_2'}" for r, _, f in ROUTES])
def test_every_decoding_route_refuses_over_budget_before_work(client, inputs, route, body, field):
    payload = body(inputs)
    field = field or "upscaler_2"
    before, started = _rss(), time.perf_counter()
    response = client.post(route, json=payload)
    elapsed, grown = time.perf_counter() - started, _rss() - before
    assert response.status_code == 422, response.text[:500]
    detail = response.json()["detail"][0]
    assert detail["loc"][-1] == field, detail
    assert "Kiri takes at most" in detail["msg"] or "Kiri makes at most" in detail["msg"], detail["msg"]
    assert "Settings: max_" in detail["msg"]
    assert elapsed < 1.0, f"{route} took {elapsed:.2f} s"
    assert grown < RSS_BUDGET, f"{route} grew the process by {grown / 2**20:.0f} MB"


def test_one_message_for_every_limit():
    with pytest.raises(InvalidRequest) as caught:
        check_input("image", 8000, 8000, limit=4096 * 4096)
    assert caught.value.field == "image"
    assert str(caught.value) == ("image is 8000x8000 (64,000,000 pixels); Kiri takes at most 16,777,216 pixels "
                                 "(Settings: max_pixels)")
    with pytest.raises(InvalidRequest) as caught:
        check_input("video", 4000, 4000, 300, limit=10**9, setting="max_video_pixels")
    assert "300 frames of 4000x4000 (4,800,000,000 pixels)" in str(caught.value)
    with pytest.raises(InvalidRequest) as caught:
        check_output("upscaler_1", 32000, 32000, limit=8192 * 8192)
    assert "32000x32000 (1,024,000,000 pixels); Kiri makes at most 67,108,864 pixels" in str(caught.value)


def test_pil_bomb_is_a_422_never_a_500(client):
    bomb = Image.new("1", (20000, 20000))  # over PIL's own MAX_IMAGE_PIXELS x 2: PIL raises on open
    buffer = io.BytesIO()
    bomb.save(buffer, format="PNG")
    response = client.post("/sdapi/v1/png-info", json={"image": _b64(buffer.getvalue())})
    assert response.status_code == 422 and "Kiri takes at most" in response.text


# --- the engine functions the UI tabs call, with PIL images -------------------------------------

def _lazy(width: int, height: int) -> Image.Image:
    return Image.open(io.BytesIO(_png(width, height)))


@pytest.fixture()
def no_decoding(monkeypatch):
    decoded: list = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    return decoded


def test_upscale_images_refuses_before_work(engine, no_decoding):
    from webui.engine.upscale import UpscaleRequest, upscale_images

    engine.catalog.scan()
    for image, upscaler, field in ((_lazy(8000, 8000), "Lanczos", "image"), (_lazy(4000, 4000), TINY_X4, "upscaler_1")):
        with pytest.raises(InvalidRequest) as caught:
            upscale_images(engine, UpscaleRequest([image], upscaler, scale=1, save_images=False))
        assert caught.value.field == field, str(caught.value)
    assert no_decoding == [] and not engine.jobs.active()


def test_sd_upscale_and_hires_refuse_a_model_pass_over_budget(engine, no_decoding):
    from webui.engine.generation.img2img import Img2ImgRequest, SDUpscale
    from webui.engine.generation.requests import HiresFix, Txt2ImgRequest

    engine.catalog.scan()
    engine.settings.max_output_pixels = 1000 * 1000
    with pytest.raises(InvalidRequest) as caught:
        engine.img2img(Img2ImgRequest(prompt="a", init_image=_lazy(400, 400), width=256, height=256,
                                      sd_upscale=SDUpscale(upscaler=TINY_X4, scale=1.5)))
    assert caught.value.field == "sd_upscale.upscaler" and "1600x1600" in str(caught.value)
    with pytest.raises(InvalidRequest) as caught:
        engine.txt2img(Txt2ImgRequest(prompt="a", width=512, height=512, hires=HiresFix(upscaler=TINY_X4, scale=1.5)))
    assert caught.value.field == "hr_upscaler" and "2048x2048" in str(caught.value)
    assert no_decoding == []


def test_mask_tools_and_segment_refuse_before_decoding(engine, no_decoding):
    from webui.engine.segment import SegmentRequest, mask_tools, segment

    with pytest.raises(InvalidRequest) as caught:
        mask_tools.to_array(_lazy(8000, 8000), "mask")
    assert caught.value.field == "mask"
    with pytest.raises(InvalidRequest) as caught:
        segment(engine, SegmentRequest(_lazy(8000, 8000), prompt="a cat"))
    assert caught.value.field == "image"
    assert no_decoding == []


def test_video_engine_functions_refuse_from_the_header(engine, tmp_path):
    from webui.engine.video.service import InterpolateRequest, first_frame, interpolate

    for data in (_gif(8000, 8000, 2), _zip(_png(64, 64), _png(8000, 8000))):
        with pytest.raises(InvalidRequest) as caught:
            first_frame(engine, data)
        assert caught.value.field == "video"
    engine.settings.max_video_pixels = 10 * 64 * 64
    clip = _gif(64, 64, 11)
    with pytest.raises(InvalidRequest) as caught:
        interpolate(engine, InterpolateRequest(video=clip))
    assert caught.value.field == "video" and "max_video_pixels" in str(caught.value)
    assert first_frame(engine, clip).size == (64, 64)


def test_plain_data_images_are_checked_before_decoding(no_decoding):
    from webui.engine.core.plain import load
    from webui.engine.generation.img2img import Img2ImgRequest

    with pytest.raises(InvalidRequest) as caught:
        load(Img2ImgRequest, {"prompt": "a", "init_image": {"__image__": _b64(_png(200, 200))}}, max_pixels=100 * 100)
    assert caught.value.field == "init_image" and no_decoding == []
    with pytest.raises(InvalidRequest) as caught:
        load(Img2ImgRequest, {"prompt": "a", "init_image": {"__image__": "not base64!"}})
    assert caught.value.field == "init_image"
