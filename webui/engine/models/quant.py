"""Quantised checkpoints: what a file's weights are stored as, read from its header only.

Two kinds that Forge and ComfyUI users download:

- **GGUF** single files (`flux1-dev-Q8_0.gguf`, `sd3.5_large-Q4_K_M.gguf`): a diffusion transformer alone,
  quantised block by block. diffusers loads them with `GGUFQuantizationConfig` (the weights stay
  quantised in memory, each layer dequantised when it runs), through the `gguf` package
  (requirements-gguf.txt). The text encoders and VAE come from a diffusers folder of the same family.
- **fp8** safetensors (`flux1-dev-fp8.safetensors`, "fp8_e4m3fn" SDXL merges): float8 tensors. Loaded
  with diffusers' layerwise casting, the denoiser keeps them in fp8 and computes each layer in the
  device's compute dtype.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GGUFInfo", "gguf_info", "fp8_dtype", "fp8_of_folder", "GGUF_FAMILIES", "FP8_DTYPES", "gguf_available"]

# safetensors dtype name -> torch dtype name
FP8_DTYPES = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
# The families whose transformer diffusers reads from a GGUF file, and its class.
GGUF_FAMILIES = {"flux": "FluxTransformer2DModel", "sd3": "SD3Transformer2DModel"}
INSTALL_GGUF = "pip install -r requirements-gguf.txt"
FLOAT_TYPES = frozenset({"F32", "F16", "BF16", "F64"})


def gguf_available() -> bool:
    try:
        import gguf  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class GGUFInfo:
    family: str | None
    quantization: str | None  # "Q8_0", "Q4_K", "F16": the type that holds most of the weights
    problem: str | None
    shape: dict | None = None  # the transformer config values its tensors fix (transformer_shape)


def _family_of_transformer(names: set[str]) -> str | None:
    """Flux or SD3 from a transformer's tensor names, in the original layout (ComfyUI's, city96's
    GGUF files) or in diffusers' own."""
    def has(prefix: str) -> bool:
        return any(n.startswith(prefix) or n.startswith("model.diffusion_model." + prefix) for n in names)

    if has("double_blocks.") or has("single_transformer_blocks."):
        return "flux"
    if has("joint_blocks.") or (has("transformer_blocks.") and has("context_embedder.") and has("pos_embed.")):
        return "sd3"
    return None


def gguf_info(path: Path) -> GGUFInfo:
    """The family and quantisation of a GGUF file (its tensor table; no weight is read)."""
    if not gguf_available():
        return GGUFInfo(None, None, f"reading GGUF files needs the gguf package: {INSTALL_GGUF}")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - gguf raises ValueError, struct.error, ... on a broken file
        return GGUFInfo(None, None, f"not a readable GGUF file ({str(exc)[:120]})")
    elements: Counter[str] = Counter()
    names = set()
    for tensor in reader.tensors:
        names.add(tensor.name)
        if len(tensor.shape) >= 2:  # biases and norms stay F32 in every quantisation
            elements[tensor.tensor_type.name] += int(tensor.n_elements)
    family = _family_of_transformer(names)
    shape = transformer_shape(names)
    # The quantised type holding most weights (files keep embedders and narrow layers in F16/F32): "Q4_K";
    # a file of float weights only is named by its float type ("F16").
    quantised = Counter({t: n for t, n in elements.items() if t not in FLOAT_TYPES})
    quantization = (quantised or elements).most_common(1)[0][0] if elements else None
    if family is None:
        return GGUFInfo(None, quantization, "no Flux or SD3 transformer in this GGUF file (Kiri loads those two from GGUF)")
    return GGUFInfo(family, quantization, None, shape)


def _blocks(names: set[str], *prefixes: str) -> int:
    found = [int(part) for n in names for p in prefixes
             if n.removeprefix("model.diffusion_model.").startswith(p)
             and (part := n.removeprefix("model.diffusion_model.")[len(p):].split(".", 1)[0]).isdigit()]
    return max(found) + 1 if found else 0


def transformer_shape(names: set[str]) -> dict:
    """What a transformer's tensor names fix in its config, in either layout: the block counts and (Flux)
    whether it has the guidance embedding (FLUX.1-dev does, schnell does not). A base folder whose
    transformer config differs cannot hold these weights."""
    shape = {"num_layers": _blocks(names, "double_blocks.", "joint_blocks.", "transformer_blocks.")}
    singles = _blocks(names, "single_blocks.", "single_transformer_blocks.")
    if singles:
        shape["num_single_layers"] = singles
        shape["guidance_embeds"] = any("guidance_in." in n or "guidance_embedder." in n for n in names)
    return shape


def fits(shape: dict | None, config: dict) -> bool:
    """Whether a transformer config has the shape a GGUF file's tensors fix."""
    return not shape or all(config.get(key) == value for key, value in shape.items())


def fp8_dtype(header: dict, prefixes: tuple[str, ...] = ()) -> str | None:
    """The torch float8 dtype most of a safetensors header's fp8 tensors have (only those whose names
    start with one of `prefixes`, when given), or None when it has none."""
    counts: Counter[str] = Counter()
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        if prefixes and not name.startswith(prefixes):
            continue
        dtype = FP8_DTYPES.get(str(info.get("dtype")))
        if dtype is not None:
            counts[dtype] += 1
    return counts.most_common(1)[0][0] if counts else None


def fp8_of_folder(folder: Path) -> str | None:
    """A diffusers folder's denoiser stored in fp8: its torch dtype name, else None."""
    from webui.engine.models.families import read_safetensors_header

    for sub in ("unet", "transformer"):
        for weights in sorted((folder / sub).glob("*.safetensors")):
            try:
                found = fp8_dtype(read_safetensors_header(weights))
            except (OSError, ValueError):
                continue
            if found:
                return found
    return None


def single_file_fp8(header: dict) -> str | None:
    """An original-layout single file's denoiser in fp8 (model.diffusion_model.*, or a bare transformer)."""
    return fp8_dtype(header, ("model.diffusion_model.",)) or fp8_dtype(header)


SCALE_SUFFIXES = (".scale_weight", ".weight_scale", ".scale_input", ".input_scale")


def scaled_fp8_problem(header: dict) -> str | None:
    """Why an fp8 file with per-layer scales (ComfyUI's "fp8_scaled": a `scaled_fp8` marker and
    `*.scale_weight` tensors) cannot be loaded: its weights mean weight x scale, which diffusers' loader
    does not apply (the pictures would be noise). None for any other file."""
    names = [n for n in header if n != "__metadata__"]
    if not any(n == "scaled_fp8" or n.endswith(".scaled_fp8") or n.endswith(SCALE_SUFFIXES) for n in names):
        return None
    return ("a scaled fp8 checkpoint (per-layer scale_weight tensors, ComfyUI's fp8_scaled), which Kiri cannot load; "
            "use the plain fp8 (e4m3fn) file, a GGUF or the full-precision checkpoint")
