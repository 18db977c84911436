"""The prompt layers together, as one A1111 prompt uses them: a style, weights and editing, a LoRA
tag and a textual inversion word in one request; each still counts, and the checkpoint is the same
after."""

from __future__ import annotations

import numpy as np
import torch

from test_lora import _image, _plain_weights, lora_engine, lora_models_dir  # noqa: F401 - fixtures


def _with_embedding(lora_models_dir, engine, word: str):
    from safetensors.torch import save_file

    width = engine.models.get("tiny-sd").pipeline.text_encoder.get_input_embeddings().weight.shape[1]
    folder = lora_models_dir / "embeddings"
    folder.mkdir(exist_ok=True)
    vectors = torch.randn(2, width, generator=torch.Generator().manual_seed(3))
    save_file({"emb_params": vectors}, str(folder / f"{word}.safetensors"))
    engine.catalog.scan()


def test_lora_embedding_and_weights_in_one_prompt(lora_models_dir, lora_engine):
    _with_embedding(lora_models_dir, lora_engine, "kiricombo")
    pipe = lora_engine.models.get("tiny-sd").pipeline
    unet_before, te_before = _plain_weights(pipe.unet), _plain_weights(pipe.text_encoder)
    plain, _ = _image(lora_engine, "a (red:1.0) circle")
    same, _ = _image(lora_engine, "a red circle")
    assert np.array_equal(plain, same)  # (x:1.0) is x

    full_prompt = "a (red:1.3) circle kiricombo, [blue:green:0.5] <lora:shapes-outline:0.8>"
    full, result = _image(lora_engine, full_prompt)
    info = result.infotexts[0]
    assert info.startswith(full_prompt + "\n")
    assert 'Lora hashes: "shapes-outline: ' in info and 'TI hashes: "kiricombo: ' in info
    # each layer counts: without the LoRA, without the embedding's word, without the weight
    for other in ("a (red:1.3) circle kiricombo, [blue:green:0.5]",
                  "a (red:1.3) circle, [blue:green:0.5] <lora:shapes-outline:0.8>",
                  "a red circle kiricombo, [blue:green:0.5] <lora:shapes-outline:0.8>"):
        picture, _ = _image(lora_engine, other)
        assert not np.array_equal(picture, full), other
    # and the same request again is the same picture; a plain one after is the plain picture
    again, _ = _image(lora_engine, full_prompt)
    assert np.array_equal(again, full)
    after, _ = _image(lora_engine, "a red circle")
    assert np.array_equal(after, plain)
    for before, module in ((unet_before, pipe.unet), (te_before, pipe.text_encoder)):
        now = _plain_weights(module)
        shared = [k for k in before if k in now and now[k].shape == before[k].shape]
        assert all(torch.equal(now[k], before[k]) for k in shared)
    # the text encoder's own token rows are untouched by the embedding's added rows
    rows = pipe.text_encoder.get_input_embeddings().weight
    original = te_before[next(k for k in te_before if k.endswith("token_embedding.weight"))]
    assert torch.equal(rows[: original.shape[0]], original)
