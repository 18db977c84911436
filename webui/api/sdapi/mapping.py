"""AUTOMATIC1111's request fields -> Kiri's engine requests, and results -> A1111's responses.

The engine's request dataclasses are the one schema of each task; the UI maps its widgets onto
them (webui/ui/components.py) and this module maps A1111's JSON onto them.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from typing import Any

from webui import __version__
from webui.engine.context import Engine
from webui.engine.core.errors import InvalidRequest
from webui.engine.core.infotext import parse_infotext
from webui.engine.generation.call import ClipSkip
from webui.engine.generation.defaults import model_defaults
from webui.engine.generation.requests import GenerationResult, HiresFix, Txt2ImgRequest

from webui.engine.core.limits import DEFAULT_MAX_PIXELS

from ..common import decode_image, encode_png, json_safe
from .fields import Img2ImgBody, Txt2ImgBody
from .options import parse_bool, parse_image_format, parse_int, parse_model_name

CLIP_SKIP_OPTION = "CLIP_stop_at_last_layers"  # A1111's setting name, sent in override_settings
STEP_CACHE_OPTION = "step_cache"  # Kiri's own, as in /sdapi/v1/options: "taylorseer 5", {"method": ...} or "off"
VAE_OPTION = "sd_vae"  # A1111's: "Automatic", "None" or a VAE's name, as /sdapi/v1/sd-vae lists them
MAX_NAMED = 10  # unknown scripts or settings named one by one in the warnings, at most


def common_fields(body: Txt2ImgBody, warnings: list[str] | None = None, engine: Engine | None = None) -> dict[str, Any]:
    """The engine request fields txt2img and img2img share.

    override_settings apply to this request only (A1111's override_settings_restore_afterwards,
    always): each one Kiri has becomes a field of the engine request, never a change to the
    engine's settings; the others are named in `warnings`.
    """
    warnings = [] if warnings is None else warnings
    overrides = body.override_settings
    model = None
    if "sd_model_checkpoint" in overrides and overrides["sd_model_checkpoint"] is not None:
        model = parse_model_name("override_settings.sd_model_checkpoint", overrides["sd_model_checkpoint"])
    addons: dict[str, Any] = {}
    if CLIP_SKIP_OPTION in overrides:
        addons["clip_skip"] = parse_int(f"override_settings.{CLIP_SKIP_OPTION}", overrides[CLIP_SKIP_OPTION], 1, ClipSkip.MAX)
    if STEP_CACHE_OPTION in overrides:
        addons["step_cache"] = overrides[STEP_CACHE_OPTION]  # checked, naming the field, before the job is queued
    if overrides.get(VAE_OPTION) is not None:
        addons["vae"] = overrides[VAE_OPTION]  # its type checked before the job is queued, the name when it starts
    samples_save = (parse_bool("override_settings.samples_save", overrides["samples_save"])
                    if "samples_save" in overrides else None)
    image_format = (parse_image_format("override_settings.samples_format", overrides["samples_format"])
                    if "samples_format" in overrides else None)
    # As A1111: the API saves only when asked to (save_images) and the samples_save setting agrees.
    save = samples_save if body.save_images and not body.do_not_save_samples else False
    ignored = [k for k in overrides if k not in PER_REQUEST_SETTINGS]
    if ignored:
        warnings.append("override_settings not applied (Kiri has no such per-request setting): "
                        + ", ".join(repr(k) for k in ignored[:MAX_NAMED]) + (" ..." if len(ignored) > MAX_NAMED else ""))
    if overrides and not body.override_settings_restore_afterwards:
        warnings.append("override_settings_restore_afterwards is false, but Kiri applies override_settings to this "
                        "request only; change settings with POST /sdapi/v1/options")
    # alwayson_scripts the add-ons read (sd-webui-controlnet's "controlnet", ...) become their settings
    scripts, unread = engine.addons.from_api_scripts(body.alwayson_scripts) if engine is not None else ({}, list(body.alwayson_scripts))
    for name, settings in scripts.items():
        addons.setdefault(name, settings)
    unapplied_fields(body, warnings, unread)
    # A field the client left out is A1111's default (50 steps, CFG 7), except on a few-step model or with a
    # few-step LoRA in the prompt (LCM, Turbo, Lightning...): None there, which the engine fills with its recipe.
    few_step = engine is not None and model_defaults(engine, model, body.prompt).few_step is not None
    sent = body.model_fields_set
    return dict(
        prompt=body.prompt, negative_prompt=body.negative_prompt,
        sampler_name=body.sampler_name or body.sampler_index or None, scheduler=body.scheduler,
        steps=body.steps if "steps" in sent or not few_step else None,
        cfg_scale=body.cfg_scale if "cfg_scale" in sent or not few_step else None,
        seed=body.seed, width=body.width, height=body.height,
        batch_size=body.batch_size, n_iter=body.n_iter, model=model, addons=addons, save_images=save,
        image_format=image_format, styles=list(body.styles),
    )


PER_REQUEST_SETTINGS = ("sd_model_checkpoint", CLIP_SKIP_OPTION, STEP_CACHE_OPTION, VAE_OPTION, "samples_save",
                        "samples_format")


def unapplied_fields(body: Txt2ImgBody, warnings: list[str], unread_scripts: list[str] | None = None) -> None:
    """Name each thing the request asks for that Kiri does not do: the reply is 200, as A1111 clients
    expect, but says so in info["warnings"] instead of dropping it silently."""
    def warn(asked: bool, text: str) -> None:
        if asked:
            warnings.append(text)

    warn(bool(body.restore_faces), "restore_faces: Kiri has no face restorer; faces are as generated")
    warn(bool(body.tiling), "tiling: Kiri does not make tileable images; the image was made without tiling")
    warn(body.subseed_strength > 0, "subseed_strength: variation seeds are not in Kiri yet; only seed was used")
    warn(body.seed_resize_from_w > 0 or body.seed_resize_from_h > 0, "seed_resize_from_w/h: not applied")
    # 1 and 0 are what the ancestral and DDIM samplers use anyway, and what clients send by default.
    warn(body.eta is not None and body.eta not in (0, 1), f"eta {body.eta}: not applied; each sampler uses its own")
    for name, neutral in (("s_churn", 0), ("s_tmin", 0), ("s_tmax", 0), ("s_noise", 1), ("s_min_uncond", 0)):
        value = getattr(body, name)
        warn(value is not None and value != neutral, f"{name} {value}: not applied; Kiri's samplers use their defaults")
    warn(bool(body.refiner_checkpoint), "refiner_checkpoint: refiners are not in Kiri yet; not applied")
    if is_sd_upscale(body) and not isinstance(body, Img2ImgBody):
        warn(True, "script_name 'SD upscale' is an img2img script; this txt2img request ran without it")
    else:  # an A1111 script Kiri lacks (check_script refused any other name)
        warn(bool(body.script_name) and not is_sd_upscale(body), f"script_name {str(body.script_name)!r}: "
                                                                 "not a script Kiri has; the request ran without it")
    scripts = list(body.alwayson_scripts) if unread_scripts is None else unread_scripts
    warn(bool(scripts), "alwayson_scripts not applied (Kiri has no such scripts): "
                        + ", ".join(repr(k) for k in scripts[:MAX_NAMED]))
    warn(body.infotext is not None, "infotext: reading parameters from an infotext is not done; the fields were used")


# AUTOMATIC1111's own scripts, by tab, as its script_name lookup reads them (lower case). Kiri runs
# "sd upscale" (img2img); the others run without the script, with a warning. Any other name is
# refused, as A1111 refuses it: "Script not found".
A1111_SCRIPTS = {
    "txt2img": ("prompt matrix", "prompts from file or textbox", "x/y/z plot", "x/y plot"),
    "img2img": ("img2img alternative test", "loopback", "outpainting mk2", "poor man's outpainting", "prompt matrix",
                "prompts from file or textbox", "sd upscale", "x/y/z plot", "x/y plot"),
}


def check_script(body: Txt2ImgBody) -> None:
    """script_name must be one of A1111's scripts for the tab (or empty): anything else is a 422."""
    if not body.script_name:
        return
    tab = "img2img" if isinstance(body, Img2ImgBody) else "txt2img"
    known = A1111_SCRIPTS[tab] + ((SD_UPSCALE,) if tab == "txt2img" else ())  # txt2img: run without it, warned
    if body.script_name.strip().lower() not in known:
        shown = body.script_name if len(body.script_name) <= 60 else body.script_name[:57] + "..."
        runs = "'SD upscale'" if tab == "img2img" else "none (SD upscale is on img2img)"
        raise InvalidRequest("script_name", f"Script not found: {shown!r} is not a {tab} script; Kiri runs {runs}, "
                                            "see GET /sdapi/v1/scripts")


def txt2img_request(body: Txt2ImgBody, warnings: list[str] | None = None, engine: Engine | None = None) -> Txt2ImgRequest:
    check_script(body)
    fields = common_fields(body, warnings, engine)
    if body.enable_hr:
        fields["hires"] = hires_fix(body, warnings if warnings is not None else [], engine)
    return Txt2ImgRequest(**fields)


def hires_fix(body: Txt2ImgBody, warnings: list[str], engine: Engine | None = None) -> HiresFix:
    """A1111's hr_* fields -> the request's hires fix. hr_upscaler and denoising_strength not sent: Kiri's
    default for the model (upscale.hires_defaults: A1111's Latent at 0.7 for models trained at 256 px
    or more; for Kiri's 64 px models an upscaler model and no second-pass denoising, which keeps the
    picture's composition). A client that sends them gets exactly what it sent.
    hr_checkpoint_name must name a checkpoint the catalog has; the second pass still runs on the
    first pass's (its latents are that model's), which the warning says."""
    if body.hr_checkpoint_name not in (None, "", "Use same checkpoint"):
        name = parse_model_name("hr_checkpoint_name", body.hr_checkpoint_name)
        if engine is not None and not _known_checkpoint(engine, name):
            names = ", ".join(e.name for e in engine.catalog.entries[:MAX_NAMED]) or "(none)"
            raise InvalidRequest("hr_checkpoint_name", f"hr_checkpoint_name: no checkpoint {name!r}; "
                                                       f"'Use same checkpoint' or one of: {names}")
        warnings.append("hr_checkpoint_name: the second pass uses the first pass's checkpoint in Kiri")
    if body.hr_scheduler not in (None, "", "Use same scheduler") and body.hr_scheduler != body.scheduler:
        warnings.append("hr_scheduler: the second pass uses the first pass's schedule type in Kiri")
    sampler = body.hr_sampler_name if body.hr_sampler_name not in (None, "", "Use same sampler") else None
    return HiresFix(
        scale=body.hr_scale, upscaler=body.hr_upscaler or None, steps=body.hr_second_pass_steps,
        resize_x=body.hr_resize_x, resize_y=body.hr_resize_y, denoising_strength=body.denoising_strength,
        sampler_name=sampler, prompt=body.hr_prompt or "", negative_prompt=body.hr_negative_prompt or "",
    )


def _known_checkpoint(engine: Engine, name: str) -> bool:
    if engine.catalog.find(name) is not None:
        return True
    engine.catalog.scan()  # a file added since the last scan
    return engine.catalog.find(name) is not None


SD_UPSCALE = "sd upscale"
SEAM_FIX_NAMES = {"none": "None", "half tile offset": "Half tile offset", "half tile": "Half tile offset",
                  "bands": "Bands", "band pass": "Bands"}


def is_sd_upscale(body: Txt2ImgBody) -> bool:
    return isinstance(body.script_name, str) and body.script_name.strip().lower() == SD_UPSCALE


def sd_upscale_options(engine: Engine, body: Img2ImgBody):
    """A1111's SD upscale script_args, [info, overlap, upscaler (name or index), scale], onto the
    request's SDUpscale; Kiri also reads [4] seam fix ("None", "Half tile offset", "Bands") and [5]
    its denoising strength. A bad argument is a 422 naming script_args and its index."""
    from webui.engine.generation.img2img import SDUpscale
    from webui.engine.upscale import all_upscalers, find_upscaler

    args = list(body.script_args or [])
    if len(args) > 6:
        raise InvalidRequest("script_args", f"SD upscale takes at most 6 script_args (got {len(args)})")
    defaults = ["", 64, "Lanczos", 2.0, "None", 0.35]
    args += defaults[len(args):]
    _, overlap, upscaler, scale, seam_fix, seam_denoise = args
    if isinstance(upscaler, int) and not isinstance(upscaler, bool):
        choices = all_upscalers(engine.catalog)
        if not 0 <= upscaler < len(choices):
            raise InvalidRequest("script_args", f"script_args[2]: upscaler index {upscaler} is not in 0..{len(choices) - 1}")
        upscaler = choices[upscaler].name
    if not isinstance(upscaler, str):
        raise InvalidRequest("script_args", f"script_args[2] must be an upscaler name or index (got {upscaler!r})")
    upscaler = find_upscaler(upscaler, "script_args", engine.catalog).name
    if isinstance(seam_fix, str) and seam_fix.strip().lower() in SEAM_FIX_NAMES:
        seam_fix = SEAM_FIX_NAMES[seam_fix.strip().lower()]
    return SDUpscale(upscaler=upscaler, scale=parse_number(scale, 3), overlap=parse_whole(overlap, 1), seam_fix=seam_fix,
                     seam_fix_denoise=parse_number(seam_denoise, 5))


def parse_number(value: Any, index: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidRequest("script_args", f"script_args[{index}] must be a number (got {value!r})")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise InvalidRequest("script_args", f"script_args[{index}] must be a number (got {str(value)[:50]!r})") from None
    if not math.isfinite(number):
        raise InvalidRequest("script_args", f"script_args[{index}] must be a finite number (got {value!r})")
    return number


def parse_whole(value: Any, index: int) -> int:
    number = parse_number(value, index)
    if number != int(number):
        raise InvalidRequest("script_args", f"script_args[{index}] must be a whole number (got {value!r})")
    return int(number)


SD_UPSCALE_ARGS = {"sd_upscale.overlap": 1, "sd_upscale.upscaler": 2, "sd_upscale.scale": 3, "sd_upscale.seam_fix": 4,
                   "sd_upscale.seam_fix_denoise": 5}


@contextmanager
def script_errors():
    """The engine's SD upscale fields (sd_upscale.overlap, ...) named as A1111's script_args[i]."""
    try:
        yield
    except InvalidRequest as exc:
        if exc.field.startswith("sd_upscale."):
            index = SD_UPSCALE_ARGS.get(exc.field)
            where = f"script_args[{index}]" if index is not None else "script_args"
            raise InvalidRequest("script_args", f"{where}: {exc}") from exc
        raise


def img2img_request(body: Img2ImgBody, warnings: list[str], engine: Engine | None = None):
    """A1111's img2img fields onto Img2ImgRequest; script_name "SD upscale" (any case) with its
    script_args sets the request's sd_upscale."""
    with script_errors():
        return _img2img_request(body, warnings, engine)


def _img2img_request(body: Img2ImgBody, warnings: list[str], engine: Engine | None):
    check_script(body)
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
    max_pixels = engine.settings.max_pixels if engine is not None else DEFAULT_MAX_PIXELS
    try:
        return Img2ImgRequest(
            **common_fields(body, warnings, engine),
            # Opened, not decoded: the engine checks the size against Settings' max_pixels first.
            init_image=decode_image(body.init_images[0], "init_images", max_pixels=max_pixels, load=False),
            denoising_strength=body.denoising_strength if body.denoising_strength is not None else 0.75,
            resize_mode=resize_mode,
            mask=decode_image(body.mask, "mask", max_pixels=max_pixels, load=False) if body.mask else None,
            mask_blur=mask_blur,
            inpainting_mask_invert=body.inpainting_mask_invert, inpainting_fill=body.inpainting_fill,
            inpaint_full_res=body.inpaint_full_res, inpaint_full_res_padding=body.inpaint_full_res_padding,
            sd_upscale=sd_upscale_options(engine, body) if engine is not None and is_sd_upscale(body) else None,
        )
    except InvalidRequest as exc:
        if exc.field == "mask_blur" and blur_field != "mask_blur":
            raise InvalidRequest(blur_field, str(exc).replace("mask_blur", blur_field)) from exc
        raise


def response(engine: Engine, body: Txt2ImgBody, result: GenerationResult, extra_images=(), request: Any = None) -> dict:
    """A1111's response: PNGs with their infotext, the request echoed, and info as a JSON string; info's
    steps and CFG scale are those the job ran with (`request`, filled in before it was queued)."""
    steps = getattr(request, "steps", None) or body.steps
    cfg_scale = getattr(request, "cfg_scale", None)
    cfg_scale = body.cfg_scale if cfg_scale is None else cfg_scale
    written = [parse_infotext(text) for text in result.infotexts]  # each image's prompts: styled, drawn (wildcards)
    info = {
        "prompt": body.prompt, "all_prompts": [w.prompt for w in written],
        "negative_prompt": body.negative_prompt, "all_negative_prompts": [w.negative_prompt for w in written],
        "seed": result.seeds[0] if result.seeds else body.seed, "all_seeds": result.seeds,
        "subseed": -1, "all_subseeds": [-1] * len(result.seeds), "subseed_strength": 0,
        "sampler_name": result.sampler_name, "scheduler": result.schedule, "cfg_scale": cfg_scale,
        "steps": steps, "batch_size": body.batch_size, "width": body.width, "height": body.height,
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
