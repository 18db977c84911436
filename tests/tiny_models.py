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


# --- the other families: SDXL, SD 2.x, PixArt, Flux --------------------------------------------
# Sizes follow diffusers' own get_dummy_components() for these pipelines.

def _t5_tokenizer():
    """A tiny sentencepiece-style (unigram) T5 tokenizer built in memory: no hub, no file."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    words = "a red blue green circle square triangle cat dog on the of and in photo big small".split()
    pieces += [("▁" + w, -3.0) for w in words]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.!?"]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _t5_encoder(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    return T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, pad_token_id=0, eos_token_id=1,
    ))


def make_tiny_sdxl(folder: Path) -> Path:
    """A StableDiffusionXLPipeline folder: CLIP + CLIPWithProjection (pooled), size conditioning."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 size numbers x 8 + the 32-wide pooled text embedding
        cross_attention_dim=80, norm_num_groups=32,  # 80 = the two encoders' 32 + 48, concatenated
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading", prediction_type="epsilon",
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=_vae(), scheduler=scheduler,
        text_encoder=_text_encoder(), tokenizer=_tokenizer(),
        text_encoder_2=_sdxl_text_encoder_2(), tokenizer_2=_tokenizer(),
    )
    pipe.save_pretrained(folder)
    return folder


def _sdxl_text_encoder_2():
    """SDXL's second encoder (OpenCLIP bigG): wider than the first, as in the real model. diffusers'
    single-file loader tells the two apart by their width, so equal widths would load the wrong one."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    return CLIPTextModelWithProjection(CLIPTextConfig(
        bos_token_id=96, eos_token_id=97, pad_token_id=97, hidden_size=48, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2, vocab_size=98,
        projection_dim=32, max_position_embeddings=77, hidden_act="gelu",
    ))


def make_tiny_sd2(folder: Path) -> Path:
    """A StableDiffusionPipeline folder laid out like SD 2.x 768-v: v-prediction, linear projections,
    per-level attention heads, and a GELU (OpenCLIP-style) text encoder."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, cross_attention_dim=32, norm_num_groups=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=96, eos_token_id=97, pad_token_id=97, hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2, vocab_size=98,
        projection_dim=32, max_position_embeddings=77, hidden_act="gelu",
    ))
    pipe = StableDiffusionPipeline(
        unet=unet, vae=_vae(), text_encoder=text_encoder, tokenizer=_tokenizer(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def make_tiny_pixart(folder: Path) -> Path:
    """A PixArtSigmaPipeline folder: a DiT with adaLN-single, a tiny T5, learned sigma (8 out channels)."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=32, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
        caption_channels=32, in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6,
    )
    tokenizer = _t5_tokenizer()
    torch.manual_seed(0)
    # PixArt's pipeline bins sizes (a 64x64 request is made at 256x256 and resized), so its VAE
    # downscales by 8 like the real one, which keeps the transformer at 16x16 patches.
    vae = AutoencoderKL(
        block_out_channels=[8, 8, 16, 16], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        norm_num_groups=8, sample_size=64,
    )
    pipe = PixArtSigmaPipeline(
        transformer=transformer, vae=vae, scheduler=DPMSolverMultistepScheduler(),
        text_encoder=_t5_encoder(len(tokenizer)), tokenizer=tokenizer,
    )
    pipe.save_pretrained(folder)
    return folder


def make_tiny_flux(folder: Path, guidance: bool = True) -> Path:
    """A FluxPipeline folder: CLIP (pooled) + T5 (sequence), packed 2x2 latents, guidance embedding
    (without it: FLUX.1-schnell's layout)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
        guidance_embeds=guidance,  # FLUX.1-dev's distilled guidance
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=32, sample_size=64, use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.0609, scaling_factor=1.5035,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )
    tokenizer_2 = _t5_tokenizer()
    pipe = FluxPipeline(
        transformer=transformer, vae=vae, scheduler=scheduler,
        text_encoder=_text_encoder(), tokenizer=_tokenizer(),
        text_encoder_2=_t5_encoder(len(tokenizer_2)), tokenizer_2=tokenizer_2,
    )
    pipe.save_pretrained(folder)
    return folder


def _clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model in the original CLIP layout: <prefix>transformer.text_model.*"""
    return {prefix + "transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in state.items() if not k.startswith("text_projection")}


def _clip_to_open_clip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model in OpenCLIP's layout (SD 2.x, SDXL's second encoder):
    resblocks with fused q/k/v, ln_final, positional_embedding, text_projection as a matrix."""
    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {
        prefix + "token_embedding.weight": state["embeddings.token_embedding.weight"],
        prefix + "positional_embedding": state["embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": state["final_layer_norm.weight"],
        prefix + "ln_final.bias": state["final_layer_norm.bias"],
    }
    width = state["final_layer_norm.weight"].shape[0]
    out[prefix + "text_projection"] = (state["text_projection.weight"].T if "text_projection.weight" in state
                                       else torch.eye(width))
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers."))
    for n in range(layers):
        hf, ldm = f"encoder.layers.{n}.", f"{prefix}transformer.resblocks.{n}."
        for part in ("weight", "bias"):
            out[f"{ldm}attn.in_proj_{part}"] = torch.cat([state[f"{hf}self_attn.{p}_proj.{part}"] for p in "qkv"])
            out[f"{ldm}attn.out_proj.{part}"] = state[f"{hf}self_attn.out_proj.{part}"]
            out[f"{ldm}ln_1.{part}"] = state[f"{hf}layer_norm1.{part}"]
            out[f"{ldm}ln_2.{part}"] = state[f"{hf}layer_norm2.{part}"]
            out[f"{ldm}mlp.c_fc.{part}"] = state[f"{hf}mlp.fc1.{part}"]
            out[f"{ldm}mlp.c_proj.{part}"] = state[f"{hf}mlp.fc2.{part}"]
    return out


def _unet_vae_to_ldm(folder: Path) -> dict[str, torch.Tensor]:
    import json

    from safetensors.torch import load_file

    layers = json.loads((folder / "unet" / "config.json").read_text())["layers_per_block"]
    unet_state = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    # SDXL's size and pooled-text embedding is label_emb in the original layout.
    unet_state = {k.replace("add_embedding.linear_1.", "label_emb.0.0.").replace("add_embedding.linear_2.", "label_emb.0.2."): v
                  for k, v in unet_state.items()}
    unet = _unet_to_ldm(unet_state, layers)
    vae = _vae_to_ldm(load_file(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    return {**unet, **vae}


def save_sd2_single_file(folder: Path, out_file: Path) -> Path:
    """A diffusers SD 2.x folder as one original-layout file (OpenCLIP text encoder under cond_stage_model.model.)."""
    from safetensors.torch import load_file, save_file

    text = _clip_to_open_clip(load_file(folder / "text_encoder" / "model.safetensors"), "cond_stage_model.model.")
    save_file({k: v.contiguous() for k, v in {**_unet_vae_to_ldm(folder), **text}.items()}, out_file)
    return out_file


def save_sdxl_single_file(folder: Path, out_file: Path) -> Path:
    """A diffusers SDXL folder as one original-layout file: conditioner.embedders.0 (CLIP-L layout)
    and conditioner.embedders.1 (OpenCLIP-bigG layout)."""
    from safetensors.torch import load_file, save_file

    clip = _clip_to_ldm(load_file(folder / "text_encoder" / "model.safetensors"), "conditioner.embedders.0.")
    open_clip = _clip_to_open_clip(load_file(folder / "text_encoder_2" / "model.safetensors"), "conditioner.embedders.1.model.")
    save_file({k: v.contiguous() for k, v in {**_unet_vae_to_ldm(folder), **clip, **open_clip}.items()}, out_file)
    return out_file


# --- segmenters (models/segmentation/) -------------------------------------------------------

def make_tiny_upscaler(path, scale: int = 4, num_feat: int = 8, num_conv: int = 2, seed: int = 0):
    """Real-ESRGAN's compact net (SRVGGNetCompact) with random weights, saved as safetensors with
    spandrel's key names (body.N.weight ...). Its receptive field is num_conv + 2 pixels."""
    import torch
    from safetensors.torch import save_file

    from webui.engine.upscale._compact import SRVGGNetCompact

    torch.manual_seed(seed)
    model = SRVGGNetCompact(3, 3, num_feat, num_conv, scale)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def make_tiny_sd_x4_upscaler(folder: Path) -> Path:
    """A StableDiffusionUpscalePipeline folder (SD x4 upscaler layout: a UNet taking 4 latent + 3
    low-res image channels and the noise level as class label, a VAE with a factor 4) of random tiny weights."""
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64), layers_per_block=1, sample_size=32, in_channels=7, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, use_linear_projection=True,
        only_cross_attention=(True, True, False), num_class_embeds=100, norm_num_groups=32,
    )
    torch.manual_seed(0)
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        block_out_channels=[32, 32, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3, norm_num_groups=32,
    )
    pipe = StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=_text_encoder(), tokenizer=_tokenizer(), unet=unet,
        low_res_scheduler=DDPMScheduler(), scheduler=DDIMScheduler(prediction_type="v_prediction"), max_noise_level=350,
    )
    pipe.save_pretrained(folder)
    return folder


def make_tiny_latent_upscaler(folder: Path) -> Path:
    """A StableDiffusionLatentUpscalePipeline folder (SD x2 latent upscaler layout: UNet2DConditionModel
    with 8 input channels and a Fourier time embedding, EulerDiscrete schedule) of random tiny weights."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionLatentUpscalePipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        act_fn="gelu", attention_head_dim=8, norm_num_groups=None, block_out_channels=[32, 32, 64, 64],
        time_cond_proj_dim=160, conv_in_kernel=1, conv_out_kernel=1, cross_attention_dim=32,
        down_block_types=("KDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D"),
        in_channels=8, mid_block_type=None, only_cross_attention=False, out_channels=5, resnet_time_scale_shift="scale_shift",
        time_embedding_type="fourier", timestep_post_act="gelu",
        up_block_types=("KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KUpBlock2D"),
    )
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 32, 64, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    )
    scheduler = EulerDiscreteScheduler(prediction_type="sample")
    pipe = StableDiffusionLatentUpscalePipeline(vae=vae, text_encoder=_text_encoder(), tokenizer=_tokenizer(), unet=unet,
                                                scheduler=scheduler)
    pipe.save_pretrained(folder)
    return folder


def make_tiny_ldm_super_resolution(folder: Path) -> Path:
    """An LDMSuperResolutionPipeline folder (CompVis' x4 layout: a VQ autoencoder with a factor 4 and a
    UNet2DModel taking 3 latent + 3 low-res image channels) of random tiny weights."""
    from diffusers import DDIMScheduler, LDMSuperResolutionPipeline, UNet2DModel, VQModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=6, out_channels=3,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )
    torch.manual_seed(0)
    vqvae = VQModel(
        block_out_channels=[32, 32, 64], in_channels=3, out_channels=3, latent_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
    )
    LDMSuperResolutionPipeline(vqvae=vqvae, unet=unet, scheduler=DDIMScheduler()).save_pretrained(folder)
    return folder


# --- video (motion modules in models/motion/, native video pipelines in checkpoints/) -----------------

def make_tiny_motion_module(folder: Path, max_frames: int = 8, sdxl: bool = False) -> Path:
    """An AnimateDiff MotionAdapter for make_tiny_sd's UNet (or make_tiny_sdxl's: no mid-block motion
    module, as SDXL's modules have): block channels (32, 64), two layers a block; `max_frames` is its
    context (FreeNoise windows beyond it)."""
    from diffusers import MotionAdapter

    torch.manual_seed(0)
    MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=2, motion_norm_num_groups=32,
                  motion_num_attention_heads=2, motion_max_seq_length=max_frames,
                  use_motion_mid_block=not sdxl).save_pretrained(folder)
    return folder


def make_tiny_wan(folder: Path) -> Path:
    """A WanPipeline folder (a native text-to-video DiT) with diffusers' dummy sizes; a T5 encoder
    stands in for UMT5 (same layout), with the in-memory tokenizer."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16, text_dim=32,
        freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    tokenizer = _t5_tokenizer()
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=_t5_encoder(len(tokenizer)), vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), transformer=transformer)
    pipe.save_pretrained(folder)
    return folder


def make_tiny_ltx(folder: Path, image_to_video: bool = False) -> Path:
    """An LTXPipeline folder (LTX-Video, a native text-to-video DiT) with diffusers' dummy sizes; with
    image_to_video, the same weights as an LTXImageToVideoPipeline (the clip starts from a given frame)."""
    from diffusers import (
        AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXImageToVideoPipeline, LTXPipeline, LTXVideoTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
                                             attention_head_dim=8, cross_attention_dim=32, num_layers=1, caption_channels=32)
    torch.manual_seed(0)
    flat = (False, False, False, False)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(*flat, False), upsample_residual=flat,
        upsample_factor=(1, 1, 1, 1), timestep_conditioning=False, patch_size=1, patch_size_t=1, encoder_causal=True,
        decoder_causal=False,
    )
    tokenizer = _t5_tokenizer()
    pipeline_class = LTXImageToVideoPipeline if image_to_video else LTXPipeline
    pipe = pipeline_class(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=_t5_encoder(len(tokenizer)),
                          tokenizer=tokenizer, transformer=transformer)
    pipe.save_pretrained(folder)
    return folder


# --- quantised checkpoints -------------------------------------------------------------------

def save_gguf_transformer(folder: Path, out_file: Path, qtype: str = "Q8_0") -> Path:
    """A pipeline folder's transformer as a GGUF file, as ComfyUI-GGUF's and Forge's Flux/SD3 files are:
    each 2-D weight whose rows fit the quantisation's blocks quantised with the gguf package, the other
    tensors (biases, norms, narrow layers) kept in F32. Tensor names in diffusers' layout."""
    import gguf
    from safetensors.torch import load_file

    weights = sorted((folder / "transformer").glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    for file in weights:
        state.update(load_file(str(file)))
    kind = gguf.GGMLQuantizationType[qtype]
    block, _ = gguf.GGML_QUANT_SIZES[kind]
    writer = gguf.GGUFWriter(str(out_file), arch="flux" if "single_transformer_blocks.0.norm.linear.weight" in state else "sd3")
    for name, tensor in state.items():
        data = tensor.float().numpy()
        if data.ndim == 2 and data.shape[-1] % block == 0:
            writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


def save_fp8_single_file(single_file: Path, out_file: Path, dtype: torch.dtype = torch.float8_e4m3fn,
                         metadata: dict[str, str] | None = None) -> Path:
    """An original-layout single file with its UNet's weights in float8, as "fp8" checkpoints ship them
    (the VAE and text encoder kept as they were)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(single_file))
    stored = {k: (v.to(dtype) if k.startswith("model.diffusion_model.") and v.is_floating_point() and v.ndim >= 2 else v)
              for k, v in state.items()}
    save_file(stored, str(out_file), metadata=metadata)
    return out_file


def save_fp8_folder(folder: Path, out_dir: Path, dtype: torch.dtype = torch.float8_e4m3fn) -> Path:
    """A copy of a pipeline folder with its UNet's weights in float8 (a diffusers-layout "fp8" model)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, out_dir)
    for weights in (out_dir / "unet").glob("*.safetensors"):
        state = load_file(str(weights))
        save_file({k: (v.to(dtype) if v.is_floating_point() and v.ndim >= 2 else v) for k, v in state.items()}, str(weights))
    return out_dir
