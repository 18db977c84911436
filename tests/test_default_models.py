"""Kiri's embedded default models: they load, generate 64x64 pictures reproducibly, and follow prompts.

The adherence checks read pictures back with the OpenCV detector of tools/kiri_world.py on held-out
prompts (colour x shape x position combinations never seen in training) with a generous threshold:
they catch a broken pipeline (wrong scheduler, text encoder, VAE scaling...), not a slightly worse model.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import kiri_phrasing as P  # noqa: E402
from tools import kiri_world as W  # noqa: E402

CHECKPOINTS = ROOT / "models" / "checkpoints"
MODELS = ["kiri-shapes-ldm", "kiri-shapes-dit"]


# ---- the world and its detector (no torch) ------------------------------------------------------

def test_world_is_reproducible():
    a, ca, _ = W.dataset(20, seed=3)
    b, cb, _ = W.dataset(20, seed=3)
    assert np.array_equal(a, b) and ca == cb
    assert a.shape == (20, 64, 64, 3) and a.dtype == np.uint8


def test_training_scenes_exclude_held_out_combinations():
    rng = random.Random(0)
    for _ in range(2000):
        scene = W.sample_scene(rng)
        assert not any(W.is_held_out(o) for o in scene.objects)
    for scene in W.eval_prompts(24):
        assert all(W.is_held_out(o) for o in scene.objects)


def test_caption_grammar_round_trips():
    _, captions, scenes = W.dataset(200, seed=5)
    for cap, scene in zip(captions, scenes):
        parsed = W.parse_caption(cap)
        assert parsed is not None and parsed.caption == cap


def test_detector_reads_clean_scenes():
    images, _, scenes = W.dataset(300, seed=7, held_out="any")
    scores = [W.score(im, sc) for im, sc in zip(images, scenes)]
    for key in ("colour", "shape", "position", "size"):
        assert np.mean([s[key] for s in scores]) >= 0.95, key


# ---- the shipped models, through Kiri's own catalog, loader and engine ---------------------------

@pytest.fixture(scope="module")
def kiri(tmp_path_factory):
    """An engine on the repository's own models/ folder, on the CPU."""
    from webui.bootstrap import build_engine
    from webui.engine.settings import Settings
    from webui.engine.core.devices import DeviceChoice

    settings = Settings(models_dir=ROOT / "models", outputs_dir=tmp_path_factory.mktemp("outputs"), save_images=False)
    return build_engine(settings, DeviceChoice("cpu"))


@pytest.fixture(scope="module", params=MODELS)
def loaded(request, kiri):
    """(engine, loaded model) for each default model, loaded through the catalog."""
    return kiri, kiri.load_model(request.param)


def _gen(engine, prompt: str, seed: int, steps: int = 20) -> np.ndarray:
    from webui.engine.generation.requests import Txt2ImgRequest

    result = engine.txt2img(Txt2ImgRequest(prompt=prompt, seed=seed, steps=steps, width=64, height=64))
    assert not result.warnings, result.warnings
    return np.asarray(result.images[0].convert("RGB"))


def test_the_ldm_is_the_default_on_a_fresh_checkout(kiri):
    names = {e.name: e for e in kiri.catalog.scan()}
    assert set(MODELS) <= set(names)
    assert names["kiri-shapes-ldm"].family == "sd1" and names["kiri-shapes-dit"].family == "sd3"
    assert names["kiri-shapes-dit"].prediction == "flow"
    assert kiri.default_entry().name == "kiri-shapes-ldm"
    assert all(e.native_size == 64 for e in names.values() if e.name in MODELS)


def test_weights_are_small_safetensors():
    total = 0
    for m in MODELS:
        files = list((CHECKPOINTS / m).rglob("*"))
        assert not [f for f in files if f.suffix in {".bin", ".ckpt", ".pt", ".pth"}]
        total += sum(f.stat().st_size for f in files if f.suffix == ".safetensors")
    assert total < 25 * 1024 * 1024


def test_tokenizer_has_every_caption_word_as_one_token(loaded):
    # The template grammar's words and the free phrasings' (synonyms, plurals, wordings of places).
    tokenizer = loaded[1].pipeline.tokenizer
    for word in P.vocabulary():
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word


def test_example_prompts_show_short_and_long_phrasings(loaded):
    examples = loaded[1].entry.example_prompts()
    assert len(examples) >= 4
    specs = [P.parse(e) for e in examples]
    assert all(spec is not None and spec.objects for spec in specs), examples
    # the range a newcomer needs: a bare prompt and a full template caption
    assert any(len(e.split()) <= 3 for e in examples)
    assert any(W.parse_caption(e) is not None for e in examples)


def test_generates_64px_float32(loaded):
    import torch

    engine, model = loaded
    denoiser = getattr(model.pipeline, "unet", None) or model.pipeline.transformer
    assert denoiser.dtype == torch.float32 and model.pipeline.vae.dtype == torch.float32
    image = _gen(engine, "a large red circle in the centre, blue background", 0, steps=5)
    assert image.shape == (64, 64, 3)


def test_same_seed_is_bit_identical(loaded):
    engine = loaded[0]
    prompt = "a large green triangle at the bottom, white background"
    a, b, c = (_gen(engine, prompt, seed, steps=10) for seed in (123, 123, 124))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_follows_held_out_prompts(loaded):
    engine = loaded[0]
    all_scenes = W.eval_prompts(12, seed=7)
    scenes = [all_scenes[i] for i in (0, 1, 2, 3, 4, 7)]  # 6 held-out prompts, one per shape
    images = [_gen(engine, s.caption, seed) for seed, s in enumerate(scenes)]
    scores = [W.score(im, sc) for im, sc in zip(images, scenes)]
    colour = np.mean([s["colour"] for s in scores])
    position = np.mean([s["position"] for s in scores])
    shape = np.mean([s["shape"] for s in scores])
    found = sum(bool(W.detect(im)[0]) for im in images)
    # Chance is 1/8 for colour, 1/5 for position and about 1/6 for shape; both models score over 90% on
    # colour and position and about 80% on shape over 48 such prompts (models/README.md; the DiT shipped
    # before issue 32 drew blobs: 17% shape).
    assert found >= 5, f"an object in only {found} of 6 pictures"
    assert colour >= 0.6, f"colour accuracy {colour:.2f}"
    assert position >= 0.6, f"position accuracy {position:.2f}"
    assert shape >= 0.5, f"shape accuracy {shape:.2f}"


def test_follows_free_phrasings(loaded):
    """Short and loose prompts: held-out scenes phrased as newcomers type them (bare, reordered,
    synonyms, noisy; held-out phrasings included), judged only on what each prompt states."""
    import random

    engine = loaded[0]
    rng = random.Random(5)
    scenes = W.eval_prompts(12, seed=11)
    families = ("bare", "reordered", "synonyms", "noisy")
    pairs = [P.phrase(s, families[i % len(families)], rng, split="eval") for i, s in enumerate(scenes[:8])]
    scores = [P.score_spec(_gen(engine, caption, 40 + i), spec) for i, (caption, spec) in enumerate(pairs)]

    def share(key):
        vals = [s[key] for s in scores if s[key] is not None]
        return np.mean(vals) if vals else 1.0

    # Over 48 such prompts per family the LDM scores colour 90-96% and the DiT 92-100%, shape 75-81%
    # and 46-81% (models/README.md); before the retraining on free phrasings both scored 0-44% colour
    # (bare: 0-6%), and the DiT before issue 32 drew blobs (shape 8-21%).
    assert share("colour") >= 0.6, (share("colour"), [c for c, _ in pairs])
    assert share("shape") >= 0.4, (share("shape"), [c for c, _ in pairs])


def test_the_text_to_image_tab_offers_the_models_example_prompts(kiri, tmp_path):
    import gradio as gr

    from webui.ui.app import build

    app = build(kiri, tmp_path / "settings.json")
    datasets = [b for b in app.blocks.values() if isinstance(b, gr.Dataset) and b.elem_id == "txt2img-examples"]
    assert len(datasets) == 1 and datasets[0].visible
    shown = [sample[0] for sample in datasets[0].samples]
    assert shown == kiri.current_entry().example_prompts()


def test_the_model_status_line_says_what_is_loaded(kiri):
    from webui.ui.model_picker import _status

    loaded = kiri.load_model("kiri-shapes-ldm")
    assert _status(kiri).startswith("Loaded **kiri-shapes-ldm** (SD 1.x, cpu)")
    kiri.models.loading = kiri.catalog.find("kiri-shapes-dit")  # as while another model is read from disk
    try:
        assert _status(kiri) == "Loading **kiri-shapes-dit**…"
    finally:
        kiri.models.loading = None
    assert kiri.models.current is loaded


def test_inpainting_adds_the_prompted_object_in_the_mask_and_keeps_the_rest(loaded):
    """A red circle on the left; repaint the right half asking for a yellow square there as well."""
    from PIL import Image

    from webui.engine.generation.img2img import Img2ImgRequest

    engine, model = loaded
    picture = Image.fromarray(W.render(W.scene_from_parts([("large", "red", "circle", "left")], ("blue",))))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))
    prompt = "a large red circle on the left and a large yellow square on the right, blue background"
    added = 0
    for seed in range(4):
        result = engine.img2img(Img2ImgRequest(prompt=prompt, init_image=picture, mask=mask, mask_blur=0, denoising_strength=1.0,
                                               inpainting_fill=1, seed=seed, steps=20, width=64, height=64, model=model.name))
        out = np.asarray(result.images[0].convert("RGB"))
        assert np.array_equal(out[:, :32], np.asarray(picture)[:, :32])  # outside the mask: untouched
        objects, _ = W.detect(out)
        added += any(o.colour == "yellow" and o.bbox[0] + o.bbox[2] / 2 >= 32 for o in objects)
    assert added >= 3, f"a yellow object appeared in the mask for {added} of 4 seeds"
