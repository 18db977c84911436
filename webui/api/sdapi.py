"""AUTOMATIC1111-compatible REST routes under /sdapi/v1, calling the same engine as the UI."""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
from typing import Any, Callable

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.routing import APIRoute
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from webui import __version__
from webui.engine.context import Engine
from webui.engine.errors import InvalidRequest, KiriError, ModelNotFound
from webui.engine.infotext import parse_infotext, pnginfo_for, read_infotext
from webui.engine.jobs import Job
from webui.engine.requests import Txt2ImgRequest
from webui.engine.samplers import SCHEDULES

from webui.engine.upscale import builtin_upscalers, target_size, upscale

from .models import ExtraBatchBody, ExtraSingleBody, Img2ImgBody, PngInfoBody, Txt2ImgBody

MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # a decoded upload larger than this is refused (decompression bombs)


def basic_auth(check_login: Callable[[str, str], bool]) -> Callable[..., None]:
    """HTTP Basic on every route."""
    security = HTTPBasic()

    def check(given: HTTPBasicCredentials = Depends(security)) -> None:
        if not check_login(given.username, given.password):
            raise HTTPException(status_code=401, detail="wrong user or password", headers={"WWW-Authenticate": "Basic"})

    return check


def body_limit(max_bytes: int) -> Callable[..., Any]:
    """Refuse request bodies over the cap with 413, before they are parsed."""

    async def check(request: Request) -> None:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise HTTPException(status_code=413, detail=f"request body over {max_bytes // 2**20} MB")
        if request.method in ("POST", "PUT"):
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise HTTPException(status_code=413, detail=f"request body over {max_bytes // 2**20} MB")

    return check


def decode_image(data: str, field: str = "image"):
    """A base64 (or data: URL) image, refused with 422 if it is not one or is too large."""
    from PIL import Image, UnidentifiedImageError

    if "," in data[:100] and data.startswith("data:"):
        data = data.split(",", 1)[1]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(field, f"{field} is not valid base64") from exc
    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise InvalidRequest(field, f"{field} is {image.width}x{image.height}, more pixels than Kiri accepts")
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InvalidRequest(field, f"{field} is not an image Kiri can read") from exc
    return image


def encode_png(image, infotext: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo_for(infotext))
    return base64.b64encode(buffer.getvalue()).decode()


def client_of(http: Request) -> str:
    """Who is asking, for fair turns: the login if any, else the client's address."""
    auth = http.headers.get("authorization", "")
    if auth.startswith("Basic "):
        try:
            return "api:" + base64.b64decode(auth[6:]).decode().split(":", 1)[0]
        except (binascii.Error, UnicodeDecodeError):
            pass
    return f"api:{http.client.host if http.client else 'unknown'}"


def common_fields(body: Txt2ImgBody) -> dict[str, Any]:
    """The engine request fields txt2img and img2img share; sd_model_checkpoint picks the model."""
    return dict(
        prompt=body.prompt, negative_prompt=body.negative_prompt,
        sampler_name=body.sampler_name or body.sampler_index or None, scheduler=body.scheduler,
        steps=body.steps, cfg_scale=body.cfg_scale, seed=body.seed, width=body.width, height=body.height,
        batch_size=body.batch_size, n_iter=body.n_iter, model=body.override_settings.get("sd_model_checkpoint"),
    )


def api_title(engine: Engine, entry) -> str:
    """AUTOMATIC1111's checkpoint title: file name and short hash."""
    short = engine.catalog.short_hash(entry)
    return f"{entry.path.name} [{short}]" if short else entry.path.name


def build_router(engine: Engine, cmd_flags: dict[str, Any] | None = None,
                 check_login: Callable[[str, str], bool] | None = None, max_body_bytes: int = 50 * 2**20) -> APIRouter:
    dependencies = [Depends(basic_auth(check_login))] if check_login else []
    dependencies.append(Depends(body_limit(max_body_bytes)))
    router = APIRouter(prefix="/sdapi/v1", tags=["sdapi"], dependencies=dependencies, route_class=KiriRoute)

    def respond(body: Txt2ImgBody, result, extra_images=()) -> dict:
        """A1111's response: PNGs with their infotext, the request echoed, and info as a JSON string."""
        loaded = engine.models.current
        info = {
            "prompt": body.prompt, "all_prompts": [body.prompt] * len(result.images),
            "negative_prompt": body.negative_prompt, "all_negative_prompts": [body.negative_prompt] * len(result.images),
            "seed": result.seeds[0] if result.seeds else body.seed, "all_seeds": result.seeds,
            "subseed": -1, "all_subseeds": [-1] * len(result.seeds), "subseed_strength": 0,
            "sampler_name": result.sampler_name, "scheduler": result.schedule, "cfg_scale": body.cfg_scale,
            "steps": body.steps, "batch_size": body.batch_size, "width": body.width, "height": body.height,
            "sd_model_name": loaded.name if loaded else None, "sd_model_hash": loaded.short_hash if loaded else None,
            "denoising_strength": body.denoising_strength, "extra_generation_params": {},
            "infotexts": result.infotexts, "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": 1,
            "interrupted": result.interrupted, "warnings": result.warnings, "version": f"Kiri v{__version__}",
        }
        images = [encode_png(im, text) for im, text in zip(result.images, result.infotexts)] if body.send_images else []
        if body.send_images:
            images += list(extra_images)
        return {"images": images, "parameters": body.model_dump(), "info": json.dumps(info)}

    @router.post("/txt2img")
    def txt2img(body: Txt2ImgBody, http: Request) -> dict:
        request = Txt2ImgRequest(**common_fields(body))
        return respond(body, engine.txt2img(request, Job(kind="txt2img", owner=client_of(http))))

    @router.post("/img2img")
    def img2img(body: Img2ImgBody, http: Request) -> dict:
        from webui.engine.img2img import Img2ImgRequest

        if not body.init_images:
            raise InvalidRequest("init_images", "init_images is empty: send the picture to start from, as base64")
        warnings = []
        if len(body.init_images) > 1:
            warnings.append(f"{len(body.init_images)} init images were sent; Kiri uses the first")
        resize_mode = body.resize_mode
        if resize_mode == 3:  # A1111's latent upscale: Kiri resizes in pixel space
            resize_mode = 0
            warnings.append("resize mode 3 (latent upscale) is done as 0 (just resize)")
        request = Img2ImgRequest(
            **common_fields(body),
            init_image=decode_image(body.init_images[0], "init_images"),
            denoising_strength=body.denoising_strength if body.denoising_strength is not None else 0.75,
            resize_mode=resize_mode,
            mask=decode_image(body.mask, "mask") if body.mask else None,
            mask_blur=body.mask_blur if body.mask_blur is not None else max(body.mask_blur_x, body.mask_blur_y),
            inpainting_mask_invert=body.inpainting_mask_invert, inpainting_fill=body.inpainting_fill,
            inpaint_full_res=body.inpaint_full_res, inpaint_full_res_padding=body.inpaint_full_res_padding,
        )
        result = engine.img2img(request, Job(kind="img2img", owner=client_of(http)))
        result.warnings[:0] = warnings
        return respond(body, result, body.init_images if body.include_init_images else ())

    def extras(image, body: ExtraSingleBody):
        if body.resize_mode == 1:
            size = target_size(image.width, image.height, to_width=body.upscaling_resize_w, to_height=body.upscaling_resize_h)
        else:
            size = target_size(image.width, image.height, scale=body.upscaling_resize)
        result = upscale(image, size, body.upscaler_1, body.upscaler_2, body.extras_upscaler_2_visibility, body.upscaling_crop)
        buffer = io.BytesIO()
        result.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode(), f"<p>Upscaler: {body.upscaler_1}, {result.width}x{result.height}</p>"

    @router.post("/extra-single-image")
    def extra_single_image(body: ExtraSingleBody) -> dict:
        encoded, html = extras(decode_image(body.image), body)
        return {"image": encoded, "html_info": html}

    @router.post("/extra-batch-images")
    def extra_batch_images(body: ExtraBatchBody) -> dict:
        if not body.imageList:
            raise InvalidRequest("imageList", "imageList is empty")
        results = [extras(decode_image(item.data, "imageList"), body) for item in body.imageList]
        return {"images": [encoded for encoded, _ in results], "html_info": results[0][1]}

    @router.post("/png-info")
    def png_info(body: PngInfoBody) -> dict:
        image = decode_image(body.image)
        text = read_infotext(image) or ""
        parsed = parse_infotext(text) if text else None
        items = {"parameters": text} if text else {}
        parameters = {"Prompt": parsed.prompt, "Negative prompt": parsed.negative_prompt, **parsed.params} if parsed else {}
        return {"info": text, "items": items, "parameters": parameters}

    @router.get("/progress")
    def progress(skip_current_image: bool = False) -> dict:
        jobs = engine.jobs.active()
        job = jobs[0] if jobs else None
        state = {"skipped": False, "interrupted": bool(job and job.interrupted), "job": job.kind if job else "",
                 "job_count": len(jobs), "job_timestamp": "", "job_no": (job.batch_no - 1) if job else 0,
                 "sampling_step": job.step if job else 0, "sampling_steps": job.steps if job else 0}
        current = None
        if job is not None and job.preview is not None and not skip_current_image:
            buffer = io.BytesIO()
            job.preview.save(buffer, format="PNG")
            current = base64.b64encode(buffer.getvalue()).decode()
        return {"progress": job.fraction if job else 0.0, "eta_relative": (job.eta_seconds or 0.0) if job else 0.0,
                "state": state, "current_image": current, "textinfo": job.describe() if job else None}

    @router.post("/interrupt")
    def interrupt() -> dict:
        engine.interrupt(None)
        return {}

    @router.post("/skip")
    def skip() -> dict:
        engine.jobs.skip(None)
        return {}

    @router.get("/options")
    def get_options() -> dict:
        current = engine.models_if_created().current if engine.models_if_created() else None
        return {
            "sd_model_checkpoint": api_title(engine, current.entry) if current else None,
            "sd_checkpoint_hash": engine.catalog.full_hash(current.entry) if current else None,
            "sd_checkpoint_cache": engine.settings.model_cache_size,
            "samples_save": engine.settings.save_images,
            "samples_format": engine.settings.image_format,
            "outdir_samples": str(engine.settings.outputs_dir),
        }

    @router.post("/options")
    def set_options(options: dict[str, Any]) -> dict:
        if "sd_model_checkpoint" in options:
            engine.load_model(str(options["sd_model_checkpoint"]), owner="api")
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
                for k, v in (cmd_flags or {}).items() if k not in ("auth", "api_auth")}

    @router.get("/samplers")
    def samplers() -> list[dict]:
        return [{"name": s.name, "aliases": list(s.aliases), "options": {"fits": sorted(s.fits), "source": s.source}}
                for s in engine.samplers.all()]

    @router.get("/schedulers")
    def schedulers() -> list[dict]:
        return [{"name": name.lower().replace(" ", "_"), "label": name, "aliases": None,
                 "default_rho": 7.0 if name == "Karras" else -1, "need_inner_model": False} for name in SCHEDULES]

    @router.get("/sd-models")
    def sd_models() -> list[dict]:
        engine.catalog.entries or engine.catalog.scan()
        return [{"title": api_title(engine, e), "model_name": e.name, "hash": engine.catalog.short_hash(e),
                 "sha256": engine.catalog.hashes.cached(e.hash_source), "filename": str(e.path), "config": None}
                for e in engine.catalog.entries]

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints() -> dict:
        engine.catalog.scan()
        return {}

    @router.post("/unload-checkpoint")
    def unload_checkpoint() -> dict:
        engine.models.unload()
        return {}

    @router.post("/reload-checkpoint")
    def reload_checkpoint() -> dict:
        engine.load_model(None, owner="api")
        return {}

    @router.get("/sd-vae")
    def sd_vae() -> list:
        return []

    @router.get("/upscalers")
    def upscalers() -> list:
        return [{"name": u.name, "model_name": None, "model_path": None, "model_url": None, "scale": 4 if u.resample else 1}
                for u in builtin_upscalers()]

    @router.get("/loras")
    def loras() -> list:
        return []

    @router.get("/embeddings")
    def embeddings() -> dict:
        return {"loaded": {}, "skipped": {}}

    @router.get("/scripts")
    def scripts() -> dict:
        return {"txt2img": [], "img2img": []}

    @router.get("/extensions")
    def extensions() -> list[dict]:
        return [{"name": e.name, "remote": None, "branch": None, "commit_hash": None, "version": e.version,
                 "commit_date": None, "enabled": e.enabled, "status": e.status, "error": e.error}
                for e in engine.extensions.extensions]

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

    return router


class KiriRoute(APIRoute):
    """Engine errors become 4xx with a reason (InvalidRequest a 422 naming the field), per route,
    so it works on an app that is already serving."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def guarded(request: Request):
            try:
                return await handler(request)
            except InvalidRequest as exc:
                return JSONResponse({"detail": [{"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}],
                                     "error": "InvalidRequest", "errors": str(exc)}, status_code=422)
            except KiriError as exc:
                code = 404 if isinstance(exc, ModelNotFound) else 400
                return JSONResponse({"detail": str(exc), "error": type(exc).__name__, "errors": str(exc)}, status_code=code)

        return guarded


def mount(app, engine: Engine, cmd_flags: dict[str, Any] | None = None,
          check_login: Callable[[str, str], bool] | None = None, max_body_bytes: int = 50 * 2**20) -> None:
    """Add the /sdapi/v1 routes to the FastAPI app Gradio serves."""
    app.include_router(build_router(engine, cmd_flags, check_login, max_body_bytes))
