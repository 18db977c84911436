"""Which model family a checkpoint belongs to, from its diffusers config or its weight names.

Reading only configs and the safetensors header keeps a scan of many gigabytes instant.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

FAMILIES = {
    "sd1": "SD 1.x",
    "sd2": "SD 2.x",
    "sdxl": "SDXL",
    "sd3": "SD3",
    "pixart": "PixArt",
    "flux": "Flux",
}

# Architecture kind: UNet latent diffusion or diffusion transformer.

# Training resolution of each family's reference models, for single files without a config.
NATIVE_SIZE = {"sd1": 512, "sd2": 768, "sdxl": 1024, "sd3": 1024, "pixart": 1024, "flux": 1024}

_PIPELINE_FAMILY = {
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLInpaintPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "StableDiffusion3InpaintPipeline": "sd3",
    "StableDiffusion3Img2ImgPipeline": "sd3",
    "PixArtAlphaPipeline": "pixart",
    "PixArtSigmaPipeline": "pixart",
    "FluxPipeline": "flux",
    "FluxFillPipeline": "flux",
    "FluxImg2ImgPipeline": "flux",
    "FluxInpaintPipeline": "flux",
}

# Families whose pipelines hand the scheduler a noise schedule of their own (Flux passes `sigmas`
# to set_timesteps): a sampler must accept one to drive them.
CUSTOM_SIGMA_FAMILIES = frozenset({"flux"})

MAX_HEADER_BYTES = 100 * 1024 * 1024


class UnknownFamily(ValueError):
    pass


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a .safetensors file (tensor name -> dtype/shape/offsets, and `__metadata__`),
    without reading a tensor."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path.name} is too short to be a safetensors file")
        (size,) = struct.unpack("<Q", raw)
        if size <= 0 or size > MAX_HEADER_BYTES:
            raise ValueError(f"{path.name} has an invalid safetensors header")
        header = f.read(size)
        if len(header) != size:
            raise ValueError(f"{path.name} is truncated (header cut short)")
    try:
        meta = json.loads(header)
    except ValueError as exc:
        raise ValueError(f"{path.name} has a corrupt safetensors header") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path.name} has a corrupt safetensors header")
    return meta


def read_safetensors_keys(path: Path) -> list[str]:
    """The tensor names of a .safetensors file, read from its JSON header only."""
    return [k for k in read_safetensors_header(path) if k != "__metadata__"]


def family_from_keys(keys: list[str]) -> str:
    """Detect the family of a single-file checkpoint (original, non-diffusers layout)."""
    names = set(keys)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in names)

    if has("double_blocks.") or has("model.diffusion_model.double_blocks."):
        return "flux"
    if has("joint_blocks.") or has("model.diffusion_model.joint_blocks."):
        return "sd3"
    if (has("blocks.0.cross_attn.") or has("model.diffusion_model.blocks.0.cross_attn.")) and (
        has("t_block.") or has("y_embedder.") or has("model.diffusion_model.t_block.")
    ):
        return "pixart"
    if has("conditioner.embedders."):
        return "sdxl"
    if has("cond_stage_model.model."):  # OpenCLIP text encoder: SD 2.x
        return "sd2"
    if has("cond_stage_model.transformer.") or has("model.diffusion_model.input_blocks."):
        return "sd1"
    raise UnknownFamily("no known model family matches the weight names in this file")


def family_from_folder(folder: Path) -> str:
    """Detect the family of a diffusers folder from model_index.json and component configs."""
    index = json.loads((folder / "model_index.json").read_text())
    cls = index.get("_class_name", "")
    if cls in _PIPELINE_FAMILY:
        return _PIPELINE_FAMILY[cls]
    if cls.startswith("StableDiffusion"):
        return _sd1_or_sd2(folder)
    if cls.startswith("Flux"):
        return "flux"
    if cls.startswith("PixArt"):
        return "pixart"
    raise UnknownFamily(f"pipeline class {cls or '(none)'} is not a family Kiri knows")


def _sd1_or_sd2(folder: Path) -> str:
    unet_config = folder / "unet" / "config.json"
    if unet_config.exists():
        return family_from_unet_config(json.loads(unet_config.read_text()), sdxl=False)
    return "sd1"


def family_from_unet_config(config: dict, sdxl: bool = True) -> str:
    """sd1, sd2 or sdxl from a UNet-shaped config (a checkpoint's UNet, a ControlNet, ...).

    SDXL adds the pooled text and the sizes as a "text_time" embedding. SD 2.x conditions on OpenCLIP-H
    (1024 wide); SD 1.x on CLIP-L (768) or smaller. SD 2.x's transformers also project with linear layers
    where SD 1.x uses 1x1 convolutions, which tells them apart at any width (fine-tunes and pruned models
    keep the layout)."""
    if sdxl and (config.get("addition_embed_type") == "text_time" or config.get("cross_attention_dim") == 2048):
        return "sdxl"
    if config.get("cross_attention_dim") == 1024 or config.get("use_linear_projection") is True:
        return "sd2"
    return "sd1"


def prediction_type(folder: Path) -> str:
    """epsilon, v_prediction or flow: what the denoiser outputs, from the scheduler config."""
    config_path = folder / "scheduler" / "scheduler_config.json"
    if not config_path.exists():
        return "epsilon"
    try:
        return prediction_from_config(json.loads(config_path.read_text()))
    except (ValueError, AttributeError):
        return "epsilon"


def prediction_from_config(config: dict) -> str:
    """epsilon, v_prediction or flow, from a scheduler config (file or loaded scheduler)."""
    if "FlowMatch" in config.get("_class_name", ""):
        return "flow"
    return config.get("prediction_type") or "epsilon"


def native_size(folder: Path) -> int:
    """Image side the model was trained at: denoiser sample size times the VAE's downscale."""
    try:
        denoiser = next(folder / sub / "config.json" for sub in ("unet", "transformer") if (folder / sub / "config.json").exists())
        sample = json.loads(denoiser.read_text())["sample_size"]
        vae_blocks = json.loads((folder / "vae" / "config.json").read_text())["block_out_channels"]
    except (StopIteration, OSError, ValueError, KeyError, TypeError):
        return 512
    if isinstance(sample, (list, tuple)):
        sample = sample[0]
    return int(sample) * 2 ** (len(vae_blocks) - 1)
