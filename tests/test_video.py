"""Video: the clip files, optical flow, interpolation, caps, video to video with each consistency
mode, interrupt then resume, and the /kiri/v1 routes (text to video: test_txt2video.py)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest

from video_clips import SIZE, decode, moving_square_frames, write_clip  # noqa: E402
from webui.engine.core.errors import InvalidRequest
from webui.engine.video import media
from webui.engine.video.service import Txt2VideoRequest


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clips") / "square.mp4", moving_square_frames())


# --- files in and out --------------------------------------------------------------------------

def test_probe_and_read_an_mp4_a_gif_and_a_zip(clip, tmp_path):
    import zipfile

    from webui.engine.video import media

    info = media.probe(clip.read_bytes())
    assert (info.width, info.height, info.fps, info.frames) == (SIZE, SIZE, 8.0, 6)
    assert len(list(media.read_frames(clip.read_bytes(), info))) == 6

    frames = moving_square_frames(5)
    gif = tmp_path / "a.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    info = media.probe(gif.read_bytes())
    assert (info.format, info.frames, info.fps) == ("gif", 5, 10.0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, frame in enumerate(frames):
            png = io.BytesIO()
            frame.save(png, format="PNG")
            archive.writestr(f"frame_{i:03d}.png", png.getvalue())
    info = media.probe(buffer.getvalue())
    assert (info.format, info.frames) == ("zip", 5)
    read = [f.image for f in media.read_frames(buffer.getvalue(), info)]
    assert np.array_equal(np.asarray(read[3]), np.asarray(frames[3]))


def test_unreadable_and_empty_videos_are_refused_naming_the_field():
    from webui.engine.core.errors import InvalidRequest
    from webui.engine.video import media

    for data in (b"", b"this is not a video at all" * 10, b"PK\x03\x04broken zip"):
        with pytest.raises(InvalidRequest) as caught:
            media.probe(data)
        assert caught.value.field == "video"


def test_mp4_is_h264_yuv420p_with_even_sides_and_the_infotext(tmp_path):
    import av

    from webui.engine.video import media

    frames = [f.resize((63, 45)) for f in moving_square_frames(4)]
    path = media.write_mp4(frames, 12.0, tmp_path / "odd.mp4", "a red square\nSteps: 2, Seed: 5")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (64, 46)
        assert float(stream.average_rate) == 12.0
        assert "Seed: 5" in container.metadata.get("comment", "")
    assert not list(tmp_path.glob(".*tmp"))


# --- optical flow ------------------------------------------------------------------------------

def test_flow_warping_lands_closer_to_the_next_frame_than_no_warping():
    from webui.engine.video.flow import warp_onto

    frames = moving_square_frames(2, step=5)
    # The "previous output" is the previous frame restyled (colours changed); the warp must move it.
    previous_output = frames[0].point(lambda v: 255 - v)
    truth = np.asarray(frames[1].point(lambda v: 255 - v), dtype=np.float32)
    warped = np.asarray(warp_onto(previous_output, frames[0], frames[1]), dtype=np.float32)
    unwarped = np.asarray(previous_output, dtype=np.float32)
    assert np.abs(warped - truth).mean() < 0.5 * np.abs(unwarped - truth).mean()


def test_interpolation_doubles_and_quadruples_the_frame_rate(video_engine, clip):
    from webui.engine.video.service import InterpolateRequest, interpolate

    for factor in (2, 4):
        result = interpolate(video_engine, InterpolateRequest(video=clip.read_bytes(), factor=factor))
        frames, fps, _ = decode(result.path)
        assert len(result.frame_paths) == len(frames) == 5 * factor + 1
        assert fps == 8.0 * factor
        assert frames[0].shape == (SIZE, SIZE, 3)
    # The middle in-between of x2 sits between its neighbours: the square's centre moved half way.
    images = [np.asarray(i) for i in result.frames()]
    def centre(image):
        xs = np.nonzero((image[..., 0] > 150) & (image[..., 2] < 100))[1]
        return xs.mean()
    assert centre(images[0]) < centre(images[2]) < centre(images[4])


# --- caps --------------------------------------------------------------------------------------

def test_request_caps_name_their_field(clip):
    from webui.engine.core.errors import InvalidRequest
    from webui.engine.video.service import InterpolateRequest, Txt2VideoRequest, Vid2VidRequest

    cases = [
        (lambda: Txt2VideoRequest(prompt="x", frames=5000), "frames"),
        (lambda: Txt2VideoRequest(prompt="x", fps=0), "fps"),
        (lambda: Txt2VideoRequest(prompt="x", width=4096), "width"),
        (lambda: Txt2VideoRequest(prompt="0: a\n40: b", frames=16), "prompt"),
        (lambda: Vid2VidRequest(video=clip, prompt="x", consistency="magic"), "consistency"),
        (lambda: Vid2VidRequest(video=clip, prompt="x", every_nth=0), "every_nth"),
        (lambda: Vid2VidRequest(video=clip, prompt="x", start_time=2, end_time=1), "end_time"),
        (lambda: Vid2VidRequest(video=None, prompt="x"), "video"),
        (lambda: InterpolateRequest(video=clip, factor=3), "factor"),
    ]
    for make, field in cases:
        with pytest.raises(InvalidRequest) as caught:
            make()
        assert caught.value.field == field, field


def test_engine_caps_pixels_duration_and_upload_size_naming_the_field(video_models_dir, tmp_path):
    import os
    from fractions import Fraction

    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.core.errors import InvalidRequest
    from webui.engine.settings import Settings
    from webui.engine.video.service import MAX_UPLOAD_BYTES, Txt2VideoRequest, txt2video, vid2vid

    engine = build_engine(Settings(models_dir=video_models_dir, outputs_dir=tmp_path / "out", max_pixels=64 * 64),
                          DeviceChoice("cpu"))
    slow = write_clip(tmp_path / "slow.mp4", moving_square_frames(4, size=128), fps=Fraction(1, 200))  # 800 s
    big = tmp_path / "big.mp4"
    with open(big, "wb") as f:
        f.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: refused from its size, never read
    cases = [
        (lambda: txt2video(engine, Txt2VideoRequest(prompt="x", width=128, height=128)), "width"),
        (lambda: vid2vid(engine, _vid2vid_request(slow, max_size=128, end_time=100.0)), "max_size"),
        (lambda: vid2vid(engine, _vid2vid_request(slow, max_size=64)), "video"),
        (lambda: vid2vid(engine, _vid2vid_request(slow, video=big)), "video"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidRequest) as caught:
            call()
        assert caught.value.field == field, (field, str(caught.value))
    assert os.path.getsize(big) > MAX_UPLOAD_BYTES


# --- video to video ----------------------------------------------------------------------------

def _vid2vid_request(clip: Path, **changes):
    from webui.engine.video.service import Vid2VidRequest

    fields = dict(video=clip.read_bytes(), prompt="a red square, blue background", denoising_strength=0.5, steps=2,
                  seed=7, model="tiny-sd", sampler_name="Euler", max_size=SIZE, consistency="flow")
    fields.update(changes)
    return Vid2VidRequest(**fields)


def test_vid2vid_keeps_frame_count_fps_and_size_in_every_consistency_mode(video_engine, clip):
    from webui.engine.video.service import vid2vid

    for consistency in ("none", "blend", "flow"):
        result = vid2vid(video_engine, _vid2vid_request(clip, consistency=consistency))
        frames, fps, meta = decode(result.path)
        assert len(frames) == 6 and fps == 8.0, consistency
        assert frames[0].shape == (SIZE, SIZE, 3)
        assert f"Consistency: {consistency}" in meta.get("comment", "")
    halved = vid2vid(video_engine, _vid2vid_request(clip, every_nth=2, consistency="none"))
    assert len(halved.frame_paths) == 3 and halved.fps == 4.0


def test_vid2vid_refuses_a_video_model_naming_the_field(video_engine, clip):
    from webui.engine.core.errors import InvalidRequest
    from webui.engine.video.service import vid2vid

    with pytest.raises(InvalidRequest, match="image checkpoint") as caught:
        vid2vid(video_engine, _vid2vid_request(clip, model="tiny-wan"))
    assert caught.value.field == "model"


def test_vid2vid_mask_prompt_repaints_only_what_segmentation_finds(video_engine, clip):
    from PIL import Image, ImageFilter

    from webui.engine.video.service import frame_mask, vid2vid

    result = vid2vid(video_engine, _vid2vid_request(clip, mask_prompt="the red square", consistency="blend",
                                                    denoising_strength=1.0))
    assert len(result.frame_paths) == 6 and 'Mask prompt: the red square' in result.info
    outputs = result.frames()
    decoded, _, _ = decode(clip)
    masked = 0
    for source, output in zip(decoded, outputs):
        source = Image.fromarray(source)
        mask = frame_mask(video_engine, "the red square", source, "tester")
        keep = np.ones((SIZE, SIZE), bool) if mask is None else \
            np.asarray(mask.filter(ImageFilter.GaussianBlur(4))) == 0
        assert np.array_equal(np.asarray(output)[keep], np.asarray(source)[keep])
        masked += mask is not None
    assert masked  # the tiny CLIPSeg finds something in some frames, so some pixels were repainted


def test_vid2vid_mask_prompt_needs_a_segmenter_that_reads_words(tmp_path, clip):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.core.errors import InvalidRequest
    from webui.engine.settings import Settings
    from webui.engine.video.service import vid2vid

    (tmp_path / "models").mkdir()
    engine = build_engine(Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out"), DeviceChoice("cpu"))
    with pytest.raises(InvalidRequest, match="no segmenter takes a text prompt") as caught:
        vid2vid(engine, _vid2vid_request(clip, mask_prompt="the square"))
    assert caught.value.field == "mask_prompt"


def test_interrupt_keeps_finished_frames_and_resume_gives_the_same_clip(video_engine, clip, tmp_path):
    import shutil

    from webui.engine.core.jobs import Job
    from webui.engine.video.service import vid2vid

    whole = vid2vid(video_engine, _vid2vid_request(clip))
    expected = [np.asarray(f) for f in whole.frames()]
    shutil.rmtree(whole.folder)

    job = Job(kind="vid2vid", owner="tester")
    job.listeners.append(lambda j: j.interrupt() if j.images_done >= 2 else None)
    partial = vid2vid(video_engine, _vid2vid_request(clip), job)
    assert partial.interrupted and 2 <= len(partial.frame_paths) < 6
    frames, _, _ = decode(partial.path)  # the partial clip is written
    assert len(frames) == len(partial.frame_paths)

    resumed = vid2vid(video_engine, _vid2vid_request(clip))
    assert not resumed.interrupted and resumed.resumed_frames == len(partial.frame_paths)
    assert len(resumed.frame_paths) == 6
    for got, want in zip((np.asarray(f) for f in resumed.frames()), expected):
        assert np.array_equal(got, want)


def test_vid2vid_through_the_motion_module_restyles_windows_and_resumes_after_the_finished_ones(video_engine, tmp_path):
    import shutil

    from webui.engine.core.errors import InvalidRequest
    from webui.engine.core.jobs import Job
    from webui.engine.video.service import Vid2VidRequest, vid2vid

    long_clip = write_clip(tmp_path / "long.mp4", moving_square_frames(12, step=2))
    request = lambda **extra: Vid2VidRequest(  # noqa: E731
        video=long_clip, prompt="a square", steps=2, seed=6, model="tiny-sd", max_size=SIZE, max_frames=12,
        denoising_strength=0.5, sampler_name="Euler", motion_module="tiny-motion", **extra)
    whole = vid2vid(video_engine, request())
    assert len(whole.frame_paths) == 12 and "Motion module: tiny-motion" in whole.info and "Window: 8" in whole.info
    expected = [np.asarray(f) for f in whole.frames()]
    shutil.rmtree(whole.folder)

    job = Job(kind="vid2vid", owner="tester")
    job.listeners.append(lambda j: j.interrupt() if j.images_done >= 8 else None)
    partial = vid2vid(video_engine, request(), job)
    assert partial.interrupted and len(partial.frame_paths) == 8  # the first window, whole
    resumed = vid2vid(video_engine, request())
    assert not resumed.interrupted and resumed.resumed_frames == 8 and len(resumed.frame_paths) == 12
    for got, want in zip((np.asarray(f) for f in resumed.frames()), expected):
        assert np.array_equal(got, want)

    with pytest.raises(InvalidRequest) as refused:
        request(mask_prompt="the square")
    assert refused.value.field == "mask_prompt"
    with pytest.raises(InvalidRequest) as refused:
        vid2vid(video_engine, Vid2VidRequest(video=long_clip, prompt="x", steps=1, model="tiny-sdxl", max_size=SIZE,
                                             max_frames=2, motion_module="tiny-motion-xl"))
    assert refused.value.field == "motion_module" and "SD 1.x or 2.x" in str(refused.value)


def test_a_click_on_the_first_frame_is_followed_by_sam2_video_and_only_that_object_is_repainted(video_engine, clip):
    from webui.engine.core.errors import InvalidRequest
    from webui.engine.segment import track, trackers
    from webui.engine.video import media
    from webui.engine.video.service import MASK_BLUR, Vid2VidRequest, vid2vid

    assert trackers(video_engine) == ["tiny-sam2-video"]
    click = [[16, 28, 1]]  # inside the red square of the first frame
    request = Vid2VidRequest(video=clip, prompt="a blue square", steps=2, seed=3, model="tiny-sd", max_size=SIZE,
                             denoising_strength=1.0, sampler_name="Euler", mask_points=click)
    result = vid2vid(video_engine, request)
    assert len(result.frame_paths) == 6 and "Mask points: " in result.info
    sources = [f.image.convert("RGB") for f in media.read_frames(clip.read_bytes(), media.probe(clip.read_bytes()))]
    masks = list(track(video_engine, iter(sources), click))
    assert len(masks) == 6 and all(m.shape == (SIZE, SIZE) for m in masks)
    import cv2

    for source, mask, made in zip(sources, masks, result.frames()):
        outside = cv2.dilate(mask.astype(np.uint8), np.ones((4 * MASK_BLUR + 1,) * 2, np.uint8)) == 0
        diff = np.abs(np.asarray(made, dtype=int) - np.asarray(source, dtype=int)).max(axis=2)
        assert diff[outside].max() <= 2  # beyond the feathered edge of the followed object: the frame as it came
        if mask.sum() > 20:
            assert diff[mask].mean() > 2  # inside it: repainted

    for bad, says in (([[16, 28, 5]], "mask_points"), ([[500, 28, 1]], "outside")):
        with pytest.raises(InvalidRequest) as refused:
            vid2vid(video_engine, Vid2VidRequest(video=clip, prompt="x", steps=1, model="tiny-sd", max_size=SIZE,
                                                 mask_points=bad))
        assert refused.value.field == "mask_points" and says in str(refused.value)


def test_video_jobs_report_progress_per_frame(video_engine, clip):
    from webui.engine.core.jobs import Job
    from webui.engine.video.service import vid2vid

    seen = []
    job = Job(kind="vid2vid", owner="tester")
    job.listeners.append(lambda j: seen.append((j.batch_no, j.batch_count, j.label)))
    vid2vid(video_engine, _vid2vid_request(clip, consistency="none", seed=11), job)
    assert (6, 6, "Frame 6/6") in seen and any(b == 1 for b, _, _ in seen)


# --- the /kiri/v1 routes -----------------------------------------------------------------------

@pytest.fixture()
def video_api(video_models_dir, tmp_path):
    from fastapi.testclient import TestClient

    from conftest import make_api_app

    app, engine = make_api_app(video_models_dir, tmp_path / "outputs")
    engine.catalog.scan()
    return TestClient(app), engine


def test_api_txt2video_vid2vid_and_interpolate_answer_a_playable_mp4(video_api, clip):
    client, _ = video_api
    response = client.post("/kiri/v1/txt2video", json={"prompt": "a red circle", "frames": 3, "fps": 5, "steps": 1,
                                                       "width": SIZE, "height": SIZE, "seed": 2, "model": "tiny-sd",
                                                       "motion_module": "tiny-motion", "sampler_name": "Euler",
                                                       "free_init_iterations": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    frames, fps, _ = decode(base64.b64decode(body["video"]))
    assert len(frames) == len(body["frames"]) == 3 and fps == body["fps"] == 5.0
    assert "Seed: 2" in body["info"] and "FreeInit: 2" in body["info"]

    video = base64.b64encode(clip.read_bytes()).decode()
    response = client.post("/kiri/v1/vid2vid", json={"video": video, "prompt": "a square", "steps": 2, "seed": 4,
                                                     "denoising_strength": 0.4, "consistency": "flow", "model": "tiny-sd",
                                                     "max_frames": 3, "max_size": SIZE, "sampler_name": "Euler"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["frames"]) == 3 and body["fps"] == 8.0
    from PIL import Image

    assert Image.open(io.BytesIO(base64.b64decode(body["frames"][0]))).size == (SIZE, SIZE)

    response = client.post("/kiri/v1/interpolate", json={"video": video, "factor": 2})
    assert response.status_code == 200, response.text
    assert len(response.json()["frames"]) == 11 and response.json()["fps"] == 16.0

    listing = client.get("/kiri/v1/video-models").json()
    assert "tiny-sd" in listing["models"] and "tiny-sd3" not in listing["models"]
    assert listing["motion_modules"] == ["tiny-motion", "tiny-motion-xl"]


@pytest.mark.parametrize("route, payload, field", [
    ("txt2video", {"prompt": "x", "frames": 0}, "frames"),
    ("txt2video", {"prompt": ""}, "prompt"),
    ("txt2video", {"prompt": "x", "width": 65}, "width"),
    ("txt2video", {"prompt": "x", "free_init_iterations": 6}, "free_init_iterations"),
    ("txt2video", {"prompt": "x", "frames": 2, "steps": 1, "width": SIZE, "height": SIZE, "model": "tiny-sd",
                   "motion_module": "nope"}, None),
    ("vid2vid", {"video": "!!not base64!!", "prompt": "x"}, "video"),
    ("vid2vid", {"video": base64.b64encode(b"not a video" * 20).decode(), "prompt": "x"}, "video"),
    ("vid2vid", {"video": "AAAA", "prompt": "x", "consistency": "wobble"}, "consistency"),
    ("interpolate", {"video": "AAAA", "factor": 3}, "factor"),
])
def test_api_refuses_bad_fields_with_422_naming_them(video_api, route, payload, field):
    client, _ = video_api
    response = client.post(f"/kiri/v1/{route}", json=payload)
    if field is None:  # an unknown motion module: not found
        assert response.status_code == 404, response.text
        assert "nope" in response.json()["detail"]
        return
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == field


def test_video_jobs_go_through_kiri_jobs_and_come_back_as_base64(video_api, clip):
    import time

    client, _ = video_api
    video = base64.b64encode(clip.read_bytes()).decode()
    submitted = {
        "txt2video": {"prompt": "a red circle", "frames": 3, "fps": 6, "steps": 1, "width": SIZE, "height": SIZE,
                      "seed": 3, "model": "tiny-sd", "motion_module": "tiny-motion", "sampler_name": "Euler"},
        "vid2vid": {"video": video, "prompt": "a square", "steps": 1, "seed": 4, "model": "tiny-sd", "max_frames": 2,
                    "max_size": SIZE, "sampler_name": "Euler"},
        "interpolate": {"video": video, "factor": 2, "max_frames": 3},
    }
    ids = {}
    for kind, request in submitted.items():
        response = client.post("/kiri/v1/jobs", json={"kind": kind, "request": request})
        assert response.status_code == 200, response.text
        ids[kind] = response.json()["id"]
    expected = {"txt2video": 3, "vid2vid": 2, "interpolate": 5}
    for kind, job_id in ids.items():
        deadline = time.monotonic() + 120
        while (body := client.get(f"/kiri/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
        assert body["status"] == "done", body
        result = body["result"]
        frames, _, _ = decode(base64.b64decode(result["video"]))
        assert len(frames) == len(result["frames"]) == expected[kind], kind
    # A path on the server is not a video: plain data carries the file itself.
    response = client.post("/kiri/v1/jobs", json={"kind": "interpolate", "request": {"video": str(clip)}})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][-1] == "video", response.text


def test_sdapi_progress_and_interrupt_see_video_jobs(video_api, clip):
    import threading
    import time

    client, engine = video_api
    video = base64.b64encode(clip.read_bytes()).decode()
    outcome = {}

    def long_job():
        outcome["response"] = client.post("/kiri/v1/vid2vid", json={
            "video": video, "prompt": "a square", "steps": 30, "seed": 9, "model": "tiny-sd", "max_size": SIZE,
            "denoising_strength": 1.0, "sampler_name": "Euler"})

    worker = threading.Thread(target=long_job)
    worker.start()
    deadline, seen = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        progress = client.get("/sdapi/v1/progress").json()
        if progress["state"]["job"] == "vid2vid" and progress["state"]["sampling_step"] > 0:
            seen = progress
            break
        time.sleep(0.05)
    assert seen is not None and "Frame" in seen["textinfo"] and 0 < seen["progress"] < 1
    client.post("/sdapi/v1/interrupt")
    worker.join(60)
    body = outcome["response"].json()
    assert body["interrupted"] and len(body["frames"]) < 6


# --- frame rates and files that are not clips -------------------------------------------------------

def _image_bytes(fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), "teal").save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fps", [0.001, 0.5, 0, 61, float("nan")])
def test_a_frame_rate_outside_1_to_60_is_refused_before_any_work(video_api, clip, fps):
    client, _ = video_api
    video = base64.b64encode(clip.read_bytes()).decode()
    for route, payload in (("txt2video", {"prompt": "x", "frames": 2}), ("vid2vid", {"video": video, "prompt": "x"})):
        if fps != fps:  # NaN is not JSON: the request class itself
            with pytest.raises(InvalidRequest) as caught:
                Txt2VideoRequest(prompt="x", fps=fps)
            assert caught.value.field == "fps"
            continue
        response = client.post(f"/kiri/v1/{route}", json={**payload, "fps": fps})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"][-1] == "fps"


def test_vid2vid_fps_from_the_source_below_1_is_refused_up_front(video_api, clip):
    client, engine = video_api
    video = base64.b64encode(clip.read_bytes()).decode()  # 8 fps: every 10th frame is 0.8 fps
    response = client.post("/kiri/v1/vid2vid", json={"video": video, "prompt": "x", "every_nth": 10})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == "fps" and "every_nth" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("fps", [0.001, 1e-9, 0, -3, float("nan"), float("inf")])
@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_write_animation_stores_any_frame_rate_within_what_the_format_holds(tmp_path, fps, fmt):
    from PIL import Image

    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    path = media.write_animation(iter(frames), fps, tmp_path / f"clip.{fmt.lower()}", fmt)
    with Image.open(path) as written:
        assert written.n_frames == 2
    assert 1 <= media.frame_duration_ms(fps, fmt) <= media.MAX_FRAME_MS[fmt]


@pytest.mark.parametrize("fmt, name", [("PNG", "PNG"), ("JPEG", "JPEG"), ("WEBP", "WebP"), ("GIF", "GIF")])
def test_a_still_image_sent_as_video_is_refused_as_such(video_api, fmt, name):
    client, _ = video_api
    still = base64.b64encode(_image_bytes(fmt)).decode()
    for route, payload in (("interpolate", {"factor": 2}), ("vid2vid", {"prompt": "x"})):
        response = client.post(f"/kiri/v1/{route}", json={**payload, "video": still})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"][0]
        assert detail["loc"][-1] == "video" and f"{name} image" in detail["msg"] and "not a video" in detail["msg"]


def test_random_bytes_as_video_are_refused_naming_video(video_api):
    import random

    client, _ = video_api
    noise = base64.b64encode(random.Random(3).randbytes(4000)).decode()
    response = client.post("/kiri/v1/interpolate", json={"video": noise, "factor": 2})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][-1] == "video"


def test_several_frame_gifs_and_zips_of_frames_stay_clips(tmp_path):
    import zipfile

    frames = moving_square_frames(3)
    gif = tmp_path / "a.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert media.probe(gif.read_bytes()).frames == 3
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("0001.png", _image_bytes("PNG"))
    assert media.probe(buffer.getvalue()).format == "zip"
