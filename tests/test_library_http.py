"""The library over HTTP (issue 29): several logins, each seeing, reproducing and trashing only its own
pictures, bit-for-bit reproduce of txt2img, hires fix, inpaint and LoRA pictures through /kiri/v1/library."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


USERS = [("alice", "a-pass"), ("bob", "b-pass"), ("boss", "c-pass")]


@pytest.fixture(scope="module")
def client(models_dir, tmp_path_factory):
    from fastapi.testclient import TestClient

    from conftest import make_api_app
    from webui.auth import make_checker

    app, engine = make_api_app(models_dir, tmp_path_factory.mktemp("lib-outputs"), check_login=make_checker(USERS, {}),
                               admins={"boss"})
    return TestClient(app)


def generate(client, user: str, **fields) -> dict:
    body = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 11, "save_images": True,
            "override_settings": {"samples_save": True}, **fields}
    answer = client.post("/sdapi/v1/txt2img", json=body, auth=(user, dict(USERS)[user]))
    assert answer.status_code == 200, answer.text
    return answer.json()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_two_logins_over_http_and_reproduce_bit_for_bit(client):
    alice, bob, boss = (("alice", "a-pass"), ("bob", "b-pass"), ("boss", "c-pass"))
    generate(client, "alice", prompt="alice's lighthouse", seed=11)
    generate(client, "bob", prompt="bob's windmill", seed=12)
    mine = client.get("/kiri/v1/library", auth=alice).json()["items"]
    assert [i["prompt"] for i in mine] == ["alice's lighthouse"]
    assert [i["prompt"] for i in client.get("/kiri/v1/library", auth=bob).json()["items"]] == ["bob's windmill"]
    assert client.get("/kiri/v1/library", params={"q": "windmill"}, auth=alice).json()["items"] == []
    assert len(client.get("/kiri/v1/library", auth=boss).json()["items"]) == 2  # the admin sees all
    assert client.get("/kiri/v1/library").status_code == 401
    theirs = client.get("/kiri/v1/library", auth=bob).json()["items"][0]["id"]
    for method, path in (("get", f"/kiri/v1/library/{theirs}"), ("get", f"/kiri/v1/library/{theirs}/file"),
                         ("get", f"/kiri/v1/library/{theirs}/thumbnail"), ("get", f"/kiri/v1/library/{theirs}/reproduce"),
                         ("post", f"/kiri/v1/library/{theirs}/favourite"), ("delete", f"/kiri/v1/library/{theirs}")):
        assert getattr(client, method)(path, auth=alice).status_code == 404, path
    assert client.get(f"/kiri/v1/library/{theirs}/file", auth=bob).status_code == 200
    # search strings are data over HTTP too: never a 500
    for query in ['"unclosed', "NEAR(", "AND OR", "*"]:
        assert client.get("/kiri/v1/library", params={"q": query}, auth=alice).status_code in (200, 422)

    own = mine[0]["id"]
    detail = client.get(f"/kiri/v1/library/{own}", auth=alice).json()
    assert detail["parameters"]["Seed"] == "11" and detail["file"].endswith("/file")
    thumb = client.get(f"/kiri/v1/library/{own}/thumbnail", auth=alice)
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).format == "WEBP"
    assert client.post(f"/kiri/v1/library/{own}/favourite", auth=alice).json()["favourite"] is True
    assert [i["id"] for i in client.get("/kiri/v1/library", params={"favourite": True}, auth=alice).json()["items"]] == [own]

    saved = client.get(f"/kiri/v1/library/{own}/file", auth=alice).content
    made = client.get(f"/kiri/v1/library/{own}/reproduce", auth=alice).json()
    assert made["endpoint"] == "/sdapi/v1/txt2img"
    again = client.post(made["endpoint"], json={**made["body"], "save_images": False}, auth=alice)
    assert again.status_code == 200, again.text
    assert np.array_equal(pixels(base64.b64decode(again.json()["images"][0])), pixels(saved))
    # and it is no accident: another seed gives another picture
    other = client.post(made["endpoint"], json={**made["body"], "seed": 12, "save_images": False}, auth=alice)
    assert not np.array_equal(pixels(base64.b64decode(other.json()["images"][0])), pixels(saved))

    assert client.delete(f"/kiri/v1/library/{own}", auth=alice).status_code == 200
    assert client.get("/kiri/v1/library", auth=alice).json()["items"] == []
    assert client.get("/kiri/v1/library/trash", auth=bob).json()["items"] == []
    (entry,) = client.get("/kiri/v1/library/trash", auth=alice).json()["items"]
    assert client.post(f"/kiri/v1/library/trash/{entry['name']}/restore", auth=bob).status_code == 404
    assert client.post(f"/kiri/v1/library/trash/{entry['name']}/restore", auth=alice).status_code == 200
    assert len(client.get("/kiri/v1/library", auth=alice).json()["items"]) == 1


def test_most_like_over_http_is_owner_checked(client):
    alice, bob = ("alice", "a-pass"), ("bob", "b-pass")
    generate(client, "alice", prompt="alice's first quilt", seed=41)
    generate(client, "alice", prompt="alice's second quilt", seed=42)
    generate(client, "bob", prompt="bob's quilt", seed=43)
    mine = client.get("/kiri/v1/library", params={"q": "quilt"}, auth=alice).json()["items"]
    theirs = client.get("/kiri/v1/library", params={"q": "quilt"}, auth=bob).json()["items"][0]["id"]
    like = client.get("/kiri/v1/library", params={"q": "quilt", "similar_to": mine[0]["id"]}, auth=alice)
    assert like.status_code == 200 and [i["id"] for i in like.json()["items"]] == [mine[1]["id"]]
    assert client.get("/kiri/v1/library", params={"similar_to": theirs}, auth=alice).status_code == 404
    bad = client.get("/kiri/v1/library", params={"similar_to": "the red one"}, auth=alice)
    assert bad.status_code == 422 and "similar_to" in bad.text


def test_reproduce_a_hires_fix_picture_bit_for_bit(client):
    alice = ("alice", "a-pass")
    generate(client, "alice", prompt="a hires harbour", seed=21, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent",
             hr_second_pass_steps=2, denoising_strength=0.6)
    (item,) = client.get("/kiri/v1/library", params={"q": "harbour"}, auth=alice).json()["items"]
    assert (item["width"], item["height"]) == (96, 96)
    made = client.get(f"/kiri/v1/library/{item['id']}/reproduce", auth=alice).json()
    assert made["body"]["enable_hr"] is True and made["body"]["hr_scale"] == 1.5
    # the second pass starts from the first, made again from the prompt: no init image kept or named
    assert "Init image hash" not in client.get(f"/kiri/v1/library/{item['id']}", auth=alice).json()["infotext"]
    again = client.post(made["endpoint"], json={**made["body"], "save_images": False}, auth=alice)
    assert again.status_code == 200, again.text
    saved = client.get(f"/kiri/v1/library/{item['id']}/file", auth=alice).content
    assert np.array_equal(pixels(base64.b64decode(again.json()["images"][0])), pixels(saved))


def test_each_login_lists_restores_and_empties_only_its_own_trash(client):
    alice, bob, boss = ("alice", "a-pass"), ("bob", "b-pass"), ("boss", "c-pass")
    for user, prompt in ((alice, "alice's trashed kite"), (bob, "bob's trashed kite")):
        generate(client, user[0], prompt=prompt, seed=41)
        (item,) = client.get("/kiri/v1/library", params={"q": '"trashed kite"'}, auth=user).json()["items"]
        assert client.delete(f"/kiri/v1/library/{item['id']}", auth=user).status_code == 200

    def trash(user):
        return client.get("/kiri/v1/library/trash", auth=user).json()["items"]

    (mine,), (theirs,) = trash(alice), trash(bob)
    assert mine["name"] != theirs["name"] and {e["name"] for e in trash(boss)} >= {mine["name"], theirs["name"]}
    assert client.get("/kiri/v1/library/trash").status_code == 401
    assert client.post(f"/kiri/v1/library/trash/{mine['name']}/restore", auth=bob).status_code == 404
    # bob empties his trash: alice's picture is still in hers, and comes back
    assert client.delete("/kiri/v1/library/trash", auth=bob).json() == {"removed": 1}
    assert trash(bob) == [] and [e["name"] for e in trash(alice)] == [mine["name"]]
    assert client.post(f"/kiri/v1/library/trash/{theirs['name']}/restore", auth=bob).status_code == 404
    assert client.post(f"/kiri/v1/library/trash/{mine['name']}/restore", auth=alice).status_code == 200
    assert [i["prompt"] for i in client.get("/kiri/v1/library", params={"q": "kite"}, auth=alice).json()["items"]] \
        == ["alice's trashed kite"]
    assert client.delete("/kiri/v1/library/trash", auth=alice).json() == {"removed": 0}


def b64png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_reproduce_an_inpainted_picture_bit_for_bit_from_its_kept_init_image_and_mask(client):
    alice, bob = ("alice", "a-pass"), ("bob", "b-pass")
    rng = np.random.default_rng(3)
    init = Image.fromarray(rng.integers(0, 255, (64, 64, 4), dtype=np.uint8), "RGBA")  # kept as the RGB it is read as
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    answer = client.post("/sdapi/v1/img2img", auth=alice, json={
        "prompt": "an inpainted pond", "steps": 4, "width": 64, "height": 64, "seed": 31, "denoising_strength": 0.6,
        "init_images": [b64png(init)], "mask": b64png(mask), "mask_blur": 2, "inpainting_fill": 1,
        "inpaint_full_res": False, "resize_mode": 1, "save_images": True, "override_settings": {"samples_save": True}})
    assert answer.status_code == 200, answer.text
    assert "Init image hash: " in json.loads(answer.json()["info"])["infotexts"][0]
    (item,) = client.get("/kiri/v1/library", params={"q": "pond"}, auth=alice).json()["items"]
    made = client.get(f"/kiri/v1/library/{item['id']}/reproduce", auth=alice).json()
    assert made["endpoint"] == "/sdapi/v1/img2img" and made["notes"] == []
    assert (made["body"]["resize_mode"], made["body"]["mask_blur"], made["body"]["inpaint_full_res"]) == (1, 2, False)
    again = client.post(made["endpoint"], json={**made["body"], "save_images": False}, auth=alice)
    assert again.status_code == 200, again.text
    saved = client.get(f"/kiri/v1/library/{item['id']}/file", auth=alice).content
    assert np.array_equal(pixels(base64.b64decode(again.json()["images"][0])), pixels(saved))
    # the kept pictures are alice's, in a dot folder the Library does not list; the same init is kept once
    path = Path(client.get(f"/kiri/v1/library/{item['id']}", auth=alice).json()["path"])
    kept = sorted((path.parents[2] / ".inits").glob("*.png"))
    assert path.parents[2].name == "alice" and len(kept) == 2
    assert not any(i["name"].endswith(kept[0].name) for i in client.get("/kiri/v1/library", auth=alice).json()["items"])
    assert client.get(f"/kiri/v1/library/{item['id']}/reproduce", auth=bob).status_code == 404
    # the init image gone: reproduce says so, naming the field, rather than give a body for another picture
    init_hash = json.loads(answer.json()["info"])["infotexts"][0].split("Init image hash: ")[1][:10]
    (init_file,) = [k for k in kept if k.name.startswith(init_hash)]
    init_file.unlink()
    gone = client.get(f"/kiri/v1/library/{item['id']}/reproduce", auth=alice)
    assert gone.status_code == 422 and "init_images" in gone.text and init_hash in gone.text


def test_reproduce_a_lora_picture_bit_for_bit(models_dir, tmp_path):
    """The add-on case: a LoRA named by its tag travels in the prompt; reproduce makes the same picture,
    and the LoRA is really applied (without it the picture is another)."""
    from diffusers import StableDiffusionPipeline
    from fastapi.testclient import TestClient

    import lora_files
    from conftest import make_api_app

    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "tiny-sd").symlink_to(models_dir / "checkpoints" / "tiny-sd")
    sd = StableDiffusionPipeline.from_pretrained(root / "checkpoints" / "tiny-sd", safety_checker=None)
    lora_files.save_kohya(sd, root / "Lora" / "lib-lora.safetensors", seed=3)
    app, _ = make_api_app(root, tmp_path / "outputs")
    client = TestClient(app)
    body = {"prompt": "a fox <lora:lib-lora:1>", "steps": 2, "width": 64, "height": 64, "seed": 31, "save_images": True,
            "override_settings": {"samples_save": True}}
    assert client.post("/sdapi/v1/txt2img", json=body).status_code == 200
    (item,) = client.get("/kiri/v1/library", params={"lora": "lib-lora"}).json()["items"]
    made = client.get(f"/kiri/v1/library/{item['id']}/reproduce").json()
    assert "<lora:lib-lora:1>" in made["body"]["prompt"]
    again = client.post(made["endpoint"], json={**made["body"], "save_images": False})
    assert again.status_code == 200, again.text
    saved = pixels(client.get(f"/kiri/v1/library/{item['id']}/file").content)
    assert np.array_equal(pixels(base64.b64decode(again.json()["images"][0])), saved)
    plain = client.post(made["endpoint"], json={**made["body"], "prompt": "a fox", "save_images": False})
    assert not np.array_equal(pixels(base64.b64decode(plain.json()["images"][0])), saved)
