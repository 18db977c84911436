"""Textual inversion embeddings (webui/engine/embeddings/): tiny embeddings in A1111's, SDXL's and
diffusers' formats, on the tiny SD 1.x and SDXL. The embedding's word conditions as its vectors put
into the encoder by hand; a prompt without it encodes bit-identically to before; wrong widths are
skipped and listed; .pt files follow the pickle policy; the A1111 routes answer the webuiapi client."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from webui.engine.generation import conditioning
from webui.engine.generation.call import PipelineCall
from webui.engine.generation.requests import Txt2ImgRequest

WIDTH, WIDTH_2 = 32, 48  # the tiny CLIPs' widths (SD 1.x and SDXL's clip_l; SDXL's clip_g)


def vectors(count: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed))


def save_a1111_safetensors(path, tensor):
    from safetensors.torch import save_file

    save_file({"emb_params": tensor.contiguous()}, str(path))


def save_a1111_pt(path, tensor, step=500):
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": tensor}, "name": path.stem, "step": step,
                "sd_checkpoint": "0123456789", "sd_checkpoint_name": "tiny-sd"}, str(path))


def save_sdxl(path, clip_l, clip_g):
    from safetensors.torch import save_file

    save_file({"clip_l": clip_l.contiguous(), "clip_g": clip_g.contiguous()}, str(path))


def save_diffusers(path, token, tensor):
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({token: tensor.contiguous()}, str(path))
    else:
        torch.save({token: tensor}, str(path))


@pytest.fixture()
def folders(models_dir, tmp_path):
    """models/ over the shared tiny checkpoints, with empty models/embeddings/ and A1111's embeddings/ beside it."""
    models = tmp_path / "kiri" / "models"
    models.mkdir(parents=True)
    for name in ("checkpoints", "configs"):
        (models / name).symlink_to(models_dir / name)
    (models / "embeddings").mkdir()
    (models.parent / "embeddings").mkdir()
    return models


@pytest.fixture(scope="module")
def xl_folders(family_models_dir, tmp_path_factory):
    models = tmp_path_factory.mktemp("ti-xl") / "models"
    models.mkdir()
    for name in ("checkpoints", "configs"):
        (models / name).symlink_to(family_models_dir / name)
    (models.parent / "embeddings").mkdir()
    return models


def make_engine(models, tmp_path, default="tiny-sd", **settings):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    engine = build_engine(Settings(models_dir=models, outputs_dir=tmp_path / "outputs", default_model=default,
                                   save_images=False, **settings), DeviceChoice("cpu"))
    engine.catalog.scan()
    return engine


@pytest.fixture()
def captured(monkeypatch):
    """The prompt embeddings each pipeline call gets (what the conditioning stage made)."""
    calls: list[dict] = []
    original = PipelineCall.run

    def run(self):
        calls.append({k: v.detach().clone() for k, v in self.kwargs.items() if k.endswith("embeds")})
        return original(self)

    monkeypatch.setattr(PipelineCall, "run", run)
    return calls


def generate(engine, prompt, negative="", model=None, **addons):
    request = Txt2ImgRequest(prompt, negative_prompt=negative, steps=2, width=64, height=64, seed=5, sampler_name="Euler",
                             model=model, addons=addons)
    return engine.txt2img(engine.prepare_request(request))


def by_hand(pipeline, text, rows: dict[str, dict[int, torch.Tensor]]):
    """`text` encoded by a copy of the pipeline's text encoders whose rows (token id -> vector) are set by hand."""
    import copy
    from types import SimpleNamespace

    parts = {"tokenizer": pipeline.tokenizer, "text_encoder": copy.deepcopy(pipeline.text_encoder)}
    if getattr(pipeline, "text_encoder_2", None) is not None:
        parts.update(tokenizer_2=pipeline.tokenizer_2, text_encoder_2=copy.deepcopy(pipeline.text_encoder_2))
    for name, table in rows.items():
        weight = parts[name].get_input_embeddings().weight
        with torch.no_grad():
            for token_id, vector in table.items():
                weight[token_id] = vector
    fake = SimpleNamespace(_execution_device=torch.device("cpu"), config=pipeline.config, **parts)
    return conditioning._clip_embeds(fake, text, 1, 1, "text_encoder_2" in parts)


def letter_ids(tokenizer, letters):
    return [tokenizer.convert_tokens_to_ids(f"{c}</w>") for c in letters]


def pixels(result):
    return np.asarray(result.images[0], dtype=np.int16)


# --- SD 1.x -------------------------------------------------------------------------------------------

def test_an_a1111_embedding_conditions_as_its_vectors_put_in_by_hand(folders, tmp_path, captured):
    vector = vectors(1, WIDTH, 1)
    save_a1111_safetensors(folders / "embeddings" / "ShapeStyle.safetensors", vector)
    engine = make_engine(folders, tmp_path)
    plain = generate(engine, "a q circle")
    used = generate(engine, "a ShapeStyle circle")  # the word in any case
    comfy = generate(engine, "a embedding:shapestyle circle")  # as ComfyUI writes it
    assert not used.warnings
    pipeline = engine.models.get("tiny-sd").pipeline
    expected, _ = by_hand(pipeline, "a q circle", {"text_encoder": {letter_ids(pipeline.tokenizer, "q")[0]: vector[0]}})
    assert torch.allclose(captured[1]["prompt_embeds"], expected, atol=1e-6)
    assert not torch.allclose(captured[0]["prompt_embeds"], captured[1]["prompt_embeds"], atol=1e-3)
    assert torch.equal(captured[1]["prompt_embeds"], captured[2]["prompt_embeds"])
    assert (pixels(plain) != pixels(used)).any() and np.array_equal(pixels(used), pixels(comfy))
    sha = engine.catalog.hashes.sha256(folders / "embeddings" / "ShapeStyle.safetensors")
    assert f'TI hashes: "ShapeStyle: {sha[:12]}"' in used.infotexts[0]
    assert "TI hashes" not in plain.infotexts[0]


def test_a_prompt_without_an_embedding_is_bit_identical_and_the_original_rows_unchanged(folders, tmp_path, captured):
    engine = make_engine(folders, tmp_path)
    before = generate(engine, "a red circle, concatenated", negative="blurry")
    encoder = engine.models.get("tiny-sd").pipeline.text_encoder
    rows = encoder.get_input_embeddings().weight.detach().clone()
    # Embeddings arrive (one named like a word piece of the prompt: whole words only), refresh, generate again.
    save_a1111_safetensors(folders / "embeddings" / "cat.safetensors", vectors(2, WIDTH, 2))
    save_a1111_safetensors(folders.parent / "embeddings" / "blur.safetensors", vectors(1, WIDTH, 3))
    engine.catalog.scan()
    after = generate(engine, "a red circle, concatenated", negative="blurry")
    encoder = engine.models.get("tiny-sd").pipeline.text_encoder
    assert encoder.get_input_embeddings().weight.shape[0] == rows.shape[0] + 3  # cat, cat_1, blur: loaded
    assert torch.equal(encoder.get_input_embeddings().weight[: rows.shape[0]], rows)
    for key in ("prompt_embeds", "negative_prompt_embeds"):
        assert torch.equal(captured[0][key], captured[1][key])
    assert np.array_equal(pixels(before), pixels(after))
    assert before.infotexts[0] == after.infotexts[0]


def test_multi_vector_embeddings_and_the_pickle_policy(folders, tmp_path, captured):
    three, two = vectors(3, WIDTH, 4), vectors(2, WIDTH, 5)
    save_a1111_pt(folders / "embeddings" / "triple.pt", three)  # A1111's .pt: a pickle
    save_diffusers(folders.parent / "embeddings" / "double.bin", "<double>", two)  # diffusers' learned_embeds.bin
    refused = make_engine(folders, tmp_path)
    result = generate(refused, "a triple circle")
    assert any("triple" in w and "pickle" in w for w in result.warnings)
    from webui.engine.embeddings import api_listing

    listing = api_listing(refused)
    assert set(listing["skipped"]) == {"triple", "double"} and not listing["loaded"]

    engine = make_engine(folders, tmp_path, allow_pickle=True)
    result = generate(engine, "a triple circle, double")
    assert not result.warnings
    pipeline = engine.models.get("tiny-sd").pipeline
    q, x, z, v, w = letter_ids(pipeline.tokenizer, "qxzvw")
    expected, _ = by_hand(pipeline, "a q x z circle, v w", {"text_encoder": {
        q: three[0], x: three[1], z: three[2], v: two[0], w: two[1]}})
    assert torch.allclose(captured[-1]["prompt_embeds"], expected, atol=1e-6)
    # A pipeline that encodes its prompt itself (a diffusion upscaler, prompt travel) is handed the first
    # tokens, and diffusers' maybe_convert_prompt writes the rest: the same conditioning.
    from contextlib import ExitStack

    from webui.engine.core.addons import AddonSession
    from webui.engine.embeddings import Embeddings
    from webui.engine.generation.runner import addon_context

    session = AddonSession([Embeddings()], addon_context(engine, None))
    with ExitStack() as stack:
        session.enter(engine.models.get("tiny-sd"), None, stack)
        session.state(engine.models.get("tiny-sd"))
        call = PipelineCall(pipeline, {"prompt": "a Triple circle, double"}, prompt_stage=False)
        session.apply(call)
    theirs, _ = pipeline.encode_prompt(call.kwargs["prompt"], "cpu", 1, False)
    assert torch.allclose(theirs, expected, atol=1e-6) and "TI hashes" in call.infotext

    loaded = api_listing(engine)["loaded"]
    assert loaded["triple"] == {"step": 500, "sd_checkpoint": "0123456789", "sd_checkpoint_name": "tiny-sd",
                                "shape": WIDTH, "vectors": 3}
    assert loaded["double"]["vectors"] == 2 and loaded["double"]["step"] is None


def test_wrong_widths_are_skipped_listed_and_warned(folders, tmp_path, captured):
    save_a1111_safetensors(folders / "embeddings" / "wide.safetensors", vectors(1, WIDTH_2, 6))
    save_sdxl(folders / "embeddings" / "xlonly.safetensors", vectors(1, WIDTH, 7), vectors(1, WIDTH_2, 8))
    save_diffusers(folders / "embeddings" / "fits.safetensors", "<fits>", vectors(1, WIDTH, 9))
    (folders / "embeddings" / "concept").mkdir()  # a diffusers concept folder
    save_diffusers(folders / "embeddings" / "concept" / "learned_embeds.safetensors", "<concept>", vectors(1, WIDTH, 19))
    (folders / "embeddings" / "broken.safetensors").write_bytes(b"not a safetensors file")
    (folders.parent / "embeddings" / "negative" / "deeper").mkdir(parents=True)  # A1111 reads subfolders too
    save_a1111_safetensors(folders.parent / "embeddings" / "negative" / "deeper" / "deep.safetensors", vectors(1, WIDTH, 20))
    engine = make_engine(folders, tmp_path)
    plain = generate(engine, "a wide xlonly circle")
    from webui.engine.embeddings import api_listing, list_embeddings

    listing = api_listing(engine)
    assert set(listing["loaded"]) == {"fits", "concept", "deep"} and set(listing["skipped"]) == {"wide", "xlonly", "broken"}
    assert listing["skipped"]["xlonly"]["shape"] == WIDTH + WIDTH_2 and listing["skipped"]["broken"]["vectors"] == 0
    warnings = " ".join(plain.warnings)
    assert "'wide'" in warnings and "'xlonly'" in warnings and "SDXL" in warnings and "SD 1.x" in warnings
    encoder = engine.models.get("tiny-sd").pipeline.text_encoder
    assert encoder.get_input_embeddings().weight.shape[0] == 98 + 3  # only `fits`, `concept` and `deep`

    cards = {c["name"]: c for c in list_embeddings(engine, engine.models.get("tiny-sd"))}
    assert cards["xlonly"]["compatible"] is False and cards["xlonly"]["family"] == "SDXL"
    assert cards["fits"]["compatible"] is True and cards["fits"]["vectors"] == 1 and cards["fits"]["preview"] is None
    (folders / "embeddings" / "fits.preview.png").write_bytes(b"png")
    cards = {c["name"]: c for c in list_embeddings(engine, None)}
    assert cards["fits"]["preview"].endswith("fits.preview.png") and "compatible" not in cards["fits"]


def test_refresh_picks_up_new_files_and_the_setting_turns_them_off(folders, tmp_path, captured):
    engine = make_engine(folders, tmp_path)
    generate(engine, "a late circle")
    save_a1111_safetensors(folders / "embeddings" / "late.safetensors", vectors(1, WIDTH, 10))
    generate(engine, "a late circle")  # not scanned yet: plain words
    assert torch.equal(captured[0]["prompt_embeds"], captured[1]["prompt_embeds"])
    engine.catalog.scan()
    used = generate(engine, "a late circle")
    assert "TI hashes" in used.infotexts[0]
    assert not torch.equal(captured[0]["prompt_embeds"], captured[2]["prompt_embeds"])
    # Off (a request's own choice, then the setting): the tokenizer and encoder as loaded from disk.
    off = generate(engine, "a late circle", embeddings=False)
    assert torch.equal(captured[0]["prompt_embeds"], captured[3]["prompt_embeds"]) and "TI hashes" not in off.infotexts[0]
    assert engine.models.get("tiny-sd").pipeline.text_encoder.get_input_embeddings().weight.shape[0] == 98
    engine.settings.use_embeddings = False
    generate(engine, "a late circle")
    assert torch.equal(captured[0]["prompt_embeds"], captured[4]["prompt_embeds"])
    engine.settings.use_embeddings = True
    generate(engine, "a late circle")
    assert torch.equal(captured[2]["prompt_embeds"], captured[5]["prompt_embeds"])
    # One state per model: the replaced ones' bytes stop counting.
    from webui.engine.core.addons import derived_bytes

    assert derived_bytes(engine.models.get("tiny-sd")) == WIDTH * 4


def test_a_failed_load_leaves_the_checkpoint_as_it_was(folders, tmp_path, captured, monkeypatch):
    from diffusers.loaders.textual_inversion import TextualInversionLoaderMixin

    save_a1111_safetensors(folders / "embeddings" / "flaky.safetensors", vectors(2, WIDTH, 21))
    engine = make_engine(folders, tmp_path)
    generate(engine, "a red circle", embeddings=False)

    def broken(self, *args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(TextualInversionLoaderMixin, "load_textual_inversion", broken)
    result = generate(engine, "a red flaky circle")  # the job runs; the word is plain text, with a warning
    assert any("'flaky'" in w and "simulated failure" in w for w in result.warnings)
    pipeline = engine.models.get("tiny-sd").pipeline
    assert pipeline.text_encoder.get_input_embeddings().weight.shape[0] == 98 and len(pipeline.tokenizer) == 98
    plain = generate(engine, "a red flaky circle", embeddings=False)
    assert torch.equal(captured[1]["prompt_embeds"], captured[2]["prompt_embeds"]) and not plain.warnings


# --- SDXL: clip_l into the first encoder, clip_g into the second -------------------------------------

def test_sdxl_embeddings_go_into_both_encoders(xl_folders, tmp_path, captured):
    clip_l, clip_g = vectors(2, WIDTH, 11), vectors(2, WIDTH_2, 12)
    save_sdxl(xl_folders.parent / "embeddings" / "xlstyle.safetensors", clip_l, clip_g)
    save_a1111_safetensors(xl_folders.parent / "embeddings" / "sd1style.safetensors", vectors(1, WIDTH, 13))
    engine = make_engine(xl_folders, tmp_path, default="tiny-sdxl")
    result = generate(engine, "a xlstyle circle, sd1style", model="tiny-sdxl")
    assert any("'sd1style'" in w and "SDXL" in w for w in result.warnings)
    pipeline = engine.models.get("tiny-sdxl").pipeline
    q, x = letter_ids(pipeline.tokenizer, "qx")
    q2, x2 = letter_ids(pipeline.tokenizer_2, "qx")
    expected, pooled = by_hand(pipeline, "a q x circle, sd1style", {
        "text_encoder": {q: clip_l[0], x: clip_l[1]}, "text_encoder_2": {q2: clip_g[0], x2: clip_g[1]}})
    assert torch.allclose(captured[-1]["prompt_embeds"], expected, atol=1e-6)
    assert torch.allclose(captured[-1]["pooled_prompt_embeds"], pooled, atol=1e-6)
    from webui.engine.embeddings import api_listing

    listing = api_listing(engine)
    assert listing["loaded"]["xlstyle"]["shape"] == WIDTH + WIDTH_2 and set(listing["skipped"]) == {"sd1style"}


def test_sd2_and_a_name_that_is_a_word_of_the_vocabulary(xl_folders, tmp_path, captured):
    """`a` is a CLIP token itself and `Style (v2)` holds brackets the prompt language reads: both are words."""
    first, second = vectors(1, WIDTH, 17), vectors(1, WIDTH, 18)
    save_a1111_safetensors(xl_folders.parent / "embeddings" / "a.safetensors", first)
    save_a1111_safetensors(xl_folders.parent / "embeddings" / "Style (v2).safetensors", second)
    engine = make_engine(xl_folders, tmp_path, default="tiny-sd2")
    result = generate(engine, "A circle, style (v2)", model="tiny-sd2")
    assert not result.warnings and "TI hashes: " in result.infotexts[0]
    pipeline = engine.models.get("tiny-sd2").pipeline
    q, x = letter_ids(pipeline.tokenizer, "qx")
    expected, _ = by_hand(pipeline, "q circle, x", {"text_encoder": {q: first[0], x: second[0]}})
    assert torch.allclose(captured[-1]["prompt_embeds"], expected, atol=1e-6)
    plain = generate(engine, "a circle", model="tiny-sd2", embeddings=False)
    assert "TI hashes" not in plain.infotexts[0]
    assert pipeline.text_encoder.get_input_embeddings().weight.shape[0] == 98


# --- the A1111 routes, through the real server and the webuiapi client --------------------------------

def test_the_embeddings_routes_with_webuiapi_and_requests_and_the_settings_checkbox(folders, tmp_path_factory, browser):
    import requests
    import webuiapi
    from conftest import serve_kiri

    save_a1111_safetensors(folders / "embeddings" / "apistyle.safetensors", vectors(2, WIDTH, 14))
    save_a1111_safetensors(folders / "embeddings" / "apiwide.safetensors", vectors(1, WIDTH_2, 15))
    server = serve_kiri(folders, tmp_path_factory, name="ti-outputs")
    info = next(server)
    try:
        port = int(info["url"].rstrip("/").rsplit(":", 1)[1])
        api = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler", steps=2)
        listing = api.get_embeddings()
        assert listing["loaded"] == {"apistyle": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                                  "shape": WIDTH, "vectors": 2}}
        assert set(listing["skipped"]) == {"apiwide"}
        save_a1111_safetensors(folders.parent / "embeddings" / "apinew.safetensors", vectors(1, WIDTH, 16))
        assert requests.post(info["url"] + "sdapi/v1/refresh-embeddings", timeout=30).status_code == 200
        listing = requests.get(info["url"] + "sdapi/v1/embeddings", timeout=30).json()
        assert set(listing["loaded"]) == {"apistyle", "apinew"}
        result = api.txt2img(prompt="a apistyle circle", width=64, height=64, seed=3)
        assert "TI hashes" in result.info["infotexts"][0]
        # The Settings tab turns them off for requests that do not ask.
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(info["url"])
        page.get_by_role("tab", name="Settings", exact=True).first.click()
        page.locator("#settings-use-embeddings input").uncheck()
        page.locator("#settings-apply").click()
        page.wait_for_function("document.querySelector('#settings-result')?.innerText.includes('Settings saved')",
                               timeout=60_000)
        page.close()
        assert info["engine"].settings.use_embeddings is False
        result = api.txt2img(prompt="a apistyle circle", width=64, height=64, seed=3)
        assert "TI hashes" not in result.info["infotexts"][0]
    finally:
        next(server, None)
