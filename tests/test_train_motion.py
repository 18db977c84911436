"""tools/train_motion.py without training: its clips show the captioned motion, its evaluator reads that
motion back from them, held-out combinations stay out of training, and its module fits the embedded kiri-shapes-ldm (a smoke run is a manual step)."""

from __future__ import annotations

import random

import pytest

from tools import kiri_phrasing as P
from tools import train_motion as T


@pytest.mark.parametrize("motion", list(T.MOTIONS))
def test_the_evaluator_reads_the_motion_of_a_true_clip(motion):
    rng = random.Random(3)
    for _ in range(3):
        clip, caption, name = T.motion_clip(rng, 8, motion)
        assert name == motion and T.MOTIONS[motion] in caption and clip.shape == (8, 64, 64, 3)
        assert T.measured_motion(list(clip)) == motion, caption


def test_a_still_clip_reads_as_still():
    rng = random.Random(0)
    clip, _, _ = T.motion_clip(rng, 8, "right")
    assert T.measured_motion([clip[0]] * 8) == "still"


def test_held_out_combinations_never_train_and_are_all_the_evaluation_uses():
    rng = random.Random(1)
    for _ in range(200):
        clip, caption, motion = T.motion_clip(rng, 8, None)
        found = T.W.detect(clip[0])[0][0]
        assert (found.colour, found.shape, motion) not in T.MOTION_HELD_OUT, caption
    for motion in T.MOTIONS:
        clip, caption, name = T.motion_clip(rng, 8, motion, held_out=True, plain=True)
        found = T.W.detect(clip[0])[0][0]
        assert name == motion and (found.colour, found.shape, motion) in T.MOTION_HELD_OUT
        assert caption.startswith("a ") and caption.endswith(" background") and T.MOTIONS[motion] in caption


def test_the_module_fits_the_embedded_image_model_and_starts_as_identity():
    import json

    import torch
    from diffusers import UNet2DConditionModel, UNetMotionModel

    config = json.loads((T.IMAGE_MODEL / "unet" / "config.json").read_text())
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(config)
    adapter = T.make_adapter(8, unet.config)
    motion = UNetMotionModel.from_unet2d(unet, adapter)
    assert set(T.motion_state(motion)) == set(adapter.state_dict())
    sample = torch.randn(1, 4, 8, 16, 16)
    text = torch.randn(8, 4, config["cross_attention_dim"])
    with torch.no_grad():
        video = motion(sample, 10, encoder_hidden_states=text).sample
        frames = unet(sample[0].permute(1, 0, 2, 3), 10, encoder_hidden_states=text).sample
    # Zero output projections: frame by frame, the untrained module leaves the image model's output as it was.
    assert torch.allclose(video[0].permute(1, 0, 2, 3), frames, atol=1e-4)


def _image_model_before_the_motion_words(folder):
    """The shipped LDM's tokenizer and text encoder as they were before extend_vocabulary (the added
    words and their embedding rows taken off again)."""
    import json
    import shutil

    from transformers import CLIPTextModel

    shutil.copytree(T.IMAGE_MODEL / "tokenizer", folder / "tokenizer")
    for name in ("tokenizer.json", "added_tokens.json"):
        (folder / "tokenizer" / name).unlink(missing_ok=True)
    config_path = folder / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("added_tokens_decoder", None)
    config_path.write_text(json.dumps(config))
    vocab = json.loads((folder / "tokenizer" / "vocab.json").read_text())
    encoder = CLIPTextModel.from_pretrained(str(T.IMAGE_MODEL / "text_encoder"))
    encoder.resize_token_embeddings(len(vocab))
    encoder.save_pretrained(str(folder / "text_encoder"))


def test_the_motion_words_join_the_vocabulary_and_every_old_prompt_reads_as_before(tmp_path):
    import shutil

    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

    _image_model_before_the_motion_words(tmp_path)
    before_tok = CLIPTokenizer.from_pretrained(str(tmp_path / "tokenizer"))
    before_enc = CLIPTextModel.from_pretrained(str(tmp_path / "text_encoder")).eval()
    rng = random.Random(5)
    prompts = [P.sample_phrase(T.W.sample_scene(rng), rng)[0] for _ in range(60)]
    prompts += ["cup of tea", "uppercase downtown", "a red circle on the right", "a red circle on the top"]

    assert T.extend_vocabulary(tmp_path) == list(T.MOTION_WORDS)
    assert T.extend_vocabulary(tmp_path) == []  # once only
    after_tok = CLIPTokenizer.from_pretrained(str(tmp_path / "tokenizer"))
    after_enc = CLIPTextModel.from_pretrained(str(tmp_path / "text_encoder")).eval()
    assert len(after_tok) == len(before_tok) + len(T.MOTION_WORDS)
    for word in T.MOTION_WORDS:
        assert len(after_tok(word, add_special_tokens=False).input_ids) == 1 and len(before_tok.tokenize(word)) > 1

    def features(tok, enc, texts):
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            return ids, enc(ids)[0]

    old_ids, old = features(before_tok, before_enc, prompts)
    new_ids, new = features(after_tok, after_enc, prompts)
    assert torch.equal(old_ids, new_ids) and torch.equal(old, new)
    # Each new word means to the image model what its source word does.
    _, moving_up = features(after_tok, after_enc, ["a red circle moving up", "a red circle growing"])
    _, to_top = features(after_tok, after_enc, ["a red circle to top", "a red circle large"])
    assert torch.allclose(moving_up, to_top)
    # Without tokenizer.json (what transformers 4's slow CLIPTokenizer reads: vocab.json, merges.txt and
    # the added words in added_tokens.json / tokenizer_config.json) the words tokenize the same.
    legacy = tmp_path / "legacy"
    shutil.copytree(tmp_path / "tokenizer", legacy)
    (legacy / "tokenizer.json").unlink()
    legacy_tok = CLIPTokenizer.from_pretrained(str(legacy))
    for text in prompts + ["a red circle moving up", "Green square SHRINKING, white background", "cup"]:
        assert legacy_tok(text).input_ids == after_tok(text).input_ids, text
    # The shipped LDM is exactly that extension.
    shipped = CLIPTextModel.from_pretrained(str(T.IMAGE_MODEL / "text_encoder"))
    assert torch.equal(shipped.get_input_embeddings().weight, after_enc.get_input_embeddings().weight)
    # The text encoder keeps the key names every transformers version reads.
    from safetensors import safe_open

    with safe_open(str(tmp_path / "text_encoder" / "model.safetensors"), "pt") as f:
        assert all(k.startswith("text_model.") for k in f.keys())
