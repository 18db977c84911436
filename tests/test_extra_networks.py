"""The Extra networks panel (webui/ui/extra_networks.py) and preview writing (webui/engine/models/previews.py):
preview pictures are written atomically, only beside files in the models folders and only from pictures;
in the browser the panel searches, a LoRA card puts `<lora:name:W>` in the prompt and the image made
has `Lora hashes`, an embedding card puts its word, a checkpoint card selects the checkpoint, a result
becomes a card's preview, and the panel under Image to image fills that tab's prompt."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from test_embeddings import WIDTH, save_a1111_safetensors, vectors
from test_lora import lora_models_dir  # noqa: F401 - the fixture
from webui.engine.core.errors import InvalidRequest


@pytest.fixture(scope="module")
def panel_models(lora_models_dir, tmp_path_factory):  # noqa: F811
    """models/ over the LoRA fixture's checkpoints, with two LoRAs (one with a preferred weight) and an embedding."""
    root = tmp_path_factory.mktemp("panel") / "models"
    root.mkdir()
    (root / "checkpoints").symlink_to(lora_models_dir / "checkpoints")
    (root / "Lora").mkdir()
    shutil.copy(lora_models_dir / "Lora" / "shapes-outline.safetensors", root / "Lora")
    shutil.copy(lora_models_dir / "Lora" / "second.safetensors", root / "Lora")
    (root / "Lora" / "second.json").write_text('{"preferred weight": 0.6}')
    (root / "embeddings").mkdir()
    save_a1111_safetensors(root / "embeddings" / "ShapeStyle.safetensors", vectors(2, WIDTH, 1))
    return root


@pytest.fixture()
def catalog(panel_models):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    engine = build_engine(Settings(models_dir=panel_models, default_model="tiny-sd"), DeviceChoice("cpu"))
    engine.catalog.scan()
    return engine.catalog


def test_set_preview_is_atomic_and_only_in_the_models_folders(catalog, panel_models, tmp_path, monkeypatch):
    from webui.engine.models import previews

    lora = panel_models / "Lora" / "second.safetensors"
    picture = tmp_path / "result.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(picture)
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(previews.os, "replace", lambda a, b: (replaced.append((Path(a), Path(b))), real_replace(a, b)))
    written = previews.set_preview(catalog, lora, picture)
    assert written == panel_models / "Lora" / "second.preview.png"
    assert Image.open(written).getpixel((3, 3)) == (200, 10, 10)
    # written under a temp name in the same folder, then renamed over the target; no temp file left
    assert replaced == [(replaced[0][0], written)] and replaced[0][0].parent == written.parent
    assert replaced[0][0].name != written.name and not replaced[0][0].exists()
    assert previews.preview_of(lora) == written
    # a checkpoint folder gets `<folder>.preview.png` beside it, through the checkpoints link
    folder = panel_models / "checkpoints" / "tiny-sd"
    assert previews.preview_target(catalog, folder) == panel_models / "checkpoints" / "tiny-sd.preview.png"

    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(lora, outside)
    with pytest.raises(InvalidRequest) as refused:
        previews.set_preview(catalog, outside, picture)
    assert refused.value.field == "model" and not (tmp_path / "elsewhere.preview.png").exists()
    with pytest.raises(InvalidRequest):
        previews.set_preview(catalog, panel_models / "Lora" / ".." / ".." / "x.safetensors", picture)
    not_a_picture = tmp_path / "notes.png"
    not_a_picture.write_bytes(b"not a picture at all")
    before = written.read_bytes()
    with pytest.raises(InvalidRequest) as refused:
        previews.set_preview(catalog, lora, not_a_picture)
    assert refused.value.field == "image" and written.read_bytes() == before
    assert sorted(p.name for p in (panel_models / "Lora").iterdir() if p.name.startswith(".")) == []
    written.unlink()


def test_cards_carry_metadata_and_tags(catalog):
    from types import SimpleNamespace

    from webui.ui.extra_networks import CHECKPOINT, EMBEDDING, LORA, cards_of, insert_tag

    engine = SimpleNamespace(catalog=catalog, settings=SimpleNamespace(extra_networks_default_multiplier=0.8,
                                                                       allow_pickle=False),
                             models_if_created=lambda: None)
    loras = {c.name: c for c in cards_of(engine, LORA)}
    assert loras["second"].tag == "<lora:second:0.6>"  # its preferred weight
    assert loras["shapes-outline"].tag == "<lora:shapes-outline:0.8>"  # the Settings default
    assert "alias: outline" in loras["shapes-outline"].details and "outline" in loras["shapes-outline"].details
    assert [c.name for c in cards_of(engine, LORA, "OUTLINE")] == ["shapes-outline"]  # found by its alias/tag
    (embedding,) = cards_of(engine, EMBEDDING)
    assert embedding.tag == "ShapeStyle" and "vectors: 2" in embedding.details
    checkpoints = {c.name: c for c in cards_of(engine, CHECKPOINT)}
    assert checkpoints["tiny-sd"].tag == catalog.title(catalog.find("tiny-sd")) and "size:" in checkpoints["tiny-sd"].details
    assert insert_tag("a red circle", "<lora:x:1>") == "a red circle <lora:x:1>"
    assert insert_tag("a red circle, ", "w") == "a red circle, w" and insert_tag("", "w") == "w"
    assert insert_tag("a w b", "w") == "a w b"


def test_browser_panel_search_click_generate_and_set_preview(panel_models, tmp_path_factory, browser):
    from conftest import serve_kiri

    server = serve_kiri(panel_models, tmp_path_factory, "panel_outputs")
    info = next(server)
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        page.goto(info["url"])
        page.locator("#txt2img-prompt textarea").fill("a red circle")
        page.locator("#txt2img-extra-networks button").first.click()  # open the accordion
        page.wait_for_function("document.querySelector('#txt2img-extra-refresh')?.title?.includes('LoRA')", timeout=10000)
        assert page.locator("#txt2img-extra-refresh").inner_text().strip() == "↻"
        cards = page.locator("#txt2img-extra-cards")
        cards.locator("img[alt^='second ·']").wait_for(timeout=30000)
        page.locator("#txt2img-extra-search input, #txt2img-extra-search textarea").first.fill("outline")
        page.wait_for_function("!document.querySelector(\"#txt2img-extra-cards img[alt^='second']\")", timeout=30000)
        cards.locator("img[alt='shapes-outline · SD 1.x']").click()
        page.wait_for_function("document.querySelector('#txt2img-prompt textarea').value"
                               " === 'a red circle <lora:shapes-outline:1>'", timeout=30000)
        page.locator("#txt2img-extra-details").get_by_text("alias: outline").wait_for(timeout=10000)

        steps = page.locator("#txt2img-steps input[type=number]")
        steps.fill("2")
        steps.press("Enter")
        for side in ("width", "height"):
            field = page.locator(f"#txt2img-{side} input[type=number]")
            field.fill("64")
            field.press("Enter")
        page.locator("#txt2img-generate").click()
        page.wait_for_function("document.querySelector('#txt2img-infotext textarea').value.includes('Lora hashes')",
                               timeout=120000)
        assert page.locator("#txt2img-infotext textarea").input_value().startswith("a red circle <lora:shapes-outline:1>")

        page.locator("#txt2img-extra-set-preview").click()  # the clicked card gets the result as its preview
        target = panel_models / "Lora" / "shapes-outline.preview.png"
        page.wait_for_function("document.querySelector('#txt2img-extra-note').innerText.includes('1 card')", timeout=30000)
        for _ in range(100):
            if target.exists():
                break
            page.wait_for_timeout(100)
        assert Image.open(target).size == (64, 64)

        page.locator("#txt2img-extra-kind").get_by_text("Textual Inversion").click()
        page.locator("#txt2img-extra-search input, #txt2img-extra-search textarea").first.fill("")
        page.locator("#txt2img-extra-search input, #txt2img-extra-search textarea").first.press("Space")
        cards.locator("img[alt^='ShapeStyle']").click()
        page.wait_for_function("document.querySelector('#txt2img-prompt textarea').value.endsWith(' ShapeStyle')",
                               timeout=30000)
        # a checkpoint card selects that checkpoint in the model picker
        page.locator("#txt2img-extra-kind").get_by_text("Checkpoints").click()
        cards.locator("img[alt^='tiny-sdxl']").click()
        page.wait_for_function("document.querySelector('#model-picker input').value.startsWith('tiny-sdxl [')",
                               timeout=30000)
        # the same panel under Image to image fills that tab's prompt
        page.get_by_role("tab", name="Image to image", exact=False).first.click()
        page.locator("#img2img-extra-networks button").first.click()
        page.locator("#img2img-extra-cards img[alt^='shapes-outline']").click()
        page.wait_for_function("document.querySelector('#img2img-prompt textarea').value === '<lora:shapes-outline:1>'",
                               timeout=30000)
    finally:
        page.close()
        (panel_models / "Lora" / "shapes-outline.preview.png").unlink(missing_ok=True)
        next(server, None)
