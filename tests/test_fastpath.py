"""The GPU fast path (engine/core/fastpath.py): the plan is a pure function of device facts, so every
rule is checked here with made-up facts (no CUDA); applying a plan is checked on the CPU with the tiny
SD 1.x (channels_last and fp8 storage work there too), through the model manager and a job's status."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from webui.engine.core.fastpath import DeviceFacts, FastPathOptions, FastPathPlan, apply, compile_blocks, fast_path_plan

FEATURES = dict(dispatcher=True, regional_compile=True, layerwise_casting=True, fp8=True)
H100 = DeviceFacts("cuda", "NVIDIA H100", (9, 0), True, (), **FEATURES)
A100 = DeviceFacts("cuda", "NVIDIA A100", (8, 0), True, (), **FEATURES)
T4 = DeviceFacts("cuda", "Tesla T4", (7, 5), False, (), **FEATURES)
P100 = DeviceFacts("cuda", "Tesla P100", (6, 0), False, (), **FEATURES)


def with_backends(facts: DeviceFacts, *names: str) -> DeviceFacts:
    from dataclasses import replace

    return replace(facts, backends=names)


# --- the plan ------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_off_the_gpu_nothing_changes(device):
    plan = fast_path_plan(DeviceFacts(device, **FEATURES), "sdxl", FastPathOptions(compile=True, fp8_weights=True))
    assert not plan.on and plan == FastPathPlan(notes=(f"{device}: diffusers' defaults",))
    assert plan.text() == f"fast path: off ({device}: diffusers' defaults)"


def test_a_unet_on_ampere_and_newer_gets_tf32_sdpa_and_channels_last():
    for facts in (A100, H100):
        plan = fast_path_plan(facts, "sd1")
        assert (plan.tf32, plan.attention, plan.channels_last, plan.compile, plan.fp8_storage) == (True, "sdpa", ("unet", "vae"), "", False)
    assert fast_path_plan(H100, "sd1").text() == "fast path: attention sdpa, tf32, channels_last unet+vae"


def test_an_upcast_vae_stays_in_its_layout_and_a_transformer_is_not_channels_last():
    assert fast_path_plan(H100, "sdxl", vae_upcast=True).channels_last == ("unet",)
    assert fast_path_plan(H100, "sd3").channels_last == ("vae",)
    assert fast_path_plan(H100, "flux").channels_last == ("vae",)


def test_older_cards_get_what_they_have():
    turing = fast_path_plan(T4, "sd1")
    assert not turing.tf32 and turing.channels_last == ("unet", "vae")  # tensor cores for fp16, no TF32
    pascal = fast_path_plan(P100, "sd1")
    assert not pascal.on


def test_attention_backend_auto_picks_the_fastest_installed_exact_one_for_dispatcher_families():
    assert fast_path_plan(H100, "flux").attention == "sdpa"  # nothing installed
    assert fast_path_plan(with_backends(H100, "_flash_3", "flash"), "flux").attention == "_flash_3"
    assert fast_path_plan(with_backends(A100, "_flash_3", "flash"), "flux").attention == "flash"  # FA3 is Hopper-only
    assert fast_path_plan(with_backends(T4, "flash"), "flux").attention == "sdpa"
    # A UNet's processors call SDPA themselves: a backend would change nothing, so none is set.
    assert fast_path_plan(with_backends(H100, "_flash_3", "flash"), "sdxl").attention == "sdpa"


def test_a_forced_backend_applies_where_it_can_and_says_why_not_elsewhere():
    assert fast_path_plan(H100, "flux", FastPathOptions(attention="sage")).attention == "sage"
    plan = fast_path_plan(H100, "sd1", FastPathOptions(attention="sage"))
    assert plan.attention == "sdpa" and "call SDPA directly" in plan.text()
    old = DeviceFacts("cuda", "x", (9, 0), True, (), dispatcher=False)
    assert "set_attention_backend" in fast_path_plan(old, "flux", FastPathOptions(attention="flash")).notes[0]


def test_compile_and_fp8_are_opt_in():
    assert fast_path_plan(H100, "sdxl").compile == "" and not fast_path_plan(H100, "sdxl").fp8_storage
    plan = fast_path_plan(H100, "sdxl", FastPathOptions(compile=True, fp8_weights=True))
    assert plan.compile == "repeated-blocks" and plan.fp8_storage
    assert "compiled repeated-blocks" in plan.text() and "fp8 weights" in plan.text()
    no_casting = DeviceFacts("cuda", "x", (9, 0), True, (), dispatcher=True, layerwise_casting=False, fp8=True)
    plan = fast_path_plan(no_casting, "sdxl", FastPathOptions(fp8_weights=True))
    assert not plan.fp8_storage and "fp8" in plan.notes[0]


def test_a_checkpoint_stored_in_fp8_or_gguf_is_not_cast_again():
    for stored in ("fp8", "Q8_0"):
        plan = fast_path_plan(H100, "flux", FastPathOptions(fp8_weights=True), stored=stored)
        assert not plan.fp8_storage and plan.notes == (f"--fp8-weights: the checkpoint is stored as {stored} already",)
    assert fast_path_plan(H100, "flux", stored="fp8").on  # the rest of the fast path still applies


def test_turned_off_it_says_so():
    plan = fast_path_plan(H100, "sdxl", FastPathOptions(enabled=False, compile=True))
    assert not plan.on and plan.text() == "fast path: off (turned off (--no-fast-path))"
    assert plan.plain()["notes"] == ["turned off (--no-fast-path)"]


def test_the_real_probe_on_this_machine_is_plain_data():
    from webui.engine.core.fastpath import probe

    facts = probe("cpu")
    assert facts.device == "cpu" and facts.capability == (0, 0)
    assert not fast_path_plan(facts, "sd1").on


# --- applying it ----------------------------------------------------------------------------------

class _Block:
    def __init__(self):
        self.compiled = 0

    def compile(self):
        self.compiled += 1


class _Regional:
    _repeated_blocks = ["BasicTransformerBlock"]

    def __init__(self):
        self.kwargs = None

    def compile_repeated_blocks(self, **kwargs):
        self.kwargs = kwargs


def test_compile_is_regional():
    regional = _Regional()
    assert compile_blocks(regional) == "repeated-blocks" and regional.kwargs == {"fullgraph": False}

    class Blocks:
        transformer_blocks = [_Block(), _Block()]
        single_transformer_blocks = [_Block()]

    blocks = Blocks()
    assert compile_blocks(blocks) == "blocks"
    assert [b.compiled for b in blocks.transformer_blocks + blocks.single_transformer_blocks] == [1, 1, 1]
    assert compile_blocks(object()) == ""


@pytest.fixture()
def tf32_restored():
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_apply_switches_a_real_pipeline_and_it_still_makes_a_picture(models_dir, tf32_restored):
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(models_dir / "checkpoints" / "tiny-sd"), safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    before = pipe(prompt="a red circle", num_inference_steps=2, height=64, width=64, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    plan = FastPathPlan(tf32=True, attention="sdpa", channels_last=("unet", "vae"), fp8_storage=True)
    applied = apply(pipe, plan)
    assert applied == plan
    assert torch.backends.cuda.matmul.allow_tf32
    conv = pipe.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    stored = {p.dtype for p in pipe.unet.parameters()}
    assert torch.float8_e4m3fn in stored  # the big weights; norms and embeddings stay as they were
    assert pipe.unet.conv_in.compute_dtype == torch.float32  # a LoRA added later computes in this, not fp8
    after = pipe(prompt="a red circle", num_inference_steps=2, height=64, width=64, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert np.isfinite(after).all() and after.std() > 0.01
    assert np.abs(after - before).mean() < 0.1  # fp8 storage rounds the weights, it does not break the model


def test_a_backend_that_fails_falls_back_to_sdpa_and_says_so():
    class Denoiser:
        def set_attention_backend(self, name):
            raise RuntimeError("flash_attn has no kernel for this card\nmore")

    class Pipe:
        unet = Denoiser()

    applied = apply(Pipe(), FastPathPlan(attention="flash"))
    assert applied.attention == "sdpa" and "attention flash failed (flash_attn has no kernel for this card); SDPA" in applied.notes


def test_the_manager_applies_the_plan_at_load_and_the_job_status_says_it(models_dir, tmp_path, caplog, tf32_restored):
    """A made-up H100 on the CPU: the manager plans from its facts, the job's status line and the log
    carry the plan, the picture is fine."""
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.core.jobs import Job
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.settings import Settings

    engine = build_engine(Settings(models_dir=models_dir, outputs_dir=tmp_path / "out", save_images=False,
                                   fp8_weights=True), DeviceChoice("cpu"))
    engine.models._facts = H100
    job = Job()
    with caplog.at_level(logging.INFO, logger="webui.engine.models.manager"):
        result = engine.txt2img(Txt2ImgRequest("a red circle", steps=2, width=64, height=64, seed=1, model="tiny-sd"), job)
    model = engine.models.current
    assert model.fast_path == FastPathPlan(True, "sdpa", ("unet", "vae"), "", True)
    assert "tiny-sd on cuda (NVIDIA H100): fast path: attention sdpa, tf32, channels_last unet+vae, fp8 weights" in caplog.text
    assert job.note.endswith("; fast path: attention sdpa, tf32, channels_last unet+vae, fp8 weights")
    pixels = np.asarray(result.images[0]).astype(float)
    assert np.isfinite(pixels).all() and pixels.std() > 1


def test_on_the_cpu_the_manager_records_an_off_plan_and_the_status_shows_only_memory(engine):
    from webui.engine.core.jobs import Job
    from webui.engine.generation.requests import Txt2ImgRequest

    job = Job()
    engine.txt2img(Txt2ImgRequest("a red circle", steps=2, width=64, height=64, seed=1), job)
    assert engine.models.current.fast_path == FastPathPlan(notes=("cpu: diffusers' defaults",))
    assert "fast path" not in job.note


def test_fp8_weights_with_a_lora_keep_the_adapter_in_the_compute_dtype(models_dir, tmp_path, tf32_restored):
    """--fp8-weights on a made-up H100: a LoRA added afterwards computes in the layer's compute dtype
    (as on an fp8 checkpoint, tests/test_quantised.py) and changes the picture as on the float model."""
    import os

    import torch
    from diffusers import StableDiffusionPipeline

    import lora_files
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.settings import Settings

    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    os.symlink(models_dir / "checkpoints" / "tiny-sd", root / "checkpoints" / "tiny-sd")
    lora_files.save_kohya(StableDiffusionPipeline.from_pretrained(str(models_dir / "checkpoints" / "tiny-sd")),
                          root / "Lora" / "outline.safetensors", scale=0.15)

    def picture(fp8: bool, prompt: str):
        engine = build_engine(Settings(models_dir=root, outputs_dir=tmp_path / "out", save_images=False, fp8_weights=fp8),
                              DeviceChoice("cpu"))
        engine.models._facts = H100
        result = engine.txt2img(Txt2ImgRequest(prompt=prompt, model="tiny-sd", steps=3, width=64, height=64, seed=7))
        assert not result.warnings, result.warnings
        return np.asarray(result.images[0]).astype(np.float64), engine.models.current.pipeline.unet

    plain, _ = picture(False, "a red circle")
    float_lora, _ = picture(False, "a red circle <lora:outline:1>")
    fp8_lora, unet = picture(True, "a red circle <lora:outline:1>")
    adapters = {p.dtype for name, p in unet.named_parameters() if ".lora_" in name}
    assert adapters == {torch.float32}
    assert unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q.base_layer.weight.dtype == torch.float8_e4m3fn
    assert np.abs(plain - float_lora).mean() > 1.0, "the LoRA changes the picture"
    assert np.abs(float_lora - fp8_lora).mean() < 2.5, "and does so with fp8 weights as on the float ones"
