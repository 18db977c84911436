"""The job store: one worker, fair turns between owners, FIFO within one, nested stages, stop scopes."""

from __future__ import annotations

import threading
import time

import pytest

from webui.engine.core.jobs import DONE, Job, JobStore
from webui.engine.generation.jobs import img2img_task, stage


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
        first = yield from stage(engine, Txt2ImgTask(Txt2ImgRequest("a circle", steps=2, width=64, height=64, seed=1)), job)
        upscaled = first.images[0].resize((128, 128))
        request = Img2ImgRequest("a circle", steps=4, width=128, height=128, seed=1, init_image=upscaled,
                                 denoising_strength=0.5)
        second = yield from stage(engine, img2img_task(engine, request, []), job)
        nested = engine.txt2img(Txt2ImgRequest("a dot", steps=1, width=64, height=64, seed=2))  # blocking call, inline
        return first, second, nested

    first, second, nested = engine.run("someone", "hires", hires)
    assert first.images[0].size == (64, 64) and second.images[0].size == (128, 128) and len(nested.images) == 1
    assert "Denoising strength: 0.5" in second.infotexts[0]


def test_requests_and_results_go_through_plain_data(engine):
    """What a worker in another process would receive and send back: JSON only."""
    import json

    from PIL import Image

    from webui.engine.core.plain import dump, load
    from webui.engine.generation.img2img import Img2ImgRequest
    from webui.engine.generation.requests import GenerationResult, Txt2ImgRequest

    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    request = Img2ImgRequest("a circle", steps=3, width=64, height=64, seed=3, init_image=Image.new("RGB", (64, 64), "red"),
                             mask=mask, addons={"clip_skip": 2})
    wire = json.loads(json.dumps(dump(request)))
    back = load(Img2ImgRequest, wire)
    assert back.addons == {"clip_skip": 2} and back.seed == 3
    assert list(back.mask.getdata()) == list(mask.getdata()) and back.init_image.getpixel((0, 0)) == (255, 0, 0)

    job = engine.submit_plain("txt2img", dump(Txt2ImgRequest("a dot", steps=2, width=64, height=64, seed=5)), "remote")
    result = engine.jobs.wait(job, 120)
    events = json.loads(json.dumps(job.snapshot()))
    assert events["status"] == "done" and events["images_done"] == 1
    returned = load(GenerationResult, json.loads(json.dumps(dump(result))))
    assert returned.seeds == [5] and returned.images[0].size == (64, 64)
    assert all(str(p) == str(q) for p, q in zip(returned.paths, result.paths))


def test_kiri_jobs_api_queues_and_returns_a_result(kiri_server):
    import base64
    import io

    import requests
    from PIL import Image

    base = kiri_server["url"] + "kiri/v1"
    bad = requests.post(base + "/jobs", json={"kind": "paint", "request": {}})
    assert bad.status_code == 422 and "kind" in bad.text
    missing = requests.post(base + "/jobs", json={"kind": "txt2img", "request": {"prompt": "x", "steps": 0}})
    assert missing.status_code == 422 and "steps" in missing.text
    queued = requests.post(base + "/jobs", json={"kind": "txt2img", "request": {
        "prompt": "a circle", "steps": 2, "width": 64, "height": 64, "seed": 11, "addons": {"clip_skip": 2}}})
    assert queued.status_code == 200, queued.text
    job_id = queued.json()["id"]
    deadline = time.monotonic() + 120
    while (answer := requests.get(f"{base}/jobs/{job_id}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert answer["status"] == "done", answer
    result = answer["result"]
    assert result["seeds"] == [11] and "Clip skip: 2" in result["infotexts"][0]
    image = Image.open(io.BytesIO(base64.b64decode(result["images"][0]["__image__"])))
    assert image.size == (64, 64)
    assert requests.get(f"{base}/jobs/nope").status_code == 404
    assert "clip_skip" in requests.get(base + "/addons").json()
    assert "checkpoint" in requests.get(base + "/models").json()


@pytest.mark.parametrize("kind, body, key, hint", [
    ("txt2img", {"prompt": "x", "stepz": 5}, "request.stepz", "did you mean steps?"),
    ("img2img", {"prompt": "x", "denoise": 0.5}, "request.denoise", "img2img"),
    ("txt2video", {"prompt": "x", "frame": 2}, "request.frame", "did you mean frames?"),
    ("vid2vid", {"video": "AAAA", "prompt": "x", "every_n": 2}, "request.every_n", "vid2vid"),
    ("interpolate", {"video": "AAAA", "fator": 2}, "request.fator", "did you mean factor?"),
])
def test_an_unknown_key_in_a_plain_request_is_refused_naming_it(engine, kind, body, key, hint):
    from webui.engine.core.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as caught:
        engine.submit_plain(kind, body, "tester")
    assert caught.value.field == key and hint in str(caught.value) and kind in str(caught.value)


def test_kiri_jobs_route_answers_an_unknown_request_key_with_a_422_naming_it(models_dir, tmp_path):
    from fastapi.testclient import TestClient

    from conftest import make_api_app

    app, engine = make_api_app(models_dir, tmp_path / "outputs")
    reply = TestClient(app).post("/kiri/v1/jobs", json={"kind": "txt2img", "request": {"prompt": "x", "stepz": 5}})
    assert reply.status_code == 422, reply.text
    detail = reply.json()["detail"][0]
    assert detail["loc"][-1] == "request.stepz" and "did you mean steps?" in detail["msg"]
