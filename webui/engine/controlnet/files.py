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
        if any(k.startswith(("image_proj.", "ip_adapter.")) for k in header):
            return None  # an IP-Adapter kept beside the ControlNets (the ipadapter kind lists it)
        return replace(entry, family=family_of_keys(header))
    if path.stem.lower().replace("_", "-").startswith("ip-adapter"):
        return None  # an IP-Adapter pickle, by sd-webui-controlnet's file names
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
    if suffix == ".safetensors":
        shapes = {k: tuple(v.get("shape", ())) for k, v in header.items() if isinstance(v, dict)}
        original = ldm_controlnet_config(shapes)
        if original is not None:  # the layout read from the keys: no config to fetch from the Hub
            try:
                module = _from_ldm(entry.path, original)
            except Exception as exc:  # noqa: BLE001 - the reason goes into the message
                raise ModelLoadError(f"could not read {entry.path.name} as a ControlNet: "
                                     f"{str(exc).splitlines()[0][:200]}") from exc
            return ControlModel(entry.name, module.eval(), family or family_of_config(dict(module.config)), "controlnet")
    try:
        module = diffusers.ControlNetModel.from_single_file(str(entry.path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - the reason goes into the message
        raise ModelLoadError(f"could not read {entry.path.name} as a ControlNet: {str(exc).splitlines()[0][:200]}") from exc
    return ControlModel(entry.name, module.eval(), family or family_of_config(dict(module.config)), "controlnet")


def _from_ldm(path: Path, original: dict) -> Any:
    """An ldm-layout ControlNet file as a diffusers ControlNetModel, through diffusers' own key conversion
    (its from_single_file(original_config=...) path for ControlNets fails in 0.42: config built here)."""
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint, create_unet_diffusers_config_from_ldm
    from safetensors.torch import load_file

    checkpoint = load_file(str(path))
    unet = create_unet_diffusers_config_from_ldm(original, checkpoint)
    control = original["model"]["params"]["control_stage_config"]["params"]
    keys = ("in_channels", "down_block_types", "block_out_channels", "layers_per_block", "cross_attention_dim",
            "attention_head_dim", "use_linear_projection", "class_embed_type", "addition_embed_type",
            "addition_time_embed_dim", "projection_class_embeddings_input_dim", "transformer_layers_per_block")
    config = {"conditioning_channels": control["hint_channels"], **{k: unet.get(k) for k in keys}}
    config = {k: v for k, v in config.items() if v is not None or k in ("class_embed_type", "addition_embed_type")}
    state = convert_controlnet_checkpoint(checkpoint, config)
    model = ControlNetModel(**config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"{len(missing)} weights missing (e.g. {missing[0]})")
    return model


def ldm_controlnet_config(shapes: dict[str, tuple[int, ...]]) -> dict | None:
    """The original (ldm, cldm_v15.yaml-like) config of an A1111 ControlNet file, read from its tensors' names and
    shapes, for diffusers' from_single_file (which otherwise fetches a config from the Hub). None when the keys
    are not of that layout. The head count is not in the weights: 8 heads (SD 1.x), 64-wide heads otherwise."""
    import re

    prefix = "control_model." if any(k.startswith("control_model.") for k in shapes) else ""
    own = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
    first = own.get("input_blocks.0.0.weight")
    hint = own.get("input_hint_block.0.weight")
    if first is None or hint is None or len(first) != 4:
        return None
    channels = first[0]
    blocks = sorted({int(k.split(".")[1]) for k in own if k.startswith("input_blocks.")})
    ops = [i for i in blocks if f"input_blocks.{i}.0.op.weight" in own]
    levels = len(ops) + 1
    per_level = (len(blocks) - 1 - len(ops)) // levels
    if per_level < 1:
        return None
    mult, attention, depth = [], [], []
    context = None
    linear = False
    for level in range(levels):
        block = 1 + level * (per_level + 1)
        out = own.get(f"input_blocks.{block}.0.out_layers.3.weight")
        if out is None:
            return None
        mult.append(out[0] // channels)
        layers = {int(m.group(1)) for k in own for m in [re.match(rf"input_blocks\.{block}\.1\.transformer_blocks\.(\d+)\.", k)] if m}
        depth.append(len(layers))
        if layers:
            attention.append(2 ** level)
            to_k = own.get(f"input_blocks.{block}.1.transformer_blocks.0.attn2.to_k.weight")
            context = to_k[1] if to_k else context
            linear = len(own.get(f"input_blocks.{block}.1.proj_in.weight", ())) == 2
    params: dict[str, Any] = {
        "image_size": 32, "in_channels": first[1], "out_channels": first[1], "model_channels": channels,
        "attention_resolutions": attention, "num_res_blocks": per_level, "channel_mult": mult,
        "transformer_depth": depth if len({d for d in depth if d}) > 1 else max(depth + [1]),
        "context_dim": context, "use_linear_in_transformer": linear,
    }
    if context == 768:
        params["num_heads"] = 8
    else:
        params["num_head_channels"] = 64 if channels % 64 == 0 else channels // 8
    label = own.get("label_emb.0.0.weight")
    if label is not None:
        params.update(num_classes="sequential", adm_in_channels=label[1])
    control = {**params, "hint_channels": hint[1]}
    return {"model": {"params": {"unet_config": {"params": params}, "control_stage_config": {"params": control},
                                 "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}}}}}
