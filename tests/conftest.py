"""Shared fixtures: a models folder of tiny real-architecture checkpoints, built once per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests must never reach a hub
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import tiny_models  # noqa: E402  (tests/ is on sys.path through rootdir conftest)
import tiny_segmenters  # noqa: E402


def _one_ast_parse_at_a_time() -> None:
    """CPython 3.11's AST builder keeps one depth counter for all threads (cpython gh-106905, fixed in
    3.12): two threads building an AST at once fail one of them with "SystemError: AST constructor
    recursion depth mismatch". In a test process that happens: a served app's thread builds the OpenAPI
    schema (inspect.signature parses a builtin's text signature) while the test's own thread parses
    source (the architecture test, hypothesis describing a lambda). So here every ast.parse takes one
    lock; each caller looks ast.parse up when it calls it (inspect, hypothesis, schemathesis)."""
    import ast
    import sys
    import threading

    if sys.version_info >= (3, 12) or getattr(ast.parse, "one_at_a_time", False):
        return
    lock, parse = threading.Lock(), ast.parse

    def serialised(*args, **kwargs):
        with lock:
            return parse(*args, **kwargs)

    serialised.one_at_a_time = True
    ast.parse = serialised


_one_ast_parse_at_a_time()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """models/ with a tiny SD 1.x (folder and single file, plus its config) and a tiny SD3."""
    root = tmp_path_factory.mktemp("models")
    checkpoints = root / "checkpoints"
    checkpoints.mkdir()
    sd = tiny_models.make_tiny_sd(checkpoints / "tiny-sd")
    tiny_models.make_tiny_sd3(checkpoints / "tiny-sd3")
    tiny_models.save_ldm_single_file(sd, checkpoints / "tiny-sd-single.safetensors")
    (root / "configs").mkdir()
    tiny_models.save_config_folder(sd, root / "configs" / "sd1")
    tiny_models.make_tiny_upscaler(root / "upscalers" / "4x-tiny-compact.safetensors")
    return root


@pytest.fixture()
def engine(models_dir, tmp_path):
    from webui.bootstrap import build_engine
    from webui.engine.settings import Settings
    from webui.engine.core.devices import DeviceChoice

    settings = Settings(models_dir=models_dir, outputs_dir=tmp_path / "outputs", default_model="tiny-sd")
    return build_engine(settings, DeviceChoice("cpu"))


def serve_kiri(models_dir: Path, tmp_path_factory, name: str = "outputs", **options):
    """The real Gradio app on a free loopback port, as launch.py builds it: yields its URL, engine
    and outputs folder, then stops running jobs and closes the server. `options`: more ServeOptions
    (ui_login, api_login, admins)."""
    import socket
    import time

    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings
    from webui.server import ServeOptions, serve

    outputs = tmp_path_factory.mktemp(name)
    settings = Settings(models_dir=models_dir, outputs_dir=outputs, default_model="tiny-sd")
    engine = build_engine(settings, DeviceChoice("cpu"))
    engine.catalog.scan()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app, _ = serve(engine, ServeOptions(port=port, settings_file=tmp_path_factory.mktemp("settings") / "settings.json",
                                        cmd_flags={"port": port}, **options))
    yield {"url": f"http://127.0.0.1:{port}/", "engine": engine, "outputs": outputs}
    # Stop and wait for running jobs: a torch thread alive at interpreter exit can abort it.
    engine.interrupt(None)
    deadline = time.monotonic() + 60
    while (engine.jobs.active() or engine.jobs.queued()) and time.monotonic() < deadline:
        time.sleep(0.1)
    app.close()


@pytest.fixture(scope="session")
def kiri_server(models_dir, tmp_path_factory):
    """The real Gradio app on the tiny models; yields its URL, engine and outputs folder."""
    yield from serve_kiri(models_dir, tmp_path_factory)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright; no browser download is involved."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def v_models_dir(tmp_path_factory) -> Path:
    """A models/ folder with a tiny v-prediction SD model, for the third parameterisation."""
    root = tmp_path_factory.mktemp("v_models")
    tiny_models.make_tiny_sd(root / "checkpoints" / "tiny-sd-v", prediction_type="v_prediction")
    return root


@pytest.fixture(scope="session")
def family_models_dir(tmp_path_factory) -> Path:
    """models/ with tiny SDXL and SD 2.x (folder and single file, with configs/sdxl and configs/sd2),
    PixArt-Sigma and Flux folders: the families detected from real checkpoints, built once per run."""
    root = tmp_path_factory.mktemp("family_models")
    checkpoints = root / "checkpoints"
    checkpoints.mkdir()
    (root / "configs").mkdir()
    sdxl = tiny_models.make_tiny_sdxl(checkpoints / "tiny-sdxl")
    sd2 = tiny_models.make_tiny_sd2(checkpoints / "tiny-sd2")
    tiny_models.make_tiny_pixart(checkpoints / "tiny-pixart")
    tiny_models.make_tiny_flux(checkpoints / "tiny-flux")
    tiny_models.save_sdxl_single_file(sdxl, checkpoints / "tiny-sdxl-single.safetensors")
    tiny_models.save_sd2_single_file(sd2, checkpoints / "tiny-sd2-single.safetensors")
    tiny_models.save_config_folder(sdxl, root / "configs" / "sdxl")
    tiny_models.save_config_folder(sd2, root / "configs" / "sd2")
    return root


@pytest.fixture(scope="session")
def video_models_dir(tmp_path_factory) -> Path:
    """models/ for the Video tab: a tiny SD 1.x with a tiny motion module (models/motion/), a tiny SD3
    (a family no motion module animates), a tiny SDXL with its motion module, and a tiny Wan, LTX-Video and
    LTX-Video image-to-video (native video pipelines in checkpoints/)."""
    root = tmp_path_factory.mktemp("video_models")
    tiny_models.make_tiny_sd(root / "checkpoints" / "tiny-sd")
    tiny_models.make_tiny_wan(root / "checkpoints" / "tiny-wan")
    tiny_models.make_tiny_ltx(root / "checkpoints" / "tiny-ltx")
    tiny_models.make_tiny_ltx(root / "checkpoints" / "tiny-ltx-i2v", image_to_video=True)
    tiny_models.make_tiny_sd3(root / "checkpoints" / "tiny-sd3")
    tiny_models.make_tiny_sdxl(root / "checkpoints" / "tiny-sdxl")
    tiny_models.make_tiny_motion_module(root / "motion" / "tiny-motion")
    tiny_models.make_tiny_motion_module(root / "motion" / "tiny-motion-xl", sdxl=True)
    tiny_segmenters.make_tiny_clipseg(root / "segmentation" / "tiny-clipseg")  # for vid2vid's mask_prompt
    tiny_segmenters.make_tiny_sam2_video(root / "segmentation" / "tiny-sam2-video")  # for vid2vid's mask_points
    return root


@pytest.fixture()
def video_engine(video_models_dir, tmp_path):
    """An engine on the video models folder, on the CPU (tiny-sd selected)."""
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=video_models_dir, outputs_dir=tmp_path / "outputs", default_model="tiny-sd",
                        save_images=False)
    engine = build_engine(settings, DeviceChoice("cpu"))
    engine.catalog.scan()
    return engine


def make_api_app(models_dir: Path, outputs: Path, **context):
    """A bare FastAPI app with Kiri's routes on a fresh engine over the tiny models (no UI, no port)."""
    from fastapi import FastAPI

    from webui.api import ApiContext, mount
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=models_dir, outputs_dir=outputs, default_model="tiny-sd", save_images=False)
    engine = build_engine(settings, DeviceChoice("cpu"))
    app = FastAPI()
    app.state.kiri_ctx = ApiContext(engine, **context)
    mount(app, app.state.kiri_ctx)
    return app, engine


@pytest.fixture(autouse=True)
def _webuiapi_shared_defaults_stay_empty():
    """webuiapi's txt2img/img2img take ``alwayson_scripts={}`` as a shared default and add the
    ControlNet/ADetailer units to it, so one test's units would ride along on every later call in
    the run. A test that passes units must pass its own ``alwayson_scripts={}``; this says which."""
    yield
    try:
        import webuiapi
    except ImportError:
        return
    for name in ("txt2img", "img2img"):
        for default in getattr(webuiapi.WebUIApi, name).__defaults__ or ():
            if not isinstance(default, dict):
                continue
            # {"ControlNet": {"args": []}} and {"ADetailer": {"args": [False]}} are webuiapi's own fillers
            # once a server lists those scripts: they ask for nothing
            units = {k: v for k, v in default.items() if not (isinstance(v, dict) and v.get("args") in ([], [False]))}
            default.clear()
            assert not units, (f"webuiapi.WebUIApi.{name} kept {units} in its shared alwayson_scripts default: "
                               "pass alwayson_scripts={} with controlnet_units/adetailer")
