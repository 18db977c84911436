"""The add-on seam's lifetimes (core/addons.py), each with an add-on that counts: per model state
loaded once per loaded model and dropped with it, per job context entered and exited once (also on
failure and Interrupt), per call apply/release around every call, per step callbacks that can swap
the conditioning from step k on; a kwarg an add-on sets that the pipeline does not take is an error
naming it; the resolver builds a ControlNet pipeline from the loaded components."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import pytest

from webui.engine.core.addons import Addon, AddonSpec
from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.requests import Txt2ImgRequest


def request(**fields):
    base = dict(steps=4, width=64, height=64, seed=5, sampler_name="Euler")
    return Txt2ImgRequest("a red circle", **{**base, **fields})


def pixels(result):
    return [np.asarray(image, dtype=np.int16) for image in result.images]


class Counter(Addon):
    """Counts every lifetime's events into a shared log."""

    name = "counter"

    def __init__(self, log: dict, fail_on_enter: bool = False):
        self.log, self.fail_on_enter = log, fail_on_enter

    def state_key(self):
        return "weights"

    def load_state(self, ctx, model):
        import torch

        self.log["loads"] = self.log.get("loads", 0) + 1
        self.log.setdefault("models", []).append(model.name)
        return {"weights": torch.zeros(1024, dtype=torch.float32)}  # 4 KiB, counted in the budget

    @contextmanager
    def job(self, ctx, model, request):
        self.log["enter"] = self.log.get("enter", 0) + 1
        if self.fail_on_enter:
            raise InvalidRequest("counter", "refused while entering")
        try:
            yield
        finally:
            self.log["exit"] = self.log.get("exit", 0) + 1

    def apply(self, call):
        self.log["apply"] = self.log.get("apply", 0) + 1

    def release(self, call):
        self.log["release"] = self.log.get("release", 0) + 1


def register(engine, name, factory):
    engine.addons.register(AddonSpec(name, factory, (), "test"))


def test_each_lifetime_is_entered_as_often_as_it_should(engine):
    log: dict = {}
    register(engine, "counter", lambda settings: Counter(log))
    engine.txt2img(request(n_iter=3, addons={"counter": True}))
    assert (log["loads"], log["enter"], log["exit"], log["apply"], log["release"]) == (1, 1, 1, 3, 3)
    engine.txt2img(request(n_iter=2, addons={"counter": True}))
    assert log["loads"] == 1, "the per-model state was loaded again for the same loaded model"
    model = engine.models.get("tiny-sd")
    assert engine.models.loaded_bytes() >= model.entry.size_bytes + 4096

    # Another checkpoint evicts tiny-sd (cache size 1): its state goes with it and is loaded again.
    engine.txt2img(request(model="tiny-sd3", sampler_name="Flow Euler", addons={"counter": True}))
    engine.txt2img(request(model="tiny-sd", addons={"counter": True}))
    assert log["models"] == ["tiny-sd", "tiny-sd3", "tiny-sd"]


def test_a_failure_while_entering_undoes_what_was_entered_and_leaves_the_model(engine):
    log: dict = {}
    before = pixels(engine.txt2img(request()))

    class Patcher(Addon):
        name = "patcher"

        @contextmanager
        def job(self, ctx, model, request):
            unet = model.pipeline.unet
            saved = unet.conv_out.bias.detach().clone()
            unet.conv_out.bias.data += 1.0  # would ruin the picture if it stayed
            log["patched"] = True
            try:
                yield
            finally:
                unet.conv_out.bias.data.copy_(saved)
                log["restored"] = True

    register(engine, "patcher", lambda settings: Patcher())
    register(engine, "counter", lambda settings: Counter(log, fail_on_enter=True))
    with pytest.raises(InvalidRequest) as caught:
        engine.txt2img(request(addons={"patcher": True, "counter": True}))
    assert caught.value.field == "counter"
    assert log == {"patched": True, "restored": True, "enter": 1}
    assert all(np.array_equal(a, b) for a, b in zip(before, pixels(engine.txt2img(request()))))


def test_an_interrupted_job_exits_its_context(engine):
    from webui.engine.core.jobs import Job

    log: dict = {}
    register(engine, "counter", lambda settings: Counter(log))
    job = Job(kind="txt2img")

    class Stopper(Addon):
        name = "stopper"

        def on_step(self, step):
            if step.step == 1:
                job.interrupt()

    register(engine, "stopper", lambda settings: Stopper())
    result = engine.txt2img(request(n_iter=3, addons={"counter": True, "stopper": True}), job)
    assert result.interrupted and log["enter"] == log["exit"] == 1 and log["apply"] == log["release"] == 1


def test_a_kwarg_the_pipeline_does_not_take_is_an_error_naming_the_add_on(engine):
    released = threading.Event()

    class Misplaced(Addon):
        name = "misplaced"

        def apply(self, call):
            call.kwargs["control_image"] = object()  # not an argument of StableDiffusionPipeline

        def release(self, call):
            released.set()

    register(engine, "misplaced", lambda settings: Misplaced())
    with pytest.raises(InvalidRequest) as caught:
        engine.txt2img(request(addons={"misplaced": True}))
    assert caught.value.field == "misplaced" and "control_image" in str(caught.value)
    assert released.is_set()


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 3M SDE"])  # a diffusers scheduler, and a function sampler
def test_swapping_the_conditioning_at_step_k_changes_only_the_steps_after_it(engine, sampler):
    k = 2

    class Recorder(Addon):
        name = "recorder"
        tensor_inputs = ("latents",)

        def __init__(self, log):
            self.log = log

        def on_step(self, step):
            self.log.append(step.tensors["latents"].detach().clone())

    class Swap(Addon):
        name = "swap"
        tensor_inputs = ("prompt_embeds",)

        def on_step(self, step):
            if step.step == k - 1:  # after step k's update: steps k+1... use the new conditioning
                return {"prompt_embeds": step.tensors["prompt_embeds"] * 0.0}
            return None

    register(engine, "swap", lambda settings: Swap())
    runs = {}
    for name, addons in (("plain", {}), ("swapped", {"swap": True})):
        log: list = []
        engine.addons.register(AddonSpec("recorder", lambda settings, log=log: Recorder(log), (), "test"), override=True)
        runs[name] = (engine.txt2img(request(steps=6, sampler_name=sampler, addons={**addons, "recorder": True})), log)
    (plain, plain_steps), (swapped, swapped_steps) = runs["plain"], runs["swapped"]
    assert len(plain_steps) == len(swapped_steps) == 6
    for step in range(k):
        assert plain_steps[step].equal(swapped_steps[step]), f"step {step + 1} changed before the swap"
    assert not plain_steps[k].equal(swapped_steps[k]), "the swap did not reach the next step"
    assert not np.array_equal(pixels(plain)[0], pixels(swapped)[0])


def test_the_resolver_builds_a_controlnet_pipeline_from_the_loaded_components(engine):
    from diffusers import ControlNetModel

    from webui.engine.generation.pipelines import pipeline_for

    engine.txt2img(request(steps=1))
    model = engine.models.get("tiny-sd")
    controlnet = ControlNetModel.from_unet(model.pipeline.unet, conditioning_channels=3)
    pipeline = pipeline_for(model, None, {"controlnet": controlnet})
    assert type(pipeline).__name__ == "StableDiffusionControlNetPipeline"
    assert pipeline.unet is model.pipeline.unet and pipeline.vae is model.pipeline.vae and pipeline.controlnet is controlnet
    assert pipeline_for(model, None, {"controlnet": controlnet}) is pipeline  # kept on the model, not built again
    assert pipeline_for(model, None, {}) is model.pipeline
