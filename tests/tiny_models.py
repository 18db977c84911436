"""Tiny models of the real architectures, with random weights, saved the way users get them.

Like diffusers' get_dummy_components(): real classes, a few thousand parameters, fixed seeds.
`save_ldm_single_file` writes the original Stable Diffusion layout (model.diffusion_model.*,
first_stage_model.*, cond_stage_model.*) that civitai-style .safetensors files use, so loading
it goes through diffusers' real conversion code.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

ASSETS = Path(__file__).parent / "assets"
TOKENIZER_DIR = ASSETS / "tiny-clip-tokenizer"


def _tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR)


def _text_encoder(with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    config = CLIPTextConfig(
        bos_token_id=96, eos_token_id=97, pad_token_id=97, hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2, vocab_size=98,
        projection_dim=32, max_position_embeddings=77,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=32, sample_size=64,
    )


def make_tiny_sd(folder: Path, prediction_type: str = "epsilon") -> Path:
    """A StableDiffusionPipeline folder (SD 1.x layout) of random tiny weights."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        unet=unet, vae=_vae(), text_encoder=_text_encoder(), tokenizer=_tokenizer(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def make_tiny_sd3(folder: Path) -> Path:
    """A StableDiffusion3Pipeline folder: MMDiT transformer, two CLIP encoders, no T5, flow matching."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=_sd3_vae(),
        text_encoder=_text_encoder(True), tokenizer=_tokenizer(),
        text_encoder_2=_text_encoder(True), tokenizer_2=_tokenizer(),
        text_encoder_3=None, tokenizer_3=None,
    )
    pipe.save_pretrained(folder)
    return folder


def _sd3_vae():
    vae = _vae()
    vae.register_to_config(shift_factor=0.0, scaling_factor=1.0)
    return vae


# --- diffusers -> original Stable Diffusion single-file layout -------------------------------

def _unet_to_ldm(state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    levels = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("down_blocks."))
    per_level = layers + 1  # resnets per level plus the downsampler
    rules: list[tuple[str, str]] = [
        ("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
        ("mid_block.attentions.0.", "middle_block.1."),
    ]
    for j in range(2):
        rules.append((f"mid_block.resnets.{j}.", f"middle_block.{2 * j}."))
    for i in range(levels):
        for j in range(layers):
            rules.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{per_level * i + j + 1}.0."))
            rules.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{per_level * i + j + 1}.1."))
        rules.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{per_level * (i + 1)}.0.op."))
        for j in range(layers + 1):
            rules.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{per_level * i + j}.0."))
            rules.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{per_level * i + j}.1."))
        has_attention = any(k.startswith(f"up_blocks.{i}.attentions.") for k in state)
        rules.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{per_level * i + layers}.{2 if has_attention else 1}."))
    resnet_parts = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                    ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
    out = {}
    for key, value in state.items():
        new = key
        if ".resnets." in key:
            for hf, sd in resnet_parts:
                new = new.replace(f".{hf}.", f".{sd}.")
        for hf, sd in rules:
            if new.startswith(hf):
                new = sd + new[len(hf):]
                break
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("decoder.up_blocks."))
    attn_parts = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    out = {}
    for key, value in state.items():
        new = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.block.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.upsample.", new)
        new = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", new)
        if "mid_block.attentions.0." in new:
            new = new.replace("mid_block.attentions.0.", "mid.attn_1.")
            for hf, sd in attn_parts.items():
                new = new.replace(f"attn_1.{hf}", f"attn_1.{sd}")
            if new.endswith(".weight") and value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)  # SD stores these as 1x1 convolutions
        out["first_stage_model." + new] = value
    return out


def save_ldm_single_file(folder: Path, out_file: Path) -> Path:
    """Write a diffusers SD 1.x folder as one original-layout .safetensors file."""
    import json

    from safetensors.torch import load_file, save_file

    layers = json.loads((folder / "unet" / "config.json").read_text())["layers_per_block"]
    unet = _unet_to_ldm(load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"), layers)
    vae = _vae_to_ldm(load_file(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    text_state = load_file(folder / "text_encoder" / "model.safetensors")
    # transformers 5 saves CLIPTextModel without its `text_model.` prefix; the SD layout has it.
    text = {"cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in text_state.items()}
    save_file({k: v.contiguous() for k, v in {**unet, **vae, **text}.items()}, out_file)
    return out_file


def save_config_folder(folder: Path, out_dir: Path) -> Path:
    """The diffusers folder without weights: what models/configs/<family>/ holds for single files."""
    shutil.copytree(folder, out_dir, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return out_dir


def make_tiny_sd_inpaint(folder: Path) -> Path:
    """A StableDiffusionInpaintPipeline folder: a dedicated inpainting UNet reads 9 channels
    (4 noisy latent, 1 mask, 4 masked-image latent)."""
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    pipe = StableDiffusionInpaintPipeline(
        unet=unet, vae=_vae(), text_encoder=_text_encoder(), tokenizer=_tokenizer(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder
