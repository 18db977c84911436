"""Cross-request batching: txt2img jobs of different users that ask for the same picture settings run
as one batch (one pipeline call), each keeping its own seeds, progress, result, files and stop buttons.

The job store decides *when* jobs are merged (core/jobs.py: the waiting first jobs of other owners
whose work has an equal `batch_key`, at most `Settings.batch_requests`); this module says *which*
can be and *how* they run:

- `Txt2ImgWork.batch_key`: everything of the request that reaches the pipeline call, except the
  seed and batch size (the model resolved now, size, sampler, schedule, steps, CFG, prompts,
  add-ons...); None (never merged) for several batches (n_iter > 1) or a request a variant serves
  (hires fix: that variant's work is not this class).
- `run_together`: each job's setup (its own add-on session, checks, outputs folder; jobs that joined
  while the first set up, in the batch's turn), then one call
  with every job's generators in order. Jobs whose setups differ after all (another sampler,
  per-image prompts from wildcards) or a merged call that fails run their batch alone instead, so
  an error fails only its own job. The step callback gives each job its own slice of the latents:
  its progress, previews, NaN check, Interrupt and Skip. A job interrupted or skipped mid-call is
  dropped from the rest of the call's callbacks and gets no pictures (the others' go on); the call
  stops early only when every job of it has stopped.

With `Settings.batch_wait_ms`, a group whose worker would otherwise idle waits that long after its
setup for compatible requests still on their way (dynamic batching's queue delay, as Triton's).

Pixels: each image's noise is its own generator's, as alone; on CPU the UNet and VAE on a batch of
N may round differently in the last bits than on a batch of one (up to 1/255 in a few pixels of the
default model), which is why `batch_requests` is 1 (off) unless the operator turns it on.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generator, Hashable

from webui.engine.core.errors import Interrupted, Skipped
from webui.engine.core.jobs import Job, JobGroup
from webui.engine.core.plain import dump
from webui.engine.generation.requests import GenerationResult, Txt2ImgRequest, random_seed
from webui.engine.generation.runner import (Setup, _batches, _generator, _step_callback, call_with_addons, run,
                                            save_batch, setup)
from webui.engine.generation.txt2img import Txt2ImgTask

if TYPE_CHECKING:
    from webui.engine.context import Engine

# What may differ between merged requests: each job's own seeds, image count and where its files go.
_OWN_FIELDS = ("seed", "batch_size", "save_images", "image_format")


@dataclass
class Txt2ImgWork:
    """A txt2img job's work (core/jobs.Batchable): alone `work(job)`, with others `together(jobs)`."""

    engine: "Engine"
    request: Txt2ImgRequest

    def __call__(self, job: Job) -> Generator[None, None, GenerationResult]:
        return run(self.engine, Txt2ImgTask(self.request), job)

    @property
    def batch_key(self) -> Hashable | None:
        request = self.request
        if request.n_iter != 1:
            return None
        fields = {k: v for k, v in dump(request).items() if k not in _OWN_FIELDS}
        fields["model"] = request.model or self.engine.selected_model or self.engine.settings.default_model
        return "txt2img:" + json.dumps(fields, sort_keys=True, default=repr)

    def together(self, group: JobGroup) -> Generator[None, None, dict[str, Any]]:
        return run_together(self.engine, group)


def run_together(engine: "Engine", group: JobGroup) -> Generator[None, None, dict[str, Any]]:
    """The turns of one-batch txt2img jobs: the setups (one turn), then one merged batch. Jobs that joined
    the group during the first turn (the job store adds them while it is open) are set up in the second."""
    outcomes: dict[str, Any] = {}
    with ExitStack() as stack:
        setups: list[Setup] = []

        def set_up(jobs: list[Job]) -> None:
            for job in jobs:
                if job.id in outcomes or any(s.job is job for s in setups):
                    continue
                try:
                    setups.append(setup(engine, Txt2ImgTask(job.work.request), job,  # type: ignore[union-attr]
                                        stack.enter_context(ExitStack())))
                except Exception as exc:  # noqa: BLE001 - this job's own error (a bad sampler, a prompt check)
                    outcomes[job.id] = exc

        set_up(list(group.jobs))
        yield  # the setups were one turn
        # Requests sent at the same moment reach the queue a few milliseconds apart: with the worker idle
        # otherwise, wait up to `batch_wait_ms` for them (the job store adds them between these turns).
        deadline = time.monotonic() + engine.settings.batch_wait_ms / 1000
        while len(group.jobs) < engine.settings.batch_requests and time.monotonic() < deadline and not _others_wait(
                engine, group):
            time.sleep(0.002)
            yield
        group.open = False  # the batch begins: no more joiners
        set_up(list(group.jobs))
        for s in [s for s in setups if s.job.interrupted]:  # interrupted while it waited: no batch, as alone
            s.result.interrupted = True
            outcomes[s.job.id] = s.result
            setups.remove(s)
        if not setups:
            return outcomes
        seeds = {s.job.id: _seeds(s.task.request) for s in setups}  # a random seed drawn once
        alone = [s for s in setups if not _mergeable(engine, setups[0], s, seeds)]
        merged = [s for s in setups if s not in alone]
        if len(merged) > 1:
            try:
                _merged_batch(engine, merged, seeds, outcomes)
            except (Interrupted, Skipped):
                raise
            except Exception:  # noqa: BLE001 - whose error it is shows when each runs alone
                alone = [s for s in merged if s.job.id not in outcomes] + alone
        else:
            alone = merged + alone
        for s in alone:  # each alone, its error its own
            try:
                yield from _batches(engine, s.task, s.job, s.session, s.result, s.sampler, s.schedule, s.prompt,
                                    s.negative, s.save, s.out_dir)
                outcomes[s.job.id] = s.result
            except Exception as exc:  # noqa: BLE001
                outcomes[s.job.id] = exc
        return outcomes


def _others_wait(engine: "Engine", group: JobGroup) -> bool:
    """Whether jobs outside the group wait for the worker (then the group waits for nobody)."""
    return any(job not in group.jobs for job in engine.jobs.queued())


def _mergeable(engine: "Engine", first: Setup, other: Setup, seeds: dict[str, list[int]]) -> bool:
    """Whether `other` can share `first`'s call: the same model, sampler and schedule as resolved, and
    no per-image prompt (a wildcard drawn from the seed) in either."""
    if (other.result.model_name, other.sampler.name, other.schedule) != (first.result.model_name, first.sampler.name,
                                                                         first.schedule):
        return False
    return all(_plain_prompts(engine, s, seeds[s.job.id]) for s in (first, other))


def _plain_prompts(engine: "Engine", s: Setup, seeds: list[int]) -> bool:
    r = s.task.request
    return not engine.prompt_steps.per_image or all(
        (t.prompt, t.negative_prompt) == (r.prompt, r.negative_prompt)
        for t in (engine.prompt_steps.for_image(engine.settings, r.prompt, r.negative_prompt, seed) for seed in seeds))


def _seeds(request: Txt2ImgRequest) -> list[int]:
    base = request.seed if request.seed != -1 else random_seed()
    return [(base + i) % 2**32 for i in range(request.batch_size)]


def _merged_batch(engine: "Engine", setups: list[Setup], seeds: dict[str, list[int]], outcomes: dict[str, Any]) -> None:
    """One call for every job's images, in order; each job's slice saved to its own outputs."""
    first = setups[0]
    model = engine.models.get(first.result.model_name)
    for s in setups:
        s.session.state(model)
    spans, start = {}, 0
    for s in setups:
        spans[s.job.id] = (start, start + len(seeds[s.job.id]))
        start += len(seeds[s.job.id])
    generators = [_generator(seed) for s in setups for seed in seeds[s.job.id]]
    for s in setups:
        s.job.start_batch(1, s.task.steps_per_batch())
    stopped: dict[str, BaseException] = {}  # job id -> why it left the call (Interrupted, Skipped, NonFiniteImage)
    callbacks = {s.job.id: _step_callback(engine, model, s.task.request, s.job) for s in setups}

    def progress(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        latents = tensors.get("latents")
        for job_id, callback in callbacks.items():
            if job_id in stopped:
                continue
            a, b = spans[job_id]
            try:
                callback(pipe, step, timestep, {**tensors, "latents": latents[a:b] if latents is not None else None})
            except Exception as exc:  # noqa: BLE001 - Interrupt, Skip or NaN of this job only
                stopped[job_id] = exc
        if len(stopped) == len(callbacks):
            raise Interrupted()  # nobody wants the rest of this call
        return tensors

    scheduler = first.sampler.build(model.base_scheduler_config, first.schedule, model.prediction, generators)
    try:
        call = first.task.call(model, first.prompt, first.negative, [x for s in setups for x in seeds[s.job.id]],
                               generators)
        call.kwargs["num_images_per_prompt"] = len(generators)
        call.components["scheduler"] = scheduler
        try:
            images = first.task.finish(call_with_addons(first.session, model, call, progress))
        except Interrupted:
            if len(stopped) < len(callbacks):
                raise
            images = []
    finally:
        getattr(scheduler, "close", lambda: None)()

    for s in setups:
        job, result = s.job, s.result
        reason = stopped.get(job.id)
        if isinstance(reason, Interrupted):
            result.interrupted = True
        elif isinstance(reason, Skipped):
            job.finish_images(0)
        elif reason is not None:
            outcomes[job.id] = reason
            continue
        else:
            a, b = spans[job.id]
            own = engine.hooks.transform("after_generate", images[a:b], s.task.request)
            job.finish_images(len(own))
            result.warnings.extend(w for w in call.warnings if w not in result.warnings)
            save_batch(engine, s.task, result, model, s.sampler, s.schedule, seeds[job.id], own, [call] * len(own),
                       [_text(s)] * len(own), s.save, s.out_dir)
            if job.interrupted:
                result.interrupted = True
        outcomes[job.id] = result


def _text(s: Setup) -> Any:
    from webui.engine.core.prompt_steps import ImagePrompt

    return ImagePrompt(s.task.request.prompt, s.task.request.negative_prompt)
