"""LoRA and LyCORIS files on disk: which paths are LoRAs, what their safetensors header says (kohya's
`ss_*` training metadata) read without loading a tensor, which family they were trained for, their
A1111 hash, and how their weights are read.

    models/Lora/, models/LyCORIS/ (also models/lora/)   `*.safetensors`; `*.pt`/`*.ckpt` with --allow-pickle
                                                        (read with weights_only=True)

Key layouts (what diffusers' `load_lora_weights` converts, through PEFT):
    kohya / A1111   lora_unet_<module>.lora_down.weight / .lora_up.weight / .alpha, lora_te_..., lora_te1_/te2_
                    (SDXL); LoCon is the same on conv layers
    diffusers/PEFT  unet.<module>.lora_A.weight / .lora_B.weight, text_encoder(_2).<module>...
                    (what `StableDiffusionPipeline.save_lora_weights` writes)
    LyCORIS LoHa (hada_w1_a ...), LoKr (lokr_w1 ...), IA3, (IA)^3, GLoRA, full diffs: refused, naming the
                    format, since diffusers does not convert them (LYCORIS_ONLY below).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from webui.engine.models.catalog import PICKLE_SUFFIXES, CatalogEntry, describe_file
from webui.engine.models.families import FAMILIES, read_safetensors_header

__all__ = ["LoraWeights", "Header", "addnet_hash", "describe_lora", "family_of", "load_weights", "read_header",
           "unsupported_format"]

# LyCORIS key suffixes diffusers 0.42 does not convert: (marker in a key, the format's name)
LYCORIS_ONLY = (("hada_w1", "LyCORIS LoHa"), ("lokr_w1", "LyCORIS LoKr"), (".on_input", "LyCORIS (IA)^3"),
                (".a1.weight", "LyCORIS GLoRA"), (".diff", "LyCORIS full (diff)"), (".oft_", "LyCORIS OFT"))
# ss_base_model_version / modelspec.architecture prefixes -> family
_VERSION_FAMILY = (("sdxl", "sdxl"), ("stable-diffusion-xl", "sdxl"), ("sd_v1", "sd1"), ("stable-diffusion-v1", "sd1"),
                   ("sd_v2", "sd2"), ("stable-diffusion-v2", "sd2"), ("sd3", "sd3"), ("stable-diffusion-3", "sd3"),
                   ("flux", "flux"))
# the width of the text its cross-attention reads -> family (the real models' sizes)
_CONTEXT_FAMILY = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


@dataclass(frozen=True)
class Header:
    """What a safetensors header says: tensor name -> shape, and the `__metadata__` strings."""

    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str]


def read_header(path: Path) -> Header:
    """The header of a .safetensors file, without reading a tensor."""
    data = read_safetensors_header(path)
    meta = data.pop("__metadata__", None) or {}
    shapes = {k: tuple(v.get("shape", ())) for k, v in data.items() if isinstance(v, dict)}
    return Header(shapes, {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {})


def parsed_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """The metadata as A1111's /sdapi/v1/loras gives it: values that are JSON objects (ss_tag_frequency,
    ss_dataset_dirs) parsed, the rest as written."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, str) and value[:1] == "{":
            try:
                out[key] = json.loads(value)
                continue
            except ValueError:
                pass
        out[key] = value
    return out


def unsupported_format(keys: Any) -> str | None:
    """The name of a LyCORIS format diffusers cannot load, when the keys are of one."""
    for key in keys:
        for marker, name in LYCORIS_ONLY:
            if marker in key:
                return name
    return None


def family_of(shapes: dict[str, tuple[int, ...]], metadata: dict[str, str]) -> str | None:
    """The family a LoRA was trained for: its metadata (ss_base_model_version, modelspec.architecture),
    else its keys (a second text encoder is SDXL's; joint/double blocks are SD3's/Flux's), else the width
    its cross-attention reads (768 SD 1.x, 1024 SD 2.x, 2048 SDXL). None when nothing says."""
    for key in ("ss_base_model_version", "modelspec.architecture"):
        value = metadata.get(key, "").lower()
        for prefix, family in _VERSION_FAMILY:
            if value.startswith(prefix):
                return family
    if metadata.get("ss_v2", "").lower() == "true":
        return "sd2"
    keys = list(shapes)
    if any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in keys):
        return "sdxl"
    if any("single_transformer_blocks" in k or k.startswith(("lora_unet_double_blocks", "lora_unet_single_blocks"))
           for k in keys):
        return "flux"
    if any("joint_blocks" in k or k.startswith("transformer.transformer_blocks") for k in keys):
        return "sd3"
    for key, shape in shapes.items():
        down = key.endswith(("attn2_to_k.lora_down.weight", "attn2.to_k.lora_A.weight", "attn2.to_k.lora_down.weight"))
        if down and len(shape) == 2 and shape[1] in _CONTEXT_FAMILY:
            return _CONTEXT_FAMILY[shape[1]]
    return None


def describe_lora(path: Path, kind: str) -> CatalogEntry | None:
    """A LoRA file, its family read from its header (pickles: unknown until loaded)."""
    entry = describe_file(path, kind)
    if entry is None or entry.format == "folder":
        return None
    if entry.format == "file":
        try:
            header = read_header(path)
        except (OSError, ValueError) as exc:
            from dataclasses import replace

            return replace(entry, problem=str(exc))
        from dataclasses import replace

        return replace(entry, family=family_of(header.shapes, header.metadata),
                       problem=_problem(header.shapes))
    return entry


def _problem(shapes: dict[str, tuple[int, ...]]) -> str | None:
    name = unsupported_format(shapes)
    if name is not None:
        return f"{name} files cannot be loaded by diffusers {_diffusers_version()}; LoRA and LoCon files can"
    return None


def _diffusers_version() -> str:
    try:
        from importlib.metadata import version

        return version("diffusers")
    except Exception:  # noqa: BLE001 - only for a message
        return ""


@lru_cache(maxsize=512)
def _addnet_hash(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if path.lower().endswith(".safetensors"):
            (header,) = struct.unpack("<Q", f.read(8))
            f.seek(8 + header)
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def addnet_hash(path: Path) -> str:
    """A1111's LoRA hash (`Lora hashes` in the infotext, civitai's AutoV3): the sha256 of a safetensors
    file's tensor bytes (after the header, so editing the metadata keeps it); of the whole file for a pickle."""
    stat = path.stat()
    return _addnet_hash(str(path), stat.st_size, stat.st_mtime)


@dataclass
class LoraWeights:
    """One LoRA file's tensors (CPU, as written) and what its header says."""

    name: str
    state: dict[str, Any]
    metadata: dict[str, str]
    family: str | None

    @property
    def denoiser(self) -> str | None:
        """What its denoiser weights are for: "unet" (SD 1.x/2.x/SDXL), "transformer" (SD3, Flux), None (none)."""
        if self.family in ("sd3", "flux") or any(k.startswith(("transformer.", "lora_transformer_")) for k in self.state):
            return "transformer"
        if any(k.startswith(("unet.", "lora_unet_")) for k in self.state):
            return "unet"
        return None

    @property
    def format(self) -> str:
        keys = self.state
        if any(k.startswith(("unet.", "text_encoder.", "text_encoder_2.", "transformer.")) for k in keys):
            return "diffusers"
        if any(k.startswith("lora_") for k in keys):
            return "kohya"
        return "unknown"


def load_weights(entry: CatalogEntry, device: Any, allow_pickle: bool) -> LoraWeights:
    """The "lora" loader: (entry, device choice, allow_pickle) -> LoraWeights. The manager refuses pickles
    before this runs unless allow_pickle; they are read with weights_only=True."""
    import torch

    from webui.engine.core.errors import ModelLoadError

    suffix = entry.path.suffix.lower()
    metadata: dict[str, str] = {}
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(entry.path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    elif suffix in PICKLE_SUFFIXES:
        import pickle

        try:
            state = torch.load(str(entry.path), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
            raise ModelLoadError(f"{entry.path.name} could not be read safely: {str(exc).splitlines()[0][:200]}") from exc
        while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ModelLoadError(f"{entry.path.name} holds no state dict of LoRA weights")
        state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    else:
        raise ModelLoadError(f"{entry.path.name} is not a LoRA file Kiri reads (.safetensors, or a pickle with --allow-pickle)")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    return LoraWeights(entry.name, state, metadata, family_of(shapes, metadata))


def family_label(family: str | None) -> str:
    return FAMILIES.get(family or "", "unknown")
