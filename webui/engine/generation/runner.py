"""The one generation runner: seeds, batches, turns, the step callback, previews, Interrupt and
Skip, and saving, for every task that denoises (txt2img, img2img, inpaint, and later hires fix,
SD upscale and video frames as stages of one job).

A task says only what differs: how it checks the model and sampler, what pipeline call a batch
makes, what happens to the images after (paste-back), and its infotext. Each batch's call goes
through `call_with_addons()`, the one path every denoising call takes (video and the diffusion
upscalers call it too, where a clip or a tile is one call the batch loop does not fit). `run()` is a generator:
it yields after the setup and after each batch, which is where the job store lets other users'
jobs take a turn. A stage inside another job is `yield from run(...)` with the same job.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generator, Protocol

from webui.engine.core.addons import Addon, AddonContext, AddonSession, StepState, label_of as _label
from webui.engine.core import memory
from webui.engine.core.errors import Interrupted, InvalidRequest, KiriError, Skipped
from webui.engine.core.hooks import StepInfo
from webui.engine.core.infotext import build_infotext
from webui.engine.core.jobs import Job
from webui.engine.core.prompt_tags import strip_tags
from webui.engine.models.families import FAMILIES
from webui.engine.core.outputs import SOURCE_HASH, dated_dir, keep_source, save_image
from webui.engine.generation.call import PipelineCall
from webui.engine.generation.conditioning import StepSwap, chunked_families, schedule_for
from webui.engine.generation.conditioning import encode as encode_conditioning
from webui.engine.generation.pipelines import pipeline_for
from webui.engine.generation.prompt_parser import PromptTree, plain_text
from webui.engine.generation.preview import previewer_for
from webui.engine.generation.requests import GenerationResult, Txt2ImgRequest, random_seed
from webui.engine.samplers.registry import Sampler, check_fits, default_sampler
from webui.engine.generation.defaults import defaults_for, fill_defaults

if TYPE_CHECKING:
    from webui.engine.context import Engine
    from webui.engine.models.manager import LoadedModel

log = logging.getLogger(__name__)


class NonFiniteImage(KiriError):
    """The sampler produced NaN or infinite values: the picture would be black or noise."""


class Task(Protocol):
    kind: str  # the outputs sub-folder and the job kind
    request: Txt2ImgRequest

    def check(self, model: "LoadedModel", sampler: Sampler, scheduler: Any, engine: "Engine") -> None: ...

    def steps_per_batch(self) -> int: ...

    def call(self, model: "LoadedModel", prompt: str, negative: str, seeds: list[int], generators: list[Any]) -> PipelineCall: ...

    def finish(self, images: list[Any]) -> list[Any]: ...

    def infotext_params(self, model: "LoadedModel", sampler: str, schedule: str, seed: int) -> dict[str, object]: ...


@dataclass
class Setup:
    """One job's setup for its batches: the model's name in `result`, the sampler, the add-ons entered,
    the prompts checked, where its images go."""

    task: Task
    job: Job
    session: AddonSession
    result: GenerationResult
    sampler: Sampler
    schedule: str
    prompt: str
    negative: str
    save: bool
    out_dir: Any


def run(engine: "Engine", task: Task, job: Job) -> Generator[None, None, GenerationResult]:
    with ExitStack() as stack:
        s = setup(engine, task, job, stack)
        yield  # the setup was one turn
        yield from _batches(engine, task, job, s.session, s.result, s.sampler, s.schedule, s.prompt, s.negative, s.save,
                            s.out_dir)
    return s.result


def setup(engine: "Engine", task: Task, job: Job, stack: ExitStack) -> Setup:
    """The first turn of a job: the model, the sampler, the add-ons entered on `stack`, the prompts."""
    request = task.request
    job.image_count, job.batch_count = request.total_images, request.n_iter
    result = GenerationResult()

    # 1. The model, pinned by name for every batch of this job, and the sampler.
    model = engine.models.get(request.model or engine.selected_model, preferred=engine.settings.default_model)
    if request.steps is None or request.cfg_scale is None or request.sampler_name is None:
        fill_defaults(request, defaults_for(model.entry, engine.catalog, request.prompt))  # a stage made without _prepare
    sampler_name = request.sampler_name or default_sampler(model.prediction)
    sampler, schedule = engine.samplers.resolve(sampler_name, request.scheduler)
    check_fits(engine.samplers, sampler, model.prediction)
    trial = sampler.build(model.base_scheduler_config, schedule, model.prediction)  # refuses a bad pair before any work
    try:
        _check_custom_sigmas(engine, model, sampler, schedule, trial)
        task.check(model, sampler, trial, engine)
    finally:
        getattr(trial, "close", lambda: None)()
    result.model_name, result.model_hash = model.name, model.short_hash
    result.sampler_name, result.schedule = sampler.name, schedule

    # 2. Add-ons (per job: entered here, exited after the last batch, on failure, Interrupt or a
    #    dropped job), and the prompts checked against what the text encoder reads.
    session = open_session(engine, model, request, job, stack)
    # The text encoder reads the prompts without their extra-network tags (the add-ons they name
    # were built above); the infotext keeps them as written.
    for tag in engine.addons.unknown_tags(request.prompt, request.negative_prompt):
        result.warnings.append(f"{tag}: no add-on reads this kind of extra network; it was left out of the prompt")
    prompt = fit_prompt(model, strip_tags(request.prompt), "prompt", result.warnings, request.steps)
    negative = fit_prompt(model, strip_tags(request.negative_prompt), "negative prompt", result.warnings, request.steps)
    save = engine.settings.save_images if request.save_images is None else request.save_images
    out_dir = dated_dir(engine.outputs_for(job.owner), task.kind)
    return Setup(task, job, session, result, sampler, schedule, prompt, negative, save, out_dir)


def _batches(engine: "Engine", task: Task, job: Job, session: AddonSession, result: GenerationResult, sampler: Sampler,
             schedule: str, prompt: str, negative: str, save: bool, out_dir) -> Generator[None, None, None]:
    """3. Batch after batch, each a turn of its own; each image's noise comes from its own seed."""
    request = task.request
    base_seed = request.seed if request.seed != -1 else random_seed()
    sources: dict[str, str] | None = None
    plan: memory.MemoryPlan | None = None
    for batch_no in range(1, request.n_iter + 1):
        if job.interrupted:
            result.interrupted = True
            break
        first = base_seed + (batch_no - 1) * request.batch_size
        seeds = [(first + i) % 2**32 for i in range(request.batch_size)]
        # Other users' turns ran since the last batch: the model is fetched again (cached), and with it
        # each add-on's per-model state, loaded once per loaded model.
        model = engine.models.get(result.model_name)
        session.state(model)
        if plan is None:  # the memory plan, once per job; its mode set again each batch (others' jobs ran)
            plan = plan_memory(engine, model, session, request, job)
        # Each image's prompt, drawn from its seed where a prompt step says so (dynamic prompts); images
        # next to each other with the same text share a call (all of them, without such a step).
        texts = [engine.prompt_steps.for_image(engine.settings, request.prompt, request.negative_prompt, seed)
                 for seed in seeds]

        def batch(plan: memory.MemoryPlan) -> tuple[list[Any], list[PipelineCall]]:
            memory.apply(model.pipeline, model.derived, plan.mode, model.device)
            runs = [(i, i + 1) for i in range(len(texts))] if plan.split else _same_text_runs(texts)
            job.start_batch(batch_no, task.steps_per_batch() * len(runs))
            generators = [_generator(seed) for seed in seeds]  # fresh for a retry: the same noise
            images, calls = [], []
            for number, (start, end) in enumerate(runs):
                text = texts[start]
                own = (text.prompt, text.negative_prompt) != (request.prompt, request.negative_prompt)
                scheduler = sampler.build(model.base_scheduler_config, schedule, model.prediction, generators[start:end])
                try:
                    call = task.call(model, strip_tags(text.prompt) if own else prompt,
                                     strip_tags(text.negative_prompt) if own else negative,
                                     seeds[start:end], generators[start:end])
                    if len(runs) > 1 and "num_images_per_prompt" in call.kwargs:
                        call.kwargs["num_images_per_prompt"] = end - start
                    call.components["scheduler"] = scheduler
                    progress = _step_callback(engine, model, request, job, done=number * task.steps_per_batch())
                    images += task.finish(call_with_addons(session, model, call, progress))
                    calls += [call] * (end - start)
                finally:
                    getattr(scheduler, "close", lambda: None)()  # a function sampler's helper thread
            return images, calls

        try:
            images, calls, plan = with_memory_retry(batch, plan, model.device, job)
            if getattr(task, "makes_pictures", True):  # a first pass kept as latents is no picture for extensions
                images = engine.hooks.transform("after_generate", images, request)
        except Interrupted:
            result.interrupted = True
            break
        except Skipped:
            job.finish_images(0)
            continue
        call = calls[-1]
        job.finish_images(len(images))
        result.warnings.extend(w for w in call.warnings if w not in result.warnings)

        # 4. Save each image whole, with its parameters, before the next batch (and the pictures it
        #    started from, once, so the Library can make it again).
        if save and sources is None:
            sources = kept_sources(engine, job.owner, task, session.addons)
        save_batch(engine, task, result, model, sampler, schedule, seeds, images, calls, texts, save, out_dir, sources)
        if job.interrupted:
            result.interrupted = True
            break
        if batch_no < request.n_iter:
            yield


def save_batch(engine: "Engine", task: Task, result: GenerationResult, model: "LoadedModel", sampler: Sampler,
               schedule: str, seeds: list[int], images: list[Any], calls: list[PipelineCall], texts: list[Any],
               save: bool, out_dir: Any, sources: dict[str, str] | None = None) -> None:
    """Each image saved whole with its infotext (when `save`) and added to `result`; `sources`: the
    infotext keys of the pictures it started from (kept_sources)."""
    request = task.request
    for seed, image, call, text in zip(seeds, images, calls, texts):
        params = task.infotext_params(model, sampler.name, schedule, seed)
        version = params.pop("Version", None)
        params.update(call.infotext)
        params.update(text.infotext)  # a dynamic prompt's Template
        params.update(sources or {})
        params["Version"] = version
        info = build_infotext(text.prompt, text.negative_prompt, params)
        path = save_image(image, out_dir, info, seed, request.image_format or engine.settings.image_format) if save else None
        result.add(image, info, seed, path)


def kept_sources(engine: "Engine", owner: str, work: Any, addons: list[Any] = ()) -> dict[str, str]:
    """Keep the pictures a task or request starts from (its `sources()`: an img2img init image and mask;
    none for a hires fix's second pass) and those its `addons` start from (Addon.sources: ControlNet
    units' control pictures) in the owner's outputs (core/outputs.keep_source); their infotext keys with
    the first hex digits of each hash."""
    pictures = dict(work.sources() if callable(getattr(work, "sources", None)) else {})
    for addon in addons:
        sources = getattr(addon, "sources", None)
        pictures.update(sources() if callable(sources) else {})
    root = engine.outputs_for(owner)
    return {key: keep_source(picture, root)[:SOURCE_HASH] for key, picture in pictures.items()}


def plan_memory(engine: "Engine", model: "LoadedModel", session: AddonSession, request: Any, job: Job) -> memory.MemoryPlan:
    """The job's memory plan (core/memory.py): the checkpoint's components and the add-ons' modules,
    the request's size and batch, what the device has free (the checkpoint's own weights there counted
    in); written to the log and the job's status line, never to the infotext."""
    pipeline = model.pipeline
    modules = session.components(model)  # ControlNets and the like, beside the checkpoint's own
    extra = sum(memory.module_bytes(m) for m in modules.values())
    shape = memory.shape_of(pipeline, request.width, request.height, request.batch_size,
                            guidance=getattr(request, "cfg_scale", 7.0) > 1)
    free = memory.free_bytes(model.device) + memory.resident_bytes(pipeline, model.device)
    plan = memory.plan(memory.component_bytes(pipeline), shape, model.device, free, engine.settings.memory_mode,
                       extra, engine.settings.memory_limit_mb * 2**20,
                       offloadable=not modules or model.device.startswith("cpu"),
                       ram_free=0 if model.device.startswith("cpu") else memory.available_ram())
    if model.derived.get("memory_plan_text") != plan.text():  # a stage per video frame: logged once, not per frame
        log.info("job %s on %s: %s", job.id[:8], model.name, plan.text())
        model.derived["memory_plan_text"] = plan.text()
    fast = model.fast_path
    # The fast path the checkpoint got (core/fastpath.py) beside the memory plan, where it is on.
    job.note = plan.text() + (f"; {fast.text()}" if fast is not None and fast.on else "")
    return plan


def with_memory_retry(attempt: Callable[[memory.MemoryPlan], tuple], plan: memory.MemoryPlan, device: str,
                      job: Job) -> tuple:
    """`attempt(plan)`'s result and the plan it ran under. A call that runs out of memory frees the
    cache and runs once more in the next mode of the ladder; out of memory again (or with no mode
    left) is `memory.OutOfMemory`, naming a mode that would fit."""
    failed = None
    try:
        return (*attempt(plan), plan)
    except Exception as exc:  # noqa: BLE001 - only an out-of-memory error is retried
        if not memory.is_out_of_memory(exc):
            raise
        failed = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    # Out of the except block, so the failed call's tensors (held by the traceback) can go.
    memory.empty_cache(device)
    after = plan.next_mode()
    if after is None:
        raise memory.OutOfMemory(_oom_message(plan, None))
    log.warning("out of memory in mode %s (%s); retrying once in %s", plan.mode, failed, after)
    retry = plan.with_mode(after, f"{plan.mode} ran out of memory; retried in {after}")
    job.note = retry.text()
    try:
        return (*attempt(retry), retry)
    except Exception as exc:  # noqa: BLE001
        if not memory.is_out_of_memory(exc):
            raise
    memory.empty_cache(device)
    raise memory.OutOfMemory(_oom_message(retry, plan.mode))


def _oom_message(plan: memory.MemoryPlan, first: str | None) -> str:
    tried = f"{first}, then {plan.mode}" if first else plan.mode
    head = f"out of memory in memory mode {tried} ({plan.available_bytes / memory.GB:.2f} GB free)"
    fits, after = plan.fitting_after(plan.mode), plan.next_mode()
    if fits is not None:
        return (f"{head}; memory mode {fits} would fit (estimated ~{plan.estimates[fits] / memory.GB:.2f} GB): "
                f"start with --memory-mode {fits}, or lower the resolution or the batch size")
    if after is not None:
        return (f"{head}; no memory mode is estimated to fit: lower the resolution or the batch size, or try "
                f"--memory-mode {after} (estimated ~{plan.estimates[after] / memory.GB:.2f} GB)")
    return f"{head}; no memory mode saves more: lower the resolution or the batch size"


def _same_text_runs(texts: list[Any]) -> list[tuple[int, int]]:
    """[start, end) of each run of neighbouring images with the same prompts."""
    runs: list[tuple[int, int]] = []
    for i, text in enumerate(texts):
        if runs and (texts[runs[-1][0]].prompt, texts[runs[-1][0]].negative_prompt) == (text.prompt, text.negative_prompt):
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def addon_context(engine: "Engine", job: Job) -> AddonContext:
    return AddonContext(engine.catalog, engine.models, engine.models.device.device, engine.settings, job)


StepCallback = Callable[[Any, int, Any, dict], dict]  # diffusers' callback_on_step_end


# --- one denoising call through the add-on seam: every call site's (the runner's batches, text to
# --- video and its FreeInit rounds, motion video to video's windows, the diffusion upscalers' tiles)

@dataclass
class CallModel:
    """What a call that denoises with something other than a checkpoint hands the add-ons as its model
    (a native video pipeline, a diffusion upscaler): its name and pipeline. `derived` None: per-model
    state is loaded for each call, not kept (such models are not LoadedModels)."""

    name: str
    pipeline: Any
    derived: dict | None = None


def open_session(engine: "Engine", model: Any, request: Any, job: Job, stack: ExitStack) -> AddonSession:
    """The add-ons `request.addons` names, entered for the job on `stack` (per job: exited with the
    stack, on failure, Interrupt or a dropped job)."""
    session = AddonSession(engine.addons.build(request.addons, getattr(request, "prompt", None),
                                               getattr(request, "negative_prompt", None)), addon_context(engine, job))
    session.enter(model, request, stack)
    return session


def call_with_addons(session: AddonSession, model: Any, call: PipelineCall, progress: StepCallback | None = None) -> list[Any]:
    """One pipeline call as every denoising call site makes it: each add-on's per-model state, the
    modules the add-ons hand the pipeline (the resolver builds the pipeline that takes them), each
    add-on's apply, the conditioning stage (the prompt as embeddings, where the call lets it), the
    step callbacks composed (the add-ons', the prompt schedule's, then the caller's `progress`:
    progress, previews, Interrupt), the call, and each add-on's release, also when it fails.

    An add-on that cannot reach this call is refused naming it, never dropped: a kwarg the pipeline
    does not take (AddonSession.apply), a step callback on a pipeline without one, modules for a
    pipeline the resolver cannot rebuild."""
    session.state(model)
    _refuse_unreachable(session, model, call)
    extra = session.components(model)
    if extra:
        call.pipeline = pipeline_for(model, None, extra, call.pipeline)
    if call.prompt_stage and isinstance(call.kwargs.get("prompt"), str):
        # The conditioning stage: the prompt language's editing and alternation over the steps this call
        # runs; add-ons may edit the schedule in apply(); it is encoded after.
        call.conditioning = schedule_for(call)
    applied: list = []
    try:
        applied = session.apply(call)
        swap = encode_conditioning(call)
        if swap is not None and not call.accepts("callback_on_step_end"):
            raise InvalidRequest("prompt", f"{type(call.pipeline).__name__} cannot change its prompt during the steps "
                                           "(it has no step callback)")
        call.tensor_inputs = session.tensor_inputs() + [n for n in (swap.tensor_inputs if swap else [])
                                                        if n not in session.tensor_inputs()]
        if progress is not None or swap is not None or _stepping(session):
            call.kwargs["callback_on_step_end"] = _composed(session, swap, progress)
        return call.run()
    finally:
        session.release(call, applied)


def _stepping(session: AddonSession) -> list[Any]:
    """The add-ons with a step callback of their own (not Addon's empty one)."""
    return [a for a in session.addons if getattr(a, "on_step", None) is not None
            and getattr(type(a), "on_step", None) is not Addon.on_step]


def _refuse_unreachable(session: AddonSession, model: Any, call: PipelineCall) -> None:
    name = type(call.pipeline).__name__
    stepping = _stepping(session)
    if stepping and not call.accepts("callback_on_step_end"):
        label = _label(stepping[0])
        raise InvalidRequest(label, f"the add-on {label!r} acts at every step, and {name} has no step callback")
    if not call.resolvable:
        for addon in session.addons:
            get = getattr(addon, "pipeline_components", None)
            modules = get(session.ctx, model) if get is not None else {}
            if modules:
                label = _label(addon)
                raise InvalidRequest(label, f"the add-on {label!r} hands the pipeline {', '.join(sorted(modules))}, "
                                            f"which {name} does not take")


def _composed(session: AddonSession, swap: StepSwap | None, progress: StepCallback | None) -> StepCallback:
    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        if session.addons:
            # The add-ons' step callbacks first (they may swap the conditioning for the next step).
            tensors = session.on_step(StepState(step, getattr(pipe, "_num_timesteps", 0) or 0, timestep, tensors, pipe))
        if swap is not None:  # the prompt schedule's next entry, from the next step on
            tensors.update(swap.on_step(step, tensors, bool(getattr(pipe, "do_classifier_free_guidance", False))))
        return progress(pipe, step, timestep, tensors) if progress is not None else tensors

    return on_step_end


def _takes_sigmas(scheduler: Any) -> bool:
    import inspect

    return "sigmas" in inspect.signature(scheduler.set_timesteps).parameters


def _check_custom_sigmas(engine: "Engine", model: "LoadedModel", sampler: Sampler, schedule: str, trial: Any) -> None:
    """Flux pipelines pass their own sigmas to the scheduler; one that cannot take them would fail mid-call."""
    if not getattr(model, "custom_sigmas", False) or _takes_sigmas(trial):
        return
    fitting = []
    for other in engine.samplers.all():
        if model.prediction not in other.fits or other.name == sampler.name:
            continue
        try:
            candidate = other.build(model.base_scheduler_config, "Automatic", model.prediction)
        except Exception:  # noqa: BLE001 - only listing alternatives
            continue
        if _takes_sigmas(candidate):
            fitting.append(other.name)
        getattr(candidate, "close", lambda: None)()
    raise InvalidRequest("sampler_name", f"sampler {sampler.name!r} cannot follow the noise schedule that {model.name}'s "
                                         f"pipeline sets; choose {', '.join(fitting) or 'another sampler'}")


def _generator(seed: int) -> Any:
    """One CPU generator per image: the same seed gives the same noise on every device and batch."""
    import torch

    return torch.Generator("cpu").manual_seed(seed)


def _step_callback(engine: "Engine", model: "LoadedModel", request: Txt2ImgRequest, job: Job, done: int = 0):
    """The runner's own step callback (after the add-ons' and the prompt schedule's: call_with_addons
    composes them): the NaN check, previews, progress, the on_step hooks, Interrupt and Skip."""
    preview_every = engine.settings.preview_every
    hooks = engine.hooks

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        latents = tensors.get("latents")
        # NaN latents decode to a black picture. Checked at the last step (each step when the
        # pipeline does not say how many), so a GPU waits for one sync per batch, not per step.
        last = getattr(pipe, "_num_timesteps", None)
        if latents is not None and (last is None or step + 1 >= last) and not bool(latents.isfinite().all()):
            raise NonFiniteImage(
                f"the sampler produced invalid values (NaN) at step {step + 1}: this sampler and schedule type do not "
                f"work with {model.name}; choose another schedule type or sampler")
        if preview_every and job.preview_step >= 0 and (step + 1) % preview_every == 0 and latents is not None:
            _preview(model, latents, request, job, done + step + 1)
        job.advance(done + step + 1)  # done: the batch's steps in its earlier calls (images with other prompts)
        if hooks.on_step and latents is not None:
            hooks.notify("on_step", StepInfo(job.id, done + step + 1, job.steps, job.batch_no, latents.detach().clone()))
        if job.interrupted:
            raise Interrupted()
        if job.take_skip():
            raise Skipped()
        return tensors

    return on_step_end


def _preview(model: "LoadedModel", latents: Any, request: Txt2ImgRequest, job: Job, step: int) -> None:
    try:
        job.show_preview(previewer_for(model)(latents, request.height, request.width), step)
    except Exception as exc:  # noqa: BLE001 - a preview must never stop a generation
        log.warning("live preview failed, turning it off for this job: %s", exc)
        job.preview_step = -1


def fit_prompt(model: "LoadedModel", text: str, what: str, warnings: list[str], steps: int = 20) -> str:
    """Warn when the text encoder will not read the whole prompt, rather than cut it silently (SD
    1.x/2.x and SDXL read long prompts in chunks of 75 tokens: conditioning.py), and when it reads no
    weights or BREAK (SD3, PixArt, Flux: the text is encoded without that syntax). The tokens counted
    are those of each text the prompt's schedule gives, without the weight syntax."""
    tokenizer = getattr(model.pipeline, "tokenizer", None)
    if not text or chunked_families(model.pipeline):
        return text
    texts = dict.fromkeys(t for _, t in PromptTree(text).schedule(steps))
    plain = [plain_text(t) for t in texts]
    label = FAMILIES.get(model.family, type(model.pipeline).__name__)
    if any(weighted for _, weighted, _ in plain):
        warnings.append(f"{label} ignores prompt weights (its text encoders read no emphasis): the {what} was "
                        f"encoded without them, as {plain[-1][0][:200]!r}")
    if any(breaks for _, _, breaks in plain):
        warnings.append(f"{label} ignores BREAK (it reads the {what} in one piece, not in chunks)")
    if tokenizer is None:
        return text
    limit = tokenizer.model_max_length
    longest = max((p for p, _, _ in plain), key=lambda t: len(tokenizer(t, truncation=False)["input_ids"]))
    ids = tokenizer(longest, truncation=False, add_special_tokens=True)["input_ids"]
    if len(ids) > limit:
        # The pipeline's tokenizer cuts the same way; the infotext keeps the whole prompt.
        dropped = tokenizer.decode(ids[limit - 1 : -1], skip_special_tokens=True)
        warnings.append(
            f"The {what} is {len(ids) - 2} tokens long and this model reads {limit - 2}; "
            f"this part was ignored: {dropped[:200]!r}"
        )
    return text


def common_infotext(request: Txt2ImgRequest, model: "LoadedModel", sampler: str, schedule: str, seed: int) -> dict[str, object]:
    """The parameters every denoising task writes, in AUTOMATIC1111's order."""
    return {
        "Steps": request.steps,
        "Sampler": sampler,
        "Schedule type": None if schedule == "Automatic" else schedule,
        "CFG scale": request.cfg_scale,
        "Seed": seed,
        "Size": f"{request.width}x{request.height}",
        "Model hash": model.short_hash,
        "Model": model.name,
    }


def version_param() -> dict[str, object]:
    from webui import __version__

    return {"Version": f"Kiri v{__version__}"}
