#!/usr/bin/env python
"""Re-save the text encoders of diffusers folders with the key names every transformers version reads.

    python tools/make_portable.py                       # the shipped models/checkpoints/kiri-shapes-*
    python tools/make_portable.py FOLDER [FOLDER ...]   # any diffusers pipeline folders

transformers 5.6 flattened ``CLIPTextModel``: it now saves ``embeddings.*``, ``encoder.layers.*``,
``final_layer_norm.*`` where every earlier release (and every other tool's pinned one) expects
``text_model.embeddings.*`` ... and loads a flat file as all-missing, i.e. random text features.
Newer transformers strips the ``text_model.`` prefix when it loads (``base_model_prefix``), so the
prefixed layout loads everywhere. ``CLIPTextModelWithProjection`` still saves ``text_model.*`` +
``text_projection.weight`` and is left as it is.

Only tensor names change: each tensor is written back with the same dtype, shape and bytes (checked
after writing), and the file's metadata is kept. Running it twice changes nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ROOT / "models" / "checkpoints" / name for name in ("kiri-shapes-ldm", "kiri-shapes-dit")]
CLIP_TEXT_ARCHITECTURES = {"CLIPTextModel", "CLIPTextModelWithProjection"}
PREFIX = "text_model."
PROJECTION = "text_projection."


def portable_name(key: str) -> str:
    """The key as transformers < 5.6 names it in a CLIPTextModel / CLIPTextModelWithProjection."""
    if key.startswith(PREFIX) or key.startswith(PROJECTION):
        return key
    return PREFIX + key


def text_encoder_folders(pipeline_folder: Path) -> list[Path]:
    """The pipeline's components that are CLIP text encoders (from each component's config.json)."""
    found = []
    for config in sorted(pipeline_folder.glob("*/config.json")):
        try:
            architectures = set(json.loads(config.read_text()).get("architectures") or [])
        except (OSError, ValueError):
            continue
        if architectures & CLIP_TEXT_ARCHITECTURES:
            found.append(config.parent)
    return found


def make_file_portable(path: Path) -> bool:
    """Rename the tensors of one safetensors file in place; True if anything changed."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    renamed = {portable_name(key): tensor for key, tensor in tensors.items()}
    if len(renamed) != len(tensors):
        raise ValueError(f"{path}: both a flat and a text_model.-prefixed copy of some tensor; fix the file by hand")
    if list(renamed) == list(tensors):
        return False
    tmp = path.with_name(path.name + ".tmp")
    save_file(renamed, str(tmp), metadata=metadata or {"format": "pt"})
    with safe_open(str(tmp), "pt") as f:  # the bytes did not change, only the names
        for key, tensor in tensors.items():
            again = f.get_tensor(portable_name(key))
            if again.dtype != tensor.dtype or again.shape != tensor.shape or not torch.equal(again, tensor):
                tmp.unlink()
                raise RuntimeError(f"{path}: {key} changed while re-saving")
    tmp.replace(path)
    return True


def make_portable(pipeline_folder: Path) -> list[Path]:
    """Re-save every CLIP text encoder of a diffusers pipeline folder; returns the files changed."""
    changed = []
    for folder in text_encoder_folders(Path(pipeline_folder)):
        weights = sorted(folder.glob("*.safetensors"))
        if (folder / "model.safetensors.index.json").exists():
            raise ValueError(f"{folder}: sharded text encoders are not handled (the index names the old keys)")
        for path in weights:
            if make_file_portable(path):
                changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    folders = [Path(a) for a in (sys.argv[1:] if argv is None else argv)] or SHIPPED
    for folder in folders:
        if not (folder / "model_index.json").exists():
            print(f"{folder}: not a diffusers pipeline folder (no model_index.json)")
            return 2
        changed = make_portable(folder)
        print(f"{folder.name}: " + (", ".join(str(p.relative_to(folder)) for p in changed) + " re-saved" if changed else "already portable"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
