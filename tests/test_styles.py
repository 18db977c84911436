"""Saved styles (engine/styles/): A1111's styles.csv, merged into the prompts before the job is queued,
saved and deleted atomically, the `styles` field and /sdapi/v1/prompt-styles through webuiapi, and
taken back out of an infotext (PNG info's send to)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from webui.engine import styles
from webui.engine.core.errors import InvalidRequest
from webui.engine.core.infotext import parse_infotext
from webui.engine.generation.requests import HiresFix, Txt2ImgRequest

A1111_CSV = ('\ufeffname,prompt,negative_prompt\r\n'
             'cinematic,"{prompt}, cinematic light, film grain","cartoon, drawing"\r\n'
             'oil,oil painting,blurry\r\n'
             '"quoted ""name"", here",a\tb,\r\n'
             ',orphan row without a name,\r\n')


def _settings(tmp_path, csv: str | None = A1111_CSV):
    path = tmp_path / "styles.csv"
    if csv is not None:
        path.write_text(csv, encoding="utf-8", newline="")
    return SimpleNamespace(styles_file=path)


def test_merge_follows_a1111_placeholder_and_append():
    assert styles.merge("{prompt}, cinematic", "a cat") == "a cat, cinematic"
    assert styles.merge("photo of {prompt} at night", "a cat") == "photo of a cat at night"
    assert styles.merge("oil painting", "a cat ") == "a cat, oil painting"
    assert styles.merge("oil painting", "") == "oil painting"  # nothing to join: no leading ", "
    assert styles.merge("", "a cat") == "a cat"


def test_reads_a1111_styles_csv_and_applies_several_in_order(tmp_path):
    settings = _settings(tmp_path)
    known = styles.load_styles(settings)
    assert list(known) == ["cinematic", "oil", 'quoted "name", here']  # the row without a name is skipped
    assert known["cinematic"].negative_prompt == "cartoon, drawing"
    prompt, negative = styles.apply_styles("a cat", "ugly", styles.find_styles(settings, ["cinematic", "oil"]))
    assert prompt == "a cat, cinematic light, film grain, oil painting"
    assert negative == "ugly, cartoon, drawing, blurry"
    # the other order: oil first, then the placeholder wraps what is there
    prompt, _ = styles.apply_styles("a cat", "", styles.find_styles(settings, ["oil", "cinematic"]))
    assert prompt == "a cat, oil painting, cinematic light, film grain"


def test_styles_star_csv_beside_it_is_read_too_and_the_later_file_wins(tmp_path):
    settings = _settings(tmp_path)
    (tmp_path / "styles-extra.csv").write_text("name,text\noil,thick oil paint\nsketch,pencil sketch\n")
    known = styles.load_styles(settings)
    assert known["oil"].prompt == "thick oil paint" and known["sketch"].prompt == "pencil sketch"  # A1111's old `text` column
    assert known["sketch"].path == tmp_path / "styles-extra.csv"


def test_unknown_style_is_refused_naming_styles(tmp_path):
    with pytest.raises(InvalidRequest) as err:
        styles.find_styles(_settings(tmp_path), ["oil", "nope"])
    assert err.value.field == "styles" and "'nope'" in str(err.value) and "cinematic" in str(err.value)


def test_save_and_delete_rewrite_the_file_atomically(tmp_path, monkeypatch):
    settings = _settings(tmp_path, csv=None)
    styles.save_style(settings, "moody", "{prompt}, dark, rain", "sunny")
    styles.save_style(settings, 'with "quotes", commas', "a, b", "")
    styles.save_style(settings, "moody", "{prompt}, darker", "sunny, bright")  # replaced in place, not added
    text = (tmp_path / "styles.csv").read_text(encoding="utf-8-sig")
    assert text.splitlines()[0] == "name,prompt,negative_prompt"
    assert list(styles.load_styles(settings)) == ["moody", 'with "quotes", commas']
    assert styles.load_styles(settings)["moody"].negative_prompt == "sunny, bright"
    assert styles.load_styles(settings)['with "quotes", commas'].prompt == "a, b"

    # a write that fails before the rename leaves the file as it was, and no temporary file behind
    before = (tmp_path / "styles.csv").read_bytes()

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(styles.os, "replace", broken)
    with pytest.raises(OSError):
        styles.save_style(settings, "new", "x", "")
    monkeypatch.undo()
    assert (tmp_path / "styles.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["styles.csv"]

    styles.delete_style(settings, "moody")
    assert list(styles.load_styles(settings)) == ['with "quotes", commas']
    with pytest.raises(InvalidRequest):
        styles.delete_style(settings, "moody")
    with pytest.raises(InvalidRequest) as err:
        styles.save_style(settings, "  ", "x", "")
    assert err.value.field == "name"


def test_a_style_saved_in_another_file_is_saved_back_there(tmp_path):
    settings = _settings(tmp_path)
    extra = tmp_path / "styles-mine.csv"
    extra.write_text("name,prompt,negative_prompt\nsketch,pencil,\n")
    styles.save_style(settings, "sketch", "charcoal", "")
    assert "charcoal" in extra.read_text() and "sketch" not in (tmp_path / "styles.csv").read_text()


def test_extract_takes_the_styles_back_out_of_a_styled_prompt(tmp_path):
    known = styles.load_styles(_settings(tmp_path))
    prompt, negative = styles.apply_styles("a cat", "ugly", [known["cinematic"], known["oil"]])
    assert styles.extract_styles(known, prompt, negative) == (["cinematic", "oil"], "a cat", "ugly")
    assert styles.extract_styles(known, "a dog", "") == ([], "a dog", "")  # holds none


# --- through the engine ------------------------------------------------------------------------------

def small(**kw) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{**dict(prompt="a red circle", steps=2, width=64, height=64, seed=21), **kw})


@pytest.fixture()
def styled_engine(engine, tmp_path):
    engine.settings.styles_file = tmp_path / "styles.csv"
    (tmp_path / "styles.csv").write_text("name,prompt,negative_prompt\nblue,\"{prompt}, blue background\",green\n"
                                         "big,large,small\n")
    return engine


def test_styles_are_generated_and_written_as_the_prompt(styled_engine):
    result = styled_engine.txt2img(small(styles=["blue", "big"], negative_prompt="dark"))
    info = parse_infotext(result.infotexts[0])
    assert info.prompt == "a red circle, blue background, large"
    assert info.negative_prompt == "dark, green, small"
    typed = styled_engine.txt2img(small(prompt="a red circle, blue background, large", negative_prompt="dark, green, small"))
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(typed.images[0]))  # what was generated is that text
    plain = styled_engine.txt2img(small(negative_prompt="dark"))
    assert not np.array_equal(np.asarray(result.images[0]), np.asarray(plain.images[0]))


def test_a_style_fills_an_empty_prompt_and_an_unknown_one_is_refused_before_the_queue(styled_engine):
    result = styled_engine.txt2img(small(prompt="", styles=["big"]))
    assert parse_infotext(result.infotexts[0]).prompt == "large"
    with pytest.raises(InvalidRequest) as err:
        styled_engine.txt2img(small(styles=["nope"]))
    assert err.value.field == "styles"
    assert not styled_engine.jobs.queued() and not styled_engine.jobs.active()
    with pytest.raises(InvalidRequest) as err:
        small(prompt="", styles=[])
    assert err.value.field == "prompt"


def test_a_request_prepared_twice_is_styled_once_and_hires_prompts_get_the_styles(styled_engine):
    request = small(styles=["big"], hires=HiresFix(prompt="a square"))
    shared_hires = request.hires
    styled_engine.prepare_request(request)
    styled_engine.prepare_request(request)
    assert request.prompt == "a red circle, large" and request.styles == []
    assert request.hires.prompt == "a square, large"
    assert shared_hires.prompt == "a square"  # another request holding the same hires settings is untouched


# --- the A1111 API through webuiapi ----------------------------------------------------------------------

@pytest.fixture()
def api(kiri_server, tmp_path, monkeypatch):
    import webuiapi

    (tmp_path / "styles.csv").write_text("name,prompt,negative_prompt\nblue,\"{prompt}, blue background\",green\n")
    monkeypatch.setattr(kiri_server["engine"].settings, "styles_file", tmp_path / "styles.csv")
    port = int(kiri_server["url"].rstrip("/").rsplit(":", 1)[1])
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=2)


def test_prompt_styles_and_the_styles_field_through_webuiapi(api):
    assert api.get_prompt_styles() == [{"name": "blue", "prompt": "{prompt}, blue background", "negative_prompt": "green"}]
    result = api.txt2img(prompt="a red circle", styles=["blue"], seed=5, width=64, height=64)
    assert result.info["infotexts"][0].startswith("a red circle, blue background\nNegative prompt: green\n")
    assert result.info["all_prompts"] == ["a red circle, blue background"]
    assert not any("styles" in w for w in result.info["warnings"])


def test_unknown_style_is_a_422_naming_styles(api, kiri_server):
    import requests

    reply = requests.post(kiri_server["url"] + "sdapi/v1/txt2img", timeout=60,
                          json={"prompt": "a", "styles": ["cinematic"], "steps": 1, "width": 64, "height": 64})
    assert reply.status_code == 422, reply.text
    assert "styles" in reply.text and "cinematic" in reply.text


def test_png_info_takes_the_styles_back_out_as_a1111_does(api):
    result = api.txt2img(prompt="a red circle", styles=["blue"], seed=6, width=64, height=64)
    info = api.png_info(result.image)
    assert info.parameters["Prompt"] == "a red circle" and info.parameters["Negative prompt"] == ""
    assert info.parameters["Styles array"] == ["blue"]
    assert info.info.startswith("a red circle, blue background\n")  # the picture's own text is as generated


def test_img2img_body_takes_styles_too(api):
    from PIL import Image

    result = api.img2img(images=[Image.new("RGB", (64, 64), "teal")], prompt="a square", styles=["blue"], seed=2,
                         width=64, height=64, denoising_strength=0.5)
    assert result.info["infotexts"][0].startswith("a square, blue background\nNegative prompt: green\n")


def test_png_info_and_send_to_restore_the_styles_for_the_dropdown(tmp_path):
    from webui.ui.styles import restore

    engine = SimpleNamespace(settings=_settings(tmp_path))
    prompt, negative = styles.apply_styles("a cat", "", styles.find_styles(engine.settings, ["oil", "cinematic"]))
    assert restore(engine, prompt, negative) == ("a cat", "", ["oil", "cinematic"])
    broken = SimpleNamespace(settings=SimpleNamespace(styles_file=tmp_path))  # a folder: unreadable, styles left in
    assert restore(broken, prompt, negative) == (prompt, negative, [])
