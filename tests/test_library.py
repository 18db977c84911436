"""The Library (issue 29): index, search and filters on a generated folder, the foreign metadata
formats, bad files, search strings as data, two logins over HTTP, and Reproduce bit for bit."""

from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.infotext import build_infotext
from webui.engine.core.owners import Viewer
from webui.engine.library import Library, NotFound, read_meta, reproduce_body

LOCAL = Viewer("local")


def png(path: Path, texts: dict[str, str] | None = None, size=(8, 8), color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    for key, value in (texts or {}).items():
        info.add_text(key, value)
    Image.new("RGB", size, color).save(path, pnginfo=info)
    return path


def a1111(prompt: str, seed: int, model="tiny-sd", sampler="Euler a", negative="", size="8x8", extra=None) -> dict:
    params = {"Steps": 20, "Sampler": sampler, "CFG scale": 7, "Seed": seed, "Size": size, "Model": model, **(extra or {})}
    return {"parameters": build_infotext(prompt, negative, params)}


def library_of(*roots: Path) -> Library:
    return Library(list(roots), rescan_after=0)


def ids(page: dict) -> list[int]:
    return [item["id"] for item in page["items"]]


@pytest.fixture()
def folder(tmp_path) -> Path:
    out = tmp_path / "outputs"
    png(out / "txt2img" / "2026-01-02" / "00000-1.png", a1111("a red fox in the snow", 1, negative="blurry"))
    png(out / "txt2img" / "2026-01-02" / "00001-2.png", a1111("a blue whale <lora:ocean:0.8>", 2, sampler="DPM++ 2M",
                                                              extra={"Lora hashes": "ocean: abc123"}))
    png(out / "img2img" / "2026-01-03" / "00000-3.png", a1111("a red car", 3, model="other", size="16x8"), size=(16, 8))
    png(out / "extras" / "2026-01-03" / "00000-0.png")  # no metadata: listed by date and size
    for number, name in enumerate(sorted(out.rglob("*.png"))):
        os.utime(name, (1_767_300_000 + number * 100, 1_767_300_000 + number * 100))
    return out


def test_a_picture_saved_just_after_a_scan_is_listed_at_once(folder):
    """The page rescans at most every `rescan_after` seconds, unless a folder changed: an output saved a
    moment after the last scan (the user generates, then opens the library) must not wait for the window."""
    from webui.engine.core.outputs import save_image

    lib = Library([folder], rescan_after=3600)
    lib.refresh(force=True)
    assert lib.refresh() is None  # nothing changed: no scan
    assert lib.search(LOCAL, q="lighthouse")["items"] == []
    save_image(Image.new("RGB", (8, 8)), folder / "txt2img" / "2026-01-02", a1111("a lighthouse", 9)["parameters"], 9)
    assert [i["prompt"] for i in lib.search(LOCAL, q="lighthouse")["items"]] == ["a lighthouse"]
    save_image(Image.new("RGB", (8, 8)), folder / "txt2img" / "2026-12-05", a1111("a new day", 9)["parameters"], 9)
    assert [i["prompt"] for i in lib.search(LOCAL, q="day")["items"]] == ["a new day"]  # a new dated folder too


def test_index_search_and_filters(folder):
    lib = library_of(folder)
    report = lib.refresh(force=True)
    assert report.read == 4 and not report.skipped
    everything = lib.search(LOCAL)
    assert len(everything["items"]) == 4 and everything["next"] is None
    created = [item["created"] for item in everything["items"]]
    assert created == sorted(created, reverse=True)  # newest first
    assert [i["prompt"] for i in lib.search(LOCAL, q="red")["items"]] == ["a red fox in the snow", "a red car"]
    assert [i["prompt"] for i in lib.search(LOCAL, q='"red fox"')["items"]] == ["a red fox in the snow"]
    assert lib.search(LOCAL, q="blurry")["items"][0]["seed"] == 1  # negative prompt searched too
    assert [i["seed"] for i in lib.search(LOCAL, lora="ocean")["items"]] == [2]
    assert [i["seed"] for i in lib.search(LOCAL, model="other")["items"]] == [3]
    assert [i["seed"] for i in lib.search(LOCAL, sampler="DPM++ 2M")["items"]] == [2]
    assert [i["seed"] for i in lib.search(LOCAL, size="16x8")["items"]] == [3]
    assert {i["tab"] for i in lib.search(LOCAL, tab="txt2img")["items"]} == {"txt2img"}
    assert lib.search(LOCAL, date_from="2099-01-01")["items"] == []
    assert len(lib.search(LOCAL, date_from="2000-01-01", date_to="2099-01-01")["items"]) == 4
    with pytest.raises(InvalidRequest) as bad:
        lib.search(LOCAL, date_to="yesterday")
    assert bad.value.field == "date_to"
    # paging by cursor: every picture once, in order
    first = lib.search(LOCAL, limit=3)
    second = lib.search(LOCAL, limit=3, cursor=first["next"])
    assert ids(first) + ids(second) == ids(everything) and second["next"] is None
    # favourites
    fox = lib.search(LOCAL, q="fox")["items"][0]["id"]
    lib.favourite(LOCAL, fox)
    assert ids(lib.search(LOCAL, favourite=True)) == [fox]
    assert lib.choices(LOCAL)["model"] == ["other", "tiny-sd"]


def test_most_like_orders_by_look_keeps_the_filters_and_pages_by_offset(tmp_path):
    """similar_to: the search's pictures ordered by how close their look (8x8 shrink of the thumbnail) is to
    the reference's, the reference left out; the filters still apply; looks missing are taken within the
    search; a file changed in place is looked at again; bad references are 4xx naming the field."""
    from webui.engine.library import _looks

    out = tmp_path / "outputs"
    colours = {"crimson": (220, 20, 30), "scarlet": (200, 40, 40), "maroon": (120, 10, 20), "navy": (20, 30, 120),
               "teal": (20, 140, 140), "lime": (60, 230, 40)}
    for number, (name, colour) in enumerate(colours.items()):
        png(out / "txt2img" / "2026-01-02" / f"{number:05d}-{number}.png", a1111(f"a {name} square", number),
            size=(32, 32), color=colour)
    lib = library_of(out)
    lib.refresh(force=True)
    by_prompt = {i["prompt"]: i["id"] for i in lib.search(LOCAL)["items"]}
    crimson = by_prompt["a crimson square"]
    page = lib.search(LOCAL, similar_to=crimson)
    order = [i["prompt"].split()[1] for i in page["items"]]
    assert order == ["scarlet", "maroon", "navy", "teal", "lime"], order  # squared RGB distances 900 ... 69,800
    assert page["progress"] == "" and page["next"] is None
    # the filters still apply; paging is by offset in that order
    assert [i["prompt"] for i in lib.search(LOCAL, q="teal OR lime OR scarlet", similar_to=crimson)["items"]][0] == \
        "a scarlet square"
    first = lib.search(LOCAL, similar_to=crimson, limit=2)
    rest = lib.search(LOCAL, similar_to=crimson, limit=2, cursor=first["next"])
    assert ids(first) + ids(rest) == ids(page)[:4] and first["next"] == "~2"
    # a file changed in place gets a new look: the lime square turned red comes first
    lime = out / "txt2img" / "2026-01-02" / "00005-5.png"
    png(lime, a1111("a lime square", 5), size=(32, 32), color=(221, 21, 31))
    os.utime(lime, (1_767_400_000, 1_767_400_000))
    lib.refresh(force=True)
    assert lib.search(LOCAL, similar_to=crimson)["items"][0]["prompt"] == "a lime square"
    # looks missing beyond the search's budget: listed as not compared yet, never a wrong order
    lib.index.db().execute("DELETE FROM looks")
    lib.index.db().commit()
    budget, _looks.BUDGET_S = _looks.BUDGET_S, 0.0
    try:
        waiting = lib.search(LOCAL, similar_to=crimson)
    finally:
        _looks.BUDGET_S = budget
    assert waiting["items"] == [] and "5 pictures not compared yet" in waiting["progress"]
    # (5: the reference's own look was taken by that search)
    assert _looks.fill_missing(lib) == 5 and len(lib.search(LOCAL, similar_to=crimson)["items"]) == 5
    for bad, field in ((999_999, "id"), ("3", "similar_to"), (True, "similar_to")):
        with pytest.raises(InvalidRequest) as caught:
            lib.search(LOCAL, similar_to=bad)
        assert caught.value.field == field
    with pytest.raises(InvalidRequest) as caught:
        lib.search(LOCAL, similar_to=crimson, cursor="abc")
    assert caught.value.field == "cursor"


def test_rescan_reads_only_what_changed_and_the_index_can_be_deleted(folder):
    lib = library_of(folder)
    lib.refresh(force=True)
    assert lib.refresh(force=True).read == 0
    new = png(folder / "txt2img" / "2026-01-04" / "00000-9.png", a1111("a green tree", 9))
    (folder / "extras" / "2026-01-03" / "00000-0.png").unlink()
    report = lib.refresh(force=True)
    assert (report.read, report.removed) == (1, 1)
    assert lib.search(LOCAL, q="green")["items"][0]["name"] == new.name
    # the files are the source of truth: a new index from nothing finds them all again
    lib.index.db().close()
    for name in (folder / ".library").glob("index.sqlite3*"):
        name.unlink()
    again = library_of(folder)
    assert again.refresh(force=True).read == 4 and len(again.search(LOCAL)["items"]) == 4


def test_search_strings_are_data(folder):
    lib = library_of(folder)
    lib.refresh(force=True)
    for query in ['"unclosed', "AND", "red AND", "(", "NEAR(", "col:umn", "*", "a OR OR b", "'; DROP TABLE files; --",
                  "prompt:red", "\0", "\ud800"]:
        try:
            page = lib.search(LOCAL, q=query)
        except InvalidRequest as exc:
            assert exc.field == "q"
        else:
            assert isinstance(page["items"], list)
    assert [i["seed"] for i in lib.search(LOCAL, q='red "')["items"]] == [1, 3]  # read again as the words
    with pytest.raises(InvalidRequest):
        lib.search(LOCAL, cursor="not-a-cursor")


def test_the_foreign_formats(tmp_path):
    comfy_prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "dreamshaper_8.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a castle on a hill", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "lowres, watermark", "clip": ["4", 1]}},
        "10": {"class_type": "LoraLoader", "inputs": {"lora_name": "castles.safetensors"}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 25, "cfg": 6.5, "sampler_name": "dpmpp_2m",
                                                   "positive": ["6", 0], "negative": ["7", 0]}},
    }
    workflow_only = {"nodes": [{"id": 1, "type": "CLIPTextEncode", "widgets_values": ["a lighthouse at dusk"]},
                               {"id": 2, "type": "CheckpointLoaderSimple", "widgets_values": ["sdxl.safetensors"]}]}
    invoke = {"positive_prompt": "a robot reading", "negative_prompt": "ugly", "model": {"name": "juggernaut"},
              "seed": 77, "steps": 30, "cfg_scale": 7.5, "scheduler": "euler", "width": 8, "height": 8,
              "loras": [{"model": {"name": "robots"}, "weight": 0.7}]}
    fooocus = {"prompt": "a cat astronaut", "negative_prompt": "text", "base_model": "juggernautXL.safetensors",
               "seed": "123", "sampler": "dpmpp_2m_sde_gpu", "steps": 30, "guidance_scale": 4, "resolution": "(8, 8)",
               "lora_combined_1": "sdxl_offset.safetensors : 0.1"}
    root = tmp_path / "other"
    png(root / "comfy.png", {"prompt": json.dumps(comfy_prompt), "workflow": "{}"})
    png(root / "comfy-workflow.png", {"workflow": json.dumps(workflow_only)})
    png(root / "invoke.png", {"invokeai_metadata": json.dumps(invoke)})
    png(root / "fooocus.png", {"parameters": json.dumps(fooocus)})
    png(root / "bad-json.png", {"prompt": "{not json", "invokeai_metadata": "[1, 2"})

    with Image.open(root / "comfy.png") as image:
        meta = read_meta(image)
    assert (meta.source, meta.prompt, meta.negative, meta.model, meta.seed, meta.sampler, meta.networks) == (
        "comfyui", "a castle on a hill", "lowres, watermark", "dreamshaper_8.safetensors", 42, "dpmpp_2m", ["castles"])
    assert "Steps: 25" in meta.infotext and "Seed: 42" in meta.infotext
    with Image.open(root / "comfy-workflow.png") as image:
        meta = read_meta(image)
    assert (meta.prompt, meta.model) == ("a lighthouse at dusk", "sdxl.safetensors")
    with Image.open(root / "invoke.png") as image:
        meta = read_meta(image)
    assert (meta.source, meta.prompt, meta.negative, meta.model, meta.seed, meta.networks) == (
        "invokeai", "a robot reading", "ugly", "juggernaut", 77, ["robots"])
    with Image.open(root / "fooocus.png") as image:
        meta = read_meta(image)
    assert (meta.source, meta.prompt, meta.model, meta.seed, meta.networks) == (
        "fooocus", "a cat astronaut", "juggernautXL.safetensors", 123, ["sdxl_offset"])
    assert "Size: 8x8" in meta.infotext
    with Image.open(root / "bad-json.png") as image:
        meta = read_meta(image)
    assert meta.source == "none" and "not valid JSON" in meta.note

    # a read-only --library-dir: indexed and searchable, never deleted from
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    lib = library_of(outputs, root)
    lib.refresh(force=True)
    assert [i["format"] for i in lib.search(LOCAL, q="castle")["items"]] == ["comfyui"]
    assert [i["seed"] for i in lib.search(LOCAL, lora="robots")["items"]] == [77]
    assert [i["seed"] for i in lib.search(LOCAL, q="astronaut")["items"]] == [123]
    item = lib.search(LOCAL, q="castle")["items"][0]
    assert item["read_only"]
    with pytest.raises(InvalidRequest):
        lib.delete(LOCAL, item["id"])
    assert (root / "comfy.png").exists()
    assert lib.reproduce(LOCAL, item["id"])["body"]["seed"] == 42
    # a login that is no admin does not see the server owner's folders
    assert lib.search(Viewer("user:amy", "amy"))["items"] == []


def test_bad_files_are_skipped_with_a_note(tmp_path):
    out = tmp_path / "outputs"
    good = png(out / "txt2img" / "2026-01-01" / "00000-1.png", a1111("a good picture", 1))
    (out / "txt2img" / "2026-01-01" / "00001-2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    whole = good.read_bytes()
    (out / "txt2img" / "2026-01-01" / "00002-3.png").write_bytes(whole[: len(whole) // 3])  # truncated
    (out / "txt2img" / "2026-01-01" / "00003-4.jpg").write_bytes(b"")
    huge = PngInfo()
    huge.add_text("parameters", "x" * (3 << 20), zip=True)  # a huge compressed text chunk
    Image.new("RGB", (8, 8)).save(out / "txt2img" / "2026-01-01" / "00004-5.png", pnginfo=huge)
    outside = png(tmp_path / "secret" / "private.png", a1111("a secret outside", 5))
    (out / "txt2img" / "2026-01-01" / "00005-6.png").symlink_to(outside)
    (out / "linked").symlink_to(outside.parent, target_is_directory=True)
    lib = library_of(out)
    report = lib.refresh(force=True)
    listed = lib.search(LOCAL)["items"]
    assert "a good picture" in [i["prompt"] for i in listed]
    assert lib.search(LOCAL, q="secret")["items"] == []  # symlinks out of the folder not followed
    assert any("symbolic link" in note for note in report.skipped)
    assert len(report.skipped) >= 4
    # skipped files are remembered: an unchanged rescan reads nothing again
    assert lib.refresh(force=True).read == 0
    for item in listed:
        lib.thumbnail(LOCAL, item["id"])  # none of them crashes the thumbnailer


def test_a_file_vanishing_mid_scan_is_skipped(tmp_path, monkeypatch):
    out = tmp_path / "outputs"
    for n in range(5):
        png(out / "txt2img" / "2026-01-01" / f"{n:05d}-{n}.png", a1111(f"picture {n}", n))
    from webui.engine.library import _index

    real = _index.read_meta
    victim = out / "txt2img" / "2026-01-01" / "00003-3.png"

    def vanishing(image):
        victim.unlink(missing_ok=True)
        return real(image)

    monkeypatch.setattr(_index, "read_meta", vanishing)
    lib = library_of(out)
    lib.refresh(force=True)
    monkeypatch.setattr(_index, "read_meta", real)
    lib.refresh(force=True)
    assert len(lib.search(LOCAL)["items"]) == 4


def test_delete_goes_to_the_trash_and_comes_back(folder):
    lib = library_of(folder)
    lib.refresh(force=True)
    fox = lib.search(LOCAL, q="fox")["items"][0]
    original = lib.item(LOCAL, fox["id"])["path"]
    lib.delete(LOCAL, fox["id"])
    assert not Path(original).exists() and lib.search(LOCAL, q="fox")["items"] == []
    with pytest.raises(NotFound):
        lib.item(LOCAL, fox["id"])
    (entry,) = lib.trash(LOCAL)
    lib.restore(LOCAL, entry["name"])
    assert Path(original).exists() and len(lib.search(LOCAL, q="fox")["items"]) == 1
    lib.delete(LOCAL, lib.search(LOCAL, q="fox")["items"][0]["id"])
    assert lib.empty_trash(LOCAL) == 1 and lib.trash(LOCAL) == []
    assert not any(p.is_file() for p in (folder / ".trash").iterdir())


def test_reproduce_maps_the_infotext_back():
    text = build_infotext("a fox <lora:x:0.5>", "blurry", {
        "Steps": 12, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 5.5, "Seed": 99, "Size": "64x96",
        "Model": "tiny-sd", "Clip skip": 2, "VAE": "my-vae", "Denoising strength": 0.4, "Hires upscale": 1.5,
        "Hires steps": 3, "Hires upscaler": "Latent", "Variation seed": 5, "Variation seed strength": 0.25})
    made = reproduce_body(text)
    assert made["endpoint"] == "/sdapi/v1/txt2img"
    assert made["body"] == {
        "prompt": "a fox <lora:x:0.5>", "negative_prompt": "blurry", "steps": 12, "sampler_name": "DPM++ 2M",
        "scheduler": "Karras", "cfg_scale": 5.5, "seed": 99, "width": 64, "height": 96, "denoising_strength": 0.4,
        "override_settings": {"CLIP_stop_at_last_layers": 2, "sd_model_checkpoint": "tiny-sd", "sd_vae": "my-vae"},
        "enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 3, "hr_upscaler": "Latent",
        "subseed": 5, "subseed_strength": 0.25}
    assert reproduce_body(text.replace("Hires upscale: 1.5, ", ""), "img2img")["endpoint"] == "/sdapi/v1/img2img"


def test_reproduce_picks_the_checkpoint_by_its_hash_when_the_name_changed(models_dir):
    from webui.engine.models.catalog import Catalog

    catalog = Catalog(models_dir)
    catalog.scan()
    tiny = catalog.find("tiny-sd")
    short = catalog.short_hash(tiny)
    assert short

    def made(model: str, model_hash: str) -> dict:
        return reproduce_body(build_infotext("a fox", "", {"Steps": 2, "Seed": 1, "Size": "64x64", "Model hash": model_hash,
                                                           "Model": model}), "txt2img", catalog)

    renamed = made("my-old-name", short)  # the file was renamed since: found by its hash
    assert renamed["body"]["override_settings"]["sd_model_checkpoint"] == "tiny-sd"
    assert any("'my-old-name' is 'tiny-sd'" in n for n in renamed["notes"])
    assert made("tiny-sd", short)["notes"] == []
    changed = made("tiny-sd", "0123456789")  # same name, other weights: the name, with a warning
    assert changed["body"]["override_settings"]["sd_model_checkpoint"] == "tiny-sd"
    assert any(n.startswith("warning: no checkpoint here has Model hash 0123456789") for n in changed["notes"])
    gone = made("nowhere", "0123456789")
    assert gone["body"]["override_settings"]["sd_model_checkpoint"] == "nowhere" and "no checkpoint here" in gone["notes"][0]


# --- over HTTP: two logins, and Reproduce bit for bit --------------------------------------------

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


def test_a_scan_killed_midway_is_completed_by_the_next(tmp_path, monkeypatch):
    out = tmp_path / "outputs"
    for n in range(7):
        png(out / "txt2img" / "2026-01-01" / f"{n:05d}-{n}.png", a1111(f"picture {n}", n))
    from webui.engine.library import _index

    real, calls = _index.read_meta, []

    def dying(image):
        calls.append(1)
        if len(calls) == 5:
            raise SystemExit("killed")  # the server stopped while indexing
        return real(image)

    monkeypatch.setattr(_index, "_BATCH", 2)
    monkeypatch.setattr(_index, "read_meta", dying)
    with pytest.raises(SystemExit):
        library_of(out).refresh(force=True)
    monkeypatch.setattr(_index, "read_meta", real)
    again = library_of(out)  # the next start, on the index the first one left
    assert again.index.counts()["files"] == 4  # what was committed before the kill
    assert again.refresh(force=True).read == 3 and len(again.search(LOCAL)["items"]) == 7


def test_a_clip_gets_its_first_frame_as_poster(tmp_path):
    import cv2

    out = tmp_path / "outputs"
    clip = out / "video" / "2026-01-01" / "00000-1.mp4"
    clip.parent.mkdir(parents=True)
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 8, (32, 32))
    for _ in range(3):
        writer.write(np.full((32, 32, 3), (200, 40, 10), np.uint8))  # BGR: blue
    writer.release()
    lib = library_of(out)
    lib.refresh(force=True)
    (item,) = lib.search(LOCAL)["items"]
    assert item["kind"] == "clip" and item["tab"] == "video"
    with Image.open(lib.thumbnail(LOCAL, item["id"])) as poster:
        r, g, b = poster.convert("RGB").getpixel((16, 16))
    assert b > 150 and r < 60


# --- the Library tab's Reproduce (the function its button calls) --------------------------------

def handler_of(app, elem_id: str):
    """The function a button (or an accordion's expand) of the built app calls."""
    block = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == elem_id)
    (found,) = [f for f in app.fns.values() if any(t[0] == block._id for t in f.targets)]
    return found.fn


def by_elem_id(updates: dict) -> dict:
    return {getattr(c, "elem_id", None): v for c, v in updates.items()}


def test_the_tabs_reproduce_sets_the_hires_fix_and_turns_it_off_again(engine, tmp_path):
    from webui.ui.app import build

    fill = handler_of(build(engine, tmp_path / "settings.json"), "library-reproduce")
    hires = build_infotext("a hires harbour", "", {
        "Steps": 3, "Sampler": "Euler a", "CFG scale": 6, "Seed": 21, "Size": "64x64", "Model": "tiny-sd",
        "Denoising strength": 0.45, "Hires upscale": 1.5, "Hires steps": 2, "Hires upscaler": "Latent"})
    made = by_elem_id(fill(hires))
    assert made["txt2img-enable-hr"] is True
    assert (made["txt2img-hr-scale"], made["txt2img-hr-steps"], made["txt2img-hr-denoise"]) == (1.5, 2, 0.45)
    assert (made["txt2img-hr-upscaler"], made["txt2img-hr-resize-x"], made["txt2img-hr-resize-y"]) == ("Latent", 0, 0)
    assert made["library-status"] == "" and made["model-picker"].startswith("tiny-sd [")
    # the checkpoint by its hash: renamed since, it is still found, and the note says so
    short = engine.catalog.short_hash(engine.catalog.find("tiny-sd"))
    renamed = by_elem_id(fill(hires.replace("Model: tiny-sd", f"Model hash: {short}, Model: my-old-name")))
    assert renamed["model-picker"].startswith("tiny-sd [") and "'my-old-name' is 'tiny-sd'" in renamed["library-status"]
    resized = by_elem_id(fill(hires.replace("Hires upscale: 1.5", "Hires resize: 96x128")))
    assert (resized["txt2img-hr-resize-x"], resized["txt2img-hr-resize-y"]) == (96, 128)
    # a picture made without it turns a hires fix left on off: the same picture, not a bigger one
    plain = by_elem_id(fill(build_infotext("a plain harbour", "", {"Steps": 3, "Seed": 2, "Size": "64x64"})))
    assert plain["txt2img-enable-hr"] is False and "txt2img-hr-scale" not in plain
    # ControlNet's control pictures are not in the infotext: the tab's note says so
    controlled = by_elem_id(fill(build_infotext("a fenced harbour", "", {
        "Steps": 3, "Seed": 2, "Size": "64x64", "ControlNet 0": "Module: canny, Model: tiny-cn, Weight: 1"})))
    assert "ControlNet unit" in controlled["library-status"] and "ControlNet 0" in controlled["library-status"]


def test_the_tabs_reproduce_sends_an_img2img_picture_to_image_to_image_with_its_start_picture(engine, tmp_path):
    """Reproduce of an image to image picture fills that tab (not Text to image) with the init image kept with
    it and its settings; one whose kept init is gone is an error naming the field; one made before Kiri kept
    init images fills the settings and says the start picture must be added."""
    from types import SimpleNamespace

    import gradio as gr

    from webui.engine.generation.img2img import Img2ImgRequest
    from webui.engine.library import open_library
    from webui.ui.app import build

    init = Image.fromarray(np.random.default_rng(8).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    result = engine.img2img(Img2ImgRequest(prompt="a copper kettle", init_image=init, steps=2, width=64, height=64,
                                           seed=71, denoising_strength=0.55, resize_mode=2, cfg_scale=4.5))
    fill = handler_of(build(engine, tmp_path / "settings.json"), "library-reproduce")
    lib = open_library(engine.settings)
    lib.refresh(force=True)
    (item,) = lib.search(lib.viewer(None), q="kettle")["items"]
    text = lib.item(lib.viewer(None), item["id"])["infotext"]
    assert text == result.infotexts[0]
    local = SimpleNamespace(username=None)
    made = by_elem_id(fill(text, item["id"], local))
    assert made["img2img-prompt"] == "a copper kettle" and made["img2img-mode"] == "img2img"
    assert np.array_equal(np.asarray(made["img2img-image"].convert("RGB")), np.asarray(init))
    assert (made["img2img-strength"], made["img2img-seed"], made["img2img-steps"]) == (0.55, 71, 2)
    assert (made["img2img-resize-mode"], made["img2img-cfg"]) == ("Resize and fill", 4.5)
    assert "txt2img-prompt" not in made and made["library-status"] == ""
    assert made["model-picker"].startswith("tiny-sd [")
    # the kept init gone: an error naming the field, not another picture
    outputs = Path(engine.settings.outputs_dir)
    for kept in (outputs / ".inits").glob("*.png"):
        kept.unlink()
    with pytest.raises(gr.Error, match="init image this picture was made from .* is no longer in"):
        fill(text, item["id"], local)
    # made before Kiri kept init images: the settings go over, the note says what to add, the picture is left as is
    old = text.replace("a copper kettle", "an older tin kettle").replace(", Init image hash: ", ", Old hash: ")
    png(outputs / "img2img" / "2026-01-01" / "00000-71.png", {"parameters": old})
    lib.refresh(force=True)
    (older,) = lib.search(lib.viewer(None), q="tin")["items"]
    made = by_elem_id(fill(old, older["id"], local))
    assert made["img2img-prompt"] == "an older tin kettle" and made["img2img-strength"] == 0.55
    assert "img2img-image" not in made and "start picture was not kept" in made["library-status"]


def test_the_tabs_trash_lists_restores_and_empties_each_logins_own(engine, tmp_path):
    from types import SimpleNamespace

    import gradio as gr

    from webui.engine.library import open_library
    from webui.ui.app import build

    app = build(engine, tmp_path / "settings.json")
    outputs = Path(engine.settings.outputs_dir)
    for login in ("alice", "bob"):
        png(outputs / login / "txt2img" / "2026-01-01" / "00000-1.png", a1111(f"{login}'s paper boat", 1))
    lib = open_library(engine.settings)
    lib.refresh(force=True)
    alice, bob = SimpleNamespace(username="alice"), SimpleNamespace(username="bob")
    for who in ("alice", "bob"):
        (item,) = lib.search(lib.viewer(who))["items"]
        lib.delete(lib.viewer(who), item["id"])
    list_trash = handler_of(app, "library-trash")
    restore, empty = handler_of(app, "library-restore"), handler_of(app, "library-empty-trash")
    (mine,), (theirs,) = list_trash(alice).choices, list_trash(bob).choices
    assert "00000-1.png" in mine[0] and mine[1] != theirs[1]
    with pytest.raises(gr.Error, match="no such picture in your trash"):
        restore([mine[1]], {"back": [], "this": ""}, "", "", "", "", "", "", "", "", False, None, bob)
    assert empty(bob).choices == [] and len(list_trash(alice).choices) == 1
    shown = restore([mine[1]], {"back": [], "this": ""}, "", "", "", "", "", "", "", "", False, None, alice)
    assert shown[0].choices == [] and [i["prompt"] for i in shown[2]] == ["alice's paper boat"]


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
