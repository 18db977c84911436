"""The real architectures bench/gpu.py builds with random weights (no download): each component's
config as published with the model (diffusers' and transformers' config.json files, trimmed to the
keys that differ from the classes' defaults).

Text encoders: the CLIP ones are the real sizes. SD3 runs without its T5 (text_encoder_3=None, as the
pipeline allows: zeros in its place); Flux needs one, so it gets T5-XXL's width with 2 of its 24 layers
(text encoding is done once per image, not per step; the table says so)."""

from __future__ import annotations

CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)
T5_XXL_2_LAYERS = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=2, num_heads=64,
                       feed_forward_proj="gated-gelu", is_encoder_decoder=False, dropout_rate=0.0)

_SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=[128, 256, 512, 512],
               down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, norm_num_groups=32)
_SD3_VAE = dict(_SD_VAE, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False)

# SD 1.x/SDXL's scheduler config (Euler, as in both rows of the benchmark)
_SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                     timestep_spacing="leading", prediction_type="epsilon")

SD15 = {
    "pipeline": "StableDiffusionPipeline", "family": "sd1", "size": 512, "scheduler": "EulerDiscreteScheduler",
    "scheduler_config": _SD_SCHEDULER,
    "unet": dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[320, 640, 1280, 1280],
                 down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                 up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
                 attention_head_dim=8, cross_attention_dim=768, norm_num_groups=32),
    "vae": dict(_SD_VAE, sample_size=512, scaling_factor=0.18215),
    "text_encoder": ("CLIPTextModel", CLIP_L),
}

SDXL = {
    "pipeline": "StableDiffusionXLPipeline", "family": "sdxl", "size": 1024, "scheduler": "EulerDiscreteScheduler",
    "scheduler_config": _SD_SCHEDULER,
    "unet": dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[320, 640, 1280],
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                 transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20], cross_attention_dim=2048,
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816, norm_num_groups=32),
    "vae": dict(_SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
    "text_encoder": ("CLIPTextModel", CLIP_L),
    "text_encoder_2": ("CLIPTextModelWithProjection", CLIP_G),
}

SD3 = {  # SD3 Medium (2B)
    "pipeline": "StableDiffusion3Pipeline", "family": "sd3", "size": 1024, "scheduler": "FlowMatchEulerDiscreteScheduler",
    "transformer": ("SD3Transformer2DModel", dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24,
                                                  attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                                                  caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
                                                  pos_embed_max_size=192)),
    "vae": dict(_SD3_VAE, sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609),
    "text_encoder": ("CLIPTextModelWithProjection", CLIP_L),
    "text_encoder_2": ("CLIPTextModelWithProjection", CLIP_G),
    "text_encoder_3": None,
}

FLUX = {  # FLUX.1-dev (12B): 19 double and 38 single blocks
    "pipeline": "FluxPipeline", "family": "flux", "size": 1024, "scheduler": "FlowMatchEulerDiscreteScheduler",
    "scheduler_config": dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
    "transformer": ("FluxTransformer2DModel", dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                                                   attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                                                   pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=[16, 56, 56])),
    "vae": dict(_SD3_VAE, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159),
    "text_encoder": ("CLIPTextModel", CLIP_L),
    "text_encoder_2": ("T5EncoderModel", T5_XXL_2_LAYERS),
}

ARCHITECTURES = {"sd15": SD15, "sdxl": SDXL, "sd3": SD3, "flux": FLUX}


def shrunk(config: dict) -> dict:
    """The same pipeline at a toy size (a dry run of bench/gpu.py on the CPU): narrow, shallow blocks."""
    out = {k: v for k, v in config.items()}
    if "unet" in config:
        n = len(config["unet"]["block_out_channels"])
        sd1 = config["family"] == "sd1"
        out["unet"] = dict(config["unet"], block_out_channels=[32, 64, 64, 64][:n], layers_per_block=1, norm_num_groups=16,
                           attention_head_dim=8 if sd1 else [2, 4, 8][:n], cross_attention_dim=32 if sd1 else 64)
        if not sd1:
            out["unet"]["transformer_layers_per_block"] = [1, 1, 1]
        if config["family"] == "sdxl":
            out["unet"].update(addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8)
    if "transformer" in config:
        cls, t = config["transformer"]
        if cls == "SD3Transformer2DModel":
            t = dict(t, num_layers=2, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=64,
                     caption_projection_dim=16, pooled_projection_dim=64, sample_size=32, pos_embed_max_size=32)
        else:
            t = dict(t, num_layers=1, num_single_layers=2, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                     pooled_projection_dim=32, axes_dims_rope=[4, 6, 6])
        out["transformer"] = (cls, t)
    out["vae"] = dict(config["vae"], block_out_channels=[16, 32], down_block_types=["DownEncoderBlock2D"] * 2,
                      up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1, norm_num_groups=8)
    small_clip = dict(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=77, hidden_act="gelu", projection_dim=32)
    for name in ("text_encoder", "text_encoder_2"):
        if config.get(name):
            cls, _ = config[name]
            if cls == "T5EncoderModel":
                out[name] = (cls, dict(T5_XXL_2_LAYERS, vocab_size=1000, d_model=32, d_kv=8, d_ff=37, num_heads=4))
            else:
                out[name] = (cls, small_clip)
    out["size"] = 64
    return out
