"""Property-based fuzzing of /sdapi/v1: whatever a client sends, the answer is never a 5xx.

- schemathesis generates requests from the OpenAPI schema Kiri serves, for every /sdapi/v1
  operation except the two that generate images, against the routes mounted on a bare FastAPI app
  through schemathesis' ASGI support (an exception escaping the app, which would drop the client's
  connection, fails the test as a 5xx would).
- POST /txt2img and /img2img are fuzzed with hypothesis on a narrow strategy instead: any JSON
  value in any field, but the size, steps and batch fields, when they come out valid, stay tiny,
  so a request that gets through validation costs one 64x64 step and the file stays fast.
Bounded: a few examples per operation, no shrinking beyond hypothesis' defaults, no deadline.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import not_a_server_error

GENERATING = r"^/(sdapi/v1/(txt2img|img2img)|kiri/v1/jobs)$"
FUZZED_PATHS = r"^/(sdapi|kiri)/v1/"


@pytest.fixture(scope="module")
def fuzz_app(models_dir, tmp_path_factory):
    from conftest import make_api_app

    app, engine = make_api_app(models_dir, tmp_path_factory.mktemp("fuzz-outputs"), cmd_flags={"port": 7860})
    yield app
    engine.interrupt(None)


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return only_fuzzed(schemathesis.openapi.from_asgi("/openapi.json", fuzz_app))


def only_fuzzed(schema):
    return schema.include(path_regex=FUZZED_PATHS).exclude(method="POST", path_regex=GENERATING)


schema = only_fuzzed(schemathesis.pytest.from_fixture("api_schema"))


@schema.parametrize()
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
def test_no_sdapi_route_answers_5xx(case):
    case.call_and_validate(checks=[not_a_server_error])


def test_the_fuzzer_covers_every_sdapi_route(fuzz_app, api_schema):
    """Every /sdapi/v1 route Kiri builds is in the schema it serves, and the fuzzer takes each one but
    the two generating routes (fuzzed below)."""
    from webui.api import routers

    prefixes = ("/sdapi/v1/", "/kiri/v1/")
    built = {(method, route.path) for router in routers(fuzz_app.state.kiri_ctx) for route in router.routes
             for method in route.methods if route.path.startswith(prefixes)}
    documented = {(method.upper(), path) for path, ops in fuzz_app.openapi()["paths"].items()
                  if path.startswith(prefixes) for method in ops}
    fuzzed = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert built == documented and len(built) >= 30
    generating = {("POST", "/sdapi/v1/txt2img"), ("POST", "/sdapi/v1/img2img"), ("POST", "/kiri/v1/jobs")}
    assert fuzzed == built - generating


# --- the generating routes: hypothesis on a narrow strategy ------------------------------------------
def tiny_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


odd = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
# Fields whose value is anything at all, and fields kept cheap: valid only at their smallest.
ANY_FIELDS = ["prompt", "negative_prompt", "sampler_name", "sampler_index", "scheduler", "seed", "cfg_scale",
              "styles", "subseed_strength", "restore_faces", "tiling", "enable_hr", "eta", "s_churn", "script_name",
              "script_args", "alwayson_scripts", "override_settings", "send_images", "save_images", "denoising_strength",
              "comments", "infotext"]
CHEAP = {"width": st.sampled_from([64, 63, 0, -64, 10**9, "64", None]),
         "height": st.sampled_from([64, 65, "x", None]),
         "steps": st.sampled_from([1, 0, -1, 10**12, 1.5, "1", None]),
         "n_iter": st.sampled_from([1, 0, 101, None]), "batch_size": st.sampled_from([1, 0, 9, None])}
IMG2IMG_FIELDS = {"init_images": st.one_of(st.just([tiny_png()]), st.lists(odd, max_size=2), odd),
                  "mask": st.one_of(st.none(), st.just(tiny_png()), odd),
                  "resize_mode": st.one_of(st.sampled_from([0, 1, 2, 3]), odd),
                  "mask_blur": odd, "inpainting_fill": odd, "inpaint_full_res": odd, "inpaint_full_res_padding": odd,
                  "inpainting_mask_invert": odd, "include_init_images": odd}


def bodies(extra: dict) -> st.SearchStrategy[dict]:
    chosen = st.fixed_dictionaries({}, optional={**{name: odd for name in ANY_FIELDS}, **CHEAP, **extra})
    base = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 1, "sampler_name": "Euler"}
    return chosen.map(lambda fields: {**base, **{k: v for k, v in fields.items() if v is not None or k in ANY_FIELDS}})


@pytest.fixture(scope="module")
def fuzz_client(fuzz_app):
    from fastapi.testclient import TestClient

    return TestClient(fuzz_app, raise_server_exceptions=True)


def check_reply(response, body: dict) -> None:
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        info = json.loads(response.json()["info"])
        assert isinstance(info["warnings"], list)
        if body.get("send_images", True) is True:
            assert len(response.json()["images"]) >= 1
    elif response.status_code == 422:
        assert response.json()["detail"]  # says which field


@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
@given(body=bodies({}))
@example(body={"prompt": "a cat", "width": 64, "height": 64, "steps": 1, "sampler_index": "Euler a", "eta": 0.3,
               "restore_faces": True, "styles": ["x"], "override_settings": {"samples_save": "false", "x": [1]}})
def test_txt2img_never_answers_5xx(fuzz_client, body):
    check_reply(fuzz_client.post("/sdapi/v1/txt2img", json=body), body)


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
@given(body=bodies(IMG2IMG_FIELDS))
@example(body={"prompt": "a cat", "width": 64, "height": 64, "steps": 1, "mask": tiny_png(), "inpainting_mask_invert": True,
               "script_name": "sd upscale", "script_args": ["", 8, "Lanczos", 2.0]})
def test_img2img_never_answers_5xx(fuzz_client, body):
    check_reply(fuzz_client.post("/sdapi/v1/img2img", json={"init_images": [tiny_png()], "denoising_strength": 0.5, **body}), body)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(["txt2img", "img2img", "paint", ""]),
       request=st.dictionaries(st.sampled_from(["prompt", "steps", "width", "height", "seed", "addons", "init_image", "nope"]),
                               st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=5),
                                         st.just({"clip_skip": 2}), st.just([1])), max_size=6))
def test_kiri_jobs_never_answer_5xx(fuzz_client, kind, request):
    """POST /kiri/v1/jobs on a narrow strategy (at most a 3-step, tiny job is ever valid)."""
    reply = fuzz_client.post("/kiri/v1/jobs", json={"kind": kind, "request": request})
    assert reply.status_code < 500, reply.text[:300]
    if reply.status_code == 200:
        job = reply.json()["id"]
        fuzz_client.post(f"/kiri/v1/jobs/{job}/interrupt")
        assert fuzz_client.get(f"/kiri/v1/jobs/{job}").status_code == 200
