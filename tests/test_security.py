"""Real HTTP requests against a running Kiri on loopback: files outside outputs/ stay unreachable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests


@pytest.fixture(scope="module")
def served_image(kiri_server) -> Path:
    from webui.engine.generation.requests import Txt2ImgRequest

    result = kiri_server["engine"].txt2img(Txt2ImgRequest("a circle", steps=1, width=64, height=64))
    return result.paths[0]


def file_url(base: str, path: str) -> str:
    return f"{base}gradio_api/file={path}"


def test_outputs_are_served(kiri_server, served_image):
    response = requests.get(file_url(kiri_server["url"], str(served_image)), timeout=30)
    assert response.status_code == 200 and response.content[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "{outputs}/../../../../etc/passwd",
        "{outputs}/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "{outputs}/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "{repo}/launch.py",
        "{models}/checkpoints/tiny-sd/model_index.json",
    ],
)
def test_paths_outside_outputs_are_refused(kiri_server, path, models_dir):
    repo = Path(__file__).resolve().parent.parent
    url = file_url(kiri_server["url"], path.format(outputs=kiri_server["outputs"], repo=repo, models=models_dir))
    response = requests.get(url, timeout=30)
    assert response.status_code in (403, 404), response.status_code
    assert b"root:" not in response.content and b"_class_name" not in response.content


def test_symlink_out_of_outputs_is_refused(kiri_server, served_image, models_dir):
    link = served_image.parent / "sneaky.json"
    target = models_dir / "checkpoints" / "tiny-sd" / "model_index.json"
    os.symlink(target, link)
    try:
        response = requests.get(file_url(kiri_server["url"], str(link)), timeout=30)
        assert response.status_code in (403, 404) and b"_class_name" not in response.content
    finally:
        link.unlink()


def test_small_load_no_lost_or_duplicated_images(kiri_server):
    """8 clients x 5 requests at once: every request answered, every image saved once."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    engine = kiri_server["engine"]
    url = kiri_server["url"] + "sdapi/v1/txt2img"
    before = set(Path(kiri_server["outputs"]).rglob("*.png"))

    def client(number: int) -> list[int]:
        seeds = []
        with requests.Session() as session:
            for request_no in range(5):
                seed = 1000 * number + request_no
                response = session.post(url, json={"prompt": f"client {number}", "seed": seed, "steps": 1,
                                                   "width": 64, "height": 64, "sampler_name": "Euler",
                                                       "save_images": True}, timeout=300)
                assert response.status_code == 200, response.text
                seeds.extend(json.loads(response.json()["info"])["all_seeds"])
        return seeds

    with ThreadPoolExecutor(8) as pool:
        answered = [seed for seeds in pool.map(client, range(8)) for seed in seeds]
    assert sorted(answered) == sorted(1000 * c + r for c in range(8) for r in range(5))
    saved = set(Path(kiri_server["outputs"]).rglob("*.png")) - before
    assert len(saved) == 40
    assert sorted(int(p.stem.split("-")[1]) for p in saved) == sorted(answered)
    assert not engine.jobs.active()
