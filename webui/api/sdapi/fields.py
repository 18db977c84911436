"""Request bodies of AUTOMATIC1111's /sdapi/v1, with its field names and defaults.

Unknown fields are ignored, as AUTOMATIC1111 does, so clients written for it keep working.
The fields A1111 has and Kiri does not act on are declared with A1111's types, so they are checked
as A1111 checks them and mapping.py can name each one it does not apply in the reply's warnings.
Numbers must be finite: NaN or Infinity in a body is a 422, never echoed back.
"""

from __future__ import annotations

from typing import Any

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

from webui.engine.core.errors import InvalidRequest

BODY = ConfigDict(extra="ignore", allow_inf_nan=False)


class Body(BaseModel):
    """A request body. Values no JSON reply can hold (NaN, Infinity, text with a lone surrogate such as
    "\\ud83d") are refused first, with a 422 naming the field: pydantic's own error would carry the
    value back, and the error reply itself would then fail as a 500."""

    model_config = BODY

    @model_validator(mode="before")
    @classmethod
    def _refuse_unrepresentable(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                problem = _unrepresentable(key) or _unrepresentable(value)
                if problem:
                    field = key if isinstance(key, str) and not _unrepresentable(key) else "body"
                    raise InvalidRequest(field, f"{field} {problem}")
        return data


def _unrepresentable(value: Any, depth: int = 0) -> str | None:
    """Why value cannot go back into a JSON reply, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (NaN and Infinity are not JSON)"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"holds text that is not valid Unicode (a lone surrogate at character {exc.start}); send UTF-8 text"
        return None
    if depth < 32 and isinstance(value, dict):
        return next((p for k, v in value.items() if (p := _unrepresentable(k, depth + 1) or _unrepresentable(v, depth + 1))), None)
    if depth < 32 and isinstance(value, list):
        return next((p for v in value if (p := _unrepresentable(v, depth + 1))), None)
    return None


class Txt2ImgBody(Body):
    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list)
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
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
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_grid: bool = False
    eta: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    comments: dict[str, Any] | None = None
    enable_hr: bool = False
    firstphase_width: int = 0  # legacy hires-fix fields
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
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
    mask_round: bool = True
    initial_noise_multiplier: float | None = None
    include_init_images: bool = False


class PngInfoBody(Body):
    image: str


class ExtraSingleBody(Body):
    image: str
    resize_mode: int = 0  # 0: by scale, 1: to width x height
    upscaling_resize: float = 2
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0
    # Kiri's own: the model upscalers' tiles (A1111 reads them from its ESRGAN_tile options); checked by
    # UpscaleRequest.validate, so a value out of range is a 422 naming the field, never ignored.
    tile_size: int = 0  # 0: from free memory
    tile_overlap: int = 32


class ImageItem(BaseModel):
    data: str
    name: str = ""


class ExtraBatchBody(ExtraSingleBody):
    image: str = ""
    imageList: list[ImageItem] = Field(default_factory=list)


class OptionsBody(Body):
    """POST /options: the options Kiri has, each checked by options.py (so typed Any here: a wrong type
    gets options.py's message naming the option); any other name is accepted and ignored, as A1111 does."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    sd_model_checkpoint: Any = None
    sd_checkpoint_cache: Any = None
    samples_save: Any = None
    samples_format: Any = None
    show_progress_every_n_steps: Any = None
    send_seed: Any = None
    send_size: Any = None
