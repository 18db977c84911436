"""Cross-request batching (generation/batching.py, the seam in core/jobs.py): waiting txt2img jobs of
different owners with the same settings run as one batch, each with its own result, files and stop
buttons; others keep today's path and their turns."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from webui.engine.core.jobs import Job
from webui.engine.core.owners import LOGIN
from webui.engine.generation.requests import Txt2ImgRequest


def _request(**changes) -> Txt2ImgRequest:
    fields = dict(prompt="a red circle", steps=2, width=64, height=64, seed=1, sampler_name="Euler", model="tiny-sd",
                  save_images=False)
    fields.update(changes)
    return Txt2ImgRequest(**fields)


def _hold(engine) -> threading.Event:
    """A job of its own owner that holds the worker until released, so the jobs submitted meanwhile wait together."""
    release, started = threading.Event(), threading.Event()

    def work(job):
        started.set()
        release.wait(30)
        return None
        yield  # noqa: unreachable - a generator

    engine.submit(work, Job(kind="hold", owner="holder"))
    assert started.wait(30)
    return release


def _submit(engine, owner: str, request: Txt2ImgRequest) -> Job:
    request, work = engine._work_for("txt2img", request)
    return engine.submit(work, Job(kind="txt2img", owner=owner))


def _together(engine, requests: list[tuple[str, Txt2ImgRequest]], events: list | None = None, before=None) -> list[Job]:
    engine.settings.batch_requests = 4
    engine.load_model("tiny-sd")
    if events is not None:
        engine.jobs.subscribe(lambda e: events.append((e.get("event"), e.get("id"))) if e.get("event") in (
            "started", "done", "failed") else None)
    release = _hold(engine)
    jobs = [_submit(engine, owner, request) for owner, request in requests]
    if before is not None:
        before(jobs)
    release.set()
    for job in jobs:
        job.result = engine.jobs.wait(job, 60)  # the store lets go of it once waited for: kept for the test
    return jobs


def _pixels(result) -> list[np.ndarray]:
    return [np.asarray(image) for image in result.images]


def _calls(monkeypatch) -> list[int]:
    """The images each pipeline call makes, in order."""
    from webui.engine.generation import call as call_module

    sizes: list[int] = []
    original = call_module.PipelineCall.run

    def run(self):
        sizes.append(len(self.kwargs.get("generator") or []))
        return original(self)

    monkeypatch.setattr(call_module.PipelineCall, "run", run)
    return sizes


def test_merged_images_are_the_pixels_each_makes_alone(engine, monkeypatch):
    """Merged images match what each request makes alone, up to the last bit of rounding.

    Exact equality depends on the CPU: on some, the UNet and VAE round differently on a batch of N
    than on a batch of one (1/255 in a few pixels), on others they do not (CI saw both). That is why
    batch_requests is off by default; what must hold everywhere is that a merged picture is the same
    picture, never a neighbour's seed or a shifted one.
    """
    sizes = _calls(monkeypatch)
    jobs = _together(engine, [("a", _request(seed=1)), ("b", _request(seed=2, batch_size=2))])
    assert sizes == [3], "the two jobs did not run as one call"
    merged = [_pixels(job.result) for job in jobs]
    engine.settings.batch_requests = 1
    alone = [_pixels(engine.txt2img(_request(seed=1))), _pixels(engine.txt2img(_request(seed=2, batch_size=2)))]
    assert sizes[1:] == [1, 2]
    for got, want in zip(merged, alone):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            diff = np.abs(g.astype(int) - w)
            assert diff.max() <= 1, f"a merged image differs from alone by more than rounding: max {diff.max()}"
            assert (diff > 0).mean() < 0.05, f"{(diff > 0).mean():.1%} of the values differ: not rounding"
    # the images of one request differ from each other (seeds 2 and 3), so the bound above has teeth
    assert np.abs(alone[1][0].astype(int) - alone[1][1]).max() > 8


def test_each_owner_gets_only_its_own_result_and_files(engine, monkeypatch):
    sizes = _calls(monkeypatch)
    alice, bob = f"{LOGIN}alice", f"{LOGIN}bob"
    jobs = _together(engine, [(alice, _request(seed=11, save_images=True)), (bob, _request(seed=22, save_images=True))])
    assert sizes == [2]
    outputs = Path(engine.settings.outputs_dir)
    for job, seed, login, other in ((jobs[0], 11, "alice", "bob"), (jobs[1], 22, "bob", "alice")):
        result = job.result
        assert result.seeds == [seed] and len(result.images) == 1 and f"Seed: {seed}" in result.infotexts[0]
        assert job.images_done == 1 and job.step == 2 and job.status == "done"
        path = Path(result.paths[0]).resolve()
        assert path.is_relative_to((outputs / login).resolve()) and not path.is_relative_to((outputs / other).resolve())
        assert len(list((outputs / login).rglob("*.png"))) == 1


@pytest.mark.parametrize("change", [dict(steps=3), dict(width=72), dict(sampler_name="DDIM"), dict(model="tiny-sd-single"),
                                    dict(prompt="a blue square"), dict(n_iter=2)])
def test_different_requests_are_not_merged(engine, monkeypatch, change):
    sizes = _calls(monkeypatch)
    jobs = _together(engine, [("a", _request()), ("b", _request(**change))])
    assert all(job.status == "done" for job in jobs)
    assert max(sizes) == 1 and len(sizes) == 2 + (1 if change.get("n_iter") else 0)


def test_a_third_user_waits_one_turn_at_most(engine, monkeypatch):
    sizes = _calls(monkeypatch)
    events: list = []
    jobs = _together(engine, [("a", _request(seed=1)), ("b", _request(seed=2)), ("c", _request(steps=3))], events)
    a, b, c = (job.id for job in jobs)
    assert sizes == [2, 1]
    order = [e for e in events if e[1] in (a, b, c)]
    # The group's setup turn, then c's setup turn, before the group's batch: c is not held back by it.
    assert order.index(("started", c)) < order.index(("done", a))
    assert order.index(("done", a)) < order.index(("done", c)) and order.index(("done", b)) < order.index(("done", c))


def test_interrupting_one_job_keeps_the_others_images(engine, monkeypatch):
    sizes = _calls(monkeypatch)

    def interrupt_first(jobs):
        jobs[0].listeners.append(lambda job: job.interrupt() if job.step >= 1 else None)

    jobs = _together(engine, [("a", _request(seed=1, steps=3)), ("b", _request(seed=2, steps=3))],
                     before=interrupt_first)
    assert sizes == [2]
    stopped, kept = jobs[0].result, jobs[1].result
    assert stopped.interrupted and stopped.images == []
    assert not kept.interrupted and len(kept.images) == 1 and jobs[1].step == 3
    engine.settings.batch_requests = 1
    alone = _pixels(engine.txt2img(_request(seed=2, steps=3)))[0]
    assert np.abs(_pixels(kept)[0].astype(int) - alone).max() <= 1  # the same image (but the last bits: see above)


def test_a_request_that_arrives_while_another_sets_up_joins_its_batch(engine, monkeypatch):
    from webui.engine.generation import batching

    sizes = _calls(monkeypatch)
    engine.settings.batch_requests = 4
    engine.load_model("tiny-sd")
    late: list[Job] = []
    original = batching.setup

    def setup(engine_, task, job, stack):
        if not late:  # the first job sets up: another user's request comes in meanwhile
            late.append(_submit(engine, "b", _request(seed=2)))
        return original(engine_, task, job, stack)

    monkeypatch.setattr(batching, "setup", setup)
    first = _submit(engine, "a", _request(seed=1))
    results = [engine.jobs.wait(first, 60), engine.jobs.wait(late[0], 60)]
    assert sizes == [2] and [r.seeds for r in results] == [[1], [2]]


def test_an_error_fails_only_its_own_job(engine, monkeypatch):
    from webui.engine.core.errors import InvalidRequest
    from webui.engine.generation import batching

    sizes = _calls(monkeypatch)
    original = batching.setup

    def setup(engine_, task, job, stack):
        if job.owner == "b":
            raise InvalidRequest("prompt", "b's own error")
        return original(engine_, task, job, stack)

    monkeypatch.setattr(batching, "setup", setup)
    engine.settings.batch_requests = 4
    engine.load_model("tiny-sd")
    release = _hold(engine)
    a, b = _submit(engine, "a", _request(seed=1)), _submit(engine, "b", _request(seed=2))
    release.set()
    assert engine.jobs.wait(a, 60).seeds == [1]
    with pytest.raises(InvalidRequest, match="b's own error"):
        engine.jobs.wait(b, 60)
    assert b.status == "failed" and a.status == "done" and sizes == [1]
