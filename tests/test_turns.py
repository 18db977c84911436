"""Fair turns across the browser and the API: a user's single image, asked for while another user's
10-image job runs, comes back before that job ends (two gradio_client sessions and a plain HTTP
client against the real server)."""

from __future__ import annotations

import time

import requests
from gradio_client import Client


def _args(**changes):
    args = dict(prompt="a circle", negative_prompt="", sampler_name="Euler", scheduler="Automatic", steps=4,
                cfg_scale=5.0, seed=7, width=64, height=64, batch_size=1, batch_count=1, clip_skip=1)
    args.update(changes)
    return args


def _wait_for_bulk(engine, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in engine.jobs.active():
            if job.batch_count == 10 and job.images_done >= 1:
                return job
        time.sleep(0.02)
    raise AssertionError("the 10-image job did not start")


def test_browser_users_and_an_api_client_take_turns(kiri_server):
    engine = kiri_server["engine"]
    bulk_user, quick_user = Client(kiri_server["url"], verbose=False), Client(kiri_server["url"], verbose=False)
    bulk = bulk_user.submit(**_args(batch_count=10, steps=8), api_name="/txt2img")
    job = _wait_for_bulk(engine)
    assert job.owner.startswith(("user:", "")) and not job.owner.startswith("api:")

    # Another browser session: its single image comes back while the 10-image job still runs.
    gallery, _, status = quick_user.predict(**_args(seed=8), api_name="/txt2img")
    assert len(gallery) == 1 and "1 image(s)" in status
    done_then = job.images_done
    assert done_then < 10, "the single image waited for the whole 10-image job"

    # An API client, likewise.
    response = requests.post(kiri_server["url"] + "sdapi/v1/txt2img", timeout=120, json={
        "prompt": "a square", "steps": 4, "width": 64, "height": 64, "sampler_name": "Euler", "seed": 9})
    assert response.status_code == 200 and len(response.json()["images"]) == 1
    assert job.images_done < 10 and not job.finished, "the API image waited for the whole 10-image job"

    gallery, _, status = bulk.result(timeout=300)
    assert len(gallery) == 10 and "10 image(s)" in status


def test_api_routes_answer_the_instant_the_port_does(tmp_path):
    """The /sdapi/v1 routes are in place before the server listens: a client that polls the port and
    calls the API at once never sees a 404."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen([sys.executable, str(root / "launch.py"), "--port", str(port), "--no-preload",
                                "--models-dir", str(tmp_path / "no-models"), "--outputs-dir", str(tmp_path / "out"),
                                "--settings-file", str(tmp_path / "settings.json"), "--extensions-dir", str(tmp_path / "ext")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    try:
        deadline = time.monotonic() + 120
        answered = None
        while time.monotonic() < deadline and answered is None:
            try:
                answered = requests.get(f"http://127.0.0.1:{port}/sdapi/v1/samplers", timeout=5)
            except requests.ConnectionError:
                time.sleep(0.005)
        assert answered is not None, "the server never answered"
        assert answered.status_code == 200 and any(s["name"] == "Euler" for s in answered.json())
    finally:
        process.terminate()
        process.wait(30)


def test_a_checkpoint_switch_during_another_job_sticks(kiri_server):
    """POST /options sd_model_checkpoint while another user's job runs on another model: that job keeps
    its model for every batch, and the switch is not undone by its next batch."""
    import threading

    engine = kiri_server["engine"]
    base = kiri_server["url"] + "sdapi/v1"
    assert requests.post(base + "/options", json={"sd_model_checkpoint": "tiny-sd"}, timeout=120).status_code == 200
    answers = {}

    def long_job():
        answers["long"] = requests.post(base + "/txt2img", timeout=300, auth=None, json={
            "prompt": "a circle", "steps": 6, "width": 64, "height": 64, "n_iter": 6, "seed": 1,
            "override_settings": {"sd_model_checkpoint": "tiny-sd"}})

    worker = threading.Thread(target=long_job)
    worker.start()
    deadline = time.monotonic() + 60
    while not any(j.batch_count == 6 and j.images_done >= 1 for j in engine.jobs.active()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # Another user's switch (the engine call behind POST /options; over HTTP this client would be the
    # job's own owner and simply wait its turn): it takes a turn between two batches of the job.
    engine.load_model("tiny-sd3", owner="api:another-client")
    assert not answers, "the switch waited for the whole job"
    worker.join(300)
    info = answers["long"].json()["info"]
    assert '"sd_model_name": "tiny-sd"' in info and len(answers["long"].json()["images"]) == 6
    assert requests.get(base + "/options", timeout=30).json()["sd_model_checkpoint"].startswith("tiny-sd3")
    after = requests.post(base + "/txt2img", timeout=120, json={"prompt": "a dot", "steps": 2, "width": 64, "height": 64})
    assert '"sd_model_name": "tiny-sd3"' in after.json()["info"]
    requests.post(base + "/options", json={"sd_model_checkpoint": "tiny-sd"}, timeout=120)
