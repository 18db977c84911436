"""Write a diffusers checkpoint folder as one file in the original layout:
`python -m webui.tools.export_checkpoint NAME [--out FILE] [--configs [DIR]]`.

- SD 1.x folders (`StableDiffusionPipeline`) -> the CompVis / A1111 layout: `model.diffusion_model.*`
  (the UNet as input_blocks / middle_block / output_blocks), `first_stage_model.*` (the VAE as
  encoder.down / decoder.up), `cond_stage_model.transformer.text_model.*` (CLIP-L's place).
- SD3 folders (`StableDiffusion3Pipeline`) -> the SD3 reference layout: `model.diffusion_model.*`
  (joint_blocks, fused qkv), `first_stage_model.*`, `text_encoders.clip_l.transformer.*` and
  `text_encoders.clip_g.transformer.*` (`text_model.*` + `text_projection.weight`); no T5.

Every tensor keeps its dtype and values (qkv are concatenated, the last block's and the final
layer's adaLN halves swapped back, as the reference code stores them). Before writing, the file's
state dict is converted back with diffusers' own single-file converters and must give every
tensor of the folder back exactly.

A single file holds no configuration. Models whose sizes differ from the family's reference ones
(Kiri's own tiny models: VAE factor 4, width 64) load only with their configuration beside them:
`--configs` writes the folder's configs and tokenizers (no weights) to `<models>/configs/<family>/`
(or to DIR), which Kiri's single-file loader uses for every single file of that family -- so it
refuses to replace an existing one unless `--force` is given.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD3_CLIP_PREFIXES = {"text_encoder": "text_encoders.clip_l.transformer.", "text_encoder_2": "text_encoders.clip_g.transformer."}
FAMILY_OF_PIPELINE = {"StableDiffusionPipeline": "sd1", "StableDiffusion3Pipeline": "sd3"}

_RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


class ExportError(ValueError):
    pass


# ---- the pieces ---------------------------------------------------------------------------------

def text_encoder_to_original(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A CLIP text encoder's state dict with transformers < 5.6 names (`text_model.*`), under prefix."""
    out = {}
    for key, tensor in state.items():
        name = key if key.startswith(("text_model.", "text_projection.")) else "text_model." + key
        out[prefix + name] = tensor
    return out


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_RESNET_TO_LDM.get(head, head)}.{tail}"


def unet_to_original(state: dict[str, Any], config: dict) -> dict[str, Any]:
    """The inverse of diffusers' convert_ldm_unet_checkpoint for an SD 1.x-style UNet of any depth."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    per_block = config["layers_per_block"]
    if not isinstance(per_block, int):
        raise ExportError("UNets with a different layer count per block have no SD 1.x layout")
    if config.get("class_embed_type") or config.get("addition_embed_type") or config.get("num_class_embeds"):
        raise ExportError("UNets with class or added embeddings are not SD 1.x models")
    top = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    up_has_attention = {b: "CrossAttn" in kind for b, kind in enumerate(config["up_block_types"])}
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        if key in top:
            name = top[key]
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            name = f"input_blocks.{1 + int(m[1]) * (per_block + 1) + int(m[2])}.0.{_resnet(m[3])}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            name = f"input_blocks.{1 + int(m[1]) * (per_block + 1) + int(m[2])}.1.{m[3]}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            name = f"input_blocks.{1 + int(m[1]) * (per_block + 1) + per_block}.0.op.{m[2]}"
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            name = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
            name = f"middle_block.1.{m[1]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            name = f"output_blocks.{int(m[1]) * (per_block + 1) + int(m[2])}.0.{_resnet(m[3])}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            name = f"output_blocks.{int(m[1]) * (per_block + 1) + int(m[2])}.1.{m[3]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            block = int(m[1])
            slot = 2 if up_has_attention[block] else 1
            name = f"output_blocks.{block * (per_block + 1) + per_block}.{slot}.conv.{m[2]}"
        else:
            raise ExportError(f"UNet weight {key} has no place in the SD 1.x layout")
        out[UNET_PREFIX + name] = tensor
    return out


def vae_to_original(state: dict[str, Any], config: dict) -> dict[str, Any]:
    """The inverse of diffusers' convert_ldm_vae_checkpoint."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["vae"]
    n_up = len(config["up_block_types"])
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        if key in top:
            name = top[key]
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            name = f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            name = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            name = f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            name = f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            name = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)", key):
            name = f"{m[1]}.mid.attn_1.{attention[m[2]]}.{m[3]}"
            if m[3] == "weight" and m[2] != "group_norm":
                tensor = tensor[:, :, None, None]  # the reference VAE's attention uses 1x1 convolutions
        else:
            raise ExportError(f"VAE weight {key} has no place in the original layout")
        out[VAE_PREFIX + name] = tensor
    return out


def _swap_halves(tensor: Any) -> Any:
    import torch

    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def sd3_transformer_to_original(state: dict[str, Any], config: dict) -> dict[str, Any]:
    """The inverse of diffusers' convert_sd3_transformer_checkpoint_to_diffusers."""
    import torch

    state = dict(state)
    layers = config["num_layers"]
    out: dict[str, Any] = {}

    def put(name: str, key: str, transform=None) -> None:
        tensor = state.pop(key)
        out[UNET_PREFIX + name] = transform(tensor) if transform else tensor

    put("pos_embed", "pos_embed.pos_embed")
    for p in ("weight", "bias"):
        put(f"x_embedder.proj.{p}", f"pos_embed.proj.{p}")
        put(f"t_embedder.mlp.0.{p}", f"time_text_embed.timestep_embedder.linear_1.{p}")
        put(f"t_embedder.mlp.2.{p}", f"time_text_embed.timestep_embedder.linear_2.{p}")
        put(f"context_embedder.{p}", f"context_embedder.{p}")
        put(f"y_embedder.mlp.0.{p}", f"time_text_embed.text_embedder.linear_1.{p}")
        put(f"y_embedder.mlp.2.{p}", f"time_text_embed.text_embedder.linear_2.{p}")
        put(f"final_layer.linear.{p}", f"proj_out.{p}")
        put(f"final_layer.adaLN_modulation.1.{p}", f"norm_out.linear.{p}", _swap_halves)
    for i in range(layers):
        b, j = f"transformer_blocks.{i}", f"joint_blocks.{i}"
        last = i == layers - 1
        for p in ("weight", "bias"):
            qkv = [state.pop(f"{b}.attn.to_{x}.{p}") for x in "qkv"]
            out[f"{UNET_PREFIX}{j}.x_block.attn.qkv.{p}"] = torch.cat(qkv, dim=0)
            qkv = [state.pop(f"{b}.attn.add_{x}_proj.{p}") for x in "qkv"]
            out[f"{UNET_PREFIX}{j}.context_block.attn.qkv.{p}"] = torch.cat(qkv, dim=0)
            put(f"{j}.x_block.attn.proj.{p}", f"{b}.attn.to_out.0.{p}")
            put(f"{j}.x_block.adaLN_modulation.1.{p}", f"{b}.norm1.linear.{p}")
            put(f"{j}.context_block.adaLN_modulation.1.{p}", f"{b}.norm1_context.linear.{p}", _swap_halves if last else None)
            put(f"{j}.x_block.mlp.fc1.{p}", f"{b}.ff.net.0.proj.{p}")
            put(f"{j}.x_block.mlp.fc2.{p}", f"{b}.ff.net.2.{p}")
            if not last:
                put(f"{j}.context_block.attn.proj.{p}", f"{b}.attn.to_add_out.{p}")
                put(f"{j}.context_block.mlp.fc1.{p}", f"{b}.ff_context.net.0.proj.{p}")
                put(f"{j}.context_block.mlp.fc2.{p}", f"{b}.ff_context.net.2.{p}")
            if f"{b}.attn2.to_q.{p}" in state:  # SD3.5's dual attention layers
                qkv = [state.pop(f"{b}.attn2.to_{x}.{p}") for x in "qkv"]
                out[f"{UNET_PREFIX}{j}.x_block.attn2.qkv.{p}"] = torch.cat(qkv, dim=0)
                put(f"{j}.x_block.attn2.proj.{p}", f"{b}.attn2.to_out.0.{p}")
        for ours, theirs in (("norm_q", "x_block.attn.ln_q"), ("norm_k", "x_block.attn.ln_k"), ("norm_added_q", "context_block.attn.ln_q"),
                             ("norm_added_k", "context_block.attn.ln_k"), ("attn2_norm_q", "x_block.attn2.ln_q"), ("attn2_norm_k", "x_block.attn2.ln_k")):
            source = f"{b}.attn2.{ours[6:]}.weight" if ours.startswith("attn2_") else f"{b}.attn.{ours}.weight"
            if source in state:
                put(f"{j}.{theirs}.weight", source)
    if state:
        raise ExportError(f"SD3 transformer weights with no place in the original layout: {sorted(state)[:5]}")
    return out


# ---- whole pipelines ------------------------------------------------------------------------------

def _components(folder: Path) -> dict[str, tuple[dict, dict]]:
    """{component: (config, state dict)} for the folder's weights, read without building models."""
    from safetensors.torch import load_file

    found = {}
    for config_path in sorted(folder.glob("*/config.json")):
        weights = sorted(config_path.parent.glob("*.safetensors"))
        if not weights:
            continue
        if len(weights) > 1:
            raise ExportError(f"{config_path.parent.name}: sharded weights are not handled")
        found[config_path.parent.name] = (json.loads(config_path.read_text()), load_file(str(weights[0])))
    return found


def family_of(folder: Path) -> str:
    index = json.loads((folder / "model_index.json").read_text())
    family = FAMILY_OF_PIPELINE.get(index.get("_class_name", ""))
    if family is None:
        raise ExportError(f"{index.get('_class_name')} folders have no export yet (SD 1.x and SD3 do)")
    return family


def to_original(folder: Path) -> tuple[str, dict[str, Any]]:
    """(family, single-file state dict) of a diffusers folder; checked against diffusers' converters."""
    family = family_of(folder)
    parts = _components(folder)
    out: dict[str, Any] = {}
    if family == "sd1":
        out.update(unet_to_original(parts["unet"][1], parts["unet"][0]))
        out.update(text_encoder_to_original(parts["text_encoder"][1], SD1_CLIP_PREFIX))
    else:
        out.update(sd3_transformer_to_original(parts["transformer"][1], parts["transformer"][0]))
        for name, prefix in SD3_CLIP_PREFIXES.items():
            if name in parts:
                out.update(text_encoder_to_original(parts[name][1], prefix))
        if "text_encoder_3" in parts:
            raise ExportError("a T5 encoder is not exported yet (Kiri's DiT has none)")
    out.update(vae_to_original(parts["vae"][1], parts["vae"][0]))
    check_round_trip(family, out, parts)
    return family, out


def check_round_trip(family: str, single: dict[str, Any], parts: dict[str, tuple[dict, dict]]) -> None:
    """Convert the single-file dict back with diffusers' own converters: every tensor must come back."""
    import torch
    from diffusers.loaders import single_file_utils as sfu

    back: dict[str, dict[str, Any]] = {"vae": sfu.convert_ldm_vae_checkpoint(single, parts["vae"][0])}
    if family == "sd1":
        back["unet"] = sfu.convert_ldm_unet_checkpoint(single, parts["unet"][0])
        back["text_encoder"] = sfu.convert_ldm_clip_checkpoint(single)
    else:
        back["transformer"] = sfu.convert_sd3_transformer_checkpoint_to_diffusers(dict(single))
        for name, prefix in SD3_CLIP_PREFIXES.items():
            if name in parts:
                back[name] = {k[len(prefix):]: v for k, v in single.items() if k.startswith(prefix)}
    for name, (_, state) in parts.items():
        got = {k.removeprefix("text_model."): v for k, v in back[name].items()}
        want = {k.removeprefix("text_model."): v for k, v in state.items()}
        if set(got) != set(want):
            raise ExportError(f"{name}: diffusers reads back {sorted(set(got) ^ set(want))[:5]} differently")
        for key, tensor in want.items():
            if got[key].dtype != tensor.dtype or not torch.equal(got[key], tensor):
                raise ExportError(f"{name}: {key} does not come back unchanged")


def write_configs(folder: Path, target: Path, force: bool = False) -> Path:
    """The folder without its weights (model_index.json, configs, scheduler, tokenizers)."""
    if target.exists():
        if not force:
            raise ExportError(
                f"{target} exists and is the configuration of every single file of that family; "
                "pass --force to replace it, or --configs DIR to write elsewhere"
            )
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy(folder / "model_index.json", target / "model_index.json")
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = [f for f in sub.iterdir() if f.is_file() and f.suffix in (".json", ".txt", ".model")]
        if files:
            (target / sub.name).mkdir()
            for f in files:
                shutil.copy(f, target / sub.name / f.name)
    return target


def export(folder: Path, out: Path) -> tuple[str, int]:
    """Write the single file; returns (family, number of tensors)."""
    from safetensors.torch import save_file

    family, state = to_original(folder)
    metadata = {"format": "pt", "kiri.source": folder.name, "kiri.family": family}
    vae = json.loads((folder / "vae" / "config.json").read_text())
    metadata["kiri.vae_scale_factor"] = str(2 ** (len(vae["block_out_channels"]) - 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    tmp.replace(out)
    return family, len(state)


def main(argv: list[str] | None = None) -> int:
    from webui.engine.settings import Settings

    p = argparse.ArgumentParser(prog="python -m webui.tools.export_checkpoint", description=__doc__.splitlines()[0])
    p.add_argument("name", metavar="NAME", help="a diffusers checkpoint folder: its name in models/checkpoints, or a path")
    p.add_argument("--out", type=Path, help="the file to write (default: NAME.safetensors in the current folder)")
    p.add_argument("--models-dir", type=Path, default=None, help="Kiri's models folder (default: the settings' one)")
    p.add_argument("--configs", nargs="?", const="", default=None, metavar="DIR",
                   help="also write the configuration a loader needs, to DIR (default: <models>/configs/<family>)")
    p.add_argument("--force", action="store_true", help="replace an existing configs folder")
    args = p.parse_args(argv)
    models_dir = args.models_dir or Settings().models_dir
    folder = Path(args.name)
    if not (folder / "model_index.json").exists():
        folder = Path(models_dir) / "checkpoints" / args.name
    if not (folder / "model_index.json").exists():
        p.error(f"{args.name}: no diffusers folder by that name in {Path(models_dir) / 'checkpoints'}")
    out = args.out or Path(f"{folder.name}.safetensors")
    try:
        if args.configs is not None:  # before the weights: a refusal leaves nothing half-written
            target = Path(args.configs) if args.configs else Path(models_dir) / "configs" / family_of(folder)
            write_configs(folder, target, args.force)
            print(f"configuration: {target}")
        family, count = export(folder, out)
    except ExportError as exc:
        print(f"cannot export {folder.name}: {exc}")
        return 2
    print(f"{out}: {family} single file, {count} tensors, {out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
