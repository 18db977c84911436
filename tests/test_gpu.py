"""Every capability on a CUDA GPU with tiny models: each image family in fp16 and bf16 (txt2img,
img2img), video (AnimateDiff, a native video DiT, vid2vid), upscale (a model upscaler, a diffusion
upscaler, SD upscale) and segmentation. Each test checks the weights sit on the GPU (in the dtype
asked for, or the capability's own where it picks one), and that the output has the right size and
frame count, is finite, is not flat, and repeats for the same seed.

Marked `gpu` and deselected by default (pyproject addopts); run on a machine with a GPU:
    python -m pytest -m gpu tests/test_gpu.py

Without a GPU the tests fail (they never skip). For a local dry run of the tests themselves only,
KIRI_GPU_TEST_DEVICE names another torch device (e.g. cpu) used in place of cuda, and
KIRI_GPU_TEST_DTYPES a comma-separated dtype list in place of float16,bfloat16:
    KIRI_GPU_TEST_DEVICE=cpu KIRI_GPU_TEST_DTYPES=float32 python -m pytest -m gpu tests/test_gpu.py
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest

from webui.engine.core.devices import DeviceChoice, DtypePlan, dtype_policy

pytestmark = pytest.mark.gpu

DEVICE = os.environ.get("KIRI_GPU_TEST_DEVICE", "").strip() or "cuda"
DEVICE_TYPE = DEVICE.split(":")[0]  # what tensor.device.type reads
DTYPES = [d.strip() for d in os.environ.get("KIRI_GPU_TEST_DTYPES", "").split(",") if d.strip()] or ["float16", "bfloat16"]
if not set(DTYPES) <= {"float16", "bfloat16", "float32"}:
    raise ValueError(f"KIRI_GPU_TEST_DTYPES: float16, bfloat16 or float32, comma-separated (got {DTYPES})")
ON_CUDA = DEVICE_TYPE == "cuda"
# Model and diffusion upscalers pick their own dtype: half on CUDA (the tiny ones' architectures support it), else fp32.
UPSCALER_DTYPE = "float16" if ON_CUDA else "float32"
SIZE = 64

FAMILY_MODELS = ["tiny-sdxl", "tiny-sdxl-single", "tiny-sd2", "tiny-sd2-single", "tiny-pixart", "tiny-flux", "tiny-sd", "tiny-sd3"]


@pytest.fixture(scope="module")
def gpu_models_dir(family_models_dir, models_dir):
    """The family models plus the SD 1.x and SD3 ones, in one folder."""
    for name in ("tiny-sd", "tiny-sd3"):
        link = family_models_dir / "checkpoints" / name
        if not link.exists():
            os.symlink(models_dir / "checkpoints" / name, link)
    return family_models_dir


@pytest.fixture(scope="module")
def cuda():
    import torch

    if not ON_CUDA:
        return DEVICE  # a local dry run on another device (KIRI_GPU_TEST_DEVICE)
    assert torch.cuda.is_available(), "the gpu tests need a CUDA GPU"
    return torch.cuda.get_device_name(0)


@pytest.fixture()
def dtype(request, cuda):
    """The parametrized dtype name, refused (not skipped) when the card lacks it."""
    import torch

    name = request.param
    if ON_CUDA and name == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.fail(f"{cuda} has no bf16")
    return name


@dataclass(frozen=True)
class Forced(DeviceChoice):
    """The test device with one dtype for every family, so fp16 and bf16 both run everywhere."""

    dtype: str = "float16"

    def bf16_supported(self) -> bool:
        # A dry run on another device stands in for a bf16 card when bf16 is the dtype under test.
        return super().bf16_supported() if ON_CUDA else self.dtype == "bfloat16"

    def plan_for(self, family, vae_fp16_fix=False):
        policy = dtype_policy(family, self.device, self.bf16_supported(), vae_fp16_fix)
        return DtypePlan(self.dtype, self.dtype, self.dtype, vae_upcast=policy.vae_upcast and self.dtype == "float16")


def _engine(root, tmp_path, dtype: str):
    from webui.bootstrap import build_engine
    from webui.engine.settings import Settings

    engine = build_engine(Settings(models_dir=root, outputs_dir=tmp_path / "out", save_images=False), Forced(DEVICE, dtype))
    engine.catalog.scan()
    return engine


def _on_device(module, dtype: str | None = None, what: str = "") -> None:
    """Every parameter of `module` on the test device and, when `dtype` is given, every floating one
    in it, but for the modules its class keeps in float32 (`_keep_in_fp32_modules`: Wan's norms and
    time embedder, T5's `wo`), matched by name as diffusers and transformers match them."""
    import torch

    what = what or type(module).__name__
    params = dict(module.named_parameters())
    assert params, what
    devices = {p.device.type for p in params.values()}
    assert devices == {DEVICE_TYPE}, f"{what}: parameters on {devices}, not {DEVICE_TYPE}"
    if dtype is None:
        return
    kept = set(getattr(module, "_keep_in_fp32_modules", None) or ()) | set(getattr(module, "_keep_in_fp32_modules_strict", None) or ())
    wanted = getattr(torch, dtype)
    wrong = {name: p.dtype for name, p in params.items() if p.is_floating_point() and p.dtype != wanted
             and not (p.dtype == torch.float32 and kept & set(name.split(".")))}
    assert not wrong, f"{what}: {len(wrong)} of {len(params)} parameters not in {dtype}, e.g. {next(iter(wrong.items()))}"


def _check_pictures(images, size, least_std: float = 2.0) -> np.ndarray:
    """Pictures of `size`, not flat (a NaN or an overflow decodes as a black or flat picture);
    returned as one (N, H, W, 3) float array."""
    arrays = []
    for image in images:
        assert image.size == size
        arrays.append(np.asarray(image.convert("RGB")).astype(np.float64))
    stack = np.stack(arrays)
    assert np.isfinite(stack).all() and stack.std() > least_std, f"flat output (std {stack.std():.2f})"
    return stack


def _same(a: np.ndarray, b: np.ndarray, tolerance: int = 2) -> None:
    """Seeds come from CPU generators: the same seed gives the same pixels run after run on the GPU."""
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= tolerance


# --- images --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, indirect=True)
@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_family_on_cuda(cuda, gpu_models_dir, tmp_path, name, dtype):
    import torch
    from PIL import Image

    from webui.engine.generation.img2img import Img2ImgRequest
    from webui.engine.generation.requests import Txt2ImgRequest

    engine = _engine(gpu_models_dir, tmp_path, dtype)
    model = engine.models.get(name)
    denoiser = getattr(model.pipeline, "unet", None) or model.pipeline.transformer
    assert denoiser.device.type == DEVICE_TYPE and denoiser.dtype == getattr(torch, dtype)
    sampler = "Flow Euler" if model.prediction == "flow" else "Euler"
    request = dict(prompt="a red circle", steps=3, width=SIZE, height=SIZE, seed=3, model=name, sampler_name=sampler,
                   save_images=False)
    first = engine.txt2img(Txt2ImgRequest(**request)).images[0]
    again = engine.txt2img(Txt2ImgRequest(**request)).images[0]
    images = [first]
    if model.family != "pixart":
        picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
        mask = Image.new("L", (SIZE, SIZE), 0)
        mask.paste(255, (16, 16, 48, 48))
        images.append(engine.img2img(Img2ImgRequest(init_image=picture, mask=mask, denoising_strength=0.75, **request)).images[0])
    for image in images:
        _check_pictures([image], (SIZE, SIZE))
    _same(np.asarray(first), np.asarray(again))


# --- the fast path (core/fastpath.py) --------------------------------------------------------------

def _fast_engine(root, tmp_path, dtype: str, **options):
    from webui.bootstrap import build_engine
    from webui.engine.settings import Settings

    engine = build_engine(Settings(models_dir=root, outputs_dir=tmp_path / "out", save_images=False, **options), Forced(DEVICE, dtype))
    engine.catalog.scan()
    if not ON_CUDA:  # a dry run: the plan of a made-up Hopper card, applied on the test device
        from dataclasses import replace

        from webui.engine.core.fastpath import probe

        engine.models._facts = replace(probe("cpu"), device="cuda", name="dry run", capability=(9, 0), bf16=True)
    return engine


def _fast_images(engine, name: str):
    from webui.engine.core.jobs import Job
    from webui.engine.generation.requests import Txt2ImgRequest

    model = engine.models.get(name)
    sampler = "Flow Euler" if model.prediction == "flow" else "Euler"
    request = Txt2ImgRequest("a red circle", steps=3, width=SIZE, height=SIZE, seed=3, model=name, sampler_name=sampler,
                             save_images=False, batch_size=2)
    job = Job()
    first = engine.txt2img(request, job).images
    again = engine.txt2img(request).images
    return model, job, _check_pictures(first, (SIZE, SIZE)), _check_pictures(again, (SIZE, SIZE))


@pytest.mark.parametrize("dtype", DTYPES, indirect=True)
@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sdxl", "tiny-sd3", "tiny-flux"])
def test_fast_path_by_default_on_cuda(cuda, gpu_models_dir, tmp_path, name, dtype):
    """The default fast path is applied at load (TF32 on Ampere+, channels_last UNet/VAE, the attention
    backend) and said in the job's status; the pictures are finite and repeat for the same seed."""
    import torch

    engine = _fast_engine(gpu_models_dir, tmp_path, dtype)
    model, job, first, again = _fast_images(engine, name)
    plan = model.fast_path
    major, minor = engine.models.facts().capability
    if (major, minor) >= (8, 0):
        assert plan.tf32 and torch.backends.cuda.matmul.allow_tf32
    else:
        assert not plan.tf32
    if model.family in ("sd1", "sdxl") and (major, minor) >= (7, 0):
        assert "unet" in plan.channels_last
        assert model.pipeline.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert plan.text() in job.note, job.note
    _same(first, again)


@pytest.mark.parametrize("dtype", DTYPES, indirect=True)
@pytest.mark.parametrize("name", ["tiny-sd", "tiny-flux"])
def test_fast_path_compiled_and_fp8_on_cuda(cuda, gpu_models_dir, tmp_path, name, dtype):
    """--compile and --fp8-weights together: the repeated blocks compiled, the denoiser's big weights
    stored in fp8, the pictures finite."""
    import torch

    engine = _fast_engine(gpu_models_dir, tmp_path, dtype, compile_blocks=True, fp8_weights=True)
    model, job, first, again = _fast_images(engine, name)
    plan = model.fast_path
    assert plan.compile in ("repeated-blocks", "blocks") and plan.fp8_storage, plan
    denoiser = getattr(model.pipeline, "unet", None) or model.pipeline.transformer
    assert torch.float8_e4m3fn in {p.dtype for p in denoiser.parameters()}
    _same(first, again, tolerance=4)


# --- video ---------------------------------------------------------------------------------------

def _clip_arrays(result, frames: int, fps: float) -> np.ndarray:
    """The clip's MP4 and frame PNGs: `frames` frames of SIZE at `fps`, finite and not flat."""
    from video_clips import decode

    decoded, decoded_fps, _ = decode(result.path)
    assert len(decoded) == len(result.frame_paths) == frames and decoded_fps == fps
    assert decoded[0].shape == (SIZE, SIZE, 3)
    return _check_pictures(result.frames(), (SIZE, SIZE))


def _again(run, result):
    """The same request run again from scratch: the job folder goes, or the frames on disk are resumed."""
    shutil.rmtree(result.folder)
    return run()


@pytest.mark.parametrize("dtype", DTYPES, indirect=True)
def test_animatediff_txt2video_on_cuda(cuda, video_models_dir, tmp_path, dtype):
    """AnimateDiff on the tiny SD 1.x with the tiny motion module, in the checkpoint's dtype."""
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.video.service import Txt2VideoRequest, txt2video

    engine = _engine(video_models_dir, tmp_path, dtype)
    request = Txt2VideoRequest(prompt="a red circle moving right", frames=4, fps=6, steps=2, width=SIZE, height=SIZE,
                               seed=3, motion_module="tiny-motion", model="tiny-sd", sampler_name="Euler")
    run = lambda: txt2video(engine, request)  # noqa: E731
    result = run()
    model = engine.models.get("tiny-sd")
    pipeline = model.derived["animatediff:tiny-motion"]
    # The motion UNet (the checkpoint's UNet with the motion module) and what it shares with the checkpoint.
    for part in ("unet", "text_encoder", "vae"):
        _on_device(getattr(pipeline, part), dtype, f"AnimateDiff {part}")
    frames = _clip_arrays(result, 4, 6.0)
    assert np.abs(frames[0] - frames[-1]).mean() > 1  # a clip, not one picture repeated
    _same(frames, _clip_arrays(_again(run, result), 4, 6.0))
    # The checkpoint is left as it was loaded: it still makes pictures after a clip.
    for part in ("unet", "text_encoder", "vae"):
        _on_device(getattr(model.pipeline, part), dtype, f"the checkpoint's {part} after a clip")
    picture = engine.txt2img(Txt2ImgRequest(prompt="a red circle", steps=2, width=SIZE, height=SIZE, seed=3,
                                            model="tiny-sd", sampler_name="Euler", save_images=False)).images[0]
    _check_pictures([picture], (SIZE, SIZE))


@pytest.mark.parametrize("name, frames", [("tiny-wan", 5), ("tiny-ltx", 9)])
def test_native_video_on_cuda(cuda, video_models_dir, tmp_path, name, frames):
    """A native video DiT (Wan, LTX-Video). Its loader picks its own dtype (bfloat16 where the card
    has it, else float32) and takes no dtype from the device choice, so it runs once, in that dtype."""
    import torch

    from webui.engine.video.service import Txt2VideoRequest, txt2video

    engine = _engine(video_models_dir, tmp_path, DTYPES[0])
    own = "bfloat16" if engine.models.device.bf16_supported() else "float32"
    assert not ON_CUDA or own == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    request = Txt2VideoRequest(prompt="a red circle", frames=frames, fps=8, steps=2, cfg_scale=3, width=SIZE, height=SIZE,
                               seed=0, model=name)
    run = lambda: txt2video(engine, request)  # noqa: E731
    result = run()
    pipeline = engine.models.get_of_kind("video", name).model
    for part in ("transformer", "text_encoder", "vae"):
        _on_device(getattr(pipeline, part), own, f"{name} {part}")
    clip = _clip_arrays(result, frames, 8.0)
    _same(clip, _clip_arrays(_again(run, result), frames, 8.0))


@pytest.mark.parametrize("motion", [None, "tiny-motion"], ids=["frame-by-frame", "motion-module"])
@pytest.mark.parametrize("dtype", DTYPES, indirect=True)
def test_vid2vid_on_cuda(cuda, video_models_dir, tmp_path, dtype, motion):
    """Video to video in the checkpoint's dtype: frame by frame through img2img (optical-flow
    consistency), or in one window through AnimateDiff's video-to-video pipeline."""
    from video_clips import moving_square_frames, write_clip

    from webui.engine.video.service import Vid2VidRequest, vid2vid

    engine = _engine(video_models_dir, tmp_path, dtype)
    source = moving_square_frames(4)
    clip = write_clip(tmp_path / "square.mp4", source)
    request = Vid2VidRequest(video=clip.read_bytes(), prompt="a red square, blue background", denoising_strength=0.6,
                             steps=3, seed=7, model="tiny-sd", sampler_name="Euler", max_size=SIZE, max_frames=3,
                             consistency="none" if motion else "flow", motion_module=motion)
    run = lambda: vid2vid(engine, request)  # noqa: E731
    result = run()
    model = engine.models.get("tiny-sd")
    if motion:
        _on_device(model.derived[f"animatediff-v2v:{motion}"].unet, dtype, "AnimateDiff video-to-video unet")
    for part in ("unet", "text_encoder", "vae"):
        _on_device(getattr(model.pipeline, part), dtype, f"the checkpoint's {part}")
    frames = _clip_arrays(result, 3, 8.0)
    originals = np.stack([np.asarray(image, dtype=np.float64) for image in source[:3]])
    assert np.abs(frames - originals).mean() > 1  # denoised, not the source frames passed through
    _same(frames, _clip_arrays(_again(run, result), 3, 8.0))


# --- upscale -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upscale_models_dir(tmp_path_factory):
    """models/upscalers/ with the tiny Real-ESRGAN compact net and a tiny SD x4 diffusion upscaler."""
    import tiny_models

    root = tmp_path_factory.mktemp("gpu_upscalers")
    tiny_models.make_tiny_upscaler(root / "upscalers" / "4x-tiny-compact.safetensors")
    tiny_models.make_tiny_sd_x4_upscaler(root / "upscalers" / "sd-x4-tiny")
    return root


def _gradient(width: int, height: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    return Image.fromarray(np.clip(base * 0.7 + rng.integers(0, 60, (height, width, 3)), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("name", ["4x-tiny-compact", "sd-x4-tiny"])
def test_upscaler_on_cuda(cuda, upscale_models_dir, tmp_path, name):
    """A model upscaler (Real-ESRGAN compact: read by spandrel where spandrel imports, which needs
    torchvision, else by Kiri's own reader) and a diffusion upscaler. Both pick their own dtype:
    float16 on CUDA (the architecture supports half), float32 elsewhere; none comes from the device
    choice, so each runs once, in that dtype."""
    from webui.engine.upscale import UpscaleRequest, upscale_images
    from webui.engine.upscale._models import BUILTIN_ARCHITECTURES, spandrel_or_none

    own = UPSCALER_DTYPE
    engine = _engine(upscale_models_dir, tmp_path, DTYPES[0])
    picture = _gradient(40, 24)
    run = lambda: upscale_images(engine, UpscaleRequest([picture], name, scale=4, save_images=False))  # noqa: E731
    result = run()
    loaded = engine.models.get_of_kind("upscaler", name).model
    assert loaded.device == DEVICE
    if loaded.pipeline is not None:
        assert loaded.pipeline_class == "StableDiffusionUpscalePipeline"
        for part in ("unet", "vae", "text_encoder"):
            _on_device(getattr(loaded.pipeline, part), own, f"{name} {part}")
    else:
        _on_device(loaded.model, own, name)
        spandrel = spandrel_or_none() is not None
        assert (loaded.architecture != BUILTIN_ARCHITECTURES[0]) == spandrel, (loaded.architecture, spandrel)
    out = _check_pictures(result.images, (160, 96))
    assert not result.interrupted and result.tiles >= 1
    lanczos = np.asarray(picture.resize((160, 96)), dtype=np.float64)
    assert np.abs(out[0] - lanczos).mean() > 1  # the network's picture, not a resize
    _same(out, _check_pictures(run().images, (160, 96)), tolerance=1)


@pytest.mark.parametrize("dtype", DTYPES, indirect=True)
def test_sd_upscale_on_cuda(cuda, models_dir, tmp_path, dtype):
    """SD upscale (A1111's img2img script): the tiny compact net upscales, then tiled img2img on the
    tiny SD 1.x in the checkpoint's dtype, with a seam-fix pass."""
    from webui.engine.generation.img2img import Img2ImgRequest, SDUpscale
    from webui.engine.upscale import UpscaleRequest, upscale_images

    engine = _engine(models_dir, tmp_path, dtype)
    picture = _gradient(48, 40)
    request = Img2ImgRequest(prompt="a red circle", init_image=picture, width=SIZE, height=SIZE, steps=4, seed=5,
                             denoising_strength=0.5, sampler_name="Euler", save_images=False, model="tiny-sd",
                             sd_upscale=SDUpscale(upscaler="4x-tiny-compact", scale=2, overlap=16, seam_fix="Half tile offset"))
    result = engine.img2img(request)
    _on_device(engine.models.get("tiny-sd").pipeline.unet, dtype, "tiny-sd's UNet")
    _on_device(engine.models.get_of_kind("upscaler", "4x-tiny-compact").model.model, UPSCALER_DTYPE, "4x-tiny-compact")
    out = _check_pictures(result.images, (96, 80))
    plain = upscale_images(engine, UpscaleRequest([picture], "4x-tiny-compact", scale=2, save_images=False)).images[0]
    assert np.abs(out[0] - np.asarray(plain, dtype=np.float64)).mean() > 1  # the tiles were denoised
    _same(out, _check_pictures(engine.img2img(request).images, (96, 80)))


# --- segment -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def segment_models_dir(tmp_path_factory):
    """models/segmentation/ with a tiny CLIPSeg (words), SAM (clicks), Mask2Former (no prompt) and SAM 2 video."""
    import tiny_segmenters

    root = tmp_path_factory.mktemp("gpu_segmenters")
    for name, make in (("tiny-clipseg", tiny_segmenters.make_tiny_clipseg), ("tiny-sam", tiny_segmenters.make_tiny_sam),
                       ("tiny-mask2former", tiny_segmenters.make_tiny_mask2former),
                       ("tiny-sam2-video", tiny_segmenters.make_tiny_sam2_video)):
        make(root / "segmentation" / name)
    return root


@contextmanager
def _outputs_of(module):
    """The floating-point tensors each top-level forward of `module` returns, while inside."""
    import torch

    seen: list = []

    def keep(_module, _args, output):
        values = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else [output]
        seen.extend(v.detach().float().cpu() for v in values if isinstance(v, torch.Tensor) and v.is_floating_point())

    handle = module.register_forward_hook(keep)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.mark.parametrize("name, fields", [
    pytest.param("tiny-clipseg", dict(prompt="red, the square"), id="clipseg-words"),
    pytest.param("tiny-sam", dict(points=[[30, 20, 1], [70, 50, 0]]), id="sam-clicks"),
    pytest.param("tiny-mask2former", dict(), id="mask2former-panoptic"),
    pytest.param("tiny-sam2-video", dict(points=[[30, 20, 1]]), id="sam2-video-click-tracked"),
])
def test_segment_on_cuda(cuda, segment_models_dir, tmp_path, name, fields):
    """Each segmenter kind on the device. Segmenters load in their folder's own dtype (float32 for
    these tiny folders) on every device and take no dtype from the device choice, so each runs once."""
    from PIL import Image

    from webui.engine.segment import KIND, SegmentRequest, segment, track

    engine = _engine(segment_models_dir, tmp_path, DTYPES[0])
    image = Image.new("RGB", (80, 60), (200, 40, 40))
    image.paste((20, 20, 220), (20, 10, 50, 40))
    run = lambda: segment(engine, SegmentRequest(image, model=name, threshold=0.5, **fields))  # noqa: E731
    result = run()
    backend = engine.models.get_of_kind(KIND, name).model
    assert backend.device == DEVICE
    _on_device(backend.model, "float32", name)
    with _outputs_of(backend.model) as outputs:
        again = run()
        if name == "tiny-sam2-video":  # the click followed through a clip, as vid2vid's mask_points does
            masks = list(track(engine, iter([image.copy() for _ in range(3)]), fields["points"]))
            assert len(masks) == 3 and all(m.shape == (60, 80) and m.dtype == bool for m in masks)
    assert outputs and all(bool(t.isfinite().all()) for t in outputs)
    if name != "tiny-sam2-video":  # its random object score says "no object": masks filled with one constant
        assert max(float(t.std()) for t in outputs if t.numel() > 1) > 1e-4  # random weights, yet not a constant
    assert result.info["model"] == name
    for mask in result.masks:
        assert mask.mode == "L" and mask.size == image.size and set(np.unique(np.asarray(mask))) <= {0, 255}
    if name in ("tiny-clipseg", "tiny-sam"):
        coverage = [float((np.asarray(m) > 0).mean()) for m in result.masks]
        assert coverage and any(0 < c < 1 for c in coverage), coverage  # a mask with an inside and an outside
    # Deterministic: the same request gives the same masks (a pixel or two may flip at the threshold).
    assert len(again.masks) == len(result.masks) and again.labels == result.labels
    for a, b in zip(result.masks, again.masks):
        assert (np.asarray(a) != np.asarray(b)).mean() < 0.01
    assert np.allclose(again.scores, result.scores, atol=1e-3)
