"""The Library (issue 29): index, search and filters on a generated folder, the foreign metadata
formats, bad files, search strings as data, the trash and Reproduce's mapping of the infotext.
Over HTTP: test_library_http.py; the tab's handlers: test_library_tabs.py."""

from __future__ import annotations

import json
import os
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
