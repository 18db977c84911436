"""Jobs as plain data: a job spec runs in another process (webui/worker.py) and streams its events
back; commands act by job id; finished results live on disk, read back by GET /kiri/v1/jobs/{id}."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.specs import JobSpec

USERS = [("u1", "p"), ("u2", "p"), ("boss", "p")]


def tiny(seed: int, **more) -> dict:
    return {"prompt": "a red circle", "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler", "seed": seed,
            "save_images": False, **more}


def file_image(ref: dict) -> Image.Image:
    with Image.open(ref["__file__"]) as image:
        return image.convert("RGB")


def holds_pictures(value, seen=None) -> bool:
    """Whether a PIL image is reachable from `value` (attributes, dicts, lists)."""
    seen = seen if seen is not None else set()
    if id(value) in seen:
        return False
    seen.add(id(value))
    if isinstance(value, Image.Image):
        return True
    if isinstance(value, dict):
        return any(holds_pictures(v, seen) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return any(holds_pictures(v, seen) for v in value)
    if hasattr(value, "__dict__") and not callable(value):
        return any(holds_pictures(v, seen) for k, v in vars(value).items() if k not in ("listeners", "preview_listeners"))
    return False


def test_a_job_spec_round_trips_through_json():
    spec = JobSpec("txt2img", tiny(3, addons={"clip_skip": 2}), owner="user:ann")
    back = JobSpec.from_plain(json.loads(json.dumps(spec.plain())))
    assert back == spec and back.plain() == spec.plain()
    assert set(spec.plain()) == {"id", "kind", "owner", "request"}
    with pytest.raises(InvalidRequest) as caught:
        JobSpec.from_plain({"kind": "txt2img", "requst": {}})
    assert caught.value.field == "spec.requst"
    with pytest.raises(InvalidRequest) as caught:
        JobSpec.from_plain({"request": {}})
    assert caught.value.field == "kind"


@pytest.fixture(scope="module")
def worker(models_dir, tmp_path_factory):
    """One worker process (python -m webui.worker) on the tiny models, shared by the tests below."""
    from webui.worker import RemoteJobs

    outputs = tmp_path_factory.mktemp("worker-outputs")
    settings = {"models_dir": str(models_dir), "outputs_dir": str(outputs), "default_model": "tiny-sd",
                "preview_every": 1}
    remote = RemoteJobs(settings, "cpu", ready_timeout=120)
    yield remote, outputs
    assert remote.close() == 0


def test_a_spec_run_in_a_worker_process_makes_the_same_image_as_in_this_one(worker, engine):
    remote, outputs = worker
    spec = JobSpec("txt2img", tiny(21), owner="remote")
    started = time.monotonic()
    events = list(remote.events(remote.submit(spec), timeout=120))
    took = time.monotonic() - started
    names = [e["event"] for e in events]
    assert names[0] == "queued" and names[1] == "started" and names[-1] == "done", names
    assert "progress" in names and "preview" in names
    json.dumps(events)  # every event is plain data
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["step"] == progress[-1]["steps"] == 3 and {"fraction", "eta_seconds", "batch_no"} <= set(progress[-1])
    preview = next(e for e in events if e["event"] == "preview")
    assert preview["id"] == spec.id and preview["image"]["format"] in ("webp", "png") and preview["step"] >= 1
    with Image.open(io.BytesIO(base64.b64decode(preview["image"]["data"]))) as decoded:
        assert decoded.size == (32, 32)  # the latent-sized live preview of the tiny VAE

    result = events[-1]["result"]
    assert result["seeds"] == [21] and "Seed: 21" in result["infotexts"][0]
    ref = result["images"][0]
    assert set(ref) == {"__file__"} and Path(ref["__file__"]).is_relative_to(outputs / ".jobs" / spec.id)
    remote_image = file_image(ref)

    same = engine.submit_spec(JobSpec("txt2img", tiny(21), owner="local"))
    here = engine.jobs.wait(same, 120)
    assert np.array_equal(np.asarray(remote_image), np.asarray(here.images[0].convert("RGB")))
    print(f"worker run: {took:.1f} s")


def test_an_interrupt_command_by_id_stops_the_job_in_the_worker_keeping_what_it_made(worker):
    remote, _ = worker
    spec = JobSpec("txt2img", tiny(40, n_iter=8, steps=4), owner="remote")
    job_id = remote.submit(spec)
    sent = False
    for event in remote.events(job_id, timeout=120):
        if not sent and event["event"] == "progress" and event["images_done"] >= 1:
            remote.command(job_id, "interrupt")
            sent = True
    assert sent and event["event"] == "done", event
    result = event["result"]
    assert result["interrupted"] and 1 <= len(result["images"]) < 8
    assert result["seeds"] == list(range(40, 40 + len(result["images"])))
    assert all(Path(ref["__file__"]).is_file() for ref in result["images"])


def test_a_bad_spec_fails_in_the_worker_naming_the_field(worker):
    remote, _ = worker
    job_id = remote.submit({"id": "bad-1", "kind": "txt2img", "owner": "remote", "request": {"prompt": "x", "steps": 0}})
    events = list(remote.events(job_id, timeout=30))
    assert events == [{"event": "failed", "id": "bad-1", "status": "failed", "error": events[0]["error"],
                       "error_type": "InvalidRequest", "error_field": "steps"}]


@pytest.fixture()
def served(models_dir, tmp_path):
    from conftest import make_api_app
    from webui.auth import make_checker

    app, engine = make_api_app(models_dir, tmp_path / "outputs", check_login=make_checker(USERS, {}), admins={"boss"})
    yield app, engine, tmp_path / "outputs"
    engine.interrupt(None)


def client_for(app, user: str):
    from fastapi.testclient import TestClient

    client = TestClient(app)
    client.auth = (user, "p")
    return client


def finish(client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (answer := client.get(f"/kiri/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return answer


def test_a_finished_job_keeps_its_result_on_disk_and_the_api_reads_it_back(served):
    app, engine, outputs = served
    events: list[dict] = []
    engine.jobs.subscribe(events.append)
    u1 = client_for(app, "u1")
    job_id = u1.post("/kiri/v1/jobs", json={"kind": "txt2img", "request": tiny(5)}).json()["id"]
    answer = finish(u1, job_id)
    assert answer["status"] == "done", answer

    job = engine.jobs.get(job_id)
    assert job.result is None and job.result_dropped and not holds_pictures(job)
    assert job.spec == {"id": job_id, "kind": "txt2img", "owner": "user:u1", "request": tiny(5)}
    json.dumps(job.snapshot()), json.dumps(job.spec), json.dumps([e for e in events if e["id"] == job_id])
    record = outputs / "u1" / ".jobs" / job_id / "result.json"
    assert Path(job.result_file) == record and record.is_file()

    image = answer["result"]["images"][0]
    with Image.open(io.BytesIO(base64.b64decode(image["__image__"]))) as decoded:
        assert decoded.size == (64, 64) and decoded.format == "PNG"
    assert answer["result"]["seeds"] == [5] and answer["result"]["paths"] == []  # not saved: kept in .jobs only
    assert client_for(app, "u2").get(f"/kiri/v1/jobs/{job_id}").status_code == 404
    done = next(e for e in events if e["id"] == job_id and e["event"] == "done")
    assert done["result"]["images"][0]["__file__"].startswith(str((outputs / "u1" / ".jobs" / job_id).absolute()))


def test_a_caller_waiting_after_the_job_finished_gets_its_result_back_from_disk(served):
    from webui.engine.generation.requests import GenerationResult

    _, engine, _ = served
    job = engine.submit_spec({"kind": "txt2img", "owner": "user:u1", "request": tiny(8)})
    deadline = time.monotonic() + 60
    while not (job.finished and job.result_dropped) and time.monotonic() < deadline:
        time.sleep(0.05)  # the job reads as finished a moment before its result is on disk and dropped
    assert job.finished and job.result is None and job.result_dropped  # nobody was waiting: on disk only
    result = engine.jobs.wait(job, 10)
    assert isinstance(result, GenerationResult) and result.seeds == [8] and result.images[0].size == (64, 64)


def test_a_job_run_by_a_waiting_caller_drops_its_result_once_the_caller_has_it(engine):
    from webui.engine.core.jobs import Job
    from webui.engine.generation.requests import Txt2ImgRequest

    engine.settings.preview_every = 1
    job = Job(kind="txt2img", owner="someone")
    result = engine.txt2img(Txt2ImgRequest(**tiny(9)), job)
    assert result.images[0].size == (64, 64)  # the caller has its pictures...
    assert job.result is None and job.result_dropped and not holds_pictures(job)  # ...the job no longer
    assert job.preview.size == (32, 32)  # the last preview, kept as PNG bytes, still reads as a picture
    assert not (Path(engine.settings.outputs_dir) / ".jobs").exists()  # nothing kept: its caller took it
    assert engine.jobs.result_plain(job) is None


def test_skip_by_job_id_with_the_owner_check(served):
    app, engine, _ = served
    u1, u2, boss = (client_for(app, user) for user in ("u1", "u2", "boss"))
    first = u1.post("/kiri/v1/jobs", json={"kind": "txt2img", "request": tiny(60, n_iter=3)}).json()["id"]
    assert u2.post(f"/kiri/v1/jobs/{first}/skip").status_code == 404  # another login's job is not there for u2
    assert u1.post(f"/kiri/v1/jobs/{first}/skip").status_code == 200  # the first batch (the model loads first)
    result = finish(u1, first)["result"]
    assert result["seeds"] == [61, 62]

    second = u1.post("/kiri/v1/jobs", json={"kind": "txt2img", "request": tiny(70, n_iter=3)}).json()["id"]
    assert boss.post(f"/kiri/v1/jobs/{second}/skip").status_code == 200  # an admin may
    assert finish(u1, second)["result"]["seeds"] == [71, 72]
    assert u1.post("/kiri/v1/jobs/nope/skip").status_code == 404


def test_commands_by_id_refuse_an_unknown_command(served):
    _, engine, _ = served
    with pytest.raises(ValueError):
        engine.jobs.command("any", "pause")
    assert engine.jobs.command("nope", "skip") is None


def test_the_disk_keeps_the_results_of_the_last_finished_jobs_only(tmp_path, monkeypatch):
    import os

    from webui.engine.core import jobs as jobs_module
    from webui.engine.core.jobs import Job, JobStore
    from webui.engine.core.results import ResultArchive

    monkeypatch.setattr(jobs_module, "KEEP_FINISHED", 2)
    stale = tmp_path / ".jobs" / "from-an-earlier-run"
    stale.mkdir(parents=True)
    os.utime(stale, (1, 1))
    store = JobStore(ResultArchive(lambda owner: tmp_path, keep=2))

    def work(n):
        def run(job):
            return {"n": n, "picture": Image.new("RGB", (8, 8), (n, 0, 0))}
            yield  # pragma: no cover
        return run

    made = [store.submit(Job(owner="a", work=work(n))) for n in range(3)]
    while not all(job.finished for job in made) or store.get(made[0].id) is not None:
        time.sleep(0.01)
    kept = sorted(p.name for p in (tmp_path / ".jobs").iterdir())
    assert kept == sorted(job.id for job in made[1:])  # the oldest job and the earlier run's record are gone
    assert store.result_plain(made[2])["n"] == 2 and made[2].result is None
    assert not list((tmp_path / ".jobs").rglob("*.tmp"))  # written whole


def test_plain_data_asks_for_super_resolution_and_segmentation_too(served):
    """POST /kiri/v1/jobs {"kind": "extras" | "segment"}: the Super-resolution and Segmentation tabs' jobs
    as plain data (what a replica is sent), their results read back from the API."""
    from PIL import ImageDraw

    app, _, _ = served
    u1 = client_for(app, "u1")
    picture = Image.new("RGB", (32, 32), (10, 20, 200))
    ImageDraw.Draw(picture).rectangle((8, 8, 20, 20), fill=(240, 240, 20))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    encoded = {"__image__": base64.b64encode(buffer.getvalue()).decode()}
    job_id = u1.post("/kiri/v1/jobs", json={"kind": "extras", "request": {
        "images": [encoded], "upscaler_1": "Lanczos", "scale": 2, "save_images": False}}).json()["id"]
    answer = finish(u1, job_id)
    assert answer["status"] == "done", answer
    with Image.open(io.BytesIO(base64.b64decode(answer["result"]["images"][0]["__image__"]))) as bigger:
        assert bigger.size == (64, 64)
    job_id = u1.post("/kiri/v1/jobs", json={"kind": "segment", "request": {
        "image": encoded, "points": [[12, 12, 1]], "model": "flood-fill"}}).json()["id"]
    answer = finish(u1, job_id)
    assert answer["status"] == "done" and answer["result"]["labels"] == ["flood fill"], answer
    with Image.open(io.BytesIO(base64.b64decode(answer["result"]["masks"][0]["__image__"]))) as mask:
        inside = np.asarray(mask) > 127
    assert inside[12, 12] and not inside[2, 2] and inside.sum() == 13 * 13
    bad = u1.post("/kiri/v1/jobs", json={"kind": "segment", "request": {"image": encoded, "points": [[99, 1, 1]]}})
    assert bad.status_code == 422 and "points" in bad.text


def test_a_piece_of_another_kinds_job_is_not_a_job_a_client_may_ask_for(served):
    """SD upscale tiles and vid2vid frames are job kinds so a dispatcher can send them to a replica
    (engine.submit_spec), but POST /kiri/v1/jobs refuses them, naming the field, and does not list them."""
    app, engine, _ = served
    u1 = client_for(app, "u1")
    for kind in ("sd_upscale_tile", "img2img_part"):
        answer = u1.post("/kiri/v1/jobs", json={"kind": kind, "request": tiny(5)})
        assert answer.status_code == 422, answer.text
        assert "kind" in answer.text and "piece of another kind's job" in answer.text
        assert kind not in engine.request_types() and engine.job_kinds.get(kind) is not None
    assert "img2img" in engine.request_types()
