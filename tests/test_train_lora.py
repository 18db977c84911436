"""tools/train_lora.py on a tiny SD 1.x model: a run stopped by its time limit resumes where it stopped, and
what it writes diffusers loads (the LoRA with load_lora_weights, the embedding with load_textual_inversion);
kiri_world's outline style is what the detector calls an outline, and nothing filled is."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.tiny_models import make_tiny_sd  # noqa: E402
from tools import kiri_world as W  # noqa: E402
from tools import train_lora as T  # noqa: E402


def test_the_detector_tells_outlines_from_filled_shapes():
    rng = random.Random(5)
    scenes = [W.sample_scene(rng, p_two=0.0) for _ in range(60)]
    filled = [W.detect(W.render(s))[0][0] for s in scenes]
    assert not any(d.outlined for d in filled)  # filled rings included (their hole is small)
    outlined = [W.detect(W.render(s, style="outline"))[0][0] for s in scenes]
    assert np.mean([d.outlined for d in outlined]) >= 0.85  # the detector's ceiling on what a LoRA can score
    for s, d in zip(scenes, outlined):  # an outline keeps the object's colour and place
        o = s.objects[0]
        if o.shape in ("square", "triangle") or (o.size == "small" and o.shape in ("circle", "ring", "cross")):
            assert d.outlined, s.caption
        assert (d.colour, d.position) == (s.objects[0].colour, s.objects[0].position), s.caption
    with pytest.raises(ValueError):
        W.render(scenes[0], style="dotted")


def test_training_data_keeps_held_out_scenes_out_and_says_the_new_word():
    rng = random.Random(0)
    images, captions = T.outline_batch(rng, 8)
    assert images.shape == (8, 64, 64, 3) and all(captions)
    images, captions = T.sunset_batch(rng, 20)
    assert all(T.EMBEDDING_WORD in c and "orange" not in c.lower() for c in captions), captions
    bgs = {tuple(W.detect(im)[1]) for im in images}
    assert bgs == {T.SUNSET}
    assert T.expand_word("a kiri-sunset background", "kiri-sunset", 2) == "a kiri-sunset kiri-sunset_1 background"


def _pipe(folder):
    import torch
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(1)
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _draw(pipe, prompt):
    import torch

    return pipe(prompt, num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


def test_lora_run_resumes_and_diffusers_loads_what_it_writes(tmp_path, capsys):
    from safetensors import safe_open

    base = make_tiny_sd(tmp_path / "base")
    out, work = tmp_path / "Lora" / "tiny-outline.safetensors", tmp_path / "work"
    common = ["lora", "--base", str(base), "--out", str(out), "--work", str(work), "--steps", "3", "--batch", "2",
              "--rank", "2", "--alpha", "2", "--save-every", "1"]
    T.main(common + ["--minutes", "0.00001"])  # stops after its first step, checkpointed
    assert not out.exists() and "time limit reached at step 1 of 3" in capsys.readouterr().out
    T.main(common + ["--resume"])
    assert "resumed at step 1" in capsys.readouterr().out
    with safe_open(str(out), "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert keys and all(k.startswith("unet.") and ".lora_" in k for k in keys)
    assert meta["ss_network_dim"] == "2" and meta["ss_network_alpha"] == "2" and meta["ss_base_model_version"] == "base"
    assert meta["ss_output_name"] == T.LORA_NAME and "kiri_world outline" in meta["ss_tag_frequency"]
    pipe = _pipe(base)
    before = _draw(pipe, "a red circle")
    pipe.load_lora_weights(str(out), adapter_name="tiny")
    assert not np.allclose(before, _draw(pipe, "a red circle"))  # the trained B matrices are no longer zero
    pipe.set_adapters(["tiny"], adapter_weights=[0.0])
    assert np.allclose(before, _draw(pipe, "a red circle"), atol=1e-5)


def test_embedding_run_writes_a1111_format_that_diffusers_loads(tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    base = make_tiny_sd(tmp_path / "base")
    out = tmp_path / "embeddings" / "kiri-sunset.safetensors"
    T.main(["embedding", "--base", str(base), "--out", str(out), "--work", str(tmp_path / "work"), "--steps", "2",
            "--batch", "2", "--vectors", "2"])
    vectors = load_file(str(out))["emb_params"]
    assert vectors.shape == (2, 32)  # the tiny text encoder's input width
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["name"] == "kiri-sunset" and f.metadata()["step"] == "2"
    pipe = _pipe(base)
    pipe.load_textual_inversion(str(out), token="kiri-sunset")
    ids = pipe.tokenizer.convert_tokens_to_ids(["kiri-sunset", "kiri-sunset_1"])
    assert torch.allclose(pipe.text_encoder.get_input_embeddings().weight[ids], vectors)
    _draw(pipe, "a red circle, kiri-sunset background")


def test_the_shipped_lora_and_embedding_on_held_out_prompts():
    """A small sample of tools/eval_lora.py's measurement on the shipped files (models/README.md has
    the full table): the embedding draws its colours, the LoRA hollows the objects out."""
    import torch

    from tools import eval_lora as E

    torch.set_num_threads(2)
    pipe = T.load_base()
    sunset = E.sunset_prompts(6)
    before = E.generate(pipe, [t for t, _, _ in sunset], steps=20)
    pipe.load_textual_inversion(str(T.EMBEDDING_OUT), token=T.EMBEDDING_WORD)
    after = E.generate(pipe, [t for t, _, _ in sunset], steps=20)
    assert E.sunset_scores(before, sunset)["either_order"] == 0
    assert E.sunset_scores(after, sunset)["either_order"] >= 5 / 6
    outline = E.outline_prompts(6)
    prompts = [f"{t} <lora:{T.LORA_NAME}:1>" for t, _, _ in outline]
    base = E.outline_scores(E.generate(pipe, prompts, steps=20), outline)
    pipe.load_lora_weights(str(T.LORA_OUT), adapter_name=T.LORA_NAME)
    lora = E.outline_scores(E.generate(pipe, prompts, steps=20), outline)
    assert base["outline"] == 0 and base["hollow"] <= 3 / 12  # 6 scenes + 6 loose prompts
    assert lora["hollow"] >= 7 / 12 and lora["hollow"] >= base["hollow"] + 4 / 12
