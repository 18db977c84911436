"""Nothing of one login reaches another: jobs, progress, live previews and output files, over HTTP
and in the browser, on a served Kiri with two logins and an admin (issue 23)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests

USERS = [("alice", "a-pass"), ("bob", "b-pass"), ("boss", "c-pass")]
PASSWORDS = dict(USERS)


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    from conftest import serve_kiri
    from webui.auth import make_checker

    check = make_checker(USERS, {})
    yield from serve_kiri(models_dir, tmp_path_factory, "login-outputs", ui_login=check, api_login=check, admins={"boss"})


def api(server, user: str) -> requests.Session:
    session = requests.Session()
    session.auth = (user, PASSWORDS[user])
    return session


def browser_session(server, user: str) -> requests.Session:
    """A logged-in Gradio session (its cookie), as a browser holds it."""
    session = requests.Session()
    answer = session.post(server["url"] + "login", data={"username": user, "password": PASSWORDS[user]}, timeout=30)
    assert answer.status_code == 200, answer.text
    return session


def submit(server, user: str, **fields) -> str:
    request = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 7, **fields}
    answer = api(server, user).post(server["url"] + "kiri/v1/jobs", json={"kind": "txt2img", "request": request}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def wait_done(server, user: str, job_id: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answer = api(server, user).get(server["url"] + f"kiri/v1/jobs/{job_id}", timeout=30).json()
        if answer["status"] in ("done", "failed"):
            return answer
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture(scope="module")
def alices_job(server):
    job_id = submit(server, "alice")
    answer = wait_done(server, "alice", job_id)
    assert answer["status"] == "done", answer
    return job_id, [Path(p) for p in answer["result"]["paths"]]


def file_url(server, path: Path | str) -> str:
    return f"{server['url']}gradio_api/file={path}"


def test_a_job_is_seen_only_by_its_login_and_the_admin(server, alices_job):
    job_id, _ = alices_job
    url = server["url"] + f"kiri/v1/jobs/{job_id}"
    mine = api(server, "alice").get(url, timeout=30)
    assert mine.status_code == 200 and mine.json()["result"]["images"], mine.text
    theirs = api(server, "bob").get(url, timeout=30)
    assert theirs.status_code == 404 and "images" not in theirs.text
    assert api(server, "boss").get(url, timeout=30).json()["result"]["images"]

    listed = {user: [j["id"] for j in api(server, user).get(server["url"] + "kiri/v1/jobs", timeout=30).json()]
              for user in ("alice", "bob", "boss")}
    assert job_id in listed["alice"] and job_id in listed["boss"] and job_id not in listed["bob"]

    stop = api(server, "bob").post(url + "/interrupt", timeout=30)
    assert stop.status_code == 404


def test_outputs_are_written_per_login(server, alices_job):
    _, paths = alices_job
    outputs = Path(server["outputs"]).resolve()
    assert paths and all(p.resolve().relative_to(outputs).parts[0] == "alice" for p in paths), paths
    bobs = submit(server, "bob", seed=8)
    bob_paths = [Path(p) for p in wait_done(server, "bob", bobs)["result"]["paths"]]
    assert all(p.resolve().relative_to(outputs).parts[0] == "bob" for p in bob_paths), bob_paths


def test_the_file_route_serves_an_output_only_to_its_login_and_the_admin(server, alices_job):
    _, paths = alices_job
    url = file_url(server, paths[0])
    assert browser_session(server, "alice").get(url, timeout=30).content[:4] == b"\x89PNG"
    assert browser_session(server, "boss").get(url, timeout=30).content[:4] == b"\x89PNG"
    refused = browser_session(server, "bob").get(url, timeout=30)
    assert refused.status_code == 403 and b"PNG" not in refused.content[:8]
    assert requests.get(url, timeout=30).status_code in (401, 403)  # no login at all
    # The same file by another spelling of its path, and through a link in bob's own folder.
    bob = browser_session(server, "bob")
    bob_folder = Path(server["outputs"]) / "bob"
    bob_folder.mkdir(exist_ok=True)
    dotted = f"{bob_folder}/../{paths[0].resolve().relative_to(Path(server['outputs']).resolve())}"
    assert bob.get(file_url(server, dotted), timeout=30).status_code == 403
    link = bob_folder / "alices.png"
    os.symlink(paths[0].resolve(), link)
    try:
        assert bob.get(file_url(server, link), timeout=30).status_code == 403
    finally:
        link.unlink()


def test_progress_and_live_previews_show_only_the_askers_job(server):
    engine = server["engine"]
    engine.settings.preview_every = 1
    job_id = submit(server, "alice", steps=150, n_iter=4)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, "alice's job never showed a preview"
            mine = api(server, "alice").get(server["url"] + "sdapi/v1/progress", timeout=30).json()
            if mine["current_image"] and mine["state"]["sampling_step"] > 0:
                break
            time.sleep(0.05)
        theirs = api(server, "bob").get(server["url"] + "sdapi/v1/progress", timeout=30).json()
        admin = api(server, "boss").get(server["url"] + "sdapi/v1/progress", timeout=30).json()
        assert engine.jobs.get(job_id).status == "running"  # still running while bob and the admin asked
        assert theirs["current_image"] is None and theirs["state"]["job"] == "" and theirs["progress"] == 0.0
        assert theirs["state"]["sampling_steps"] == 0 and theirs["state"]["job_count"] == 0 and theirs["textinfo"] is None
        assert admin["state"]["job"] == "txt2img" and admin["state"]["sampling_steps"] == 150
        # bob's interrupt leaves alice's job running
        assert api(server, "bob").post(server["url"] + "sdapi/v1/interrupt", timeout=30).status_code == 200
        assert not engine.jobs.get(job_id).interrupted
    finally:
        engine.settings.preview_every = 5
        api(server, "alice").post(server["url"] + f"kiri/v1/jobs/{job_id}/interrupt", timeout=30)
        wait_done(server, "alice", job_id)


def login_page(browser, server, user: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(server["url"])
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(PASSWORDS[user])
    page.get_by_role("button", name="Login").click()
    page.locator("#txt2img-generate").wait_for(timeout=60_000)
    return context, page


def test_in_the_browser_a_login_sees_only_its_own_outputs(server, browser, tmp_path):
    alice, page = login_page(browser, server, "alice")
    page.get_by_label("Prompt", exact=True).fill("a blue square")
    page.locator("#txt2img-generate").click()
    page.wait_for_function("document.querySelector('#txt2img-infotext textarea').value.includes('Seed:')",
                           timeout=120_000)
    assert page.locator("#txt2img-gallery img").first.is_visible()
    saved = sorted((Path(server["outputs"]) / "alice").rglob("*.png"), key=lambda p: p.stat().st_mtime)
    assert saved, "the browser's image was not saved in alice's outputs folder"
    url = file_url(server, saved[-1])
    assert alice.request.get(url).status == 200
    page.screenshot(path=str(tmp_path / "alice.png"))

    bob, bob_page = login_page(browser, server, "bob")
    assert bob.request.get(url).status == 403
    boss, _ = login_page(browser, server, "boss")
    assert boss.request.get(url).status == 200
    for context in (alice, bob, boss):
        context.close()
