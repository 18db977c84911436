"""The memory planner (engine/core/memory.py): the estimate, the mode it picks and says it picked,
the retry after an out-of-memory call, and --memory-mode. On the CPU a small card is faked with
Settings.memory_limit_mb and an out-of-memory error with a patched PipelineCall.run (offloading is a
no-op on the CPU, so every mode makes the same pixels). The `gpu` tests at the end force offload on
CUDA with a per-process memory fraction; they run only with -m gpu."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from webui.engine.core import memory
from webui.engine.core.jobs import Job
from webui.engine.generation.call import PipelineCall
from webui.engine.generation.requests import Txt2ImgRequest

MB = 1 << 20
SD15 = {"unet": 1719 * MB, "text_encoder": 246 * MB, "vae": 167 * MB}  # SD 1.5 in fp16


def _request(**kw) -> Txt2ImgRequest:
    base = dict(prompt="a red circle", steps=2, width=64, height=64, seed=7, sampler_name="Euler", save_images=False)
    return Txt2ImgRequest(**{**base, **kw})


def _pixels(result) -> list[np.ndarray]:
    return [np.asarray(image) for image in result.images]


# --- the estimate and the choice, as plain numbers --------------------------------------------------

def test_estimate_grows_with_resolution_and_batch():
    small = memory.estimate(SD15, memory.Shape(512, 512, 1))
    large = memory.estimate(SD15, memory.Shape(1024, 1024, 1))
    batch = memory.estimate(SD15, memory.Shape(512, 512, 4))
    for mode in ("none", "vae-tiling", "model-offload", "sequential-offload"):
        assert large[mode] > small[mode] and batch[mode] > small[mode], mode
    assert batch["batch-split"] == small["batch-split"]  # one image per call
    # Every step of the ladder saves memory at a size that needs it.
    big = memory.estimate(SD15, memory.Shape(1024, 1024, 4))
    values = [big[m] for m in memory.MODES]
    assert values == sorted(values, reverse=True) and len(set(values)) == len(values)
    # The weights count: the same shape with twice the weights needs more.
    heavier = memory.estimate({k: 2 * v for k, v in SD15.items()}, memory.Shape(512, 512, 1))
    assert heavier["none"] > small["none"]


def test_engine_estimate_grows_with_resolution_and_batch(engine):
    model = engine.models.get("tiny-sd")
    parts = memory.component_bytes(model.pipeline)
    assert {"unet", "vae", "text_encoder"} <= set(parts) and all(b > 0 for b in parts.values())
    assert parts["unet"] == sum(p.numel() * 4 for p in model.pipeline.unet.parameters()) + \
        sum(b.numel() * b.element_size() for b in model.pipeline.unet.buffers())
    at = lambda w, n: memory.estimate(parts, memory.shape_of(model.pipeline, w, w, n))["none"]  # noqa: E731
    assert at(64, 1) < at(128, 1) < at(256, 1) and at(64, 1) < at(64, 2) < at(64, 4)


@pytest.mark.parametrize("free_gb, batch, mode", [
    (80, 1, "none"), (10, 4, "vae-tiling"), (7.6, 4, "model-offload"), (6.5, 4, "sequential-offload"),
    (2, 4, "batch-split"),
])
def test_the_ladder_picks_the_first_mode_that_fits(free_gb, batch, mode):
    shape = memory.Shape(1024, 1024, batch)
    plan = memory.plan(SD15, shape, "cuda", int(free_gb * memory.GB))
    assert plan.mode == mode, plan.estimates
    assert plan.peak_bytes == plan.estimates[mode] and plan.split == (mode == "batch-split")
    assert plan.text().startswith(f"memory: {mode} (") and "GB free" in plan.text()
    assert plan.plain()["mode"] == mode


def test_nothing_fits_tries_the_last_mode_and_a_limit_caps_free_memory():
    plan = memory.plan(SD15, memory.Shape(1024, 1024, 1), "cuda", 10 * MB)
    assert plan.mode == "sequential-offload" and "nothing fits" in plan.reason  # batch 1: no split
    capped = memory.plan(SD15, memory.Shape(512, 512, 1), "cuda", 80 * memory.GB, limit=1 * memory.GB)
    assert capped.available_bytes == memory.GB and capped.mode != "none"
    forced = memory.plan(SD15, memory.Shape(512, 512, 1), "cuda", 10 * MB, forced="none")
    assert forced.mode == "none" and "--memory-mode none" in forced.reason
    short = memory.plan(SD15, memory.Shape(1024, 1024, 4), "cuda", int(7.6 * memory.GB), ram_free=1 * memory.GB)
    assert short.mode == "model-offload" and short.ram_bytes == sum(SD15.values()) and "of RAM" in short.reason
    with pytest.raises(ValueError, match="unknown memory mode"):
        memory.plan(SD15, memory.Shape(64, 64), "cpu", MB, forced="lowvram")


def test_add_on_modules_on_a_gpu_keep_the_ladder_at_vae_tiling():
    plan = memory.plan(SD15, memory.Shape(1024, 1024, 4), "cuda", 2 * memory.GB, extra_bytes=700 * MB, offloadable=False)
    assert plan.ladder == ("none", "vae-tiling") and plan.mode == "vae-tiling" and plan.next_mode() is None
    forced = memory.plan(SD15, memory.Shape(512, 512, 1), "cuda", 80 * memory.GB, forced="model-offload", offloadable=False)
    assert forced.mode == "vae-tiling" and "cannot be offloaded" in forced.reason
    assert memory.plan(SD15, memory.Shape(1024, 1024, 1), "cuda", MB).ladder[-1] == "sequential-offload"


def test_free_ram_is_read_on_the_cpu():
    assert memory.free_bytes("cpu") > 0 and memory.available_ram() > 0


class _Recorder:
    """A stand-in pipeline that records diffusers' memory switches (what apply() calls, in order)."""

    def __init__(self):
        self.calls = []
        outer = self

        class Vae:
            def __getattr__(self, name):
                return lambda: outer.calls.append(f"vae.{name}")

        self.vae = Vae()

    def remove_all_hooks(self):
        self.calls.append("remove_all_hooks")

    def to(self, device):
        self.calls.append(f"to {device}")

    def enable_model_cpu_offload(self, device=None):
        self.calls.append(f"model offload {device}")

    def enable_sequential_cpu_offload(self, device=None):
        self.calls.append(f"sequential offload {device}")


def test_apply_undoes_the_last_mode_before_the_next():
    pipe, state = _Recorder(), {}
    memory.apply(pipe, state, "model-offload", "cuda")
    assert pipe.calls == ["model offload cuda", "vae.enable_tiling", "vae.enable_slicing"]
    pipe.calls.clear()
    memory.apply(pipe, state, "sequential-offload", "cuda")
    assert pipe.calls[:3] == ["remove_all_hooks", "to cuda", "sequential offload cuda"]
    pipe.calls.clear()
    memory.apply(pipe, state, "batch-split", "cuda")  # the same hooks: only the VAE switches again
    assert not [c for c in pipe.calls if not c.startswith("vae.")]
    pipe.calls.clear()
    memory.apply(pipe, state, "none", "cuda")
    assert pipe.calls == ["remove_all_hooks", "to cuda", "vae.disable_tiling", "vae.disable_slicing"]
    pipe.calls.clear()
    memory.apply(pipe, state, "none", "cuda")
    assert pipe.calls == [] and state[memory.STATE_KEY] == "none"
    memory.apply(pipe, state, "model-offload", "cpu")  # nothing to offload to on the CPU
    assert pipe.calls == ["vae.enable_tiling", "vae.enable_slicing"]
    pipe.calls.clear()
    memory.release(pipe, state, "cpu")
    assert pipe.calls == ["vae.disable_tiling", "vae.disable_slicing"]


# --- jobs on the CPU -------------------------------------------------------------------------------

def test_plenty_of_memory_runs_as_is_and_the_job_says_so(engine, caplog):
    job = Job()
    with caplog.at_level(logging.INFO, logger="webui.engine.generation.runner"):
        result = engine.txt2img(_request(), job)
    assert job.note.startswith("memory: none (fits")
    assert job.describe().endswith(job.note) and job.snapshot()["note"] == job.note
    assert "memory: none" in caplog.text
    assert "memory" not in result.infotexts[0].lower()


def test_a_small_limit_picks_a_saving_mode_and_the_job_says_so(engine, caplog):
    normal = _pixels(engine.txt2img(_request()))
    engine.settings.memory_limit_mb = 1  # a 1 MB "card": nothing but the smallest mode fits
    job = Job()
    with caplog.at_level(logging.INFO, logger="webui.engine.generation.runner"):
        result = engine.txt2img(_request(), job)
    assert job.note.startswith("memory: sequential-offload (nothing fits")
    assert "1.00 MB" not in job.note and "0.00 GB free" in job.note
    assert "memory: sequential-offload" in job.snapshot()["text"] and "memory: sequential-offload" in caplog.text
    assert all(np.array_equal(a, b) for a, b in zip(normal, _pixels(result)))  # offload moves nothing on the CPU
    # The VAE was tiled and sliced for that job; the next job with room undoes it.
    vae = engine.models.get("tiny-sd").pipeline.vae
    assert vae.use_tiling and vae.use_slicing
    engine.settings.memory_limit_mb = 0
    job = Job()
    engine.txt2img(_request(), job)
    assert job.note.startswith("memory: none") and not vae.use_tiling and not vae.use_slicing


def test_model_offload_is_picked_between_tiling_and_sequential(engine, monkeypatch):
    """The tiny model's weights are too small to tell the modes apart by whole MB, so they are read as
    SD 1.5's here; the job's status line names model offload and the pixels do not change."""
    normal = _pixels(engine.txt2img(_request(batch_size=2)))
    monkeypatch.setattr(memory, "component_bytes", lambda pipeline: dict(SD15))
    shape = memory.shape_of(engine.models.get("tiny-sd").pipeline, 64, 64, 2)
    estimates = memory.estimate(SD15, shape)
    limit = int(estimates["model-offload"] / memory.HEADROOM / MB) + 1
    assert limit * MB * memory.HEADROOM < estimates["vae-tiling"]
    engine.settings.memory_limit_mb = limit
    job = Job()
    result = engine.txt2img(_request(batch_size=2), job)
    assert job.note.startswith("memory: model-offload ("), job.note
    # The same pictures: the mode also slices the VAE, so each of the two is decoded alone, and on some CPUs
    # a convolution over one picture rounds differently from one over two (seen: 1 level in one pixel).
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(normal, _pixels(result)))


def _fake_oom(monkeypatch, times: int, error: Exception):
    """PipelineCall.run raises `error` on its first `times` calls."""
    real, calls = PipelineCall.run, {"n": 0}

    def run(self):
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return real(self)

    monkeypatch.setattr(PipelineCall, "run", run)
    return calls


@pytest.mark.parametrize("error", [
    pytest.param(lambda: __import__("torch").OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), id="torch"),
    pytest.param(lambda: RuntimeError("[enforce fail] DefaultCPUAllocator: not enough memory: out of memory"), id="runtime"),
])
def test_an_out_of_memory_call_is_retried_once_in_the_next_mode(engine, monkeypatch, error):
    normal = engine.txt2img(_request())
    calls = _fake_oom(monkeypatch, 1, error())
    job = Job()
    result = engine.txt2img(_request(), job)
    assert calls["n"] == 2
    assert job.note.startswith("memory: vae-tiling (none ran out of memory; retried in vae-tiling")
    assert np.array_equal(_pixels(normal)[0], _pixels(result)[0])
    assert result.infotexts == normal.infotexts


def test_a_second_out_of_memory_names_a_mode_and_the_next_job_runs(engine, monkeypatch):
    from webui.engine.core.errors import KiriError

    normal = engine.txt2img(_request())
    calls = _fake_oom(monkeypatch, 2, __import__("torch").OutOfMemoryError("CUDA out of memory."))
    with pytest.raises(memory.OutOfMemory, match=r"memory mode none, then vae-tiling .*--memory-mode model-offload") as err:
        engine.txt2img(_request())
    assert isinstance(err.value, KiriError) and calls["n"] == 2
    again = engine.txt2img(_request())  # the third call runs: the server goes on
    assert np.array_equal(_pixels(normal)[0], _pixels(again)[0])


def test_other_errors_are_not_retried(engine, monkeypatch):
    calls = _fake_oom(monkeypatch, 5, RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    with pytest.raises(RuntimeError, match="shapes"):
        engine.txt2img(_request())
    assert calls["n"] == 1


def test_memory_mode_overrides_the_planner(engine):
    from webui.cli import build_parser

    assert build_parser().parse_args([]).memory_mode == "auto"
    args = build_parser().parse_args(["--memory-mode", "batch-split", "--memory-limit-mb", "512"])
    assert (args.memory_mode, args.memory_limit_mb) == ("batch-split", 512)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--memory-mode", "lowvram"])

    normal = _pixels(engine.txt2img(_request(batch_size=2)))
    engine.settings.memory_mode = args.memory_mode
    job = Job()
    split = _pixels(engine.txt2img(_request(batch_size=2), job))
    assert job.note.startswith("memory: batch-split (--memory-mode batch-split")
    assert all(np.allclose(a, b, atol=1) for a, b in zip(normal, split))  # each image alone: its own noise
    engine.settings.memory_mode, engine.settings.memory_limit_mb = "none", 1
    job = Job()
    engine.txt2img(_request(), job)
    assert job.note.startswith("memory: none (--memory-mode none")


# --- on a GPU (python -m pytest -m gpu tests/test_memory_planner.py) ------------------------------------

def _cuda_engine(models_dir, tmp_path, **settings):
    import torch

    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    assert torch.cuda.is_available(), "the gpu tests need a CUDA GPU"
    engine = build_engine(Settings(models_dir=models_dir, outputs_dir=tmp_path / "out", save_images=False,
                                   default_model="tiny-sd", **settings), DeviceChoice("cuda"))
    engine.catalog.scan()
    return engine


@pytest.mark.gpu
def test_offload_modes_on_cuda_switch_cleanly(models_dir, tmp_path):
    """Model offload, sequential offload and back to none on CUDA in fp16: the hooks come off, the
    weights come back to the GPU, and every mode makes (nearly) the same pixels."""
    import torch

    engine = _cuda_engine(models_dir, tmp_path)
    pictures = {}
    for mode in ("none", "model-offload", "sequential-offload", "batch-split", "none"):
        engine.settings.memory_mode = mode
        job = Job()
        pictures.setdefault(mode, []).append(np.asarray(engine.txt2img(_request(batch_size=2), job).images[0]).astype(int))
        assert job.note.startswith(f"memory: {mode} (")
        unet = engine.models.get("tiny-sd").pipeline.unet
        assert unet.dtype == torch.float16
        if mode == "none":
            assert not hasattr(unet, "_hf_hook") and unet.device.type == "cuda"
        else:
            assert hasattr(unet, "_hf_hook")
    for mode, images in pictures.items():  # fp16 kernels may differ a little between batch sizes
        for image in images:
            diff = np.abs(image - pictures["none"][0])
            assert diff.max() <= 8 and diff.mean() <= 1, (mode, diff.max(), diff.mean())


@pytest.mark.gpu
def test_a_memory_fraction_makes_the_planner_offload_and_an_oom_is_survived(models_dir, tmp_path):
    """A per-process memory fraction of 96 MB over what is allocated: the planner reads it as the free
    memory and picks a saving mode at 128 x 128, batch 4; forced to none, the real out-of-memory error is
    retried or reported by name, and a small job afterwards still runs."""
    import torch

    engine = _cuda_engine(models_dir, tmp_path)
    engine.txt2img(_request())  # the model on the GPU
    total = torch.cuda.mem_get_info()[1]
    try:
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated() + 96 * MB) / total)
        job = Job()
        try:
            engine.txt2img(_request(width=128, height=128, batch_size=4), job)
        except memory.OutOfMemory as exc:  # the estimate is rough; a clear error is fine too
            assert "--memory-mode" in str(exc) or "lower the resolution" in str(exc)
        assert job.note.startswith("memory: ") and not job.note.startswith("memory: none"), job.note
        engine.settings.memory_mode = "none"
        job = Job()
        try:
            result = engine.txt2img(_request(width=1024, height=1024, batch_size=4), job)
            assert result.images and "ran out of memory; retried in vae-tiling" in job.note
        except memory.OutOfMemory as exc:
            assert "--memory-mode" in str(exc) or "lower the resolution" in str(exc)
        engine.settings.memory_mode = "auto"
        assert engine.txt2img(_request()).images
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
