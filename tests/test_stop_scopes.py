"""Skip and Interrupt act on the asking login's running job (every running job for an admin login):
another client's press never empties my queued or running job."""

from __future__ import annotations

import json
import threading
import time

import pytest

USERS = [("u1", "p"), ("u2", "p"), ("u3", "p"), ("boss", "p")]


@pytest.fixture(scope="module")
def served(models_dir, tmp_path_factory):
    from conftest import make_api_app
    from webui.auth import make_checker

    app, engine = make_api_app(models_dir, tmp_path_factory.mktemp("stop-outputs"),
                               check_login=make_checker(USERS, {}), admins={"boss"})
    yield app, engine
    engine.interrupt(None)


def client_for(app, user: str):
    from fastapi.testclient import TestClient

    client = TestClient(app)
    client.auth = (user, "p")
    return client


def tiny(steps: int, n_iter: int, seed: int) -> dict:
    return {"prompt": "a red circle", "steps": steps, "n_iter": n_iter, "width": 64, "height": 64,
            "sampler_name": "Euler", "seed": seed}


def post_in_thread(app, user: str, body: dict, results: dict) -> threading.Thread:
    def call():
        try:
            results[user] = client_for(app, user).post("/sdapi/v1/txt2img", json=body)
        except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost in the thread
            results[user] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def wait_for(condition, what: str, results: dict, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        assert not any(isinstance(r, BaseException) for r in results.values()), results
        time.sleep(0.02)


def running(engine, user: str) -> bool:
    return any(j.owner == f"user:{user}" and j.step > 0 for j in engine.jobs.active())


def test_a_third_clients_skip_and_interrupt_leave_others_jobs_whole(served):
    app, engine = served
    results: dict = {}
    first = post_in_thread(app, "u1", tiny(steps=6, n_iter=2, seed=1), results)
    wait_for(lambda: running(engine, "u1"), "u1's job to run", results)
    second = post_in_thread(app, "u2", tiny(steps=2, n_iter=1, seed=2), results)
    wait_for(lambda: any(j.owner == "user:u2" for j in engine.jobs.queued() + engine.jobs.active()), "u2's job", results)

    presser = client_for(app, "u3")
    assert presser.post("/sdapi/v1/skip").status_code == 200
    assert presser.post("/sdapi/v1/interrupt").status_code == 200
    first.join(300)
    second.join(300)

    for user, images in (("u1", 2), ("u2", 1)):
        response = results[user]
        assert response.status_code == 200, response.text
        info = json.loads(response.json()["info"])
        assert len(response.json()["images"]) == images, f"{user} lost images to u3's Skip/Interrupt"
        assert not info["interrupted"] and len(info["all_seeds"]) == images


def test_an_admins_interrupt_stops_another_users_running_job(served):
    app, engine = served
    results: dict = {}
    job = post_in_thread(app, "u1", tiny(steps=20, n_iter=10, seed=3), results)
    wait_for(lambda: running(engine, "u1"), "u1's job to run", results)
    # A normal login's Interrupt does not reach it ...
    assert client_for(app, "u2").post("/sdapi/v1/interrupt").status_code == 200
    assert all(not j.interrupted for j in engine.jobs.active())
    # ... an admin's does.
    assert client_for(app, "boss").post("/sdapi/v1/interrupt").status_code == 200
    job.join(300)
    response = results["u1"]
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["interrupted"] and len(response.json()["images"]) < 10
