"""The shipped models load in the transformers and diffusers versions other tools pin.

transformers 5.6 flattened CLIPTextModel (its state dict lost the `text_model.` prefix); every
earlier release looks for `text_model.embeddings...`, and loading a flat file there leaves all of
the text encoder random. The shipped text encoders carry the older names (tools/make_portable.py,
and the training script's save step), which transformers 5.24 still loads with nothing missing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "models" / "checkpoints"
TEXT_ENCODERS = [
    ("kiri-shapes-ldm", "text_encoder"),
    ("kiri-shapes-dit", "text_encoder"),
    ("kiri-shapes-dit", "text_encoder_2"),
]
PROMPT = "a large red circle in the centre, blue background"


def _architecture(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text())["architectures"][0]


def legacy_keys(folder: Path) -> set[str]:
    """Every key transformers < 5.6 expects in this text encoder's state dict: the current
    model's own names with the `text_model.` prefix that older CLIPTextModel kept (the projection,
    where there is one, sits beside it as `text_projection.weight`). Buffers that are not saved
    (position_ids) are not in a state dict and not expected."""
    import transformers

    config = transformers.CLIPTextConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = transformers.CLIPTextModel(config)  # the encoder proper, flat or not
    inner = {key.removeprefix("text_model.") for key in model.state_dict()}
    expected = {"text_model." + key for key in inner}
    if _architecture(folder) == "CLIPTextModelWithProjection":
        expected.add("text_projection.weight")
    return expected


def _stored(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("model,component", TEXT_ENCODERS)
def test_shipped_text_encoders_have_the_key_names_older_transformers_expect(model, component):
    from webui.engine.models.families import read_safetensors_keys

    folder = CHECKPOINTS / model / component
    keys = set(read_safetensors_keys(folder / "model.safetensors"))
    expected = legacy_keys(folder)
    assert len(expected) >= 36  # 2 layers x 16 + embeddings (2) + final norm (2)
    assert expected - keys == set(), "an older transformers would load these as missing (random)"
    assert keys - expected == set(), "an older transformers would report these as unexpected"


@pytest.mark.parametrize("model,component", TEXT_ENCODERS)
def test_transformers_loads_them_with_nothing_missing_or_unexpected(model, component):
    import transformers

    folder = CHECKPOINTS / model / component
    cls = getattr(transformers, _architecture(folder))
    loaded, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert not info["error_msgs"], info
    # every weight is the stored one, whatever name the installed transformers uses for it
    stored = {key.removeprefix("text_model."): tensor for key, tensor in _stored(folder).items()}
    state = {key.removeprefix("text_model."): tensor for key, tensor in loaded.state_dict().items()}
    assert set(state) == set(stored)
    for key, tensor in state.items():
        assert torch.equal(tensor, stored[key]), key


@pytest.fixture(scope="module")
def kiri(tmp_path_factory):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=ROOT / "models", outputs_dir=tmp_path_factory.mktemp("out"), save_images=False)
    return build_engine(settings, DeviceChoice("cpu"))


def _generate(engine, model: str) -> np.ndarray:
    from webui.engine.generation.requests import Txt2ImgRequest

    result = engine.txt2img(Txt2ImgRequest(prompt=PROMPT, seed=11, steps=6, width=64, height=64, model=model))
    assert not result.warnings, result.warnings
    return np.asarray(result.images[0].convert("RGB"))


@pytest.mark.parametrize("model", ["kiri-shapes-ldm", "kiri-shapes-dit"])
def test_the_engine_draws_the_same_pictures_as_from_the_flat_layout(kiri, model):
    """The flat layout (as transformers 5.24 saves a CLIPTextModel) and the portable one are the
    same weights: a pipeline whose text encoders are built from the flat names draws, from the same
    seed, the very picture Kiri's catalog and engine draw from the shipped files."""
    import transformers

    portable = _generate(kiri, model)
    pipeline = kiri.load_model(model).pipeline
    originals = {}
    try:
        for name, component in TEXT_ENCODERS:
            if name != model:
                continue
            folder = CHECKPOINTS / model / component
            config = transformers.CLIPTextConfig.from_pretrained(folder)
            flat = {key.removeprefix("text_model."): tensor for key, tensor in _stored(folder).items()}
            if _architecture(folder) == "CLIPTextModel":
                rebuilt = transformers.CLIPTextModel(config)
                target = rebuilt.text_model if hasattr(rebuilt, "text_model") else rebuilt
                target.load_state_dict(flat, strict=True)
            else:
                rebuilt = transformers.CLIPTextModelWithProjection(config)
                projection = flat.pop("text_projection.weight")
                rebuilt.text_model.load_state_dict(flat, strict=True)
                rebuilt.text_projection.load_state_dict({"weight": projection}, strict=True)
            originals[component] = getattr(pipeline, component)
            setattr(pipeline, component, rebuilt.eval())
        assert originals
        flat_picture = _generate(kiri, model)
    finally:
        for component, module in originals.items():
            setattr(pipeline, component, module)
    assert portable.std() > 10  # a picture, not a flat field
    assert np.array_equal(portable, flat_picture)


def _flat_copy(tmp_path: Path) -> Path:
    """A pipeline folder whose CLIPTextModel is stored flat, as transformers 5.24 saves it."""
    from safetensors.torch import save_file

    folder = tmp_path / "pipe"
    (folder / "text_encoder").mkdir(parents=True)
    shutil.copy(CHECKPOINTS / "kiri-shapes-ldm" / "model_index.json", folder)
    shutil.copy(CHECKPOINTS / "kiri-shapes-ldm" / "text_encoder" / "config.json", folder / "text_encoder")
    flat = {k.removeprefix("text_model."): v for k, v in _stored(CHECKPOINTS / "kiri-shapes-ldm" / "text_encoder").items()}
    save_file(flat, str(folder / "text_encoder" / "model.safetensors"), metadata={"format": "pt", "note": "kept"})
    return folder


def test_make_portable_renames_only_and_twice_changes_nothing(tmp_path):
    from safetensors import safe_open

    from tools.make_portable import make_portable

    folder = _flat_copy(tmp_path)
    path = folder / "text_encoder" / "model.safetensors"
    before = _stored(folder / "text_encoder")
    assert not any(k.startswith("text_model.") for k in before)
    assert make_portable(folder) == [path]
    after = _stored(folder / "text_encoder")
    assert set(after) == legacy_keys(folder / "text_encoder")
    for key, tensor in before.items():
        assert torch.equal(after["text_model." + key], tensor) and after["text_model." + key].dtype == tensor.dtype
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"format": "pt", "note": "kept"}
    stamp = path.stat().st_mtime_ns
    assert make_portable(folder) == []
    assert path.stat().st_mtime_ns == stamp


def test_retraining_saves_the_portable_layout(tmp_path, monkeypatch):
    """The training script's save step writes what make_portable would (so a retrain keeps it)."""
    from diffusers import StableDiffusionPipeline

    from tools import ldm_kit as T
    from webui.engine.models.families import read_safetensors_keys

    train_dir = tmp_path / "train"
    (train_dir / "tokenizer").mkdir(parents=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(CHECKPOINTS / "kiri-shapes-ldm" / "tokenizer" / name, train_dir / "tokenizer" / name)
    monkeypatch.setattr(T, "TRAIN_DIR", train_dir)
    pipe = StableDiffusionPipeline.from_pretrained(CHECKPOINTS / "kiri-shapes-ldm", safety_checker=None, requires_safety_checker=False)
    out = tmp_path / "out"
    T.save_pipeline(pipe, out, pipe.tokenizer)
    keys = set(read_safetensors_keys(out / "text_encoder" / "model.safetensors"))
    assert keys == legacy_keys(out / "text_encoder")
