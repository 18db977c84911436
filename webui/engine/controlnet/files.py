"""ControlNet and T2I-Adapter files on disk: which paths are models of the "controlnet" kind, which family
they fit (read from the config or the safetensors header, never by loading), and how they load.

    models/ControlNet/, models/controlnet/, models/T2I-Adapter/
        <name>/config.json (+ diffusion_pytorch_model.safetensors)   diffusers folders: ControlNetModel,
            ControlNetUnionModel, T2IAdapter, SD3ControlNetModel, FluxControlNetModel
        <name>.safetensors                                         single files: A1111's control_*.safetensors
            (ldm layout, `control_model.` or bare `input_blocks.` keys) or diffusers keys; loaded with
            ControlNetModel.from_single_file
        <name>.pth / .pt / .ckpt                                    pickles: only with --allow-pickle, read with
            weights_only=True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from webui.engine.models.catalog import PICKLE_SUFFIXES, CatalogEntry, describe_file
from webui.engine.models.families import FAMILIES, family_from_unet_config, read_safetensors_header

__all__ = ["CLASSES", "ControlModel", "describe_controlnet", "family_label", "load_control_model", "model_type"]

KIND = "controlnet"
FOLDERS = ("ControlNet", "controlnet", "T2I-Adapter")
# diffusers class -> what it is ("controlnet" or "t2i")
CLASSES = {"ControlNetModel": "controlnet", "ControlNetUnionModel": "controlnet", "SD3ControlNetModel": "controlnet",
           "FluxControlNetModel": "controlnet", "T2IAdapter": "t2i"}
_CONTEXT_FAMILY = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


def family_label(family: str | None) -> str:
    return FAMILIES.get(family or "", "unknown")


def _config(path: Path) -> dict | None:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def family_of_config(config: dict) -> str | None:
    cls = config.get("_class_name", "")
    if cls == "SD3ControlNetModel":
        return "sd3"
    if cls == "FluxControlNetModel":
        return "flux"
    if cls == "ControlNetUnionModel":
        return "sdxl"
    if cls == "T2IAdapter":
        return "sdxl" if config.get("adapter_type") == "full_adapter_xl" else "sd1"
    if cls == "ControlNetModel":
        return family_from_unet_config(config)
    return None


def family_of_keys(header: dict) -> str | None:
    """A single file's family from its keys: the width its cross-attention reads (768 SD 1.x, 1024 SD 2.x,
    2048 SDXL), or SDXL's label embedding."""
    keys = [k for k in header if k != "__metadata__"]
    if any(k.endswith(("label_emb.0.0.weight", "add_embedding.linear_1.weight")) for k in keys):
        return "sdxl"
    for key in keys:
        if key.endswith(("attn2.to_k.weight",)):
            shape = header[key].get("shape", []) if isinstance(header[key], dict) else []
            if len(shape) == 2:
                return _CONTEXT_FAMILY.get(shape[1])
    return None


def describe_controlnet(path: Path, kind: str) -> CatalogEntry | None:
    """A ControlNet / T2I-Adapter: a diffusers folder (its config's class) or a weights file."""
    entry = describe_file(path, kind)
    if entry is None:
        return None
    if entry.format == "folder":
        config = _config(path)
        if config is None or config.get("_class_name") not in CLASSES:
            return None
        return replace(entry, format="diffusers", family=family_of_config(config))
    if entry.format == "file":
        try:
            header = read_safetensors_header(path)
        except (OSError, ValueError) as exc:
            return replace(entry, problem=str(exc))
        return replace(entry, family=family_of_keys(header))
    return entry


def model_type(entry: CatalogEntry) -> str:
    """"controlnet" or "t2i" (what a unit hands the pipeline: `controlnet` or `adapter`)."""
    if entry.format == "diffusers":
        config = _config(entry.path) or {}
        return CLASSES.get(config.get("_class_name", ""), "controlnet")
    return "t2i" if "t2i" in entry.name.lower() or "adapter" in entry.name.lower() else "controlnet"


@dataclass
class ControlModel:
    """One loaded ControlNet or T2I-Adapter (CPU, as read) and what it fits."""

    name: str
    module: Any
    family: str | None
    type: str  # "controlnet" or "t2i"

    @property
    def class_name(self) -> str:
        return type(self.module).__name__


def load_control_model(entry: CatalogEntry, device: Any, allow_pickle: bool) -> ControlModel:
    """The "controlnet" loader: (entry, device choice, allow_pickle) -> ControlModel, on the CPU (the add-on
    moves it to the checkpoint's device and dtype as per-model state). The manager refuses pickles before
    this runs unless allow_pickle; they are read with weights_only=True."""
    import diffusers

    from webui.engine.core.errors import ModelLoadError

    if entry.format == "diffusers":
        config = _config(entry.path) or {}
        cls_name = config.get("_class_name", "")
        cls = getattr(diffusers, cls_name, None)
        if cls is None:
            raise ModelLoadError(f"{entry.name}: diffusers {diffusers.__version__} has no {cls_name}")
        module = cls.from_pretrained(str(entry.path))
        return ControlModel(entry.name, module.eval(), family_of_config(config), CLASSES[cls_name])
    suffix = entry.path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ModelLoadError(f"{entry.path.name} is a pickle file: start Kiri with --allow-pickle to load it")
    if suffix == ".safetensors":
        header = read_safetensors_header(entry.path)
        family = family_of_keys(header)
        keys = [k for k in header if k != "__metadata__"]
        if keys and all(not k.startswith(("control_model.", "input_blocks.", "zero_convs.", "input_hint_block.",
                                           "middle_block", "time_embed")) for k in keys):
            # diffusers' own keys in a bare file: its config is not in the file, so it cannot be rebuilt here
            if any(k.startswith(("controlnet_cond_embedding.", "conv_in.")) for k in keys) and not any(
                    k.startswith("input_hint_block") for k in keys):
                raise ModelLoadError(f"{entry.path.name} holds diffusers keys without a config.json: put it in a folder "
                                     "with its config.json")
    else:
        family = None
    kwargs: dict[str, Any] = {}
    if family == "sdxl":
        kwargs["config"] = "diffusers/controlnet-canny-sdxl-1.0"
    try:
        module = diffusers.ControlNetModel.from_single_file(str(entry.path), local_files_only=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the reason goes into the message
        raise ModelLoadError(f"could not read {entry.path.name} as a ControlNet: {str(exc).splitlines()[0][:200]}") from exc
    return ControlModel(entry.name, module.eval(), family or family_of_config(dict(module.config)), "controlnet")
