"""Request bodies of AUTOMATIC1111's /sdapi/v1, with its field names and defaults.

Unknown fields are ignored, as AUTOMATIC1111 does, so clients written for it keep working.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Txt2ImgBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list)
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    sampler_name: str | None = None
    sampler_index: str | None = None  # legacy alias of sampler_name
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    denoising_strength: float | None = None
    override_settings: dict[str, Any] = Field(default_factory=dict)
    override_settings_restore_afterwards: bool = True
    send_images: bool = True
    save_images: bool = False
    do_not_save_samples: bool = False
    infotext: str | None = None


class Img2ImgBody(Txt2ImgBody):
    init_images: list[str] = Field(default_factory=list)  # base64 images; the first one is used
    resize_mode: int = 0  # 0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale (as 0)
    denoising_strength: float | None = 0.75
    image_cfg_scale: float | None = None
    mask: str | None = None  # base64; white = repaint
    mask_blur: int | None = None  # None: mask_blur_x, else 4
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    include_init_images: bool = False


class PngInfoBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    image: str


class ProgressQuery(BaseModel):
    skip_current_image: bool = False


class ExtraSingleBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    image: str
    resize_mode: int = 0  # 0: by scale, 1: to width x height
    upscaling_resize: float = 2
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0


class ImageItem(BaseModel):
    data: str
    name: str = ""


class ExtraBatchBody(ExtraSingleBody):
    image: str = ""
    imageList: list[ImageItem] = Field(default_factory=list)
