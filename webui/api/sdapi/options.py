"""GET/POST /sdapi/v1/options and GET /cmd-flags."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from webui.engine.core.errors import InvalidRequest

from ..common import ApiContext


def api_title(engine, entry) -> str:
    """AUTOMATIC1111's checkpoint title: file name and short hash."""
    short = engine.catalog.short_hash(entry)
    return f"{entry.path.name} [{short}]" if short else entry.path.name


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    engine = ctx.engine

    @router.get("/options")
    def get_options() -> dict:
        models = engine.models_if_created()
        current = engine.current_entry() if models is not None and models.current is not None else None
        return {
            "sd_model_checkpoint": api_title(engine, current) if current else None,
            "sd_checkpoint_hash": engine.catalog.full_hash(current) if current else None,
            "sd_checkpoint_cache": engine.settings.model_cache_size,
            "samples_save": engine.settings.save_images,
            "samples_format": engine.settings.image_format,
            "outdir_samples": str(engine.settings.outputs_dir),
        }

    @router.post("/options")
    def set_options(options: dict[str, Any], http: Request) -> dict:
        if "sd_model_checkpoint" in options:
            engine.load_model(str(options["sd_model_checkpoint"]), owner=ctx.owner(http))
        if "sd_checkpoint_cache" in options:
            engine.settings.model_cache_size = max(1, int(options["sd_checkpoint_cache"]))
            engine.models.cache_size = engine.settings.model_cache_size
        if "samples_save" in options:
            engine.settings.save_images = bool(options["samples_save"])
        if "samples_format" in options:
            if options["samples_format"] not in ("png", "jpg", "webp"):
                raise InvalidRequest("samples_format", "samples_format must be png, jpg or webp")
            engine.settings.image_format = options["samples_format"]
        return {}

    @router.get("/cmd-flags")
    def get_cmd_flags() -> dict:
        return {k: (str(v) if not isinstance(v, (bool, int, float, str, type(None), list)) else v)
                for k, v in ctx.cmd_flags.items() if k not in ("auth", "api_auth")}
