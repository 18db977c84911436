"""Property-based fuzzing of the newer routes: segment, masks, SAM, video (txt2video, vid2vid,
interpolate), /kiri/v1/jobs of every kind, and extras with a model upscaler and its tiles.

Whatever a client sends, the answer is never a 5xx, and every 4xx says what was wrong: a 422 names
a field of the body (its `loc` holds a field name, not just "body"), a 404 says which name it did not
find. In the style of test_api_fuzz.py: any JSON value in the fields that cost nothing, and the
fields that set the work (frames, steps, sizes) drawn from a few values whose valid ones are tiny,
so a request that gets through validation costs one 64x64 step on the tiny models. Bodies go out
as ASCII JSON text, so a lone surrogate (`\\ud800`) reaches the server as a client would send it.
Bounded: a few examples per route, derandomized, no deadline.
"""

from __future__ import annotations

import base64
import io
import json
import random

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from PIL import Image

import tiny_models
import tiny_segmenters
from video_clips import moving_square_frames, write_clip

UPSCALER = "4x-tiny-compact"
FUZZ = settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate])


@pytest.fixture(scope="module")
def routes(video_models_dir, tmp_path_factory):
    """One app on every tiny model these routes use: the video models (tiny SD, motion modules, CLIPSeg,
    SAM 2 video), a tiny SAM and the tiny model upscaler."""
    from fastapi.testclient import TestClient

    from conftest import make_api_app

    root = tmp_path_factory.mktemp("routes-models")
    for name in ("checkpoints", "motion"):
        (root / name).symlink_to(video_models_dir / name, target_is_directory=True)
    (root / "segmentation").mkdir()
    for folder in (video_models_dir / "segmentation").iterdir():
        (root / "segmentation" / folder.name).symlink_to(folder, target_is_directory=True)
    tiny_segmenters.make_tiny_sam(root / "segmentation" / "tiny-sam")
    tiny_models.make_tiny_upscaler(root / "upscalers" / f"{UPSCALER}.safetensors")
    app, engine = make_api_app(root, tmp_path_factory.mktemp("routes-outputs"))
    engine.catalog.scan()
    yield TestClient(app)
    engine.interrupt(None)


def post(client, path: str, body: dict):
    """The body as ASCII JSON text (lone surrogates escaped, as JSON allows)."""
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def check(reply) -> None:
    assert reply.status_code < 500, reply.text[:400]
    if reply.status_code == 422:
        detail = reply.json()["detail"]
        assert isinstance(detail, list) and detail, reply.text[:400]
        loc = detail[0]["loc"]
        assert any(isinstance(part, str) and part != "body" for part in loc), f"422 naming no field: {reply.text[:400]}"
    elif reply.status_code >= 400:
        assert reply.status_code in (400, 404, 409, 413), reply.text[:400]
        assert reply.json().get("detail"), reply.text[:400]


# --- what bodies are made of -------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _png(size=(64, 64), mode="RGB", colour="teal") -> str:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return _b64(buffer.getvalue())


def _mask(size=(64, 64)) -> str:
    image = Image.new("L", size, 0)
    image.paste(255, (16, 16, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return _b64(buffer.getvalue())


def _clip() -> str:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        return _b64(write_clip(Path(folder) / "c.mp4", moving_square_frames(3)).read_bytes())


CLIP, PNG, MASK = _clip(), _png(), _mask()
SURROGATE = "\ud800 x"
odd = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8), st.just(SURROGATE), st.lists(st.integers(-5, 100), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
texts = st.one_of(st.sampled_from(["a red square", "", " ", SURROGATE, "x\udfff", "a" * 1001]), st.text(max_size=12), odd)
videos = st.one_of(st.sampled_from([CLIP, PNG, _b64(random.Random(1).randbytes(3000)), "!!not base64!!", "", "AAAA"]), odd)
points = st.one_of(st.lists(st.lists(st.one_of(st.integers(-5, 80), st.floats(-1, 70, allow_nan=False)), max_size=4), max_size=3), odd)


def fields(required: dict, anything: dict, cheap: dict):
    """A body: the required fields, any subset of the others (each any value of its strategy)."""
    optional = {**anything, **cheap}
    return st.fixed_dictionaries(required, optional=optional)


# --- segment, masks, SAM ----------------------------------------------------------------------------

@FUZZ
@given(body=fields({"image": st.one_of(st.just(PNG), odd)},
                   {"prompt": texts, "points": points, "box": st.one_of(st.lists(st.integers(-5, 80), max_size=5), odd),
                    "threshold": odd},
                   {"model": st.one_of(st.sampled_from(["tiny-clipseg", "tiny-sam", "flood-fill", "grabcut", "nope"]), odd)}))
@example(body={"image": PNG, "prompt": SURROGATE})
@example(body={"image": PNG, "prompt": "a square", "model": "tiny-clipseg"})
def test_segment_never_answers_5xx(routes, body):
    check(post(routes, "/kiri/v1/segment", body))


@FUZZ
@given(body=fields({"masks": st.one_of(st.lists(st.sampled_from([MASK, _mask((32, 32)), PNG, "x"]), min_size=1, max_size=3),
                                       odd)},
                   {"operation": st.one_of(st.sampled_from(["union", "intersect", "subtract", "xor"]), odd),
                    "tools": st.one_of(st.lists(st.fixed_dictionaries(
                        {"tool": st.one_of(st.sampled_from(["grow", "shrink", "feather", "fill holes", "invert",
                                                            "keep largest", "melt"]), odd)},
                        optional={"radius": odd}), max_size=3), odd),
                    "image": st.one_of(st.just(PNG), odd)}, {}))
@example(body={"masks": [MASK, MASK], "tools": [{"tool": "feather", "radius": 2}, {"tool": "grow", "radius": 1}]})
def test_masks_never_answer_5xx(routes, body):
    check(post(routes, "/kiri/v1/masks", body))


@FUZZ
@given(body=fields({"input_image": st.one_of(st.just(PNG), odd)},
                   {"sam_positive_points": points, "sam_negative_points": points, "dino_enabled": odd,
                    "dino_text_prompt": texts, "dino_box_threshold": odd},
                   {"sam_model_name": st.one_of(st.sampled_from(["tiny-sam", "nope"]), odd)}))
@example(body={"input_image": PNG, "sam_model_name": "tiny-sam", "sam_positive_points": [[20, 20]]})
def test_sam_predict_never_answers_5xx(routes, body):
    check(post(routes, "/sam/sam-predict", body))


# --- video ------------------------------------------------------------------------------------------

GENERATION = {"prompt": texts, "negative_prompt": texts, "sampler_name": st.one_of(st.just("Euler"), odd),
              "scheduler": odd, "cfg_scale": odd, "seed": odd, "fps": odd}
TINY_RUN = {"steps": st.sampled_from([1, 0, -1, 151, 1.5, "1", None]),
            "model": st.sampled_from(["tiny-sd", "tiny-sd3", "nope", None, 3])}


@FUZZ
@given(body=fields({}, {**GENERATION, "image": st.one_of(st.just(PNG), odd),
                        "motion_module": st.sampled_from(["tiny-motion", "nope", None, 1])},
                   {**TINY_RUN, "frames": st.sampled_from([2, 0, 1001, "2", None]),
                    "width": st.sampled_from([64, 63, 0, 10**9]), "height": st.sampled_from([64, "x", None]),
                    "free_init_iterations": st.sampled_from([0, 6, -1])}))
@example(body={"prompt": "x", "fps": 0.001})
@example(body={"prompt": SURROGATE})
def test_txt2video_never_answers_5xx(routes, body):
    base = {"prompt": "a red circle", "frames": 2, "steps": 1, "width": 64, "height": 64, "motion_module": "tiny-motion"}
    check(post(routes, "/kiri/v1/txt2video", {**base, **body}))


@FUZZ
@given(body=fields({"video": videos},
                   {**GENERATION, "denoising_strength": odd, "consistency": st.one_of(st.sampled_from(["blend", "flow"]), odd),
                    "consistency_strength": odd, "every_nth": st.one_of(st.sampled_from([1, 2, 10]), odd),
                    "start_time": odd, "end_time": odd, "mask_points": points},
                   {**TINY_RUN, "max_frames": st.sampled_from([2, 0, 1001, None]), "max_size": st.sampled_from([64, 63, 10**9])}))
@example(body={"video": PNG})
@example(body={"video": CLIP, "fps": 0.001})
@example(body={"video": CLIP, "every_nth": 10})
def test_vid2vid_never_answers_5xx(routes, body):
    base = {"prompt": "a square", "steps": 1, "max_frames": 2, "max_size": 64}
    check(post(routes, "/kiri/v1/vid2vid", {**base, **body}))


@FUZZ
@given(body=fields({"video": videos}, {"factor": st.one_of(st.sampled_from([2, 4, 3]), odd)},
                   {"max_frames": st.one_of(st.sampled_from([2, 3, 1, 1001]), odd)}))
@example(body={"video": PNG})
@example(body={"video": CLIP, "factor": 4, "max_frames": 3})
def test_interpolate_never_answers_5xx(routes, body):
    check(post(routes, "/kiri/v1/interpolate", body))


# --- jobs of every kind -----------------------------------------------------------------------------

JOB_KEYS = ["prompt", "steps", "stepz", "frames", "fps", "video", "factor", "init_image", "width", "height", "seed",
            "max_frames", "denoising_strength", "nope"]
JOB_VALUES = st.one_of(odd, st.sampled_from([1, 2, 64, "a cat", CLIP, PNG, {"__image__": PNG}]))


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
@given(kind=st.sampled_from(["txt2img", "img2img", "txt2video", "vid2vid", "interpolate", "segment", ""]),
       request=st.one_of(st.dictionaries(st.sampled_from(JOB_KEYS), JOB_VALUES, max_size=5), odd))
@example(kind="txt2img", request={"prompt": "x", "stepz": 5})
@example(kind="interpolate", request={"video": PNG})
def test_jobs_of_every_kind_never_answer_5xx(routes, kind, request):
    """Queued jobs are interrupted at once: what matters here is the answer to the POST."""
    if isinstance(request, dict) and kind in ("txt2img", "img2img", "txt2video"):
        request = {"steps": 1, "width": 64, "height": 64, **request} if kind != "txt2video" else \
            {"steps": 1, "width": 64, "height": 64, "frames": 2, **request}
    reply = post(routes, "/kiri/v1/jobs", {"kind": kind, "request": request})
    check(reply)
    if reply.status_code == 200:
        job = reply.json()["id"]
        routes.post(f"/kiri/v1/jobs/{job}/interrupt")
        assert routes.get(f"/kiri/v1/jobs/{job}").status_code == 200


# --- extras with a model upscaler and its tiles -------------------------------------------------------

UPSCALERS = st.one_of(st.sampled_from([UPSCALER, "Lanczos", "None", "nope", ""]), odd)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
@given(body=fields({}, {"upscaler_1": UPSCALERS, "upscaler_2": UPSCALERS, "extras_upscaler_2_visibility": odd,
                        "upscaling_crop": odd,
                        "tile_size": st.one_of(st.sampled_from([0, 32, 48, 1, -1, 10**9]), odd),
                        "tile_overlap": st.one_of(st.sampled_from([0, 8, 16, 100, -5]), odd)},
                   {"resize_mode": st.sampled_from([0, 1, 2, None]),
                    "upscaling_resize": st.sampled_from([1, 2, 4, 0, 100, -1, "2"]),
                    "upscaling_resize_w": st.sampled_from([64, 0, 10**9]),
                    "upscaling_resize_h": st.sampled_from([64, -1, None])}))
@example(body={"upscaler_1": UPSCALER, "upscaling_resize": 4, "tile_size": 32, "tile_overlap": 16})
@example(body={"upscaler_1": UPSCALER, "tile_size": 64, "tile_overlap": 100})
def test_extras_never_answer_5xx(routes, body):
    image = _png((32, 32))
    check(post(routes, "/sdapi/v1/extra-single-image", {"image": image, "upscaler_1": UPSCALER, **body}))
    check(post(routes, "/sdapi/v1/extra-batch-images", {"imageList": [{"data": image, "name": "a.png"}],
                                                        "upscaler_1": UPSCALER, **body}))
