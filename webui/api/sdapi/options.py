"""GET/POST /sdapi/v1/options and GET /cmd-flags.

Every option a client may write has a parser that checks its type and range, so a bad value is a
422 naming the option and never reaches the settings (where it would break every later GET).
Options Kiri does not have are accepted and ignored, as AUTOMATIC1111 does, and named in the
reply's `warnings`. The same parsers check `override_settings` (mapping.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, Request

from webui.engine.core.errors import InvalidRequest
from webui.engine import lora, stepcache, vae
from webui.engine.generation.requests import IMAGE_FORMATS

from ..common import ApiContext
from .fields import OptionsBody

MAX_CHECKPOINT_CACHE = 32
MAX_PREVIEW_EVERY = 1000


def api_title(engine, entry) -> str:
    """AUTOMATIC1111's checkpoint title: file name and short hash."""
    short = engine.catalog.short_hash(entry)
    return f"{entry.path.name} [{short}]" if short else entry.path.name


# --- parsers: (field name, raw JSON value) -> the value, or InvalidRequest naming the field ---------
def parse_bool(field: str, value: Any) -> bool:
    """A JSON boolean, or the strings "true"/"false" (some clients send form-style strings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidRequest(field, f"{field} must be true or false (got {_shown(value)})")


def parse_int(field: str, value: Any, low: int, high: int) -> int:
    """A whole number in [low, high]; 2.0 counts as 2, but not NaN, infinities, strings or booleans."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(field, f"{field} must be a whole number from {low} to {high} (got {_shown(value)})")
    if not low <= value <= high:
        raise InvalidRequest(field, f"{field} must be from {low} to {high} (got {_shown(value)})")
    return value


def parse_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    raise InvalidRequest(field, f"{field} must be one of {', '.join(choices)} (got {_shown(value)})")


def parse_model_name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or not value.isprintable() and not _utf8(value):
        raise InvalidRequest(field, f"{field} must be a model name or title (a non-empty string; got {_shown(value)})")
    return value


def parse_image_format(field: str, value: Any) -> str:
    value = "jpg" if isinstance(value, str) and value.strip().lower() == "jpeg" else value
    return parse_choice(field, value, IMAGE_FORMATS)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _shown(value: Any) -> str:
    """The offending value for a message: short, and always a string (NaN can't go into JSON)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- paths: absolute on a local server (as A1111), relative on an exposed one --------------------
def shown_path(ctx: ApiContext, path: Any) -> str:
    """A server path as a client may see it: relative to the models or outputs folder on an exposed server."""
    text = str(path)
    if not ctx.exposed:
        return text
    candidate = Path(text)
    if not candidate.is_absolute():
        return text
    resolved = candidate.resolve()
    for root in (ctx.engine.settings.models_dir, ctx.engine.settings.outputs_dir):
        base = Path(root).resolve()
        if resolved == base or base in resolved.parents:
            return resolved.relative_to(base).as_posix()
    return candidate.name  # elsewhere on the server: the name only


@dataclass(frozen=True)
class Option:
    """One writable option: how to read it, check a written value, and apply it."""

    read: Callable[[], Any]
    parse: Callable[[str, Any], Any]
    apply: Callable[[Any], None]


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    engine = ctx.engine
    settings = engine.settings
    # A1111 options that only steer A1111's own UI (which Kiri's UI doesn't copy): kept so clients
    # can read back what they wrote, as A1111's own API tests do with send_seed.
    ui_only: dict[str, bool] = {"send_seed": True, "send_size": True}

    def set_cache(value: int) -> None:
        settings.model_cache_size = max(1, value)  # A1111's 0 (keep only the loaded one) is Kiri's 1
        models = engine.models_if_created()
        if models is not None:
            models.cache_size = settings.model_cache_size

    def set_preview(value: int) -> None:
        settings.preview_every = max(0, value)  # A1111's -1 (only at the end): no live preview

    def parse_step_cache(field: str, value: Any) -> str:
        checked = stepcache.parse(value)
        return stepcache.text_of(checked) if checked else ""

    options: dict[str, Option] = {
        # A1111's: the VAE a request that names none gets ("Automatic", "None" or a name from /sdapi/v1/sd-vae)
        "sd_vae": Option(lambda: settings.sd_vae, lambda f, v: vae.checked_setting(engine.catalog, v),
                         lambda v: setattr(settings, "sd_vae", v)),
        # A1111's: the weight of a <lora:name> tag that gives none
        lora.SETTING: Option(lambda: settings.extra_networks_default_multiplier, lora.checked_multiplier,
                             lambda v: setattr(settings, lora.SETTING, v)),
        # Kiri's own: the step cache a request that names none gets ("taylorseer 5", "" for off)
        "step_cache": Option(lambda: settings.step_cache, parse_step_cache, lambda v: setattr(settings, "step_cache", v)),
        "sd_checkpoint_cache": Option(lambda: settings.model_cache_size,
                                      lambda f, v: parse_int(f, v, 0, MAX_CHECKPOINT_CACHE), set_cache),
        "samples_save": Option(lambda: settings.save_images, parse_bool,
                               lambda v: setattr(settings, "save_images", v)),
        "samples_format": Option(lambda: settings.image_format, parse_image_format,
                                 lambda v: setattr(settings, "image_format", v)),
        "show_progress_every_n_steps": Option(lambda: settings.preview_every,
                                              lambda f, v: parse_int(f, v, -1, MAX_PREVIEW_EVERY), set_preview),
    }
    for name in ui_only:
        options[name] = Option(lambda name=name: ui_only[name], parse_bool,
                               lambda v, name=name: ui_only.__setitem__(name, v))

    @router.get("/options")
    def get_options() -> dict:
        models = engine.models_if_created()
        current = engine.current_entry() if models is not None and models.current is not None else None
        return {
            "sd_model_checkpoint": api_title(engine, current) if current else None,
            "sd_checkpoint_hash": engine.catalog.full_hash(current) if current else None,
            **{name: option.read() for name, option in options.items()},
            "outdir_samples": shown_path(ctx, settings.outputs_dir),
        }

    @router.post("/options")
    def set_options(sent: OptionsBody, http: Request) -> dict:
        body = sent.model_dump(exclude_unset=True)
        # Check every value first, so a bad one changes nothing.
        model = parse_model_name("sd_model_checkpoint", body["sd_model_checkpoint"]) if "sd_model_checkpoint" in body else None
        values = {name: options[name].parse(name, value) for name, value in body.items() if name in options}
        ignored = sorted(name for name in body if name not in options and name != "sd_model_checkpoint")
        if model is not None:
            engine.load_model(model, owner=ctx.owner(http))
        for name, value in values.items():
            options[name].apply(value)
        if ignored:
            return {"warnings": [f"option {name!r} is not one Kiri has; ignored" for name in ignored[:20]]}
        return {}

    @router.get("/cmd-flags")
    def get_cmd_flags() -> dict:
        return {k: shown_flag(ctx, v) for k, v in ctx.cmd_flags.items() if k not in ("auth", "api_auth")}


def shown_flag(ctx: ApiContext, value: Any) -> Any:
    if isinstance(value, Path) or (isinstance(value, str) and os.path.isabs(value)):
        return shown_path(ctx, value)
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, list):
        return [shown_flag(ctx, v) for v in value]
    return str(value)
