"""IP-Adapter weights and their image encoders on disk: which paths are which, the family an adapter
was trained for (read from its shapes without loading a tensor), and how both are read.

    models/ipadapter/ (also models/ip_adapter/, models/IP-Adapter/)
        `ip-adapter_sd15.safetensors`-style files: keys `image_proj.proj.weight` (the image projection,
        4 tokens) and `ip_adapter.<n>.to_k_ip.weight` / `.to_v_ip.weight` (one pair per cross-attention
        layer); `.bin` pickles ({"image_proj": {...}, "ip_adapter": {...}}) only with --allow-pickle, read
        with weights_only=True. IP-Adapter Plus / Full / FaceID files are listed with a problem (their
        image projection needs the encoder's hidden states or face embeddings, which Kiri does not feed yet).
    models/ControlNet/ (sd-webui-controlnet keeps them there too)
        only the files whose keys are an IP-Adapter's (and `ip-adapter*` pickles), so ControlNets stay out
    models/clip_vision/
        image encoders, as transformers `CLIPVisionModelWithProjection`: a folder (config.json +
        model.safetensors, what `save_pretrained` writes), or one `.safetensors` file in transformers'
        key names with its config beside it as `<name>.json` (or `<name>.config.json`). OpenCLIP-format
        single files (A1111's `clip_h.pth`) are listed with a problem naming what to do.

The family comes from the width the adapter's `to_k_ip` layers read (the checkpoint's cross-attention
width: 768 SD 1.x, 1024 SD 2.x, 2048 SDXL); whether it fits a loaded checkpoint is checked against the
UNet itself (that width and the number of cross-attention layers), so tiny test models are checked too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from webui.engine.models.catalog import PICKLE_SUFFIXES, CatalogEntry, describe_file
from webui.engine.models.families import FAMILIES, read_safetensors_header

__all__ = ["AdapterWeights", "ImageEncoder", "describe_adapter", "describe_any_adapter", "describe_encoder", "family_label",
           "family_of",
           "load_adapter", "load_encoder", "shapes_summary"]

# the width the adapter's key/value projections read -> family (the real checkpoints' cross-attention widths)
_CONTEXT_FAMILY = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_IP_KEY = re.compile(r"^ip_adapter\.(\d+)\.to_k_ip\.weight$")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def family_label(family: str | None) -> str:
    return FAMILIES.get(family or "", "unknown")


@dataclass(frozen=True)
class Summary:
    """What an adapter's shapes say: its variant, the width its cross-attention layers read, how many
    layers it has, the width of the image embedding it projects, and so its family."""

    variant: str  # "ip-adapter", or the name of a variant Kiri does not run
    cross_dim: int | None
    layers: int
    embed_dim: int | None
    family: str | None


def shapes_summary(shapes: dict[str, tuple[int, ...]]) -> Summary:
    """Flat key -> shape (`image_proj.proj.weight`, `ip_adapter.1.to_k_ip.weight`, ...) -> Summary."""
    proj = {k[len("image_proj."):]: v for k, v in shapes.items() if k.startswith("image_proj.")}
    if "proj.weight" in proj:
        variant = "ip-adapter"
    elif "latents" in proj:
        variant = "IP-Adapter Plus"
    elif "proj.3.weight" in proj:
        variant = "IP-Adapter Full"
    elif "perceiver_resampler.proj_in.weight" in proj or "norm.weight" in proj:
        variant = "IP-Adapter FaceID"
    else:
        variant = "unknown"
    cross = [shape for key, shape in shapes.items() if _IP_KEY.match(key) and len(shape) == 2]
    cross_dim = cross[0][1] if cross else None
    embed = proj.get("proj.weight")
    return Summary(variant, cross_dim, len(cross), embed[1] if embed and len(embed) == 2 else None,
                   family_of(shapes))


def family_of(shapes: dict[str, tuple[int, ...]]) -> str | None:
    """The family an adapter was trained for, from the width its to_k_ip layers read; None when unknown."""
    for key, shape in shapes.items():
        if _IP_KEY.match(key) and len(shape) == 2:
            return _CONTEXT_FAMILY.get(shape[1])
    return None


def _flat_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    header = read_safetensors_header(path)
    header.pop("__metadata__", None)
    return {k: tuple(v.get("shape", ())) for k, v in header.items() if isinstance(v, dict)}


def describe_adapter(path: Path, kind: str) -> CatalogEntry | None:
    """An IP-Adapter file: its family from its header; a file of other keys or a variant Kiri does not run
    is listed with the problem (pickles: read when loaded)."""
    entry = describe_file(path, kind)
    if entry is None or entry.format == "folder":
        return None
    if entry.format != "file":
        return entry
    try:
        shapes = _flat_shapes(path)
    except (OSError, ValueError) as exc:
        return replace(entry, problem=f"unreadable safetensors header: {exc}")
    return replace(entry, family=family_of(shapes), problem=_problem(shapes_summary(shapes), shapes))


CONTROLNET_FOLDERS = ("ControlNet", "controlnet")  # where sd-webui-controlnet users keep IP-Adapters too


def describe_adapter_among_controlnets(path: Path, kind: str) -> CatalogEntry | None:
    """An IP-Adapter file in models/ControlNet/ (sd-webui-controlnet's folder for both): listed only when its
    header says it is one Kiri can use (`ip-adapter*` pickles there too, by name), so ControlNets stay out."""
    if path.is_dir():
        return None
    if path.suffix.lower() in PICKLE_SUFFIXES:
        named = path.name.lower().replace("_", "-").startswith("ip-adapter")
        return describe_file(path, kind) if named else None
    entry = describe_adapter(path, kind)
    return entry if entry is not None and entry.problem is None else None


def describe_any_adapter(path: Path, kind: str) -> CatalogEntry | None:
    """The "ipadapter" kind's describe: every file in its own folders, IP-Adapters only among ControlNets."""
    if path.parent.name in CONTROLNET_FOLDERS:
        return describe_adapter_among_controlnets(path, kind)
    return describe_adapter(path, kind)


def _problem(summary: Summary, shapes: dict[str, Any]) -> str | None:
    if not any(k.startswith("image_proj.") for k in shapes) or not summary.layers:
        return "not an IP-Adapter file (it has no image_proj.* and ip_adapter.*.to_k_ip keys)"
    if summary.variant != "ip-adapter":
        return f"{summary.variant} files are not supported yet; plain IP-Adapter files (ip-adapter_sd15, ip-adapter_sdxl) are"
    return None


@dataclass
class AdapterWeights:
    """One IP-Adapter file's tensors (CPU, as written), as diffusers' loaders take them:
    {"image_proj": {"proj.weight", "proj.bias", "norm.weight", "norm.bias"}, "ip_adapter": {"1.to_k_ip.weight", ...}}."""

    name: str
    state: dict[str, dict[str, Any]]
    summary: Summary

    @property
    def family(self) -> str | None:
        return self.summary.family


def _nested(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    state: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if head in state and rest:
            state[head][rest] = value
    return state


def load_adapter(entry: CatalogEntry, device: Any, allow_pickle: bool) -> AdapterWeights:
    """The "ipadapter" loader: (entry, device choice, allow_pickle) -> AdapterWeights. The manager refuses
    pickles before this runs unless allow_pickle; they are read with weights_only=True."""
    import torch

    from webui.engine.core.errors import ModelLoadError

    suffix = entry.path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        state = _nested(load_file(str(entry.path)))
    elif suffix in PICKLE_SUFFIXES:
        import pickle

        try:
            raw = torch.load(str(entry.path), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
            raise ModelLoadError(f"{entry.path.name} could not be read safely: {str(exc).splitlines()[0][:200]}") from exc
        if isinstance(raw, dict) and isinstance(raw.get("image_proj"), dict) and isinstance(raw.get("ip_adapter"), dict):
            state = {"image_proj": dict(raw["image_proj"]), "ip_adapter": dict(raw["ip_adapter"])}
        elif isinstance(raw, dict):
            state = _nested(raw)
        else:
            raise ModelLoadError(f"{entry.path.name} holds no IP-Adapter state dict")
    else:
        raise ModelLoadError(f"{entry.path.name} is not an IP-Adapter file Kiri reads (.safetensors, or .bin with "
                             "--allow-pickle)")
    shapes = {f"{part}.{k}": tuple(v.shape) for part, tensors in state.items() for k, v in tensors.items()
              if isinstance(v, torch.Tensor)}
    summary = shapes_summary(shapes)
    problem = _problem(summary, shapes)
    if problem:
        raise ModelLoadError(f"cannot use {entry.name}: {problem}")
    return AdapterWeights(entry.name, state, summary)


# --- image encoders ------------------------------------------------------------------------------

def _config_beside(path: Path) -> Path | None:
    for candidate in (path.with_suffix(".json"), path.with_name(path.stem + ".config.json")):
        if candidate.exists():
            return candidate
    return None


def _read_config(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a config object")
    return data.get("vision_config", data) if "vision_config" in data else data


def describe_encoder(path: Path, kind: str) -> CatalogEntry | None:
    """A CLIP image encoder: a transformers folder, or one file with its config beside it."""
    if path.suffix.lower() == ".json":
        return None  # a file's config, not a model
    entry = describe_file(path, kind)
    if entry is None:
        return None
    config = path / "config.json" if entry.format == "folder" else _config_beside(path)
    if config is None or not config.exists():
        return replace(entry, problem=f"{path.name} needs its config beside it ({path.stem}.json, a transformers "
                                      "CLIPVisionConfig), or save the encoder as a transformers folder")
    try:
        _read_config(config)
    except (OSError, ValueError) as exc:
        return replace(entry, problem=f"unreadable config {config.name}: {exc}")
    if entry.format == "file":
        try:
            keys = _flat_shapes(path)
        except (OSError, ValueError) as exc:
            return replace(entry, problem=f"unreadable safetensors header: {exc}")
        if not any(k.startswith("vision_model.") for k in keys):
            return replace(entry, problem=f"{path.name} is not in transformers' CLIPVisionModelWithProjection key names "
                                          "(an OpenCLIP file?); save it with transformers' save_pretrained")
    return entry


def encoder_projection_dim(entry: CatalogEntry) -> int | None:
    """The width of the image embedding the encoder gives (its config's projection_dim)."""
    config = entry.path / "config.json" if entry.format == "folder" else _config_beside(entry.path)
    try:
        return int(_read_config(config)["projection_dim"]) if config is not None else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class ImageEncoder:
    """A CLIPVisionModelWithProjection and how it wants its pictures (square side, mean, std)."""

    name: str
    model: Any
    size: int
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    @property
    def projection_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def pixels(self, images: list[Any]) -> Any:
        """PIL pictures -> the encoder's input: the short side resized to `size` (bicubic), centre
        cropped, scaled to 0..1 and normalised, as CLIPImageProcessor does."""
        import numpy as np
        import torch
        from PIL import Image

        out = []
        for image in images:
            image = image.convert("RGB")
            scale = self.size / min(image.size)
            w, h = max(self.size, round(image.width * scale)), max(self.size, round(image.height * scale))
            image = image.resize((w, h), Image.BICUBIC)
            left, top = (w - self.size) // 2, (h - self.size) // 2
            image = image.crop((left, top, left + self.size, top + self.size))
            array = np.asarray(image, dtype=np.float32) / 255.0
            array = (array - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)
            out.append(torch.from_numpy(array.transpose(2, 0, 1).copy()))
        return torch.stack(out)

    def encode(self, images: list[Any]) -> Any:
        """The pictures' image embeddings ([n, projection_dim], float32 on the CPU)."""
        import torch

        param = next(self.model.parameters())
        with torch.inference_mode():
            pixels = self.pixels(images).to(device=param.device, dtype=param.dtype)
            return self.model(pixel_values=pixels).image_embeds.float().cpu()


def load_encoder(entry: CatalogEntry, device: Any, allow_pickle: bool) -> ImageEncoder:
    """The "clip_vision" loader: a CLIPVisionModelWithProjection on the device (half precision on a GPU)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from webui.engine.core.errors import ModelLoadError

    if entry.problem:
        raise ModelLoadError(f"cannot load {entry.name}: {entry.problem}")
    dtype = torch.float16 if device.device == "cuda" else torch.float32
    size, mean, std = 224, CLIP_MEAN, CLIP_STD
    if entry.format == "folder":
        model = CLIPVisionModelWithProjection.from_pretrained(str(entry.path), torch_dtype=dtype)
        processor = entry.path / "preprocessor_config.json"
        if processor.exists():
            try:
                data = json.loads(processor.read_text())
                crop = data.get("crop_size", data.get("size"))
                size = int(crop.get("height", crop.get("shortest_edge")) if isinstance(crop, dict) else crop)
                mean, std = tuple(data.get("image_mean", mean)), tuple(data.get("image_std", std))
            except (OSError, ValueError, TypeError, AttributeError):
                pass
        else:
            size = int(model.config.image_size)
    else:
        config = CLIPVisionConfig(**_read_config(_config_beside(entry.path)))
        if entry.path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(entry.path))
        else:
            state = torch.load(str(entry.path), map_location="cpu", weights_only=True)
        model = CLIPVisionModelWithProjection(config)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing:
            raise ModelLoadError(f"{entry.path.name} lacks {len(missing)} of the encoder's weights (e.g. {missing[0]})")
        model = model.to(dtype)
        size = int(config.image_size)
    model.eval().requires_grad_(False)
    return ImageEncoder(entry.name, model.to(device.device), size, tuple(mean), tuple(std))
