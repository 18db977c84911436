"""The Library tab's handlers (issue 29), called as the built app calls them: Reproduce fills the
right tab (hires fix on and off, an img2img picture to Image to image with its start picture), and
the trash is each login's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_library import a1111, png
from webui.engine.core.infotext import build_infotext


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
