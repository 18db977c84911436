"""Text to video: AnimateDiff on a tiny SD 1.x (and SDXL) with a tiny motion module, FreeInit, prompt
travel and FreeNoise windows, interrupts, tiny native video pipelines (Wan, LTX-Video, image to
video), and motion modules in the original single-file layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from video_clips import SIZE, decode  # noqa: E402


def test_txt2video_with_animatediff_keeps_frames_fps_and_size(video_engine):
    from webui.engine.video.service import Txt2VideoRequest, txt2video

    request = Txt2VideoRequest(prompt="a red circle moving right", frames=4, fps=6, steps=2, width=SIZE, height=SIZE,
                               seed=3, motion_module="tiny-motion", model="tiny-sd", sampler_name="Euler")
    result = txt2video(video_engine, request)
    frames, fps, meta = decode(result.path)
    assert len(frames) == len(result.frame_paths) == 4 and fps == 6.0
    assert frames[0].shape == (SIZE, SIZE, 3)
    assert "Motion module: tiny-motion" in result.info and "Seed: 3" in result.info
    assert "Motion module: tiny-motion" in meta.get("comment", "")
    assert (result.folder / "clip.txt").read_text() == result.info
    for path in (result.gif_path, result.webp_path, result.zip_path):
        assert path.exists() and path.stat().st_size > 0


def test_a_clip_leaves_a_half_precision_checkpoint_in_its_dtype_and_it_still_draws(video_models_dir, tmp_path):
    """diffusers' from_pipe cast every shared component to fp32 (its default) in place, so after the
    first clip a checkpoint loaded in fp16/bf16 failed its next txt2img on mixed dtypes, and its motion
    UNet was left on the CPU. bf16 on the CPU shows it without a GPU."""
    import torch

    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice, DtypePlan
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.settings import Settings
    from webui.engine.video.service import Txt2VideoRequest, txt2video

    class Bf16(DeviceChoice):
        def plan_for(self, family, vae_fp16_fix=False):
            return DtypePlan("bfloat16", "bfloat16", "bfloat16")

    engine = build_engine(Settings(models_dir=video_models_dir, outputs_dir=tmp_path / "out", save_images=False), Bf16("cpu"))
    engine.catalog.scan()
    # Prompt travel: FreeNoise's prompt interpolation also reads the pipeline's dtype.
    result = txt2video(engine, Txt2VideoRequest(prompt="0: a red circle\n1: a blue circle", frames=2, fps=4, steps=1, width=64,
                                                height=64, seed=1, model="tiny-sd", motion_module="tiny-motion",
                                                sampler_name="Euler"))
    assert len(result.frame_paths) == 2 and "Prompt travel: yes" in result.info
    model = engine.models.get("tiny-sd")
    clip_pipeline = model.derived["animatediff:tiny-motion"]
    for owner in (model.pipeline, clip_pipeline):
        for part in ("unet", "text_encoder", "vae"):
            assert {p.dtype for p in getattr(owner, part).parameters()} == {torch.bfloat16}, part
    assert type(clip_pipeline.unet).__name__ == "UNetMotionModel" and clip_pipeline.dtype == torch.bfloat16
    picture = engine.txt2img(Txt2ImgRequest(prompt="a red circle", steps=1, width=64, height=64, seed=1, model="tiny-sd",
                                            sampler_name="Euler", save_images=False)).images[0]
    assert picture.size == (64, 64)


def test_txt2video_animates_sdxl_with_its_own_pipeline(video_engine):
    from webui.engine.video.service import Txt2VideoRequest, txt2video

    request = Txt2VideoRequest(prompt="a red circle", frames=3, fps=8, steps=2, width=SIZE, height=SIZE, seed=1,
                               model="tiny-sdxl", motion_module="tiny-motion-xl", sampler_name="Euler")
    result = txt2video(video_engine, request)
    assert len(result.frame_paths) == 3 and "Model: tiny-sdxl" in result.info
    model = video_engine.models.get("tiny-sdxl")
    assert type(model.derived["animatediff:tiny-motion-xl"]).__name__ == "AnimateDiffSDXLPipeline"


def test_interrupting_text_to_video_keeps_the_frames_at_that_step_and_the_rerun_starts_over(video_engine):
    from webui.engine.core.jobs import Job
    from webui.engine.video.service import Txt2VideoRequest, txt2video

    job = Job(kind="txt2video", owner="tester")
    job.listeners.append(lambda j: j.interrupt() if j.step >= 1 else None)
    request = Txt2VideoRequest(prompt="a red circle", frames=3, steps=4, width=SIZE, height=SIZE, seed=8,
                               model="tiny-sd", motion_module="tiny-motion", sampler_name="Euler")
    result = txt2video(video_engine, request, job)
    assert result.interrupted and result.seed == 8 and len(result.frame_paths) == 3
    assert result.folder.name == "interrupted" and result.path == result.folder / "clip.mp4"
    assert "Interrupted: step 1/4" in result.info and "Interrupted: step 1/4" in (result.folder / "clip.txt").read_text()
    frames, fps, _ = decode(result.path)
    assert len(frames) == 3 and fps == request.fps
    outputs = Path(video_engine.settings.outputs_dir)
    assert not [p for p in outputs.rglob("*") if p.is_file() and (p.name.startswith(".") or "tmp" in p.name)]
    assert not list((result.folder.parent / "frames").iterdir())  # the full clip's frames: none yet

    full = txt2video(video_engine, request, Job(kind="txt2video", owner="tester"))
    assert not full.interrupted and full.resumed_frames == 0 and full.folder == result.folder.parent
    assert len(full.frame_paths) == 3 and "Interrupted" not in full.info
    stopped = [np.asarray(f) for f in result.frames()]
    finished = [np.asarray(f) for f in full.frames()]
    assert all(np.abs(a.astype(int) - b.astype(int)).mean() > 1 for a, b in zip(stopped, finished))  # step 1 of 4 is not the end


def test_free_init_makes_the_clip_again_from_its_low_frequencies_and_an_interrupt_keeps_that_step(video_engine):
    from webui.engine.core.errors import InvalidRequest
    from webui.engine.core.jobs import Job
    from webui.engine.video.service import Txt2VideoRequest, txt2video

    fields = dict(prompt="a red circle", frames=3, steps=2, width=SIZE, height=SIZE, seed=5, model="tiny-sd",
                  motion_module="tiny-motion", sampler_name="Euler")
    plain = txt2video(video_engine, Txt2VideoRequest(**fields))
    job = Job(kind="txt2video", owner="tester")
    steps_seen = []
    job.listeners.append(lambda j: steps_seen.append((j.step, j.steps)))
    free = txt2video(video_engine, Txt2VideoRequest(**fields, free_init_iterations=3), job)
    assert max(steps_seen) == (6, 6)  # three iterations of two steps, one progress bar
    assert "FreeInit: 3" in free.info and "FreeInit" not in plain.info
    assert free.folder != plain.folder and len(free.frame_paths) == 3
    a, b = ([np.asarray(f, dtype=int) for f in r.frames()] for r in (plain, free))
    assert np.mean([np.abs(x - y).mean() for x, y in zip(a, b)]) > 1  # re-initialised: another clip
    # A FreeInit run leaves nothing behind in the pipeline kept with the model.
    again = txt2video(video_engine, Txt2VideoRequest(**{**fields, "seed": 6}))
    assert "FreeInit" not in again.info
    assert again.folder != plain.folder

    # Interrupted in the second round: the frames at that step, neither the first round's clip (the
    # plain one: same first noise) nor the finished one, which the same request then makes.
    job = Job(kind="txt2video", owner="tester")
    job.listeners.append(lambda j: j.interrupt() if j.step >= 3 else None)
    request = Txt2VideoRequest(**{**fields, "seed": 9}, free_init_iterations=3)
    cut = txt2video(video_engine, request, job)
    assert cut.interrupted and "Interrupted: step 3/6" in cut.info and len(cut.frame_paths) == 3
    first_round = txt2video(video_engine, Txt2VideoRequest(**{**fields, "seed": 9}))
    full = txt2video(video_engine, request)
    assert not full.interrupted and full.resumed_frames == 0
    c, p, f = ([np.asarray(x, dtype=int) for x in r.frames()] for r in (cut, first_round, full))
    assert np.mean([np.abs(x - y).mean() for x, y in zip(c, p)]) > 1
    assert np.mean([np.abs(x - y).mean() for x, y in zip(c, f)]) > 1
    with pytest.raises(InvalidRequest) as info:
        Txt2VideoRequest(**fields, free_init_iterations=9)
    assert info.value.field == "free_init_iterations"


def test_free_init_starts_from_the_plain_clips_noise(video_engine):
    """Stopped at the end of FreeInit's first round, the clip is the plain request's, pixel for pixel."""
    from webui.engine.core.jobs import Job
    from webui.engine.video.service import Txt2VideoRequest, txt2video
    fields = dict(prompt="a red circle", frames=3, steps=2, width=SIZE, height=SIZE, seed=11, model="tiny-sd",
                  motion_module="tiny-motion", sampler_name="Euler")
    job = Job(kind="txt2video", owner="t"); job.listeners.append(lambda j: j.interrupt() if j.step >= 2 else None)
    cut = txt2video(video_engine, Txt2VideoRequest(**fields, free_init_iterations=2), job)
    plain = txt2video(video_engine, Txt2VideoRequest(**fields))
    assert "Interrupted: step 2/4" in cut.info
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(cut.frames(), plain.frames()))


def test_prompt_travel_and_clips_longer_than_the_motion_context(video_engine):
    from webui.engine.video.pipelines import keyframes
    from webui.engine.video.service import Txt2VideoRequest, txt2video

    assert keyframes("0: a red circle\n8: a blue circle", 16) == {0: "a red circle", 8: "a blue circle"}
    assert keyframes("style: anime, a cat", 16) == {0: "style: anime, a cat"}
    # 10 frames > the module's 8: FreeNoise windows; two keyframes: interpolated embeddings.
    request = Txt2VideoRequest(prompt="0: a red circle\n5: a blue circle", frames=10, fps=8, steps=1, width=SIZE,
                               height=SIZE, seed=1, motion_module="tiny-motion", model="tiny-sd", sampler_name="Euler")
    result = txt2video(video_engine, request)
    assert len(result.frame_paths) == 10
    assert "Context: FreeNoise 8" in result.info and "Prompt travel: yes" in result.info


def test_a_native_video_pipeline_is_its_own_kind_and_makes_a_clip(video_engine):
    from webui.engine.video.service import Txt2VideoRequest, txt2video, video_models

    natives = ["tiny-ltx", "tiny-ltx-i2v", "tiny-wan"]
    assert not set(natives) & {e.name for e in video_engine.catalog.entries}  # never in the image tabs
    assert [e.name for e in video_engine.catalog.of_kind("video")] == natives
    assert video_models(video_engine) == [*natives, "tiny-sd", "tiny-sdxl"]
    for name, frames_made in (("tiny-wan", 5), ("tiny-ltx", 9)):
        request = Txt2VideoRequest(prompt="a red circle", frames=frames_made, fps=8, steps=2, cfg_scale=3, width=SIZE,
                                   height=SIZE, seed=0, model=name, sampler_name="Euler")
        result = txt2video(video_engine, request)
        frames, fps, _ = decode(result.path)
        assert len(frames) == frames_made and fps == 8.0 and frames[0].shape == (SIZE, SIZE, 3), name
        assert f"Model: {name}" in result.info and "Sampler: FlowMatchEulerDiscreteScheduler" in result.info
        assert any("own scheduler" in w for w in result.warnings)
    # Wan makes 4k + 1 frames: another count is rounded by the pipeline, and the clip says so.
    result = txt2video(video_engine, Txt2VideoRequest(prompt="a red circle", frames=4, steps=1, width=SIZE, height=SIZE,
                                                      seed=0, model="tiny-wan"))
    assert len(result.frame_paths) == 5 and "Frames: 5," in result.info
    assert any("5 frames for 4 asked" in w for w in result.warnings)


def test_image_to_video_starts_the_clip_from_the_given_frame_and_other_models_refuse_one(video_engine):
    from PIL import Image

    from webui.engine.core.errors import InvalidRequest
    from webui.engine.video.service import Txt2VideoRequest, image_to_video_models, txt2video

    assert image_to_video_models(video_engine) == ["tiny-ltx-i2v"]
    red, blue = Image.new("RGB", (SIZE, SIZE), (220, 30, 30)), Image.new("RGB", (SIZE, SIZE), (30, 30, 220))
    request = dict(prompt="a circle", frames=9, steps=2, width=SIZE, height=SIZE, seed=1, model="tiny-ltx-i2v")
    from_red = txt2video(video_engine, Txt2VideoRequest(**request, image=red))
    from_blue = txt2video(video_engine, Txt2VideoRequest(**request, image=blue))
    assert len(from_red.frame_paths) == len(from_blue.frame_paths) == 9 and "First frame: given" in from_red.info
    first_red, first_blue = (np.asarray(r.frames()[0], dtype=float) for r in (from_red, from_blue))
    assert np.abs(first_red - first_blue).mean() > 1  # the frame given is what the clip starts from
    assert from_red.folder != from_blue.folder  # and part of what a resumed run is matched on

    for model, image, says in (("tiny-ltx-i2v", None, "give it the clip's first frame"),
                               ("tiny-ltx", red, "tiny-ltx-i2v"), ("tiny-sd", red, "motion module animates from text")):
        with pytest.raises(InvalidRequest) as refused:
            txt2video(video_engine, Txt2VideoRequest(**{**request, "model": model}, image=image, motion_module="tiny-motion"))
        assert refused.value.field == "image" and says in str(refused.value), model


def test_an_original_single_file_motion_module_loads_without_a_hub(video_models_dir, tmp_path):
    """AnimateDiff's own .safetensors layout (temporal_transformer, attention_blocks, norms, pos_encoder)."""
    import re

    import torch
    from diffusers import MotionAdapter
    from safetensors.torch import save_file

    from webui.engine.core.devices import DeviceChoice
    from webui.engine.models.catalog import describe_file
    from webui.engine.video.pipelines import load_motion_module

    source = MotionAdapter.from_pretrained(video_models_dir / "motion" / "tiny-motion")
    original = {}
    for key, value in source.state_dict().items():
        if key.endswith("pos_embed.pe"):
            key = key.replace("pos_embed.pe", "attention_blocks.0.pos_encoder.pe")
        key = re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", key)
        for new, old in ((".norm1", ".norms.0"), (".norm2", ".norms.1"), (".norm3", ".ff_norm"),
                         (".attn1", ".attention_blocks.0"), (".attn2", ".attention_blocks.1")):
            key = key.replace(new, old)
        original[key] = value.contiguous()
    path = tmp_path / "mm_tiny.safetensors"
    save_file(original, str(path))
    loaded = load_motion_module(describe_file(path, "motion"), DeviceChoice("cpu"), False)
    assert tuple(loaded.config.block_out_channels) == (32, 64) and loaded.config.motion_max_seq_length == 8
    assert loaded.config.motion_layers_per_block == 2 and loaded.config.use_motion_mid_block
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_motion_module_for_another_family_is_refused(video_engine):
    from webui.engine.core.errors import InvalidRequest
    from webui.engine.video.service import Txt2VideoRequest, txt2video

    request = Txt2VideoRequest(prompt="a circle", frames=2, steps=1, width=SIZE, height=SIZE, model="tiny-sd3",
                               motion_module="tiny-motion")
    with pytest.raises(InvalidRequest) as caught:
        txt2video(video_engine, request)
    assert caught.value.field == "motion_module"
