"""Reading upscaler model files: spandrel when it can be imported, else Kiri's own readers.

spandrel knows dozens of super-resolution architectures (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT,
...) from their state dicts alone. It imports torchvision at import time, and where torchvision
cannot be imported (the CPU-only machines Kiri is tested on) Kiri reads the architectures it
carries itself: Real-ESRGAN's compact net (SRVGGNetCompact), with spandrel's key names, so the
same file loads both ways. Weights are read by Kiri, never by spandrel: .safetensors, or a pickle
only with torch.load(weights_only=True) (and only under --allow-pickle, which the model manager
checks before this loader runs).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.engine.core.errors import InvalidRequest, ModelLoadError

BUILTIN_ARCHITECTURES = ("RealESRGAN Compact (SRVGGNetCompact)",)
DIFFUSION_UPSCALERS = ("StableDiffusionUpscalePipeline", "StableDiffusionLatentUpscalePipeline", "LDMSuperResolutionPipeline")


@dataclass
class LoadedUpscaler:
    """A loaded model upscaler: call it on a (1, 3, H, W) float tensor in 0..1 on its device."""

    model: Any  # torch module taking and returning (N, C, H, W)
    scale: int
    architecture: str
    device: str
    dtype: Any  # torch dtype the model runs in
    supports_half: bool = False
    supports_bfloat16: bool = False
    pipeline: Any = None  # diffusion upscalers: the diffusers pipeline (model is None then)
    pipeline_class: str = ""

    def __call__(self, tensor):
        import torch

        with torch.inference_mode():
            return self.model(tensor.to(self.device, self.dtype)).float().clamp(0, 1)


def spandrel_or_none():
    """The spandrel module, or None where it (or its torchvision) cannot be imported."""
    try:
        import spandrel
    except Exception:  # noqa: BLE001 - ImportError, or torchvision's own failure to load its ops
        return None
    return spandrel


def known_architectures() -> list[str]:
    spandrel = spandrel_or_none()
    if spandrel is None:
        return list(BUILTIN_ARCHITECTURES)
    return [a.name for a in spandrel.MAIN_REGISTRY.architectures("order")]


def read_state_dict(path: Path) -> dict:
    """The file's tensors: safetensors, or a pickle read with torch.load(weights_only=True)."""
    import pickle

    import torch

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
        raise ModelLoadError(f"{path.name} could not be read safely (torch.load with weights_only=True): "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}") from exc
    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path.name} does not hold a state dict of tensors")
    return state


def pick_dtype(device: str, supports_half: bool, supports_bfloat16: bool):
    """fp16 on CUDA where the architecture supports it, else bf16 where supported, else fp32 (always on CPU)."""
    import torch

    if device.startswith("cuda"):
        if supports_half:
            return torch.float16
        if supports_bfloat16:
            return torch.bfloat16
    return torch.float32


def load_upscaler(path: Path, device: str = "cpu") -> LoadedUpscaler:
    """Load one upscaler file or diffusers folder; a file no reader knows is an InvalidRequest."""
    path = Path(path)
    if path.is_dir():
        return _load_diffusion(path, device)
    state = read_state_dict(path)
    spandrel = spandrel_or_none()
    if spandrel is not None:
        try:
            descriptor = spandrel.ModelLoader().load_from_state_dict(state)
        except spandrel.UnsupportedModelError:
            descriptor = None
        if descriptor is not None:
            if not isinstance(descriptor, spandrel.ImageModelDescriptor):
                raise InvalidRequest("upscaler", f"{path.name} is a {descriptor.architecture.name} model for "
                                                 f"{descriptor.purpose}, not a super-resolution model")
            dtype = pick_dtype(device, descriptor.supports_half, descriptor.supports_bfloat16)
            model = descriptor.model.eval().to(device, dtype)
            return LoadedUpscaler(model, int(descriptor.scale), descriptor.architecture.name, device, dtype,
                                  descriptor.supports_half, descriptor.supports_bfloat16)
    built = _builtin(state)
    if built is None:
        raise InvalidRequest("upscaler", f"{path.name} is not an upscaler architecture Kiri can read; it knows: "
                                         + ", ".join(known_architectures()))
    model, scale, name = built
    dtype = pick_dtype(device, True, True)
    return LoadedUpscaler(model.eval().to(device, dtype), scale, name, device, dtype, True, True)


def _builtin(state: dict):
    """Kiri's own readers, by the state dict's keys: (module, scale, architecture) or None."""
    indices = sorted({int(m.group(1)) for k in state if (m := re.fullmatch(r"body\.(\d+)\.weight", k))})
    if not indices or indices[0] != 0 or "body.1.weight" not in state or state["body.0.weight"].ndim != 4:
        return None
    last = indices[-1]
    if last < 2 or last % 2:
        return None
    num_feat, in_ch = state["body.0.weight"].shape[:2]
    out_total = state[f"body.{last}.weight"].shape[0]
    scale = round((out_total / in_ch) ** 0.5)
    if scale * scale * in_ch != out_total:
        return None
    from ._compact import SRVGGNetCompact  # torch: imported when a file is loaded, never for the lists

    model = SRVGGNetCompact(in_ch, in_ch, int(num_feat), (last - 2) // 2, scale)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        return None
    return model, scale, BUILTIN_ARCHITECTURES[0]


def diffusion_class(folder: Path) -> str | None:
    try:
        name = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if name in DIFFUSION_UPSCALERS else None


# A diffusion upscaler's default tile (input pixels): what its UNet was trained at (the x4's 128 -> 512).
DIFFUSION_TILE = {"StableDiffusionUpscalePipeline": 128, "StableDiffusionLatentUpscalePipeline": 256, "LDMSuperResolutionPipeline": 128}
DIFFUSION_SCALE = {"StableDiffusionUpscalePipeline": 4, "StableDiffusionLatentUpscalePipeline": 2, "LDMSuperResolutionPipeline": 4}


def _load_diffusion(folder: Path, device: str) -> LoadedUpscaler:
    import diffusers
    import torch

    name = diffusion_class(folder)
    if name is None:
        raise InvalidRequest("upscaler", f"{folder.name} is not a diffusion upscaler folder (model_index.json "
                                         f"_class_name one of {', '.join(DIFFUSION_UPSCALERS)})")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipeline = getattr(diffusers, name).from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True).to(device)
    pipeline.set_progress_bar_config(disable=True)
    return LoadedUpscaler(None, DIFFUSION_SCALE[name], name, device, dtype, pipeline=pipeline, pipeline_class=name)


def guess_scale(path: Path) -> int:
    """An upscaler's scale without loading it: the file's name (4x, x2), the last conv's shape, else 4."""
    match = re.search(r"(?:^|[^a-z0-9])(?:x(\d)|(\d)x)(?:[^a-z0-9]|$)", path.stem.lower())
    if match:
        return int(match.group(1) or match.group(2))
    if path.is_dir():
        return DIFFUSION_SCALE.get(diffusion_class(path) or "", 4)
    if path.suffix.lower() == ".safetensors":
        shapes = safetensors_shapes(path)
        keys = [k for k in shapes if re.fullmatch(r"body\.\d+\.weight", k)]
        if keys and "body.0.weight" in shapes:
            last = max(keys, key=lambda k: int(k.split(".")[1]))
            out, first_in = shapes[last][0], shapes["body.0.weight"][1]
            return max(1, round((out / first_in) ** 0.5))
    return 4


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a .safetensors header (8-byte length, then JSON), without torch: listing the
    upscalers for the page must not import it. {} for a file that is not one."""
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if not 2 <= length <= 100 * 2**20:
                return {}
            header = json.loads(f.read(length))
    except (OSError, ValueError):
        return {}
    if not isinstance(header, dict):
        return {}
    return {k: v["shape"] for k, v in header.items()
            if isinstance(v, dict) and isinstance(v.get("shape"), list) and len(v["shape"]) >= 2}
