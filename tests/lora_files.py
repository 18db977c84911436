"""Tiny LoRA files of the real key formats, for the tiny checkpoints (tests/tiny_models.py): kohya/A1111
(`lora_unet_..._lora_down.weight`, `lora_te_...`, `.alpha`), diffusers/PEFT as
`StableDiffusionPipeline.save_lora_weights` writes it, and LyCORIS LoHa; random small weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch

UNET_LAYERS = ("to_q", "to_k", "to_v", "to_out.0")
TE_LAYERS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _linears(module: torch.nn.Module, names: tuple[str, ...]):
    for name, layer in module.named_modules():
        if isinstance(layer, torch.nn.Linear) and name.endswith(names):
            yield name, layer


def _pair(layer: torch.nn.Linear, rank: int, scale: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    down = torch.randn(rank, layer.in_features, generator=g) * scale
    up = torch.randn(layer.out_features, rank, generator=g) * scale
    return down, up


def kohya_state(pipe, seed: int = 1, rank: int = 4, scale: float = 0.5, unet: bool = True, te: bool = True) -> dict:
    """A kohya-format LoRA for `pipe`'s modules (SDXL: lora_te1_/lora_te2_)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    parts = []
    if unet:
        parts.append(("lora_unet_", pipe.unet, UNET_LAYERS))
    if te:
        if getattr(pipe, "text_encoder_2", None) is not None:
            parts += [("lora_te1_", pipe.text_encoder, TE_LAYERS), ("lora_te2_", pipe.text_encoder_2, TE_LAYERS)]
        else:
            parts.append(("lora_te_", pipe.text_encoder, TE_LAYERS))
    for prefix, module, names in parts:
        for name, layer in _linears(module, names):
            # kohya names the text encoder's modules as transformers 4 did (text_model.encoder...)
            if prefix.startswith("lora_te") and not name.startswith("text_model."):
                name = "text_model." + name
            key = prefix + name.replace(".", "_")
            down, up = _pair(layer, rank, scale, g)
            state[key + ".lora_down.weight"], state[key + ".lora_up.weight"] = down, up
            state[key + ".alpha"] = torch.tensor(float(rank))
    return state


def save_kohya(pipe, path: Path, metadata: dict | None = None, **kwargs) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(kohya_state(pipe, **kwargs), str(path), metadata=metadata or {"ss_network_dim": "4", "ss_network_alpha": "4"})
    return path


def save_locon(pipe, path: Path, seed: int = 9, rank: int = 4, scale: float = 0.3) -> Path:
    """kohya LoCon: lora_down/lora_up on the UNet's resnet convolutions (3x3 down, 1x1 up) beside its attention."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    state = kohya_state(pipe, seed=seed, te=False)
    for name, layer in pipe.unet.named_modules():
        if isinstance(layer, torch.nn.Conv2d) and "resnets" in name and name.endswith(("conv1", "conv2")):
            key = "lora_unet_" + name.replace(".", "_")
            state[key + ".lora_down.weight"] = torch.randn(rank, layer.in_channels, 3, 3, generator=g) * scale
            state[key + ".lora_up.weight"] = torch.randn(layer.out_channels, rank, 1, 1, generator=g) * scale
            state[key + ".alpha"] = torch.tensor(float(rank))
    save_file(state, str(path), metadata={"ss_network_module": "lycoris.kohya", "ss_network_args": '{"algo": "locon"}'})
    return path


def save_diffusers(pipe, folder: Path, name: str, seed: int = 2, rank: int = 4, scale: float = 0.5) -> Path:
    """What StableDiffusionPipeline.save_lora_weights writes (unet./text_encoder. PEFT keys), renamed."""
    from diffusers import StableDiffusionPipeline

    g = torch.Generator().manual_seed(seed)

    def layers(module, names):
        out = {}
        for key, layer in _linears(module, names):
            down, up = _pair(layer, rank, scale, g)
            out[key + ".lora_A.weight"], out[key + ".lora_B.weight"] = down, up
        return out

    tmp = folder / f".{name}-tmp"
    StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers(pipe.unet, UNET_LAYERS),
                                              text_encoder_lora_layers=layers(pipe.text_encoder, TE_LAYERS))
    target = folder / f"{name}.safetensors"
    (tmp / "pytorch_lora_weights.safetensors").replace(target)
    tmp.rmdir()
    return target


def save_loha(pipe, path: Path) -> Path:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(3)
    state = {}
    for name, layer in _linears(pipe.unet, ("to_q",)):
        key = "lora_unet_" + name.replace(".", "_")
        for w in ("w1", "w2"):
            state[f"{key}.hada_{w}_a"] = torch.randn(layer.out_features, 4, generator=g)
            state[f"{key}.hada_{w}_b"] = torch.randn(4, layer.in_features, generator=g)
        state[f"{key}.alpha"] = torch.tensor(4.0)
    save_file(state, str(path), metadata={"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps({"algo": "loha"})})
    return path
