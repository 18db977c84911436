"""AUTOMATIC1111's request fields -> Kiri's engine requests, and results -> A1111's responses.

The engine's request dataclasses are the one schema of each task; the UI maps its widgets onto
them (webui/ui/components.py) and this module maps A1111's JSON onto them.
"""

from __future__ import annotations

import json
import time
from typing import Any

from webui import __version__
from webui.engine.context import Engine
from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.requests import GenerationResult, Txt2ImgRequest

from ..common import decode_image, encode_png, json_safe
from .fields import Img2ImgBody, Txt2ImgBody

CLIP_SKIP_OPTION = "CLIP_stop_at_last_layers"  # A1111's setting name, sent in override_settings


def common_fields(body: Txt2ImgBody) -> dict[str, Any]:
    """The engine request fields txt2img and img2img share; sd_model_checkpoint picks the model."""
    overrides = body.override_settings
    model = overrides.get("sd_model_checkpoint")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("override_settings.sd_model_checkpoint", "sd_model_checkpoint must be a model name (a string)")
    addons: dict[str, Any] = {}
    if CLIP_SKIP_OPTION in overrides:
        addons["clip_skip"] = overrides[CLIP_SKIP_OPTION]
    save = None
    if body.save_images is not None or body.do_not_save_samples:
        save = bool(body.save_images) and not body.do_not_save_samples
    return dict(
        prompt=body.prompt, negative_prompt=body.negative_prompt,
        sampler_name=body.sampler_name or body.sampler_index or None, scheduler=body.scheduler,
        steps=body.steps, cfg_scale=body.cfg_scale, seed=body.seed, width=body.width, height=body.height,
        batch_size=body.batch_size, n_iter=body.n_iter, model=model or None, addons=addons, save_images=save,
    )


def txt2img_request(body: Txt2ImgBody) -> Txt2ImgRequest:
    return Txt2ImgRequest(**common_fields(body))


def img2img_request(body: Img2ImgBody, warnings: list[str]):
    from webui.engine.generation.img2img import Img2ImgRequest

    if not body.init_images:
        raise InvalidRequest("init_images", "init_images is empty: send the picture to start from, as base64")
    if len(body.init_images) > 1:
        warnings.append(f"{len(body.init_images)} init images were sent; Kiri uses the first")
    resize_mode = body.resize_mode
    if resize_mode == 3:  # A1111's latent upscale: Kiri resizes in pixel space
        resize_mode = 0
        warnings.append("resize mode 3 (latent upscale) is done as 0 (just resize)")
    if body.mask_blur is not None:
        mask_blur, blur_field = body.mask_blur, "mask_blur"
    else:
        mask_blur, blur_field = max(body.mask_blur_x, body.mask_blur_y), "mask_blur_x" if body.mask_blur_x >= body.mask_blur_y else "mask_blur_y"
    try:
        return Img2ImgRequest(
            **common_fields(body),
            # Opened, not decoded: the engine checks the size against Settings' max_pixels first.
            init_image=decode_image(body.init_images[0], "init_images", load=False),
            denoising_strength=body.denoising_strength if body.denoising_strength is not None else 0.75,
            resize_mode=resize_mode,
            mask=decode_image(body.mask, "mask", load=False) if body.mask else None,
            mask_blur=mask_blur,
            inpainting_mask_invert=body.inpainting_mask_invert, inpainting_fill=body.inpainting_fill,
            inpaint_full_res=body.inpaint_full_res, inpaint_full_res_padding=body.inpaint_full_res_padding,
        )
    except InvalidRequest as exc:
        if exc.field == "mask_blur" and blur_field != "mask_blur":
            raise InvalidRequest(blur_field, str(exc).replace("mask_blur", blur_field)) from exc
        raise


def response(engine: Engine, body: Txt2ImgBody, result: GenerationResult, extra_images=()) -> dict:
    """A1111's response: PNGs with their infotext, the request echoed, and info as a JSON string."""
    info = {
        "prompt": body.prompt, "all_prompts": [body.prompt] * len(result.images),
        "negative_prompt": body.negative_prompt, "all_negative_prompts": [body.negative_prompt] * len(result.images),
        "seed": result.seeds[0] if result.seeds else body.seed, "all_seeds": result.seeds,
        "subseed": -1, "all_subseeds": [-1] * len(result.seeds), "subseed_strength": 0,
        "sampler_name": result.sampler_name, "scheduler": result.schedule, "cfg_scale": body.cfg_scale,
        "steps": body.steps, "batch_size": body.batch_size, "width": body.width, "height": body.height,
        "sd_model_name": result.model_name or None, "sd_model_hash": result.model_hash or None,
        "denoising_strength": body.denoising_strength, "extra_generation_params": {},
        "infotexts": result.infotexts, "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": body.override_settings.get(CLIP_SKIP_OPTION, 1),
        "interrupted": result.interrupted, "warnings": result.warnings, "version": f"Kiri v{__version__}",
    }
    images = [encode_png(im, text) for im, text in zip(result.images, result.infotexts)] if body.send_images else []
    if body.send_images:
        images += list(extra_images)
    parameters = body.model_dump()
    if "init_images" in parameters:  # A1111 echoes the request without its images (init_images, mask: None)
        parameters["init_images"], parameters["mask"] = None, None
    # json_safe: a NaN the client sent in an unused field (subseed_strength) must not make info invalid JSON
    return {"images": images, "parameters": parameters, "info": json.dumps(json_safe(info), allow_nan=False)}
