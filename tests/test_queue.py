"""The job store: one worker, fair turns between owners, FIFO within one, nested stages, stop scopes."""

from __future__ import annotations

import threading
import time

import pytest

from webui.engine.core.jobs import DONE, Job, JobStore


def _steps(label: str, turns: int, order: list[str], inside: list[str], hold: threading.Event | None = None):
    def work(job: Job):
        for turn in range(turns):
            inside.append(label)
            assert len(inside) == 1, "two jobs ran at once"
            order.append(f"{label}.{turn}")
            if hold is not None and turn == 0:
                hold.wait(10)
            inside.remove(label)
            if turn < turns - 1:
                yield
        return label
    return work


def test_one_turn_at_a_time_and_round_robin_between_owners():
    store = JobStore()
    order: list[str] = []
    inside: list[str] = []
    release = threading.Event()
    bulk = store.submit(Job(owner="bulk", work=_steps("bulk", 4, order, inside, release)))
    while not order:
        time.sleep(0.01)
    later_bulk = store.submit(Job(owner="bulk", work=_steps("bulk2", 2, order, inside)))
    single = store.submit(Job(owner="single", work=_steps("single", 1, order, inside)))
    release.set()
    assert store.wait(bulk, 10) == "bulk" and store.wait(single, 10) == "single" and store.wait(later_bulk, 10) == "bulk2"
    # The single job is served right after the turn that was running; one owner's jobs stay in order.
    assert order[:2] == ["bulk.0", "single.0"]
    assert [o for o in order if o.startswith("bulk")] == ["bulk.0", "bulk.1", "bulk.2", "bulk.3", "bulk2.0", "bulk2.1"]


def test_errors_reach_the_caller_and_the_worker_goes_on():
    store = JobStore()

    def broken(job):
        raise ValueError("no")
        yield  # pragma: no cover

    with pytest.raises(ValueError):
        store.run(Job(work=broken))
    assert store.run(Job(work=_steps("fine", 2, [], []))) == "fine"


def test_a_nested_blocking_call_runs_inline_without_deadlock():
    """A hires-fix-shaped job: its second stage calls the store again from the worker thread."""
    store = JobStore()
    seen = []

    def inner(job):
        seen.append(threading.current_thread().name)
        yield
        return 2

    def outer(job):
        first = yield from inner(job)  # a stage inside the job's own turns
        second = store.run(Job(owner=job.owner, work=inner))  # a blocking call made from inside the job
        yield
        return first + second

    assert store.run(Job(work=outer), timeout=10) == 4
    assert set(seen) == {"kiri-worker"}


def test_interrupt_touches_only_started_jobs_of_the_owner():
    store = JobStore()
    progress: list[str] = []

    def long(job):
        for _ in range(50):
            progress.append(job.owner)
            if job.interrupted:
                return "stopped"
            time.sleep(0.02)
            yield
        return "finished"

    a = store.submit(Job(owner="a", work=long))
    while not progress:
        time.sleep(0.01)
    b = store.submit(Job(owner="b", work=long))
    c = store.submit(Job(owner="c", work=_steps("c", 1, [], [])))
    assert store.interrupt("nobody") == 0
    assert store.interrupt("a") == 1
    assert store.wait(a, 10) == "stopped" and not b.interrupted
    assert store.wait(b, 10) == "finished" and store.wait(c, 10) == "c"
    assert a.status == b.status == DONE


def test_engine_serves_another_user_between_batches(engine):
    from webui.engine.generation.requests import Txt2ImgRequest

    engine.load_model("tiny-sd")
    bulk, single = Job(owner="bulk"), Job(owner="single")
    started = threading.Event()
    bulk.listeners.append(lambda j: started.set())
    worker = threading.Thread(target=engine.txt2img, args=(Txt2ImgRequest("a circle", steps=3, n_iter=4, width=64, height=64), bulk))
    worker.start()
    assert started.wait(60)
    engine.txt2img(Txt2ImgRequest("a square", steps=3, width=64, height=64), single)
    done_when_single_finished = bulk.images_done
    worker.join(120)
    assert single.images_done == 1 and bulk.images_done == 4
    assert done_when_single_finished < 3  # served after at most the batch that was running


def test_a_hires_fix_shaped_stage_runs_inside_one_job(engine):
    """txt2img then img2img on its picture, as two stages of one job: no deadlock, one owner's turns."""
    from webui.engine.generation.img2img import Img2ImgRequest
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.generation.txt2img import Txt2ImgTask

    def hires(job):
        first = yield from engine.stage(Txt2ImgTask(Txt2ImgRequest("a circle", steps=2, width=64, height=64, seed=1)), job)
        upscaled = first.images[0].resize((128, 128))
        request = Img2ImgRequest("a circle", steps=4, width=128, height=128, seed=1, init_image=upscaled,
                                 denoising_strength=0.5)
        second = yield from engine.stage(engine.img2img_task(request, []), job)
        nested = engine.txt2img(Txt2ImgRequest("a dot", steps=1, width=64, height=64, seed=2))  # blocking call, inline
        return first, second, nested

    first, second, nested = engine.run("someone", "hires", hires)
    assert first.images[0].size == (64, 64) and second.images[0].size == (128, 128) and len(nested.images) == 1
    assert "Denoising strength: 0.5" in second.infotexts[0]
