"""The lists: samplers, schedulers, models, upscalers, add-on kinds, extensions, memory; and model refreshes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from webui.engine import embeddings as textual_inversion
from webui.engine.samplers.registry import SCHEDULES
from webui.engine.styles import load_styles
from webui.engine.upscale import LATENT_MODES, all_upscalers

from ..common import ApiContext
from .options import api_title, shown_path


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    engine = ctx.engine

    @router.get("/samplers")
    def samplers() -> list[dict]:
        return [{"name": s.name, "aliases": list(s.aliases), "options": {"fits": sorted(s.fits), "source": s.source}}
                for s in engine.samplers.all()]

    @router.get("/schedulers")
    def schedulers() -> list[dict]:
        return [{"name": name.lower().replace(" ", "_"), "label": name, "aliases": None,
                 "default_rho": 7.0 if name == "Karras" else -1, "need_inner_model": False} for name in SCHEDULES]

    def a1111_model_name(entry) -> str:
        """A1111's model_name: the file name without its extension (a folder's name as it is); the
        title, `file name [hash]`, is what tells a folder and its namesake file apart."""
        return entry.path.stem if entry.path.is_file() else entry.path.name

    def vae_model_name(entry) -> str:
        # A name the catalog made unique (a namesake in another folder) is kept, so it finds this one.
        return entry.path.name if entry.name == a1111_model_name(entry) else entry.name

    @router.get("/sd-models")
    def sd_models() -> list[dict]:
        engine.catalog.entries or engine.catalog.scan()
        return [{"title": api_title(engine, e), "model_name": a1111_model_name(e), "hash": engine.catalog.short_hash(e),
                 "sha256": engine.catalog.hashes.cached(e.hash_source), "filename": shown_path(ctx, e.path), "config": None}
                for e in engine.catalog.entries]

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints() -> dict:
        engine.catalog.scan()
        return {}

    @router.post("/unload-checkpoint")
    def unload_checkpoint(http: Request) -> dict:
        engine.unload_models(owner=ctx.owner(http))
        return {}

    @router.post("/reload-checkpoint")
    def reload_checkpoint(http: Request) -> dict:
        engine.load_model(None, owner=ctx.owner(http))
        return {}

    @router.get("/sd-vae")
    def sd_vae() -> list:
        """A1111's shape: model_name is the file name (what sd_vae takes back), filename its path."""
        engine.catalog.of_kind("vae") or engine.catalog.scan()
        return [{"model_name": vae_model_name(e), "filename": shown_path(ctx, e.path)} for e in engine.catalog.of_kind("vae")]

    @router.get("/upscalers")
    def upscalers() -> list:
        engine.catalog.of_kind("upscaler") or engine.catalog.scan()
        return [{"name": u.name, "model_name": None if u.kind == "classic" else u.name,
                 "model_path": None if u.path is None else str(shown_path(ctx, u.path)), "model_url": None,
                 "scale": u.scale if u.kind != "classic" else (1 if u.name == "None" else 4)}
                for u in all_upscalers(engine.catalog)]

    @router.get("/latent-upscale-modes")
    def latent_upscale_modes() -> list:
        return [{"name": name} for name in LATENT_MODES]

    @router.get("/embeddings")
    def embeddings() -> dict:
        return textual_inversion.api_listing(engine)

    @router.post("/refresh-embeddings")
    def refresh_embeddings() -> dict:
        textual_inversion.refresh(engine)
        return {}

    # Kinds of model A1111 has and Kiri does not (yet): its shapes, empty, so its clients work.
    @router.get("/hypernetworks")
    def hypernetworks() -> list:
        return []  # [{name, path}]

    @router.get("/face-restorers")
    def face_restorers() -> list:
        return []  # [{name, cmd_dir}]

    @router.get("/realesrgan-models")
    def realesrgan_models() -> list:
        return []  # [{name, path, scale}]

    @router.get("/prompt-styles")
    def prompt_styles() -> list:
        return [style.plain() for style in load_styles(engine.settings).values()]  # styles.csv and styles*.csv

    @router.get("/scripts")
    def scripts() -> dict:
        # the alwayson scripts the add-ons read (clients such as webuiapi look for "adetailer", "controlnet")
        alwayson = sorted({title.lower() for name in engine.addons.names() for title in engine.addons.get(name).api_scripts})
        return {"txt2img": alwayson, "img2img": ["sd upscale", *alwayson]}

    @router.get("/extensions")
    def extensions() -> list[dict]:
        return [{"name": e.name, "remote": None, "branch": None, "commit_hash": None, "version": e.version,
                 "commit_date": None, "enabled": e.enabled, "status": e.status, "error": e.error}
                for e in (engine.extensions.extensions if engine.extensions else [])]

    @router.get("/memory")
    def memory() -> dict:
        import psutil

        vm = psutil.virtual_memory()
        result: dict[str, Any] = {"ram": {"free": vm.available, "used": vm.used, "total": vm.total}, "cuda": {}}
        models = engine.models_if_created()
        if models is not None and models.device.device == "cuda":
            import torch

            free, total = torch.cuda.mem_get_info()
            result["cuda"] = {"system": {"free": free, "used": total - free, "total": total},
                              "active": {"current": torch.cuda.memory_allocated(), "peak": torch.cuda.max_memory_allocated()}}
        return result

